"""Checks on what callers hand to the compression package.

Every public entry point validates its input here once, so the numeric code can
assume float32, 2-D, finite vectors and sane parameters.
"""

from __future__ import annotations

import numbers

import numpy as np
import numpy.typing as npt

from saec.compress.errors import (
    InputDtypeError,
    InputShapeError,
    InvalidCountsError,
    InvalidParameterError,
    NonFiniteError,
)

# np.isfinite over a whole table would allocate n * dim bytes at once.
_CHECK_ROWS = 1 << 16


def where(field: str) -> str:
    """How a message names the input: ``field 'user'``, or ``input`` without a name."""
    return f"field {field!r}" if field else "input"


def vectors(x: object, field: str, name: str = "vectors") -> npt.NDArray[np.float32]:
    """Return ``x`` itself once it is a finite float32 (n, dim) array, dim >= 1."""
    if not isinstance(x, np.ndarray):
        raise InputDtypeError(
            f"{where(field)}: expected {name} as a numpy float32 array of shape (n, dim), "
            f"got {type(x).__name__}"
        )
    if x.dtype != np.float32:
        raise InputDtypeError(
            f"{where(field)}: expected {name} of dtype float32, got {x.dtype}"
        )
    if x.ndim != 2 or x.shape[1] < 1:
        raise InputShapeError(
            f"{where(field)}: expected {name} of shape (n, dim) with dim >= 1, "
            f"got shape {x.shape}"
        )
    for start in range(0, x.shape[0], _CHECK_ROWS):
        finite = np.isfinite(x[start : start + _CHECK_ROWS])
        if not finite.all():
            row = start + int(np.flatnonzero(~finite.all(axis=1))[0])
            raise NonFiniteError(
                f"{where(field)}: expected finite {name}, got NaN or infinity first in "
                f"row {row}: {x[row].tolist()}"
            )
    return x


def counts(c: object, n: int, field: str) -> npt.NDArray[np.integer] | None:
    """Return ``c`` itself once it is None or a non-negative integer (n,) array."""
    if c is None:
        return None
    if not isinstance(c, np.ndarray) or c.dtype.kind not in "iu":
        got = c.dtype if isinstance(c, np.ndarray) else type(c).__name__
        raise InputDtypeError(
            f"{where(field)}: expected counts as a numpy integer array of shape ({n},), got {got}"
        )
    if c.shape != (n,):
        raise InputShapeError(
            f"{where(field)}: expected counts of shape ({n},), one per vector, got shape {c.shape}"
        )
    if c.dtype.kind == "i" and n and int(c.min()) < 0:
        row = int(np.flatnonzero(c < 0)[0])
        raise InvalidCountsError(
            f"{where(field)}: expected counts >= 0, got {int(c[row])} in row {row}"
        )
    return c


def integer(value: object, name: str, field: str, *, minimum: int) -> int:
    """Return ``value`` as an int once it is an integer (not bool) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidParameterError(
            f"{where(field)}: expected {name} to be an integer >= {minimum}, "
            f"got {value!r} ({type(value).__name__})"
        )
    if value < minimum:
        raise InvalidParameterError(
            f"{where(field)}: expected {name} >= {minimum}, got {value}"
        )
    return int(value)


def tolerance(value: object, field: str) -> float:
    """Return ``value`` as a float once it is a finite real >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(float(value)):
        raise InvalidParameterError(
            f"{where(field)}: expected tol to be a finite number >= 0, got {value!r}"
        )
    if value < 0:
        raise InvalidParameterError(f"{where(field)}: expected tol >= 0, got {value}")
    return float(value)


def k_for_rows(k: int, n: int, field: str) -> None:
    """k-means needs at least as many rows as centroids."""
    if k > n:
        raise InvalidParameterError(
            f"{where(field)}: expected k <= the number of rows to cluster ({n}), got k={k}"
        )
