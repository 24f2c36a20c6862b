#!/usr/bin/env bash
# The main job on the embedded default: build a demo platform, submit work, schedule, show it.
set -euo pipefail
gpupool=$1
db=$2
export GPUPOOL_DATABASE_URL=$db
"$gpupool" init --demo --force
"$gpupool" pool list
"$gpupool" job list
