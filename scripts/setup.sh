#!/usr/bin/env bash
# Set up a machine for Bulletproof: system packages (when root) and a virtual environment in .venv.
#   scripts/setup.sh          what `bulletproof demo` needs (ffmpeg)
#   scripts/setup.sh --test   plus what the test suite needs (prometheus, alertmanager, nginx,
#                             PostgreSQL and the store's psycopg driver)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(ffmpeg)
extras="bundled-ffmpeg"
if [[ "${1:-}" == "--test" ]]; then
    packages+=(prometheus prometheus-alertmanager nginx docker-compose postgresql)
    extras="test,bundled-ffmpeg,postgres"
fi

missing=()
for pkg in "${packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        # Debian starts these as services on install; the tests run their own instances.
        for svc in prometheus prometheus-alertmanager prometheus-node-exporter nginx postgresql; do
            (service "$svc" stop || systemctl stop "$svc") >/dev/null 2>&1 || true
        done
    else
        echo "warning: missing ${missing[*]} and not root; ffmpeg falls back to the bundled build" >&2
    fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[${extras}]"
