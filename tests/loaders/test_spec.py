"""The field spec: from files, mappings and flags, and its errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from saec.loaders import (
    FieldSpec,
    InputNotFoundError,
    SpecError,
    TableSpec,
    load_spec,
    open_table,
    parse_field_flag,
    spec_from_flags,
)

TOML = """
format = "parquet"

[columns]
id = "feature_id"
vector = "embedding"
field = "slot"

[fields.user]
source = "u"
counts = "user_freq"

[fields.item]
"""

EXPECTED = TableSpec(
    fields=(FieldSpec("user", source="u", counts="user_freq"), FieldSpec("item")),
    format="parquet",
    id_column="feature_id",
    vector_column="embedding",
    field_column="slot",
)


def test_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    path.write_text(TOML)
    assert load_spec(path) == EXPECTED
    assert load_spec(str(path)) == EXPECTED


def test_a_json_file_and_the_same_mapping(tmp_path: Path) -> None:
    mapping = {
        "format": "parquet",
        "columns": {"id": "feature_id", "vector": "embedding", "field": "slot"},
        "fields": {"user": {"source": "u", "counts": "user_freq"}, "item": {}},
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(mapping))
    assert load_spec(path) == EXPECTED
    assert load_spec(mapping) == EXPECTED


def test_flags() -> None:
    spec = spec_from_flags(
        fields=["user:source=u,counts=user_freq", "item"],
        columns=["id=feature_id", "vector=embedding", "field=slot"],
        format="parquet",
    )
    assert spec == EXPECTED
    assert parse_field_flag("user:ids=user_ids, vectors=user_emb.weight") == FieldSpec(
        "user", ids="user_ids", vectors="user_emb.weight"
    )


def test_defaults() -> None:
    assert load_spec(None) == TableSpec()
    assert load_spec({"fields": ["a", "b"]}).names == ["a", "b"]
    assert load_spec(EXPECTED) is EXPECTED
    assert FieldSpec("user").key == "user" and FieldSpec("user", source="u").key == "u"
    assert EXPECTED.field("item") == FieldSpec("item") and EXPECTED.field("nope") is None


def test_a_spec_file_drives_open_table(tmp_path: Path) -> None:
    ids, vectors = np.arange(5), np.ones((5, 3), np.float32)
    np.savez(tmp_path / "t.npz", uid=ids, emb=vectors)
    (tmp_path / "spec.toml").write_text('[fields.user]\nids = "uid"\nvectors = "emb"\n')
    with open_table(tmp_path / "t.npz", tmp_path / "spec.toml") as source:
        assert [f.name for f in source.fields()] == ["user"]
        np.testing.assert_array_equal(source.read_field("user").ids, ids)


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        (
            {"colums": {}},
            r"unknown keys \['colums'\]; expected some of \['format', 'columns', 'fields'\]",
        ),
        ({"columns": {"ids": "x"}}, r"columns: unknown keys \['ids'\]"),
        ({"columns": ["id"]}, "columns: expected a table, found list"),
        ({"fields": {"user": {"vector": "x"}}}, r"fields.user: unknown keys \['vector'\]"),
        (
            {"fields": {"user": {"ids": 3}}},
            "field 'user': ids: expected a non-empty string, found 3",
        ),
        ({"fields": {"user": {"ids": ""}}}, "ids: expected a non-empty string, found ''"),
        ({"fields": {"user": "ids"}}, "fields.user: expected a table, found str"),
        ({"fields": "user"}, "fields: expected a table or a list of names, found str"),
        ({"fields": [3]}, "fields: expected field names, found int 3"),
        ({"fields": ["a", "a"]}, r"expected each name once, found \['a'\] more than once"),
        (
            {"fields": {"a": {"source": "x"}, "b": {"source": "x"}}},
            r"found \['x'\] read by several fields",
        ),
        (
            {"format": "csv"},
            r"format: expected one of \['npz', 'npy', 'parquet', 'torch'\], found 'csv'",
        ),
        ({"columns": {"id": 1}}, "columns: id_column: expected a non-empty string, found 1"),
    ],
)
def test_bad_mappings(mapping: dict[str, Any], expected: str) -> None:
    with pytest.raises(SpecError, match=expected) as caught:
        load_spec(mapping)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("user:ids", "--field 'user:ids': expected key=value after ':', found 'ids'"),
        ("user:colour=red", r"unknown keys \['colour'\]"),
        (":ids=x", "name: expected a non-empty string, found ''"),
    ],
)
def test_bad_field_flags(flag: str, expected: str) -> None:
    with pytest.raises(SpecError, match=expected):
        parse_field_flag(flag)


def test_bad_column_flag() -> None:
    with pytest.raises(SpecError, match="--column 'feature_id': expected key=name"):
        spec_from_flags(columns=["feature_id"])


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="spec file not found") as caught:
        load_spec(tmp_path / "absent.toml")
    assert isinstance(caught.value, FileNotFoundError)
    (tmp_path / "bad.toml").write_text("[fields.user\n")
    with pytest.raises(SpecError, match=r"bad.toml: cannot parse the spec as TOML"):
        load_spec(tmp_path / "bad.toml")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SpecError, match="cannot parse the spec as JSON"):
        load_spec(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(SpecError, match="expected a table at the top level, found list"):
        load_spec(tmp_path / "list.json")
    (tmp_path / "spec.yaml").write_text("fields: []")
    with pytest.raises(
        SpecError, match=r"expected a .json or .toml spec file, found suffix '.yaml'"
    ):
        load_spec(tmp_path / "spec.yaml")


def test_specs_are_frozen() -> None:
    with pytest.raises(AttributeError):
        EXPECTED.format = "npz"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        FieldSpec("user").ids = "x"  # type: ignore[misc]
