"""What the evaluation of each data set does: its data, settings, tuning grid and checkpoints.

:func:`movielens_plan`, :func:`stream_plan` and :func:`file_plan` build an
:class:`EvalPlan`; :func:`grow_grid` extends a tuning grid past a best value on its edge;
:func:`choose_settings` picks k and min_factor for a user's own log from its field sizes.
"""

from __future__ import annotations

import argparse
import math
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from saec.training.data import ClickLog
from saec.training.errors import ConfigError
from saec.training.model import ModelConfig
from saec.training.movielens import load_movielens_100k
from saec.training.stream import StreamSpec, generate_stream, small_stream
from saec.training.variants import CompressSettings

# A field with fewer features than this costs little even uncompressed (256 rows of a
# 16-float vector are 16 KiB); the chosen k compresses every field from this size on.
MATTERS = 256
# Rows per centroid at the smallest compressed field: the paper's 100 is out of reach for
# fields of a few hundred features, and below 8 the codebook stops paying for itself.
AUTO_MIN_FACTOR = 8
# Edges of the tuning grid's growth (grow_grid): at most this many rounds per data set,
# and never past these bounds.
MAX_GROWTH_ROUNDS = 2
DIM_RANGE = (4, 64)
LR_RANGE = (0.003, 1.0)
BATCH_RANGE = (64, 4096)
# Saec's settings per built-in data set, and the frequency-head sizes the report sweeps
# (chosen by the runs recorded in bench/results/evaluate/report.md).
ML100K_K = 32
ML100K_PRIVATE_ROWS = 0
ML100K_HEAD_SWEEP = (32, 64, 128)
STREAM_PRIVATE_ROWS = 156
STREAM_HEAD_SWEEP = (1000, 4000)
# Product quantisation per built-in data set: (slices, rows per slice, count-weighted,
# top_n), chosen by the runs of bench/candidates.py recorded in bench/results/candidates.md:
# ml-100k keeps Saec's 16 rows clustered per centroid, the stream clusters Saec's 20,000.
# The sweeps' last element is a frequency head (private rows a slice, 0 for none).
ML100K_PRODUCT = (2, 64, True, 1024)
ML100K_PRODUCT_SWEEP = ((4, 32, True, 512, 0), (2, 32, True, 512, 0), (2, 48, True, 768, 16), (2, 64, False, 1024, 0))
STREAM_PRODUCT = (4, 256, True, 20_000)
STREAM_PRODUCT_SWEEP = ((2, 256, True, 20_000, 0), (2, 200, True, 20_000, 56), (2, 256, False, 20_000, 0))
# Residual quantisation: (stages, rows per stage, count-weighted, top_n, codebook dtype),
# from the same runs; float16 codebooks are rounded after retraining and counted at 2 bytes.
ML100K_RESIDUAL = (2, 32, True, 512, "float16")
STREAM_RESIDUAL = (2, 256, True, 20_000, "float16")


# What `python -m saec.training.evaluate` runs without --data: the logs no setting was tuned
# on first (training/heldout.py), then the ones the report's older settings were chosen on.
DEFAULT_DATA = ("ml-1m", "clothing", "ml-100k", "stream", "open-bandit")


@dataclass(frozen=True)
class EvalPlan:
    """Everything the evaluation of one data set does.

    Attributes:
        name: data set name in the report.
        load: builds the click log.
        settings: Saec's k, min_factor, top_n and frequency head (seed is set per run);
            None: chosen from the log's field sizes (:func:`choose_settings`), with
            ``top_n`` and ``private_rows`` below.
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
        head_sweep: frequency-head sizes of the head sweep (private rows per field).
        head_sweep_at: checkpoints of the head sweep (None: all test checkpoints).
        top_n, private_rows: used when ``settings`` is None.
        product: product quantisation's (slices, rows per slice, count-weighted, top_n), reported
            with the hashing trick and the frequency threshold at its bytes; None: not run.
        product_sweep: more product quantisers, the same tuple plus a frequency head (private
            rows a slice, 0 for none), reported as rows of their own.
        residual: residual quantisation's (stages, rows per stage, count-weighted, top_n,
            codebook dtype "float32" or "float16"),
            reported with the hashed table and the frequency threshold at its bytes; None
            skips it.
        why: one paragraph on why these settings suit the data set.
        about: what the report should know about the data (how it was made).
        recommend: choose the ``saec compress`` command to recommend (:mod:`training.recommend`).
        max_auc_loss: its loss target (``--max-auc-loss``).
        curve_budgets: further loss budgets whose combinations draw the ΔAUC-against-ratio curve.
        curve_at: checkpoints of those (None: all test checkpoints).
        select_seeds: seeds the choice averages over (None: the tuning seeds).
        lean: run only what the recommendation needs beside it: the control, Saec, int8,
            the hashing trick and the threshold at Saec's bytes (no ablations, sweeps or full
            clustering), for logs where the machine's time allows no more.
    """

    name: str
    load: Callable[[], ClickLog]
    settings: CompressSettings | None
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
    head_sweep: tuple[int, ...] = ()
    head_sweep_at: tuple[int, ...] | None = None
    top_n: int | None = None
    private_rows: int = 0
    product: tuple[int, int, bool, int] | None = None
    product_sweep: tuple[tuple[int, int, bool, int, int], ...] = ()
    residual: tuple[int, int, bool, int, str] | None = None
    why: str = ""
    about: str = ""
    recommend: bool = True
    max_auc_loss: float = 0.001
    curve_budgets: tuple[float, ...] = (0.0005, 0.002, 0.004, 0.008)
    curve_at: tuple[int, ...] | None = None
    select_seeds: tuple[int, ...] | None = None
    lean: bool = False


def choose_settings(sizes: Sequence[int], top_n: int | None = None) -> tuple[CompressSettings, str]:
    """k and min_factor that compress every field of at least :data:`MATTERS` features.

    k is the largest power of two (8..256) with ``AUTO_MIN_FACTOR * k`` no larger than the
    smallest such field, so each of them is compressed once it is fully seen.

    Returns:
        The settings and a sentence saying why, for the report and the console.
    """
    large = sorted(s for s in sizes if s >= MATTERS)
    if not large:
        settings = CompressSettings(k=32, min_factor=AUTO_MIN_FACTOR, top_n=top_n or 16 * 32)
        return settings, (
            f"no field has {MATTERS} features or more (largest: {max(sizes, default=0):,}), so nothing is "
            f"worth compressing; k={settings.k}, min_factor {settings.min_factor} are placeholders"
        )
    k = int(min(256, max(8, 2 ** math.floor(math.log2(large[0] / AUTO_MIN_FACTOR)))))
    settings = CompressSettings(k=k, min_factor=AUTO_MIN_FACTOR, top_n=top_n or 16 * k)
    return settings, (
        f"chosen from the field sizes: {len(large)} field(s) of at least {MATTERS} features, the smallest "
        f"{large[0]:,}; k={k} with min_factor {AUTO_MIN_FACTOR} compresses each once it holds "
        f"{settings.min_rows:,} features; top_n {settings.top_n:,} (16 per centroid)"
    )


def edge_axes(grid: Sequence[ModelConfig], best: ModelConfig) -> list[str]:
    """The axes ("dim", "lr", "batch") with two values or more where ``best`` is the smallest or largest."""
    out = []
    for axis in ("dim", "lr", "batch"):
        values = sorted({getattr(c, axis) for c in grid})
        if len(values) >= 2 and getattr(best, axis) in (values[0], values[-1]):
            out.append(axis)
    return out


def grow_grid(grid: Sequence[ModelConfig], best: ModelConfig, tried: Sequence[ModelConfig]) -> list[ModelConfig]:
    """New configurations one step past ``best`` on every axis where it sits on the edge.

    An axis (embedding length, learning rate, batch size) whose values in ``grid`` number
    at least two, and where ``best`` holds the smallest or largest, gets the next value
    outward (half or double a length or batch, a third or three times a learning rate),
    with the other axes at ``best``'s values: a line search from the best, not a new cross
    product. Values outside :data:`DIM_RANGE`, :data:`LR_RANGE`, :data:`BATCH_RANGE` and
    configurations already tried are left out.
    """
    out: list[ModelConfig] = []

    def consider(cfg: ModelConfig) -> None:
        ok = (DIM_RANGE[0] <= cfg.dim <= DIM_RANGE[1] and LR_RANGE[0] <= cfg.lr <= LR_RANGE[1]
              and BATCH_RANGE[0] <= cfg.batch <= BATCH_RANGE[1])
        if ok and cfg not in tried and cfg not in out:
            out.append(cfg)

    for axis, down, up in (("dim", lambda v: v // 2, lambda v: v * 2), ("lr", lambda v: round(v / 3, 6), lambda v: round(v * 3, 6)),
                           ("batch", lambda v: v // 2, lambda v: v * 2)):
        values = sorted({getattr(c, axis) for c in grid})
        if len(values) < 2:
            continue
        here = getattr(best, axis)
        if here == values[0]:
            consider(replace(best, **{axis: down(here)}))
        elif here == values[-1]:
            consider(replace(best, **{axis: up(here)}))
    return out


def grid_of(dims: Sequence[int], lrs: Sequence[float], passes: Sequence[int], batch: int) -> tuple[ModelConfig, ...]:
    return tuple(ModelConfig(dim=d, lr=lr, passes=p, batch=batch) for d in dims for lr in lrs for p in passes)


def movielens_plan(quick: bool = False, seeds: int = 3, k: int | None = None, min_factor: int | None = None, top_n: int | None = None,
                   private_rows: int | None = None) -> EvalPlan:
    """MovieLens-100k: 20 segments of 5,000 ratings; validation 5-9, test 10-19."""
    k = k or ML100K_K
    min_factor = min_factor or max(1, 256 // k)
    head = ML100K_PRIVATE_ROWS if private_rows is None else private_rows
    settings = CompressSettings(k=k, min_factor=min_factor, top_n=top_n or 16 * k, private_rows=head)
    why = (
        f"ml-100k has 943 users, 1,682 items and 795 zip codes, so the paper's k=100 with min_factor 100 "
        f"(10,000 features) would compress nothing. k={k} with min_factor {min_factor} compresses every field "
        f"of at least {settings.min_rows} features seen (user, item, zip_code once enough have appeared); fast "
        f"clustering runs k-means on the {settings.top_n} most frequent features (16 per centroid) and assigns the rest."
    )
    if quick:
        return EvalPlan(
            "ml-100k", load_movielens_100k, settings, grid_of([16], [0.1], [1], 256), (0,), (0,), (8, 9), (10, 11),
            lr_scales=(1.0, 0.3), logreg_cs=(0.3,), k_sweep=(16, 64), k_sweep_min_rows=256, head_sweep=(64,),
            product=(2, k, False, settings.top_n), product_sweep=((2, k, True, settings.top_n, 0),),
            residual=(2, k, True, settings.top_n, "float16"), why=why,
        )
    return EvalPlan(
        "ml-100k", load_movielens_100k, settings, grid_of([8, 16, 32], [0.03, 0.1, 0.3], [1, 2], 256),
        tuple(range(seeds)), tuple(range(seeds)), tuple(range(5, 10)), tuple(range(10, 20)),
        logreg_cs=(0.1, 0.3, 1.0, 3.0), k_sweep=(8, 32, 128, 512), k_sweep_min_rows=256, per_field=True,
        head_sweep=ML100K_HEAD_SWEEP, product=ML100K_PRODUCT, product_sweep=ML100K_PRODUCT_SWEEP,
        residual=ML100K_RESIDUAL, why=why, select_seeds=(0, 1), curve_at=(10, 13, 16, 19),
    )


def stream_plan(quick: bool = False, rows: int | None = None, seeds: int = 3, k: int | None = None, min_factor: int | None = None,
                top_n: int | None = None, private_rows: int | None = None) -> EvalPlan:
    """The generated stream: 24 segments; validation 9 and 11, test 12-23."""
    if quick:
        settings = CompressSettings(k=k or 16, min_factor=min_factor or 10, top_n=top_n or 400, private_rows=private_rows or 0)
        return EvalPlan(
            "generated stream (quick)", lambda: small_stream(rows or 48_000, 10, 0), settings, grid_of([8], [0.1], [1], 256),
            (0,), (0,), (5,), (8, 9), lr_scales=(1.0,), logreg_cs=(1.0,), logreg_tol=1e-4, k_sweep=(8, 32), k_sweep_at=(9,),
            full_at=(9,), residual=(2, settings.k, True, settings.top_n, "float16"), why="quick run: a 20x smaller stream",
        )
    head = STREAM_PRIVATE_ROWS if private_rows is None else private_rows
    settings = CompressSettings(k=k or 100, min_factor=min_factor or 100, top_n=top_n or 20_000, private_rows=head)
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
        k_sweep=(50, 100, 200, 500, 1000), k_sweep_at=(23,), full_at=(23,), per_field=True, per_field_at=(23,),
        head_sweep=STREAM_HEAD_SWEEP, head_sweep_at=(23,), product=STREAM_PRODUCT, product_sweep=STREAM_PRODUCT_SWEEP,
        residual=STREAM_RESIDUAL, why=why, curve_at=(15, 19, 23),
        about="How the stream is made (`training/stream.py`): ids drawn with Zipf-like popularity from universes that grow "
        "geometrically; every id belongs to a latent group whose bias and latent vector drive the click probability, and "
        f"also carries a bias of its own (standard deviation {spec.fields[0].own} in the large fields), which a shared vector "
        "cannot hold.",
    )


def open_bandit_plan(quick: bool = False, seeds: int = 3, private_rows: int | None = None) -> EvalPlan:
    """The Open Bandit sample: 10 segments of 2,000 impressions; validation 2-4, test 5-9.

    Run the way a new user runs their own log: no --k or --min-factor, so the settings
    are chosen from the field sizes (:func:`choose_settings`).
    """
    from saec.training.openbandit import load_open_bandit

    about = ("ZOZOTOWN's fashion recommendation log as shipped inside the `obp==0.4.1` wheel (Open Bandit Dataset, "
             "CC BY 4.0): 10,000 impressions of each logging policy, joined in timestamp order; label `click`; fields "
             "item_id, position and four hashed user features. About 4 clicks in 1,000 impressions, so each segment's "
             "AUC rests on a few clicks and moves by several hundredths between segments.")
    if quick:
        return EvalPlan("Open Bandit sample", load_open_bandit, None, grid_of([8], [0.1], [1], 256), (0,), (0,), (4,), (8, 9),
                        lr_scales=(1.0,), logreg_cs=(1.0,), logreg_tol=1e-4, private_rows=private_rows or 0, about=about)
    return EvalPlan(
        "Open Bandit sample", load_open_bandit, None, grid_of([8, 16], [0.03, 0.1], [1], 256),
        tuple(range(seeds)), tuple(range(seeds)), (2, 3, 4), tuple(range(5, 10)),
        logreg_cs=(0.1, 1.0), logreg_tol=1e-4, private_rows=private_rows or 0, about=about, curve_at=(5, 7, 9),
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
        from saec.training.clicklog import DEFAULT_NULL_VALUES, read_click_log

        nulls = tuple(args.null_values.split(",")) if getattr(args, "null_values", None) is not None else DEFAULT_NULL_VALUES
        return read_click_log(path, label=args.label, categorical=categorical, time=args.time, label_threshold=args.label_threshold,
                              multi_valued=multi, segments=segments, null_values=nulls)

    head = args.private_rows or 0
    settings: CompressSettings | None = None
    why = ""
    if args.k or args.min_factor:
        settings = CompressSettings(k=args.k or 100, min_factor=args.min_factor or 100, top_n=args.top_n or 100_000, private_rows=head)
        why = f"k={settings.k}, min_factor {settings.min_factor}, top_n {settings.top_n:,} (command-line settings)."
    if args.quick:
        return EvalPlan(
            path.name, load, settings, grid_of([16], [0.1], [1], args.batch or 1024), (0,), (0,), (segments - 3,),
            (segments - 2, segments - 1), lr_scales=(1.0,), logreg_cs=(1.0,), logreg_tol=1e-4, full_at=(segments - 1,), why=why,
            top_n=args.top_n, private_rows=head,
        )
    val_lo, test_lo = max(1, segments // 4), segments // 2
    val = tuple(sorted({int(round(x)) for x in np.linspace(val_lo, test_lo - 1, 3)}))
    test = tuple(range(test_lo, segments))
    return EvalPlan(
        path.name, load, settings, grid_of([8, 16, 32], [0.03, 0.1], [1, 2], args.batch or 1024),
        tuple(range(args.seeds or 1)), (0,), val, test,
        logreg_cs=(0.3, 1.0), logreg_test=(test_lo, segments - 1), logreg_tol=1e-4, full_at=(segments - 1,), why=why,
        top_n=args.top_n, private_rows=head, select_seeds=(0, 1), curve_at=test[::3],
    )


def heldout_plan(name: str, args: argparse.Namespace) -> EvalPlan:
    """One of the logs no setting was tuned on (:mod:`training.heldout`), run as a user runs
    their own file: ``saec evaluate --data FILE`` with the file's flags and nothing else."""
    from saec.training.heldout import CLOTHING_FLAGS, ML1M_FLAGS, clothing_file, ml1m_file

    make, flags, title = {"ml-1m": (ml1m_file, ML1M_FLAGS, "MovieLens-1M (held out)"),
                          "clothing": (clothing_file, CLOTHING_FLAGS, "Women's clothing reviews (held out)")}[name]
    path = make()
    segments = 20
    own = argparse.Namespace(**{**vars(args), "data": str(path), "label": flags["label"], "categorical": flags["categorical"],
                                "time": flags.get("time"), "segments": segments, "seeds": args.seeds or 3, "k": None,
                                "min_factor": None, "top_n": None, "private_rows": None, "multi_valued": None,
                                "null_values": None, "label_threshold": None})
    plan = file_plan(own)
    if not args.quick:
        # Compute limits, not settings chosen on the data: what the recommendation needs,
        # every other test checkpoint and the last, the choice on one seed.
        test = (*plan.test[:-1:2], plan.test[-1])
        plan = replace(plan, test=test, logreg_test=(test[0], test[-1]), curve_at=(test[0], test[len(test) // 2], test[-1]),
                       lean=True, select_seeds=(0,), lr_scales=(1.0, 0.3, 0.1))
    # The cache variable stays unquoted so that a shell expands it.
    line = f"saec evaluate --data $SAEC_CACHE/{shlex.quote(path.name)} " + " ".join(shlex.quote(p) for p in [
        "--label", flags["label"], "--categorical", flags["categorical"],
        *(["--time", flags["time"]] if "time" in flags else []), "--segments", str(segments), "--seeds", str(own.seeds)])
    return replace(plan, name=title, about=f"Read exactly as a user's own file (`training/heldout.py` writes it to the cache "
                   f"from the wheel): `{line}`. No setting of saec was chosen on this log before this run.")


def plans_from_args(args: argparse.Namespace) -> list[EvalPlan]:
    """One plan per ``--data`` value (default: :data:`DEFAULT_DATA`)."""
    plans = []
    for data in args.data or list(DEFAULT_DATA):
        if data == "ml-100k":
            plans.append(movielens_plan(args.quick, args.seeds or 3, args.k, args.min_factor, args.top_n, args.private_rows))
        elif data == "open-bandit":
            plans.append(open_bandit_plan(args.quick, args.seeds or 3, args.private_rows))
        elif data in ("ml-1m", "clothing"):
            plans.append(heldout_plan(data, args))
        elif data == "stream":
            plans.append(stream_plan(args.quick, args.stream_rows, args.seeds or 3, args.k, args.min_factor, args.top_n, args.private_rows))
        else:
            plans.append(file_plan(argparse.Namespace(**{**vars(args), "data": data})))
    target = getattr(args, "max_auc_loss", None)
    if target is not None:
        if not 0 < target < 1:
            raise ConfigError(f"--max-auc-loss expects a loss of AUC between 0 and 1, found {target}")
        plans = [replace(p, max_auc_loss=target) for p in plans]
    if args.quick:
        # One further budget is enough to draw the curve's shape in a try-out.
        plans = [replace(p, curve_budgets=(0.004,)) for p in plans]
    elif getattr(args, "lean", False):
        plans = [lean(p) for p in plans]
    return plans


def lean(plan: EvalPlan) -> EvalPlan:
    """What ``--lean`` keeps of a plan: the recommendation and the runs it is compared with
    (:attr:`EvalPlan.lean`), one tuning seed, every other test checkpoint and the last, and
    none of the sweeps and fixed-setting quantisers."""
    test = (*plan.test[:-1:2], plan.test[-1]) if len(plan.test) > 3 else plan.test
    logreg_test = None if plan.logreg_test is None else tuple(c for c in plan.logreg_test if c in test) or (test[-1],)
    return replace(plan, lean=True, tune_seeds=plan.tune_seeds[:1], select_seeds=(plan.select_seeds or plan.tune_seeds)[:1],
                   test=test, logreg_test=logreg_test, curve_at=(test[0], test[len(test) // 2], test[-1]),
                   lr_scales=plan.lr_scales[:3], k_sweep=(), k_sweep_at=None, full_at=None, per_field=False, per_field_at=None,
                   head_sweep=(), head_sweep_at=None, product=None, product_sweep=(), residual=None)


