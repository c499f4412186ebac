"""saec against a real Redis embedding store, side by side in one run.

One table (generated, heavy-tailed and clustered: ``saec.synthetic``) is

- loaded into a fresh ``redis-server`` on 127.0.0.1 (8-byte saec-hash-v1 keys, float32
  rows as values, pipelined MSET) and read with MGET from redis-py + hiredis;
- compressed (``compress.compress_field``) and served by ``saec serve`` (uvicorn) on
  127.0.0.1, read with ``AsyncSaecClient``, binary and JSON;
- served dense by ``saec serve`` from a second store (``add_dense_field``), to separate
  the effect of compression from that of the service.

At every client concurrency it measures ids/s, p50 and p99, then p99 under a
rate-limited load at half of saec's peak, bytes per feature on each side, and writes
``bench/results/peers.md`` and ``peers.png``. ``--smoke`` runs a small table for a few
seconds and checks that every system answers the same vectors for the same ids.

    python -m bench.peers              # the full run (several minutes)
    python -m bench.peers --smoke      # CI: equal answers, every code path once
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench import _redis
from bench._load import CpuSampler, LoadPool, Phase, PhaseResult, Target, descendants

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
FIELD = "emb"
# glibc: serve the 256 KB-1 MB response buffers from the heap instead of fresh mmaps
# (MEASURED.md: np.take(...).tobytes() 393 us -> 33 us).
MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "16777216",
    "MALLOC_TRIM_THRESHOLD_": "268435456",
    "MALLOC_TOP_PAD_": "16777216",
}
TARGETS = {"binary_x": 10.0, "json_x": 2.0, "p99_ms": 5.0, "memory_x": 20.0}


_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


# -- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """The generated table and its compression.

    Attributes:
        ids: int64 (n,) raw ids; keys: uint64 (n,) = hash_ids(ids, FIELD).
        vectors: float32 (n, dim); counts: int64 (n,).
        codebook: float32 (k, dim); masks: uint8|uint16 (n,), aligned with ids.
        served: bool (n,): the id's own row answers it (False for the few ids that share
            a 32-bit key prefix with a more frequent id, see store/keyindex.py).
    """

    ids: npt.NDArray[np.int64]
    keys: npt.NDArray[np.uint64]
    vectors: npt.NDArray[np.float32]
    counts: npt.NDArray[np.int64]
    codebook: npt.NDArray[np.float32]
    masks: npt.NDArray[np.unsignedinteger]
    served: npt.NDArray[np.bool_]
    compress_seconds: float

    @property
    def n(self) -> int:
        return int(self.ids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def k(self) -> int:
        return int(self.codebook.shape[0])


def build_table(n: int, dim: int, k: int, top_n: int, seed: int) -> Table:
    from saec.compress import CompressedField, compress_field
    from saec.store import keyindex
    from saec.store.hashing import hash_ids
    from saec.synthetic import clustered_vectors, zipf_counts

    rng = np.random.default_rng(seed)
    vectors = clustered_vectors(n, dim, rng)
    counts = zipf_counts(n, rng)
    ids = np.arange(n, dtype=np.int64)
    keys = hash_ids(ids, FIELD)
    started = time.perf_counter()
    result = compress_field(vectors, counts, k=k, top_n=top_n, seed=seed, field=FIELD)
    seconds = time.perf_counter() - started
    if not isinstance(result, CompressedField):
        raise SystemExit(f"expected the table to compress, got a dense field: {result.reason}; raise --features")
    built = keyindex.build(keys, counts)  # what the writer builds from the same keys and counts
    served = np.zeros(n, dtype=bool)
    served[built.order] = True
    return Table(ids, keys, vectors, counts, result.codebook, result.masks, served, seconds)


def write_stores(table: Table, workdir: Path) -> tuple[Path, Path]:
    from saec.store.writer import SnapshotWriter

    compressed, dense = workdir / "store-compressed", workdir / "store-dense"
    with SnapshotWriter(compressed, source="bench.peers compressed") as w:
        w.add_compressed_field(FIELD, table.keys, table.codebook, table.masks, table.counts)
        w.publish()
    with SnapshotWriter(dense, source="bench.peers dense") as w:
        w.add_dense_field(FIELD, table.keys, table.vectors, table.counts)
        w.publish()
    return compressed, dense


def query_rows(table: Table, batches: int, batch: int, seed: int) -> npt.NDArray[np.int64]:
    """Row numbers (batches, batch), uniform over the ids saec serves from their own row."""
    pool = np.flatnonzero(table.served)
    rng = np.random.default_rng(seed + 1)
    return pool[rng.integers(0, pool.shape[0], size=(batches, batch))]


def check_rows(
    table: Table, batches: int, batch: int, seed: int
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
    """Keys (batches, batch) for the equality check: stored ids and about 2% never stored.

    Returns:
        keys uint64 (batches, batch); rows int64 (batches, batch), -1 for absent ids.
    """
    from saec.store.hashing import hash_ids

    rng = np.random.default_rng(seed + 2)
    rows = query_rows(table, batches, batch, seed + 3)
    absent = rng.random(rows.shape) < 0.02
    keys = table.keys[rows]
    stranger = hash_ids(table.n + np.arange(int(absent.sum()), dtype=np.int64), FIELD)
    keys[absent] = stranger
    rows = np.where(absent, -1, rows)
    return keys, rows


# -- Redis ----------------------------------------------------------------------------------


def load_redis(server: _redis.RedisServer, table: Table, batch: int = 10_000) -> dict[str, Any]:
    """MSET every row in pipelined batches; used_memory before and after."""
    raw_keys = table.keys.astype("<u8").tobytes()
    raw_values = np.ascontiguousarray(table.vectors, dtype="<f4").tobytes()
    width = 4 * table.dim
    with server.client() as r:
        hiredis = _redis.hiredis_active(r)
        before = int(r.info("memory")["used_memory"])
        started = time.perf_counter()
        pipe = r.pipeline(transaction=False)
        for lo in range(0, table.n, batch):
            hi = min(table.n, lo + batch)
            pipe.mset({raw_keys[8 * i : 8 * i + 8]: raw_values[width * i : width * (i + 1)] for i in range(lo, hi)})
            if len(pipe) >= 8:
                pipe.execute()
        pipe.execute()
        seconds = time.perf_counter() - started
        size = int(r.dbsize())
        if size != table.n:
            raise RuntimeError(f"expected {table.n} keys in Redis after loading, found {size}")
        info = r.info("memory")
    after = int(info["used_memory"])
    return {
        "hiredis": hiredis,
        "load_seconds": seconds,
        "used_memory_before": before,
        "used_memory_after": after,
        "bytes_per_feature": (after - before) / table.n,
        "allocator": info.get("mem_allocator", ""),
    }


# -- saec serve -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    workers: int
    malloc: bool

    @property
    def label(self) -> str:
        return f"{self.workers} worker{'s' if self.workers > 1 else ''}, " + (
            "malloc env" if self.malloc else "default malloc"
        )

    @property
    def short(self) -> str:
        return f"{self.workers}w{'+m' if self.malloc else ''}"


class SaecServer:
    """``saec serve`` as a subprocess in its own session on 127.0.0.1 (stopped on exit)."""

    def __init__(self, store: Path, config: ServerConfig, *, startup_timeout: float = 120.0) -> None:
        self.store = store
        self.config = config
        self.port = _redis.free_port()
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()

    @property
    def url(self) -> str:
        return f"http://{_redis.LOOPBACK}:{self.port}"

    def __enter__(self) -> SaecServer:
        import httpx

        env = {k: v for k, v in os.environ.items() if not k.startswith("SAEC_") and k not in MALLOC_ENV}
        if self.config.malloc:
            env.update(MALLOC_ENV)
        cmd = [
            sys.executable,
            "-m",
            "saec.cli",
            "serve",
            "--store",
            str(self.store),
            "--host",
            _redis.LOOPBACK,
            "--port",
            str(self.port),
            "--workers",
            str(self.config.workers),
            "--log-level",
            "warning",
        ]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"saec serve exited with code {self.proc.returncode}: {self.output()}")
                try:
                    if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"saec serve was not ready within {self.startup_timeout} s: {self.output()}")
                time.sleep(0.1)
            # Every worker answers before the clock starts (with 2 workers, the second may still be importing).
            while len(self.worker_pids()) < self.config.workers and time.monotonic() < deadline:
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-1500:]

    def pids(self) -> list[int]:
        return descendants(self.proc.pid) if self.proc else []

    def worker_pids(self) -> list[int]:
        """The processes that answer requests (the uvicorn worker children, or the one process)."""
        if self.proc is None:
            return []
        if self.config.workers == 1:
            return [self.proc.pid]
        # uvicorn's supervisor spawns workers with multiprocessing; skip its resource tracker.
        out = []
        for pid in self.pids():
            if pid == self.proc.pid:
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"resource_tracker" not in cmdline:
                out.append(pid)
        return out

    def memory(self) -> dict[str, Any]:
        import httpx

        return httpx.get(self.url + "/memory", timeout=30.0).json()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                # Our own session: its group is uvicorn and the workers it spawned.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # a worker left behind by a supervisor that died


# -- profiles -------------------------------------------------------------------------------


def profile_phase(pool: LoadPool, phase: Phase, server_pids: list[int], workdir: Path) -> dict[str, Any] | None:
    """Run ``phase`` once more under py-spy (server workers and client processes); None without py-spy."""
    spy = shutil.which("py-spy")
    if spy is None:
        return None
    seconds = phase.warmup + phase.duration
    recs = []
    for role, pids in (("server", server_pids), ("client", pool.pids)):
        for pid in pids:
            out = workdir / f"profile-{role}-{pid}.txt"
            cmd = [
                spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(np.ceil(seconds)) + 1),
                "--rate",
                "250",
                "--format",
                "raw",
                "--output",
                str(out),
                "--nonblocking",
            ]
            recs.append((role, out, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    time.sleep(1.0)  # py-spy attaches
    try:
        pool.run(phase)
    finally:
        for _, _, p in recs:
            try:
                p.wait(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    out: dict[str, Any] = {}
    for role in ("server", "client"):
        stacks: dict[str, int] = {}
        for r, path, _ in recs:
            if r != role or not path.exists():
                continue
            for line in path.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if count.isdigit():
                    stacks[stack] = stacks.get(stack, 0) + int(count)
        if stacks:
            out[role] = summarise_profile(stacks)
        else:
            errs = " ".join(
                p.stderr.read().decode(errors="replace")[-300:] for r, _, p in recs if r == role and p.stderr
            )
            out[role] = {"error": errs or "no samples"}
    return out


# A sample goes to the component of its innermost Python frame that belongs to one: time in
# C (numba kernels, numpy, socket syscalls) is charged to the Python frame that called it.
_COMPONENTS = (
    ("store.hashing", ("/store/hashing.py",)),
    ("store: key index probe + gather (numba kernels)", ("/store/",)),
    ("saec.wire: binary encode/decode", ("/saec/wire.py",)),
    ("server.codec: parse ids, render JSON (orjson)", ("/server/codec.py",)),
    ("server: app, metrics, problems", ("/server/",)),
    ("clients: AsyncSaecClient (encode, JSON decode)", ("/clients/",)),
    ("redis-py: command packing, connection", ("/redis/",)),
    ("httpx / httpcore / h11 / anyio (incl. socket writes)", ("/httpx/", "/httpcore/", "/h11/", "/anyio/")),
    ("uvicorn + httptools (incl. socket writes)", ("/uvicorn/",)),
    ("starlette / fastapi", ("/starlette/", "/fastapi/")),
    ("numba dispatch", ("/numba/",)),
    ("load generator (bench/)", ("/bench/",)),
    ("event loop: uvloop's C loop (socket reads and writes, callbacks)", ("/asyncio/", "uvloop")),
    ("imports", ("/<frozen importlib",)),
)


def summarise_profile(stacks: dict[str, int]) -> dict[str, Any]:
    total = sum(stacks.values())
    buckets: dict[str, int] = {}
    leaves: dict[str, int] = {}
    for stack, count in stacks.items():
        frames = stack.split(";")
        leaf = frames[-1] if frames else "?"
        leaves[leaf] = leaves.get(leaf, 0) + count
        name = "other"
        for frame in reversed(frames):
            # "func (path/to/file.py:12)": match on "/" + path, whether py-spy printed it whole or relative.
            path = "/" + frame[frame.rfind("(") + 1 :].lstrip("/")
            hit = next((b for b, marks in _COMPONENTS if any(m in path for m in marks)), None)
            if hit:
                name = hit
                break
        buckets[name] = buckets.get(name, 0) + count
    top = sorted(leaves.items(), key=lambda kv: -kv[1])[:12]
    return {
        "samples": total,
        "buckets": sorted(((k, v / total) for k, v in buckets.items()), key=lambda kv: -kv[1]),
        "leaves": [(k, v / total) for k, v in top],
    }


# -- the run --------------------------------------------------------------------------------


@dataclass
class Point:
    system: str
    config: str
    concurrency: int
    result: PhaseResult
    cpu: dict[str, float]
    rate: float | None = None
    attempts: int = 1

    @property
    def row(self) -> dict[str, Any]:
        r = self.result
        return {
            "system": self.system,
            "config": self.config,
            "concurrency": self.concurrency,
            "ids_per_s": r.ids_per_s,
            "req_per_s": r.requests / r.seconds if r.seconds else 0.0,
            "p50_ms": r.percentile_ms(50),
            "p99_ms": r.percentile_ms(99),
            "requests": r.requests,
            "errors": r.errors,
            "unfinished": r.unfinished,
            "first_error": r.first_error,
            "capped": r.capped,
            "rate": self.rate,
            "attempts": self.attempts,
            # CPU a request costs, ms: robust to outside load in a way wall-clock rates are not.
            "server_cpu_ms": self.cpu_ms("server"),
            "client_cpu_ms": self.cpu_ms("clients"),
            **{f"cpu_{k}": v for k, v in self.cpu.items()},
        }

    def cpu_ms(self, group: str) -> float:
        r = self.result
        return 1e3 * self.cpu.get(group, 0.0) * r.seconds / r.requests if r.requests else float("nan")


@dataclass
class Run:
    args: argparse.Namespace
    table: Table
    redis_memory: dict[str, Any] = field(default_factory=dict)
    saec_memory: dict[str, dict[str, Any]] = field(default_factory=dict)
    points: list[Point] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    profiles: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    started: str = ""
    seconds: float = 0.0

    def peak(self, system: str, config: str) -> Point:
        """The point of highest ids/s of one system and server configuration."""
        return max(
            (p for p in self.points if p.system == system and p.config == config), key=lambda p: p.result.ids_per_s
        )


HALF_PEAK = "saec binary @ half peak"
REDIS_BARE = "Redis MGET, bare client"
SAEC_BARE = "saec binary, bare client"


def warm(pool: LoadPool, target: Target, workers: int, seconds: float = 1.0) -> None:
    """Unmeasured requests, so that every worker has loaded its numba kernels and touched the
    mapped pages before a clock starts."""
    pool.run(Phase(target, concurrency=2 * workers, duration=seconds / 2, warmup=seconds / 2, max_requests=2_000))


def profile_all(
    run: Run, pool: LoadPool, configs: list[ServerConfig], store: Path, redis_target: Target, workdir: Path
) -> None:
    """py-spy over the best configuration's server and clients, at each system's peak concurrency."""
    args, table = run.args, run.table
    best_config = max(configs, key=lambda c: run.peak("saec binary", c.short).result.ids_per_s)
    with SaecServer(store, best_config) as server:
        warm(pool, Target("saec", server.port, table.dim, "binary", FIELD), best_config.workers)
        systems = [("saec binary", "binary", "library"), ("saec JSON", "json", "library")]
        if args.bare:
            systems.append((SAEC_BARE, "binary", "bare"))
        for system, protocol, client in systems:
            c = run.peak(system, best_config.short).concurrency
            target = Target("saec", server.port, table.dim, protocol, FIELD, client=client)
            log(f"profiling {system} ({best_config.label}, c={c}) with py-spy ...")
            prof = profile_phase(
                pool,
                Phase(target, c, args.profile_seconds, args.warmup, args.max_requests),
                server.worker_pids(),
                workdir,
            )
            if prof is None:
                log("  py-spy not found (pip install py-spy): no profile")
                return
            run.profiles[f"saec server under {system} ({best_config.label}, c={c})"] = prof["server"]
            who = "AsyncSaecClient" if client == "library" else "bare asyncio client"
            run.profiles[f"{who}, {protocol} (c={c})"] = prof["client"]
    c = run.peak("Redis MGET", best_config.short).concurrency
    log(f"profiling the Redis client (c={c}) with py-spy ...")
    prof = profile_phase(
        pool, Phase(redis_target, c, args.profile_seconds, args.warmup, args.max_requests), [], workdir
    )
    if prof is not None:
        run.profiles[f"redis-py asyncio + hiredis client (c={c})"] = prof["client"]


def wait_for_idle(limit: float, busy: float) -> None:
    """Sample the machine in 2-second windows until outside load is under ``busy`` cores, for at most ``limit`` s."""
    deadline = time.monotonic() + limit
    while True:
        now = time.monotonic()
        other = CpuSampler({}).window(now, now + 2.0)["other"]
        if other <= busy:
            log(f"outside load {other:.2f} cores: starting")
            return
        if time.monotonic() > deadline:
            log(f"outside load still {other:.2f} cores after {limit:.0f} s: measuring anyway (see the cores columns)")
            return
        log(f"outside load {other:.2f} cores (> {busy}): waiting ...")


def run_benchmark(args: argparse.Namespace) -> Run:
    """Build, load, measure; every process started here is stopped before returning."""
    started = time.perf_counter()
    binary = _redis.ensure_redis_server(args.redis_server, install=not args.no_install, log=log)
    log(f"table: {args.features:,} features x dim {args.dim}, k={args.k}, top_n={args.top_n:,} ...")
    table = build_table(args.features, args.dim, args.k, args.top_n, args.seed)
    log(f"  compressed in {table.compress_seconds:.1f} s; {table.n - int(table.served.sum())} ids aliased")
    run = Run(
        args=args,
        table=table,
        versions=versions(binary),
        started=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    configs = [ServerConfig(w, m) for w in args.workers for m in args.malloc]
    top = max(args.concurrency)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="saec-peers-")))
        compressed_store, dense_store = write_stores(table, workdir)
        queries = table.keys[query_rows(table, args.query_batches, args.batch, args.seed)]
        check_keys, check_ids = check_rows(table, args.check_batches, args.batch, args.seed)

        redis_server = stack.enter_context(_redis.RedisServer(binary))
        log(f"redis-server {run.versions['redis-server']} on 127.0.0.1:{redis_server.port}: loading ...")
        run.redis_memory = load_redis(redis_server, table)
        if not run.redis_memory["hiredis"]:
            raise RuntimeError(
                "expected redis-py to parse replies with hiredis, found the pure-Python parser: pip install hiredis"
            )
        log(
            f"  {run.redis_memory['load_seconds']:.1f} s, "
            f"{run.redis_memory['bytes_per_feature']:.1f} B/feature, hiredis on"
        )

        if args.wait_idle > 0:
            wait_for_idle(args.wait_idle, args.busy)
        pool = LoadPool(queries, check_keys, args.client_procs, str(workdir))
        stack.callback(pool.close)
        redis_target = Target("redis", redis_server.port, table.dim)

        def point(
            system: str,
            config: str,
            target: Target,
            c: int,
            groups: dict[str, list[int]],
            rate: float | None = None,
            duration: float | None = None,
        ) -> Point:
            """Measure one point; again (at most --retries times) while outside load exceeds --busy cores."""
            phase = Phase(target, c, duration or args.duration, args.warmup, args.max_requests, rate)
            best: Point | None = None
            for attempt in range(1 + args.retries):
                result = pool.run(phase, between=CpuSampler(groups).window)
                p = Point(system, config, c, result, result.extra, rate, attempts=attempt + 1)
                if best is None or p.cpu.get("other", 0.0) < best.cpu.get("other", 0.0):
                    best = p
                if p.cpu.get("other", 0.0) <= args.busy or attempt == args.retries:
                    break
                log(_line(p) + f"  <- {p.cpu.get('other', 0.0):.2f} cores of outside load: measuring again")
            assert best is not None
            best.attempts = attempt + 1
            run.points.append(best)
            log(_line(best))
            return best

        redis_groups = {"server": [redis_server.pid], "clients": pool.pids}
        redis_bare = Target("redis", redis_server.port, table.dim, client="bare")
        # Redis is measured right after the saec system it is compared with, at the same concurrency,
        # so that both see the same outside load; each configuration gets its own Redis points.
        paired = {"saec binary": ("Redis MGET", redis_target), SAEC_BARE: (REDIS_BARE, redis_bare)}

        for config in configs:
            for label, store in (("saec", compressed_store), ("saec dense", dense_store)):
                with SaecServer(store, config) as server:
                    warm(pool, Target("saec", server.port, table.dim, "binary", FIELD), config.workers, args.warm)
                    targets = {
                        f"{label} binary": Target("saec", server.port, table.dim, "binary", FIELD),
                        f"{label} JSON": Target("saec", server.port, table.dim, "json", FIELD),
                    }
                    if label == "saec" and args.bare:
                        targets[SAEC_BARE] = Target("saec", server.port, table.dim, "binary", FIELD, client="bare")
                    if label not in run.saec_memory:
                        run.saec_memory[label] = server.memory()["total"]
                        first = {"Redis MGET": redis_target} if label == "saec" else {}
                        if label == "saec" and args.bare:
                            first[REDIS_BARE] = redis_bare
                        check_answers(pool, run, {**first, **targets}, check_ids)
                    groups = {"server": server.pids(), "clients": pool.pids, "redis": [redis_server.pid]}
                    for name, target in targets.items():
                        then = f", each point followed by {paired[name][0]}" if name in paired else ""
                        log(f"{name} ({config.label}){then}:")
                        for c in args.concurrency:
                            point(name, config.short, target, c, groups)
                            if name in paired:
                                point(paired[name][0], config.short, paired[name][1], c, redis_groups)
                    if label == "saec":
                        best = run.peak("saec binary", config.short)
                        rate = best.result.ids_per_s / 2 / args.batch
                        log(f"saec binary at half its peak ({config.label}): {rate:.0f} requests/s")
                        point(HALF_PEAK, config.short, targets["saec binary"], top, groups, rate, args.rate_duration)

        if args.profile:
            profile_all(run, pool, configs, compressed_store, redis_target, workdir)
    run.seconds = time.perf_counter() - started
    return run


def check_answers(pool: LoadPool, run: Run, targets: dict[str, Target], rows: npt.NDArray[np.int64]) -> None:
    """Each system's answer to the check batches against the table itself.

    Args:
        rows: int64 (batches, batch), the table row of each check id, -1 for ids never stored.
    Raises:
        AssertionError: naming the system, what was expected and what came.
    """
    table = run.table
    for b in range(rows.shape[0]):
        present = rows[b] >= 0
        safe = np.where(present, rows[b], 0)
        raw = np.where(present[:, None], table.vectors[safe], np.float32(0)).astype(np.float32)
        decoded = np.where(present[:, None], table.codebook[table.masks[safe]], np.float32(0)).astype(np.float32)
        for name, target in targets.items():
            vectors, found = pool.check(target, b)
            want, what = (
                (decoded, "codebook[masks] of the compressed table")
                if name in ("saec binary", "saec JSON", SAEC_BARE)
                else (raw, "float32 rows of the table")
            )
            if not np.array_equal(found, present):
                bad = np.flatnonzero(found != present)
                raise AssertionError(
                    f"{name}: expected the found flags of Redis (stored ids), got {bad.size} different, "
                    f"first at position {bad[0]}: expected {bool(present[bad[0]])}, got {bool(found[bad[0]])}"
                )
            if vectors.shape != want.shape:
                raise AssertionError(f"{name}: expected vectors of shape {want.shape}, got {vectors.shape}")
            differ = (vectors.view(np.uint32) != want.view(np.uint32)).any(axis=1)
            if differ.any():
                i = int(np.flatnonzero(differ)[0])
                raise AssertionError(
                    f"{name}: expected vectors bitwise equal to the {what}, got {int(differ.sum())} rows "
                    f"different; first at position {i}: expected {want[i][:4]}..., got {vectors[i][:4]}..."
                )
    absent = int((rows < 0).sum())
    names = "; ".join(targets)
    run.checks.append(
        f"{names}: {rows.shape[0]} batches of {rows.shape[1]} ids ({rows.size - absent} stored, {absent} never "
        "stored) answered bitwise equal to the table (Redis and dense: its float32 rows; compressed: codebook[masks]), "
        "found flags identical"
    )


def _line(p: Point) -> str:
    r = p.row
    cpu = " ".join(f"{k[4:]}={v:.2f}" for k, v in r.items() if k.startswith("cpu_") and k != "cpu_busy")
    err = f" errors={r['errors']} ({r['first_error']})" if r["errors"] else ""
    if r["unfinished"]:
        err += f" unfinished={r['unfinished']}"
    rate = f" rate={p.rate:.0f}/s" if p.rate else ""
    return (
        f"  c={p.concurrency:<3}{rate} {r['ids_per_s'] / 1e6:7.3f} M ids/s  {r['req_per_s']:7.1f} req/s  "
        f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  cores: {cpu}{err}"
    )


def versions(redis_binary: str) -> dict[str, str]:
    import fastapi
    import hiredis
    import httptools
    import httpx
    import numba
    import redis
    import starlette
    import uvicorn
    import uvloop

    import saec

    return {
        "redis-server": _redis.server_version(redis_binary),
        "redis-py": redis.__version__,
        "hiredis": hiredis.__version__,
        "uvicorn": uvicorn.__version__,
        "httptools": httptools.__version__,
        "uvloop": uvloop.__version__,
        "fastapi": fastapi.__version__,
        "starlette": starlette.__version__,
        "httpx": httpx.__version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "python": platform.python_version(),
        "saec": saec.__version__,
    }


# -- the report -----------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:", 1)[1].split()[0])
        mem = f"{kb / 2**20:.1f} GiB"
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip() or str(os.cpu_count())
    return {
        "nproc": nproc,
        "cpu": model,
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
    }


def command_line(argv: Sequence[str]) -> str:
    entry = os.environ.get("SAEC_PEERS_ENTRY") or "python -m bench.peers"
    return " ".join([entry, *(shlex.quote(a) for a in argv)])


@dataclass(frozen=True)
class Headline:
    config: str
    redis_peak: float
    binary_peak: float
    json_peak: float
    dense_binary_peak: float
    dense_json_peak: float
    half_peak_p99_ms: float
    half_peak_rate_ids: float
    redis_bytes: float
    saec_bytes: float
    dense_bytes: float
    redis_bare_peak: float = 0.0
    saec_bare_peak: float = 0.0

    @property
    def binary_x(self) -> float:
        return self.binary_peak / self.redis_peak

    @property
    def json_x(self) -> float:
        return self.json_peak / self.redis_peak

    @property
    def memory_x(self) -> float:
        return self.redis_bytes / self.saec_bytes


def configs_of(run: Run) -> list[str]:
    return list(dict.fromkeys(p.config for p in run.points))


def headline(run: Run, config: str | None = None) -> Headline:
    if config is None:
        config = max(configs_of(run), key=lambda c: run.peak("saec binary", c).result.ids_per_s)
    half = next(p for p in run.points if p.system == HALF_PEAK and p.config == config)
    return Headline(
        config=config,
        redis_peak=run.peak("Redis MGET", config).result.ids_per_s,
        binary_peak=run.peak("saec binary", config).result.ids_per_s,
        json_peak=run.peak("saec JSON", config).result.ids_per_s,
        dense_binary_peak=run.peak("saec dense binary", config).result.ids_per_s,
        dense_json_peak=run.peak("saec dense JSON", config).result.ids_per_s,
        half_peak_p99_ms=half.result.percentile_ms(99),
        half_peak_rate_ids=(half.rate or 0.0) * run.args.batch,
        redis_bytes=run.redis_memory["bytes_per_feature"],
        saec_bytes=run.saec_memory["saec"]["bytes_per_feature"],
        dense_bytes=run.saec_memory["saec dense"]["bytes_per_feature"],
        redis_bare_peak=_peak_or_zero(run, REDIS_BARE, config),
        saec_bare_peak=_peak_or_zero(run, SAEC_BARE, config),
    )


def _peak_or_zero(run: Run, system: str, config: str) -> float:
    pts = [p.result.ids_per_s for p in run.points if p.system == system and p.config == config]
    return max(pts) if pts else 0.0


def _m(x: float) -> str:
    return f"{x / 1e6:.2f}"


def _ms(x: float) -> str:
    if x != x:
        return "-"
    if x == float("inf"):
        return "> 10 s (unfinished)"
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _ok(value: float, target: float, higher: bool = True) -> str:
    met = value >= target if higher else value <= target
    return "met" if met else "**missed**"


CONFIG_NAMES = {"1w": "1 worker", "1w+m": "1 worker + malloc env", "2w": "2 workers", "2w+m": "2 workers + malloc env"}


def config_name(short: str) -> str:
    return CONFIG_NAMES.get(short, short)


def render_markdown(run: Run, argv: Sequence[str], png_name: str) -> str:
    a = run.args
    t = run.table
    h = headline(run)
    mach = machine()
    v = run.versions
    lines: list[str] = []
    add = lines.append
    add("# saec against Redis: embedding lookups side by side")
    add("")
    add(f"Measured {run.started} in {run.seconds / 60:.1f} minutes by one command:")
    add("")
    add("```")
    add(command_line(argv))
    add("```")
    add("")
    add(
        f"Machine: `nproc` = {mach['nproc']}, {mach['cpu']}, {mach['memory']}, {mach['os']} ({mach['machine']}). "
        f"Versions: redis-server {v['redis-server']}, redis-py {v['redis-py']}, hiredis {v['hiredis']}, "
        f"uvicorn {v['uvicorn']} (httptools {v['httptools']}, uvloop {v['uvloop']}), fastapi {v['fastapi']}, "
        f"starlette {v['starlette']}, httpx {v['httpx']}, numpy {v['numpy']}, numba {v['numba']}, "
        f"Python {v['python']}, saec {v['saec']}."
    )
    add("")
    add(f"![ids/s and p99 against concurrency]({png_name})")
    add("")
    add("## Headline")
    add("")
    add(
        f"Best saec configuration: **{config_name(h.config)}**. Peaks are the best ids/s over client "
        f"concurrencies {', '.join(map(str, a.concurrency))}, {a.batch} ids a request."
    )
    add("")
    add("| metric | target | measured | |")
    add("|---|---|---|---|")
    add(
        f"| saec binary ids/s ÷ Redis MGET ids/s | ≥ {TARGETS['binary_x']:.0f}x | {h.binary_x:.1f}x "
        f"({_m(h.binary_peak)} vs {_m(h.redis_peak)} M ids/s) | {_ok(h.binary_x, TARGETS['binary_x'])} |"
    )
    add(
        f"| saec JSON ids/s ÷ Redis MGET ids/s | ≥ {TARGETS['json_x']:.0f}x | {h.json_x:.1f}x "
        f"({_m(h.json_peak)} vs {_m(h.redis_peak)} M ids/s) | {_ok(h.json_x, TARGETS['json_x'])} |"
    )
    add(
        f"| saec binary p99 at half its peak ({_m(h.half_peak_rate_ids)} M ids/s, open loop) "
        f"| ≤ {TARGETS['p99_ms']:.0f} ms | "
        f"{_ms(h.half_peak_p99_ms)} ms | {_ok(h.half_peak_p99_ms, TARGETS['p99_ms'], higher=False)} |"
    )
    add(
        f"| Redis bytes per feature ÷ saec bytes per feature | ≥ {TARGETS['memory_x']:.0f}x | {h.memory_x:.1f}x "
        f"({h.redis_bytes:.1f} vs {h.saec_bytes:.2f} B) | {_ok(h.memory_x, TARGETS['memory_x'])} |"
    )
    add("")
    if h.saec_bare_peak and h.redis_bare_peak:
        add(
            f"With bare asyncio clients on both sides (no redis-py, no httpx; Redis's commands pre-encoded): saec "
            f"binary {_m(h.saec_bare_peak)} M ids/s against Redis {_m(h.redis_bare_peak)} M ids/s, "
            f"{h.saec_bare_peak / h.redis_bare_peak:.1f}x; saec bare against Redis through redis-py: "
            f"{h.saec_bare_peak / h.redis_peak:.1f}x."
        )
        add("")
    add(
        f"Serving the same table dense, saec reaches {_m(h.dense_binary_peak)} M ids/s binary "
        f"({h.dense_binary_peak / h.redis_peak:.1f}x Redis) and {_m(h.dense_json_peak)} M ids/s JSON "
        f"({h.dense_json_peak / h.redis_peak:.1f}x) at {h.dense_bytes:.1f} B per feature "
        f"({h.redis_bytes / h.dense_bytes:.1f}x fewer than Redis): the service accounts for the speed, "
        f"compression for the memory ({h.dense_bytes / h.saec_bytes:.1f}x fewer bytes than dense)."
    )
    add("")
    add(by_config(run))
    add("")
    add(bounds(run, h, int(mach["nproc"]) if mach["nproc"].isdigit() else 2))
    add("")
    add("## Setup")
    add("")
    add(
        f"- Table: {t.n:,} features, dim {t.dim} (float32: {4 * t.dim}-byte vectors), generated by `saec.synthetic` "
        f"(Zipf counts, vectors around 200 centres), seed {a.seed}. Compressed with `compress.compress_field` at "
        f"k={t.k}, top_n={a.top_n:,} in {t.compress_seconds:.1f} s: {t.codebook.nbytes:,} B codebook + "
        f"{t.masks.dtype} masks."
    )
    add(
        f'- Keys: `store.hashing.hash_ids(ids, "{FIELD}")`, the same 8-byte keys on both sides (Redis: little-endian '
        f"bytes as the key, the float32 row as the value, loaded by pipelined MSET of 10,000 keys in "
        f"{run.redis_memory['load_seconds']:.1f} s)."
    )
    aliased = t.n - int(t.served.sum())
    add(
        f"- Requests: {a.batch} ids each, drawn uniformly from the table. The {aliased} ids that saec's key index "
        "aliases (their top 32 hash bits equal a more frequent id's; they answer that id's row, see "
        "`store/keyindex.py`) are left out of every request, for both systems."
    )
    add(
        f'- Redis: `redis-server` on 127.0.0.1 with `--save "" --appendonly no` ({run.redis_memory["allocator"]}), '
        "read with `MGET` from `redis.asyncio` + hiredis (checked active), answers turned into the same float32 "
        "(n, dim) array and found flags as saec's. Key lists are built before the clock starts, so Redis is not "
        "charged for turning ids into keys. Redis is measured right after each saec binary point, at the same "
        "concurrency and with the same kind of client, in every server configuration: on a shared machine each "
        "ratio then compares windows under similar outside load."
    )
    add(
        "- saec: `saec serve` (uvicorn, httptools, uvloop) on 127.0.0.1, read through `clients.AsyncSaecClient` "
        "(`hashed=True`), binary (`application/x-saec-*`) and JSON. `saec dense` serves the same table from a "
        "second store written with `SnapshotWriter.add_dense_field`."
    )
    add(
        f"- Load: {a.client_procs} client process(es), each running its share of the concurrency as asyncio tasks "
        f"(closed loop). Each point: {a.warmup} s warm-up, then {a.duration} s measured (at most {a.max_requests:,} "
        f"requests a process). The half-peak phase is an open loop at a fixed request rate for {a.rate_duration} s; "
        "its latency counts from the time each request was due, so queueing is not hidden."
    )
    add(
        f"- **The load generator shares the {mach['nproc']} cores with the server** (and with Redis, which is "
        "idle during saec's phases). The `cores` columns below say who used the CPU during each window: the server, "
        "the client processes, and `other` (processes outside this benchmark)."
    )
    add(
        f"- malloc env = `{' '.join(f'{k}={v}' for k, v in MALLOC_ENV.items())}` in the server's environment "
        "(glibc; the clients run with the default)."
    )
    add("")
    add("## Memory")
    add("")
    add("| system | bytes per feature | what is counted |")
    add("|---|---|---|")
    add(f"| Redis | {h.redis_bytes:.1f} | `INFO memory` used_memory after loading minus before, ÷ {t.n:,} |")
    sm, dm = run.saec_memory["saec"], run.saec_memory["saec dense"]
    add(
        f"| saec (k={t.k}) | {h.saec_bytes:.2f} | `/memory` serving bytes ÷ features: masks {sm['masks_bytes']:,} B, "
        f"codebook {sm['codebook_bytes']:,} B, key index {sm['key_index_bytes']:,} B, other {sm['other_bytes']:,} B |"
    )
    add(
        f"| saec dense | {h.dense_bytes:.2f} | vectors {dm['vectors_bytes']:,} B, "
        f"key index {dm['key_index_bytes']:,} B, "
        f"other {dm['other_bytes']:,} B |"
    )
    add(f"| payload alone | {4 * t.dim + 8} | {4 * t.dim}-byte vector + 8-byte key |")
    add("")
    add("## Throughput and latency")
    add("")
    add(
        "ids/s in millions; latency in ms; cores = CPU used during the window by the server / the client processes / "
        "anything else on the machine."
    )
    order = ["Redis MGET", "saec binary", "saec JSON", REDIS_BARE, SAEC_BARE, "saec dense binary", "saec dense JSON"]
    for cfg in configs_of(run):
        pts = sorted(
            (p for p in run.points if p.config == cfg and p.system in order),
            key=lambda p: (order.index(p.system), p.concurrency),
        )
        if not pts:
            continue
        add("")
        add(f"### saec {config_name(cfg)}, and Redis measured alongside")
        add("")
        add(
            "| system | concurrency | M ids/s | req/s | p50 ms | p99 ms | × Redis (same c, same client kind) "
            "| CPU ms/request server / client | cores server / clients / other | errors |"
        )
        add("|---|---|---|---|---|---|---|---|---|---|")
        for p in pts:
            r = p.row
            ref = REDIS_BARE if p.system == SAEC_BARE else "Redis MGET"
            redis = next(
                (q for q in pts if q.system == ref and q.concurrency == p.concurrency),
                None,
            )
            ratio = (
                ""
                if p.system.startswith("Redis") or redis is None
                else f"{p.result.ids_per_s / max(redis.result.ids_per_s, 1):.1f}x"
            )
            add(
                f"| {p.system} | {p.concurrency} | {_m(r['ids_per_s'])} | {r['req_per_s']:.0f} | {_ms(r['p50_ms'])} | "
                f"{_ms(r['p99_ms'])} | {ratio} | {r['server_cpu_ms']:.2f} / {r['client_cpu_ms']:.2f} | "
                f"{r.get('cpu_server', 0):.2f} / {r.get('cpu_clients', 0):.2f} / "
                f"{r.get('cpu_other', 0):.2f} | {r['errors']} |"
            )
    add("")
    add("## Latency at half of the peak (open loop)")
    add("")
    add(
        "The offered rate is half the peak measured just before in the same configuration; when outside load "
        "takes cores meanwhile, the offered rate can exceed what is left and requests queue (`unfinished`: still "
        "queued 10 s after the window, abandoned by the load generator and counted as slower than any)."
    )
    add("")
    add(
        "| configuration | offered M ids/s | achieved M ids/s | p50 ms | p99 ms | unfinished | outside load, cores "
        "| target p99 | |"
    )
    add("|---|---|---|---|---|---|---|---|---|")
    for p in run.points:
        if p.system != HALF_PEAK:
            continue
        p99 = p.result.percentile_ms(99)
        add(
            f"| {config_name(p.config)} | {_m((p.rate or 0) * a.batch)} | {_m(p.result.ids_per_s)} | "
            f"{_ms(p.result.percentile_ms(50))} | {_ms(p99)} | {p.result.unfinished} | "
            f"{p.cpu.get('other', 0.0):.2f} | ≤ {TARGETS['p99_ms']:.0f} | {_ok(p99, TARGETS['p99_ms'], higher=False)} |"
        )
    add("")
    add("## glibc malloc settings and workers")
    add("")
    add("| workers | system | default malloc: peak M ids/s | malloc env: peak M ids/s | change |")
    add("|---|---|---|---|---|")
    cfgs = configs_of(run)
    for w in sorted({c.rstrip("+m").rstrip("w") for c in cfgs}):
        plain, tuned = f"{w}w", f"{w}w+m"
        if plain not in cfgs or tuned not in cfgs:
            continue
        for system in ("saec binary", "saec JSON", "saec dense binary", "saec dense JSON"):
            x, y = run.peak(system, plain).result.ids_per_s, run.peak(system, tuned).result.ids_per_s
            add(f"| {w} | {system} | {_m(x)} | {_m(y)} | {100 * (y / x - 1):+.0f}% |")
    add("")
    add(recommendation(run))
    add("")
    if run.profiles:
        add("## Where the time goes (py-spy)")
        add("")
        add(
            "Separate phases, not counted above, sampled with `py-spy record --rate 250` at each system's peak "
            "concurrency. A sample is a Python stack of a thread py-spy does not see waiting in the event loop; "
            "time in C (numba kernels, numpy, socket system calls) is charged to the Python frame that called it, "
            "and on a machine this busy a sample also lands on a frame that is waiting for a core."
        )
        for who, prof in run.profiles.items():
            add("")
            add(f"**{who}**" + (f": {prof['samples']:,} samples" if prof and "samples" in prof else ""))
            add("")
            if not prof or "error" in prof:
                add(f"(no profile: {prof.get('error') if prof else 'none'})")
                continue
            add("| share | component (innermost frame that belongs to one) |")
            add("|---|---|")
            for name, share in prof["buckets"]:
                if share >= 0.01:
                    add(f"| {100 * share:.0f}% | {name} |")
            add("")
            add("Hottest lines: " + "; ".join(f"`{_frame(k)}` {100 * s:.0f}%" for k, s in prof["leaves"][:6]) + ".")
    add("")
    add("## Equal work")
    add("")
    for c in run.checks:
        add(f"- {c}.")
    other = [p.cpu.get("other", 0.0) for p in run.points]
    if other:
        add("")
        add(
            f"Load from outside the benchmark during the measured windows: mean {np.mean(other):.2f} cores, "
            f"max {np.max(other):.2f} cores (of {mach['nproc']}); points with more than {run.args.busy} cores "
            "of outside "
            f"load (each measured up to {1 + run.args.retries} times, the quietest attempt kept) are less reliable: "
            f"{sum(o > run.args.busy for o in other)} of {len(other)}."
        )
    add("")
    return "\n".join(lines)


def by_config(run: Run) -> str:
    """The headline ratios for every server configuration, each against the Redis points measured alongside."""
    lines = [
        "### Every server configuration",
        "",
        "| configuration | Redis MGET peak | saec binary peak | × | saec JSON × | bare clients: saec ÷ Redis "
        "| saec binary p99 at half peak, ms | outside load, cores (mean) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cfg in configs_of(run):
        h = headline(run, cfg)
        bare = f"{h.saec_bare_peak / h.redis_bare_peak:.1f}x" if h.redis_bare_peak else "-"
        other = np.mean([p.cpu.get("other", 0.0) for p in run.points if p.config == cfg])
        lines.append(
            f"| {config_name(cfg)} | {_m(h.redis_peak)} | {_m(h.binary_peak)} | {h.binary_x:.1f}x | {h.json_x:.1f}x "
            f"| {bare} | {_ms(h.half_peak_p99_ms)} | {other:.2f} |"
        )
    return "\n".join(lines)


def bounds(run: Run, h: Headline, cores: int) -> str:
    """What limits each system, from the CPU a request cost at its peak (server and client)."""
    rows = []

    def at_peak(system: str, config: str) -> Point | None:
        pts = [p for p in run.points if p.system == system and p.config == config]
        return max(pts, key=lambda p: p.result.ids_per_s) if pts else None

    batch = run.args.batch
    lines = [
        "### What bounds the throughput",
        "",
        "CPU a request costs at each system's peak, in ms (CPU time of the server's processes and of the "
        "load generator's over the window, ÷ requests; unlike rates, these barely move with outside load). "
        f"Ceiling = the ids/s those costs allow on {cores} cores, where server and client share the cores: "
        f"{cores} ÷ (server + client) ms, and no more than the server's own limit: Redis runs its commands on one "
        "thread (1 core ÷ server ms), saec on one core a worker.",
        "",
        "| system | server ms | client ms | ceiling M ids/s | measured peak M ids/s |",
        "|---|---|---|---|---|",
    ]
    for system, config in (
        ("Redis MGET", h.config),
        (REDIS_BARE, h.config),
        ("saec binary", h.config),
        (SAEC_BARE, h.config),
        ("saec JSON", h.config),
        ("saec dense binary", h.config),
    ):
        p = at_peak(system, config)
        if p is None:
            continue
        s, c = p.cpu_ms("server"), p.cpu_ms("clients")
        if system.startswith("Redis"):
            # One thread runs Redis's commands; its client still shares the cores.
            ceiling = min(batch / (s / 1e3), batch * cores / ((s + c) / 1e3))
        else:
            workers = int(config.split("w")[0]) if config[0].isdigit() else 1
            ceiling = min(batch * cores / ((s + c) / 1e3), batch * min(workers, cores) / (s / 1e3))
        rows.append((system, s, c, ceiling, p.result.ids_per_s))
        lines.append(f"| {system} | {s:.2f} | {c:.2f} | {_m(ceiling)} | {_m(p.result.ids_per_s)} |")
    by = {r[0]: r for r in rows}
    if "saec binary" in by and "Redis MGET" in by:
        s, c = by["saec binary"][1], by["saec binary"][2]
        lines += [
            "",
            f"Through `AsyncSaecClient` the client spends {c:.2f} ms of CPU a request against the server's "
            f"{s:.2f} ms ({100 * c / (s + c):.0f}% of the request's CPU, on the same cores).",
        ]
        if SAEC_BARE in by:
            lines[-1] += (
                f" The same server read by a bare asyncio client ({by[SAEC_BARE][2]:.2f} ms a request) reaches "
                f"{_m(by[SAEC_BARE][4])} M ids/s, {by[SAEC_BARE][4] / h.redis_peak:.1f}x Redis's peak."
            )
        s, c = by["Redis MGET"][1], by["Redis MGET"][2]
        if s >= c:
            lines[-1] += f" Redis is bound by its one thread: {s:.2f} ms of server CPU an MGET of {batch} keys."
        else:
            lines[-1] += f" Redis through redis-py is bound by its client: {c:.2f} ms a request against {s:.2f} ms."
    return "\n".join(lines)


def _frame(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    short = "/".join(where.split("/")[-2:])
    return f"{name} ({short})" if where else name


def recommendation(run: Run) -> str:
    cfgs = configs_of(run)
    best = max(cfgs, key=lambda c: run.peak("saec binary", c).result.ids_per_s)
    words = [f"Recommendation from this run: serve with **{config_name(best)}**"]
    gains = []
    for w in sorted({c.rstrip("+m").rstrip("w") for c in cfgs}):
        plain, tuned = f"{w}w", f"{w}w+m"
        if plain in cfgs and tuned in cfgs:
            x = run.peak("saec binary", plain).result.ids_per_s
            y = run.peak("saec binary", tuned).result.ids_per_s
            gains.append(f"{w} worker{'s' if w != '1' else ''}: {100 * (y / x - 1):+.0f}%")
    if gains:
        words.append(f" (malloc env on saec binary peak: {', '.join(gains)})")
    words.append(
        ". Differences under about 10% are within the run-to-run noise of a 2-core machine that "
        "the load generator shares."
    )
    loads = {c: float(np.mean([p.cpu.get("other", 0.0) for p in run.points if p.config == c])) for c in cfgs}
    if max(loads.values()) - min(loads.values()) > 0.3:
        words.append(
            " Outside load differed between configurations (mean "
            + ", ".join(f"{config_name(c)} {v:.2f}" for c, v in loads.items())
            + " cores), so compare them by the server's CPU a request, which outside load moves much less:"
        )
    table = [
        "| configuration | server CPU ms a request, median over concurrencies: binary / JSON / dense binary / "
        "binary with the bare client |",
        "|---|---|",
    ]
    for c in cfgs:
        cells = []
        for system in ("saec binary", "saec JSON", "saec dense binary", SAEC_BARE):
            ms = [p.cpu_ms("server") for p in run.points if p.system == system and p.config == c]
            cells.append(f"{np.median(ms):.2f}" if ms else "-")
        table.append(f"| {config_name(c)} | {' / '.join(cells)} |")
    return "".join(words) + "\n\n" + "\n".join(table)


def render_plot(run: Run, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    h = headline(run)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 6.0))
    styles = {
        "Redis MGET": ("tab:red", "o"),
        "saec binary": ("tab:blue", "s"),
        "saec JSON": ("tab:green", "^"),
        "saec dense binary": ("tab:purple", "D"),
        "saec dense JSON": ("tab:olive", "v"),
        REDIS_BARE: ("tab:red", "x"),
        SAEC_BARE: ("tab:blue", "x"),
    }
    for system, (color, marker) in styles.items():
        cfg = h.config
        pts = sorted((p for p in run.points if p.system == system and p.config == cfg), key=lambda p: p.concurrency)
        if not pts:
            continue
        cs = [p.concurrency for p in pts]
        label = f"{system} ({config_name(cfg)})" if system.startswith("saec") else system
        style = {"color": color, "marker": marker, "label": label, "linestyle": ":" if "bare" in system else "-"}
        ax1.plot(cs, [p.result.ids_per_s / 1e6 for p in pts], **style)
        ax2.plot(cs, [p.result.percentile_ms(99) for p in pts], **style)
    for cfg in configs_of(run):
        if cfg == h.config:
            continue
        pts = sorted(
            (p for p in run.points if p.system == "saec binary" and p.config == cfg), key=lambda p: p.concurrency
        )
        cs = [p.concurrency for p in pts]
        kw = {"color": "tab:blue", "alpha": 0.45, "linestyle": "--", "linewidth": 1}
        ax1.plot(cs, [p.result.ids_per_s / 1e6 for p in pts], label=f"saec binary ({config_name(cfg)})", **kw)
        ax2.plot(cs, [p.result.percentile_ms(99) for p in pts], **kw)
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(run.args.concurrency, [str(c) for c in run.args.concurrency])
        ax.set_xlabel("client concurrency (requests in flight)")
        ax.grid(True, alpha=0.3)
    ax1.set_ylabel(f"M ids/s ({run.args.batch} ids a request)")
    ax1.set_ylim(bottom=0)
    ax1.set_title("throughput")
    ax2.set_yscale("log")
    ax2.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}"))
    ax2.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax2.set_ylabel("p99 latency, ms (log scale)")
    ax2.axhline(TARGETS["p99_ms"], color="grey", linestyle=":", linewidth=1)
    ax2.set_title("p99 latency")
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    mach = machine()
    fig.suptitle(
        f"saec vs Redis MGET: {run.table.n:,} features x dim {run.table.dim} (k={run.table.k}); "
        f"{mach['nproc']} cores shared by server and load generator",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def write_results(run: Run, out: Path, argv: Sequence[str]) -> tuple[Path, Path]:
    """peers.md and peers.png, each written to a .tmp file and renamed into place."""
    out.mkdir(parents=True, exist_ok=True)
    md, png = out / "peers.md", out / "peers.png"
    tmp_png = out / "peers.png.tmp"
    render_plot(run, tmp_png)
    tmp_md = out / "peers.md.tmp"
    tmp_md.write_text(render_markdown(run, argv, png.name))
    os.replace(tmp_png, png)
    os.replace(tmp_md, md)
    return md, png


def summary(run: Run) -> str:
    h = headline(run)
    return "\n".join(
        [
            f"best saec configuration: {config_name(h.config)}",
            f"  saec binary {_m(h.binary_peak)} M ids/s = {h.binary_x:.1f}x Redis MGET {_m(h.redis_peak)} "
            f"(target >= {TARGETS['binary_x']:.0f}x: {_ok(h.binary_x, TARGETS['binary_x'])})",
            f"  saec JSON   {_m(h.json_peak)} M ids/s = {h.json_x:.1f}x Redis (target >= {TARGETS['json_x']:.0f}x: "
            f"{_ok(h.json_x, TARGETS['json_x'])})",
            f"  saec binary p99 at half peak: {_ms(h.half_peak_p99_ms)} ms (target <= {TARGETS['p99_ms']:.0f} ms: "
            f"{_ok(h.half_peak_p99_ms, TARGETS['p99_ms'], higher=False)})",
            f"  bytes per feature: Redis {h.redis_bytes:.1f}, saec {h.saec_bytes:.2f} = {h.memory_x:.1f}x fewer "
            f"(target >= {TARGETS['memory_x']:.0f}x: {_ok(h.memory_x, TARGETS['memory_x'])}); "
            f"dense {h.dense_bytes:.1f}",
        ]
    ).replace("**", "")


# -- command line ---------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _malloc(text: str) -> list[bool]:
    choices = {"off": [False], "on": [True], "both": [False, True]}
    if text not in choices:
        raise argparse.ArgumentTypeError(f"expected off, on or both, got {text!r}")
    return choices[text]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench/peers", description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="small table, short phases, one server configuration: checks equal answers (for CI)",
    )
    p.add_argument("--features", type=int, default=1_000_000, help="rows of the table")
    p.add_argument("--dim", type=int, default=16, help="floats per vector (16 = 64-byte vectors)")
    p.add_argument("--k", type=int, default=256, help="codebook size")
    p.add_argument(
        "--top-n", dest="top_n", type=int, default=100_000, help="rows k-means runs on (compress_field top_n)"
    )
    p.add_argument("--batch", type=int, default=4096, help="ids a request")
    p.add_argument("--concurrency", type=_ints, default=[1, 2, 4, 8, 16], help="client concurrencies, comma-separated")
    p.add_argument("--workers", type=_ints, default=[1, 2], help="uvicorn worker counts to measure, comma-separated")
    p.add_argument(
        "--malloc",
        type=_malloc,
        default=[False, True],
        metavar="{off,on,both}",
        help="glibc malloc env for the server: off, on or both",
    )
    p.add_argument("--client-procs", dest="client_procs", type=int, default=2, help="load generator processes")
    p.add_argument("--duration", type=float, default=3.0, help="measured seconds a point")
    p.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds before each point")
    p.add_argument("--warm", type=float, default=1.0, help="unmeasured seconds of requests after a server starts")
    p.add_argument(
        "--rate-duration", dest="rate_duration", type=float, default=5.0, help="seconds of the half-peak phase"
    )
    p.add_argument(
        "--max-requests", dest="max_requests", type=int, default=50_000, help="cap on requests a process a point"
    )
    p.add_argument("--query-batches", dest="query_batches", type=int, default=256, help="distinct request bodies")
    p.add_argument("--check-batches", dest="check_batches", type=int, default=4, help="batches compared across systems")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--busy",
        type=float,
        default=0.3,
        help="cores of CPU used by processes outside the benchmark above which a point is measured again",
    )
    p.add_argument("--retries", type=int, default=1, help="extra attempts of a point measured under outside load")
    p.add_argument(
        "--wait-idle",
        dest="wait_idle",
        type=float,
        default=120.0,
        help="seconds to wait, before measuring, for outside load to drop under --busy",
    )
    p.add_argument(
        "--bare",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure both services through bare asyncio clients (no redis-py, no httpx)",
    )
    p.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="profile server and clients with py-spy in an extra phase (if py-spy is installed)",
    )
    p.add_argument("--profile-seconds", dest="profile_seconds", type=float, default=4.0)
    p.add_argument("--redis-server", dest="redis_server", help="path of the redis-server binary (default: PATH)")
    p.add_argument(
        "--no-install",
        dest="no_install",
        action="store_true",
        help="never apt-get install redis-server when it is missing",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for peers.md and peers.png (default: bench/results; --smoke: a temporary folder)",
    )
    return p


SMOKE = {
    "features": 10_000,
    "k": 50,
    "top_n": 5_000,
    "batch": 1024,
    "concurrency": [2],
    "workers": [1],
    "malloc": [False],
    "client_procs": 1,
    "duration": 0.5,
    "warmup": 0.15,
    "rate_duration": 0.3,
    "warm": 0.4,
    "max_requests": 2_000,
    "query_batches": 16,
    "check_batches": 2,
    "profile": False,
    "retries": 0,
    "wait_idle": 0.0,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.smoke:
        given = {a.lstrip("-").split("=")[0].replace("-", "_") for a in argv if a.startswith("--")}
        for k, value in SMOKE.items():
            if k not in given:
                setattr(args, k, value)
    if args.k * 100 > args.features:
        raise SystemExit(
            f"expected --features >= 100 * k = {100 * args.k} (compress_field's min_factor), got {args.features}"
        )

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        run = run_benchmark(args)
    except KeyboardInterrupt:
        log("interrupted: every process this run started has been stopped")
        return 130
    except (_redis.RedisUnavailableError, AssertionError, RuntimeError) as exc:
        log(f"bench.peers: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    errors = sum(p.result.errors for p in run.points)
    empty = [p for p in run.points if p.result.requests == 0]
    with contextlib.ExitStack() as stack:
        out = args.out
        if out is None:
            out = (
                Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="saec-peers-smoke-")))
                if args.smoke
                else RESULTS
            )
        md, png = write_results(run, out, argv)
        print(summary(run))
        for c in run.checks:
            print(f"equal answers: {c}")
        if not args.smoke or args.out is not None:
            print(f"wrote {md} and {png}")
    if errors or empty:
        log(f"bench.peers: {errors} failed requests; {len(empty)} points without a completed request")
        return 1
    if args.smoke:
        print("smoke: every system answered the same vectors and found flags; every phase completed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
