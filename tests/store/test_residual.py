"""Residual-quantised fields (format version 4): S masks a row, S codebooks summed, one kernel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from saec.compress import ResidualField, compress_field
from saec.store import snapshot as snapshot_module
from saec.store.engine import LookupEngine
from saec.store.errors import CorruptSnapshotError, FormatVersionError, InvalidTableError, InvalidUpdateError
from saec.store.footprint import snapshot_footprint
from saec.store.hashing import hash_ids
from saec.store.snapshot import chunk_path, open_current, open_snapshot
from saec.store.updates import Updater
from saec.store.writer import SnapshotWriter


def _residual(n: int = 3000, dim: int = 12, stages: int = 3, k: int = 20, seed: int = 0) -> ResidualField:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    out = compress_field(vectors, rng.integers(1, 100, size=n), k=k, min_factor=0, stages=stages, seed=seed)
    assert isinstance(out, ResidualField)
    return out


def _write(root: Path, rq: ResidualField, ids: np.ndarray, codebook_dtype: str = "float32") -> None:
    with SnapshotWriter(root, source="tests") as w:
        w.add_residual_field(
            "item", hash_ids(ids, "item"), rq.codebooks, rq.masks, attrs={"inertia": rq.inertia},
            codebook_dtype=codebook_dtype,
        )
        w.add_dense_field("age", hash_ids(np.arange(5), "age"), np.ones((5, 3), np.float32))
        w.publish()


@pytest.mark.parametrize(("stages", "k"), [(3, 20), (2, 300)])
def test_residual_field_answers_equal_its_reconstruction_bit_for_bit(tmp_path: Path, stages: int, k: int) -> None:
    rq = _residual(n=3000, dim=12, stages=stages, k=k)
    ids = np.arange(3000) * 11
    _write(tmp_path, rq, ids)
    snap = open_current(tmp_path)
    snap.verify()
    assert snap.format_version == 4
    assert snap.manifest["fields"]["item"]["stages"] == stages
    f = snap.fields["item"]
    assert f.kind == "residual" and f.k == k and f.dim == 12 and f.stages == stages
    assert f.masks is not None and f.masks.dtype == (np.uint8 if k <= 256 else np.uint16)
    assert f.masks.shape == (3000, stages)
    # No aliases at 3,000 keys: every stored key reads its own row.
    assert f.aliased == 0
    served = rq.vectors()
    for default in ("zeros", "mean"):
        engine = LookupEngine(snap, default=default)
        asked = np.concatenate([ids[::-7], [1, 2, 3]])  # three ids never written
        got = engine.lookup({"item": hash_ids(asked, "item")}).fields["item"]
        assert got.vectors.dtype == np.float32 and got.vectors.shape == (len(asked), 12)
        rows = asked[:-3] // 11
        # Bit for bit what ResidualField.vectors() computes (same bytes, signed zeros too).
        assert got.vectors[:-3].tobytes() == served[rows].tobytes()
        assert got.found.tolist() == [True] * (len(asked) - 3) + [False] * 3
        expect_default = served.mean(axis=0, dtype=np.float64) if default == "mean" else np.zeros(12)
        np.testing.assert_allclose(got.vectors[-3:], np.broadcast_to(expect_default, (3, 12)), rtol=1e-5, atol=1e-6)
    # zarr reads the same stored arrays.
    group = zarr.open_group(str(snap.path), mode="r")
    np.testing.assert_array_equal(np.asarray(group["item/codebook"]), rq.codebooks)
    np.testing.assert_array_equal(np.asarray(group["item/masks"]), f.masks)


def test_one_stage_sums_nothing_and_negative_zeros_survive(tmp_path: Path) -> None:
    codebooks = np.array([[[-0.0, 1.5], [2.0, -0.0]], [[0.0, -0.0], [-0.0, 0.25]]], np.float32)  # (2, 2, 2)
    masks = np.array([[0, 0], [1, 1], [0, 1], [1, 0]], np.uint8)
    rq = ResidualField(codebooks=codebooks, masks=masks, inertia=0.0, n_iter=0, seconds=0.0, init="given", clustered=4)
    with SnapshotWriter(tmp_path / "two") as w:
        w.add_residual_field("item", hash_ids(np.arange(4), "item"), codebooks, masks)
        w.add_residual_field("one", hash_ids(np.arange(4), "one"), codebooks[:1], masks[:, :1])
        w.publish()
    engine = LookupEngine(open_current(tmp_path / "two"))
    got = engine.lookup({"item": hash_ids(np.arange(4), "item"), "one": hash_ids(np.arange(4), "one")}).fields
    assert got["item"].vectors.tobytes() == rq.vectors().tobytes()
    assert got["one"].vectors.tobytes() == codebooks[0][masks[:, 0]].tobytes()


def test_memory_counts_s_masks_a_row_and_the_stage_codebooks(tmp_path: Path) -> None:
    rq = _residual(n=2000, dim=8, stages=2, k=64)
    _write(tmp_path, rq, np.arange(2000))
    field = snapshot_footprint(open_current(tmp_path), measure_resident=False)["fields"]["item"]
    assert field["masks_bytes"] == 2000 * 2
    assert field["codebook_bytes"] == 2 * 64 * 8 * 4
    assert field["ratio_paper"] == pytest.approx(2000 * 4 * 8 / (2000 * 2 + 2 * 64 * 8 * 4))


def test_bad_tables_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    rq = _residual(n=300, dim=4, stages=2, k=8)
    keys = hash_ids(np.arange(300), "item")
    with SnapshotWriter(tmp_path / "b") as w:
        with pytest.raises(InvalidTableError, match=r"'item': expected masks in \[0, 8\), got \[1, 8\]"):
            w.add_residual_field("item", keys, rq.codebooks, rq.masks.astype(np.int64) + 1)
        with pytest.raises(InvalidTableError, match=r"masks in \[0, 8\), got \[-1"):
            w.add_residual_field("item", keys, rq.codebooks, rq.masks.astype(np.int64) - 1)
        with pytest.raises(InvalidTableError, match=r"integer masks of shape \(n, 2\), got uint8 \(300, 1\)"):
            w.add_residual_field("item", keys, rq.codebooks, rq.masks[:, :1])
        with pytest.raises(InvalidTableError, match=r"integer masks of shape \(n, 2\), got float32"):
            w.add_residual_field("item", keys, rq.codebooks, rq.masks.astype(np.float32))
        with pytest.raises(InvalidTableError, match=r"codebooks as float32 \(S, k, dim\), got float32 \(8, 4\)"):
            w.add_residual_field("item", keys, rq.codebooks[0], rq.masks)
        with pytest.raises(InvalidTableError, match=r"codebooks as float32 \(S, k, dim\), got float64"):
            w.add_residual_field("item", keys, rq.codebooks.astype(np.float64), rq.masks)
        nan = rq.codebooks.copy()
        nan[1, 3, 0] = np.nan
        with pytest.raises(InvalidTableError, match="finite codebooks"):
            w.add_residual_field("item", keys, nan, rq.masks)
        with pytest.raises(InvalidTableError, match="one key per row of masks: 299 keys, 300 rows"):
            w.add_residual_field("item", keys[:-1], rq.codebooks, rq.masks)
        # Nothing of the refused field reached the snapshot: the name is still free.
        w.add_residual_field("item", keys, rq.codebooks, rq.masks)
        w.publish()
    assert open_current(tmp_path / "b").format_version == 4


def test_other_snapshots_keep_their_version(tmp_path: Path) -> None:
    with SnapshotWriter(tmp_path / "a") as w:
        w.add_product_field("p", hash_ids(np.arange(5), "p"), np.ones((2, 3, 1), np.float32), np.zeros((5, 2), np.uint8))
        w.publish()
    assert open_current(tmp_path / "a").format_version == 3


def test_a_reader_of_version_3_refuses_version_4(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, _residual(n=300, dim=4, stages=2, k=8), np.arange(300))
    monkeypatch.setattr(snapshot_module, "READABLE_FORMATS", frozenset({1, 2, 3}))
    with pytest.raises(FormatVersionError, match=r"expected format_version in \[1, 2, 3\], found 4"):
        open_current(tmp_path)


@pytest.mark.parametrize("codebook_dtype", ["float32", "float16"])
def test_damaged_masks_are_clamped_inside_the_codebooks(tmp_path: Path, codebook_dtype: str) -> None:
    rq = _residual(n=400, dim=4, stages=2, k=8)
    _write(tmp_path, rq, np.arange(400), codebook_dtype)
    snap = open_current(tmp_path)
    info = snap.fields["item"].arrays["masks"]
    path = chunk_path(snap.path / info.path, len(info.shape))
    path.write_bytes(b"\xff" * path.stat().st_size)  # every mask 255, k = 8
    damaged = open_snapshot(snap.path)  # no verify(): the kernel meets the damage
    got = LookupEngine(damaged).lookup({"item": hash_ids(np.arange(400), "item")}).fields["item"]
    served = rq.codebooks.astype(codebook_dtype).astype(np.float32)
    want = served[0, 7] + served[1, 7]
    assert got.found.all()
    assert got.vectors.tobytes() == np.broadcast_to(want, (400, 4)).tobytes()
    with pytest.raises(CorruptSnapshotError, match="item/masks: expected sha256"):
        damaged.verify()


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [("k", 9, "codebooks"), ("dim", 5, "codebooks"), ("rows", 399, "masks"), ("kind", "residue", "expected kind")],
)
def test_a_damaged_manifest_is_refused(tmp_path: Path, key: str, value: object, match: str) -> None:
    rq = _residual(n=400, dim=4, stages=2, k=8)
    _write(tmp_path, rq, np.arange(400))
    snap = open_current(tmp_path)
    meta = snap.path / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["saec"]["fields"]["item"][key] = value
    meta.write_text(json.dumps(doc))
    with pytest.raises(CorruptSnapshotError, match=match):
        open_snapshot(snap.path)


def test_a_residual_field_takes_no_updates(tmp_path: Path) -> None:
    rq = _residual(n=400, dim=4, stages=2, k=8)
    _write(tmp_path, rq, np.arange(400))
    engine = LookupEngine(open_current(tmp_path))
    updater = Updater(tmp_path, engine)
    with pytest.raises(InvalidUpdateError, match="'item'.*got a residual-quantised one"):
        updater.prepare({"item": (np.array([5], np.uint64), np.ones((1, 4), np.float32))})


def test_fold_carries_a_residual_field_over_unchanged(tmp_path: Path) -> None:
    from saec.store.fold import fold

    rq = _residual(n=600, dim=6, stages=3, k=10)
    ids = np.arange(600)
    _write(tmp_path, rq, ids)
    asked = hash_ids(np.concatenate([ids, [10_000, 10_001]]), "item")
    before = LookupEngine(open_current(tmp_path)).lookup({"item": asked}).fields["item"]
    result = fold(tmp_path)
    snap = open_current(tmp_path)
    assert snap.version == result.version and snap.format_version == 4 and snap.fields["item"].kind == "residual"
    after = LookupEngine(snap).lookup({"item": asked}).fields["item"]
    assert after.vectors.tobytes() == before.vectors.tobytes()
    np.testing.assert_array_equal(after.found, before.found)


# -- float16 codebooks --------------------------------------------------------------------


def _every_finite_half(rng: np.random.Generator, size: int) -> np.ndarray:
    """float16 (size,): each of the 63,488 finite halves (both zeros, the subnormals, +-65504)
    at least once, in random order, the rest random finite halves."""
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    every = bits.view(np.float16)[np.isfinite(bits.view(np.float16))]
    assert every.size == 63_488 and size >= every.size
    rest = rng.choice(every, size - every.size)
    return rng.permutation(np.concatenate([every, rest]))


def _stage_sum(halves: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The numpy reference: float32 rows of the widened halves, added in stage order."""
    total = halves[0].astype(np.float32)[masks[:, 0]]
    for s in range(1, halves.shape[0]):
        total = total + halves[s].astype(np.float32)[masks[:, s]]
    return total


@pytest.mark.parametrize(("stages", "k", "dim"), [(2, 20, 1588), (3, 300, 71), (1, 300, 212)])
def test_float16_codebooks_answer_the_widened_stage_sum_bit_for_bit(
    tmp_path: Path, stages: int, k: int, dim: int
) -> None:
    """Every finite float16 value sits in some codebook row, and every row of every stage is
    read, so the kernel's widening of the bits is checked against numpy's on all of them
    (one stage: each answer is one widened row, nothing summed)."""
    rng = np.random.default_rng(stages * 1000 + k)
    halves = _every_finite_half(rng, stages * k * dim).reshape(stages, k, dim)
    n = 2 * k + 7
    # Each stage's column is a shuffle of 0..k-1 repeated: every codebook row is read.
    masks = np.stack([rng.permutation(np.arange(n) % k) for _ in range(stages)], axis=1)
    ids = np.arange(n) * 13
    with SnapshotWriter(tmp_path, source="tests") as w:
        # float32 codebooks holding half values: the cast to float16 keeps them exactly.
        w.add_residual_field("item", hash_ids(ids, "item"), halves.astype(np.float32), masks, codebook_dtype="float16")
        w.publish()
    snap = open_current(tmp_path)
    snap.verify()
    assert snap.format_version == 4
    f = snap.fields["item"]
    assert f.codebook is not None and f.masks is not None and f.stages == stages
    assert f.codebook.dtype == np.float16 and f.codebook.shape == (stages, k, dim)
    assert f.masks.dtype == (np.uint8 if k <= 256 else np.uint16)
    assert f.aliased == 0
    assert "codebook_dtype" not in snap.manifest["fields"]["item"]  # the array's dtype decides
    assert snap.manifest["arrays"]["item/codebook"]["dtype"] == "float16"
    np.testing.assert_array_equal(f.codebook.view(np.uint16), halves.view(np.uint16))
    # zarr reads the stored float16 array as it is.
    np.testing.assert_array_equal(
        np.asarray(zarr.open_group(str(snap.path), mode="r")["item/codebook"]).view(np.uint16), halves.view(np.uint16)
    )
    want = _stage_sum(halves, masks)
    # The mean default is that of what is served (the widened values), in float64.
    np.testing.assert_allclose(f.mean, want.mean(axis=0, dtype=np.float64), rtol=1e-5, atol=1e-4)
    asked = np.concatenate([rng.permutation(ids), [1, 2, 3]])  # three ids never written
    for default in ("zeros", "mean"):
        got = LookupEngine(snap, default=default).lookup({"item": hash_ids(asked, "item")}).fields["item"]
        assert got.vectors.dtype == np.float32 and got.vectors.shape == (n + 3, dim)
        # Bit for bit (signed zeros and subnormal sums too).
        assert got.vectors[:-3].tobytes() == want[asked[:-3] // 13].tobytes()
        assert got.found.tolist() == [True] * n + [False] * 3
        expect_default = f.mean if default == "mean" else np.zeros(dim, np.float32)
        assert got.vectors[-3:].tobytes() == np.broadcast_to(expect_default, (3, dim)).tobytes()
    # Batches of fewer ids than codebook rows widen each id's rows instead of the whole
    # codebooks first: the same answers.
    engine = LookupEngine(snap)
    step = max(1, k // 3)
    parts = [engine.lookup({"item": hash_ids(asked[i : i + step], "item")}).fields["item"].vectors for i in range(0, n, step)]
    assert np.concatenate(parts)[:n].tobytes() == want[asked[:n] // 13].tobytes()


def test_float16_codebooks_round_to_nearest_and_keep_negative_zeros(tmp_path: Path) -> None:
    codebooks = np.array([[[-0.0, 0.1], [1 / 3, 65504.0]], [[0.0, -0.0], [-1e-8, 2.0**-24]]], np.float32)
    masks = np.array([[0, 0], [1, 1], [0, 1], [1, 0]], np.uint8)
    with SnapshotWriter(tmp_path) as w:
        w.add_residual_field("item", hash_ids(np.arange(4), "item"), codebooks, masks, codebook_dtype="float16")
        w.publish()
    snap = open_current(tmp_path)
    halves = codebooks.astype(np.float16)
    f = snap.fields["item"]
    assert f.codebook is not None
    assert f.codebook.tobytes() == halves.tobytes()
    got = LookupEngine(snap).lookup({"item": hash_ids(np.arange(4), "item")}).fields["item"]
    assert got.vectors.tobytes() == _stage_sum(halves, masks).tobytes()
    assert not np.signbit(got.vectors[0, 0])  # -0.0 + 0.0 = 0.0
    assert np.signbit(got.vectors[2, 0]) and got.vectors[2, 0] == 0  # -0.0 + (-1e-8 rounded to -0.0) = -0.0
    assert got.vectors[1, 1] == 65504.0  # 65504 + 2**-24 in float32


def test_float16_memory_counts_two_bytes_a_codebook_value(tmp_path: Path) -> None:
    rq = _residual(n=2000, dim=8, stages=2, k=64)
    with SnapshotWriter(tmp_path) as w:
        w.add_residual_field("item", hash_ids(np.arange(2000), "item"), rq.codebooks, rq.masks, codebook_dtype="float16")
        w.publish()
    field = snapshot_footprint(open_current(tmp_path), measure_resident=False)["fields"]["item"]
    assert field["masks_bytes"] == 2000 * 2
    assert field["codebook_bytes"] == 2 * 64 * 8 * 2
    assert field["ratio_paper"] == pytest.approx(2000 * 4 * 8 / (2000 * 2 + 2 * 64 * 8 * 2))


def test_bad_codebook_dtypes_and_values_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    rq = _residual(n=300, dim=4, stages=2, k=8)
    keys = hash_ids(np.arange(300), "item")
    with SnapshotWriter(tmp_path / "b") as w:
        for bad in ("float64", "int8", "half", None):
            with pytest.raises(
                InvalidTableError, match=r"'item': expected codebook_dtype in \['float32', 'float16'\], got " + repr(bad)
            ):
                w.add_residual_field("item", keys, rq.codebooks, rq.masks, codebook_dtype=bad)  # type: ignore[arg-type]
        big = rq.codebooks.copy()
        big[1, 2, 3] = -65505.0
        with pytest.raises(InvalidTableError, match=r"'item': expected values within float16's range \(\|x\| <= 65504\)"):
            w.add_residual_field("item", keys, big, rq.masks, codebook_dtype="float16")
        # The same values fit float32 codebooks.
        w.add_residual_field("wide", keys, big, rq.masks)
        # Nothing of the refused field reached the snapshot: no folder, and the name is still free.
        assert not (w.path / "item").exists()
        big[1, 2, 3] = -65504.0
        w.add_residual_field("item", keys, big, rq.masks, codebook_dtype="float16")
        w.publish()
    snap = open_current(tmp_path / "b")
    f = snap.fields["item"]
    assert f.codebook is not None and f.codebook.dtype == np.float16 and f.codebook[1, 2, 3] == -65504.0
    assert snap.fields["wide"].codebook is not None and snap.fields["wide"].codebook.dtype == np.float32


def _retype_codebook(snap_path: Path, field: str, dtype: str) -> None:
    """Rewrite a field's stored codebook as ``dtype`` (file, zarr.json and manifest), as a
    writer of something else would; the checksums are left stale (open_snapshot reads none)."""
    doc = json.loads((snap_path / "zarr.json").read_text())
    entry = doc["attributes"]["saec"]["arrays"][f"{field}/codebook"]
    folder = snap_path / field / "codebook"
    path = chunk_path(folder, len(entry["shape"]))
    values = np.frombuffer(path.read_bytes(), dtype=np.dtype(entry["dtype"]).newbyteorder("<"))
    path.write_bytes(values.astype(np.dtype(dtype).newbyteorder("<")).tobytes())
    meta = json.loads((folder / "zarr.json").read_text())
    meta["data_type"] = dtype
    (folder / "zarr.json").write_text(json.dumps(meta))
    entry["dtype"] = dtype
    (snap_path / "zarr.json").write_text(json.dumps(doc))


def test_a_reader_takes_float16_codebooks_only_in_residual_fields(tmp_path: Path) -> None:
    with SnapshotWriter(tmp_path) as w:
        w.add_compressed_field("c", hash_ids(np.arange(5), "c"), np.ones((3, 2), np.float32), np.zeros(5, np.uint8))
        w.add_product_field("p", hash_ids(np.arange(5), "p"), np.ones((2, 3, 1), np.float32), np.zeros((5, 2), np.uint8))
        w.add_residual_field("r", hash_ids(np.arange(5), "r"), np.ones((2, 3, 2), np.float32), np.zeros((5, 2), np.uint8))
        w.publish()
    path = open_current(tmp_path).path
    _retype_codebook(path, "r", "float16")
    assert open_snapshot(path).fields["r"].codebook.dtype == np.float16  # type: ignore[union-attr]
    for name, kind in (("c", "compressed"), ("p", "product")):
        _retype_codebook(path, name, "float16")
        with pytest.raises(
            CorruptSnapshotError, match=rf"field '{name}'.*codebook of dtype float16 in a {kind} field, expected float32"
        ):
            open_snapshot(path, fields=[name])
        _retype_codebook(path, name, "float32")
    _retype_codebook(path, "r", "float64")
    with pytest.raises(CorruptSnapshotError, match=r"r/codebook: expected dtype in \['float16', 'float32'\], found 'float64'"):
        open_snapshot(path)


def test_fold_carries_a_float16_residual_field_over_unchanged(tmp_path: Path) -> None:
    from saec.store.fold import fold

    rq = _residual(n=600, dim=6, stages=3, k=10)
    ids = np.arange(600)
    with SnapshotWriter(tmp_path) as w:
        w.add_residual_field("item", hash_ids(ids, "item"), rq.codebooks, rq.masks, codebook_dtype="float16")
        w.publish()
    asked = hash_ids(np.concatenate([ids, [10_000, 10_001]]), "item")
    snap = open_current(tmp_path)
    stored = np.array(snap.fields["item"].codebook)
    before = LookupEngine(snap, default="mean").lookup({"item": asked}).fields["item"]
    result = fold(tmp_path)
    snap = open_current(tmp_path)
    assert snap.version == result.version and snap.format_version == 4
    f = snap.fields["item"]
    assert f.kind == "residual" and f.codebook is not None and f.codebook.dtype == np.float16
    assert f.codebook.tobytes() == stored.tobytes()
    after = LookupEngine(snap, default="mean").lookup({"item": asked}).fields["item"]
    assert after.vectors.tobytes() == before.vectors.tobytes()
    np.testing.assert_array_equal(after.found, before.found)
