"""What the evaluation of one data set produced: the report's input.

The runner (:mod:`training.evaluate`) fills these; the report (:mod:`training.report`)
reads them and never imports the runner.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from saec.training.model import ModelConfig
from saec.training.plans import EvalPlan
from saec.training.protocol import Outcome
from saec.training.recommend import Recommendation
from saec.training.variants import CompressSettings


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
    publish_product: PublishCheck | None = None
    publish_residual: PublishCheck | None = None
    threshold_coverage: float | None = None
    grid_growth: list[str] = field(default_factory=list)
    recommendation: Recommendation | None = None


def slug(name: str) -> str:
    """A file-name-safe form of a data set name: lower case, runs of other characters as one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def span(cs: Sequence[int]) -> str:
    """``"3-9"`` for several checkpoints, ``"3"`` for one."""
    return f"{min(cs)}-{max(cs)}" if len(cs) > 1 else str(cs[0])
