"""The evaluation report: Markdown tables, PNG plots and the raw numbers as JSON.

Tables follow the paper: Table 1 (per checkpoint, before and after), Table 2
(initialisations and clustering time, fast against full), Table 3 (the effect of k) and
Figure 6 (reduction ratio against AUC change), plus the comparison at equal memory, the
baseline's tuning and the serving check. Every AUC difference is paired: a model against
the baseline of the same seed and checkpoint, averaged over checkpoints, then mean and
standard deviation over seeds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import matplotlib
import sklearn
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from saec.training.evaluate import (
    CONTROL,
    FULL,
    HASH_BYTES,
    HASH_K,
    INT8,
    NOT_RETRAINED,
    OCCURRENCE,
    SAEC,
    SUMMED,
    THRESHOLD,
    THRESHOLD_PAPER,
    DatasetResult,
    field_name,
    slug,
    sweep_name,
)
from saec.training.memory import mask_bytes
from saec.training.protocol import HASH_SCRATCH, LOGREG, Outcome

TARGET_AUC_LOSS = 0.001
COMPARED = ("baseline", LOGREG, CONTROL, SAEC, HASH_K, HASH_BYTES, HASH_SCRATCH, THRESHOLD, THRESHOLD_PAPER, INT8)
ABLATIONS = (SAEC, NOT_RETRAINED, OCCURRENCE, SUMMED)


@dataclasses.dataclass
class Summary:
    """One method over seeds and checkpoints.

    AUC / log loss are means over every (seed, checkpoint); ``d_auc`` is the paired
    difference to the baseline (``d_auc_control`` to the baseline with the same extra pass),
    mean and standard deviation over seeds of the per-seed mean. Memory is at the last
    checkpoint the method was evaluated on.
    """

    method: str
    n: int
    seeds: int
    auc: float
    logloss: float
    d_auc: float
    d_auc_std: float
    d_logloss: float
    d_auc_control: float | None
    vectors: int
    features: int
    bytes_keyed: int
    bytes_paper: int
    before_keyed: int
    before_paper: int
    clustering_seconds: float
    checkpoint: int

    @property
    def ratio_keyed(self) -> float:
        return self.before_keyed / max(self.bytes_keyed, 1)

    @property
    def ratio_paper(self) -> float:
        return self.before_paper / max(self.bytes_paper, 1)


def summarise(outcomes: Sequence[Outcome], method: str) -> Summary | None:
    """A :class:`Summary` of ``method``, or None when it was not run."""
    mine = [o for o in outcomes if o.method == method]
    if not mine:
        return None
    base = {(o.seed, o.checkpoint): o for o in outcomes if o.method == "baseline"}
    control = {(o.seed, o.checkpoint): o for o in outcomes if o.method == CONTROL}
    per_seed: dict[int, list[float]] = defaultdict(list)
    per_seed_ll: dict[int, list[float]] = defaultdict(list)
    per_seed_c: dict[int, list[float]] = defaultdict(list)
    for o in mine:
        b = base[(o.seed, o.checkpoint)]
        per_seed[o.seed].append(o.metrics.auc - b.metrics.auc)
        per_seed_ll[o.seed].append(o.metrics.logloss - b.metrics.logloss)
        if (o.seed, o.checkpoint) in control:
            per_seed_c[o.seed].append(o.metrics.auc - control[(o.seed, o.checkpoint)].metrics.auc)
    d = np.array([np.mean(v) for v in per_seed.values()])
    last = max(mine, key=lambda o: (o.checkpoint, -o.seed))
    at_last = [o for o in mine if o.checkpoint == last.checkpoint]
    return Summary(
        method=method, n=len(mine), seeds=len(per_seed),
        auc=_mean(mine, "auc"), logloss=_mean(mine, "logloss"),
        d_auc=float(d.mean()), d_auc_std=float(d.std(ddof=1)) if len(d) > 1 else 0.0,
        d_logloss=float(np.mean([np.mean(v) for v in per_seed_ll.values()])),
        d_auc_control=float(np.mean([np.mean(v) for v in per_seed_c.values()])) if per_seed_c else None,
        vectors=last.vectors, features=last.features,
        bytes_keyed=last.bytes_after.keyed, bytes_paper=last.bytes_after.paper,
        before_keyed=last.bytes_before.keyed, before_paper=last.bytes_before.paper,
        clustering_seconds=float(np.mean([o.clustering_seconds for o in at_last])), checkpoint=last.checkpoint,
    )


def per_checkpoint(outcomes: Sequence[Outcome], method: str) -> dict[int, list[Outcome]]:
    out: dict[int, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        if o.method == method:
            out[o.checkpoint].append(o)
    return dict(sorted(out.items()))


# -- Markdown -----------------------------------------------------------------------------


def _f(x: float | None, digits: int = 4, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _kib(b: int) -> str:
    return f"{b / 1024:,.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def _comparison(result: DatasetResult, methods: Sequence[str]) -> list[str]:
    rows = []
    for m in methods:
        s = summarise(result.outcomes, m)
        if s is None:
            continue
        rows.append([
            m, f"{s.n}", _f(s.auc), _f(s.logloss), _f(s.d_auc, signed=True) + (f" ± {s.d_auc_std:.4f}" if s.seeds > 1 else ""),
            _f(s.d_logloss, signed=True), _f(s.d_auc_control, signed=True), f"{s.vectors:,}",
            _kib(s.bytes_keyed), f"{s.ratio_keyed:.1f}x", f"{s.ratio_paper:.1f}x",
        ])
    last = max(o.checkpoint for o in result.outcomes)
    header = ["method", "runs", "AUC", "log loss", "ΔAUC vs baseline", "Δ log loss", "ΔAUC vs baseline + pass",
              f"vectors (seg {last})", f"KiB with keys (seg {last})", "ratio, keys counted", "ratio, paper"]
    return _table(header, rows)


def _table1(result: DatasetResult) -> list[str]:
    base = per_checkpoint(result.outcomes, "baseline")
    saec = per_checkpoint(result.outcomes, SAEC)
    control = per_checkpoint(result.outcomes, CONTROL)
    rows = []
    for c, outs in saec.items():
        b = base[c]
        o = outs[0]
        rows.append([
            f"{c}", f"{o.features:,}", f"{o.vectors:,}", f"{o.features / o.vectors:.1f}x",
            _f(_mean(b, "auc")), _f(_mean(outs, "auc")), _f(_mean(control[c], "auc")) if c in control else "-",
            _f(_mean(b, "logloss")), _f(_mean(outs, "logloss")),
            f"{o.bytes_before.keyed / o.bytes_after.keyed:.1f}x", f"{o.bytes_before.paper / o.bytes_after.paper:.1f}x",
        ])
    return _table(["segment", "# vectors (before)", "# vectors (after)", "reduction", "AUC (before)", "AUC (after)",
                   "AUC (baseline + pass)", "log loss (before)", "log loss (after)", "ratio, keys counted", "ratio, paper"], rows)


def _mean(outcomes: Sequence[Outcome], metric: str) -> float:
    return float(np.mean([getattr(o.metrics, metric) for o in outcomes]))


def _table2(result: DatasetResult) -> list[str]:
    at = sorted({o.checkpoint for o in result.outcomes if o.method == FULL["kmeans++"]})
    if not at:
        return ["(not run)", ""]
    subset = [o for o in result.outcomes if o.checkpoint in at]
    rows = []
    for label, m in [("Random (full)", FULL["random"]), ("k-means++ (full)", FULL["kmeans++"]), ("Top-k (full)", FULL["topk"]), ("Fast clustering (k-means++)", SAEC)]:
        s = summarise(subset, m)
        if s is None:
            continue
        clustered = [o for o in subset if o.method == m]
        secs = float(np.mean([o.clustering_seconds for o in clustered]))
        rows.append([label, _f(s.auc), _f(s.logloss), _f(s.d_auc, signed=True), f"{secs:.2f}"])
    span = f"segment {at[0]}" if len(at) == 1 else f"segments {at[0]}-{at[-1]}"
    return [f"At {span}, k = {result.settings.k}; clustering time is the sum over the compressed fields of "
            "`compress_field`'s wall time on this machine, mean over runs.", ""] + _table(
        ["method", "AUC", "log loss", "ΔAUC vs baseline", "clustering time (s)"], rows)


def _table3(result: DatasetResult) -> list[str]:
    ks = result.plan.k_sweep
    if not ks:
        return ["(not run)", ""]
    at = sorted({o.checkpoint for o in result.outcomes if o.method == sweep_name(ks[0])})
    subset = [o for o in result.outcomes if o.checkpoint in at]
    rows = []
    for k in ks:
        s = summarise(subset, sweep_name(k))
        if s is None:
            continue
        compressed = sorted({fo.name for o in subset if o.method == sweep_name(k) for fo in o.fields if fo.compressed})
        rows.append([f"{k}", f"{mask_bytes(k)}", ", ".join(compressed) or "none", f"{s.vectors:,}", _f(s.auc), _f(s.logloss),
                     _f(s.d_auc, signed=True), f"{s.clustering_seconds:.2f}", f"{s.ratio_keyed:.1f}x", f"{s.ratio_paper:.1f}x"])
    b = summarise(subset, "baseline")
    rows.append(["Baseline", "-", "-", f"{b.vectors:,}", _f(b.auc), _f(b.logloss), "-", "-", "1.0x", "1.0x"])
    span = f"segment {at[0]}" if len(at) == 1 else f"segments {at[0]}-{at[-1]}"
    if result.plan.k_sweep_min_rows:
        rule = f"a field is compressed once it holds {result.plan.k_sweep_min_rows} features (k features for a larger k)"
    else:
        rule = f"a field is compressed once it holds {result.settings.min_factor} * k features, as in the paper"
    return [f"At {span}; {rule}. Mask bytes: 1 up to k = 256, 2 (uint16) beyond.", ""] + _table(
        ["k", "mask bytes", "compressed fields", "vectors", "AUC", "log loss", "ΔAUC vs baseline", "clustering time (s)",
         "ratio, keys counted", "ratio, paper"], rows)


def _tuning(result: DatasetResult) -> list[str]:
    out = [f"Validation checkpoints {', '.join(map(str, result.plan.val))} (all before the reported ones), "
           f"mean over seeds {', '.join(map(str, result.plan.tune_seeds))}; the chosen row is marked.", ""]
    out += _table(["baseline configuration", "AUC", "log loss", ""],
                  [[r.label, _f(r.auc), _f(r.logloss), "chosen" if r.chosen else ""] for r in result.baseline_tuning])
    out += _table(["logistic regression", "AUC", "log loss", ""],
                  [[r.label, _f(r.auc), _f(r.logloss), "chosen" if r.chosen else ""] for r in result.logreg_tuning])
    out += ["Retraining learning rate (a multiple of the baseline's), tuned per variant on the same checkpoints; "
            "full clustering, the per-field and the k-sweep variants use Saec's; the from-scratch hashed model's extra "
            "pass uses the re-hashed one's.", ""]
    out += _table(["variant @ scale", "AUC", "log loss", ""],
                  [[r.label, _f(r.auc), _f(r.logloss), "chosen" if r.chosen else ""] for r in result.scale_tuning])
    return out


def _findings(result: DatasetResult) -> list[str]:
    """Facts that decide the quality target, stated from the numbers, whichever way they fall."""
    s = summarise(result.outcomes, SAEC)
    out = []
    verdict = "within" if s.d_auc >= -TARGET_AUC_LOSS else "outside"
    spread = f"± {s.d_auc_std:.4f} over {s.seeds} seeds" if s.seeds > 1 else "one seed"
    out.append(f"- Saec against the baseline: ΔAUC {s.d_auc:+.4f} ({spread}), {verdict} the 0.001 target; Δ log loss "
               f"{s.d_logloss:+.4f}. Against the baseline given the same extra pass: ΔAUC {_f(s.d_auc_control, signed=True)}.")
    for m in (HASH_K, HASH_BYTES, HASH_SCRATCH, THRESHOLD, THRESHOLD_PAPER, INT8):
        o = summarise(result.outcomes, m)
        if o is None:
            continue
        pairs = _paired(result.outcomes, SAEC, m)
        won = sum(d > 0 for d in pairs)
        out.append(f"- Saec against {m} ({_kib(o.bytes_keyed)} KiB vs Saec's {_kib(s.bytes_keyed)} KiB with keys): "
                   f"AUC {s.auc - o.auc:+.4f}; Saec higher in {won} of {len(pairs)} (seed, checkpoint) pairs.")
    lr = summarise(result.outcomes, LOGREG)
    if lr is not None:
        out.append(f"- Baseline against the one-hot logistic regression on the same checkpoints: ΔAUC {-lr.d_auc:+.4f} "
                   f"({'at least as good' if lr.d_auc <= 0 else 'worse'}).")
    nr = summarise(result.outcomes, NOT_RETRAINED)
    ctl = summarise(result.outcomes, CONTROL)
    if nr is not None and ctl is not None:
        out.append(f"- Retraining: clustered but not retrained ΔAUC {nr.d_auc:+.4f}; retrained {s.d_auc:+.4f}. The same extra "
                   f"pass on the uncompressed baseline moves AUC by {ctl.d_auc:+.4f}, so the pass itself is worth that much.")
    fields = [f for f in result.frequency if summarise(result.outcomes, field_name(f)) is not None]
    if fields:
        parts = []
        for f in fields:
            fs = summarise(result.outcomes, field_name(f))
            fq = result.frequency[f]
            parts.append(f"{f} ΔAUC {fs.d_auc:+.4f} ({fq['features']:,.0f} features, median count {fq['median']:.0f}, "
                         f"{100 * fq['rare_share']:.0f}% seen under 10 times)")
        worst = min(fields, key=lambda f: summarise(result.outcomes, field_name(f)).d_auc)
        out.append("- Compressing one field at a time: " + "; ".join(parts) + f". The loss concentrates in {worst}.")
        fq = result.frequency[worst]
        if summarise(result.outcomes, field_name(worst)).d_auc < -TARGET_AUC_LOSS:
            retrain = f" (not retrained {nr.d_auc:+.4f}, retrained {s.d_auc:+.4f})" if nr is not None else ""
            out.append(
                f"- What we believe explains it: Saec's premise (paper 2.4 and 3.2) is that the features sharing a vector are "
                f"the rarely seen, poorly trained ones. Clustering merges every feature of a field, frequent ones included: in "
                f"{worst}, {100 * fq['rare_share']:.0f}% of the {fq['features']:,.0f} features were seen fewer than 10 times, "
                f"and the others hold {100 * fq['frequent_occurrences']:.0f}% of its occurrences. Their individual vectors are "
                f"what {result.settings.k} centroids cannot hold, and one retraining pass moves centroids but cannot undo an "
                f"assignment{retrain}."
            )
    sweep = [(k, summarise(result.outcomes, sweep_name(k))) for k in result.plan.k_sweep]
    sweep = [(k, x) for k, x in sweep if x is not None]
    if len(sweep) > 1:
        out.append("- Effect of k (Table 3): " + ", ".join(f"k={k} ΔAUC {x.d_auc:+.4f} at {x.ratio_paper:.1f}x" for k, x in sweep)
                   + " (paper's ratio).")
    if result.threshold_coverage is not None:
        out.append(f"- The frequency threshold at equal bytes keeps the features that hold {100 * result.threshold_coverage:.0f}% of "
                   f"the compressed fields' occurrences so far (last checkpoint); the other {100 - 100 * result.threshold_coverage:.0f}% "
                   "read as zero.")
    return out


def _paired(outcomes: Sequence[Outcome], a: str, b: str) -> list[float]:
    other = {(o.seed, o.checkpoint): o for o in outcomes if o.method == b}
    return [o.metrics.auc - other[(o.seed, o.checkpoint)].metrics.auc for o in outcomes if o.method == a and (o.seed, o.checkpoint) in other]


# -- plots --------------------------------------------------------------------------------


def _plot_figure6(result: DatasetResult, path: Path) -> None:
    saec = per_checkpoint(result.outcomes, SAEC)
    base = per_checkpoint(result.outcomes, "baseline")
    cs = list(saec)
    ratio = [saec[c][0].features / saec[c][0].vectors for c in cs]
    d = [_mean(saec[c], "auc") - _mean(base[c], "auc") for c in cs]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar(cs, ratio, color="#9ecae1", label="reduction ratio (# before / # after)")
    # A field crossing the size threshold can multiply the ratio; a log axis keeps the rest visible.
    wide = max(ratio) > 10 * min(ratio)
    if wide:
        ax.set_yscale("log")
    ax.set_xlabel("segment (checkpoint)")
    ax.set_ylabel("reduction ratio" + (" (log scale)" if wide else ""))
    ax2 = ax.twinx()
    ax2.plot(cs, d, "o-", color="#d62728", label="AUC after − AUC before")
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


def _plot_over_time(result: DatasetResult, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for m in ("baseline", CONTROL, SAEC, HASH_K, HASH_BYTES, THRESHOLD, INT8, LOGREG):
        pc = per_checkpoint(result.outcomes, m)
        if pc:
            ax.plot(list(pc), [_mean(v, "auc") for v in pc.values()], "o-" if m in ("baseline", SAEC) else ".--", label=m, lw=1.2, ms=4)
    ax.set_xlabel("segment (checkpoint)")
    ax.set_ylabel("AUC on the next, unseen segment")
    ax.set_title(f"{result.name}: AUC over the stream (Figure 5)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_equal_memory(result: DatasetResult, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 4))
    markers = iter("o^v<>sDpP*X")
    for m in (SAEC, HASH_K, HASH_BYTES, HASH_SCRATCH, THRESHOLD, THRESHOLD_PAPER, INT8, "baseline", CONTROL):
        s = summarise(result.outcomes, m)
        if s is None:
            continue
        ax.errorbar(s.bytes_keyed / 1024, s.d_auc, yerr=s.d_auc_std or None, fmt=next(markers), capsize=3, ms=7, label=m)
    ax.set_xscale("log")
    ax.axhline(0, color="grey", lw=0.8)
    ax.axhline(-TARGET_AUC_LOSS, color="#d62728", lw=0.8, ls=":", label="target: −0.001")
    ax.set_xlabel("embedding memory, KiB with keys (last checkpoint, log scale)")
    ax.set_ylabel("ΔAUC vs baseline")
    ax.set_title(f"{result.name}: quality against memory")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_k(result: DatasetResult, path: Path) -> None:
    ks = [k for k in result.plan.k_sweep if summarise(result.outcomes, sweep_name(k))]
    if not ks:
        return
    sums = [summarise(result.outcomes, sweep_name(k)) for k in ks]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(ks, [s.d_auc for s in sums], "o-", label="ΔAUC vs baseline")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("k")
    ax.set_ylabel("ΔAUC vs baseline")
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


def _plot_features(results: Sequence[DatasetResult], path: Path) -> None:
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


# -- the report ---------------------------------------------------------------------------


def machine(load_at_start: str) -> list[str]:
    """Date, CPUs, memory, load and versions: what a reader needs to compare two runs.

    ``bench/_report.py`` prints the same header for the benchmarks; ``training`` is an
    installed package and cannot import ``bench``.
    """
    cpu = "unknown"
    mem = "unknown"
    with contextlib.suppress(OSError):
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")), cpu)
        kib = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal:"))
        mem = f"{kib / 2**20:.1f} GiB"
    versions = ", ".join(f"{m.__name__} {m.__version__}" for m in (np, torch, sklearn, matplotlib))
    return [
        f"date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"nproc: {len(os.sched_getaffinity(0))}, CPU: {cpu}, memory: {mem}",
        f"load average (1/5/15 min) at start: {load_at_start}, at end: {load_average()}",
        f"versions: Python {platform.python_version()}, {versions}",
    ]


def load_average() -> str:
    """1, 5 and 15 minute load averages: other work on the machine skews every timing."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def write_report(results: Sequence[DatasetResult], out: Path, command: str, seconds: float, threads: int, load_at_start: str = "not recorded") -> Path:
    """Write ``report.md``, ``results.json`` and the PNGs into ``out``; returns the report path."""
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Saec evaluation: retraining, AUC and log loss on real and generated data", "",
        *(f"- {line}" for line in machine(load_at_start)), f"- command: `{command}`", "",
        f"The run took {seconds / 60:.1f} min with {threads} torch thread(s). Every number below comes from "
        "that run; the raw outcomes are in `results.json`.", "",
        "Protocol (paper section 3): rows in time order, cut into equal-count segments; one pass over each segment; at "
        "each checkpoint the baseline is evaluated on the next, unseen segment, a copy is compressed field by field "
        "through `compress.compress_field`, retrained for one segment's worth of training on the last segment seen "
        "(codebooks with gradient averaging plus the dense layers, Adagrad) and evaluated on the same unseen segment. "
        "AUC and log loss come from scikit-learn. Features a model has not seen read as the zero vector in every model.", "",
        "Memory (`training/memory.py`): *keys counted* is what serving holds. Uncompressed is a key-value table, "
        "`n * (4 * dim + 8)` bytes (a float32 row and a uint64 key per feature); a field in saec's store pays its key index "
        "instead of raw keys (built with `store.keyindex` over the hashed ids, about 2.4 bytes a feature), so Saec is "
        "`index + n * mask bytes + k * 4 * dim`. *Paper* excludes keys on every side: "
        "`n * 4 * dim / (n * mask bytes + k * 4 * dim)` (section 3.2). Fields a method leaves alone count as uncompressed "
        "on both sides, so ratios show what the method changed. *Equal memory*: the frequency threshold keeps as many of "
        "the most frequent features (vector plus key index) and the equal-bytes hashed table as many buckets (it needs no "
        "keys) as fit in Saec's bytes with keys counted, the more generous budget for them; the threshold is also shown "
        "within Saec's bytes by the paper's accounting.", "",
    ]
    _plot_features(results, out / "features_over_time.png")
    lines += ["![features over time](features_over_time.png)", ""]
    for r in results:
        stem = slug(r.name)
        s = r.settings
        lines += [f"## {r.name}", "", f"{r.notes}. {r.summary['rows']:,} rows, click rate {r.summary['positive_rate']:.3f}, "
                  f"{r.summary['segments']} segments. Evaluation took {r.seconds / 60:.1f} min.", ""]
        if r.plan.about:
            lines += [r.plan.about, ""]
        lines += [f"Settings: k = {s.k}, min_factor = {s.min_factor} (compress a field of at least {s.min_rows:,} features), "
                  f"top_n = {s.top_n:,}. {r.plan.why}", ""]
        lines += _table(["field", "features seen (last checkpoint)", "median count", "seen < 10 times"],
                        [[f, f"{v['features']:,.0f}", f"{v['median']:.0f}", f"{100 * v['rare_share']:.0f}%"] for f, v in r.frequency.items()])
        c = r.config
        lines += [f"Baseline: per-field embeddings of length {c.dim}, concatenated, fully connected {' -> '.join(map(str, c.hidden))} "
                  f"(ReLU) -> 1, sigmoid; Adagrad, lr {c.lr:g}, {c.passes} pass(es) per segment, batch {c.batch}. "
                  f"Logistic regression: one-hot, L2, C = {r.logreg_c:g}, fitted on all rows before the checkpoint.", ""]
        lines += ["### Findings", ""] + _findings(r) + [""]
        lines += ["### Comparison at equal memory", "",
                  f"Mean over {len({o.seed for o in r.outcomes})} seed(s) and the reported checkpoints "
                  f"{_span(sorted({o.checkpoint for o in r.outcomes}))}; ΔAUC is paired with the baseline of the same seed and "
                  "checkpoint (± standard deviation over seeds). The logistic regression runs once (it has no seed)"
                  + (f" at segment{'s' if len(r.plan.logreg_test) > 1 else ''} {', '.join(map(str, r.plan.logreg_test))}"
                     if r.plan.logreg_test else "") + ".", ""]
        lines += _comparison(r, COMPARED)
        lines += [f"![equal memory]({stem}-equal-memory.png)", "", "### Table 1: per checkpoint", "",
                  "Saec (k-means++, fast clustering) against the baseline; mean over seeds.", ""]
        lines += _table1(r)
        lines += [f"![Figure 6]({stem}-figure6.png)", "", f"![AUC over time]({stem}-auc-over-time.png)", "",
                  "### Table 2: initialisation, fast against full clustering", ""]
        lines += _table2(r)
        lines += ["### Table 3: effect of k", ""] + _table3(r)
        if r.plan.k_sweep:
            lines += [f"![k sweep]({stem}-k-sweep.png)", ""]
        lines += ["### Design choices: retraining and gradient averaging", "",
                  "Per-feature mean is the paper's rule (each feature's own gradient, then the mean over the cluster's features in "
                  "the batch); per-occurrence mean and summed gradients are the alternatives.", ""]
        per_field = [field_name(f) for f in r.frequency]
        lines += _comparison(r, (*ABLATIONS, *FULL.values(), *per_field))
        lines += ["### Tuning", ""] + _tuning(r)
        if r.publish:
            p = r.publish
            lines += ["### Serving", "",
                      f"The retrained Saec model of seed {r.plan.seeds[0]} at segment {p.checkpoint} was published with "
                      f"`store.writer.SnapshotWriter` (keys `hash_ids(raw id, field)`) as snapshot `{p.version}` "
                      f"({', '.join(f'{k}: {v}' for k, v in p.fields.items())}) and read back through `store.engine.LookupEngine`: "
                      f"{p.own_vector:,} of {p.features:,} features came back bit-identical to the vectors the model used. "
                      f"The store's key index aliased {p.aliased} key(s) (keys agreeing on their top bucket + 16 bits share the "
                      "most frequent one's row, by the index's design); those account for any difference.", ""]
        _plot_figure6(r, out / f"{stem}-figure6.png")
        _plot_over_time(r, out / f"{stem}-auc-over-time.png")
        _plot_equal_memory(r, out / f"{stem}-equal-memory.png")
        _plot_k(r, out / f"{stem}-k-sweep.png")
    (out / "report.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps([_jsonable(r) for r in results], separators=(",", ":")))
    return out / "report.md"


def _span(cs: Sequence[int]) -> str:
    return f"{cs[0]}-{cs[-1]}" if len(cs) > 1 else str(cs[0])


def _jsonable(r: DatasetResult) -> dict:
    # Per-field detail of every outcome would make the file megabytes; totals are kept.
    slim = [dataclasses.replace(o, fields=[]) for o in r.outcomes]
    d = {k: v for k, v in dataclasses.asdict(dataclasses.replace(r, plan=None, outcomes=slim)).items() if k != "plan"}
    d["plan"] = {k: v for k, v in dataclasses.asdict(dataclasses.replace(r.plan, load=None)).items() if k not in ("load", "grid")}
    return d
