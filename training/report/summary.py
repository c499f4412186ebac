"""One method's outcomes over seeds and checkpoints, paired with the fair control.

Every AUC difference is paired: a model against the reference model of the same seed and
checkpoint, averaged over the checkpoints of a seed, then mean and standard deviation over
seeds. The headline reference is "baseline + retraining pass" (the uncompressed model given
the same extra training every compressed model gets); the plain baseline is kept as a
second column.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from saec.training.methods import BASELINE, CONTROL
from saec.training.protocol import Outcome

TARGET_AUC_LOSS = 0.001
# Below this reduction (paper accounting) a method has not compressed anything worth a
# claim: a ratio of 1.2x says more about the small fields than about the method.
MIN_RATIO = 1.5


@dataclasses.dataclass
class Summary:
    """One method over seeds and checkpoints.

    AUC / log loss are means over every (seed, checkpoint). ``d_auc`` is the paired
    difference to "baseline + retraining pass" and ``d_auc_std`` its standard deviation
    over seeds; ``d_auc_baseline`` is the paired difference to the baseline without the
    extra pass. Memory is at the last checkpoint the method was evaluated on.
    """

    method: str
    n: int
    seeds: int
    checkpoints: tuple[int, ...]
    auc: float
    logloss: float
    d_auc: float | None
    d_auc_std: float
    d_logloss: float | None
    d_auc_baseline: float
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

    @property
    def headline(self) -> float:
        """ΔAUC against the fair control, or against the baseline when no control ran."""
        return self.d_auc if self.d_auc is not None else self.d_auc_baseline


def _paired_by_seed(mine: Sequence[Outcome], ref: dict[tuple[int, int], Outcome], metric: str) -> list[float]:
    """Per seed, the mean over its checkpoints of ``metric`` minus the reference's."""
    per_seed: dict[int, list[float]] = defaultdict(list)
    for o in mine:
        r = ref.get((o.seed, o.checkpoint))
        if r is not None:
            per_seed[o.seed].append(getattr(o.metrics, metric) - getattr(r.metrics, metric))
    return [float(np.mean(v)) for v in per_seed.values()]


def summarise(outcomes: Sequence[Outcome], method: str) -> Summary | None:
    """A :class:`Summary` of ``method``, or None when it was not run."""
    mine = [o for o in outcomes if o.method == method]
    if not mine:
        return None
    base = {(o.seed, o.checkpoint): o for o in outcomes if o.method == BASELINE}
    control = {(o.seed, o.checkpoint): o for o in outcomes if o.method == CONTROL}
    fair = _paired_by_seed(mine, control, "auc")
    fair_ll = _paired_by_seed(mine, control, "logloss")
    last = max(mine, key=lambda o: (o.checkpoint, -o.seed))
    at_last = [o for o in mine if o.checkpoint == last.checkpoint]
    return Summary(
        method=method, n=len(mine), seeds=len({o.seed for o in mine}),
        checkpoints=tuple(sorted({o.checkpoint for o in mine})),
        auc=mean(mine, "auc"), logloss=mean(mine, "logloss"),
        d_auc=float(np.mean(fair)) if fair else None,
        d_auc_std=float(np.std(fair, ddof=1)) if len(fair) > 1 else 0.0,
        d_logloss=float(np.mean(fair_ll)) if fair_ll else None,
        d_auc_baseline=float(np.mean(_paired_by_seed(mine, base, "auc") or [0.0])),
        vectors=last.vectors, features=last.features,
        bytes_keyed=last.bytes_after.keyed, bytes_paper=last.bytes_after.paper,
        before_keyed=last.bytes_before.keyed, before_paper=last.bytes_before.paper,
        clustering_seconds=float(np.mean([o.clustering_seconds for o in at_last])), checkpoint=last.checkpoint,
    )


def per_checkpoint(outcomes: Sequence[Outcome], method: str) -> dict[int, list[Outcome]]:
    """The outcomes of ``method`` by checkpoint, ascending."""
    out: dict[int, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        if o.method == method:
            out[o.checkpoint].append(o)
    return dict(sorted(out.items()))


def paired(outcomes: Sequence[Outcome], a: str, b: str) -> list[float]:
    """AUC of ``a`` minus AUC of ``b`` for every (seed, checkpoint) both ran at."""
    other = {(o.seed, o.checkpoint): o for o in outcomes if o.method == b}
    return [o.metrics.auc - other[(o.seed, o.checkpoint)].metrics.auc for o in outcomes if o.method == a and (o.seed, o.checkpoint) in other]


def at_checkpoints(outcomes: Sequence[Outcome], checkpoints: Sequence[int]) -> list[Outcome]:
    """The outcomes at ``checkpoints`` only."""
    keep = set(checkpoints)
    return [o for o in outcomes if o.checkpoint in keep]


def uncompressed_checkpoints(outcomes: Sequence[Outcome], method: str) -> list[int]:
    """Checkpoints where ``method`` compressed no field, or reached less than :data:`MIN_RATIO`."""
    out = []
    for c, outs in per_checkpoint(outcomes, method).items():
        o = outs[0]
        ratio = o.bytes_before.paper / max(o.bytes_after.paper, 1)
        if not any(f.compressed for f in o.fields) or ratio < MIN_RATIO:
            out.append(c)
    return out


def mean(outcomes: Sequence[Outcome], metric: str) -> float:
    """Mean of ``metric`` ("auc" or "logloss") over ``outcomes``."""
    return float(np.mean([getattr(o.metrics, metric) for o in outcomes]))
