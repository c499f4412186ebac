"""py-spy profiles of the servers and the clients, summarised by component."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.peers.common import FIELD, log
from bench.peers.load import LoadPool, Phase, Target, warm
from bench.peers.results import SAEC_BARE, Run
from bench.peers.servers import SaecServer, ServerConfig


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
