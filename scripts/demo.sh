#!/usr/bin/env bash
# The main job on the embedded default: build a demo platform, submit work, schedule, show it.
# Usage: scripts/demo.sh [GPUPOOL_EXECUTABLE] [DATABASE_URL]   (run by `make demo`)
set -euo pipefail
gpupool=${1:-gpupool}
db=${2:-sqlite:///gpupool-demo.db}
export GPUPOOL_DATABASE_URL=$db
step() { printf '\n\033[1m$ gpupool %s\033[0m\n' "$*"; "$gpupool" "$@"; }

step init --demo --force
step gpu-type list
step pool list
step org list
step job submit --org pumc-hospital --gpus 8 --hours 6 --gpu-type Ascend-910B --name pathology-screening
step job submit --org cma-forecast --gpus 16 --hours 12 --name nowcast-ensemble
step schedule
step pool list
step job list
step job list --state pending --json
