"""The .npz and .npy-directory readers."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from saec.loaders import (
    InputNotFoundError,
    InvalidCountError,
    LengthMismatchError,
    LoaderError,
    MissingArrayError,
    MissingFieldError,
    NonFiniteVectorError,
    ShapeError,
    UnreadableInputError,
    UnsupportedDtypeError,
    open_table,
)
from saec.loaders.spec import SpecLike
from tests.loaders.conformance import TableConformance
from tests.loaders.tables import FieldData, make_field


def arrays_of(table: dict[str, FieldData]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for name, data in table.items():
        arrays[f"{name}.ids"] = data.ids
        arrays[f"{name}.vectors"] = data.vectors
        if data.counts is not None:
            arrays[f"{name}.counts"] = data.counts
    return arrays


def save_dir(directory: Path, arrays: dict[str, Any]) -> Path:
    directory.mkdir(exist_ok=True)
    for key, array in arrays.items():
        np.save(directory / f"{key}.npy", array)
    return directory


class TestNpzConformance(TableConformance):
    format = "npz"

    def write(self, tmp_path: Path, table: dict[str, FieldData]) -> tuple[Path, SpecLike]:
        path = tmp_path / "table.npz"
        np.savez(path, **arrays_of(table))
        return path, None


class TestCompressedNpzConformance(TableConformance):
    format = "npz"

    def write(self, tmp_path: Path, table: dict[str, FieldData]) -> tuple[Path, SpecLike]:
        path = tmp_path / "table.npz"
        np.savez_compressed(path, **arrays_of(table))
        return path, None


class TestNpyDirConformance(TableConformance):
    format = "npy"

    def write(self, tmp_path: Path, table: dict[str, FieldData]) -> tuple[Path, SpecLike]:
        return save_dir(tmp_path / "table", arrays_of(table)), None


@pytest.fixture(params=["npz", "npz-compressed", "npy"])
def write_arrays(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A function writing a dict of arrays in one of the three layouts; returns the path."""

    def write(arrays: dict[str, Any]) -> Path:
        if request.param == "npy":
            return save_dir(tmp_path / "table", arrays)
        path = tmp_path / "table.npz"
        (np.savez_compressed if request.param == "npz-compressed" else np.savez)(path, **arrays)
        return path

    return write


def test_spec_names_other_keys(write_arrays: Any) -> None:
    data = make_field(500, 4, seed=1)
    path = write_arrays({"uid": data.ids, "emb": data.vectors, "freq": data.counts})
    spec = {"fields": {"user": {"ids": "uid", "vectors": "emb", "counts": "freq.npy"}}}
    chunk = open_table(path, spec).read_field("user")
    np.testing.assert_array_equal(chunk.ids, data.ids)
    np.testing.assert_array_equal(chunk.vectors, data.vectors)
    np.testing.assert_array_equal(chunk.counts, data.counts)


def test_source_renames_a_field(write_arrays: Any) -> None:
    data = make_field(50, 4, seed=1)
    path = write_arrays({"u.ids": data.ids, "u.vectors": data.vectors})
    with open_table(path, {"fields": {"user": {"source": "u"}}}) as source:
        assert [f.name for f in source.fields()] == ["user"]
        np.testing.assert_array_equal(source.read_field("user").vectors, data.vectors)


def test_ids_and_vectors_of_different_lengths(write_arrays: Any) -> None:
    data = make_field(50, 4, seed=1)
    path = write_arrays({"user.ids": data.ids[:49], "user.vectors": data.vectors})
    with pytest.raises(LengthMismatchError) as caught:
        open_table(path).fields()
    message = str(caught.value)
    assert "field 'user'" in message and "49 ids in 'user.ids'" in message
    assert "50 vectors in 'user.vectors'" in message and str(path) in message


def test_counts_of_the_wrong_length(write_arrays: Any) -> None:
    data = make_field(50, 4, seed=1)
    path = write_arrays(
        {"user.ids": data.ids, "user.vectors": data.vectors, "user.counts": np.ones(51, np.int64)}
    )
    with pytest.raises(LengthMismatchError, match=r"51 counts in 'user.counts' and 50 vectors"):
        open_table(path).read_field("user")


def test_missing_ids_array(write_arrays: Any) -> None:
    data = make_field(50, 4, seed=1)
    path = write_arrays({"user.vectors": data.vectors})
    with pytest.raises(
        MissingArrayError, match=r"field 'user': expected an array 'user.ids' of ids"
    ):
        open_table(path).fields()


def test_counts_named_by_the_spec_are_required(write_arrays: Any) -> None:
    data = make_field(50, 4, seed=1)
    path = write_arrays({"user.ids": data.ids, "user.vectors": data.vectors})
    with pytest.raises(MissingArrayError, match=r"expected an array 'user.freq' of counts"):
        open_table(path, {"fields": {"user": {"counts": "user.freq"}}}).fields()


def test_no_field_by_the_default_names(write_arrays: Any) -> None:
    path = write_arrays({"weights": np.zeros((3, 2), np.float32)})
    with pytest.raises(MissingFieldError, match="found no embedding field"):
        open_table(path).fields()


@pytest.mark.parametrize(
    ("key", "array", "error", "expected"),
    [
        (
            "user.ids",
            np.arange(50.0),
            UnsupportedDtypeError,
            "ids in 'user.ids': expected integers",
        ),
        (
            "user.vectors",
            np.ones((50, 4), np.int32),
            UnsupportedDtypeError,
            "expected floating point",
        ),
        ("user.vectors", np.ones(50, np.float32), ShapeError, r"expected shape \(n, dim\)"),
        ("user.vectors", np.ones((50, 0), np.float32), ShapeError, "dim >= 1"),
        ("user.ids", np.arange(100).reshape(50, 2), ShapeError, r"expected shape \(n,\)"),
        ("user.counts", np.array(["a"] * 50), UnsupportedDtypeError, "counts in 'user.counts'"),
    ],
)
def test_arrays_of_the_wrong_dtype_or_shape(
    write_arrays: Any, key: str, array: np.ndarray, error: type[Exception], expected: str
) -> None:
    data = make_field(50, 4, seed=1)
    arrays = {"user.ids": data.ids, "user.vectors": data.vectors, key: array}
    with pytest.raises(error, match=expected):
        open_table(write_arrays(arrays)).fields()


def test_pickled_object_arrays_are_refused(write_arrays: Any) -> None:
    data = make_field(5, 4, seed=1)
    ids = np.array(["a", "b", "c", "d", "e"], dtype=object)
    path = write_arrays({"user.ids": ids, "user.vectors": data.vectors})
    with pytest.raises(UnsupportedDtypeError, match=r"holds Python objects.*dtype=str"):
        open_table(path).fields()


def test_float_counts_must_be_whole(write_arrays: Any) -> None:
    data = make_field(50, 4, seed=1)
    counts = data.counts.astype(np.float64)  # type: ignore[union-attr]
    path = write_arrays({"user.ids": data.ids, "user.vectors": data.vectors, "user.counts": counts})
    np.testing.assert_array_equal(open_table(path).read_field("user").counts, data.counts)
    counts[30] = 2.5
    path = write_arrays({"user.ids": data.ids, "user.vectors": data.vectors, "user.counts": counts})
    with pytest.raises(InvalidCountError, match=r"count at row 30 in 'user.counts' is 2.5"):
        open_table(path).read_field("user")


def test_other_dtypes_and_layouts_are_converted(write_arrays: Any) -> None:
    data = make_field(300, 6, seed=2)
    arrays = {
        "user.ids": data.ids.astype(">i8"),
        "user.vectors": np.asfortranarray(data.vectors.astype(">f8")),
        "user.counts": data.counts.astype(np.uint16),  # type: ignore[union-attr]
        "item.ids": data.ids.astype(np.uint64),
        "item.vectors": data.vectors.astype(np.float16),
    }
    with open_table(write_arrays(arrays)) as source:
        user = source.read_field("user")
        assert (
            user.ids.dtype == np.int64 and user.counts is not None and user.counts.dtype == np.int64
        )
        np.testing.assert_array_equal(user.ids, data.ids)
        np.testing.assert_array_equal(user.vectors, data.vectors)
        assert [len(c) for c in source.iter_chunks("user", 128)] == [128, 128, 44]
        item = source.read_field("item")
        assert item.ids.dtype == np.uint64
        np.testing.assert_array_equal(
            item.vectors, data.vectors.astype(np.float16).astype(np.float32)
        )


def test_float64_beyond_float32_range_is_reported_not_wrapped(write_arrays: Any) -> None:
    data = make_field(20, 3, seed=2)
    vectors = data.vectors.astype(np.float64)
    vectors[7, 1] = 1e300
    path = write_arrays({"user.ids": data.ids, "user.vectors": vectors})
    with pytest.raises(NonFiniteVectorError, match="row 7 holds inf"):
        open_table(path).read_field("user")


def test_an_empty_field(write_arrays: Any) -> None:
    path = write_arrays(
        {"user.ids": np.empty(0, np.int64), "user.vectors": np.empty((0, 5), np.float32)}
    )
    with open_table(path) as source:
        assert source.field_info("user").rows == 0
        chunk = source.read_field("user")
        assert chunk.vectors.shape == (0, 5) and len(chunk.ids) == 0
        assert list(source.iter_chunks("user")) == []


def test_reading_a_chunk_does_not_read_the_whole_array(tmp_path: Path) -> None:
    vectors = np.ones((40_000, 64), np.float32)  # 10 MB
    arrays = {"user.ids": np.arange(40_000), "user.vectors": vectors}
    for layout, path in [
        ("npz", tmp_path / "t.npz"),
        ("npz-compressed", tmp_path / "tc.npz"),
        ("npy", tmp_path / "dir"),
    ]:
        if layout == "npy":
            save_dir(path, arrays)
        else:
            (np.savez_compressed if layout == "npz-compressed" else np.savez)(path, **arrays)
        with open_table(path) as source:
            tracemalloc.start()
            chunks = source.iter_chunks("user", chunk_rows=1_000)
            first = next(chunks)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert len(first) == 1_000
            assert peak < 2_000_000, (layout, peak)  # a chunk is 256 kB; the array 10 MB


def test_a_single_npy_file_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "user.npy"
    np.save(path, np.zeros((3, 2), np.float32))
    with pytest.raises(UnreadableInputError, match=r"a single .npy file holds one array"):
        open_table(path)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_a_truncated_npz_is_unreadable(tmp_path: Path, keep: float) -> None:
    data = make_field(2_000, 8, seed=3)
    path = tmp_path / "t.npz"
    np.savez(path, **{"user.ids": data.ids, "user.vectors": data.vectors})
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(UnreadableInputError, match=r"not a readable .npz archive"):
        open_table(path)


def test_a_truncated_npy_file_is_unreadable(tmp_path: Path) -> None:
    data = make_field(2_000, 8, seed=3)
    directory = save_dir(tmp_path / "d", {"user.ids": data.ids, "user.vectors": data.vectors})
    member = directory / "user.vectors.npy"
    member.write_bytes(member.read_bytes()[:-100])
    with pytest.raises(UnreadableInputError, match=r"'user.vectors' is truncated.*64000 bytes"):
        open_table(directory).fields()


def test_a_corrupt_compressed_member_is_unreadable(tmp_path: Path) -> None:
    data = make_field(5_000, 8, seed=3)
    path = tmp_path / "t.npz"
    np.savez_compressed(path, **{"user.ids": data.ids, "user.vectors": data.vectors})
    with zipfile.ZipFile(path) as archive:
        member = archive.getinfo("user.vectors.npy")
        start = member.header_offset + 30 + len(member.filename) + len(member.extra)
        middle = start + member.compress_size // 2
    raw = bytearray(path.read_bytes())
    raw[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(raw))
    with pytest.raises(UnreadableInputError, match="cannot read rows"):
        open_table(path).read_field("user")


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["stored", "compressed"])
def test_flipped_bytes_raise_loader_errors_never_wrong_values(tmp_path: Path, save: Any) -> None:
    """Seeded fuzzing: a damaged archive raises a LoaderError or reads back the clean values
    (flips in metadata nothing reads); it never crashes or returns altered rows. Stored
    members are memory-mapped, so this also proves their CRC-32 is checked."""
    user, item = make_field(300, 4, seed=4, string_ids=True), make_field(100, 3, seed=5)
    clean = tmp_path / "clean.npz"
    save(
        clean,
        **{
            "user.ids": user.ids,
            "user.vectors": user.vectors,
            "user.counts": user.counts,
            "item.ids": item.ids,
            "item.vectors": item.vectors,
        },
    )
    expected = read_all(clean)
    raw = clean.read_bytes()
    rng = np.random.default_rng(1234)
    path = tmp_path / "fuzz.npz"
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
        # A flip in the central directory may rename a member, so a field or its counts
        # can vanish; what is read must still be what was written.
        for name, chunk in got.items():
            if name in expected and (chunk.counts is None) == (expected[name].counts is None):
                assert_same(chunk, expected[name])
    assert failures > 250


def read_all(path: Path) -> dict[str, Any]:
    with open_table(path) as source:
        return {info.name: source.read_field(info.name) for info in source.fields()}


def assert_same(got: Any, expected: Any) -> None:
    np.testing.assert_array_equal(got.ids, expected.ids)
    np.testing.assert_array_equal(got.vectors, expected.vectors)
    np.testing.assert_array_equal(got.counts, expected.counts)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        open_table(tmp_path / "absent.npz")
    with pytest.raises(FileNotFoundError, match=r"absent.npz"):
        open_table(tmp_path / "absent.npz")


def test_reading_npz_imports_neither_torch_nor_pyarrow(tmp_path: Path) -> None:
    data = make_field(10, 3, seed=1)
    path = tmp_path / "t.npz"
    np.savez(path, **{"user.ids": data.ids, "user.vectors": data.vectors})
    code = (
        "import sys; from loaders import open_table; "
        f"t = open_table({str(path)!r}); t.read_field('user'); "
        "print(sorted(m for m in ('torch', 'pyarrow') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_fields_of_a_file_are_listed_once_however_many_there_are(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Listing the file's arrays again for each field made opening 1000 fields take a second.
    from saec.loaders.numpy_table import NpzTable

    table = {f"f{i}": make_field(5, 3, seed=i) for i in range(40)}
    np.savez(tmp_path / "t.npz", **arrays_of(table))
    calls = []
    real = NpzTable._discover
    monkeypatch.setattr(NpzTable, "_discover", lambda self: calls.append(1) or real(self))
    with open_table(tmp_path / "t.npz") as t:
        assert [f.name for f in t.fields()] == [f"f{i}" for i in range(40)]
        assert t.read_field("f7").ids.tolist() == table["f7"].ids.tolist()
        with pytest.raises(MissingFieldError, match="no such field"):
            t.read_field("f40")
    assert len(calls) == 1
