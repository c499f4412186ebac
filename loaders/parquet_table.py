"""Tables kept as Parquet: one row per feature.

Columns (names by default; a spec may rename them table-wide or per field):

- ``id``: integer or string feature ids;
- ``vector``: ``fixed_size_list<float>`` or ``list<float>`` (float16/32/64) of one length
  per field;
- ``count``: optional integer feature counts;
- ``field``: optional field name (string or integer) when one file holds several fields.

The file is streamed with ``ParquetFile.iter_batches``. With a field column, listing the
fields reads that column once and remembers which row groups hold each field, so reading a
field later touches only those row groups. pyarrow is optional (the ``compress`` extra)
and imported only when such a file is opened.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from saec.loaders.chunk import FieldInfo
from saec.loaders.errors import (
    InputNotFoundError,
    LoaderError,
    MissingArrayError,
    MissingDependencyError,
    MissingFieldError,
    MissingValueError,
    RaggedVectorError,
    ShapeError,
    UnreadableInputError,
    UnsupportedDtypeError,
)
from saec.loaders.source import Piece, ResolvedField, TableSource
from saec.loaders.spec import FieldSpec, TableSpec

DEFAULT_ID, DEFAULT_VECTOR, DEFAULT_COUNT, DEFAULT_FIELD = "id", "vector", "count", "field"
_SCAN_ROWS = 1 << 16  # rows per batch when reading only the field column


def import_pyarrow() -> tuple[ModuleType, ModuleType, ModuleType]:
    """(pyarrow, pyarrow.parquet, pyarrow.compute), or :class:`MissingDependencyError`."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MissingDependencyError(
            "reading Parquet needs pyarrow, which is not installed; "
            "install the compress extra: pip install 'saec[compress]'"
        ) from exc
    return pa, pq, pc


@dataclass
class _Seen:
    """What the scan of the field column learnt about one field."""

    value: Any  # the field column's value, in the column's own type
    rows: int = 0
    row_groups: list[int] = field(default_factory=list)
    first: tuple[int, int] = (0, 0)  # (row group, row within it) of the field's first row


@dataclass(frozen=True)
class _Columns:
    """Where one field's rows are: its columns, and which rows of the file are its own."""

    ids: str
    vectors: str
    counts: str | None
    value: Any  # the field column's value for this field; None when the file has one field
    row_groups: list[int]
    list_size: int | None  # set for fixed_size_list vectors


class ParquetTable(TableSource[_Columns]):
    """A Parquet file of one or several fields."""

    format = "parquet"

    def __init__(self, path: str | os.PathLike[str], spec: TableSpec) -> None:
        super().__init__(path, spec)
        self._pa, pq, self._pc = import_pyarrow()
        if not self.path.is_file():
            raise InputNotFoundError("no such file", path=self.path)
        # What pyarrow raises on damaged input: Arrow errors, I/O errors, and undecodable
        # bytes where it expected UTF-8 (column names, string values).
        self._damaged = (self._pa.ArrowException, OSError, UnicodeDecodeError)
        try:
            self._file = pq.ParquetFile(self.path, memory_map=True, page_checksum_verification=True)
        except self._damaged as exc:
            raise UnreadableInputError(
                f"not a readable Parquet file: {exc}", path=self.path
            ) from exc
        self._schema = self._file.schema_arrow
        self._seen: dict[str, _Seen] | None = None
        try:
            self._field_column = self._find_field_column()
        except LoaderError:
            self._file.close()
            raise

    def _find_field_column(self) -> str | None:
        """The field column's name, or None when the file holds a single field."""
        name = self.spec.field_column or DEFAULT_FIELD
        if name in self._schema.names:
            return name
        if self.spec.field_column:
            raise MissingArrayError(
                f"expected a field column {name!r}, found columns {self._schema.names}",
                path=self.path,
            )
        if len(self.spec.fields) > 1:
            raise MissingFieldError(
                f"the file has no field column {name!r}, so it holds one field; "
                f"the spec names {len(self.spec.fields)}: {self.spec.names}",
                path=self.path,
            )
        return None

    def close(self) -> None:
        self._file.close()

    @contextmanager
    def _reading(self, what: str, field: str | None = None) -> Iterator[None]:
        """Report pyarrow's failures on damaged data as :class:`UnreadableInputError`."""
        try:
            yield
        except LoaderError:
            raise
        except self._damaged as exc:
            raise UnreadableInputError(
                f"cannot read {what}: {exc}", path=self.path, field=field
            ) from exc

    # -- fields -------------------------------------------------------------------

    def _discover(self) -> list[str]:
        if self._field_column is None:
            return [self.path.stem]
        return list(self._scan())

    def _resolve(self, spec: FieldSpec) -> ResolvedField[_Columns]:
        ids = self._column(spec, spec.ids or self.spec.id_column or DEFAULT_ID, "ids")
        vectors = self._column(
            spec, spec.vectors or self.spec.vector_column or DEFAULT_VECTOR, "vectors"
        )
        # A counts column the spec names is required; the default one is read if present.
        named_counts = spec.counts or self.spec.count_column
        counts = (
            self._column(spec, named_counts, "counts")
            if named_counts
            else (DEFAULT_COUNT if DEFAULT_COUNT in self._schema.names else None)
        )
        self._check_types(spec, ids, vectors, counts)
        vector_type = self._schema.field(vectors).type
        list_size = (
            vector_type.list_size if self._pa.types.is_fixed_size_list(vector_type) else None
        )

        if self._field_column is None:
            metadata = self._file.metadata
            groups = [g for g in range(metadata.num_row_groups) if metadata.row_group(g).num_rows]
            rows = metadata.num_rows
            columns = _Columns(ids, vectors, counts, None, groups, list_size)
            first = (groups[0], 0) if groups else (0, 0)
        else:
            seen = self._scan().get(spec.key)
            if seen is None:
                raise MissingFieldError(
                    f"expected rows whose {self._field_column!r} is {spec.key!r}, found only "
                    f"{_listing(list(self._scan()))}",
                    path=self.path,
                    field=spec.name,
                )
            rows = seen.rows
            columns = _Columns(ids, vectors, counts, seen.value, seen.row_groups, list_size)
            first = seen.first
        if list_size is not None:
            dim = list_size
        elif rows:
            dim = self._first_length(spec, vectors, *first)
        else:
            dim = 0
        if rows and dim < 1:
            raise ShapeError(
                f"vectors in column {vectors!r}: expected at least one value per vector, "
                f"found {dim}",
                path=self.path,
                field=spec.name,
            )
        info = FieldInfo(spec.name, dim, rows, counts is not None)
        return ResolvedField(info, spec, columns, (ids, vectors, counts))

    def _column(self, spec: FieldSpec, name: str, role: str) -> str:
        if name not in self._schema.names:
            raise MissingArrayError(
                f"expected a column {name!r} of {role}, found columns {self._schema.names}",
                path=self.path,
                field=spec.name,
            )
        return name

    def _check_types(self, spec: FieldSpec, ids: str, vectors: str, counts: str | None) -> None:
        types = self._pa.types
        id_type = _value_type(self._pa, self._schema.field(ids).type)
        if not (types.is_integer(id_type) or _is_text(types, id_type)):
            raise UnsupportedDtypeError(
                f"ids in column {ids!r}: expected integers or strings, found {id_type}",
                path=self.path,
                field=spec.name,
            )
        vector_type = self._schema.field(vectors).type
        if not (
            types.is_list(vector_type)
            or types.is_large_list(vector_type)
            or types.is_fixed_size_list(vector_type)
        ) or not types.is_floating(vector_type.value_type):
            raise UnsupportedDtypeError(
                f"vectors in column {vectors!r}: expected fixed_size_list<float> or list<float>, "
                f"found {vector_type}",
                path=self.path,
                field=spec.name,
            )
        if counts is not None:
            count_type = self._schema.field(counts).type
            if not (types.is_integer(count_type) or types.is_floating(count_type)):
                raise UnsupportedDtypeError(
                    f"counts in column {counts!r}: expected integers, found {count_type}",
                    path=self.path,
                    field=spec.name,
                )

    def _scan(self) -> dict[str, _Seen]:
        """Read the field column once: each field's rows, row groups and first row."""
        if self._seen is not None:
            return self._seen
        types = self._pa.types
        column = self._field_column
        assert column is not None
        column_type = _value_type(self._pa, self._schema.field(column).type)
        if not (
            types.is_integer(column_type)
            or types.is_string(column_type)
            or types.is_large_string(column_type)
        ):
            raise UnsupportedDtypeError(
                f"field names in column {column!r}: expected strings or integers, "
                f"found {column_type}",
                path=self.path,
            )
        seen: dict[str, _Seen] = {}
        with self._reading(f"field column {column!r}"):
            self._scan_groups(column, seen)
        self._seen = seen
        return seen

    def _scan_groups(self, column: str, seen: dict[str, _Seen]) -> None:
        pc = self._pc
        file_row = 0
        for group in range(self._file.num_row_groups):
            group_row = 0
            for batch in self._batches(_SCAN_ROWS, [column], [group]):
                values = _decoded(self._pa, batch.column(0))
                if values.null_count:
                    row = file_row + group_row + _first_true(values.is_null())
                    raise MissingValueError(
                        f"field column {column!r}: expected a field name on every row, "
                        f"found null at row {row}",
                        path=self.path,
                    )
                counted = pc.value_counts(values)
                # One pass per distinct field in the batch, not per row.
                for value, count in zip(
                    counted.field("values").to_pylist(),
                    counted.field("counts").to_pylist(),
                    strict=True,
                ):
                    name = str(value)
                    entry = seen.get(name)
                    if entry is None:
                        offset = pc.index(values, value).as_py()
                        entry = seen[name] = _Seen(value, first=(group, group_row + offset))
                    entry.rows += count
                    if not entry.row_groups or entry.row_groups[-1] != group:
                        entry.row_groups.append(group)
                group_row += len(values)
            file_row += group_row

    def _first_length(self, spec: FieldSpec, column: str, group: int, row: int) -> int:
        """The length of the field's first vector, which all its vectors must share."""
        skipped = 0
        with self._reading(f"column {column!r}", spec.name):
            for batch in self._batches(_SCAN_ROWS, [column], [group]):
                if row < skipped + len(batch):
                    vector = batch.column(0)[row - skipped]
                    if not vector.is_valid:
                        raise MissingValueError(
                            f"vectors in column {column!r}: expected a vector on every row, "
                            f"found null at row 0",
                            path=self.path,
                            field=spec.name,
                        )
                    return len(vector)
                skipped += len(batch)
        raise UnreadableInputError(
            f"row group {group} ends before row {row}, where the field column placed "
            "the field's first row",
            path=self.path,
            field=spec.name,
        )

    # -- rows ---------------------------------------------------------------------

    def _iter_pieces(self, resolved: ResolvedField[_Columns], chunk_rows: int) -> Iterator[Piece]:
        where = resolved.locator
        columns = [where.ids, where.vectors] + ([where.counts] if where.counts else [])
        start = 0
        with self._reading(f"columns {columns}", resolved.info.name):
            for batch in self._field_batches(where, columns, chunk_rows):
                ids = self._ids(resolved, batch.column(0), start)
                vectors = self._vectors(resolved, batch.column(1), start)
                counts = None
                if where.counts:
                    counts = self._plain(resolved, batch.column(2), where.counts, "counts", start)
                yield Piece(ids, vectors, counts)
                start += batch.num_rows

    def _iter_ids(
        self, resolved: ResolvedField[_Columns], chunk_rows: int
    ) -> Iterator[npt.NDArray[Any]]:
        start = 0
        where = resolved.locator
        with self._reading(f"column {where.ids!r}", resolved.info.name):
            for batch in self._field_batches(where, [where.ids], chunk_rows):
                yield self._ids(resolved, batch.column(0), start)
                start += batch.num_rows

    def _field_batches(self, where: _Columns, columns: list[str], chunk_rows: int) -> Iterator[Any]:
        """Batches of at most ``chunk_rows`` rows holding only the field's rows."""
        if where.value is None:
            yield from self._batches(chunk_rows, columns, where.row_groups)
            return
        assert self._field_column is not None
        for batch in self._batches(chunk_rows, [*columns, self._field_column], where.row_groups):
            mine = self._pc.equal(batch.column(len(columns)), where.value)
            batch = batch.filter(mine)
            if batch.num_rows:
                yield batch

    def _batches(self, rows: int, columns: list[str], row_groups: list[int]) -> Iterator[Any]:
        if not row_groups:
            return
        yield from self._file.iter_batches(batch_size=rows, row_groups=row_groups, columns=columns)

    def _ids(self, resolved: ResolvedField[_Columns], column: Any, start: int) -> npt.NDArray[Any]:
        return self._plain(resolved, _decoded(self._pa, column), resolved.locator.ids, "ids", start)

    def _plain(
        self, resolved: ResolvedField[_Columns], column: Any, name: str, role: str, start: int
    ) -> npt.NDArray[Any]:
        """A column without nulls as numpy (strings as an object array of ``str``)."""
        if column.null_count:
            row = start + _first_true(column.is_null())
            raise MissingValueError(
                f"{role} in column {name!r}: expected a value on every row, "
                f"found null at row {row}",
                path=self.path,
                field=resolved.info.name,
            )
        values: npt.NDArray[Any] = column.to_numpy(zero_copy_only=False)
        return values

    def _vectors(
        self, resolved: ResolvedField[_Columns], column: Any, start: int
    ) -> npt.NDArray[Any]:
        """(n, dim) vectors from a list column: its flat values reshaped, every length checked."""
        info, name = resolved.info, resolved.locator.vectors
        if column.null_count:
            row = start + _first_true(column.is_null())
            raise MissingValueError(
                f"vectors in column {name!r}: expected a vector on every row, "
                f"found null at row {row}",
                path=self.path,
                field=info.name,
            )
        if resolved.locator.list_size is None:
            lengths = self._pc.list_value_length(column).to_numpy(zero_copy_only=False)
            wrong = lengths != info.dim
            if wrong.any():
                row = int(np.argmax(wrong))
                raise RaggedVectorError(
                    f"vectors in column {name!r}: expected {info.dim} values per vector (the "
                    f"length of the field's first), found {lengths[row]} at row {start + row}",
                    path=self.path,
                    field=info.name,
                )
        values = column.flatten()
        if values.null_count:
            parents = self._pc.list_parent_indices(column)
            row = start + parents[_first_true(values.is_null())].as_py()
            raise MissingValueError(
                f"vectors in column {name!r}: expected numbers, found a null value in the "
                f"vector at row {row}",
                path=self.path,
                field=info.name,
            )
        flat: npt.NDArray[Any] = values.to_numpy(zero_copy_only=False)
        return flat.reshape(len(column), info.dim)


def _value_type(pa: ModuleType, arrow_type: Any) -> Any:
    """The type of the values, looking through dictionary encoding."""
    return arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type


def _is_text(types: ModuleType, arrow_type: Any) -> bool:
    return bool(
        types.is_string(arrow_type)
        or types.is_large_string(arrow_type)
        or types.is_binary(arrow_type)
        or types.is_large_binary(arrow_type)
    )


def _decoded(pa: ModuleType, column: Any) -> Any:
    return column.dictionary_decode() if pa.types.is_dictionary(column.type) else column


def _first_true(mask: Any) -> int:
    return int(np.argmax(mask.to_numpy(zero_copy_only=False)))


def _listing(names: list[str], limit: int = 20) -> str:
    if not names:
        return "no fields"
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
