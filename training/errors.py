"""Errors raised on purpose by ``training``.

Each class derives from :class:`saec.errors.SaecError` and from the builtin it resembles,
so callers may catch either.
"""

from __future__ import annotations

from saec.errors import SaecError


class TrainingError(SaecError):
    """Base of the errors raised by the retraining and evaluation code."""


class DataError(TrainingError, ValueError):
    """A click log could not be read: a missing column, an empty file, a bad label."""


class DatasetFetchError(TrainingError, OSError):
    """A dataset could not be fetched or found in its archive."""


class ConfigError(TrainingError, ValueError):
    """An evaluation setting is out of range or inconsistent with the data."""
