#!/usr/bin/env bash
# The main job on the embedded default (a SQLite file): build a demo platform, apply a
# priority policy with subsidies, submit work, schedule it, finish a job, award vouchers,
# and read the accounts. Run by `make demo`.
# Usage: scripts/demo.sh [GPUPOOL_EXECUTABLE] [DATABASE_URL]
set -euo pipefail
gpupool=${1:-gpupool}
db=${2:-sqlite:///gpupool-demo.db}
here=$(cd "$(dirname "$0")/.." && pwd)
export GPUPOOL_DATABASE_URL=$db
step() { printf '\n\033[1m$ gpupool %s\033[0m\n' "$*"; "$gpupool" "$@"; }

step init --demo --force
step gpu-type list
step pool list
step org list
step policy validate "$here/examples/policies/priority.yaml"
step policy apply "$here/examples/policies/priority.yaml" --comment "demo: medical and education first"
step programme add health-q --period "$(date -u +%Y)-Q$(( ($(date -u +%-m) + 2) / 3 ))" --budget 50000 \
  --rate 0.5 --domain medical --domain education --exchange Ascend-910B=1.5 --org-cap 20000
step voucher award pumc-hospital --programme health-q --amount 200
step job submit --org pumc-hospital --gpus 8 --hours 6 --gpu-type Ascend-910B --name pathology-screening
step job submit --org cma-forecast --gpus 16 --hours 12 --name nowcast-ensemble
step schedule
step pool list
step job list
first=$("$gpupool" job list --state running --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["id"])')
step job finish "$first"
step job show "$first"
step report usage --by domain
step report subsidies
step policy history
