#!/usr/bin/env bash
# Make sure Debian's chromium is installed, for the dashboard's browser tests
# (Playwright drives it through executable_path; `playwright install` cannot
# download browser builds here). Idempotent: does nothing when it is there.
set -euo pipefail
CHROMIUM=${GPUPOOL_CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
echo "ensure-chromium: installing chromium" >&2
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
[ -x "$CHROMIUM" ] || { echo "ensure-chromium: $CHROMIUM missing after install" >&2; exit 1; }
echo "ensure-chromium: $("$CHROMIUM" --version 2>/dev/null || echo chromium) installed" >&2
