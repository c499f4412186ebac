"""Folds keep the key index within its promise: the bucket bits grow with the rows, so
false matches and probe cost after folding many updates stay those of a fresh snapshot."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from saec.store.deltas import DeltaWriter, FieldDelta
from saec.store.fold import fold, known_keys
from saec.store.hashing import hash_ids
from saec.store.keyindex import TARGET_LOAD, bucket_bits_for
from saec.store.layout import StoreLayout
from saec.store.snapshot import open_snapshot
from saec.store.writer import SnapshotWriter

BASE, NEW = 20_000, 400_000


def _store(root: Path, rng: np.random.Generator) -> tuple[str, np.ndarray, np.ndarray]:
    keys = hash_ids(np.arange(BASE), "user")
    masks = rng.integers(0, 16, BASE).astype(np.uint8)
    with SnapshotWriter(root, source="tests") as w:
        w.add_compressed_field("user", keys, rng.normal(size=(16, 4)).astype(np.float32), masks)
        return w.publish(), keys, masks


def _update(root: Path, version: str, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    masks = rng.integers(0, 16, ids.shape[0]).astype(np.uint8)
    w = DeltaWriter(root, version)
    for part in np.array_split(np.arange(ids.shape[0]), 8):
        keys = hash_ids(ids[part], "user")
        w.append({"user": FieldDelta(keys, np.zeros((part.shape[0], 4), np.float32), masks[part])})
    return masks


def _served(root: Path, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    snap = open_snapshot(StoreLayout(root).snapshot_dir(StoreLayout(root).current()))
    f = snap.fields["user"]
    rows = f.index.lookup(hash_ids(ids, "user"))
    assert f.masks is not None
    return rows, np.where(rows >= 0, np.asarray(f.masks)[np.maximum(rows, 0)], -1)


def test_folds_grow_the_bucket_bits_and_every_id_keeps_its_row(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "store"
    version, _, base_masks = _store(root, rng)
    base_bits = bucket_bits_for(BASE)
    # Ids the base never stored (aliased at compress, answered by the row they share) lose
    # that borrowed row once the bits grow past what they share.
    dropped = open_snapshot(StoreLayout(root).snapshot_dir(version)).fields["user"].aliased
    new_ids = np.arange(10**9, 10**9 + NEW)
    new_masks = _update(root, version, new_ids, rng)
    fold(root)
    snap = open_snapshot(StoreLayout(root).snapshot_dir(StoreLayout(root).current()))
    f = snap.fields["user"]
    grown = bucket_bits_for(BASE + NEW)
    assert f.index.bucket_bits == grown > base_bits
    assert TARGET_LOAD <= f.rows / 2**grown < 2 * TARGET_LOAD
    assert f.attrs["fold_bits_known"] == 16 - (grown - base_bits)
    # Every base id and every new id finds a row: its own, but for the few that share
    # bucket and fingerprint with another (FORMAT.md's aliasing, n**2 / 2**(bits + 17)).
    aliasing = (BASE + NEW) ** 2 / 2 ** (grown + 17)
    assert f.aliased < 3 * aliasing + 10
    rows, masks = _served(root, np.arange(BASE))
    assert (rows < 0).sum() <= dropped and (masks != base_masks).sum() < 3 * aliasing + 10 + dropped
    # An update of a new id that the base's smaller index matched falsely (and the overlay
    # served from that row) gets a row of its own once the bits tell them apart.
    rows, masks = _served(root, new_ids)
    assert (rows < 0).sum() <= f.aliased and (masks != new_masks).sum() < 3 * aliasing + 10 + f.aliased
    # Unseen ids: false matches at a fresh snapshot's rate ((rows/B)/65536 < 0.016%).
    unseen = f.index.lookup(np.random.default_rng(1).integers(0, 2**64 - 1, 1_000_000, dtype=np.uint64, endpoint=True))
    assert (unseen >= 0).sum() < 250
    # A second fold grows again, within the bits still known.
    more = np.arange(2 * 10**9, 2 * 10**9 + 2 * NEW)
    _update(root, StoreLayout(root).current(), more, rng)
    fold(root)
    f2 = open_snapshot(StoreLayout(root).snapshot_dir(StoreLayout(root).current())).fields["user"]
    assert f2.index.bucket_bits == min(bucket_bits_for(f2.rows), grown + f.attrs["fold_bits_known"])
    rows, masks = _served(root, np.arange(BASE))
    lost = dropped + f.aliased + f2.aliased  # ids that share a row with another, at any of the three
    assert (rows < 0).sum() <= lost and (masks != base_masks).sum() < 6 * aliasing + 20 + lost


def test_a_snapshot_without_fold_bits_keeps_its_bucket_bits(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    root = tmp_path / "store"
    version, keys, _ = _store(root, rng)
    f = open_snapshot(StoreLayout(root).snapshot_dir(version)).fields["user"]
    full, known = known_keys(f, StoreLayout(root).snapshot_dir(version))
    assert known == 16
    # The prefix keys with fold bits agree with the real keys on their top bucket + 32 bits.
    shift = np.uint64(64 - f.index.bucket_bits - 32)
    assert np.isin(full >> shift, keys >> shift).all() and full.shape[0] == keys.shape[0] - f.aliased
    old = dataclasses.replace(f, arrays={k: v for k, v in f.arrays.items() if k != "fold_bits"})
    assert known_keys(old, StoreLayout(root).snapshot_dir(version))[1] == 0
