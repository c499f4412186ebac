"""Load generation for the peer benchmark: persistent client processes, bounded phases.

A :class:`LoadPool` keeps ``procs`` client processes alive for the whole run (spawning
one costs about a second of imports). Each phase sends every process its share of the
concurrency and one start time; a process runs that many asyncio tasks on uvloop, each
a closed loop of requests (or, with ``rate``, requests scheduled at fixed times: an
open loop whose latency counts from the scheduled time, so queueing is not hidden),
and returns the latencies of the requests that completed inside the measurement
window. Every phase is bounded in time and in requests, and targets 127.0.0.1 only.
What runs inside a client process is ``bench.peers.drivers``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

LOOPBACK = "127.0.0.1"
System = Literal["redis", "saec"]


@dataclass(frozen=True)
class Target:
    """What a phase sends requests to.

    Attributes:
        system: "redis" (MGET through redis-py asyncio + hiredis) or "saec" (AsyncSaecClient).
        port: on 127.0.0.1.
        protocol: saec only: "binary" or "json".
        field: saec only: the field name.
        dim: floats per vector.
        client: "library" (redis-py / AsyncSaecClient) or "bare" (asyncio streams, the
            request bytes prepared outside the clock for Redis, ``saec.wire`` for saec).
    """

    system: System
    port: int
    dim: int
    protocol: str = "binary"
    field: str = ""
    client: str = "library"


@dataclass(frozen=True)
class Phase:
    """One measured point.

    Attributes:
        concurrency: requests in flight in all, split over the processes (open loop: at most).
        duration: seconds of the measurement window.
        warmup: seconds before it, whose requests are not counted.
        max_requests: cap on requests per process over warmup and window.
        rate: requests per second in all (open loop), or None for a closed loop.
    """

    target: Target
    concurrency: int
    duration: float
    warmup: float
    max_requests: int
    rate: float | None = None


@dataclass
class PhaseResult:
    """What the processes measured in the window.

    Attributes:
        latencies: float64 (requests,), seconds.
    """

    latencies: npt.NDArray[np.float64]
    requests: int
    ids: int
    seconds: float
    errors: int
    first_error: str = ""
    late: int = 0
    unfinished: int = 0
    capped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ids_per_s(self) -> float:
        return self.ids / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        """Latency percentile, ms; requests abandoned unfinished count as slower than any (inf)."""
        lat = self.latencies
        if self.unfinished:
            lat = np.concatenate([lat, np.full(self.unfinished, np.inf)])
        if not lat.size:
            return float("nan")
        return float(np.percentile(lat, q, method="higher") * 1e3)


class LoadPool:
    """``procs`` client processes holding the query batches.

    Args:
        queries: uint64 (batches, batch), hashed ids; each timed request sends one row.
        checks: uint64 (batches', batch), hashed ids for :meth:`check`, never timed.
        procs: client processes.
        workdir: a folder for the arrays the processes load.
    """

    def __init__(
        self, queries: npt.NDArray[np.uint64], checks: npt.NDArray[np.uint64], procs: int, workdir: str
    ) -> None:
        self.batch = int(queries.shape[1])
        path = os.path.join(workdir, "queries.npz")
        np.savez(
            path,
            queries=np.ascontiguousarray(queries, dtype=np.uint64),
            checks=np.ascontiguousarray(checks, dtype=np.uint64),
        )
        # The processes run bench.peers.drivers, which imports this module's types.
        from bench.peers.drivers import worker_main

        ctx = mp.get_context("spawn")
        self._procs: list[tuple[Any, Connection]] = []
        try:
            for i in range(procs):
                parent, child = ctx.Pipe()
                p = ctx.Process(target=worker_main, args=(child, path, i), name=f"saec-peers-load-{i}", daemon=True)
                p.start()
                child.close()
                self._procs.append((p, parent))
            for p, conn in self._procs:
                if not conn.poll(60):
                    raise RuntimeError(f"load process {p.pid} did not start within 60 s")
                conn.recv()
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        return [p.pid for p, _ in self._procs if p.pid is not None]

    def run(self, phase: Phase, between: Any = None) -> PhaseResult:
        """Run one phase on every process; ``between(window_start, window_end)`` runs meanwhile
        in this process (it may sleep until the window ends, e.g. to sample CPU time)."""
        shares = _split(phase.concurrency, len(self._procs))
        used = [(proc, conn, s) for (proc, conn), s in zip(self._procs, shares, strict=True) if s > 0]
        start = time.monotonic() + 0.3
        total_c = sum(s for *_, s in used)
        for i, (_, conn, share) in enumerate(used):
            rate = None
            offset = 0.0
            if phase.rate is not None:
                rate = phase.rate * share / total_c
                offset = i / phase.rate
            conn.send(("phase", phase, share, start, rate, offset))
        window = (start + phase.warmup, start + phase.warmup + phase.duration)
        extra = between(*window) if between is not None else None
        limit = phase.warmup + phase.duration + 30.0
        parts = []
        for proc, conn, _ in used:
            if not conn.poll(max(1.0, start + limit - time.monotonic())):
                raise RuntimeError(f"load process {proc.pid} did not finish its phase in time")
            parts.append(conn.recv())
        lat = np.concatenate([p["latencies"] for p in parts]) if parts else np.zeros(0)
        errors = [p["first_error"] for p in parts if p["first_error"]]
        return PhaseResult(
            latencies=lat,
            requests=int(lat.size),
            ids=int(lat.size) * self.batch,
            seconds=phase.duration,
            errors=sum(p["errors"] for p in parts),
            first_error=errors[0] if errors else "",
            late=sum(p["late"] for p in parts),
            unfinished=sum(p["unfinished"] for p in parts),
            capped=any(p["capped"] for p in parts),
            extra=extra or {},
        )

    def check(self, target: Target, index: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """The answer of one request (check row ``index``), through the same driver as the phases."""
        _, conn = self._procs[0]
        conn.send(("check", target, index))
        if not conn.poll(60):
            raise RuntimeError("load process did not answer a check within 60 s")
        reply = conn.recv()
        if isinstance(reply, str):
            raise RuntimeError(f"check against {target.system} failed: {reply}")
        return reply

    def close(self) -> None:
        for _, conn in self._procs:
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
        for p, conn in self._procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
            conn.close()
        self._procs = []


def _split(total: int, parts: int) -> list[int]:
    base, rest = divmod(total, parts)
    return [base + (1 if i < rest else 0) for i in range(parts)]


def warm(pool: LoadPool, target: Target, workers: int, seconds: float = 1.0) -> None:
    """Unmeasured requests, so that every worker has loaded its numba kernels and touched the
    mapped pages before a clock starts."""
    pool.run(Phase(target, concurrency=2 * workers, duration=seconds / 2, warmup=seconds / 2, max_requests=2_000))
