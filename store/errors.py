"""Errors of the snapshot store and the lookup engine.

Each class inherits :class:`saec.errors.SaecError` and the builtin it resembles, so
``except KeyError`` catches an unknown field as readily as ``except StoreError``.
"""

from __future__ import annotations

from saec.errors import SaecError


class StoreError(SaecError):
    """Base of the store's errors."""


class SnapshotNotFoundError(StoreError, FileNotFoundError):
    """No snapshot where one was expected (empty store, unknown version)."""


class CorruptSnapshotError(StoreError, ValueError):
    """A snapshot's files disagree with its manifest: checksum, size, dtype or shape."""


class FormatVersionError(StoreError, ValueError):
    """A snapshot written in a format version this code does not read."""


class InvalidTableError(StoreError, ValueError):
    """Arrays handed to the writer that cannot form a field (shapes, dtypes, duplicates)."""


class UnknownFieldError(StoreError, KeyError):
    """A lookup named a field the snapshot does not hold."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class InvalidIdsError(StoreError, ValueError):
    """Ids that are not a flat sequence of integers or strings."""


class BatchTooLargeError(StoreError, ValueError):
    """A lookup over the configured limit of ids."""


class UnsafeFileError(CorruptSnapshotError):
    """A store file that is not a regular file (a FIFO, device or folder), or a path that
    leads outside the store (a symlink, a field named ``../x``)."""


class BadCurrentError(StoreError, ValueError):
    """CURRENT cannot be read as the name of a version (not text, not a file, not a version)."""


class StaleSnapshotError(StoreError, RuntimeError):
    """A publish whose snapshot is older than the live one: it is kept but not made live
    (only ``saec rollback`` goes back)."""


class CorruptDeltaError(StoreError, ValueError):
    """A delta segment whose good frames disagree with themselves (not a torn tail)."""


class SupersededError(StoreError, RuntimeError):
    """Updates aimed at a snapshot that is no longer live; retry against the new one (503)."""


class InvalidUpdateError(StoreError, ValueError):
    """An update batch that cannot be applied: names the field and the row (422)."""


class EmptyUpdateError(InvalidUpdateError):
    """An update batch with no rows at all (422)."""


class DeltaLogError(StoreError, OSError):
    """A delta log that cannot be read or appended to as it is: a segment that is not a
    regular file (a FIFO, folder, symlink, device), or one that cannot be opened (503)."""


class DamagedDeltaLogError(CorruptDeltaError):
    """A delta log with damaged frames, refused by a command that would publish or extend
    it until it is repaired (``--repair``)."""


class DeltaLogChangedError(CorruptDeltaError):
    """A segment being followed shrank below what was read of it, was replaced or was
    deleted: what was applied from it must be read again from the start."""
