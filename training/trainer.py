"""One model with its Adagrad optimiser: a pass over rows, predictions, metrics, copies.

The paper trains "each hour's data ... just once in one epoch" with Adagrad; a
:class:`Trainer` does exactly that over a segment of a :class:`training.data.ClickLog`
(rows shuffled inside the segment, never across segments, so no future row is seen).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from sklearn.metrics import log_loss, roc_auc_score
from torch import nn

from saec.training.data import ClickLog
from saec.training.model import CTRModel, ModelConfig, batch_codes

# Sparse embedding gradients make torch warn until invariant checks are chosen explicitly.
# They are off by default; saying so keeps that default and silences the warning, which
# the test suite would otherwise turn into an error.
torch.sparse.check_sparse_tensor_invariants.disable()

_PREDICT_BATCH = 65536


@dataclass(frozen=True)
class Metrics:
    """AUC and log loss of predictions on one segment."""

    auc: float
    logloss: float
    rows: int


def metrics(labels: npt.NDArray[np.float32], probs: npt.NDArray[np.float64]) -> Metrics:
    """AUC and log loss (scikit-learn) of float64 ``(n,)`` probabilities against 0/1 labels."""
    return Metrics(float(roc_auc_score(labels, probs)), float(log_loss(labels, probs, labels=[0.0, 1.0])), len(labels))


def adagrad(params: Sequence[torch.Tensor], lr: float, sums: Sequence[torch.Tensor | None] | None = None) -> torch.optim.Adagrad:
    """Adagrad over ``params``, with each parameter's squared-gradient sum preset when given.

    Carrying the sums over is what keeps retraining from restarting Adagrad at full step
    size: a fresh accumulator makes the first step ``lr`` per coordinate whatever the
    gradient, which would throw every centroid away from the vector it was clustered to.
    """
    opt = torch.optim.Adagrad(list(params), lr=lr)
    for p, s in zip(params, sums or [None] * len(params), strict=True):
        if s is not None:
            opt.state[p]["sum"].copy_(s)
    return opt


class Trainer:
    """A :class:`CTRModel` and the optimiser that trains it.

    Args:
        model: the model.
        optimizer: Adagrad over the model's trainable parameters.
        seed: seeds the shuffling of rows inside each segment.
    """

    def __init__(self, model: CTRModel, optimizer: torch.optim.Optimizer, seed: int) -> None:
        self.model = model
        self.optimizer = optimizer
        self.rng = np.random.default_rng(seed)

    @classmethod
    def new(cls, sizes: Sequence[int], config: ModelConfig, seed: int) -> Trainer:
        """A freshly initialised model (``torch.manual_seed(seed)``) with one row per code."""
        torch.manual_seed(seed)
        model = CTRModel(sizes, config)
        return cls(model, adagrad(list(model.parameters()), config.lr), seed)

    def state_sum(self, p: nn.Parameter) -> torch.Tensor:
        """Adagrad's squared-gradient sum of ``p`` (same shape as ``p``)."""
        return self.optimizer.state[p]["sum"]

    def copy(self) -> Trainer:
        """An independent copy: model, optimiser state and shuffling generator."""
        model = copy.deepcopy(self.model)
        params = [p for p in model.parameters() if p.requires_grad]
        old = [p for p in self.model.parameters() if p.requires_grad]
        opt = adagrad(params, self.model.config.lr, [self.state_sum(p) for p in old])
        out = Trainer(model, opt, 0)
        out.rng = copy.deepcopy(self.rng)
        return out

    def scale_lr(self, scale: float) -> Trainer:
        """Set every parameter group's learning rate to ``config.lr * scale``; returns self."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.model.config.lr * scale
        return self

    def train_rows(self, log: ClickLog, rows: npt.NDArray[np.int64], passes: int | None = None) -> float:
        """Train over ``rows`` (shuffled each pass); returns the mean training log loss."""
        cfg = self.model.config
        codes = [f.codes for f in log.fields]
        labels = torch.from_numpy(log.labels)
        self.model.train()
        total, seen = 0.0, 0
        for _ in range(passes or cfg.passes):
            order = rows[self.rng.permutation(len(rows))]
            for start in range(0, len(order), cfg.batch):
                b = order[start : start + cfg.batch]
                logits = self.model(batch_codes(codes, b))
                loss = nn.functional.binary_cross_entropy_with_logits(logits, labels[b])
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                total += loss.item() * len(b)
                seen += len(b)
        return total / max(seen, 1)

    def train_segment(self, log: ClickLog, s: int, passes: int | None = None) -> float:
        """One segment's worth of training (``config.passes`` passes unless given)."""
        sl = log.segment(s)
        return self.train_rows(log, np.arange(sl.start, sl.stop, dtype=np.int64), passes)

    @torch.no_grad()
    def predict(self, log: ClickLog, rows: npt.NDArray[np.int64], live: Sequence[int]) -> npt.NDArray[np.float64]:
        """float64 ``(len(rows),)`` click probabilities; codes above ``live`` read as unseen."""
        self.model.eval()
        codes = [f.codes for f in log.fields]
        out = [torch.sigmoid(self.model(batch_codes(codes, rows[i : i + _PREDICT_BATCH], live))) for i in range(0, len(rows), _PREDICT_BATCH)]
        return torch.cat(out).double().numpy()

    def evaluate(self, log: ClickLog, s: int, live: Sequence[int]) -> Metrics:
        """Metrics on segment ``s`` for a model that has seen the features ``1..live[f]``."""
        sl = log.segment(s)
        rows = np.arange(sl.start, sl.stop, dtype=np.int64)
        return metrics(log.labels[rows], self.predict(log, rows, live))


def live_at(log: ClickLog, s: int) -> list[int]:
    """Per field, the features seen in segments ``< s`` (what a model trained up to ``s`` knows)."""
    return [int(log.live(f)[s]) for f in range(len(log.fields))]
