from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import zarr

from saec.store.engine import LookupEngine
from saec.store.errors import (
    CorruptSnapshotError,
    FormatVersionError,
    InvalidTableError,
    SnapshotNotFoundError,
    StoreError,
)
from saec.store.hashing import hash_ids
from saec.store.layout import StoreLayout
from saec.store.snapshot import open_current, open_snapshot
from saec.store.writer import SnapshotWriter
from tests.conftest import write_small_store


def test_round_trip_returns_what_was_written(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    snap = open_current(root)
    assert snap.version == data["version"]
    assert snap.format_version == 1 and snap.hash_name == "saec-hash-v1" and snap.source == "tests"
    engine = LookupEngine(snap)
    res = engine.lookup(
        {"user": hash_ids(data["user_ids"], "user"), "country": hash_ids(data["country_ids"], "country")}
    )
    user = res.fields["user"]
    f = snap.fields["user"]
    # Every stored id is found; all but the few aliased ones get exactly their own row.
    assert user.found.all()
    expected = data["codebook"][data["masks"]]
    wrong = ~(user.vectors == expected).all(axis=1)
    assert wrong.sum() <= f.aliased <= 5
    assert np.array_equal(res.fields["country"].vectors, data["country"])
    assert res.fields["country"].found.all()
    f = snap.fields["user"]
    assert f.k == 16 and f.dim == 9 and f.features == 5000 and f.rows == 5000 - f.aliased
    assert f.masks is not None and f.masks.dtype == np.uint8


def test_mapped_bytes_equal_what_zarr_reads(small_store: tuple[Path, dict]) -> None:
    root, _ = small_store
    snap = open_current(root)
    group = zarr.open_group(str(snap.path), mode="r")
    for info in snap.arrays():
        name, rel = info.path.split("/", 1)
        f = snap.fields[name]
        if rel == "fold_bits":  # never mapped: read by a fold only, as plain bytes
            raw = (snap.path / info.path / "c" / "0").read_bytes()
            assert np.array_equal(np.frombuffer(raw, "<u2"), group[info.path][...]) and len(raw) == 2 * f.rows
            continue
        mapped = {
            "codebook": f.codebook,
            "masks": f.masks,
            "vectors": f.vectors,
            "mean": f.mean,
            "counts": f.counts,
            "index/fingerprints": f.index.fingerprints,
            "index/bucket_offsets": f.index.bucket_offsets,
            "index/block_bases": f.index.block_bases,
        }[rel]
        via_zarr = group[info.path][...]
        assert mapped is not None
        assert mapped.dtype == via_zarr.dtype and mapped.shape == via_zarr.shape, info.path
        assert np.array_equal(mapped, via_zarr), info.path


def test_all_zero_arrays_are_still_written(tmp_path: Path) -> None:
    # zarr skips chunks equal to the fill value unless told not to; a mapped reader
    # would then find no file. Masks of all zeros and zero vectors are legitimate.
    keys = hash_ids(np.arange(300), "z")
    with SnapshotWriter(tmp_path, source="zeros") as w:
        w.add_compressed_field("z", keys, np.zeros((2, 4), np.float32), np.zeros(300, np.uint8))
        w.add_dense_field("d", hash_ids(np.arange(5), "d"), np.zeros((5, 3), np.float32))
        w.publish()
    snap = open_current(tmp_path)
    snap.verify()
    group = zarr.open_group(str(snap.path), mode="r")
    assert np.array_equal(group["z/masks"][...], snap.fields["z"].masks)


def test_opening_reads_no_array(tmp_path: Path, rng: np.random.Generator) -> None:
    n = 400_000
    with SnapshotWriter(tmp_path) as w:
        w.add_compressed_field(
            "big", hash_ids(np.arange(n), "big"), rng.normal(size=(100, 17)).astype(np.float32),
            rng.integers(0, 100, n).astype(np.uint8), rng.integers(0, 9, n),
        )
        w.publish()
    tracemalloc.start()
    snap = open_current(tmp_path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    on_disk = sum(a.nbytes for a in snap.arrays())
    assert on_disk > 2_000_000
    # Python-side allocations while opening are metadata only: far below the data size.
    assert peak < on_disk / 20


def test_uint16_masks_for_large_k(tmp_path: Path, rng: np.random.Generator) -> None:
    n, k = 3000, 300
    masks = rng.integers(0, k, n).astype(np.uint16)
    cb = rng.normal(size=(k, 4)).astype(np.float32)
    keys = hash_ids(np.arange(n), "w")
    with SnapshotWriter(tmp_path) as w:
        w.add_compressed_field("w", keys, cb, masks)
        w.publish()
    snap = open_current(tmp_path)
    assert snap.fields["w"].masks.dtype == np.uint16
    res = LookupEngine(snap).lookup({"w": keys})
    assert res.fields["w"].found.all()
    wrong = ~(res.fields["w"].vectors == cb[masks]).all(axis=1)
    assert wrong.sum() <= snap.fields["w"].aliased


def test_publish_is_atomic_and_keeps_history(tmp_path: Path, rng: np.random.Generator) -> None:
    layout = StoreLayout(tmp_path)
    versions = []
    for _ in range(4):
        with SnapshotWriter(tmp_path, keep=3) as w:
            w.add_dense_field("d", hash_ids(np.arange(10), "d"), rng.normal(size=(10, 3)).astype(np.float32))
            versions.append(w.publish())
    assert versions == sorted(versions)
    assert layout.current() == versions[-1]
    assert layout.versions() == versions[-3:]  # the oldest was pruned
    assert not any(layout.partial_dir.iterdir())
    assert layout.rollback() == versions[-2]
    assert open_current(tmp_path).version == versions[-2]
    layout.set_current(versions[-1])
    assert open_current(tmp_path).version == versions[-1]


def test_failed_write_leaves_store_untouched(small_store: tuple[Path, dict], rng: np.random.Generator) -> None:
    root, data = small_store
    with pytest.raises(InvalidTableError, match="finite"):
        with SnapshotWriter(root) as w:
            w.add_dense_field("ok", hash_ids(np.arange(3), "ok"), np.ones((3, 2), np.float32))
            bad = np.ones((4, 2), np.float32)
            bad[2, 1] = np.nan
            w.add_dense_field("bad", hash_ids(np.arange(4), "bad"), bad)
            w.publish()
    layout = StoreLayout(root)
    assert layout.current() == data["version"]
    assert layout.versions() == [data["version"]]
    assert not any(layout.partial_dir.iterdir())


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda w: w.add_compressed_field("f", hash_ids([1, 2], "f"), np.ones((2, 3), np.float32), np.array([0, 2])), r"masks in \[0, 2\)"),
        (lambda w: w.add_compressed_field("f", hash_ids([1, 2], "f"), np.ones((2, 3), np.float32), np.array([0, 1, 1], np.uint8)), "one key per row"),
        (lambda w: w.add_dense_field("f", np.array([1, 1], np.uint64), np.ones((2, 3), np.float32)), "distinct keys"),
        (lambda w: w.add_dense_field("f", np.array([1, 2], np.int64), np.ones((2, 3), np.float32)), "uint64"),
        (lambda w: w.add_dense_field("f", hash_ids([1], "f"), np.ones((1, 3), np.float64).astype(int)), "float32"),
        (lambda w: w.add_dense_field("../x", hash_ids([1], "f"), np.ones((1, 3), np.float32)), "field name"),
        (lambda w: w.add_dense_field("f", hash_ids([1], "f"), np.ones((1, 3), np.float32), counts=np.array([-1])), "counts >= 0"),
        (lambda w: w.add_dense_field("f", np.zeros(0, np.uint64), np.ones((0, 3), np.float32)), "at least one feature"),
    ],
)
def test_writer_refuses_bad_tables(tmp_path: Path, mutate, match: str) -> None:
    with SnapshotWriter(tmp_path) as w, pytest.raises(InvalidTableError, match=match):
        mutate(w)


def test_empty_snapshot_cannot_publish(tmp_path: Path) -> None:
    with SnapshotWriter(tmp_path) as w, pytest.raises(StoreError, match="at least one field"):
        w.publish()


def test_empty_store_says_how_to_fill_it(tmp_path: Path) -> None:
    with pytest.raises(SnapshotNotFoundError, match="saec demo"):
        open_current(tmp_path)


def _first_chunk(snap_path: Path, rel: str) -> Path:
    return next((snap_path / rel / "c").rglob("*"))


def test_truncated_array_is_refused_on_open(small_store: tuple[Path, dict]) -> None:
    root, _ = small_store
    snap = open_current(root)
    path = snap.path / "user" / "masks" / "c" / "0"
    os.truncate(path, path.stat().st_size - 1)
    with pytest.raises(CorruptSnapshotError, match=r"user/masks: expected \d+ bytes .* found \d+"):
        open_snapshot(snap.path)


def test_flipped_byte_is_caught_by_verify(small_store: tuple[Path, dict]) -> None:
    root, _ = small_store
    snap = open_current(root)
    path = snap.path / "country" / "vectors" / "c" / "0" / "0"
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptSnapshotError, match="country/vectors: expected sha256"):
        open_snapshot(snap.path).verify()


def test_future_format_is_refused(small_store: tuple[Path, dict]) -> None:
    import orjson

    root, _ = small_store
    snap = open_current(root)
    meta = orjson.loads((snap.path / "zarr.json").read_bytes())
    meta["attributes"]["saec"]["format_version"] = 99
    (snap.path / "zarr.json").write_bytes(orjson.dumps(meta))
    with pytest.raises(FormatVersionError, match="found 99"):
        open_snapshot(snap.path)


def test_compressed_array_metadata_is_refused(small_store: tuple[Path, dict]) -> None:
    import orjson

    root, _ = small_store
    snap = open_current(root)
    meta_path = snap.path / "user" / "masks" / "zarr.json"
    meta = orjson.loads(meta_path.read_bytes())
    meta["codecs"].append({"name": "zstd", "configuration": {"level": 0, "checksum": False}})
    meta_path.write_bytes(orjson.dumps(meta))
    with pytest.raises(CorruptSnapshotError, match="user/masks/zarr.json: expected codecs"):
        open_snapshot(snap.path)


def test_current_naming_a_missing_snapshot(tmp_path: Path, rng: np.random.Generator) -> None:
    write_small_store(tmp_path, rng)
    (tmp_path / "CURRENT").write_text("20990101T000000.000000Z-dead\n")
    with pytest.raises(SnapshotNotFoundError, match="not in"):
        open_current(tmp_path)


@pytest.mark.parametrize("shape, dtype", [((7,), "uint8"), ((5, 3), "float32"), ((4,), "uint64"), ((9,), "uint16")])
def test_array_metadata_is_what_zarr_writes(tmp_path: Path, shape: tuple, dtype: str) -> None:
    import orjson

    from saec.store.writer import array_metadata

    group = zarr.open_group(str(tmp_path / "z"), mode="w", zarr_format=3)
    group.create_array("a", shape=shape, dtype=dtype, chunks=shape, compressors=None, filters=None, fill_value=0)
    theirs = orjson.loads((tmp_path / "z" / "a" / "zarr.json").read_bytes())
    assert array_metadata(shape, np.dtype(dtype)) == theirs
