"""Bring the arrays a file holds to the dtypes a :class:`FieldChunk` promises.

The ``check_*_dtype`` functions run once per field on the dtype the file declares, so a
wrong dtype fails before any row is read; the ``as_*`` functions run on every chunk and
return arrays that own their memory (never a view of a memory-mapped file).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from saec.loaders.checks import PathArg, check_counts
from saec.loaders.errors import InvalidCountError, UnsupportedDtypeError

_INT64_MAX = np.iinfo(np.int64).max


def check_ids_dtype(dtype: np.dtype[Any], *, path: PathArg, field: str, source: str) -> None:
    """Accept integer, string (``U``), bytes (``S``) and object ids; refuse the rest."""
    if dtype.kind not in "iuUSO":
        raise UnsupportedDtypeError(
            f"ids in {source!r}: expected integers or strings, found {dtype}",
            path=path,
            field=field,
        )


def check_vectors_dtype(dtype: np.dtype[Any], *, path: PathArg, field: str, source: str) -> None:
    """Accept floating-point vectors of any width; refuse the rest."""
    if dtype.kind != "f":
        raise UnsupportedDtypeError(
            f"vectors in {source!r}: expected floating point, found {dtype}",
            path=path,
            field=field,
        )


def check_counts_dtype(dtype: np.dtype[Any], *, path: PathArg, field: str, source: str) -> None:
    """Accept integer counts, and floats that hold whole numbers (checked per chunk)."""
    if dtype.kind not in "iuf":
        raise UnsupportedDtypeError(
            f"counts in {source!r}: expected integers, found {dtype}",
            path=path,
            field=field,
        )


def as_ids(ids: npt.NDArray[Any], *, path: PathArg, field: str, source: str) -> npt.NDArray[Any]:
    """(n,) ids as int64 (signed, or unsigned below 64 bits), uint64, or their string dtype."""
    check_ids_dtype(ids.dtype, path=path, field=field, source=source)
    if ids.dtype.kind == "i" or (ids.dtype.kind == "u" and ids.dtype.itemsize < 8):
        return np.array(ids, dtype=np.int64)
    if ids.dtype.kind == "u":
        return np.array(ids, dtype=np.uint64)
    return np.array(ids)


def as_vectors(
    vectors: npt.NDArray[Any], *, path: PathArg, field: str, source: str
) -> npt.NDArray[np.float32]:
    """(n, dim) vectors as a C-contiguous float32 copy.

    float64 values beyond float32's range become infinities, which the finite check then
    reports with their row.
    """
    check_vectors_dtype(vectors.dtype, path=path, field=field, source=source)
    with np.errstate(over="ignore"):
        return np.array(vectors, dtype=np.float32, order="C")


def as_counts(
    counts: npt.NDArray[Any], *, path: PathArg, field: str, source: str, row_offset: int
) -> npt.NDArray[np.int64]:
    """(n,) counts as int64 >= 0; float counts must hold whole numbers."""
    check_counts_dtype(counts.dtype, path=path, field=field, source=source)
    kind = counts.dtype.kind
    bad: npt.NDArray[np.bool_] | None = None
    if kind == "u" and counts.dtype.itemsize == 8:
        bad = counts > _INT64_MAX
    elif kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(counts) | (counts != np.floor(counts)) | (counts >= 2.0**63)
    if bad is not None and bad.any():
        row = int(np.argmax(bad))
        raise InvalidCountError(
            f"count at row {row_offset + row} in {source!r} is {counts[row].item()}; "
            "expected a whole number between 0 and 2**63 - 1",
            path=path,
            field=field,
        )
    result = np.array(counts, dtype=np.int64)
    check_counts(result, field, path=path, row_offset=row_offset)
    return result
