# syntax=docker/dockerfile:1
# The serving image: `saec serve` over a store mounted at /data, as uid 10001 (user saec).
#
# Build (scripts/build-image.sh builds it and smoke-tests it, with docker or buildah):
#   docker build -t saec .
#   buildah bud --format docker -t saec .     # podman build: also --format docker, or the
#                                            # OCI format drops HEALTHCHECK (see README)
# Run, with the store in a named volume (it starts owned by uid 10001, so it is writable):
#   docker volume create saec-store
#   docker run --rm -v saec-store:/data saec demo --store /data          # a demo snapshot
#   docker run --rm -p 8000:8000 -v saec-store:/data saec                # serves /data
# Run, with the store in a folder of the host: the container writes as the uid it runs as,
# so either run it as you (any uid works; the image needs no home folder):
#   mkdir -p saec-store
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/saec-store:/data" saec demo --store /data
#   docker run --rm --user "$(id -u):$(id -g)" -p 8000:8000 -v "$PWD/saec-store:/data" saec
# or give the folder to uid 10001 once (sudo chown -R 10001:10001 saec-store), or mount it
# read only (-v "$PWD/saec-store:/data:ro"): serving without SAEC_ADMIN_TOKEN never writes.
# Measured size: 430 MB on the Debian stand-in base, 154 MB of it llvmlite (README,
# "The container image").
#
# The runtime stage holds the Python environment and nothing else: no compiler, no pip,
# no training, benchmark or test dependencies (saec compress and saec evaluate run where
# those extras are installed; `--build-arg SAEC_EXTRAS=compress` adds Parquet input).
# PYTHON_IMAGE: any Debian-based image with python3 (3.11 or 3.12) and its venv module;
# scripts/build-image.sh builds a stand-in from Debian's packages where no image registry
# is reachable.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG SAEC_EXTRAS=""
# Every dependency ships a wheel for CPython 3.11 and 3.12 on x86_64 and aarch64
# (hnswlib comes as chroma-hnswlib's wheel; see pyproject.toml): no compiler needed.
RUN python3 -m venv /opt/saec
WORKDIR /src
COPY pyproject.toml README.md ./
COPY saec saec
COPY store store
COPY server server
COPY clients clients
COPY loaders loaders
COPY compress compress
COPY training training
# pip-cert: an optional CA bundle for pip (a TLS-inspecting proxy), passed as a build
# secret so that it never enters a layer: --secret id=pip-cert,src=/path/to/ca.pem.
RUN --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
 && /opt/saec/bin/pip install --no-cache-dir --disable-pip-version-check ".${SAEC_EXTRAS:+[$SAEC_EXTRAS]}" \
 && /opt/saec/bin/pip uninstall --yes --quiet setuptools pip
# What the runtime does not read: the test suites of numpy and numba, and the debug
# symbols of the compiled modules (strip: 268 -> 187 MB, llvmlite 179 -> 160 MB of it).
# Libraries that auditwheel vendored (*.libs/) are left as shipped.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends binutils >/dev/null \
 && find /opt/saec/lib -depth -type d -path '*/site-packages/*' -name tests -exec rm -rf {} + \
 && find /opt/saec/lib -type f -name '*.so*' -not -path '*.libs/*' -exec strip --strip-unneeded {} +

FROM ${PYTHON_IMAGE}
# uid 10001, and group 0 as OpenShift-style platforms run images under an arbitrary uid in
# group 0: /data and the compile cache are writable by that group too.
RUN groupadd --gid 10001 saec \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /data --shell /usr/sbin/nologin saec \
 && mkdir -p /data /opt/numba-cache \
 && chown 10001:0 /data /opt/numba-cache \
 && chmod 0775 /data
COPY --from=build /opt/saec /opt/saec
ENV PATH=/opt/saec/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/opt/numba-cache \
    NUMBA_CPU_NAME=generic
# A warm compile cache: every lookup kernel for every dtype the format allows is compiled
# at build time, so a container is ready in seconds, not after 0.3-9 s per kernel. numba
# keys its cache by CPU name and features: "generic" makes the cache valid on whichever
# x86-64 the image runs on (the kernels are scalar loops bound by memory latency).
# numba refuses to load a cache=True kernel unless its cache folder is writable by the
# running uid, and `--user` may pick any uid: hence a+rwX.
RUN saec warmup && chmod -R a+rwX /opt/numba-cache
USER 10001
ENV SAEC_STORE=/data \
    SAEC_HOST=0.0.0.0 \
    SAEC_PORT=8000 \
    MALLOC_MMAP_THRESHOLD_=16777216 \
    MALLOC_TRIM_THRESHOLD_=268435456 \
    MALLOC_TOP_PAD_=16777216
WORKDIR /data
EXPOSE 8000
# Kept by docker build and by `buildah bud --format docker`; the OCI image format has no
# health check field, so buildah and podman drop it unless told --format docker.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
  CMD ["python", "-c", "import os, sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('SAEC_PORT', '8000'), timeout=2).status != 200)"]
ENTRYPOINT ["saec"]
# --wait: an empty /data is served (503 on /readyz) until a first snapshot is published.
CMD ["serve", "--wait"]
