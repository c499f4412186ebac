"""The reference CTR model: per-field embeddings, concatenated, fully connected layers, sigmoid.

This is the shape of the paper's modified DSSM (section 3.1: "the embedding matrix and
multiple fully-connected layers"), trained with Adagrad. A multi-valued field (a bag of
features, e.g. a film's genres) contributes the mean of its features' vectors.

With ``wide`` (the default) the model also has the first-order "wide" term of Wide & Deep
and DeepFM: the last of each feature's ``dim`` values is its own weight, added straight to
the logit, and the fully connected layers read the other ``dim - 1``. The weight rides in
the embedding row, so every compression method stores it (and is charged for it) like any
other value of the row, and a served vector carries it for the ranking service to add.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from saec.training.embedding import dense_embedding


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of the reference model and its training.

    Attributes:
        dim: embedding length of every field.
        hidden: widths of the hidden fully connected layers (ReLU).
        lr: Adagrad learning rate (embeddings and dense layers alike, as in the paper).
        passes: passes over each segment (the paper uses 1).
        batch: rows per step.
        wide: the last value of every embedding row is a first-order weight added to the
            logit (module docstring); false: the whole row feeds the fully connected layers.
    """

    dim: int = 16
    hidden: tuple[int, ...] = (64, 32)
    lr: float = 0.05
    passes: int = 1
    batch: int = 256
    wide: bool = True


class CTRModel(nn.Module):
    """Click-through-rate model over categorical fields.

    Args:
        sizes: ``V + 1`` rows per field (code 0 is the zero "no feature" row).
        config: model hyper-parameters.
    """

    def __init__(self, sizes: Sequence[int], config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        # A ModuleList, not a ModuleDict: field names from a user's CSV may contain dots.
        self.fields = nn.ModuleList([dense_embedding(int(n), config.dim) for n in sizes])
        layers: list[nn.Module] = []
        if config.wide and config.dim < 2:
            raise ValueError(f"a wide model needs dim >= 2 (one value for the first-order weight), found dim={config.dim}")
        width = len(sizes) * (config.dim - 1 if config.wide else config.dim)
        for h in config.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, codes: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits, float32 ``(B,)``, from one int64 ``(B, width_f)`` code tensor per field."""
        parts = []
        for module, c in zip(self.fields, codes, strict=True):
            v = module(c)
            if c.shape[1] == 1:
                parts.append(v[:, 0])
            else:
                n = (c > 0).sum(dim=1, keepdim=True).clamp(min=1).to(v.dtype)
                parts.append(v.sum(dim=1) / n)
        rows = torch.stack(parts, dim=1)  # (B, fields, dim)
        if not self.config.wide:
            return self.mlp(rows.flatten(1)).squeeze(1)
        return self.mlp(rows[:, :, :-1].flatten(1)).squeeze(1) + rows[:, :, -1].sum(dim=1)

    def dense_parameters(self) -> list[nn.Parameter]:
        """The fully connected layers' parameters (never compressed)."""
        return list(self.mlp.parameters())


def batch_codes(fields: Sequence[npt.NDArray[np.int64]], rows: npt.NDArray[np.int64], live: Sequence[int] | None = None) -> list[torch.Tensor]:
    """Code tensors for ``rows``; codes above ``live[f]`` (not seen yet) read as 0.

    Args:
        fields: one int64 ``(n, width_f)`` code array per field.
        rows: int64 ``(B,)`` row numbers.
        live: per field, the largest code the model has seen; None keeps every code.
    """
    out = []
    for f, codes in enumerate(fields):
        c = codes[rows]
        if live is not None:
            c = np.where(c <= live[f], c, 0)
        out.append(torch.from_numpy(c))
    return out
