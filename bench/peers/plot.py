"""``peers.png`` (ids/s and p99 against client concurrency), and writing the results files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bench.peers.common import TARGETS
from bench.peers.headline import config_name, headline, machine
from bench.peers.report import render_markdown
from bench.peers.results import REDIS_BARE, SAEC_BARE, Run, configs_of


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
