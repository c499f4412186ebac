"""What a run measured: points (one system, configuration and concurrency) and the run."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from bench.peers.load import PhaseResult
from bench.peers.loadgen import LoadgenPoint
from bench.peers.table import Table


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
    loadgen: list[LoadgenPoint] = field(default_factory=list)
    started: str = ""
    seconds: float = 0.0

    def peak(self, system: str, config: str) -> Point:
        """The point of highest ids/s of one system and server configuration."""
        return max(
            (p for p in self.points if p.system == system and p.config == config), key=lambda p: p.result.ids_per_s
        )

    def loadgen_peak(self, system: str, config: str) -> LoadgenPoint | None:
        """The compiled load generator's point of highest server capacity (load generator CPU excluded)."""
        pts = [p for p in self.loadgen if p.system == system and p.config == config and p.requests]
        return max(pts, key=lambda p: p.capacity_ids_per_s) if pts else None


HALF_PEAK = "saec binary @ half peak"
WRK_BINARY = "saec binary (wrk)"
WRK_JSON = "saec JSON (wrk)"
REDIS_BENCH = "Redis MGET (redis-benchmark)"
REDIS_BARE = "Redis MGET, bare client"
SAEC_BARE = "saec binary, bare client"


def configs_of(run: Run) -> list[str]:
    return list(dict.fromkeys(p.config for p in run.points))
