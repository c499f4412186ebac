#!/usr/bin/env bash
# Builds the serving image from the Dockerfile and smoke-tests it:
#   bash scripts/build-image.sh            # tag: localhost/saec:dev (SAEC_IMAGE_TAG)
#
# With docker where an engine answers (`docker info`), else with buildah, installed from
# Debian's packages when missing (`buildah bud --format docker`: the OCI format would drop
# the HEALTHCHECK). The base image is python:3.11-slim (SAEC_IMAGE_BASE); where no image
# registry is reachable, a stand-in for it is built once from Debian's packages: Debian
# bookworm (minbase, mmdebstrap) with Debian's python3 3.11 and python3-venv, slimmed like
# debian:bookworm-slim (no docs, man pages or locales), tagged localhost/saec-python-standin:
# SAEC_IMAGE_BASE=standin forces it.
#
# The smoke test, on a demo store (--scale 0.05): `saec demo` writes the store as an
# arbitrary uid (4321, what `--user "$(id -u):$(id -g)"` gives) into a host folder, or as
# the image's user into a named volume (docker); `saec serve` runs as the image's user with
# the store mounted read only; then the image's own HEALTHCHECK command passes, /readyz
# answers 200, one lookup returns the vectors it should, and it prints the image size, the
# seconds to ready and the first lookup's milliseconds. It fails when the image holds a
# training, benchmark or test dependency, pip or a compiler; when the image is larger than
# SAEC_IMAGE_MAX_MB (default 500); or when the first lookup after ready takes more than
# SAEC_IMAGE_MAX_FIRST_MS (default 50).
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${SAEC_IMAGE_TAG:-localhost/saec:dev}"
BASE="${SAEC_IMAGE_BASE:-python:3.11-slim}"
STANDIN="localhost/saec-python-standin:3.11-bookworm"
MAX_MB="${SAEC_IMAGE_MAX_MB:-500}"
MAX_FIRST_MS="${SAEC_IMAGE_MAX_FIRST_MS:-50}"
PORT="${SAEC_IMAGE_PORT:-18765}"

step() { echo "==> $*" >&2; }
die() { echo "scripts/build-image.sh: $*" >&2; exit 1; }
SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
apt_install() {
  step "installing $* (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  ENGINE=docker
else
  ENGINE=buildah
  command -v buildah >/dev/null || apt_install buildah
fi
step "engine: $ENGINE"

have_image() {
  if [ "$ENGINE" = docker ]; then docker image inspect "$1" >/dev/null 2>&1
  else buildah inspect --type image "$1" >/dev/null 2>&1; fi
}

# The stand-in base: what python:3.11-slim is (Debian bookworm slim + CPython 3.11 with
# venv), from Debian's packages. Its python3 is /usr/bin/python3 instead of /usr/local/bin.
build_standin() {
  command -v mmdebstrap >/dev/null || apt_install mmdebstrap
  local tmp
  tmp="$(mktemp -d)"
  step "building the base stand-in $STANDIN (mmdebstrap: Debian bookworm minbase + python3 python3-venv)"
  # merged /usr by symlinks, as debian:bookworm-slim has it (the usrmerge package would pull in perl).
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$tmp/rootfs.tar" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main"
  if [ "$ENGINE" = docker ]; then
    docker import --change 'CMD ["python3"]' "$tmp/rootfs.tar" "$STANDIN" >/dev/null
  else
    local ctr
    ctr="$(buildah from scratch)"
    buildah add --quiet "$ctr" "$tmp/rootfs.tar" / >/dev/null
    buildah config --cmd python3 --env LANG=C.UTF-8 "$ctr"
    buildah commit --quiet --format docker "$ctr" "$STANDIN" >/dev/null
    buildah rm "$ctr" >/dev/null
  fi
  rm -rf "$tmp"
}

if [ "$BASE" = standin ]; then
  BASE="$STANDIN"
  have_image "$BASE" || build_standin
elif ! have_image "$BASE"; then
  step "pulling $BASE"
  if ! { if [ "$ENGINE" = docker ]; then timeout 300 docker pull -q "$BASE"
         else timeout 300 buildah pull --quiet "$BASE"; fi; } >/dev/null 2>&1; then
    step "$BASE cannot be pulled (no image registry reachable): using the stand-in $STANDIN"
    BASE="$STANDIN"
    have_image "$BASE" || build_standin
  fi
fi

# pip inside the build trusts what pip trusts here (a TLS-inspecting proxy's CA), through a
# build secret that never enters a layer; an empty file where nothing extra is needed.
CERT="${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}"
SECRET_FILE="$(mktemp)"
trap 'rm -f "$SECRET_FILE"' EXIT
if [ -n "$CERT" ] && [ -f "$CERT" ]; then cat "$CERT" >"$SECRET_FILE"; fi

step "building $TAG on $BASE"
started=$(date +%s)
if [ "$ENGINE" = docker ]; then
  DOCKER_BUILDKIT=1 docker build --build-arg "PYTHON_IMAGE=$BASE" --secret "id=pip-cert,src=$SECRET_FILE" -t "$TAG" .
else
  buildah bud --isolation chroot --format docker --layers --force-rm --build-arg "PYTHON_IMAGE=$BASE" \
    --secret "id=pip-cert,src=$SECRET_FILE" -t "$TAG" .
fi
build_seconds=$(( $(date +%s) - started ))

if [ "$ENGINE" = docker ]; then
  size=$(docker image inspect -f '{{.Size}}' "$TAG")
  health=$(docker image inspect -f '{{json .Config.Healthcheck}}' "$TAG")
  user=$(docker image inspect -f '{{.Config.User}}' "$TAG")
else
  # The bytes of the image's layers, uncompressed, as `docker image inspect` counts them.
  size=$(buildah images --json "$TAG" | python3 -c '
import json, re, sys
size = json.load(sys.stdin)[0]["size"]
if isinstance(size, str):  # buildah 1.28 prints "546 MB" (decimal units)
    n, unit = re.fullmatch(r"([0-9.]+) *([kMG]?B)", size.strip()).groups()
    size = float(n) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[unit]
print(int(size))')
  config=$(buildah inspect --type image "$TAG")
  health=$(printf '%s' "$config" | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["Docker"]["config"].get("Healthcheck")))')
  user=$(printf '%s' "$config" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Docker"]["config"].get("User", ""))')
fi
size_mb=$(( size / 1000000 ))
step "image $TAG: $size_mb MB (built in $build_seconds s, base $BASE)"
case "$health" in *'"Test"'*) ;; *) die "the image has no HEALTHCHECK (built in the OCI format?): $health" ;; esac
case "$user" in ""|0|root|0:*|root:*) die "the image runs as root (USER '$user')" ;; esac
[ "$size_mb" -le "$MAX_MB" ] || die "the image is $size_mb MB, above SAEC_IMAGE_MAX_MB=$MAX_MB"

# ---- smoke test ----------------------------------------------------------------------
WORK="$(mktemp -d)"
SERVER_PID=""
CTR=""
VOLUME=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  if [ "$ENGINE" = docker ]; then
    docker rm -f "saec-smoke-$$" >/dev/null 2>&1 || true
    if [ -n "$VOLUME" ]; then docker volume rm "$VOLUME" >/dev/null 2>&1 || true; fi
  elif [ -n "$CTR" ]; then
    buildah rm "$CTR" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK" "$SECRET_FILE"
}
trap cleanup EXIT

# Inside the image: no training, benchmark or test dependency, no pip, no compiler.
CHECK_DEPS='import importlib.util as u, shutil, sys
bad = [m for m in ("torch", "sklearn", "scipy", "pyarrow", "matplotlib", "faiss", "redis", "pytest", "moto", "pip") if u.find_spec(m)]
bad += [c for c in ("gcc", "cc", "c++", "make") if shutil.which(c)]
print("runtime holds", bad) if bad else None
sys.exit(1 if bad else 0)'

if [ "$ENGINE" = docker ]; then
  docker run --rm --entrypoint python "$TAG" -c "$CHECK_DEPS" || die "the runtime stage holds more than serving needs"
  VOLUME="saec-smoke-$$"
  docker volume create "$VOLUME" >/dev/null
  step "saec demo into a named volume, as the image's user"
  docker run --rm -v "$VOLUME:/data" "$TAG" demo --store /data --scale 0.05 >/dev/null
  step "saec serve, store read only, on 127.0.0.1:$PORT"
  docker run -d --name "saec-smoke-$$" -p "127.0.0.1:$PORT:8000" -v "$VOLUME:/data:ro" "$TAG" >/dev/null
  health_check() { [ "$(docker inspect -f '{{.State.Health.Status}}' "saec-smoke-$$")" = healthy ]; }
else
  CTR="$(buildah from --quiet "$TAG")"
  buildah run --isolation chroot "$CTR" -- python -c "$CHECK_DEPS" || die "the runtime stage holds more than serving needs"
  mkdir -p "$WORK/store"
  chown 4321:4321 "$WORK/store"
  step "saec demo into a host folder, as uid 4321 (--user)"
  buildah run --isolation chroot --user 4321:4321 -v "$WORK/store:/data" "$CTR" -- \
    saec demo --store /data --scale 0.05 >/dev/null
  step "saec serve as the image's user, store read only, on 127.0.0.1:$PORT"
  # chroot isolation shares the host's network: the server listens on the host's loopback.
  buildah run --isolation chroot --env SAEC_HOST=127.0.0.1 --env "SAEC_PORT=$PORT" \
    -v "$WORK/store:/data:ro" "$CTR" -- saec serve --wait >"$WORK/serve.log" 2>&1 &
  SERVER_PID=$!
  # The image's own HEALTHCHECK command, run in the container as an engine would.
  mapfile -t HEALTH_CMD < <(printf '%s' "$health" | python3 -c '
import json, sys
test = json.load(sys.stdin)["Test"]
print("\n".join(["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]))')
  health_check() {
    buildah run --isolation chroot --env "SAEC_PORT=$PORT" "$CTR" -- "${HEALTH_CMD[@]}" >/dev/null 2>&1
  }
fi

SMOKE='import json, sys, time, urllib.error, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
t0 = time.monotonic()
while True:
    try:
        if urllib.request.urlopen(base + "/readyz", timeout=2).status == 200:
            break
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        pass
    if time.monotonic() - t0 > 180:
        sys.exit("no /readyz 200 within 180 s")
    time.sleep(0.05)
ready = time.monotonic() - t0
body = json.dumps({"fields": {"user_id": [17, 42], "country": [3]}}).encode()
req = urllib.request.Request(base + "/lookup", body, {"content-type": "application/json"})
t1 = time.perf_counter()
answer = json.load(urllib.request.urlopen(req, timeout=10))
first_ms = (time.perf_counter() - t1) * 1e3
user, country = answer["fields"]["user_id"], answer["fields"]["country"]
assert user["found"] == [True, True] and country["found"] == [True], answer
assert len(user["vectors"]) == 2 and len(user["vectors"][0]) == user["dim"] == 9, user
version = answer["version"]
print(f"{ready:.1f} {first_ms:.1f} {version}")'
if ! result=$(python3 -c "$SMOKE" "$PORT"); then
  if [ -f "$WORK/serve.log" ]; then tail -20 "$WORK/serve.log" >&2; fi
  die "smoke test failed"
fi
read -r ready_s first_ms version <<<"$result"
step "/readyz 200 after $ready_s s; first lookup $first_ms ms (snapshot $version)"
for _ in $(seq 1 30); do
  if health_check; then health_ok=1; break; fi
  sleep 2
done
[ "${health_ok:-0}" = 1 ] || die "the image's HEALTHCHECK did not pass"
step "HEALTHCHECK passes"
python3 -c "import sys; sys.exit(float(sys.argv[1]) > float(sys.argv[2]))" "$first_ms" "$MAX_FIRST_MS" \
  || die "first lookup after ready took $first_ms ms, above SAEC_IMAGE_MAX_FIRST_MS=$MAX_FIRST_MS"
echo "image $TAG ($ENGINE, base $BASE): $size_mb MB; built in $build_seconds s; ready after $ready_s s; first lookup $first_ms ms; health check passes"
