# syntax=docker/dockerfile:1
# Build: docker build -t saec .
# Run:   docker run -p 8000:8000 -v $PWD/saec-store:/data saec        (serves /data)
#        docker run -v $PWD/saec-store:/data saec demo --store /data     (a demo snapshot first)
# The build stage needs no compiler: every dependency ships a wheel for CPython 3.11
# (hnswlib comes as chroma-hnswlib's wheel; see pyproject.toml).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY saec saec
COPY store store
COPY server server
COPY clients clients
COPY loaders loaders
COPY compress compress
COPY training training
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[compress]"

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 saec \
 && mkdir /data /opt/numba-cache && chown saec /data /opt/numba-cache
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER saec
# A warm compile cache: every lookup kernel for every dtype the format allows is compiled
# at build time, so a container is ready in seconds, not after 0.3-9 s per kernel. numba
# keys its cache by CPU name and features: "generic" makes the cache valid on whichever
# x86-64 the image runs on (the kernels are scalar loops bound by memory latency).
ENV NUMBA_CACHE_DIR=/opt/numba-cache \
    NUMBA_CPU_NAME=generic
RUN saec warmup
ENV SAEC_STORE=/data \
    SAEC_HOST=0.0.0.0 \
    SAEC_PORT=8000 \
    MALLOC_MMAP_THRESHOLD_=16777216 \
    MALLOC_TRIM_THRESHOLD_=268435456 \
    MALLOC_TOP_PAD_=16777216
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=2s --start-period=30s \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["saec"]
# --wait: an empty /data is served (503 on /readyz) until a first snapshot is published.
CMD ["serve", "--wait"]
