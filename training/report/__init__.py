"""The evaluation report: Markdown tables, PNG plots and the raw numbers as JSON.

Tables follow the paper: Table 1 (per checkpoint, before and after), Table 2
(initialisations and clustering time, fast against full), Table 3 (the effect of k) and
Figure 6 (reduction ratio against AUC change), plus the comparison at equal memory, the
baseline's tuning and the serving check. The report takes the results
(:mod:`training.results`); it does not import the runner that made them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import sklearn
import torch

from saec.training.methods import ABLATIONS, COMPARED, FULL, field_name, head_name, product_name
from saec.training.report.findings import findings, headline
from saec.training.report.plots import plot_equal_memory, plot_features, plot_figure6, plot_k, plot_over_time
from saec.training.report.recommendation import section, verdict
from saec.training.report.summary import TARGET_AUC_LOSS, Summary, summarise
from saec.training.report.tables import comparison, table, table1, table2, table3, tuning
from saec.training.results import DatasetResult, slug, span

__all__ = ["TARGET_AUC_LOSS", "Summary", "load_average", "machine", "summarise", "write_report"]


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


def write_report(results: Sequence[DatasetResult], out: Path, command: str, seconds: float, threads: int, load_at_start: str = "not recorded",
                 not_run: Sequence[str] = ()) -> Path:
    """Write ``report.md``, ``results.json`` and the PNGs into ``out``; returns the report path.

    Args:
        not_run: built-in data sets this run left out, named at the top so that nobody
            reads their absence as a result.
    """
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Saec evaluation: retraining, AUC and log loss on real and generated data", "",
        *(f"- {line}" for line in machine(load_at_start)), f"- command: `{command}`", "",
        f"The run took {seconds / 60:.1f} min with {threads} torch thread(s). Every number below comes from "
        "that run; the raw outcomes are in `results.json`.", "",
        *([f"**Not in this run**: {', '.join(not_run)} (the default run evaluates them too). Figures for them from an "
           "earlier run, if any, are not this run's and may come from an older model or protocol.", ""] if not_run else []),
        "## Headline", "",
        "ΔAUC is against *baseline + retraining pass*: the uncompressed model given the same extra segment of training "
        "every compressed model gets, paired by seed and checkpoint, averaged over checkpoints per seed, then mean ± "
        "standard deviation over seeds. The target is a loss of at most 0.001.", "",
        *[line for r in results for line in (f"**{r.name}**", "", *verdict(r), *headline(r), "")],
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
    plot_features(results, out / "features_over_time.png")
    lines += ["![features over time](features_over_time.png)", ""]
    for r in results:
        stem = slug(r.name)
        s = r.settings
        lines += [f"## {r.name}", "", f"{r.notes}. {r.summary['rows']:,} rows, click rate {r.summary['positive_rate']:.3f}, "
                  f"{r.summary['segments']} segments. Evaluation took {r.seconds / 60:.1f} min.", ""]
        if r.plan.about:
            lines += [r.plan.about, ""]
        lines += ["### Headline", "", *verdict(r), *headline(r), ""]
        lines += section(r, out)
        lines += [f"Settings: k = {s.k}, min_factor = {s.min_factor} (compress a field of at least {s.min_rows:,} features), "
                  f"top_n = {s.top_n:,}, frequency head {s.private_rows} private rows per compressed field. {r.plan.why}"
                  + _product_settings(r) + _residual_settings(r), ""]
        lines += table(["field", "features seen (last checkpoint)", "median count", "seen < 10 times"],
                        [[f, f"{v['features']:,.0f}", f"{v['median']:.0f}", f"{100 * v['rare_share']:.0f}%"] for f, v in r.frequency.items()])
        c = r.config
        lines += [f"Baseline: per-field embeddings of length {c.dim}, concatenated, fully connected {' -> '.join(map(str, c.hidden))} "
                  f"(ReLU) -> 1, sigmoid; Adagrad, lr {c.lr:g}, {c.passes} pass(es) per segment, batch {c.batch}. "
                  f"Logistic regression: one-hot, L2, C = {r.logreg_c:g}, fitted on all rows before the checkpoint.", ""]
        lines += ["### Findings", ""] + findings(r) + [""]
        lines += ["### Comparison at equal memory", "",
                  f"Mean over {len({o.seed for o in r.outcomes})} seed(s) and the reported checkpoints "
                  f"{span(sorted({o.checkpoint for o in r.outcomes}))}; ΔAUC is paired with baseline + retraining pass of the same "
                  "seed and checkpoint (± standard deviation over seeds); the column without the extra pass is the paper's "
                  "comparison, kept for reference. Every row is at the memory it shows; the hashed tables and the threshold "
                  "are sized to Saec's bytes (with its frequency head). The logistic regression runs once (it has no seed)"
                  + (f" at segment{'s' if len(r.plan.logreg_test) > 1 else ''} {', '.join(map(str, r.plan.logreg_test))}"
                     if r.plan.logreg_test else "") + ".", ""]
        lines += comparison(r, (*COMPARED, *(product_name(p[0], p[1], p[2], p[4]) for p in r.plan.product_sweep)))
        lines += [f"![equal memory]({stem}-equal-memory.png)", "", "### Table 1: per checkpoint", "",
                  "Saec (k-means++, fast clustering) against the baseline and baseline + retraining pass; mean over seeds.", ""]
        lines += table1(r)
        lines += [f"![Figure 6]({stem}-figure6.png)", "", f"![AUC over time]({stem}-auc-over-time.png)", "",
                  "### Table 2: initialisation, fast against full clustering", ""]
        lines += table2(r)
        lines += ["### Table 3: effect of k", ""] + table3(r)
        if r.plan.k_sweep:
            lines += [f"![k sweep]({stem}-k-sweep.png)", ""]
        lines += ["### Design choices: retraining and gradient averaging", "",
                  "Per-feature mean is the paper's rule (each feature's own gradient, then the mean over the cluster's features in "
                  "the batch); per-occurrence mean and summed gradients are the alternatives.", ""]
        per_field = [field_name(f) for f in r.frequency]
        heads = [head_name(h) for h in r.plan.head_sweep]
        lines += comparison(r, (*ABLATIONS, *heads, *FULL.values(), *per_field))
        lines += ["### Tuning", ""] + tuning(r)
        if r.publish:
            p = r.publish
            lines += ["### Serving", "",
                      f"The retrained Saec model of seed {r.plan.seeds[0]} at segment {p.checkpoint} was published with "
                      f"`store.writer.SnapshotWriter` (keys `hash_ids(raw id, field)`) as snapshot `{p.version}` "
                      f"({', '.join(f'{k}: {v}' for k, v in p.fields.items())}) and read back through `store.engine.LookupEngine`: "
                      f"{p.own_vector:,} of {p.features:,} features came back bit-identical to the vectors the model used. "
                      f"The store's key index aliased {p.aliased} key(s) (keys agreeing on their top bucket + 16 bits share the "
                      "most frequent one's row, by the index's design); those account for any difference.", ""]
        if r.publish_product:
            p = r.publish_product
            lines += [f"The retrained product-quantised model of the same seed and segment went the same way as snapshot "
                      f"`{p.version}` (format version 3; {', '.join(f'{k}: {v}' for k, v in p.fields.items())}): "
                      f"{p.own_vector:,} of {p.features:,} features came back bit-identical, {p.aliased} key(s) aliased.", ""]
        if r.publish_residual:
            p = r.publish_residual
            lines += [f"The retrained residual-quantised model of the same seed and segment went the same way as snapshot "
                      f"`{p.version}` (format version 4; {', '.join(f'{k}: {v}' for k, v in p.fields.items())}): "
                      f"{p.own_vector:,} of {p.features:,} features came back bit-identical, {p.aliased} key(s) aliased.", ""]
        plot_figure6(r, out / f"{stem}-figure6.png")
        plot_over_time(r, out / f"{stem}-auc-over-time.png")
        plot_equal_memory(r, out / f"{stem}-equal-memory.png")
        plot_k(r, out / f"{stem}-k-sweep.png")
    (out / "report.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps([_jsonable(r) for r in results], separators=(",", ":")))
    return out / "report.md"


def _jsonable(r: DatasetResult) -> dict[str, Any]:
    # Per-field detail of every outcome would make the file megabytes; totals are kept.
    slim = [dataclasses.replace(o, fields=[]) for o in r.outcomes]
    d = {k: v for k, v in dataclasses.asdict(dataclasses.replace(r, plan=None, outcomes=slim)).items() if k != "plan"}
    d["plan"] = {k: v for k, v in dataclasses.asdict(dataclasses.replace(r.plan, load=None)).items() if k not in ("load", "grid")}
    return d


def _residual_settings(r: DatasetResult) -> str:
    """What the residual-quantisation rows are, when the plan ran them."""
    if r.plan.residual is None:
        return ""
    s, k, weighted, top_n, dtype = r.plan.residual
    stored = (", stored in float16 (`--codebook-dtype float16`: rounded after retraining, as served, and counted at 2 bytes "
              "a value)" if dtype == "float16" else "")
    return (f" Residual quantisation (`compress_field(stages={s}, k={k}{', weight_by_count=True' if weighted else ''})`, "
            f"snapshot format version 4): {s} codebooks of {k} rows over the whole vector{stored}, stage s clustered"
            f"{' with count-weighted k-means' if weighted else ''} on what the stages before it left (fast clustering on "
            f"the {top_n:,} most frequent features); a feature reads the sum of its {s} rows, {s} mask bytes a feature; "
            f"every stage's codebook is retrained with gradient averaging; the hashed table and the frequency threshold "
            f"rows marked \"residual quantisation's bytes\" are sized to its bytes with keys.")


def _product_settings(r: DatasetResult) -> str:
    """What the product-quantisation rows are, when the plan ran them."""
    if r.plan.product is None:
        return ""
    m, k, weighted, top_n = r.plan.product
    return (f" Product quantisation (`compress_field(subvectors={m}, k={k}{', weight_by_count=True' if weighted else ''})`): "
            f"each compressed field's vectors cut into {m} slices of {r.config.dim // m} values, each slice clustered into "
            f"{k} rows{' with count-weighted k-means' if weighted else ''} (fast clustering on the {top_n:,} most frequent "
            f"features), {m} mask bytes a feature; the same fields as Saec are compressed, and the hashed table and the "
            f"frequency threshold rows marked \"product quantisation's bytes\" are sized to its bytes with keys."
            + (" Further product quantisers: " + "; ".join(
                f"{pm} slices of {pk} rows{f' + {ph} private rows (the {ph} most frequent features keep their vectors)' if ph else ''}"
                f"{', count-weighted' if pw else ''}, top_n {pt:,}"
                for pm, pk, pw, pt, ph in r.plan.product_sweep) + "." if r.plan.product_sweep else ""))
