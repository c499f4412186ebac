"""What a loader hands on: a field's description and its rows, a bounded chunk at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from saec.loaders.errors import LengthMismatchError, ShapeError, UnsupportedDtypeError

#: Rows per chunk unless the caller says otherwise: 256 MB of float32 vectors at dim 64.
DEFAULT_CHUNK_ROWS = 1_000_000


@dataclass(frozen=True)
class FieldInfo:
    """One field of a table, known without reading its vectors.

    ``name`` is the field's name as saec knows it (the spec's name, which may differ from
    the name inside the file); ``dim`` the length of its vectors; ``rows`` the number of
    features, or None where the format cannot tell without a full read; ``has_counts``
    whether the field carries feature counts (frequencies).
    """

    name: str
    dim: int
    rows: int | None
    has_counts: bool = False


@dataclass(frozen=True, eq=False)
class FieldChunk:
    """Consecutive rows of one field, aligned row for row.

    Attributes:
        field: the field's name.
        ids: feature ids, shape (n,): int64 or uint64 integers, or strings (numpy ``U``
            or object dtype holding ``str``) or bytes (``S`` dtype), as the file holds them.
        vectors: float32, shape (n, dim), C-contiguous.
        counts: int64, shape (n,), non-negative feature frequencies; None when the
            table carries none.

    Construction checks shapes and dtypes, which costs nothing; value checks (finite
    vectors, non-negative counts, unique ids) are the loaders' job.
    """

    field: str
    ids: npt.NDArray[Any]
    vectors: npt.NDArray[np.float32]
    counts: npt.NDArray[np.int64] | None = None

    def __post_init__(self) -> None:
        if self.ids.ndim != 1:
            raise ShapeError(f"ids: expected shape (n,), found {self.ids.shape}", field=self.field)
        if self.vectors.ndim != 2:
            raise ShapeError(
                f"vectors: expected shape (n, dim), found {self.vectors.shape}", field=self.field
            )
        if self.vectors.dtype != np.float32 or not self.vectors.flags.c_contiguous:
            raise UnsupportedDtypeError(
                "vectors: expected C-contiguous float32, found "
                + ("" if self.vectors.flags.c_contiguous else "non-contiguous ")
                + str(self.vectors.dtype),
                field=self.field,
            )
        if len(self.ids) != len(self.vectors):
            raise LengthMismatchError(
                f"expected as many ids as vectors, found {len(self.ids)} ids "
                f"and {len(self.vectors)} vectors",
                field=self.field,
            )
        if self.counts is not None:
            if self.counts.dtype != np.int64:
                raise UnsupportedDtypeError(
                    f"counts: expected int64, found {self.counts.dtype}", field=self.field
                )
            if self.counts.shape != self.ids.shape:
                raise LengthMismatchError(
                    f"counts: expected shape {self.ids.shape} (one per id), "
                    f"found {self.counts.shape}",
                    field=self.field,
                )

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        """The length of the vectors."""
        return int(self.vectors.shape[1])

    def rows(self, start: int, stop: int) -> FieldChunk:
        """Rows ``start:stop`` of this chunk, as views of its arrays."""
        return FieldChunk(
            self.field,
            self.ids[start:stop],
            self.vectors[start:stop],
            None if self.counts is None else self.counts[start:stop],
        )


def concat_chunks(chunks: list[FieldChunk]) -> FieldChunk:
    """One chunk holding the rows of ``chunks`` (all of one field) in order."""
    if len(chunks) == 1:
        return chunks[0]
    counts = [c.counts for c in chunks if c.counts is not None]
    return FieldChunk(
        chunks[0].field,
        np.concatenate([c.ids for c in chunks]),
        np.concatenate([c.vectors for c in chunks]),
        np.concatenate(counts) if counts else None,
    )
