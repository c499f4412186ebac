"""The field spec: which fields to read, and where each keeps its ids, vectors and counts.

A spec is a :class:`TableSpec` holding one :class:`FieldSpec` per field. It comes from a
JSON or TOML file, a plain mapping of the same shape, or command-line flags::

    format = "parquet"            # optional: npz, npy, parquet, torch; else from the path

    [columns]                     # Parquet only: the table-wide column names
    id = "feature_id"             # default "id"
    vector = "embedding"          # default "vector"
    count = "frequency"           # default "count" (optional column)
    field = "slot"                # default "field" (optional column)

    [fields.user]                 # every key optional
    source = "u"                  # the field's name inside the file (default: "user")
    ids = "user_ids"              # array / column / tensor holding the ids
    vectors = "user_emb.weight"   # ... the vectors
    counts = "user_freq"          # ... the counts

    [fields.item]

``fields`` may also be a list of names. Unset entries fall back to each format's defaults
(see ``docs/loaders.md``). An array or column the spec names is required; a default counts
array or column is read when present and skipped when absent.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saec.loaders.errors import InputNotFoundError, SpecError, UnreadableInputError

#: The formats a spec may name; ``npy`` is a directory of ``.npy`` files.
FORMATS = ("npz", "npy", "parquet", "torch")

_FIELD_KEYS = ("source", "ids", "vectors", "counts")
_COLUMN_KEYS = ("id", "vector", "count", "field")
_TABLE_KEYS = ("format", "columns", "fields")


@dataclass(frozen=True)
class FieldSpec:
    """Where one field keeps its arrays; None means the format's default.

    Attributes:
        name: the field's name in saec (in chunks, snapshots and lookups).
        source: the field's name inside the file (npz/npy key prefix, value of the Parquet
            field column, state-dict table or module name); default ``name``.
        ids: the array, column or tensor holding the ids.
        vectors: the array, column or tensor holding the vectors.
        counts: the array, column or tensor holding the counts (feature frequencies).
    """

    name: str
    source: str | None = None
    ids: str | None = None
    vectors: str | None = None
    counts: str | None = None

    def __post_init__(self) -> None:
        for key in ("name", *_FIELD_KEYS):
            value = getattr(self, key)
            if (key == "name" or value is not None) and (not isinstance(value, str) or not value):
                raise SpecError(
                    f"field {self.name!r}: {key}: expected a non-empty string, found {value!r}"
                )

    @property
    def key(self) -> str:
        """The field's name inside the file."""
        return self.source or self.name


@dataclass(frozen=True)
class TableSpec:
    """The spec of one table: its fields (empty = every field the file holds) and format.

    ``id_column``, ``vector_column``, ``count_column`` and ``field_column`` are Parquet's
    table-wide column names; None means the defaults ``id``, ``vector``, ``count``, ``field``.
    A :class:`FieldSpec`'s own ``ids``/``vectors``/``counts`` override them for its field.
    """

    fields: tuple[FieldSpec, ...] = ()
    format: str | None = None
    id_column: str | None = None
    vector_column: str | None = None
    count_column: str | None = None
    field_column: str | None = None

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in FORMATS:
            raise SpecError(f"format: expected one of {list(FORMATS)}, found {self.format!r}")
        names = [f.name for f in self.fields]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise SpecError(f"fields: expected each name once, found {repeated} more than once")
        keys = [f.key for f in self.fields]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise SpecError(
                f"fields: expected each source once, found {repeated} read by several fields"
            )
        for key in ("id_column", "vector_column", "count_column", "field_column"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise SpecError(f"columns: {key}: expected a non-empty string, found {value!r}")

    def field(self, name: str) -> FieldSpec | None:
        """The spec of field ``name``, or None if the spec does not name it."""
        for spec in self.fields:
            if spec.name == name:
                return spec
        return None

    @property
    def names(self) -> list[str]:
        """The names of the fields the spec selects, in order (empty = all)."""
        return [f.name for f in self.fields]


SpecLike = TableSpec | Mapping[str, Any] | str | os.PathLike[str] | None


def load_spec(source: SpecLike = None) -> TableSpec:
    """A :class:`TableSpec` from a ``.json``/``.toml`` file, a mapping of the same shape,
    a TableSpec (returned as is) or None (the default spec: every field, default names)."""
    if source is None:
        return TableSpec()
    if isinstance(source, TableSpec):
        return source
    if isinstance(source, Mapping):
        return _from_mapping(source, origin="spec")
    return _from_mapping(_read_spec_file(Path(source)), origin=os.fspath(source))


def parse_field_flag(text: str) -> FieldSpec:
    """A FieldSpec from a flag ``NAME`` or ``NAME:key=value,key=value``.

    Keys are ``source``, ``ids``, ``vectors`` and ``counts``, e.g.
    ``--field user:ids=user_ids,vectors=user_emb.weight``.
    """
    name, _, rest = text.partition(":")
    entries: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SpecError(f"--field {text!r}: expected key=value after ':', found {item!r}")
        entries[key.strip()] = value.strip()
    return _field_from_mapping(name.strip(), entries, origin=f"--field {text!r}")


def spec_from_flags(
    fields: Sequence[str] = (),
    columns: Sequence[str] = (),
    format: str | None = None,
) -> TableSpec:
    """A TableSpec from repeated ``--field`` flags (see :func:`parse_field_flag`),
    ``--column key=name`` flags (keys ``id``, ``vector``, ``count``, ``field``) and ``--format``."""
    column_map: dict[str, str] = {}
    for item in columns:
        key, sep, value = item.partition("=")
        if not sep:
            raise SpecError(f"--column {item!r}: expected key=name, e.g. id=feature_id")
        column_map[key.strip()] = value.strip()
    return _from_mapping(
        {
            "fields": [parse_field_flag(f) for f in fields],
            "columns": column_map,
            "format": format,
        },
        origin="flags",
    )


def _read_spec_file(path: Path) -> Mapping[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise InputNotFoundError("spec file not found", path=path) from exc
    except OSError as exc:
        raise UnreadableInputError(f"cannot read the spec file: {exc}", path=path) from exc
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(raw.decode("utf-8"))
        elif suffix == ".json":
            data = json.loads(raw)
        else:
            raise SpecError(
                f"expected a .json or .toml spec file, found suffix {suffix!r}", path=path
            )
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"cannot parse the spec as {suffix[1:].upper()}: {exc}", path=path) from exc
    if not isinstance(data, Mapping):
        raise SpecError(
            f"expected a table at the top level, found {type(data).__name__}", path=path
        )
    return data


def _from_mapping(data: Mapping[str, Any], *, origin: str) -> TableSpec:
    unknown = sorted(set(data) - set(_TABLE_KEYS))
    if unknown:
        raise SpecError(f"{origin}: unknown keys {unknown}; expected some of {list(_TABLE_KEYS)}")
    columns = data.get("columns") or {}
    if not isinstance(columns, Mapping):
        raise SpecError(f"{origin}: columns: expected a table, found {type(columns).__name__}")
    unknown = sorted(set(columns) - set(_COLUMN_KEYS))
    if unknown:
        raise SpecError(
            f"{origin}: columns: unknown keys {unknown}; expected some of {list(_COLUMN_KEYS)}"
        )
    raw_fields = data.get("fields") or ()
    specs: list[FieldSpec] = []
    if isinstance(raw_fields, Mapping):
        for name, entries in raw_fields.items():
            if not isinstance(entries, Mapping):
                raise SpecError(
                    f"{origin}: fields.{name}: expected a table, found {type(entries).__name__}"
                )
            specs.append(_field_from_mapping(name, entries, origin=origin))
    elif isinstance(raw_fields, Sequence) and not isinstance(raw_fields, str):
        for item in raw_fields:
            if isinstance(item, FieldSpec):
                specs.append(item)
            elif isinstance(item, str):
                specs.append(_field_from_mapping(item, {}, origin=origin))
            else:
                raise SpecError(
                    f"{origin}: fields: expected field names, found {type(item).__name__} {item!r}"
                )
    else:
        raise SpecError(
            f"{origin}: fields: expected a table or a list of names, "
            f"found {type(raw_fields).__name__}"
        )
    try:
        return TableSpec(
            fields=tuple(specs),
            format=data.get("format"),
            id_column=columns.get("id"),
            vector_column=columns.get("vector"),
            count_column=columns.get("count"),
            field_column=columns.get("field"),
        )
    except SpecError as exc:
        raise SpecError(f"{origin}: {exc}") from exc


def _field_from_mapping(name: Any, entries: Mapping[str, Any], *, origin: str) -> FieldSpec:
    unknown = sorted(set(entries) - set(_FIELD_KEYS))
    if unknown:
        raise SpecError(
            f"{origin}: fields.{name}: unknown keys {unknown}; expected some of {list(_FIELD_KEYS)}"
        )
    try:
        return FieldSpec(name, **{k: entries[k] for k in _FIELD_KEYS if k in entries})
    except SpecError as exc:
        raise SpecError(f"{origin}: {exc}") from exc


__all__ = [
    "FORMATS",
    "FieldSpec",
    "TableSpec",
    "load_spec",
    "parse_field_flag",
    "spec_from_flags",
]
