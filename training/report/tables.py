"""The report's Markdown tables: comparison at equal memory, Tables 1-3 and the tuning."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from saec.training.memory import mask_bytes
from saec.training.methods import BASELINE, CONTROL, FULL, LOGREG, SAEC, sweep_name
from saec.training.report.summary import mean, per_checkpoint, summarise
from saec.training.results import DatasetResult, span


def fmt(x: float | None, digits: int = 4, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def kib(b: int) -> str:
    return f"{b / 1024:,.1f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def comparison(result: DatasetResult, methods: Sequence[str]) -> list[str]:
    """One row per method: AUC, the paired ΔAUC against "baseline + retraining pass"
    (± over seeds), against the plain baseline, vectors, bytes and ratios."""
    rows = []
    for m in methods:
        s = summarise(result.outcomes, m)
        if s is None:
            continue
        name = m if m != LOGREG else f"{m}, segment{'s' if len(s.checkpoints) > 1 else ''} {span(s.checkpoints)}"
        rows.append([
            name, f"{s.n}", fmt(s.auc), fmt(s.logloss),
            fmt(s.d_auc, signed=True) + (f" ± {s.d_auc_std:.4f}" if s.seeds > 1 else ""),
            fmt(s.d_logloss, signed=True), fmt(s.d_auc_baseline, signed=True), f"{s.vectors:,}",
            kib(s.bytes_keyed), f"{s.ratio_keyed:.1f}x", f"{s.ratio_paper:.1f}x",
        ])
    last = max(o.checkpoint for o in result.outcomes)
    header = ["method", "runs", "AUC", "log loss", "ΔAUC vs baseline + pass", "Δ log loss vs baseline + pass",
              "ΔAUC vs baseline (no extra pass)", f"vectors (seg {last})", f"KiB with keys (seg {last})",
              "ratio, keys counted", "ratio, paper"]
    return table(header, rows)


def table1(result: DatasetResult) -> list[str]:
    base = per_checkpoint(result.outcomes, BASELINE)
    saec = per_checkpoint(result.outcomes, SAEC)
    control = per_checkpoint(result.outcomes, CONTROL)
    rows = []
    for c, outs in saec.items():
        b = base[c]
        o = outs[0]
        rows.append([
            f"{c}", f"{o.features:,}", f"{o.vectors:,}", f"{o.features / o.vectors:.1f}x",
            fmt(mean(b, "auc")), fmt(mean(outs, "auc")), fmt(mean(control[c], "auc")) if c in control else "-",
            fmt(mean(b, "logloss")), fmt(mean(outs, "logloss")),
            f"{o.bytes_before.keyed / o.bytes_after.keyed:.1f}x", f"{o.bytes_before.paper / o.bytes_after.paper:.1f}x",
        ])
    return table(["segment", "# vectors (before)", "# vectors (after)", "reduction", "AUC (before)", "AUC (after)",
                   "AUC (baseline + pass)", "log loss (before)", "log loss (after)", "ratio, keys counted", "ratio, paper"], rows)


def table2(result: DatasetResult) -> list[str]:
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
        rows.append([label, fmt(s.auc), fmt(s.logloss), fmt(s.d_auc, signed=True), f"{secs:.2f}"])
    where = f"segment {at[0]}" if len(at) == 1 else f"segments {at[0]}-{at[-1]}"
    return [f"At {where}, k = {result.settings.k}; clustering time is the sum over the compressed fields of "
            "`compress_field`'s wall time on this machine, mean over runs.", ""] + table(
        ["method", "AUC", "log loss", "ΔAUC vs baseline + pass", "clustering time (s)"], rows)


def table3(result: DatasetResult) -> list[str]:
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
        rows.append([f"{k}", f"{mask_bytes(k + result.settings.private_rows)}", ", ".join(compressed) or "none", f"{s.vectors:,}", fmt(s.auc), fmt(s.logloss),
                     fmt(s.d_auc, signed=True), f"{s.clustering_seconds:.2f}", f"{s.ratio_keyed:.1f}x", f"{s.ratio_paper:.1f}x"])
    b = summarise(subset, BASELINE)
    rows.append(["Baseline", "-", "-", f"{b.vectors:,}", fmt(b.auc), fmt(b.logloss), "-", "-", "1.0x", "1.0x"])
    where = f"segment {at[0]}" if len(at) == 1 else f"segments {at[0]}-{at[-1]}"
    if result.plan.k_sweep_min_rows:
        rule = f"a field is compressed once it holds {result.plan.k_sweep_min_rows} features (k features for a larger k)"
    else:
        rule = f"a field is compressed once it holds {result.settings.min_factor} * k features, as in the paper"
    return [f"At {where}; {rule}. Every k keeps the data set's frequency head of {result.settings.private_rows} private rows; mask bytes: 1 up to 256 codebook rows, 2 (uint16) beyond.", ""] + table(
        ["k", "mask bytes", "compressed fields", "vectors", "AUC", "log loss", "ΔAUC vs baseline + pass", "clustering time (s)",
         "ratio, keys counted", "ratio, paper"], rows)


def tuning(result: DatasetResult) -> list[str]:
    out = [f"Validation checkpoints {', '.join(map(str, result.plan.val))} (all before the reported ones), "
           f"mean over seeds {', '.join(map(str, result.plan.tune_seeds))}; the chosen row is marked.", ""]
    out += table(["baseline configuration", "AUC", "log loss", ""],
                  [[r.label, fmt(r.auc), fmt(r.logloss), "chosen" if r.chosen else ""] for r in result.baseline_tuning])
    out += ["Grid growth (a best value on the edge of the embedding length, learning rate or batch axis "
            "extends that axis, at most twice; an axis with one value is not tuned): "
            + ("; ".join(result.grid_growth) if result.grid_growth else "none needed, the best lies inside the grid") + ".", ""]
    out += table(["logistic regression", "AUC", "log loss", ""],
                  [[r.label, fmt(r.auc), fmt(r.logloss), "chosen" if r.chosen else ""] for r in result.logreg_tuning])
    out += ["Retraining learning rate (a multiple of the baseline's), tuned per variant on the same checkpoints; "
            "full clustering, the per-field and the k-sweep variants use Saec's; the from-scratch hashed model's extra "
            "pass uses the re-hashed one's.", ""]
    out += table(["variant @ scale", "AUC", "log loss", ""],
                  [[r.label, fmt(r.auc), fmt(r.logloss), "chosen" if r.chosen else ""] for r in result.scale_tuning])
    return out


