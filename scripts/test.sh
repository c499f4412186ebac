#!/usr/bin/env bash
# Installs everything the test suite needs into the active virtual environment, then runs it.
#   python3 -m venv .venv && . .venv/bin/activate && bash scripts/test.sh [pytest args...]
#
# It refuses a Python outside a virtual environment, so that it never installs into the
# machine's own Python: set SAEC_ALLOW_SYSTEM_PYTHON=1 (or pass --system first) to do
# that on purpose. `.ci/run` makes .venv itself.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
if [ "${1:-}" = "--system" ]; then SAEC_ALLOW_SYSTEM_PYTHON=1; shift; fi
if [ "$("$PY" -c 'import sys; print(int(sys.prefix != sys.base_prefix))')" != 1 ] \
   && [ "${SAEC_ALLOW_SYSTEM_PYTHON:-0}" != 1 ]; then
  echo "scripts/test.sh: $("$PY" -c 'import sys; print(sys.executable)') is not in a virtual environment;" >&2
  echo "  run: python3 -m venv .venv && . .venv/bin/activate && bash scripts/test.sh" >&2
  echo "  (or SAEC_ALLOW_SYSTEM_PYTHON=1 bash scripts/test.sh to install into it anyway)" >&2
  exit 2
fi

step() { echo "==> $*" >&2; }

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

# A real redis-server for the peer benchmark's smoke test.
if ! command -v redis-server >/dev/null; then
  step "installing redis-server (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi

# PyTorch (the training extra) as its CPU build: on Linux x86_64 a bare `torch` from the
# package index is the CUDA build, several GB. PyTorch's CPU index serves the CPU build;
# where it cannot be reached, `torch==2.13.0` is taken from the package index or a local
# wheel cache (pip's find-links), which on the project's machines holds the CPU build.
TORCH_CPU_INDEX="${SAEC_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
if "$PY" -c "import torch" 2>/dev/null; then
  step "PyTorch already installed: $("$PY" -c 'import torch; print(torch.__version__)')"
elif "$PY" - "$TORCH_CPU_INDEX" <<'PYEOF' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/torch/", timeout=5)
PYEOF
then
  step "installing PyTorch (CPU build) from $TORCH_CPU_INDEX"
  "$PY" -m pip install --progress-bar on --index-url "$TORCH_CPU_INDEX" "torch==2.13.0"
else
  step "PyTorch's CPU index is not reachable; installing torch==2.13.0 from the package index or the local wheel cache"
  "$PY" -m pip install --progress-bar on "torch==2.13.0"
fi

step "installing saec (editable) with the test, training, compress and bench extras"
"$PY" -m pip install --progress-bar on -e ".[test,training,compress,bench]"

step "running the test suite"
exec "$PY" -m pytest "$@"
