"""The paper's protocol (sections 2.1 and 3.2) over one click log and one seed.

Segments are fed in time order, one segment's worth of training each (``passes`` passes,
1 in the paper). At each checkpoint ``c`` the baseline has trained on segments ``< c``:

1. the baseline is evaluated on segment ``c``, which no model has seen ("before");
2. each variant shrinks a copy of it (:mod:`training.variants`; Saec compresses every
   large field through :func:`compress.compress_field`);
3. the copy is retrained on segment ``c - 1``, the last one trained on (codebooks with
   gradient averaging plus the dense layers), and evaluated on segment ``c`` ("after").

The baseline itself goes on training uncompressed, as in the paper's Figure 2 where the
compressed model is a by-product of each hour's training. Features a model has not seen by
its checkpoint read as the zero vector in every model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from saec.training import logreg, memory
from saec.training.data import ClickLog
from saec.training.memory import Bytes
from saec.training.model import ModelConfig
from saec.training.trainer import Metrics, Trainer, live_at
from saec.training.variants import (
    Built,
    CompressSettings,
    FieldOutcome,
    Footprint,
    Variant,
    build,
    hashed_from_scratch,
    uncompressed,
)

HASH_SCRATCH = "hash (k rows, from scratch)"
LOGREG = "logistic regression (one-hot)"


@dataclass
class Outcome:
    """One model evaluated at one checkpoint.

    Attributes:
        method: variant name, "baseline", :data:`HASH_SCRATCH` or :data:`LOGREG`.
        checkpoint: evaluation segment ``c``.
        seed: run seed.
        metrics: AUC and log loss on segment ``c``.
        vectors: embedding vectors stored (all fields).
        features: features seen so far (all fields), i.e. the uncompressed vector count.
        bytes_before: bytes of the uncompressed tables.
        bytes_after: bytes of this model's tables.
        clustering_seconds: time spent in :func:`compress.compress_field` (Saec only).
        fields: per-field detail.
    """

    method: str
    checkpoint: int
    seed: int
    metrics: Metrics
    vectors: int = 0
    features: int = 0
    bytes_before: Bytes = Bytes(0, 0)
    bytes_after: Bytes = Bytes(0, 0)
    clustering_seconds: float = 0.0
    fields: list[FieldOutcome] = field(default_factory=list)


@dataclass(frozen=True)
class RunPlan:
    """What one run over a log does.

    Attributes:
        config: model hyper-parameters (tuned).
        settings: Saec's k, min_factor and top_n.
        checkpoints: evaluation segments, ascending, each >= 1.
        variants: the variants built at every checkpoint.
        hash_scratch: also train a hashed model from scratch alongside the baseline; its
            extra pass at each checkpoint runs at ``lr * hash_scratch_lr_scale``.
        logreg_c: fit the one-hot logistic regression with this ``C`` at each checkpoint
            (None: skip).
        logreg_at: restrict the logistic regression to these checkpoints (None: all).
        logreg_tol: its L-BFGS tolerance.
        variants_at: restrict some variants to some checkpoints (name -> checkpoints),
            for the costly ones (full clustering, large k).
    """

    config: ModelConfig
    settings: CompressSettings
    checkpoints: tuple[int, ...]
    variants: tuple[Variant, ...] = ()
    hash_scratch: bool = False
    hash_scratch_lr_scale: float = 1.0
    logreg_c: float | None = None
    logreg_at: tuple[int, ...] | None = None
    logreg_tol: float = 1e-6
    variants_at: dict[str, tuple[int, ...]] = field(default_factory=dict)


Progress = Callable[[str], None]


def run(log: ClickLog, plan: RunPlan, seed: int, progress: Progress | None = None, keep: Callable[[str, int, Built], None] | None = None) -> list[Outcome]:
    """Run the protocol once; returns one :class:`Outcome` per model and checkpoint.

    Args:
        log: the click log.
        plan: what to evaluate.
        seed: seeds model initialisation, shuffling and k-means.
        progress: called with a short line after each checkpoint.
        keep: called with ``(variant name, checkpoint, built)`` after each retraining, for
            callers that want the retrained model (publishing).
    """
    say = progress or (lambda _msg: None)
    checkpoints = sorted(set(plan.checkpoints))
    if not checkpoints or checkpoints[0] < 1 or checkpoints[-1] >= log.n_segments:
        raise ValueError(f"checkpoints must lie in [1, {log.n_segments - 1}], found {checkpoints}")
    settings = dataclasses.replace(plan.settings, seed=seed)
    sizes = [f.size + 1 for f in log.fields]
    base = Trainer.new(sizes, plan.config, seed)
    scratch = hashed_from_scratch(log, plan.config, settings, seed) if plan.hash_scratch else None
    out: list[Outcome] = []
    for s in range(checkpoints[-1]):
        base.train_segment(log, s)
        if scratch is not None:
            scratch.train_segment(log, s)
        c = s + 1
        if c not in checkpoints:
            continue
        live = live_at(log, c)
        before = base.evaluate(log, c, live)
        dense = uncompressed(log, c, plan.config.dim)
        out.append(_outcome("baseline", c, seed, before, dense))
        for v in plan.variants:
            if v.name in plan.variants_at and c not in plan.variants_at[v.name]:
                continue
            built = build(v, base, log, c, settings)
            if v.retrain:
                built.trainer.train_segment(log, s)
            built.as_stored()
            m = built.trainer.evaluate(log, c, live)
            out.append(_outcome(v.name, c, seed, m, built.footprint))
            if keep is not None:
                keep(v.name, c, built)
        if scratch is not None:
            out.append(_scratch_outcome(scratch, log, s, c, seed, settings, dense, plan.hash_scratch_lr_scale))
        if plan.logreg_c is not None and (plan.logreg_at is None or c in plan.logreg_at):
            out.append(_outcome(LOGREG, c, seed, logreg.evaluate_at(log, c, plan.logreg_c, plan.logreg_tol), dense))
        say(f"seed {seed}, segment {c}: baseline AUC {before.auc:.4f}, {sum(o.checkpoint == c for o in out)} models evaluated")
    return out


def _outcome(method: str, c: int, seed: int, m: Metrics, fp: Footprint) -> Outcome:
    return Outcome(method, c, seed, m, fp.vectors_after, fp.vectors_before, fp.before, fp.after, fp.clustering_seconds, fp.fields)


def _scratch_outcome(scratch: Trainer, log: ClickLog, s: int, c: int, seed: int, settings: CompressSettings, dense: Footprint, lr_scale: float) -> Outcome:
    """The from-scratch hashed model after the same extra pass the other variants get."""
    dim = scratch.model.config.dim
    extra = scratch.copy().scale_lr(lr_scale)
    extra.train_segment(log, s)
    m = extra.evaluate(log, c, live_at(log, c))
    fields = []
    for f, fo in enumerate(dense.fields):
        hashed = log.fields[f].size >= settings.min_rows
        rows = settings.k if hashed else fo.features
        fields.append(FieldOutcome(fo.name, fo.features, rows, fo.before, memory.hashed(rows, dim) if hashed else fo.before, hashed))
    return _outcome(HASH_SCRATCH, c, seed, m, Footprint(fields))


def checkpoints_between(first: int, last: int, every: int = 1) -> tuple[int, ...]:
    """Evaluation segments ``first, first + every, ..., <= last``."""
    return tuple(range(first, last + 1, every))


def select(outcomes: Sequence[Outcome], method: str) -> list[Outcome]:
    """The outcomes of one method, in checkpoint then seed order."""
    return sorted((o for o in outcomes if o.method == method), key=lambda o: (o.checkpoint, o.seed))
