"""Pending updates across a publish: carried to the new snapshot unless its checkpoint covers them."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from saec.cli import main
from saec.store import deltas
from saec.store.assign_index import CentroidIndex
from saec.store.hashing import hash_ids
from saec.store.layout import StoreLayout
from saec.store.live import LiveEngine
from saec.store.snapshot import open_current
from saec.store.updates import Updater

DIM = 8


def _checkpoint(path: Path, rng: np.random.Generator, user_ids: np.ndarray, *, scale: float = 1.0) -> Path:
    """A trainer's checkpoint: ``user`` (compressed by compress) and ``country`` (dense)."""
    centres = rng.normal(size=(16, DIM)) * 4 * scale
    vectors = (centres[rng.integers(0, 16, user_ids.shape[0])] + rng.normal(size=(user_ids.shape[0], DIM))).astype(np.float32)
    country_ids = np.array([f"c{i}" for i in range(40)])
    np.savez(path, **{"user.ids": user_ids, "user.vectors": vectors,
                      "country.ids": country_ids, "country.vectors": rng.normal(size=(40, 5)).astype(np.float32)})
    return path


def _compress(path: Path, store: Path, *extra: str) -> None:
    assert main(["compress", str(path), "--out", str(store), "--k", "16", "--min-factor", "10", *extra]) == 0


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    _compress(_checkpoint(tmp_path / "ckpt1.npz", np.random.default_rng(1), np.arange(4000)), root)
    return root


def _update(root: Path, fields: dict) -> None:
    Updater(root, LiveEngine(root, verify=False).engine).apply(fields)


def test_a_fresh_compress_serves_every_pending_update(store: Path, tmp_path: Path) -> None:
    """The checkpoint lacks the updated ids (new ones) and holds older rows of the others:
    after the publish every update is served, re-assigned to the NEW codebook."""
    rng = np.random.default_rng(2)
    new_ids = np.arange(10**9, 10**9 + 700)
    old_ids = np.arange(0, 4000, 13)
    new_vec = rng.normal(size=(700, DIM)).astype(np.float32) * 3
    old_vec = rng.normal(size=(old_ids.shape[0], DIM)).astype(np.float32) * 3
    _update(store, {"user": (hash_ids(new_ids, "user"), new_vec), "country": (hash_ids(["zz"], "country"), np.ones((1, 5), np.float32))})
    _update(store, {"user": (hash_ids(old_ids, "user"), old_vec)})
    # A later write of some of the new ids: the last write wins after the carry too.
    again = rng.normal(size=(50, DIM)).astype(np.float32)
    _update(store, {"user": (hash_ids(new_ids[:50], "user"), again)})

    _compress(_checkpoint(tmp_path / "ckpt2.npz", np.random.default_rng(3), np.arange(4000), scale=2.0), store)
    engine = LiveEngine(store).engine
    codebook = np.asarray(engine.snapshot.fields["user"].codebook)
    index = CentroidIndex(codebook, method="exact")
    want_new = new_vec.copy()
    want_new[:50] = again
    got = engine.lookup({"user": hash_ids(np.concatenate([new_ids, old_ids]), "user"), "country": hash_ids(["zz"], "country")})
    assert got.fields["user"].found.all()
    expected = codebook[index.nearest(np.concatenate([want_new, old_vec]))]
    assert np.array_equal(got.fields["user"].vectors, expected)
    assert np.array_equal(got.fields["country"].vectors, np.ones((1, 5), np.float32))
    manifest = engine.snapshot.manifest
    assert manifest["updates_carried"]["user"] == 700 + old_ids.shape[0] + 50
    assert manifest["updates_carried"]["country"] == 1
    assert manifest["updates_dropped"] == {}
