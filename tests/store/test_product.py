"""Product-quantised fields (format version 3): M masks a row, M sub-codebooks, one kernel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from saec.compress import ProductField, compress_field
from saec.store.engine import LookupEngine
from saec.store.errors import CorruptSnapshotError, InvalidTableError, InvalidUpdateError
from saec.store.footprint import snapshot_footprint
from saec.store.hashing import hash_ids
from saec.store.snapshot import open_current, open_snapshot
from saec.store.updates import Updater
from saec.store.writer import SnapshotWriter


def _product(n: int = 3000, dim: int = 12, slices: int = 3, k: int = 20, seed: int = 0) -> ProductField:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    out = compress_field(vectors, rng.integers(1, 100, size=n), k=k, min_factor=0, subvectors=slices, seed=seed)
    assert isinstance(out, ProductField)
    return out


def _write(root: Path, pq: ProductField, ids: np.ndarray) -> None:
    with SnapshotWriter(root, source="tests") as w:
        w.add_product_field("item", hash_ids(ids, "item"), pq.codebooks, pq.masks, attrs={"inertia": pq.inertia})
        w.add_dense_field("age", hash_ids(np.arange(5), "age"), np.ones((5, 3), np.float32))
        w.publish()


@pytest.mark.parametrize(("slices", "k"), [(3, 20), (2, 300)])
def test_product_field_answers_equal_a_numpy_reference(tmp_path: Path, slices: int, k: int) -> None:
    pq = _product(n=3000, dim=12, slices=slices, k=k)
    ids = np.arange(3000) * 11
    _write(tmp_path, pq, ids)
    snap = open_current(tmp_path)
    snap.verify()
    assert snap.format_version == 3
    f = snap.fields["item"]
    assert f.kind == "product" and f.k == k and f.dim == 12
    assert f.masks is not None and f.masks.dtype == (np.uint8 if k <= 256 else np.uint16)
    for default in ("zeros", "mean"):
        engine = LookupEngine(snap, default=default)
        asked = np.concatenate([ids[::-7], [1, 2, 3]])  # three ids never written
        got = engine.lookup({"item": hash_ids(asked, "item")}).fields["item"]
        assert got.vectors.dtype == np.float32 and got.vectors.shape == (len(asked), 12)
        width = 12 // slices
        rows = asked[:-3] // 11
        want = np.concatenate([pq.codebooks[m][pq.masks[rows, m]] for m in range(slices)], axis=1)
        # Bit for bit the reconstruction compress_field describes (no aliases at 3,000 keys).
        assert f.aliased == 0
        np.testing.assert_array_equal(got.vectors[:-3], want)
        np.testing.assert_array_equal(got.vectors[:-3], pq.vectors()[rows])
        assert got.found.tolist() == [True] * (len(asked) - 3) + [False] * 3
        expect_default = pq.vectors().mean(axis=0, dtype=np.float64) if default == "mean" else np.zeros(12)
        np.testing.assert_allclose(got.vectors[-3:], np.broadcast_to(expect_default, (3, 12)), rtol=1e-5, atol=1e-6)
        assert width * slices == 12
    # zarr reads the same stored arrays.
    group = zarr.open_group(str(snap.path), mode="r")
    np.testing.assert_array_equal(np.asarray(group["item/codebook"]), pq.codebooks)
    np.testing.assert_array_equal(np.asarray(group["item/masks"]), f.masks)


def test_memory_counts_m_masks_a_row_and_the_sub_codebooks(tmp_path: Path) -> None:
    pq = _product(n=2000, dim=8, slices=2, k=64)
    _write(tmp_path, pq, np.arange(2000))
    field = snapshot_footprint(open_current(tmp_path), measure_resident=False)["fields"]["item"]
    assert field["masks_bytes"] == 2000 * 2
    assert field["codebook_bytes"] == 2 * 64 * 4 * 4
    assert field["ratio_paper"] == pytest.approx(2000 * 4 * 8 / (2000 * 2 + 64 * 4 * 8))


def test_other_snapshots_keep_their_version_and_bad_tables_are_refused(tmp_path: Path) -> None:
    with SnapshotWriter(tmp_path / "a") as w:
        w.add_quantised_field("tag", hash_ids(np.arange(5), "tag"), np.ones((5, 2), np.float32), "int8")
        w.publish()
    assert open_current(tmp_path / "a").format_version == 2
    pq = _product(n=300, dim=4, slices=2, k=8)
    keys = hash_ids(np.arange(300), "item")
    with SnapshotWriter(tmp_path / "b") as w:
        with pytest.raises(InvalidTableError, match=r"masks in \[0, 8\)"):
            w.add_product_field("item", keys, pq.codebooks, pq.masks.astype(np.int64) + 1)
        with pytest.raises(InvalidTableError, match=r"masks of shape \(n, 2\)"):
            w.add_product_field("item", keys, pq.codebooks, pq.masks[:, :1])
        with pytest.raises(InvalidTableError, match=r"float32 \(M, k, dim / M\)"):
            w.add_product_field("item", keys, pq.codebooks[0], pq.masks)


def test_a_damaged_manifest_shape_is_refused(tmp_path: Path) -> None:
    pq = _product(n=500, dim=6, slices=3, k=10)
    _write(tmp_path, pq, np.arange(500))
    snap = open_current(tmp_path)
    meta = snap.path / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["saec"]["fields"]["item"]["k"] = 11  # codebooks hold 10 rows a slice
    meta.write_text(json.dumps(doc))
    with pytest.raises(CorruptSnapshotError, match="codebooks"):
        open_snapshot(snap.path)


def test_a_product_field_takes_no_updates(tmp_path: Path) -> None:
    pq = _product(n=400, dim=4, slices=2, k=8)
    _write(tmp_path, pq, np.arange(400))
    engine = LookupEngine(open_current(tmp_path))
    updater = Updater(tmp_path, engine)
    with pytest.raises(InvalidUpdateError, match="product-quantised"):
        updater.prepare({"item": (np.array([5], np.uint64), np.ones((1, 4), np.float32))})


def test_fold_carries_a_product_field_over_unchanged(tmp_path: Path) -> None:
    from saec.store.fold import fold

    pq = _product(n=600, dim=6, slices=3, k=10)
    ids = np.arange(600)
    _write(tmp_path, pq, ids)
    before = LookupEngine(open_current(tmp_path)).lookup({"item": hash_ids(ids, "item")}).fields["item"]
    result = fold(tmp_path)
    snap = open_current(tmp_path)
    assert snap.version == result.version and snap.format_version == 3 and snap.fields["item"].kind == "product"
    after = LookupEngine(snap).lookup({"item": hash_ids(ids, "item")}).fields["item"]
    np.testing.assert_array_equal(after.vectors, before.vectors)
    np.testing.assert_array_equal(after.found, before.found)
