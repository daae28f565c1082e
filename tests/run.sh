#!/usr/bin/env bash
# Install everything the tests need into the active Python environment, then run the suite.
# Usage: bash tests/run.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
export GRADIO_ANALYTICS_ENABLED=False
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[test]"
# The browser tests drive Debian's Chromium (never a Playwright browser download).
if ! command -v chromium >/dev/null 2>&1 && [ -z "${TL_STUDIO_BROWSER:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: no chromium found and not root; browser tests will skip (set TL_STUDIO_BROWSER)" >&2
  fi
fi
python -m pytest "$@"
