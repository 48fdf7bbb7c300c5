#!/usr/bin/env bash
# Set up, then run the demo: generated clips, real transcodes, live progress, a summary and what
# to do next. Arguments go to `bulletproof demo` (e.g. --keep-running: keep watching after the demo
# batch, until Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/bulletproof demo "$@"
