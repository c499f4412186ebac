"""The headline figures of a run (peaks, ratios, targets met or missed) and their formatting."""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.peers.common import TARGETS
from bench.peers.results import HALF_PEAK, REDIS_BARE, SAEC_BARE, Run, configs_of


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


def summary(run: Run) -> str:
    from bench.peers.compiled import summary_lines as compiled_summary

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
            *compiled_summary(run, h.config),
        ]
    ).replace("**", "")
