#!/usr/bin/env bash
# The fuzz suite (tests/fuzz, issue 15) as a soak: many random examples per command and
# database, every violated property recorded instead of stopping at the first, then a
# summary of the distinct findings (exit 1 when there is any).
#
#   scripts/fuzz-soak.sh [EXAMPLES] [pytest args]    # e.g. scripts/fuzz-soak.sh 200 -k sqlite
#
# EXAMPLES per command and database (default 100); findings go to
# $GPUPOOL_FUZZ_SURVEY (default out/fuzz-soak-<time>.jsonl). PostgreSQL runs when it answers.
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-100}"
shift || true
survey="${GPUPOOL_FUZZ_SURVEY:-out/fuzz-soak-$(date +%Y%m%d-%H%M%S).jsonl}"
mkdir -p "$(dirname "$survey")"
: >"$survey"
GPUPOOL_FUZZ_EXAMPLES="$examples" GPUPOOL_FUZZ_RANDOM=1 GPUPOOL_FUZZ_SURVEY="$survey" \
    .venv/bin/python -m pytest -q -p no:cacheprovider tests/fuzz "$@" || true
.venv/bin/python -m tests.fuzz.summary "$survey"
