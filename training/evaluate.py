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

Between 3 and 4 the ``saec compress`` command to recommend is chosen on the validation
checkpoints (:mod:`training.recommend`); step 4 then reports it on the test checkpoints with
the hashing trick and the frequency threshold at its bytes, and the combinations chosen for
other loss budgets (the ΔAUC-against-ratio curve).

Run standalone as ``python -m saec.training.evaluate --help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from saec.compress.assign import default_threads
from saec.progress import Progress
from saec.store.engine import LookupEngine
from saec.store.hashing import hash_ids
from saec.store.snapshot import open_current
from saec.training import logreg
from saec.training.data import ClickLog
from saec.training.errors import ConfigError, TrainingError
from saec.training.methods import (
    CONTROL,
    FULL,
    HASH_BYTES,
    HASH_K,
    HASH_PRODUCT,
    HASH_RECOMMENDED,
    HASH_RESIDUAL,
    INT8,
    NO_HEAD,
    NOT_RETRAINED,
    OCCURRENCE,
    PRODUCT,
    RECOMMENDED,
    RESIDUAL,
    SAEC,
    SUMMED,
    THRESHOLD,
    THRESHOLD_PAPER,
    THRESHOLD_PRODUCT,
    THRESHOLD_RECOMMENDED,
    THRESHOLD_RESIDUAL,
    WEIGHTED,
    curve_names,
    field_name,
    head_name,
    product_name,
    sweep_name,
)
from saec.training.model import ModelConfig
from saec.training.options import add_arguments
from saec.training.plans import (
    DEFAULT_DATA,
    MAX_GROWTH_ROUNDS,
    EvalPlan,
    choose_settings,
    edge_axes,
    grow_grid,
    plans_from_args,
)
from saec.training.protocol import Outcome, RunPlan, run
from saec.training.publish import model_vectors, publish_model
from saec.training.recommend import Recommendation, command, describe, recipe_variants, select_on_validation
from saec.training.report import load_average, write_report
from saec.training.results import DatasetResult, PublishCheck, TuningRow, slug, span
from saec.training.stream import features_over_time
from saec.training.trainer import Metrics, live_at
from saec.training.variants import Built, CompressSettings, Variant

# What a lean plan runs (EvalPlan.lean): the control, Saec, int8 and the rivals at Saec's bytes.
_LEAN = (CONTROL, SAEC, HASH_BYTES, THRESHOLD, INT8)
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
    why = plan.why
    if plan.settings is None:
        settings, why = choose_settings([f.size for f in log.fields], plan.top_n)
        settings = dataclasses.replace(settings, private_rows=plan.private_rows)
        progress.note(f"{plan.name}: k={settings.k}, min_factor {settings.min_factor}: {why}")
    else:
        settings = plan.settings
    plan = dataclasses.replace(plan, settings=settings, why=why)

    # 1. Baseline tuning, growing the grid past a best value on its edge.
    config, tuning, growth = _tune_baseline(plan, settings, log, progress)

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
    tuned = tuple(v for v in _TUNED if v.name in _LEAN) if plan.lean else _TUNED
    tried = tuple(dataclasses.replace(v, name=f"{v.name} @ {s:g}", lr_scale=s) for v in tuned for s in plan.lr_scales)
    progress.stage(f"{plan.name}: tuning retraining learning rates", len(plan.tune_seeds) * len(plan.val))
    got: dict[str, list] = defaultdict(list)
    for seed in plan.tune_seeds:
        for o in run(log, RunPlan(config, settings, plan.val, tried), seed, progress):
            got[o.method].append(o.metrics)
    scale_rows, scales = [], {}
    for v in tuned:
        rows = [TuningRow(f"{v.name} @ {s:g}", *_mean_metrics(got[f"{v.name} @ {s:g}"])) for s in plan.lr_scales]
        pick = _choose(rows)
        scales[v.name] = plan.lr_scales[pick]
        scale_rows += rows

    # 3b. The compress command to recommend, chosen on the validation checkpoints only.
    rec: Recommendation | None = None
    curve: dict[float, dict] = {}
    if plan.recommend:
        seeds = plan.select_seeds or plan.tune_seeds
        progress.stage(f"{plan.name}: choosing the compress command on segments {span(plan.val)}", 2 * len(seeds) * len(plan.val))
        tried, rounds, curve = select_on_validation(log, config, settings, plan.val, seeds, scales[SAEC], scales[CONTROL],
                                                    plan.max_auc_loss, plan.curve_budgets, progress)
        final = rounds[-1]
        rec = Recommendation(plan.max_auc_loss, tried, rounds, final.recipe, final.accepted, command(final.recipe), RECOMMENDED,
                             {b: curve_names(b)[0] for b in curve})
        progress.note(f"{plan.name}: {'recommended' if final.accepted else 'no combination met the target on validation; the last tried'}: "
                      f"{describe(final.recipe)} (validation ΔAUC {final.d_auc:+.4f} ± {final.se:.4f})")

    # 4. The reported runs.
    variants = _reported_variants(plan, settings, log, scales)
    if rec is not None:
        variants += _recommended_variants(rec.recipe, (RECOMMENDED, HASH_RECOMMENDED, THRESHOLD_RECOMMENDED), scales)
        for b, recipe in curve.items():
            variants += _recommended_variants(recipe, curve_names(b), scales)
    variants_at = {}
    if plan.curve_at is not None:
        variants_at.update({name: plan.curve_at for b in curve for name in curve_names(b)})
    if plan.full_at is not None:
        variants_at.update({name: plan.full_at for name in FULL.values()})
    if plan.k_sweep_at is not None:
        variants_at.update({sweep_name(k): plan.k_sweep_at for k in plan.k_sweep})
    if plan.head_sweep_at is not None:
        variants_at.update({head_name(h): plan.head_sweep_at for h in plan.head_sweep})
    if plan.per_field_at is not None:
        variants_at.update({v.name: plan.per_field_at for v in variants if v.only is not None})
    keep_at = max(plan.test)
    # The retrained models published and read back through the store, each into its own
    # folder under publish_dir: Saec's, and the product and residual quantisers'.
    published = {SAEC: None, PRODUCT: "product", RESIDUAL: "residual"}
    kept: dict[str, Built] = {}

    def keep(name: str, c: int, built: Built) -> None:
        if name in published and c == keep_at:
            kept.setdefault(name, built)

    progress.stage(f"{plan.name}: protocol on segments {span(plan.test)}, {len(variants)} variants", len(plan.seeds) * len(plan.test))
    outcomes: list[Outcome] = []
    for i, seed in enumerate(plan.seeds):
        run_plan = RunPlan(
            config, settings, plan.test, variants, hash_scratch=HASH_K in scales, hash_scratch_lr_scale=scales.get(HASH_K, 1.0),
            logreg_c=logreg_c if i == 0 else None, logreg_at=plan.logreg_test, logreg_tol=plan.logreg_tol, variants_at=variants_at,
        )
        outcomes += run(log, run_plan, seed, progress, keep if i == 0 else None)

    # 5. Serving.
    checks = {
        name: _publish_and_check(built, log, keep_at, publish_dir if publish_dir is None or sub is None else publish_dir / sub,
                                 plan.name, progress)
        for name, sub in published.items() if (built := kept.get(name)) is not None
    }
    return DatasetResult(
        name=plan.name, notes=log.notes, summary=log.summary(), settings=settings, config=config, grid_growth=growth,
        logreg_c=logreg_c, lr_scales=scales, baseline_tuning=tuning, logreg_tuning=lr_rows,
        scale_tuning=scale_rows, outcomes=outcomes, features_over_time=features_over_time(log).tolist(),
        frequency=_frequency(log, keep_at), plan=plan, seconds=progress.elapsed() - started, publish=checks.get(SAEC),
        publish_product=checks.get(PRODUCT), publish_residual=checks.get(RESIDUAL),
        threshold_coverage=_threshold_coverage(log, keep_at, outcomes), recommendation=rec,
    )


def _tune_baseline(plan: EvalPlan, settings: CompressSettings, log: ClickLog, progress: Progress) -> tuple[ModelConfig, list[TuningRow], list[str]]:
    """The best baseline configuration on the validation checkpoints, every row tried, and
    one sentence per growth round of the grid (:func:`training.plans.grow_grid`)."""
    rows: list[TuningRow] = []
    tried: list[ModelConfig] = []
    growth: list[str] = []
    todo = list(plan.grid)
    for round_ in range(MAX_GROWTH_ROUNDS + 1):
        progress.stage(f"{plan.name}: tuning the baseline on segments {span(plan.val)}" + (f", growth round {round_}" if round_ else ""),
                       len(todo) * len(plan.tune_seeds))
        for cfg in todo:
            ms: list[Metrics] = []
            for seed in plan.tune_seeds:
                ms += [o.metrics for o in run(log, RunPlan(cfg, settings, plan.val), seed)]
                progress(f"{_config_label(cfg)} seed {seed}: AUC {np.mean([m.auc for m in ms[-len(plan.val):]]):.4f}")
            rows.append(TuningRow(_config_label(cfg), *_mean_metrics(ms)))
            tried.append(cfg)
        for r in rows:
            r.chosen = False
        best = tried[_choose(rows)]
        todo = grow_grid(tried, best, tried)
        if not todo:
            edges = edge_axes(tried, best)
            if edges and round_:
                growth.append(f"the best ({_config_label(best)}) is on the edge of {', '.join(edges)} at the documented bound "
                              "(the cap); a larger grid might find a stronger baseline")
            break
        if round_ == MAX_GROWTH_ROUNDS:
            growth.append(f"the best ({_config_label(best)}) is still on the grid's edge after {MAX_GROWTH_ROUNDS} growth "
                          "rounds (the cap); a larger grid might find a stronger baseline")
            break
        growth.append(f"round {round_ + 1}: the best ({_config_label(best)}) sat on the grid's edge; tried "
                      + "; ".join(_config_label(c) for c in todo))
    return best, rows, growth


def _reported_variants(plan: EvalPlan, settings: CompressSettings, log: ClickLog, scales: dict[str, float]) -> tuple[Variant, ...]:
    saec = scales[SAEC]
    out = [dataclasses.replace(v, lr_scale=scales[v.name]) for v in _TUNED if v.name in scales]
    if plan.lean:
        return tuple(out)
    out.append(Variant(NOT_RETRAINED, "saec", retrain=False))
    out.append(Variant(WEIGHTED, "saec", weighted=True, lr_scale=saec))
    if plan.product is not None:
        m, k, weighted, top_n = plan.product
        # The hashed table and the threshold are sized to the product quantiser's bytes
        # and keep their own tuned scales.
        out += [Variant(PRODUCT, "saec", subvectors=m, k=k, top_n=top_n, weighted=weighted, lr_scale=saec),
                Variant(HASH_PRODUCT, "hash", subvectors=m, k=k, lr_scale=scales[HASH_BYTES]),
                Variant(THRESHOLD_PRODUCT, "threshold", subvectors=m, k=k, lr_scale=scales[THRESHOLD])]
    if plan.residual is not None:
        stages, k, weighted, top_n, dtype = plan.residual
        out += [Variant(RESIDUAL, "saec", stages=stages, k=k, top_n=top_n, weighted=weighted, codebook_dtype=dtype, lr_scale=saec),
                Variant(HASH_RESIDUAL, "hash", stages=stages, k=k, codebook_dtype=dtype, lr_scale=scales[HASH_BYTES]),
                Variant(THRESHOLD_RESIDUAL, "threshold", stages=stages, k=k, codebook_dtype=dtype, lr_scale=scales[THRESHOLD])]
    out += [Variant(product_name(m, k, weighted, head), "saec", subvectors=m, k=k, top_n=top_n, weighted=weighted,
                    private_rows=head, lr_scale=saec)
            for m, k, weighted, top_n, head in plan.product_sweep]
    out += [Variant(name, "saec", init=init, fast=False, lr_scale=saec) for init, name in FULL.items()]
    heads = [] if settings.private_rows == 0 else [Variant(NO_HEAD, "saec", private_rows=0, lr_scale=saec)]
    heads += [Variant(head_name(h), "saec", private_rows=h, lr_scale=saec) for h in plan.head_sweep if h != settings.private_rows]
    out += heads
    if plan.per_field:
        end = max(plan.test)
        large = [f.name for i, f in enumerate(log.fields) if log.live(i)[end] >= settings.min_rows]
        out += [Variant(field_name(f), "saec", only=(f,), lr_scale=saec) for f in large]
    for k in plan.k_sweep:
        if plan.k_sweep_min_rows:
            # A fixed size threshold keeps the same fields compressed at every k; top_n keeps
            # the data set's rows per centroid.
            min_factor, top_n = max(1, plan.k_sweep_min_rows // k), settings.top_n * k // settings.k
        else:
            min_factor, top_n = settings.min_factor, max(settings.top_n, k)
        out.append(Variant(sweep_name(k), "saec", k=k, min_factor=min_factor, top_n=top_n, lr_scale=saec))
    return tuple(out)


def _recommended_variants(recipe: dict, names: tuple[str, str, str], scales: dict[str, float]) -> tuple[Variant, ...]:
    """A combination of the rule, and the hashing trick and the frequency threshold at its bytes, field by field."""
    return (Variant(names[0], "saec", lr_scale=scales[SAEC], per_field=recipe_variants(recipe)),
            Variant(names[1], "saec", lr_scale=scales[HASH_BYTES], per_field=recipe_variants(recipe, "hash")),
            Variant(names[2], "saec", lr_scale=scales[THRESHOLD], per_field=recipe_variants(recipe, "threshold")))


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


def run_evaluation(args: argparse.Namespace, command: str, progress: Progress | None = None) -> Path:
    """Evaluate every requested data set and write the report; returns the report's path.

    Args:
        args: parsed flags (:func:`training.cli.add_arguments`).
        command: the command line, quoted in the report.
        progress: where progress lines go (default: stderr).
    """
    load_at_start = load_average()
    torch.set_num_threads(args.threads)
    progress = progress or Progress()
    plans = plans_from_args(args)
    with progress:
        jobs = min(len(plans), getattr(args, "jobs", None) or default_threads())
        if jobs > 1:
            # One process a data set, at most `jobs` at once (spawned: a forked torch may hang).
            with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                results = list(pool.map(_evaluate_one, [args] * len(plans), range(len(plans))))
        else:
            results = [evaluate_dataset(p, progress, args.publish) for p in plans]
        ran = set(args.data or DEFAULT_DATA)
        path = write_report(results, args.out, command, progress.elapsed(), args.threads, load_at_start,
                            [d for d in DEFAULT_DATA if d not in ran])
        progress.note(f"report written to {path}")
    return path


def _evaluate_one(args: argparse.Namespace, index: int) -> DatasetResult:
    """Data set ``index`` of ``args`` in a worker process; the plan's loader is dropped from
    the result (a closure does not cross processes, and the report does not need it)."""
    torch.set_num_threads(args.threads)
    plan = plans_from_args(args)[index]
    with Progress() as progress:
        result = evaluate_dataset(plan, progress, args.publish)
    return dataclasses.replace(result, plan=dataclasses.replace(result.plan, load=_no_loader))


def _no_loader() -> ClickLog:
    raise ConfigError("this plan's data was loaded in another process")


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
