"""The report's explanations: every configuration side by side, what bounds each system, the advice."""

from __future__ import annotations

import numpy as np

from bench.peers.headline import Headline, _m, _ms, config_name, headline
from bench.peers.results import REDIS_BARE, SAEC_BARE, Point, Run, configs_of


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
