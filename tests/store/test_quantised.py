"""Quantised dense fields (format version 2): float16 and 8-bit row-wise, served dequantised."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from saec.store.engine import LookupEngine
from saec.store.errors import InvalidTableError
from saec.store.footprint import snapshot_footprint
from saec.store.hashing import hash_ids
from saec.store.snapshot import open_current
from saec.store.writer import SnapshotWriter, dequantise_rowwise_8bit, quantise_rowwise_8bit


def _write(root: Path, dtype: str, vectors: np.ndarray, ids: np.ndarray) -> None:
    with SnapshotWriter(root, source="tests") as w:
        w.add_quantised_field("tag", hash_ids(ids, "tag"), vectors, dtype)
        w.publish()


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_quantised_field_serves_its_dequantised_rows(tmp_path: Path, dtype: str) -> None:
    rng = np.random.default_rng(4)
    ids = np.arange(500) * 7
    vectors = rng.normal(size=(500, 12)).astype(np.float32)
    vectors[3] = 0.25  # a constant row decodes exactly
    _write(tmp_path, dtype, vectors, ids)
    snap = open_current(tmp_path)
    snap.verify()
    assert snap.format_version == 2
    f = snap.fields["tag"]
    assert f.kind == "quantised"
    engine = LookupEngine(snap)
    got = engine.lookup({"tag": hash_ids(np.concatenate([ids, [1, 2]]), "tag")}).fields["tag"]
    assert got.found.tolist() == [True] * 500 + [False, False]
    assert got.vectors.dtype == np.float32 and got.vectors.shape == (502, 12)
    np.testing.assert_array_equal(got.vectors[500:], 0.0)
    if dtype == "float16":
        want = vectors.astype(np.float16).astype(np.float32)
    else:
        want = dequantise_rowwise_8bit(*quantise_rowwise_8bit(vectors))
    # Bit for bit what the writer's own decoding gives (aliased ids aside: none at 500).
    np.testing.assert_array_equal(got.vectors[:500], want)
    err = np.abs(got.vectors[:500] - vectors).max(axis=1)
    span = vectors.max(axis=1) - vectors.min(axis=1)
    bound = np.abs(vectors).max(axis=1) * 2.0**-11 if dtype == "float16" else span / 255 / 2 * 1.0001
    assert (err <= bound + 1e-7).all()
    assert got.vectors[3].tolist() == [0.25] * 12
    # zarr reads the same stored arrays.
    group = zarr.open_group(str(snap.path), mode="r")
    np.testing.assert_array_equal(np.asarray(group["tag/vectors"]), f.vectors)


def test_memory_counts_the_quantised_bytes(tmp_path: Path) -> None:
    ids = np.arange(1000)
    vectors = np.random.default_rng(1).normal(size=(1000, 16)).astype(np.float32)
    for dtype, per_row in (("float16", 2 * 16), ("int8", 16 + 8)):
        root = tmp_path / dtype
        _write(root, dtype, vectors, ids)
        field = snapshot_footprint(open_current(root), measure_resident=False)["fields"]["tag"]
        assert field["vectors_bytes"] == 1000 * per_row
        assert field["ratio_paper"] == pytest.approx(4 * 16 / per_row)


def test_plain_snapshots_stay_version_1_and_bad_dtypes_are_refused(tmp_path: Path) -> None:
    with SnapshotWriter(tmp_path / "a", source="tests") as w:
        w.add_dense_field("tag", hash_ids(np.arange(5), "tag"), np.ones((5, 2), np.float32))
        w.publish()
    assert open_current(tmp_path / "a").format_version == 1
    with SnapshotWriter(tmp_path / "b") as w, pytest.raises(InvalidTableError, match=r"expected dtype in \['float16', 'int8'\]"):
        w.add_quantised_field("tag", hash_ids(np.arange(5), "tag"), np.ones((5, 2), np.float32), "bf16")
    with SnapshotWriter(tmp_path / "c") as w, pytest.raises(InvalidTableError, match="float16's range"):
        w.add_quantised_field("tag", hash_ids(np.arange(5), "tag"), np.full((5, 2), 1e6, np.float32), "float16")


def test_a_quantised_field_takes_no_updates(tmp_path: Path) -> None:
    from saec.store.errors import InvalidUpdateError
    from saec.store.updates import Updater

    rng = np.random.default_rng(3)
    with SnapshotWriter(tmp_path / "s") as w:
        w.add_quantised_field("q", np.arange(1, 101, dtype=np.uint64), rng.normal(size=(100, 4)).astype(np.float32), "int8")
        w.publish()
    engine = LookupEngine(open_current(tmp_path / "s"))
    updater = Updater(tmp_path / "s", engine)
    with pytest.raises(InvalidUpdateError, match="quantised"):
        updater.prepare({"q": (np.array([5], np.uint64), np.ones((1, 4), np.float32))})


def test_fold_carries_quantised_fields_over_bit_for_bit(tmp_path: Path) -> None:
    """A fold rewrites every field; quantised ones (which take no updates) keep their stored rows."""
    from saec.store.fold import fold
    from saec.store.updates import Updater

    rng = np.random.default_rng(8)
    root = tmp_path / "s"
    ids = np.arange(3000) * 3
    users = rng.normal(size=(3000, 9)).astype(np.float32)
    with SnapshotWriter(root, source="tests") as w:
        w.add_dense_field("user", hash_ids(ids, "user"), users)
        w.add_quantised_field("half", hash_ids(ids, "half"), rng.normal(size=(3000, 6)).astype(np.float32), "float16")
        w.add_quantised_field("int8", hash_ids(ids, "int8"), rng.normal(size=(3000, 5)).astype(np.float32), "int8")
        w.publish()
    before = open_current(root)
    new_vector = rng.normal(size=(1, 9)).astype(np.float32)
    Updater(root, LookupEngine(before)).apply({"user": (hash_ids([10**9], "user"), new_vector)})
    fold(root)
    after = open_current(root)
    assert after.version != before.version
    probe = np.concatenate([ids, [1, 2]])
    for name in ("half", "int8"):
        old = LookupEngine(before).lookup({name: hash_ids(probe, name)}).fields[name]
        new = LookupEngine(after).lookup({name: hash_ids(probe, name)}).fields[name]
        assert np.array_equal(old.vectors.view(np.uint32), new.vectors.view(np.uint32))
        assert np.array_equal(old.found, new.found)
        for array in ("vectors", "scale", "bias"):
            a, b = getattr(before.fields[name], array), getattr(after.fields[name], array)
            assert (a is None and b is None) or np.array_equal(np.asarray(a), np.asarray(b))
    folded = LookupEngine(after).lookup({"user": hash_ids([10**9], "user")}).fields["user"]
    assert folded.found.all() and np.array_equal(folded.vectors, new_vector)


def test_every_finite_float16_value_is_widened_exactly(tmp_path: Path) -> None:
    # The kernel widens float16 on its bits (numba has no float16): every finite half,
    # subnormals and both zeros included, must come back as numpy widens it.
    halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    finite = halves[np.isfinite(halves)]
    vectors = finite.astype(np.float32).reshape(-1, 8)
    ids = np.arange(len(vectors))
    _write(tmp_path, "float16", vectors, ids)
    engine = LookupEngine(open_current(tmp_path))
    got = engine.lookup({"tag": hash_ids(ids, "tag")}).fields["tag"]
    assert got.found.all()
    same = (got.vectors.view(np.uint32) == vectors.view(np.uint32)).all(axis=1)
    # A key the index aliases (same bucket and 16-bit fingerprint) reads the row it aliases.
    assert (~same).sum() <= engine.field("tag").aliased
    stored = {row.tobytes() for row in vectors.view(np.uint32)}
    assert all(row.tobytes() in stored for row in got.vectors.view(np.uint32)[~same])
    assert same.mean() > 0.999
