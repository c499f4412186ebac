"""The Parquet reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from saec.loaders import (  # noqa: E402  (after the importorskip)
    InvalidCountError,
    LoaderError,
    MissingArrayError,
    MissingFieldError,
    MissingValueError,
    RaggedVectorError,
    UnreadableInputError,
    UnsupportedDtypeError,
    open_table,
)
from saec.loaders.spec import SpecLike  # noqa: E402
from tests.loaders.conformance import TableConformance  # noqa: E402
from tests.loaders.tables import FieldData, make_field  # noqa: E402


def vector_array(vectors: np.ndarray, fixed: bool, value_type: Any = None) -> Any:
    """A list column from (n, dim) vectors, built from flat values and offsets."""
    value_type = value_type or pa.float32()
    values = pa.array(vectors.reshape(-1), type=value_type)
    if fixed:
        return pa.FixedSizeListArray.from_arrays(values, vectors.shape[1])
    offsets = pa.array(np.arange(0, vectors.size + 1, vectors.shape[1], dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, values)


def field_table(name: str | None, data: FieldData, fixed: bool) -> Any:
    columns: dict[str, Any] = {}
    if name is not None:
        columns["field"] = pa.array([name] * len(data.ids))
    columns["id"] = pa.array(data.ids)
    columns["vector"] = vector_array(data.vectors, fixed)
    if data.counts is not None:
        columns["count"] = pa.array(data.counts)
    return pa.table(columns)


def write_fields(
    path: Path, table: dict[str, FieldData], *, fixed: bool, row_group_size: int = 2_500
) -> Path:
    """One file, a field column, fields one after another in row groups of 2,500 rows."""
    pq.write_table(
        pa.concat_tables([field_table(n, d, fixed) for n, d in table.items()]),
        path,
        row_group_size=row_group_size,
    )
    return path


class TestListParquetConformance(TableConformance):
    format = "parquet"

    def write(self, tmp_path: Path, table: dict[str, FieldData]) -> tuple[Path, SpecLike]:
        return write_fields(tmp_path / "t.parquet", table, fixed=False), None


class TestFixedSizeListParquetConformance(TableConformance):
    format = "parquet"
    dims: ClassVar[dict[str, int]] = {
        "user": 8,
        "item": 8,
    }  # one fixed_size_list column holds one length

    def write(self, tmp_path: Path, table: dict[str, FieldData]) -> tuple[Path, SpecLike]:
        return write_fields(tmp_path / "t.parquet", table, fixed=True), None


class TestInterleavedParquetConformance(TableConformance):
    """Fields' rows mixed throughout the file, so every batch is filtered."""

    format = "parquet"

    def write(self, tmp_path: Path, table: dict[str, FieldData]) -> tuple[Path, SpecLike]:
        whole = pa.concat_tables([field_table(n, d, fixed=False) for n, d in table.items()])
        user_rows = len(table["user"].ids)
        item_rows = whole.num_rows - user_rows
        # Item rows spread evenly among user rows, each field keeping its own order.
        item_slots = np.linspace(0, whole.num_rows - 1, item_rows).astype(np.int64)
        order = np.empty(whole.num_rows, dtype=np.int64)
        is_item = np.zeros(whole.num_rows, dtype=bool)
        is_item[item_slots] = True
        order[is_item] = np.arange(user_rows, whole.num_rows)
        order[~is_item] = np.arange(user_rows)
        path = tmp_path / "t.parquet"
        pq.write_table(whole.take(pa.array(order)), path, row_group_size=1_000)
        return path, None


def test_a_file_without_field_column_is_one_field(tmp_path: Path) -> None:
    data = make_field(1_000, 5, seed=1)
    path = tmp_path / "user.parquet"
    pq.write_table(field_table(None, data, fixed=True), path, row_group_size=300)
    with open_table(path) as source:
        assert [f.name for f in source.fields()] == ["user"]  # the file's stem
        np.testing.assert_array_equal(source.read_field("user").vectors, data.vectors)
    with open_table(path, {"fields": ["clicks"]}) as source:  # the spec names it
        assert [len(c) for c in source.iter_chunks("clicks", 400)] == [400, 400, 200]
    with pytest.raises(MissingFieldError, match="no field column 'field', so it holds one field"):
        open_table(path, {"fields": ["a", "b"]})


def test_columns_renamed_table_wide_and_per_field(tmp_path: Path) -> None:
    user, item = make_field(100, 4, seed=1), make_field(60, 4, seed=2)
    table = pa.table(
        {
            "slot": pa.array([7] * 100 + [9] * 60),  # integer field names
            "feature_id": pa.array(np.concatenate([user.ids, item.ids])),
            "emb": vector_array(np.concatenate([user.vectors, item.vectors]), fixed=False),
            "freq": pa.array(np.concatenate([user.counts, item.counts])),  # type: ignore[list-item]
            "item_freq": pa.array(np.concatenate([np.zeros(100, np.int32), item.counts * 2])),  # type: ignore[operator]
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    spec = {
        "columns": {"id": "feature_id", "vector": "emb", "count": "freq", "field": "slot"},
        "fields": {"user": {"source": "7"}, "item": {"source": "9", "counts": "item_freq"}},
    }
    with open_table(path, spec) as source:
        assert [(f.name, f.rows) for f in source.fields()] == [("user", 100), ("item", 60)]
        np.testing.assert_array_equal(source.read_field("user").counts, user.counts)
        np.testing.assert_array_equal(source.read_field("item").counts, item.counts * 2)  # type: ignore[operator]
        np.testing.assert_array_equal(source.read_field("item").ids, item.ids)
    with open_table(
        path, {"columns": {"id": "feature_id", "vector": "emb", "field": "slot"}}
    ) as source:
        assert [f.name for f in source.fields()] == ["7", "9"]
        assert not source.field_info("7").has_counts


def test_reading_a_field_reads_only_its_row_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = {"user": make_field(10_000, 4, seed=1), "item": make_field(700, 4, seed=2)}
    path = write_fields(tmp_path / "t.parquet", table, fixed=False)  # row groups of 2,500
    source = open_table(path)
    source.fields()
    asked: list[list[int]] = []
    real = source._file.iter_batches

    def spy(*args: Any, **kwargs: Any) -> Any:
        asked.append(list(kwargs["row_groups"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(source._file, "iter_batches", spy)
    np.testing.assert_array_equal(source.read_field("item").ids, table["item"].ids)
    assert asked == [[4]]  # rows 10,000..10,699: the fifth row group only


def test_string_and_dictionary_columns(tmp_path: Path) -> None:
    data = make_field(200, 3, seed=1, string_ids=True)
    table = pa.table(
        {
            "field": pa.array(["user"] * 200).dictionary_encode(),
            "id": pa.array(data.ids.tolist(), type=pa.large_string()).dictionary_encode(),
            "vector": vector_array(data.vectors, fixed=False, value_type=pa.float64()),
            "count": pa.array(data.counts.astype(np.float64)),  # type: ignore[union-attr]
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    chunk = open_table(path).read_field("user")
    assert chunk.ids.tolist() == data.ids.tolist()
    np.testing.assert_array_equal(chunk.vectors, data.vectors)
    np.testing.assert_array_equal(chunk.counts, data.counts)


def test_large_list_and_half_precision(tmp_path: Path) -> None:
    data = make_field(50, 6, seed=1)
    half = data.vectors.astype(np.float16)
    values = pa.array(half.reshape(-1), type=pa.float16())
    offsets = pa.array(np.arange(0, half.size + 1, 6, dtype=np.int64))
    table = pa.table(
        {"id": pa.array(data.ids), "vector": pa.LargeListArray.from_arrays(offsets, values)}
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    np.testing.assert_array_equal(open_table(path).read_field("t").vectors, half.astype(np.float32))


def test_ragged_vectors_name_the_row(tmp_path: Path) -> None:
    data = make_field(3_000, 4, seed=1)
    lists = [list(map(float, v)) for v in data.vectors]
    lists[2_222] = lists[2_222][:3]
    table = pa.table(
        {"id": pa.array(data.ids), "vector": pa.array(lists, type=pa.list_(pa.float32()))}
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    with pytest.raises(RaggedVectorError) as caught:
        list(open_table(path).iter_chunks("t", 1_000))
    message = str(caught.value)
    assert "field 't'" in message and str(path) in message
    assert "expected 4 values per vector" in message and "found 3 at row 2222" in message


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        ("id", "ids in column 'id': expected a value on every row, found null at row 1501"),
        (
            "vector",
            "vectors in column 'vector': expected a vector on every row, found null at row 1501",
        ),
        (
            "count",
            "counts in column 'count': expected a value on every row, found null at row 1501",
        ),
        ("value", "found a null value in the vector at row 1501"),
        (
            "field",
            "field column 'field': expected a field name on every row, found null at row 1501",
        ),
    ],
)
def test_nulls_are_missing_values(tmp_path: Path, column: str, expected: str) -> None:
    data = make_field(2_000, 4, seed=1)
    lists: list[Any] = [list(map(float, v)) for v in data.vectors]
    ids: list[Any] = data.ids.tolist()
    counts: list[Any] = data.counts.tolist()  # type: ignore[union-attr]
    fields: list[Any] = ["user"] * 2_000
    if column == "id":
        ids[1_501] = None
    elif column == "vector":
        lists[1_501] = None
    elif column == "value":
        lists[1_501][2] = None
    elif column == "count":
        counts[1_501] = None
    else:
        fields[1_501] = None
    table = pa.table(
        {
            "field": pa.array(fields),
            "id": pa.array(ids, type=pa.int64()),
            "vector": pa.array(lists, type=pa.list_(pa.float32())),
            "count": pa.array(counts, type=pa.int64()),
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=700)
    with pytest.raises(MissingValueError, match=expected):
        open_table(path).read_field("user")


def test_missing_and_mistyped_columns(tmp_path: Path) -> None:
    data = make_field(20, 4, seed=1)
    path = tmp_path / "t.parquet"
    pq.write_table(
        pa.table({"key": pa.array(data.ids), "vector": vector_array(data.vectors, True)}), path
    )
    with pytest.raises(
        MissingArrayError, match=r"expected a column 'id' of ids, found columns \['key', 'vector'\]"
    ):
        open_table(path).fields()
    with pytest.raises(MissingArrayError, match="expected a column 'freq' of counts"):
        open_table(path, {"columns": {"id": "key", "count": "freq"}}).fields()
    with pytest.raises(MissingArrayError, match="expected a field column 'slot'"):
        open_table(path, {"columns": {"field": "slot"}})
    pq.write_table(
        pa.table({"id": pa.array(data.ids), "vector": pa.array(data.vectors[:, 0])}), path
    )
    with pytest.raises(
        UnsupportedDtypeError, match="expected fixed_size_list<float> or list<float>, found float"
    ):
        open_table(path).fields()
    ints = pa.array([[1, 2]] * 20, type=pa.list_(pa.int32()))
    pq.write_table(pa.table({"id": pa.array(data.ids.astype(float)), "vector": ints}), path)
    with pytest.raises(
        UnsupportedDtypeError,
        match="ids in column 'id': expected integers or strings, found double",
    ):
        open_table(path).fields()


def test_negative_counts_in_a_later_batch(tmp_path: Path) -> None:
    data = make_field(5_000, 4, seed=1)
    counts = np.array(data.counts)
    counts[4_999] = -1
    path = tmp_path / "t.parquet"
    pq.write_table(
        field_table("user", data.with_(counts=counts), fixed=True), path, row_group_size=1_000
    )
    with pytest.raises(InvalidCountError, match="count at row 4999 is -1"):
        open_table(path).read_field("user")


def test_an_empty_single_field_file(tmp_path: Path) -> None:
    path = tmp_path / "user.parquet"
    empty = pa.table(
        {"id": pa.array([], pa.int64()), "vector": pa.array([], pa.list_(pa.float32(), 4))}
    )
    pq.write_table(empty, path)
    with open_table(path) as source:
        assert source.fields()[0].rows == 0
        assert source.read_field("user").vectors.shape == (0, 4)


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.95])
def test_a_truncated_file_is_unreadable(tmp_path: Path, keep: float) -> None:
    path = write_fields(tmp_path / "t.parquet", {"user": make_field(1_000, 4, seed=1)}, fixed=True)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(UnreadableInputError, match="not a readable Parquet file"):
        open_table(path)


def test_flipped_bytes_raise_loader_errors_never_wrong_values(tmp_path: Path) -> None:
    """Seeded fuzzing of a file written with page checksums, which the reader verifies:
    damage raises a LoaderError or leaves what is read intact, never another exception."""
    user = make_field(300, 4, seed=1, string_ids=True)
    item = make_field(100, 4, seed=2, string_ids=True)
    clean = tmp_path / "clean.parquet"
    pq.write_table(
        pa.concat_tables([field_table("user", user, False), field_table("item", item, False)]),
        clean,
        row_group_size=128,
        write_page_checksum=True,
    )
    expected = read_all(clean)
    raw = clean.read_bytes()
    rng = np.random.default_rng(99)
    path = tmp_path / "fuzz.parquet"
    failures = 0
    for _ in range(300):
        broken = bytearray(raw)
        for position in rng.integers(0, len(raw), size=rng.integers(1, 4)):
            broken[position] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(broken))
        try:
            got = read_all(path)
        except LoaderError:
            failures += 1
            continue
        assert got.keys() == expected.keys()
        for name, chunk in got.items():
            assert chunk.ids.tolist() == expected[name].ids.tolist()
            np.testing.assert_array_equal(chunk.vectors, expected[name].vectors)
            np.testing.assert_array_equal(chunk.counts, expected[name].counts)
    assert failures > 250


def read_all(path: Path) -> dict[str, Any]:
    with open_table(path) as source:
        return {info.name: source.read_field(info.name) for info in source.fields()}


def test_reading_parquet_does_not_import_torch(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = write_fields(tmp_path / "t.parquet", {"user": make_field(10, 4, seed=1)}, fixed=True)
    code = (
        "import sys; from loaders import open_table; "
        f"open_table({str(path)!r}).read_field('user'); print('torch' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_without_pyarrow_the_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from saec.loaders import MissingDependencyError

    path = write_fields(tmp_path / "t.parquet", {"user": make_field(10, 4, seed=1)}, fixed=True)
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'saec\[compress\]'") as caught:
        open_table(path)
    assert isinstance(caught.value, ImportError)
