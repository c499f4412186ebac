"""The full evaluation behind ``saec evaluate``: tune, run the protocol, sweep k, report.

For each data set:

1. tune the uncompressed baseline (embedding length, learning rate, passes per segment)
   on *validation* checkpoints that precede every reported one, over the tuning seeds;
2. tune the one-hot logistic regression's ``C`` on the same checkpoints;
3. tune each retrained variant's retraining learning-rate scale on the same checkpoints;
4. run the protocol (:mod:`training.protocol`) on the *test* checkpoints for every seed,
   with every variant at its tuned scale, the from-scratch hashed model and the logistic
   regression, plus the k sweep and the full-clustering variants where planned;
5. publish the last Saec model through the store and check what the lookup engine serves.

Run standalone as ``python -m saec.training.evaluate --help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from saec.store.engine import LookupEngine
from saec.store.hashing import hash_ids
from saec.store.snapshot import open_current
from saec.training import logreg
from saec.training.cli import add_arguments
from saec.training.data import ClickLog
from saec.training.errors import ConfigError, TrainingError
from saec.training.model import ModelConfig
from saec.training.movielens import load_movielens_100k
from saec.training.progress import Progress
from saec.training.protocol import Outcome, RunPlan, run
from saec.training.publish import model_vectors, publish_model
from saec.training.stream import StreamSpec, features_over_time, generate_stream, small_stream
from saec.training.trainer import live_at
from saec.training.variants import Built, CompressSettings, Variant

CONTROL = "baseline + retraining pass"
SAEC = "Saec (k-means++, fast)"
NOT_RETRAINED = "Saec, not retrained"
OCCURRENCE = "Saec, per-occurrence mean"
SUMMED = "Saec, summed gradients"
HASH_K = "hash (k rows, re-hashed)"
HASH_BYTES = "hash (equal bytes, re-hashed)"
THRESHOLD = "frequency threshold (equal bytes)"
THRESHOLD_PAPER = "frequency threshold (equal bytes, keys excluded)"
INT8 = "int8 row-wise"
FULL = {"random": "Saec (random, full)", "kmeans++": "Saec (k-means++, full)", "topk": "Saec (top-k, full)"}

# Variants whose retraining learning rate is tuned; the others inherit Saec's.
_TUNED: tuple[Variant, ...] = (
    Variant(CONTROL, "retrain"),
    Variant(SAEC, "saec"),
    Variant(OCCURRENCE, "saec", grad_mode="occurrence"),
    Variant(SUMMED, "saec", grad_mode="sum"),
    Variant(HASH_K, "hash", budget="k"),
    Variant(HASH_BYTES, "hash", budget="keyed"),
    Variant(THRESHOLD, "threshold", budget="keyed"),
    Variant(THRESHOLD_PAPER, "threshold", budget="paper"),
    Variant(INT8, "int8"),
)


@dataclass(frozen=True)
class EvalPlan:
    """Everything the evaluation of one data set does.

    Attributes:
        name: data set name in the report.
        load: builds the click log.
        settings: Saec's k, min_factor and top_n (seed is set per run).
        grid: baseline configurations tried on the validation checkpoints.
        seeds: seeds of the reported runs.
        tune_seeds: seeds the tuning averages over.
        val: validation checkpoints (all before ``test``).
        test: reported checkpoints.
        lr_scales: retraining learning-rate scales tried per variant.
        logreg_cs: logistic-regression ``C`` values tried.
        logreg_val: validation checkpoints for ``C`` (None: all of ``val``).
        logreg_test: reported checkpoints for the logistic regression (None: all).
        logreg_tol: its L-BFGS tolerance.
        k_sweep: k values of the sweep (Table 3).
        k_sweep_min_rows: a fixed size threshold for the sweep (None: ``min_factor * k``).
        k_sweep_at: checkpoints of the sweep (None: all test checkpoints).
        full_at: checkpoints of the full-clustering variants (None: all).
        per_field: add one "Saec on this field only" variant per large field.
        per_field_at: checkpoints of those variants (None: all test checkpoints).
        why: one paragraph on why these settings suit the data set.
        about: what the report should know about the data (how it was made).
    """

    name: str
    load: Callable[[], ClickLog]
    settings: CompressSettings
    grid: tuple[ModelConfig, ...]
    seeds: tuple[int, ...]
    tune_seeds: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]
    lr_scales: tuple[float, ...] = (1.0, 0.3, 0.1, 0.03)
    logreg_cs: tuple[float, ...] = (0.1, 0.3, 1.0)
    logreg_val: tuple[int, ...] | None = None
    logreg_test: tuple[int, ...] | None = None
    logreg_tol: float = 1e-6
    k_sweep: tuple[int, ...] = ()
    k_sweep_min_rows: int | None = None
    k_sweep_at: tuple[int, ...] | None = None
    full_at: tuple[int, ...] | None = None
    per_field: bool = False
    per_field_at: tuple[int, ...] | None = None
    why: str = ""
    about: str = ""


@dataclass
class TuningRow:
    """One tried setting and its mean validation metrics."""

    label: str
    auc: float
    logloss: float
    chosen: bool = False


@dataclass
class PublishCheck:
    """The last Saec model published through the store, and what the engine served."""

    store: str
    version: str
    checkpoint: int
    features: int
    own_vector: int
    aliased: int
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class DatasetResult:
    """Everything the report shows for one data set."""

    name: str
    notes: str
    summary: dict
    settings: CompressSettings
    config: ModelConfig
    logreg_c: float
    lr_scales: dict[str, float]
    baseline_tuning: list[TuningRow]
    logreg_tuning: list[TuningRow]
    scale_tuning: list[TuningRow]
    outcomes: list[Outcome]
    features_over_time: list[int]
    frequency: dict[str, dict[str, float]]
    plan: EvalPlan
    seconds: float = 0.0
    publish: PublishCheck | None = None
    threshold_coverage: float | None = None


def sweep_name(k: int) -> str:
    return f"Saec k={k}"


def field_name(f: str) -> str:
    return f"Saec on {f} only"


def evaluate_dataset(plan: EvalPlan, progress: Progress, publish_dir: Path | None = None) -> DatasetResult:
    """Tune and evaluate one data set (module docstring, steps 1-5)."""
    started = progress.elapsed()
    progress.note(f"{plan.name}: loading")
    log = plan.load()
    if not (plan.val and plan.test and 1 <= min(plan.val) and max(plan.val) < min(plan.test) and max(plan.test) < log.n_segments):
        raise ConfigError(
            f"{plan.name}: expected validation checkpoints >= 1 before test checkpoints < {log.n_segments} segments, "
            f"found val={plan.val} test={plan.test} (use more --segments)"
        )
    progress.note(f"{plan.name}: {log.n_rows:,} rows, {log.n_segments} segments, fields {log.summary()['fields']}")

    # 1. Baseline tuning.
    progress.stage(f"{plan.name}: tuning the baseline on segments {_span(plan.val)}", len(plan.grid) * len(plan.tune_seeds))
    tuning = []
    for cfg in plan.grid:
        ms = []
        for seed in plan.tune_seeds:
            ms += [o.metrics for o in run(log, RunPlan(cfg, plan.settings, plan.val), seed)]
            progress(f"{_config_label(cfg)} seed {seed}: AUC {np.mean([m.auc for m in ms[-len(plan.val):]]):.4f}")
        tuning.append(TuningRow(_config_label(cfg), float(np.mean([m.auc for m in ms])), float(np.mean([m.logloss for m in ms]))))
    best = _choose(tuning)
    config = plan.grid[best]

    # 2. Logistic regression's C.
    lr_val = plan.logreg_val or plan.val
    progress.stage(f"{plan.name}: tuning the logistic regression", len(plan.logreg_cs))
    lr_rows = []
    for c_value in plan.logreg_cs:
        ms = [logreg.evaluate_at(log, c, c_value, plan.logreg_tol) for c in lr_val]
        lr_rows.append(TuningRow(f"C={c_value:g}", float(np.mean([m.auc for m in ms])), float(np.mean([m.logloss for m in ms]))))
        progress(f"C={c_value:g}: AUC {lr_rows[-1].auc:.4f}")
    logreg_c = plan.logreg_cs[_choose(lr_rows)]

    # 3. Retraining learning-rate scale, per variant.
    tried = tuple(dataclasses.replace(v, name=f"{v.name} @ {s:g}", lr_scale=s) for v in _TUNED for s in plan.lr_scales)
    progress.stage(f"{plan.name}: tuning retraining learning rates", len(plan.tune_seeds) * len(plan.val))
    got: dict[str, list] = defaultdict(list)
    for seed in plan.tune_seeds:
        for o in run(log, RunPlan(config, plan.settings, plan.val, tried), seed, progress):
            got[o.method].append(o.metrics)
    scale_rows, scales = [], {}
    for v in _TUNED:
        rows = [TuningRow(f"{v.name} @ {s:g}", *_mean_metrics(got[f"{v.name} @ {s:g}"])) for s in plan.lr_scales]
        pick = _choose(rows)
        scales[v.name] = plan.lr_scales[pick]
        scale_rows += rows

    # 4. The reported runs.
    variants = _reported_variants(plan, log, scales)
    variants_at = {}
    if plan.full_at is not None:
        variants_at.update({name: plan.full_at for name in FULL.values()})
    if plan.k_sweep_at is not None:
        variants_at.update({sweep_name(k): plan.k_sweep_at for k in plan.k_sweep})
    if plan.per_field_at is not None:
        variants_at.update({v.name: plan.per_field_at for v in variants if v.only is not None})
    keep_at = max(plan.test)
    kept: list[Built] = []

    def keep(name: str, c: int, built: Built) -> None:
        if name == SAEC and c == keep_at:
            kept.append(built)

    progress.stage(f"{plan.name}: protocol on segments {_span(plan.test)}, {len(variants)} variants", len(plan.seeds) * len(plan.test))
    outcomes: list[Outcome] = []
    for i, seed in enumerate(plan.seeds):
        run_plan = RunPlan(
            config, plan.settings, plan.test, variants, hash_scratch=True, hash_scratch_lr_scale=scales[HASH_K],
            logreg_c=logreg_c if i == 0 else None, logreg_at=plan.logreg_test, logreg_tol=plan.logreg_tol, variants_at=variants_at,
        )
        outcomes += run(log, run_plan, seed, progress, keep if i == 0 else None)

    # 5. Serving.
    check = _publish_and_check(kept[0], log, keep_at, publish_dir, plan.name, progress) if kept else None
    return DatasetResult(
        name=plan.name, notes=log.notes, summary=log.summary(), settings=plan.settings, config=config,
        logreg_c=logreg_c, lr_scales=scales, baseline_tuning=tuning, logreg_tuning=lr_rows,
        scale_tuning=scale_rows, outcomes=outcomes, features_over_time=features_over_time(log).tolist(),
        frequency=_frequency(log, keep_at), plan=plan, seconds=progress.elapsed() - started, publish=check,
        threshold_coverage=_threshold_coverage(log, keep_at, outcomes),
    )


def _reported_variants(plan: EvalPlan, log: ClickLog, scales: dict[str, float]) -> tuple[Variant, ...]:
    saec = scales[SAEC]
    out = [dataclasses.replace(v, lr_scale=scales[v.name]) for v in _TUNED]
    out.append(Variant(NOT_RETRAINED, "saec", retrain=False))
    out += [Variant(name, "saec", init=init, fast=False, lr_scale=saec) for init, name in FULL.items()]
    if plan.per_field:
        end = max(plan.test)
        large = [f.name for i, f in enumerate(log.fields) if log.live(i)[end] >= plan.settings.min_rows]
        out += [Variant(field_name(f), "saec", only=(f,), lr_scale=saec) for f in large]
    for k in plan.k_sweep:
        if plan.k_sweep_min_rows:
            # A fixed size threshold keeps the same fields compressed at every k; top_n keeps
            # the data set's rows per centroid.
            min_factor, top_n = max(1, plan.k_sweep_min_rows // k), plan.settings.top_n * k // plan.settings.k
        else:
            min_factor, top_n = plan.settings.min_factor, max(plan.settings.top_n, k)
        out.append(Variant(sweep_name(k), "saec", k=k, min_factor=min_factor, top_n=top_n, lr_scale=saec))
    return tuple(out)


def _publish_and_check(built: Built, log: ClickLog, c: int, publish_dir: Path | None, name: str, progress: Progress) -> PublishCheck:
    """Publish the retrained Saec model and compare every served vector with the model's.

    Without ``publish_dir`` the store is a temporary directory, removed afterwards.
    """
    if publish_dir is None:
        with tempfile.TemporaryDirectory(prefix="saec-eval-store-") as tmp:
            check = _publish_and_check(built, log, c, Path(tmp), name, progress)
        return dataclasses.replace(check, store="(temporary, removed)")
    store = publish_dir / slug(name)
    live = live_at(log, c)
    model = built.trainer.model
    version = publish_model(model, log, live, store, source=f"saec evaluate: {name}, segment {c}", counts=[log.counts(f, c) for f in range(len(log.fields))])
    engine = LookupEngine(open_current(store), default="zeros")
    features = own = aliased = 0
    kinds = {}
    for f, fld in enumerate(log.fields):
        codes = np.arange(1, live[f] + 1)
        got = engine.lookup({fld.name: hash_ids(fld.vocab[codes], fld.name)}).fields[fld.name].vectors
        want = model_vectors(model, f, codes)
        same = (got.view(np.uint32) == want.view(np.uint32)).all(axis=1)
        features += len(codes)
        own += int(same.sum())
        aliased += engine.field(fld.name).aliased
        kinds[fld.name] = engine.field(fld.name).kind
    progress.note(f"{name}: published {version} to {store}; {own:,} of {features:,} features served bit-identical vectors, store aliased {aliased}")
    return PublishCheck(str(store), version, c, features, own, aliased, kinds)


def _frequency(log: ClickLog, end: int) -> dict[str, dict[str, float]]:
    """Per field: features seen, median count, share of features seen fewer than 10 times,
    and share of occurrences held by the features seen at least 10 times."""
    out = {}
    for f, fld in enumerate(log.fields):
        n = int(log.live(f)[end])
        counts = log.counts(f, end)[1 : n + 1]
        total = max(int(counts.sum()), 1)
        out[fld.name] = {
            "features": n,
            "median": float(np.median(counts)) if n else 0.0,
            "rare_share": float((counts < 10).mean()) if n else 0.0,
            "frequent_occurrences": float(counts[counts >= 10].sum() / total),
        }
    return out


def _threshold_coverage(log: ClickLog, end: int, outcomes: Sequence[Outcome]) -> float | None:
    """Share of the thresholded fields' occurrences (segments ``< end``) that its kept features hold."""
    last = [o for o in outcomes if o.method == THRESHOLD and o.checkpoint == end]
    if not last:
        return None
    kept = total = 0
    for fo in last[0].fields:
        if fo.compressed:
            f = [x.name for x in log.fields].index(fo.name)
            counts = np.sort(log.counts(f, end))[::-1]
            kept += int(counts[: fo.rows].sum())
            total += int(counts.sum())
    return kept / total if total else None


def _choose(rows: Sequence[TuningRow]) -> int:
    """Index of the best row: highest AUC, then lowest log loss."""
    i = max(range(len(rows)), key=lambda j: (round(rows[j].auc, 6), -rows[j].logloss))
    rows[i].chosen = True
    return i


def _mean_metrics(ms: Sequence) -> tuple[float, float]:
    return float(np.mean([m.auc for m in ms])), float(np.mean([m.logloss for m in ms]))


def _config_label(cfg: ModelConfig) -> str:
    return f"dim {cfg.dim}, lr {cfg.lr:g}, {cfg.passes} pass{'es' if cfg.passes > 1 else ''}, batch {cfg.batch}"


def _span(cs: Sequence[int]) -> str:
    return f"{min(cs)}-{max(cs)}" if len(cs) > 1 else str(cs[0])


def slug(name: str) -> str:
    """A file-name-safe form of a data set name: lower case, runs of other characters as one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# -- plans --------------------------------------------------------------------------------


def _grid(dims: Sequence[int], lrs: Sequence[float], passes: Sequence[int], batch: int) -> tuple[ModelConfig, ...]:
    return tuple(ModelConfig(dim=d, lr=lr, passes=p, batch=batch) for d in dims for lr in lrs for p in passes)


def movielens_plan(quick: bool = False, seeds: int = 3, k: int | None = None, min_factor: int | None = None, top_n: int | None = None) -> EvalPlan:
    """MovieLens-100k: 20 segments of 5,000 ratings; validation 5-9, test 10-19."""
    k = k or 32
    min_factor = min_factor or max(1, 256 // k)
    settings = CompressSettings(k=k, min_factor=min_factor, top_n=top_n or 16 * k)
    why = (
        f"ml-100k has 943 users, 1,682 items and 795 zip codes, so the paper's k=100 with min_factor 100 "
        f"(10,000 features) would compress nothing. k={k} with min_factor {min_factor} compresses every field "
        f"of at least {settings.min_rows} features seen (user, item, zip_code once enough have appeared); fast "
        f"clustering runs k-means on the {settings.top_n} most frequent features (16 per centroid) and assigns the rest."
    )
    if quick:
        return EvalPlan(
            "ml-100k", load_movielens_100k, settings, _grid([16], [0.1], [1], 256), (0,), (0,), (8, 9), (10, 11),
            lr_scales=(1.0, 0.3), logreg_cs=(0.3,), k_sweep=(16, 64), k_sweep_min_rows=256, why=why,
        )
    return EvalPlan(
        "ml-100k", load_movielens_100k, settings, _grid([8, 16, 32], [0.03, 0.1, 0.3], [1, 2], 256),
        tuple(range(seeds)), tuple(range(seeds)), tuple(range(5, 10)), tuple(range(10, 20)),
        logreg_cs=(0.1, 0.3, 1.0, 3.0), k_sweep=(8, 16, 32, 64, 128, 256, 512, 1024), k_sweep_min_rows=256, per_field=True,
        why=why,
    )


def stream_plan(quick: bool = False, rows: int | None = None, seeds: int = 1, k: int | None = None, min_factor: int | None = None, top_n: int | None = None) -> EvalPlan:
    """The generated stream: 24 segments; validation 9 and 11, test 12-23."""
    if quick:
        settings = CompressSettings(k=k or 16, min_factor=min_factor or 10, top_n=top_n or 400)
        return EvalPlan(
            "generated stream (quick)", lambda: small_stream(rows or 48_000, 10, 0), settings, _grid([8], [0.1], [1], 256),
            (0,), (0,), (5,), (8, 9), lr_scales=(1.0,), logreg_cs=(1.0,), logreg_tol=1e-4, k_sweep=(8, 32), k_sweep_at=(9,),
            full_at=(9,), why="quick run: a 20x smaller stream",
        )
    settings = CompressSettings(k=k or 100, min_factor=min_factor or 100, top_n=top_n or 20_000)
    why = (
        f"The stream's feature set grows over its 24 segments (Figure 1 above). k={settings.k} with min_factor "
        f"{settings.min_factor} (the paper's settings by default) compresses a field once it holds {settings.min_rows:,} "
        f"features, so fields cross the threshold one after another as in the paper's Figure 6; fast clustering runs on "
        f"the {settings.top_n:,} most frequent features of a field (the paper's 100,000 would cover almost every feature "
        "of this stream)."
    )
    spec = StreamSpec(rows=rows or StreamSpec.rows)
    return EvalPlan(
        "generated stream", lambda: generate_stream(spec), settings,
        (ModelConfig(16, lr=0.03, batch=1024), ModelConfig(16, lr=0.1, batch=1024), ModelConfig(16, lr=0.3, batch=1024), ModelConfig(32, lr=0.1, batch=1024)),
        tuple(range(seeds)), (0,), (9, 11), tuple(range(12, 24)),
        # One L-BFGS fit on a million rows takes minutes here: C is chosen at an early
        # checkpoint and the regression is reported at the last one only.
        logreg_cs=(0.3, 1.0), logreg_val=(6,), logreg_test=(23,), logreg_tol=1e-4,
        k_sweep=(50, 100, 200, 500, 1000), k_sweep_at=(23,), full_at=(23,), per_field=True, per_field_at=(23,), why=why,
        about="How the stream is made (`training/stream.py`): ids drawn with Zipf-like popularity from universes that grow "
        "geometrically; every id belongs to a latent group whose bias and latent vector drive the click probability, and "
        f"also carries a bias of its own (standard deviation {spec.fields[0].own} in the large fields), which a shared vector "
        "cannot hold.",
    )


def file_plan(args: argparse.Namespace) -> EvalPlan:
    """A user's CSV or Parquet click log, with checkpoints placed by segment count."""
    multi = {}
    for item in args.multi_valued or []:
        col, sep, value = item.partition("=")
        if not sep or not value:
            raise ConfigError(f"--multi-valued expects COLUMN=SEPARATOR, found {item!r}")
        multi[col] = value
    categorical = [c.strip() for c in args.categorical.split(",") if c.strip()] if args.categorical else []
    if not args.label or not categorical:
        raise ConfigError("a click log needs --label and --categorical COL,COL,...")
    segments = args.segments or 20
    path = Path(args.data)

    def load() -> ClickLog:
        # Imported here: pyarrow is needed for a user's own file only, not for the built-in data.
        from saec.training.clicklog import read_click_log

        return read_click_log(path, label=args.label, categorical=categorical, time=args.time, label_threshold=args.label_threshold, multi_valued=multi, segments=segments)

    settings = CompressSettings(k=args.k or 100, min_factor=args.min_factor or 100, top_n=args.top_n or 100_000)
    why = f"k={settings.k}, min_factor {settings.min_factor}, top_n {settings.top_n:,} (command-line settings)."
    if args.quick:
        return EvalPlan(
            path.name, load, settings, _grid([16], [0.1], [1], args.batch or 1024), (0,), (0,), (segments - 3,),
            (segments - 2, segments - 1), lr_scales=(1.0,), logreg_cs=(1.0,), logreg_tol=1e-4, full_at=(segments - 1,), why=why,
        )
    val_lo, test_lo = max(1, segments // 4), segments // 2
    val = tuple(sorted({int(round(x)) for x in np.linspace(val_lo, test_lo - 1, 3)}))
    return EvalPlan(
        path.name, load, settings, _grid([8, 16, 32], [0.03, 0.1], [1], args.batch or 1024),
        tuple(range(args.seeds or 1)), (0,), val, tuple(range(test_lo, segments)),
        logreg_cs=(0.3, 1.0), logreg_test=(test_lo, segments - 1), logreg_tol=1e-4, full_at=(segments - 1,), why=why,
    )


# -- command line -------------------------------------------------------------------------


def plans_from_args(args: argparse.Namespace) -> list[EvalPlan]:
    plans = []
    for data in args.data or ["ml-100k", "stream"]:
        if data == "ml-100k":
            plans.append(movielens_plan(args.quick, args.seeds or 3, args.k, args.min_factor, args.top_n))
        elif data == "stream":
            plans.append(stream_plan(args.quick, args.stream_rows, args.seeds or 1, args.k, args.min_factor, args.top_n))
        else:
            plans.append(file_plan(argparse.Namespace(**{**vars(args), "data": data})))
    return plans


def run_evaluation(args: argparse.Namespace, command: str, progress: Progress | None = None) -> Path:
    """Evaluate every requested data set and write the report; returns the report's path.

    Args:
        args: parsed flags (:func:`training.cli.add_arguments`).
        command: the command line, quoted in the report.
        progress: where progress lines go (default: stderr).
    """
    # Imported here: the report module reads this module's names and result classes.
    from saec.training.report import load_average, write_report

    load_at_start = load_average()
    torch.set_num_threads(args.threads)
    progress = progress or Progress()
    plans = plans_from_args(args)
    results = [evaluate_dataset(p, progress, args.publish) for p in plans]
    path = write_report(results, args.out, command, progress.elapsed(), args.threads, load_at_start)
    progress.note(f"report written to {path}")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m saec.training.evaluate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run_evaluation(args, " ".join(["python -m saec.training.evaluate", *(sys.argv[1:] if argv is None else argv)]))
    except TrainingError as exc:
        print(f"python -m saec.training.evaluate: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
