"""The report's PNG plots: Figures 1, 5 and 6, quality against memory, and the k sweep."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from saec.training.methods import (
    BASELINE,
    CONTROL,
    HASH_BYTES,
    HASH_K,
    HASH_SCRATCH,
    INT8,
    LOGREG,
    PRODUCT,
    RESIDUAL,
    SAEC,
    THRESHOLD,
    THRESHOLD_PAPER,
    THRESHOLD_PRODUCT,
    THRESHOLD_RESIDUAL,
    sweep_name,
)
from saec.training.report.summary import TARGET_AUC_LOSS, mean, per_checkpoint, summarise
from saec.training.results import DatasetResult


def plot_figure6(result: DatasetResult, path: Path) -> None:
    saec = per_checkpoint(result.outcomes, SAEC)
    base = per_checkpoint(result.outcomes, CONTROL)
    cs = [c for c in saec if c in base]
    ratio = [saec[c][0].features / saec[c][0].vectors for c in cs]
    d = [mean(saec[c], "auc") - mean(base[c], "auc") for c in cs]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar(cs, ratio, color="#9ecae1", label="reduction ratio (# before / # after)")
    # A field crossing the size threshold can multiply the ratio; a log axis keeps the rest visible.
    wide = max(ratio) > 10 * min(ratio)
    if wide:
        ax.set_yscale("log")
    ax.set_xlabel("segment (checkpoint)")
    ax.set_ylabel("reduction ratio" + (" (log scale)" if wide else ""))
    ax2 = ax.twinx()
    ax2.plot(cs, d, "o-", color="#d62728", label="AUC after − AUC of baseline + pass")
    ax2.axhline(0, color="grey", lw=0.8)
    ax2.axhline(-TARGET_AUC_LOSS, color="#d62728", lw=0.8, ls=":")
    ax2.set_ylabel("AUC change")
    ax.set_title(f"{result.name}: Saec reduction ratio and AUC change (Figure 6)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_over_time(result: DatasetResult, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for m in (BASELINE, CONTROL, SAEC, HASH_K, HASH_BYTES, THRESHOLD, INT8, LOGREG):
        pc = per_checkpoint(result.outcomes, m)
        if pc:
            ax.plot(list(pc), [mean(v, "auc") for v in pc.values()], "o-" if m in (CONTROL, SAEC) else ".--", label=m, lw=1.2, ms=4)
    ax.set_xlabel("segment (checkpoint)")
    ax.set_ylabel("AUC on the next, unseen segment")
    ax.set_title(f"{result.name}: AUC over the stream (Figure 5)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_equal_memory(result: DatasetResult, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 4))
    markers = iter("o^v<>sDpP*Xhd")
    for m in (SAEC, HASH_K, HASH_BYTES, HASH_SCRATCH, THRESHOLD, THRESHOLD_PAPER, INT8, BASELINE, CONTROL, PRODUCT, THRESHOLD_PRODUCT,
              RESIDUAL, THRESHOLD_RESIDUAL):
        s = summarise(result.outcomes, m)
        if s is None:
            continue
        ax.errorbar(s.bytes_keyed / 1024, s.headline, yerr=s.d_auc_std or None, fmt=next(markers), capsize=3, ms=7, label=m)
    ax.set_xscale("log")
    ax.axhline(0, color="grey", lw=0.8)
    ax.axhline(-TARGET_AUC_LOSS, color="#d62728", lw=0.8, ls=":", label="target: −0.001")
    ax.set_xlabel("embedding memory, KiB with keys (last checkpoint, log scale)")
    ax.set_ylabel("ΔAUC vs baseline + pass")
    ax.set_title(f"{result.name}: quality against memory")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_k(result: DatasetResult, path: Path) -> None:
    found = [(k, summarise(result.outcomes, sweep_name(k))) for k in result.plan.k_sweep]
    pairs = [(k, s) for k, s in found if s is not None]
    if not pairs:
        return
    ks = [k for k, _ in pairs]
    sums = [s for _, s in pairs]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(ks, [s.headline for s in sums], "o-", label="ΔAUC vs baseline + pass")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("k")
    ax.set_ylabel("ΔAUC vs baseline + pass")
    ax2 = ax.twinx()
    ax2.plot(ks, [s.ratio_paper for s in sums], "s--", color="#2ca02c", label="compression ratio (paper)")
    ax2.set_ylabel("compression ratio (paper)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8)
    ax.set_title(f"{result.name}: effect of k (Table 3)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_features(results: Sequence[DatasetResult], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for r in results:
        # From the first bound on: nothing has been seen before segment 0.
        ax.plot(range(1, len(r.features_over_time)), r.features_over_time[1:], "o-", ms=3, label=r.name)
    ax.set_yscale("log")
    ax.set_xlabel("segment bound")
    ax.set_ylabel("distinct features seen (all fields)")
    ax.set_title("Features over time (Figure 1)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


