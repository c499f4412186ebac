#!/usr/bin/env bash
# Installs everything the test suite needs into the active virtual environment, then runs it,
# the long tier included (what CI runs; plain `pytest` is the quicker inner loop):
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

# A real redis-server (the peer benchmark's smoke test, and the update log of tests/fleet),
# and the compiled load generators (wrk; redis-benchmark comes with redis-server's redis-tools).
if ! command -v redis-server >/dev/null || ! command -v wrk >/dev/null; then
  step "installing redis-server, redis-tools and wrk (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools wrk >/dev/null
fi

# promtool, which checks the alerting rule in docs/updates.md (tests/store/test_carry_drift.py),
# taken out of Debian's prometheus package without installing it (that would start a server).
if [ -z "${PROMTOOL:-}" ] && ! command -v promtool >/dev/null; then
  step "extracting promtool from Debian's prometheus package (apt-get download)"
  promdir="$(mktemp -d)"
  if (cd "$promdir" && { apt-get download prometheus >/dev/null 2>&1 \
        || { $SUDO apt-get update -qq && apt-get download prometheus >/dev/null 2>&1; }; } \
        && dpkg-deb -x prometheus_*.deb x); then
    export PROMTOOL="$promdir/x/usr/bin/promtool"
  else
    echo "  promtool is not available: the alerting rule's PromQL test will be skipped" >&2
  fi
fi

# Node.js and npm for the second-language gRPC test (tests/grpc/test_node.py installs
# @grpc/grpc-js and @grpc/proto-loader from npm itself, and skips without node or npm).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  step "installing nodejs and npm (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null \
    || echo "scripts/test.sh: nodejs/npm did not install; tests/grpc/test_node.py will be skipped" >&2
fi

# PyTorch (the training extra) as its CPU build: on Linux x86_64 a bare `torch` from the
# package index is the CUDA build, several GB. In order:
#   1. a CPU wheel of torch 2.13.0 in pip's find-links folders (the project's machines keep
#      one there, so nothing is downloaded and no other host is asked);
#   2. PyTorch's CPU index (SAEC_TORCH_INDEX overrides it) when it answers;
#   3. torch==2.13.0 from the package index.
TORCH_VERSION=2.13.0
TORCH_CPU_INDEX="${SAEC_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
torch_wheel=""
for dir in $("$PY" -m pip config get global.find-links 2>/dev/null || true); do
  for w in "$dir"/torch-"$TORCH_VERSION"+cpu-*.whl; do
    if [ -f "$w" ]; then torch_wheel="$w"; fi
  done
done
if "$PY" -c "import torch" 2>/dev/null; then
  step "PyTorch already installed: $("$PY" -c 'import torch; print(torch.__version__)')"
elif [ -n "$torch_wheel" ]; then
  step "installing PyTorch (CPU build) from the local wheel $torch_wheel"
  "$PY" -m pip install --progress-bar on "$torch_wheel"
elif "$PY" - "$TORCH_CPU_INDEX" <<'PYEOF' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/torch/", timeout=5)
PYEOF
then
  step "installing PyTorch (CPU build) from $TORCH_CPU_INDEX"
  "$PY" -m pip install --progress-bar on --index-url "$TORCH_CPU_INDEX" "torch==$TORCH_VERSION"
else
  step "PyTorch's CPU index is not reachable; installing torch==$TORCH_VERSION from the package index"
  "$PY" -m pip install --progress-bar on "torch==$TORCH_VERSION"
fi

step "installing saec (editable) with the test, training, compress, bench, dask, s3 and fleet extras"
"$PY" -m pip install --progress-bar on -e ".[test,training,compress,bench,dask,s3,fleet]"

# Lint and type checks first: they take seconds and name the line at fault.
step "ruff check"
"$PY" -m ruff check .
step "mypy"
"$PY" -m mypy

# Both tiers. First what plain `pytest` runs, the files spread over every core
# (pytest-xdist; see pyproject.toml); then the `long` tier (fuzz, kill -9 loops,
# benchmark-like and timing-bound cases) in one process, so that no neighbouring test
# shares the cores while they time something. Exit status 5 (no test selected, e.g. the long
# tier for `bash scripts/test.sh tests/cli`) fails neither run unless both select none;
# the second runs even when the first failed, and the script fails if either did.
step "running the test suite: the default tier, on every core"
first=0
"$PY" -m pytest "$@" || first=$?
step "running the test suite: the long tier, one test at a time"
second=0
"$PY" -m pytest -m long -n 0 "$@" || second=$?
case "$first:$second" in
  0:0 | 0:5 | 5:0) exit 0 ;;
  5:5) exit 5 ;;  # no test selected by either
esac
if [ "$first" != 0 ] && [ "$first" != 5 ]; then
  echo "scripts/test.sh: the default tier failed (exit status $first)" >&2
  exit "$first"
fi
exit "$second"
