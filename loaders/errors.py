"""Errors of the loaders package.

Every class inherits :class:`LoaderError`, which is both a :class:`saec.errors.SaecError`
and a :class:`ValueError`; most also inherit the builtin they resemble, so
``except FileNotFoundError`` catches a missing table as readily as ``except LoaderError``.

A message names the file and the field it concerns, then says what was expected and what
came, e.g. ``/data/emb.npz: field 'user': vector at row 17 holds nan (column 3); expected
finite values``. The file and the field are also kept as the ``path`` and ``field``
attributes.
"""

from __future__ import annotations

import os

from saec.errors import SaecError


class LoaderError(SaecError, ValueError):
    """Base of the loaders' errors: input that cannot be read as an embedding table."""

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else os.fspath(path)
        self.field = field
        self.detail = message
        prefix = ""
        if self.path is not None:
            prefix += f"{self.path}: "
        if field is not None:
            prefix += f"field {field!r}: "
        super().__init__(prefix + message)

    def __str__(self) -> str:  # KeyError and OSError would reformat the message
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuilt through __init__, by any pickler. The default reduction leaves it to the
        # unpickler to call a __new__, and tblib's (which Dask installs in every process
        # that imports distributed) picks ValueError.__new__, which refuses the classes
        # that are also OSErrors: a loader error raised under Dask could not travel.
        return (_rebuild, (type(self), self.detail, self.path, self.field))


def _rebuild(cls: type[LoaderError], message: str, path: str | None, field: str | None) -> LoaderError:
    return cls(message, path=path, field=field)


class InputNotFoundError(LoaderError, FileNotFoundError):
    """A table or spec file that does not exist."""


class UnreadableInputError(LoaderError, OSError):
    """A file that exists but cannot be read as its format: truncated, corrupt, not a table."""


class UnknownFormatError(UnreadableInputError):
    """A path whose format is neither given nor recognised by its suffix or its first bytes."""


class MissingDependencyError(LoaderError, ImportError):
    """A format whose optional dependency is not installed (PyTorch, pyarrow)."""


class SpecError(LoaderError):
    """A field spec that cannot be parsed: unknown keys, wrong types, duplicate fields."""


class MissingFieldError(LoaderError, KeyError):
    """A field named by the spec or the caller that the table does not hold."""


class MissingArrayError(LoaderError, KeyError):
    """An array, column or tensor named by the spec (or by default) that the file lacks."""


class UnsupportedDtypeError(LoaderError, TypeError):
    """An array of a dtype the loaders do not accept (float ids, integer vectors, pickles)."""


class ShapeError(LoaderError):
    """An array of the wrong number of dimensions (1-D vectors, 2-D ids, empty rows)."""


class LengthMismatchError(LoaderError):
    """Ids, vectors and counts of one field that hold different numbers of rows."""


class RaggedVectorError(LoaderError):
    """A vector column whose rows have different lengths."""


class NonFiniteVectorError(LoaderError):
    """Vectors holding NaN or an infinity; the message names the first bad row."""


class InvalidCountError(LoaderError):
    """Counts that cannot be frequencies: negative, fractional, or beyond int64."""


class MissingValueError(LoaderError):
    """A null where a value is required (Parquet ids, vectors, counts or field names)."""


class DuplicateIdError(LoaderError):
    """A feature id that occurs more than once within one field."""
