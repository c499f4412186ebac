"""Readers for formats that store each field as whole arrays read by row range.

npy, npz and PyTorch state dicts all keep a field as separate arrays (ids, vectors,
counts) whose rows can be sliced without reading the rest; :class:`RowRangeTable` turns
such arrays into pieces of ``chunk_rows`` rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from saec.loaders._coerce import check_counts_dtype, check_ids_dtype, check_vectors_dtype
from saec.loaders.checks import check_lengths
from saec.loaders.chunk import FieldInfo
from saec.loaders.errors import ShapeError
from saec.loaders.source import Piece, ResolvedField, TableSource
from saec.loaders.spec import FieldSpec


class RowReader(Protocol):
    """One array of a file, read a row range at a time.

    ``name`` says where it lives (an array key, a tensor key), for messages; ``shape`` and
    ``dtype`` are the array's as declared, known without reading the rows.
    """

    @property
    def name(self) -> str: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype[Any]: ...

    def read(self, start: int, stop: int) -> npt.NDArray[Any]:
        """Rows ``start:stop``; may be a view of a memory map (the caller copies)."""
        ...


@dataclass(frozen=True)
class ArrayRows:
    """An in-memory or memory-mapped numpy array."""

    name: str
    array: npt.NDArray[Any]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.array.dtype

    def read(self, start: int, stop: int) -> npt.NDArray[Any]:
        return self.array[start:stop]


@dataclass(frozen=True)
class RowNumbers:
    """Ids that are the row numbers 0..n-1 (int64), as for an ``nn.Embedding`` weight."""

    name: str
    rows: int

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.rows,)

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(np.int64)

    def read(self, start: int, stop: int) -> npt.NDArray[Any]:
        return np.arange(start, min(stop, self.rows), dtype=np.int64)


@dataclass(frozen=True)
class RowArrays:
    """Where a field's rows are: its ids, vectors and (optional) counts."""

    ids: RowReader
    vectors: RowReader
    counts: RowReader | None


class RowRangeTable(TableSource[RowArrays]):
    """A table whose fields are whole arrays sliced by row range."""

    def _iter_pieces(self, resolved: ResolvedField[RowArrays], chunk_rows: int) -> Iterator[Piece]:
        arrays = resolved.locator
        rows = resolved.info.rows or 0
        for start in range(0, rows, chunk_rows):
            stop = min(rows, start + chunk_rows)
            yield Piece(
                arrays.ids.read(start, stop),
                arrays.vectors.read(start, stop),
                None if arrays.counts is None else arrays.counts.read(start, stop),
            )

    def _iter_ids(
        self, resolved: ResolvedField[RowArrays], chunk_rows: int
    ) -> Iterator[npt.NDArray[Any]]:
        rows = resolved.info.rows or 0
        for start in range(0, rows, chunk_rows):
            yield resolved.locator.ids.read(start, min(rows, start + chunk_rows))

    def _field_of(self, spec: FieldSpec, arrays: RowArrays) -> ResolvedField[RowArrays]:
        """Check the arrays' declared shapes, dtypes and lengths; describe the field."""
        path, name = self.path, spec.name
        ids, vectors, counts = arrays.ids, arrays.vectors, arrays.counts
        if len(vectors.shape) != 2 or math.prod(vectors.shape[1:]) == 0:
            raise ShapeError(
                f"vectors in {vectors.name!r}: expected shape (n, dim) with dim >= 1, "
                f"found {vectors.shape}",
                path=path,
                field=name,
            )
        check_vectors_dtype(vectors.dtype, path=path, field=name, source=vectors.name)
        if len(ids.shape) != 1:
            raise ShapeError(
                f"ids in {ids.name!r}: expected shape (n,), found {ids.shape}",
                path=path,
                field=name,
            )
        check_ids_dtype(ids.dtype, path=path, field=name, source=ids.name)
        if counts is not None:
            if len(counts.shape) != 1:
                raise ShapeError(
                    f"counts in {counts.name!r}: expected shape (n,), found {counts.shape}",
                    path=path,
                    field=name,
                )
            check_counts_dtype(counts.dtype, path=path, field=name, source=counts.name)
        check_lengths(
            ids.shape[0],
            vectors.shape[0],
            None if counts is None else counts.shape[0],
            name,
            path=path,
            ids_name=ids.name,
            vectors_name=vectors.name,
            counts_name="counts" if counts is None else counts.name,
        )
        info = FieldInfo(name, int(vectors.shape[1]), int(vectors.shape[0]), counts is not None)
        return ResolvedField(
            info, spec, arrays, (ids.name, vectors.name, None if counts is None else counts.name)
        )
