"""Updates end to end in one process: check, assign, append, overlay on lookups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saec.store import _kernels as kernels
from saec.store import deltas
from saec.store.assign_index import CentroidIndex
from saec.store.errors import EmptyUpdateError, InvalidUpdateError, UnknownFieldError
from saec.store.hashing import hash_ids
from saec.store.live import LiveEngine
from saec.store.updates import Updater


def _exact64(codebook: np.ndarray, x: np.ndarray) -> np.ndarray:
    return ((x.astype(np.float64)[:, None, :] - codebook.astype(np.float64)[None]) ** 2).sum(-1).argmin(1)


def test_new_and_reassigned_ids_are_served_last_write_wins(small_store: tuple[Path, dict], rng: np.random.Generator) -> None:
    root, data = small_store
    server = LiveEngine(root)  # the serving side; updates come from another engine
    writer_side = LiveEngine(root)
    up = Updater(root, writer_side.engine)
    new_ids = np.arange(10**9, 10**9 + 300)
    old_ids = data["user_ids"][:100]
    ids = np.concatenate([new_ids, old_ids])
    vectors = rng.normal(size=(400, 9)).astype(np.float32)
    result = up.apply({"user": (hash_ids(ids, "user"), vectors)})
    assert result.sequence == 1 and result.base == data["version"]
    rep = result.fields["user"]
    assert (rep.accepted, rep.new, rep.reassigned) == (400, 300, 100)
    want = _exact64(data["codebook"], vectors)
    assert np.allclose(rep.distances, ((vectors - data["codebook"][want]) ** 2).sum(1), rtol=1e-4, atol=1e-5)
    got = server.engine.lookup({"user": hash_ids(ids, "user")}).fields["user"]
    assert got.found.all()
    assert np.array_equal(got.vectors, data["codebook"][want])
    # Last write wins, for a key new to the snapshot as for one it holds.
    again = rng.normal(size=(2, 9)).astype(np.float32)
    second = up.apply({"user": (hash_ids(ids[[0, 350]], "user"), again)})
    assert second.sequence == 2 and second.fields["user"].new == 0
    got = server.engine.lookup({"user": hash_ids(ids[[0, 350, 1]], "user")}).fields["user"]
    assert np.array_equal(got.vectors[:2], data["codebook"][_exact64(data["codebook"], again)])
    assert np.array_equal(got.vectors[2], data["codebook"][want[1]])
    # Ids never updated still read the snapshot.
    untouched = server.engine.lookup({"user": hash_ids(data["user_ids"][200:210], "user")}).fields["user"]
    assert np.array_equal(untouched.vectors, data["codebook"][data["masks"][200:210]])


def test_dense_fields_store_the_vector_itself(small_store: tuple[Path, dict], rng: np.random.Generator) -> None:
    root, data = small_store
    live = LiveEngine(root)
    vectors = rng.normal(size=(3, 17)).astype(np.float32)
    rep = Updater(root, live.engine).apply({"country": (hash_ids(["c1", "new1", "new2"], "country"), vectors)})
    assert rep.fields["country"].new == 2 and float(rep.fields["country"].distances.max()) == 0.0
    got = LiveEngine(root).engine.lookup({"country": hash_ids(["c1", "new1", "new2", "c2"], "country")})
    assert np.array_equal(got.fields["country"].vectors[:3], vectors)
    assert np.array_equal(got.fields["country"].vectors[3], data["country"][2])


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"nope": ([1], np.zeros((1, 9)))}, UnknownFieldError, "unknown field 'nope'"),
        ({"user": ([1, 2], np.zeros((2, 8)))}, InvalidUpdateError, "field 'user': expected vectors of length 9, got 8"),
        ({"user": ([1, 2, 3], np.zeros((2, 9)))}, InvalidUpdateError, "3 ids and 2 vectors"),
        ({"user": ([1, 2, 3], np.array([[0.0] * 9, [0.0] * 9, [np.nan] + [0.0] * 8]))}, InvalidUpdateError, "row 2 holds NaN"),
        ({"user": ([1, 2], np.array([[np.inf] * 9, [0.0] * 9]))}, InvalidUpdateError, "row 0 holds NaN or infinity"),
        ({"user": ([5, 6, 7, 6], np.zeros((4, 9)))}, InvalidUpdateError, "row 3 repeats the id of row 1"),
        ({"user": ([], np.zeros((0, 9)))}, EmptyUpdateError, "expected at least one id"),
        ({}, EmptyUpdateError, "at least one field"),
    ],
)
def test_bad_batches_are_refused_whole(
    small_store: tuple[Path, dict], fields: dict, error: type[Exception], message: str
) -> None:
    root, data = small_store
    up = Updater(root, LiveEngine(root).engine)
    good = {"country": (hash_ids(["x"], "country"), np.zeros((1, 17), np.float32))}
    # A good field beside the bad one: it must not be written either.
    batch = {**good, **{n: (hash_ids(np.asarray(i, dtype=np.int64), n), v) for n, (i, v) in fields.items()}} if fields else {}
    with pytest.raises(error, match=message):
        up.apply(batch)
    assert deltas.read_all(deltas.deltas_dir(root, data["version"])) == []


@pytest.mark.parametrize("search", ["auto", "hnsw"])
def test_assigned_mask_is_the_exact_nearest_centroid_for_995_per_mille(search: str) -> None:
    rng = np.random.default_rng(7)
    codebook = rng.normal(size=(256, 16)).astype(np.float32)
    vectors = rng.normal(size=(10_000, 16)).astype(np.float32)
    index = CentroidIndex.build(codebook, search=search)  # type: ignore[arg-type]
    assert index.method == ("exact" if search == "auto" else "hnsw")  # auto: exact below AUTO_MIN_K
    got = index.nearest(vectors)
    agree = float((got == _exact64(codebook, vectors)).mean())
    assert agree >= 0.995, agree


def test_hnsw_recall_at_large_k() -> None:
    rng = np.random.default_rng(3)
    codebook = rng.normal(size=(4096, 16)).astype(np.float32)
    vectors = rng.normal(size=(2000, 16)).astype(np.float32)
    index = CentroidIndex.build(codebook, search="hnsw")
    assert index.method == "hnsw"
    c64 = codebook.astype(np.float64)
    truth = ((c64 * c64).sum(1) - 2 * vectors.astype(np.float64) @ c64.T).argmin(1)
    assert float((index.nearest(vectors) == truth).mean()) >= 0.995


def test_overlay_grows_and_never_finds_keys_it_was_not_given(small_store: tuple[Path, dict], rng: np.random.Generator) -> None:
    root, data = small_store
    live = LiveEngine(root)
    up = Updater(root, live.engine)
    keys = rng.integers(0, 2**64, 50_000, dtype=np.uint64)
    vectors = rng.normal(size=(50_000, 17)).astype(np.float32)
    for part in range(5):
        s = slice(part * 10_000, (part + 1) * 10_000)
        up.apply({"country": (keys[s], vectors[s])})
    res = live.engine.lookup({"country": keys}).fields["country"]
    assert res.found.all() and np.array_equal(res.vectors, vectors)
    others = rng.integers(0, 2**64, 50_000, dtype=np.uint64)
    overlay = live.engine.overlay
    assert overlay is not None
    base_rows = live.engine.field("country").index.lookup(others)
    assert overlay.contains("country", keys).all() and not overlay.contains("country", others[base_rows < 0]).any()
    # Whatever the snapshot's 16-bit fingerprints falsely match stays as it was.
    base = LiveEngine(root, updates=False).engine.lookup({"country": others}).fields["country"]
    assert np.array_equal(live.engine.lookup({"country": others}).fields["country"].found, base.found)
    stats = overlay.stats()
    # A few random keys match one of the 50 stored rows' fingerprints: those are reassignments.
    held = live.engine.field("country").index.lookup(keys) >= 0
    assert stats.fields["country"]["new"] == 50_000 - held.sum() and stats.sequence == 5


def test_the_filter_turns_away_nearly_every_key_without_updates(small_store: tuple[Path, dict], rng: np.random.Generator) -> None:
    # Unseen ids pay for pending updates only through the filter: if it let many through,
    # each would probe the table (a cache miss at scale).
    root, _ = small_store
    live = LiveEngine(root)
    keys = rng.integers(0, 2**64, 200_000, dtype=np.uint64)
    Updater(root, live.engine).apply({"country": (keys, rng.normal(size=(200_000, 17)).astype(np.float32))})
    overlay = live.engine.overlay
    assert overlay is not None
    overlay.refresh()
    added = overlay.added("country")
    assert added is not None
    filt, wshift, *_ = added
    others = rng.integers(0, 2**64, 200_000, dtype=np.uint64)
    bits = kernels.filter_bits(others)
    passed = filt[(others >> np.uint64(wshift)).astype(np.int64)] & bits == bits
    assert float(passed.mean()) < 0.01
    new = keys[live.engine.field("country").index.lookup(keys) < 0]  # the rest are reassignments
    kb = kernels.filter_bits(new)
    assert (filt[(new >> np.uint64(wshift)).astype(np.int64)] & kb == kb).all()


def test_reassignments_copy_the_masks_whole_and_count_them(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    live = LiveEngine(root)
    keys = hash_ids(data["user_ids"], "user")
    field = live.engine.field("user")
    assert field.masks is not None
    before = live.engine.lookup({"user": keys}).fields["user"].vectors.copy()
    target = data["codebook"][3]
    Updater(root, live.engine).apply({"user": (keys[:10], np.repeat(target[None] + 0.001, 10, axis=0))})
    overlay = live.engine.overlay
    assert overlay is not None
    overlay.refresh()
    fo = overlay.fields["user"]
    assert fo.base is not None and fo.base.flags.writeable and fo.base.shape == field.masks.shape
    assert fo.nbytes >= field.masks.nbytes
    after = live.engine.lookup({"user": keys}).fields["user"].vectors
    assert np.array_equal(after[:10], np.repeat(target[None], 10, axis=0))
    assert np.array_equal(after[10:], before[10:])
    # The snapshot's file is untouched: an engine without the updates serves the old rows.
    plain = LiveEngine(root, updates=False).engine.lookup({"user": keys[:10]}).fields["user"].vectors
    assert np.array_equal(plain, before[:10])
