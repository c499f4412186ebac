"""The report's part on the compiled load generators: headline ratios and the CPU table behind them."""

from __future__ import annotations

from dataclasses import dataclass

from bench.peers.common import TARGETS
from bench.peers.headline import _m, _ms, _ok, config_name
from bench.peers.results import REDIS_BENCH, WRK_BINARY, WRK_JSON, Run


@dataclass(frozen=True)
class Compiled:
    """Peaks of one server configuration under wrk / redis-benchmark.

    capacity: ids/s the server's CPU per request allows on the cores it can use (load
    generator CPU excluded); measured: ids/s with the load generator on the same cores.
    """

    config: str
    redis_capacity: float
    redis_measured: float
    binary_capacity: float
    binary_measured: float
    json_capacity: float
    json_measured: float
    binary_server_ms: float
    json_server_ms: float

    @property
    def binary_x(self) -> float:
        return self.binary_capacity / self.redis_capacity

    @property
    def json_x(self) -> float:
        return self.json_capacity / self.redis_capacity

    @property
    def json_cost_x(self) -> float:
        """The server's CPU per JSON request (float text) ÷ per binary request, each at its peak."""
        return self.json_server_ms / self.binary_server_ms


def compiled(run: Run, config: str) -> Compiled | None:
    peaks = {s: run.loadgen_peak(s, config) for s in (REDIS_BENCH, WRK_BINARY, WRK_JSON)}
    if any(p is None for p in peaks.values()):
        return None

    def measured(system: str) -> float:
        return max(p.ids_per_s for p in run.loadgen if p.system == system and p.config == config)

    r, b, j = peaks[REDIS_BENCH], peaks[WRK_BINARY], peaks[WRK_JSON]
    assert r is not None and b is not None and j is not None
    return Compiled(
        config,
        r.capacity_ids_per_s,
        measured(REDIS_BENCH),
        b.capacity_ids_per_s,
        measured(WRK_BINARY),
        j.capacity_ids_per_s,
        measured(WRK_JSON),
        b.server_ms,
        j.server_ms,
    )


def headline_rows(run: Run, config: str) -> list[str]:
    """Rows of the headline table for the compiled load generators (none if they did not run)."""
    c = compiled(run, config)
    if c is None:
        return []
    return [
        f"| compiled load generators: saec binary (wrk) ÷ Redis MGET (redis-benchmark), server capacity "
        f"| ≥ {TARGETS['wrk_binary_x']:.0f}x | {c.binary_x:.1f}x ({_m(c.binary_capacity)} vs {_m(c.redis_capacity)} "
        f"M ids/s; measured with the generator on the same cores: {_m(c.binary_measured)} vs "
        f"{_m(c.redis_measured)}, {c.binary_measured / c.redis_measured:.1f}x) | {_ok(c.binary_x, TARGETS['wrk_binary_x'])} |",
        f"| compiled load generators: saec JSON (wrk) ÷ Redis MGET (redis-benchmark), server capacity "
        f"| ≥ {TARGETS['wrk_json_x']:.0f}x | {c.json_x:.1f}x ({_m(c.json_capacity)} vs {_m(c.redis_capacity)} "
        f"M ids/s; measured: {_m(c.json_measured)} vs {_m(c.redis_measured)}, "
        f"{c.json_measured / c.redis_measured:.1f}x) | {_ok(c.json_x, TARGETS['wrk_json_x'])} |",
        f"| server CPU per {run.args.batch}-id request under wrk: JSON (float text) ÷ binary | "
        f"≤ {TARGETS['json_cost_x']:.0f}x | {c.json_cost_x:.2f}x ({c.json_server_ms:.2f} vs {c.binary_server_ms:.2f} ms) "
        f"| {_ok(c.json_cost_x, TARGETS['json_cost_x'], higher=False)} |",
    ]


def section(run: Run) -> list[str]:
    """The section: every compiled load generator point, with the CPU that explains it."""
    if not run.loadgen:
        return []
    v = run.versions
    lines = [
        "## Server capacity with compiled load generators",
        "",
        f"`wrk` ({v.get('wrk', '?')}) with a Lua script posting {run.args.batch}-id bodies (binary, or JSON ids with "
        f"float-text JSON answers) to saec; `redis-benchmark` ({v.get('redis-benchmark', '?')}) sending `MGET` of "
        f"{run.args.batch} random keys to Redis (the same rows under text keys `k:<row>`, loaded after the memory was "
        "measured). Each point runs the load generator to its end; its own CPU comes from its rusage, the "
        "server's from /proc over the same run. **Capacity** = the cores the server can use (Redis: 1, one thread "
        "runs its commands; saec: one a worker, at most `nproc`) ÷ its CPU per request: what the server "
        "sustains when the load generator costs nothing. *Measured* is what it reached with the load generator on "
        "the same cores.",
        "",
        "| system | configuration | connections | measured M ids/s | p50 ms | p99 ms | server CPU ms/req "
        "| load generator CPU ms/req | cores server / load generator / other | capacity M ids/s | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in sorted(run.loadgen, key=lambda p: (p.config, p.system, p.concurrency)):
        lines.append(
            f"| {p.system} | {config_name(p.config)} | {p.concurrency} | {_m(p.ids_per_s)} | {_ms(p.p50_ms)} "
            f"| {_ms(p.p99_ms)} | {p.server_ms:.2f} | {p.loadgen_ms:.2f} | {p.cpu['server']:.2f} / "
            f"{p.cpu['loadgen']:.2f} / {p.cpu['other']:.2f} | {_m(p.capacity_ids_per_s)} | {p.errors} |"
        )
    lines += [
        "",
        "| configuration | saec binary ÷ Redis (capacity) | saec JSON ÷ Redis (capacity) "
        "| measured: binary ÷ Redis, JSON ÷ Redis | server CPU ms/req: binary, JSON (÷) |",
        "|---|---|---|---|---|",
    ]
    for config in dict.fromkeys(p.config for p in run.loadgen):
        c = compiled(run, config)
        if c is None:
            continue
        lines.append(
            f"| {config_name(config)} | {c.binary_x:.1f}x | {c.json_x:.1f}x | "
            f"{c.binary_measured / c.redis_measured:.1f}x, {c.json_measured / c.redis_measured:.1f}x | "
            f"{c.binary_server_ms:.2f}, {c.json_server_ms:.2f} ({c.json_cost_x:.2f}x) |"
        )
    return lines


def summary_lines(run: Run, config: str) -> list[str]:
    c = compiled(run, config)
    if c is None:
        return []
    return [
        f"  compiled load generators, server capacity: saec binary {_m(c.binary_capacity)} M ids/s = {c.binary_x:.1f}x "
        f"Redis {_m(c.redis_capacity)} (target >= {TARGETS['wrk_binary_x']:.0f}x: "
        f"{_ok(c.binary_x, TARGETS['wrk_binary_x'])}); JSON {_m(c.json_capacity)} = {c.json_x:.1f}x "
        f"(target >= {TARGETS['wrk_json_x']:.0f}x: {_ok(c.json_x, TARGETS['wrk_json_x'])})".replace("**", ""),
        f"  server CPU a request under wrk: JSON {c.json_server_ms:.2f} ms = {c.json_cost_x:.2f}x binary "
        f"{c.binary_server_ms:.2f} ms (target <= {TARGETS['json_cost_x']:.0f}x: "
        f"{_ok(c.json_cost_x, TARGETS['json_cost_x'], higher=False)})".replace("**", ""),
    ]
