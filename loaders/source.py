"""The interface every table reader offers, and the checks they all share.

A reader subclasses :class:`TableSource` and supplies three things: the names of the fields
its file holds, how to find one field's arrays (:meth:`TableSource._resolve`), and the raw
pieces of a field in file order (:meth:`TableSource._iter_pieces`). This module turns those
pieces into :class:`FieldChunk` objects of the promised dtypes, checks their values, and
cuts them to the size the caller asked for.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from saec.loaders._coerce import as_counts, as_ids, as_vectors
from saec.loaders.checks import check_finite, check_lengths, check_unique
from saec.loaders.chunk import DEFAULT_CHUNK_ROWS, FieldChunk, FieldInfo, concat_chunks
from saec.loaders.errors import LoaderError, MissingFieldError, ShapeError, UnreadableInputError
from saec.loaders.spec import FieldSpec, TableSpec

L = TypeVar("L")

#: Bytes of vectors a reader reads at a time, whatever the chunk size asked for. Large
#: buffers are fresh memory maps that fault in page by page on every allocation (glibc
#: maps anything over 32 MB); pieces of this size are reused, so a 256 MB chunk joined
#: from them costs one large allocation instead of several.
PIECE_BYTES = 16 << 20


@dataclass(frozen=True)
class Piece:
    """Raw rows of one field as the file holds them, before dtype conversion and checks.

    ``ids`` (n,), ``vectors`` (n, dim) and ``counts`` (n,) or None, of any dtype the
    reader's ``check_*_dtype`` calls accepted.
    """

    ids: npt.NDArray[Any]
    vectors: npt.NDArray[Any]
    counts: npt.NDArray[Any] | None


@dataclass(frozen=True)
class ResolvedField(Generic[L]):
    """A field found in the file: what callers see, and where the reader finds its rows.

    ``names`` says where ids, vectors and counts come from, for messages.
    """

    info: FieldInfo
    spec: FieldSpec
    locator: L
    names: tuple[str, str, str | None]


class TableSource(ABC, Generic[L]):
    """A table of embedding fields in one file (or directory), read a chunk at a time.

    Open one with :func:`loaders.open_table`; use it as a context manager or call
    :meth:`close`. Nothing is read at open beyond what a format needs to list its
    contents; :meth:`fields` reads headers; only :meth:`iter_chunks`, :meth:`read_field`
    and :meth:`read_ids` read rows.
    """

    format: ClassVar[str]

    def __init__(self, path: str | os.PathLike[str], spec: TableSpec) -> None:
        self.path = Path(path)
        self.spec = spec
        self._resolved: dict[str, ResolvedField[L]] = {}
        # What _discover found, listed once: asked again for every field it made opening
        # a table cost fields x arrays (0.87 s for 1000 fields of an .npz); the set
        # answers membership without a scan of the list per field.
        self._discovered: list[str] | None = None
        self._discovered_set: frozenset[str] = frozenset()

    # -- what callers use ---------------------------------------------------------

    def fields(self) -> list[FieldInfo]:
        """Every field the spec names, or every field the file holds if it names none."""
        return [self._field(name).info for name in self._names()]

    def field_info(self, field: str) -> FieldInfo:
        """The :class:`FieldInfo` of ``field``; :class:`MissingFieldError` if there is none."""
        return self._field(field).info

    def iter_chunks(self, field: str, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[FieldChunk]:
        """The rows of ``field`` in file order, as chunks of exactly ``chunk_rows`` rows
        (the last one shorter).

        Each chunk's dtypes, lengths, finite vectors and non-negative counts are checked
        as it is read; duplicate ids need the whole field (see :meth:`read_ids` and
        :func:`loaders.check_unique`). Memory stays within about two chunks.
        """
        chunk_rows = _check_chunk_rows(chunk_rows)
        resolved = self._field(field)
        pieces = self._checked(resolved, min(chunk_rows, _piece_rows(resolved.info.dim)))
        return _rechunk(pieces, chunk_rows)

    def read_field(self, field: str) -> FieldChunk:
        """The whole of ``field`` as one chunk, its ids checked to be unique."""
        resolved = self._field(field)
        info = resolved.info
        piece_rows = _piece_rows(info.dim)
        if info.rows is None:
            chunks = list(self._checked(resolved, piece_rows))
            whole = concat_chunks(chunks) if chunks else self._empty(resolved)
        else:
            whole = self._read_into(resolved, info.rows, piece_rows)
        check_unique(whole.ids, info.name, path=self.path)
        return whole

    def read_ids(self, field: str) -> npt.NDArray[Any]:
        """The ids of ``field`` (n,), in file order, without reading its vectors where the
        format allows. Pass them to :func:`loaders.check_unique` before streaming a field."""
        resolved = self._field(field)
        id_name = resolved.names[0]
        parts = [
            as_ids(ids, path=self.path, field=resolved.info.name, source=id_name)
            for ids in self._iter_ids(resolved, PIECE_BYTES // 8)
        ]
        if not parts:
            return self._empty(resolved).ids
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def close(self) -> None:
        """Release open files. Chunks already handed out stay valid."""

    def __enter__(self) -> TableSource[L]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({os.fspath(self.path)!r})"

    # -- what a reader supplies ---------------------------------------------------

    @abstractmethod
    def _discover(self) -> list[str]:
        """The names of the fields the file holds, in file order (used when the spec names none)."""

    @abstractmethod
    def _resolve(self, spec: FieldSpec) -> ResolvedField[L]:
        """Find ``spec``'s field: raise MissingFieldError / MissingArrayError if absent,
        check shapes and dtypes, and return where its rows are."""

    @abstractmethod
    def _iter_pieces(self, resolved: ResolvedField[L], chunk_rows: int) -> Iterator[Piece]:
        """The field's rows in file order, in pieces of at most ``chunk_rows`` rows."""

    def _iter_ids(self, resolved: ResolvedField[L], chunk_rows: int) -> Iterator[npt.NDArray[Any]]:
        """The field's ids in pieces; readers override this to skip the vectors."""
        for piece in self._iter_pieces(resolved, chunk_rows):
            yield piece.ids

    # -- shared machinery ---------------------------------------------------------

    def _names(self) -> list[str]:
        if self.spec.fields:
            return self.spec.names
        if self._discovered is None:
            self._discovered = self._discover()
            self._discovered_set = frozenset(self._discovered)
        names = self._discovered
        if not names:
            raise MissingFieldError(
                "found no embedding field; see docs/loaders.md for the names each format "
                "expects, or name the fields in a spec",
                path=self.path,
            )
        return names

    def _field(self, name: str) -> ResolvedField[L]:
        found = self._resolved.get(name)
        if found is not None:
            return found
        spec = self.spec.field(name)
        if spec is None:
            names = self._names()
            # The spec, when it names fields, does not name this one.
            if self.spec.fields or name not in self._discovered_set:
                whose = "the spec names" if self.spec.fields else "the file holds"
                raise MissingFieldError(
                    f"no such field; {whose} {names}", path=self.path, field=name
                )
            spec = FieldSpec(name)
        found = self._resolve(spec)
        self._resolved[name] = found
        return found

    def _checked(self, resolved: ResolvedField[L], chunk_rows: int) -> Iterator[FieldChunk]:
        info = resolved.info
        id_name, vector_name, count_name = resolved.names
        start = 0
        for piece in self._iter_pieces(resolved, chunk_rows):
            n_ids, n_vectors = len(piece.ids), len(piece.vectors)
            check_lengths(
                n_ids,
                n_vectors,
                None if piece.counts is None else len(piece.counts),
                info.name,
                path=self.path,
                ids_name=id_name,
                vectors_name=vector_name,
                counts_name=count_name or "counts",
            )
            vectors = as_vectors(piece.vectors, path=self.path, field=info.name, source=vector_name)
            if vectors.ndim != 2 or vectors.shape[1] != info.dim:
                raise ShapeError(
                    f"vectors in {vector_name!r} from row {start}: expected shape (n, {info.dim}), "
                    f"found {vectors.shape}",
                    path=self.path,
                    field=info.name,
                )
            check_finite(vectors, info.name, path=self.path, row_offset=start)
            counts = None
            if piece.counts is not None:
                counts = as_counts(
                    piece.counts,
                    path=self.path,
                    field=info.name,
                    source=count_name or "counts",
                    row_offset=start,
                )
            ids = as_ids(piece.ids, path=self.path, field=info.name, source=id_name)
            start += n_vectors
            yield FieldChunk(info.name, ids, vectors, counts)

    def _read_into(self, resolved: ResolvedField[L], rows: int, piece_rows: int) -> FieldChunk:
        """Read a field of known length into one preallocated vector array, so the whole
        field costs its own size once rather than twice."""
        info = resolved.info
        vectors = np.empty((rows, info.dim), dtype=np.float32)
        ids: list[npt.NDArray[Any]] = []
        counts: list[npt.NDArray[np.int64]] = []
        filled = 0
        for chunk in self._checked(resolved, piece_rows):
            stop = filled + len(chunk)
            if stop > rows:
                raise UnreadableInputError(
                    f"the file declares {rows} rows, found more", path=self.path, field=info.name
                )
            vectors[filled:stop] = chunk.vectors
            ids.append(chunk.ids)
            if chunk.counts is not None:
                counts.append(chunk.counts)
            filled = stop
        if filled != rows:
            raise UnreadableInputError(
                f"the file declares {rows} rows, found {filled}", path=self.path, field=info.name
            )
        if not ids:
            return self._empty(resolved)
        return FieldChunk(
            info.name, np.concatenate(ids), vectors, np.concatenate(counts) if counts else None
        )

    def _empty(self, resolved: ResolvedField[L]) -> FieldChunk:
        info = resolved.info
        return FieldChunk(
            info.name,
            np.empty(0, dtype=np.int64),
            np.empty((0, info.dim), dtype=np.float32),
            np.empty(0, dtype=np.int64) if info.has_counts else None,
        )


def _piece_rows(dim: int) -> int:
    return max(1, PIECE_BYTES // (4 * max(dim, 1)))


def _check_chunk_rows(chunk_rows: int) -> int:
    if (
        isinstance(chunk_rows, bool)
        or not isinstance(chunk_rows, int | np.integer)
        or chunk_rows < 1
    ):
        raise LoaderError(f"chunk_rows: expected an integer >= 1, found {chunk_rows!r}")
    return int(chunk_rows)


def _rechunk(pieces: Iterable[FieldChunk], chunk_rows: int) -> Iterator[FieldChunk]:
    """Cut or join ``pieces`` into chunks of exactly ``chunk_rows`` rows (the last shorter).

    A piece that already has the right size passes through uncopied.
    """
    held: list[FieldChunk] = []
    held_rows = 0
    for piece in pieces:
        if len(piece) == 0:
            continue
        if not held and len(piece) == chunk_rows:
            yield piece
            continue
        held.append(piece)
        held_rows += len(piece)
        while held_rows >= chunk_rows:
            joined = concat_chunks(held)
            yield joined.rows(0, chunk_rows)
            rest = joined.rows(chunk_rows, held_rows)
            held = [rest] if len(rest) else []
            held_rows = len(rest)
    if held:
        yield concat_chunks(held)
