"""Value checks on a field's arrays, vectorised over whole chunks.

Each check returns None or raises the matching :mod:`loaders.errors` class with a message
naming the file, the field and the first offending row. ``row_offset`` is the field row of
the array's first element, so a chunk's error names the row in the whole field.
"""

from __future__ import annotations

import os
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from saec.loaders.errors import (
    DuplicateIdError,
    InvalidCountError,
    LengthMismatchError,
    NonFiniteVectorError,
    UnsupportedDtypeError,
)

PathArg = str | os.PathLike[str] | None


def check_unique(ids: npt.NDArray[Any], field: str, *, path: PathArg = None) -> None:
    """Raise :class:`DuplicateIdError` if any id occurs twice in ``ids``.

    ``ids`` (n,) holds a whole field: integers, or strings/bytes (``U``, ``S`` or object
    dtype). Integers cost one sort. Strings are first hashed to uint64 a block of rows at
    a time (a loop over characters, not rows), the hashes sorted, and only rows whose hash
    repeats are compared as strings, so a field of 1e7 strings takes seconds, not the
    minutes that sorting Python strings would.
    """
    if len(ids) < 2:
        return
    suspects: npt.NDArray[np.intp] | None = None
    if ids.dtype.kind in "iu":
        keys = ids
    elif ids.dtype.kind in "USO":
        keys = _string_hashes(ids)
    else:
        raise UnsupportedDtypeError(
            f"ids: expected integers or strings, found {ids.dtype}", path=path, field=field
        )
    ordered = np.sort(keys)
    same = ordered[1:] == ordered[:-1]
    if not same.any():
        return
    if keys is not ids:
        suspects = np.flatnonzero(np.isin(keys, ordered[1:][same]))
    found = _first_repeat(ids if suspects is None else ids[suspects], field, path)
    if found is None:
        return  # equal hashes, different strings
    earlier, later, repeats = found
    if suspects is not None:
        earlier, later = int(suspects[earlier]), int(suspects[later])
    raise DuplicateIdError(
        f"expected unique ids, found id {_plain(ids[later])!r} at rows {earlier} and {later} "
        f"({repeats} of {len(ids)} rows repeat an earlier id)",
        path=path,
        field=field,
    )


def _first_repeat(ids: npt.NDArray[Any], field: str, path: PathArg) -> tuple[int, int, int] | None:
    """(earlier row, later row, rows repeating an earlier id) for the repeated id whose
    second occurrence comes first, or None if ``ids`` are unique."""
    try:
        order = np.argsort(ids, kind="stable")
    except TypeError as exc:  # an object array mixing str and int
        raise UnsupportedDtypeError(
            f"ids: expected all integers or all strings, found a mix ({exc})",
            path=path,
            field=field,
        ) from exc
    positions = np.flatnonzero(ids[order[1:]] == ids[order[:-1]])
    if len(positions) == 0:
        return None
    first = positions[np.argmin(order[positions + 1])]
    return int(order[first]), int(order[first + 1]), len(positions)


_HASH_BLOCK = 1 << 18
_FNV_OFFSET, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)


def _string_hashes(ids: npt.NDArray[Any]) -> npt.NDArray[np.uint64]:
    """A 64-bit hash per string (FNV-1a over code units, then a splitmix64 finaliser).

    Only equality matters: equal strings hash equal, and the caller compares the rare
    rows whose hashes collide. Object arrays are converted a block at a time, so the
    fixed-width copy stays small.
    """
    out = np.empty(len(ids), dtype=np.uint64)
    for start in range(0, len(ids), _HASH_BLOCK):
        block = ids[start : start + _HASH_BLOCK]
        if block.dtype.kind == "O":
            block = block.astype(str)  # bytes objects become their repr, which is injective
        unit = np.uint32 if block.dtype.kind == "U" else np.uint8
        codes = cast(
            "npt.NDArray[np.unsignedinteger[Any]]",
            np.ascontiguousarray(block).view(unit).reshape(len(block), -1),
        )
        h = np.full(len(block), _FNV_OFFSET, dtype=np.uint64)
        for column in range(codes.shape[1]):
            h ^= codes[:, column]
            h *= _FNV_PRIME
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
        out[start : start + len(block)] = h
    return out


def check_finite(
    vectors: npt.NDArray[np.floating[Any]],
    field: str,
    *,
    path: PathArg = None,
    row_offset: int = 0,
) -> None:
    """Raise :class:`NonFiniteVectorError` if ``vectors`` (n, dim) holds NaN or an infinity."""
    with np.errstate(invalid="ignore", over="ignore"):
        # A NaN or infinity makes the sum non-finite; so may an overflow of finite values,
        # which the elementwise test below then clears. Summing is the fastest full pass.
        total = vectors.sum()
    if np.isfinite(total):
        return
    bad_values = ~np.isfinite(vectors)
    bad_rows = bad_values.any(axis=1)
    if not bad_rows.any():
        return
    row = int(np.argmax(bad_rows))
    column = int(np.argmax(bad_values[row]))
    raise NonFiniteVectorError(
        f"vector at row {row_offset + row} holds {_plain(vectors[row, column])} (column {column}); "
        f"expected finite values ({int(bad_rows.sum())} non-finite vectors in rows "
        f"{row_offset}..{row_offset + len(vectors) - 1})",
        path=path,
        field=field,
    )


def check_counts(
    counts: npt.NDArray[np.integer[Any]],
    field: str,
    *,
    path: PathArg = None,
    row_offset: int = 0,
) -> None:
    """Raise :class:`InvalidCountError` if ``counts`` (n,) holds a negative value."""
    if len(counts) == 0 or counts.dtype.kind == "u" or counts.min() >= 0:
        return
    row = int(np.argmax(counts < 0))
    raise InvalidCountError(
        f"count at row {row_offset + row} is {_plain(counts[row])}; expected a frequency >= 0",
        path=path,
        field=field,
    )


def check_lengths(
    ids: int,
    vectors: int,
    counts: int | None,
    field: str,
    *,
    path: PathArg = None,
    ids_name: str = "ids",
    vectors_name: str = "vectors",
    counts_name: str = "counts",
) -> None:
    """Raise :class:`LengthMismatchError` unless ids, vectors and counts have equal lengths.

    The ``*_name`` arguments say where each came from (an array key, a column, a tensor).
    """
    if ids != vectors:
        raise LengthMismatchError(
            f"expected one id per vector, found {ids} ids in {ids_name!r} "
            f"and {vectors} vectors in {vectors_name!r}",
            path=path,
            field=field,
        )
    if counts is not None and counts != vectors:
        raise LengthMismatchError(
            f"expected one count per vector, found {counts} counts in {counts_name!r} "
            f"and {vectors} vectors in {vectors_name!r}",
            path=path,
            field=field,
        )


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds, so messages read ``5``, not ``np.int64(5)``."""
    return value.item() if isinstance(value, np.generic) else value
