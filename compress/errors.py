"""Errors of the compression package.

Each class inherits :class:`CompressError`, which is both a :class:`saec.errors.SaecError`
and a :class:`ValueError`, so callers may catch either. Messages name the field, say what
was expected and what came.
"""

from __future__ import annotations

from saec.errors import SaecError


class CompressError(SaecError, ValueError):
    """Base of the compression package's errors."""


class InputDtypeError(CompressError, TypeError):
    """An array of the wrong type or dtype (vectors not float32, counts not integers)."""


class InputShapeError(CompressError):
    """An array of the wrong shape (vectors not 2-D, counts of another length)."""


class NonFiniteError(CompressError):
    """Vectors holding NaN or an infinity; the message names the first bad row."""


class InvalidCountsError(CompressError):
    """Feature counts that cannot be frequencies (negative values)."""


class InvalidParameterError(CompressError):
    """A parameter out of range: k, init, top_n, min_factor, max_iter, tol, seed."""
