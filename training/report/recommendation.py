"""The report's answer to "which ``saec compress`` command?": the rule's choice, its test figure, the curve."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from saec.training.methods import HASH_RECOMMENDED, RECOMMENDED, THRESHOLD_RECOMMENDED, curve_names
from saec.training.recommend import MAX_ROUNDS, UNIT, bound, describe
from saec.training.report.summary import Summary, summarise
from saec.training.report.tables import table
from saec.training.results import DatasetResult, slug, span


def _test(result: DatasetResult, method: str) -> Summary | None:
    return summarise(result.outcomes, method)


def verdict(result: DatasetResult) -> list[str]:
    """The headline line: did the recommended command hold the target on the test checkpoints, at what ratio, bounded by what."""
    rec = result.recommendation
    if rec is None:
        return []
    s = _test(result, RECOMMENDED)
    if s is None or s.d_auc is None:
        return ["- The recommended command was not run on the test checkpoints."]
    held = -s.d_auc <= rec.target
    last = max((o for o in result.outcomes if o.method == RECOMMENDED), key=lambda o: (o.checkpoint, -o.seed))
    why = bound({f.name: f.after.keyed for f in last.fields}, rec.recipe)
    seeds = f"± {s.d_auc_std:.4f} over {s.seeds} seeds" if s.seeds > 1 else "one seed"
    return [f"- **`saec evaluate`'s recommendation (chosen on validation segments {span(result.plan.val)} only): the "
            f"{rec.target:g} target {'held' if held else 'did not hold'} on the test checkpoints**: ΔAUC {s.d_auc:+.4f} "
            f"({seeds}; validation {rec.rounds[-1].d_auc:+.4f}) at **{s.ratio_keyed:.1f}x with keys counted** "
            f"({s.ratio_paper:.1f}x paper) on segment {s.checkpoint}; {describe(rec.recipe)}. What bounds the ratio: {why}."
            + ("" if rec.accepted else " No combination met the target on validation; this is the last one the rule tried.")]


def section(result: DatasetResult, out: Path) -> list[str]:
    """The data set's "Which `saec compress` command" section; draws its curve into ``out``."""
    rec = result.recommendation
    if rec is None:
        return []
    stem = slug(result.name)
    lines = ["### Which `saec compress` command", "",
             f"The rule (`training/recommend.py`) looked only at validation segments {span(result.plan.val)} "
             f"(seeds {', '.join(map(str, result.plan.select_seeds or result.plan.tune_seeds))}): every field alone in every way "
             "saec stores a field, each try charged `max(0, -mean ΔAUC + standard error)`; per field the way with the fewest bytes "
             f"(keys counted) whose charges add up to at most the budget (a knapsack in steps of {UNIT:g} AUC); the combination "
             f"run whole on validation and accepted when its mean ΔAUC minus one standard error stays within {rec.target:g}, "
             f"the budget halved otherwise (at most {MAX_ROUNDS} rounds). For a loss of at most {rec.target:g}:", "",
             "```bash", rec.command, "```", "",
             "`TABLES.npz` holds the trained tables (`FIELD.ids`, `FIELD.vectors`, `FIELD.counts`: counts are needed for "
             "count-weighted k-means and fast clustering; docs/loaders.md), `STORE` the store to publish into.", ""]
    rows = []
    for name in (RECOMMENDED, HASH_RECOMMENDED, THRESHOLD_RECOMMENDED):
        s = _test(result, name)
        if s is not None and s.d_auc is not None:
            val = f"{rec.rounds[-1].d_auc:+.4f} ± {rec.rounds[-1].se:.4f}" if name == RECOMMENDED else "-"
            rows.append([name, val, f"{s.d_auc:+.4f} ± {s.d_auc_std:.4f}", str(s.seeds), span(s.checkpoints),
                         f"{s.bytes_keyed / 1024:,.1f}", f"{s.ratio_keyed:.1f}x", f"{s.ratio_paper:.1f}x"])
    lines += ["Test checkpoints, paired with baseline + retraining pass by seed and checkpoint (± standard deviation over "
              "seeds); validation: mean ± standard error over (seed, checkpoint) pairs. The rivals are sized field by field to "
              "the recommendation's bytes with keys (rows stored as float16/int8 stay so in every row).", ""]
    lines += table(["method", "ΔAUC validation", "ΔAUC test", "seeds", "test segments", "KiB with keys", "ratio, keys counted",
                    "ratio, paper"], rows)
    lines += ["Verification rounds (step 4):", ""]
    lines += table(["budget", "combination", "validation ΔAUC", "standard error", "accepted"],
                   [[f"{r.budget:g}", describe(r.recipe), f"{r.d_auc:+.4f}", f"{r.se:.4f}", "yes" if r.accepted else "no"]
                    for r in rec.rounds])
    lines += ["Every try (validation; KiB of that field with keys at the last validation segment):", ""]
    lines += table(["field", "way", "ΔAUC", "standard error", "charged", "KiB with keys", "chosen"],
                   [[t.field, t.candidate.label, f"{t.d_auc:+.5f}", f"{t.se:.5f}", f"{t.loss:.5f}", f"{t.bytes_keyed / 1024:,.1f}",
                     "**yes**" if t.chosen else ""] for t in rec.tried])
    if plot_curve(result, out / f"{stem}-recommendation-curve.png"):
        lines += [f"![ΔAUC against ratio]({stem}-recommendation-curve.png)", "",
                  "The curve: the combination the rule chooses for each loss budget ("
                  + ", ".join(f"{b:g}" for b in sorted((*rec.curve, rec.target)))
                  + "; only the target's is verified) on the test checkpoints, against the hashing trick and the frequency "
                  "threshold at each combination's bytes.", ""]
    return lines


def plot_curve(result: DatasetResult, path: Path) -> bool:
    """ΔAUC (test) against the ratio with keys counted, for each budget's combination and its rivals at equal bytes."""
    rec = result.recommendation
    if rec is None:
        return False
    names = {rec.target: (RECOMMENDED, HASH_RECOMMENDED, THRESHOLD_RECOMMENDED), **{b: curve_names(b) for b in rec.curve}}
    series: dict[str, list[tuple[float, float]]] = {"saec evaluate's choice": [], "hashing trick, equal bytes": [],
                                                   "frequency threshold, equal bytes": []}
    for b in sorted(names):
        for label, name in zip(series, names[b], strict=True):
            s = summarise(result.outcomes, name)
            if s is not None and s.d_auc is not None:
                series[label].append((s.ratio_keyed, s.d_auc))
    if not series["saec evaluate's choice"]:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for (label, pts), style in zip(series.items(), ("o-", "s--", "^--"), strict=True):
        pts.sort()
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
    ax.axhline(0, color="grey", lw=0.8)
    ax.axhline(-rec.target, color="#d62728", lw=0.8, ls=":", label=f"target: −{rec.target:g}")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=0.002)
    ax.set_xlabel("compression ratio, keys counted (last test checkpoint, log scale)")
    ax.set_ylabel("ΔAUC vs baseline + pass (test)")
    ax.set_title(f"{result.name}: quality against compression")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
