"""``saec update`` and ``saec fold``: files into the deltas, deltas into the next snapshot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saec.cli import main
from saec.store import deltas
from saec.store.errors import SupersededError
from saec.store.hashing import hash_ids
from saec.store.keyindex import FINGERPRINT_BITS
from saec.store.layout import StoreLayout
from saec.store.live import LiveEngine
from saec.store.updates import Updater
from tests.conftest import write_small_store


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "store"
    return root, write_small_store(root, np.random.default_rng(11), n=30_000, k=32)


def _write_updates(path: Path, rng: np.random.Generator, data: dict) -> dict:
    ids = np.concatenate([np.arange(10**10, 10**10 + 4000), data["user_ids"][:1000]])
    vectors = rng.normal(size=(ids.shape[0], 9)).astype(np.float32)
    country_ids = np.array(["c0", "c7", "brand-new"])
    country = rng.normal(size=(3, 17)).astype(np.float32)
    np.savez(path, **{"user.ids": ids, "user.vectors": vectors, "country.ids": country_ids, "country.vectors": country})
    return {"user_ids": ids, "user": vectors, "country_ids": country_ids, "country": country}


def test_update_command_appends_what_a_server_serves(store: tuple[Path, dict], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    root, data = store
    serving = LiveEngine(root)  # opened before: sees the frames at its next lookup
    upd = _write_updates(tmp_path / "upd.npz", np.random.default_rng(2), data)
    assert main(["update", "--store", str(root), str(tmp_path / "upd.npz"), "--batch-rows", "1500"]) == 0
    out = capsys.readouterr().out
    assert "appended frames 1..5" in out  # 5000 user rows in 4 frames, then 1 country frame
    assert "4,000" in out and "1,000" in out
    got = serving.engine.lookup({"user": hash_ids(upd["user_ids"], "user"), "country": hash_ids(upd["country_ids"], "country")})
    cb = data["codebook"].astype(np.float64)
    nearest = ((upd["user"].astype(np.float64)[:, None] - cb[None]) ** 2).sum(-1).argmin(1)
    assert got.fields["user"].found.all()
    assert np.array_equal(got.fields["user"].vectors, data["codebook"][nearest])
    assert np.array_equal(got.fields["country"].vectors, upd["country"])


def test_fold_equals_the_live_snapshot_plus_its_deltas(store: tuple[Path, dict], tmp_path: Path) -> None:
    root, data = store
    rng = np.random.default_rng(4)
    upd = _write_updates(tmp_path / "upd.npz", rng, data)
    assert main(["update", "--store", str(root), str(tmp_path / "upd.npz")]) == 0
    # A second write of some keys: the fold must keep the last one.
    up = Updater(root, LiveEngine(root).engine)
    again = rng.normal(size=(10, 9)).astype(np.float32)
    up.apply({"user": (hash_ids(upd["user_ids"][::500], "user"), again)})
    before = LiveEngine(root).engine
    unseen = np.arange(-50_000, 0)
    query = {
        "user": hash_ids(np.concatenate([data["user_ids"], upd["user_ids"], unseen]), "user"),
        "country": hash_ids(np.concatenate([data["country_ids"], upd["country_ids"], ["nope", "x"]]), "country"),
    }
    live = before.lookup(query)
    assert main(["fold", "--store", str(root)]) == 0
    after = LiveEngine(root).engine
    assert after.version != data["version"] and after.overlay is not None and after.overlay.sequence == 0
    folded = after.lookup(query)
    for name, keys in query.items():
        a, b = live.fields[name], folded.fields[name]
        differ = ~(a.vectors == b.vectors).all(axis=1) | (a.found != b.found)
        # The only allowed differences: ids that share bucket and fingerprint with another
        # stored or updated id (the aliasing of docs/FORMAT.md), computed here.
        bits = before.field(name).index.bucket_bits + FINGERPRINT_BITS
        prefix = keys >> np.uint64(64 - bits)
        stored = np.concatenate([
            hash_ids(data["user_ids"] if name == "user" else data["country_ids"], name),
            hash_ids(upd[f"{name}_ids"], name),
        ]) >> np.uint64(64 - bits)
        values, counts = np.unique(stored, return_counts=True)
        shared = np.isin(prefix, values[counts > 1])
        unseen_ids = ~np.isin(prefix, values)
        assert not (differ & ~shared & ~unseen_ids).any(), name
        # Ids stored nowhere: found by neither, but for the 16-bit fingerprint false
        # matches (< 0.1%, docs/FORMAT.md) that the fold's new rows can add.
        assert b.found[unseen_ids].mean() <= 0.001 and not a.found[unseen_ids & ~b.found].any()
    assert (root / "deltas" / data["version"]).is_dir()  # kept while its snapshot is kept


def test_appends_after_a_fold_are_refused_for_a_retry(store: tuple[Path, dict], rng: np.random.Generator) -> None:
    root, data = store
    up = Updater(root, LiveEngine(root).engine)
    up.apply({"country": (hash_ids(["q"], "country"), np.ones((1, 17), np.float32))})
    assert main(["fold", "--store", str(root)]) == 0
    with pytest.raises(SupersededError):
        up.apply({"country": (hash_ids(["r"], "country"), np.ones((1, 17), np.float32))})
    assert [r.sequence for r in deltas.read_all(deltas.deltas_dir(root, data["version"]))] == [1]
    fresh = Updater(root, LiveEngine(root).engine)
    assert fresh.base == StoreLayout(root).current() and fresh.apply(
        {"country": (hash_ids(["r"], "country"), np.ones((1, 17), np.float32))}
    ).sequence == 1
