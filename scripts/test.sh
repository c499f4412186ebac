#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine, then runs it.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

# A real redis-server, and the compiled load generators (wrk; redis-benchmark comes with
# redis-server's redis-tools), for the peer benchmark's smoke test.
if ! command -v redis-server >/dev/null || ! command -v wrk >/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools wrk >/dev/null
fi

# PyTorch (the training extra) as the CPU build; a bare `torch` requirement would pull
# several GB of CUDA wheels.
python3 -m pip install -q "torch==2.13.0"
python3 -m pip install -q -e ".[test,training,compress,bench]"

exec python3 -m pytest "$@"
