#!/usr/bin/env bash
# Set up, then run the demo: generated clips, real transcodes, live progress, a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/bulletproof demo "$@"
