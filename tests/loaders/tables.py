"""Small embedding tables for the loader tests, with known values."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, eq=False)
class FieldData:
    """What a test writes for one field: ids (n,), float32 vectors (n, dim), counts (n,) or None."""

    ids: npt.NDArray[Any]
    vectors: npt.NDArray[np.float32]
    counts: npt.NDArray[np.int64] | None

    def with_(self, **changes: Any) -> FieldData:
        return replace(self, **changes)


def make_field(
    rows: int,
    dim: int,
    *,
    seed: int,
    counts: bool = True,
    string_ids: bool = False,
) -> FieldData:
    """Unique shuffled ids (int64 from a sparse range, or ``U`` strings), normal vectors,
    heavy-tailed counts, all fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    ids: npt.NDArray[Any] = rng.choice(10 * rows + 10, size=rows, replace=False) + 10**12
    if string_ids:
        ids = np.char.add("feat-", ids.astype(str))
    vectors = rng.standard_normal((rows, dim)).astype(np.float32)
    freq = (rng.pareto(1.2, rows) * 10).astype(np.int64) if counts else None
    return FieldData(ids, vectors, freq)


def make_table(
    dims: dict[str, int],
    rows: dict[str, int],
    *,
    counts: bool = True,
    string_ids: bool = False,
) -> dict[str, FieldData]:
    return {
        name: make_field(rows[name], dim, seed=i, counts=counts, string_ids=string_ids)
        for i, (name, dim) in enumerate(dims.items())
    }
