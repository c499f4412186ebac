"""One run of the peer benchmark: build, load, check, measure every point, profile."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench import _redis
from bench.peers import loadgen
from bench.peers.common import FIELD, log
from bench.peers.cpu import CpuSampler
from bench.peers.load import LoadPool, Phase, Target, warm
from bench.peers.profile import profile_all
from bench.peers.results import HALF_PEAK, REDIS_BARE, SAEC_BARE, WRK_BINARY, WRK_JSON, Point, Run
from bench.peers.servers import SaecServer, ServerConfig
from bench.peers.table import build_table, check_rows, load_redis, query_rows, write_stores
from saec.progress import Progress


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

        tools: dict[str, str] = {}
        if args.loadgen:
            tools = loadgen.ensure_tools(install=not args.no_install)
            run.versions.update(loadgen.tool_versions(tools))
            log("loading the same rows under text keys k:<row> for redis-benchmark (after the memory was measured) ...")
            loadgen.load_text_keys(redis_server, table)
            loadgen.check_text_keys(redis_server, table, query_rows(table, 1, 64, args.seed + 7)[0])
            loadgen.warm_text_keys(tools["redis-benchmark"], redis_server.port, table.n, args.batch)
            scripts = {p: loadgen.write_wrk_script(workdir, queries, p) for p in ("binary", "json")}

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
            progress.step(f"{system} c={c}")
            log(_line(best))
            return best

        def compiled(server: SaecServer, config: ServerConfig) -> None:
            """wrk against saec (binary, then JSON) at each --loadgen-concurrency, each binary
            point followed by redis-benchmark at the same concurrency."""
            cores = min(config.workers, len(os.sched_getaffinity(0)))
            for protocol, system in (("binary", WRK_BINARY), ("json", WRK_JSON)):
                for c in args.loadgen_concurrency:
                    lp = loadgen.run_wrk(
                        tools["wrk"],
                        scripts[protocol],
                        server.port,
                        c,
                        args.loadgen_duration,
                        server.pids(),
                        system,
                        config.short,
                        cores,
                        args.batch,
                    )
                    run.loadgen.append(lp)
                    progress.step(f"{system} c={c}")
                    log(_lg_line(lp))
                    if protocol == "binary":
                        assert redis_server.pid is not None
                        rp = loadgen.run_redis_benchmark(
                            tools["redis-benchmark"],
                            redis_server.port,
                            table.n,
                            args.batch,
                            c,
                            args.loadgen_duration,
                            redis_server.pid,
                            config.short,
                        )
                        run.loadgen.append(rp)
                        progress.step(f"{rp.system} c={c}")
                        log(_lg_line(rp))

        redis_groups = {"server": [redis_server.pid], "clients": pool.pids}
        redis_bare = Target("redis", redis_server.port, table.dim, client="bare")
        # Redis is measured right after the saec system it is compared with, at the same concurrency,
        # so that both see the same outside load; each configuration gets its own Redis points.
        paired = {"saec binary": ("Redis MGET", redis_target), SAEC_BARE: (REDIS_BARE, redis_bare)}

        progress = stack.enter_context(Progress())
        for config in configs:
            progress.stage(f"measuring {config.label}", total=points_per_config(args))
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
                        if args.loadgen:
                            log(f"compiled load generators ({config.label}): wrk, redis-benchmark")
                            compiled(server, config)

        progress.close()
        if args.profile:
            profile_all(run, pool, configs, compressed_store, redis_target, workdir)
    run.seconds = time.perf_counter() - started
    return run


def points_per_config(args: argparse.Namespace) -> int:
    """Measured points in one server configuration (the progress bar's length)."""
    systems = 3 + (2 if args.bare else 0)  # saec binary + Redis, JSON; bare saec + bare Redis
    n = len(args.concurrency) * (systems + 2) + 1  # + dense binary and JSON, + the half-peak point
    if args.loadgen:
        n += 3 * len(args.loadgen_concurrency)  # wrk binary + redis-benchmark, wrk JSON
    return n


def _lg_line(p: loadgen.LoadgenPoint) -> str:
    err = f" errors={p.errors}" if p.errors else ""
    return (
        f"  {p.system:<30} c={p.concurrency:<3} {p.ids_per_s / 1e6:7.3f} M ids/s  p50 {p.p50_ms:6.2f} ms  "
        f"p99 {p.p99_ms:6.2f} ms  server {p.server_ms:.2f} ms/req  loadgen {p.loadgen_ms:.2f} ms/req  "
        f"capacity {p.capacity_ids_per_s / 1e6:.2f} M ids/s  cores: server={p.cpu['server']:.2f} "
        f"loadgen={p.cpu['loadgen']:.2f} other={p.cpu['other']:.2f}{err}"
    )


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
