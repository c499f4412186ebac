"""Pending updates across a publish: carried to the new snapshot unless its checkpoint covers them."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest

from saec.cli import main
from saec.store import carry, deltas
from saec.store.assign_index import CentroidIndex
from saec.store.errors import SupersededError
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


def _compress(path: Path, store: Path | str, *extra: str) -> None:
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


def _frame(time_ms: int | None, **fields: tuple[np.ndarray, np.ndarray, np.ndarray | None]) -> deltas.DeltaRecord:
    return deltas.DeltaRecord(
        sequence=0, time_ms=time_ms, source=None,
        fields={n: deltas.FieldDelta(keys=k, vectors=v, masks=m) for n, (k, v, m) in fields.items()},
    )


def test_the_watermark_rule_covers_carries_and_drops_on_purpose() -> None:
    rng = np.random.default_rng(5)
    codebook = rng.normal(size=(20, 4)).astype(np.float32)
    targets = {"user": carry.Target("compressed", 4, codebook, np.dtype(np.uint8)), "country": carry.Target("dense", 3),
               "pq": carry.Target("product", 4), "wide": carry.Target("compressed", 6, rng.normal(size=(5, 6)).astype(np.float32),
                                                                        np.dtype(np.uint8))}

    def rows(n: int, dim: int, masked: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        return (rng.integers(0, 2**63, n).astype(np.uint64), rng.normal(size=(n, dim)).astype(np.float32),
                np.zeros(n, np.uint8) if masked else None)

    frames = [
        _frame(1_000, user=rows(3, 4), country=rows(2, 3, False)),   # covered: at the watermark
        _frame(1_001, user=rows(5, 4), gone=rows(7, 4)),             # after it: carried; "gone" dropped
        _frame(None, user=rows(4, 4), pq=rows(2, 4), wide=rows(1, 4)),  # no time: never covered
        _frame(999, country=rows(6, 3, False)),                      # covered
    ]
    report = carry.CarryReport(watermark_ms=1_000, checkpoint_ms=1_000)
    out = carry.carry_records(frames, report, targets, lambda name, cb: CentroidIndex(cb, method="exact"))
    assert report.covered == {"user": 3, "country": 2 + 6}
    assert report.carried == {"user": 5 + 4}
    assert {n: d["rows"] for n, d in report.dropped.items()} == {"gone": 7, "pq": 2, "wide": 1}
    assert "not in the new snapshot" in report.dropped["gone"]["reason"]
    assert "product" in report.dropped["pq"]["reason"] and "dimension changed from 4 to 6" in report.dropped["wide"]["reason"]
    # The carried frames keep their order, time and vectors; masks are the nearest rows of the new codebook.
    assert [t for _, t, _ in out] == [1_001, None]
    for (fields, _, _), src in zip(out, frames[1:3], strict=True):
        assert list(fields) == ["user"]
        d = src.fields["user"]
        assert np.array_equal(fields["user"].keys, d.keys) and np.array_equal(fields["user"].vectors, d.vectors)
        exact = ((d.vectors[:, None, :] - codebook[None]) ** 2).sum(-1).argmin(1)
        assert fields["user"].masks is not None and np.array_equal(fields["user"].masks, exact)
        assert fields["user"].masks.dtype == np.uint8
    # No watermark (the checkpoint covers no update): everything that fits is carried.
    none = carry.CarryReport(watermark_ms=None, checkpoint_ms=None)
    carry.carry_records(frames, none, targets, lambda name, cb: CentroidIndex(cb, method="exact"))
    assert none.covered == {} and none.carried == {"user": 12, "country": 8}


def test_parse_watermark() -> None:
    now = 1_800_000_000_000
    assert carry.parse_watermark("none") is None
    assert carry.parse_watermark("1700000000.5", now_ms=now) == 1_700_000_000_500
    assert carry.parse_watermark("2023-11-14T22:13:20Z", now_ms=now) == 1_700_000_000_000
    assert carry.parse_watermark("2023-11-14T23:13:20+01:00", now_ms=now) == 1_700_000_000_000
    assert carry.parse_watermark("2023-11-14T22:13:20", now_ms=now) == 1_700_000_000_000  # no zone: UTC
    with pytest.raises(carry.WatermarkError, match="no later than now"):
        carry.parse_watermark("1900000000", now_ms=now)
    with pytest.raises(carry.WatermarkError, match="ISO-8601"):
        carry.parse_watermark("yesterday", now_ms=now)
    with pytest.raises(carry.WatermarkError, match="after 1970"):
        carry.parse_watermark("nan", now_ms=now)


def test_compress_carries_what_its_watermark_does_not_cover(store: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(6)
    early, late = np.arange(10**9, 10**9 + 300), np.arange(2 * 10**9, 2 * 10**9 + 200)
    _update(store, {"user": (hash_ids(early, "user"), rng.normal(size=(300, DIM)).astype(np.float32))})
    time.sleep(0.01)
    exported = f"{time.time():.3f}"  # the trainer exports its checkpoint here: it holds `early`
    time.sleep(0.01)
    late_vec = rng.normal(size=(200, DIM)).astype(np.float32)
    _update(store, {"user": (hash_ids(late, "user"), late_vec)})
    capsys.readouterr()
    _compress(_checkpoint(tmp_path / "ckpt2.npz", np.random.default_rng(7), np.arange(4000)), store,
              "--updates-covered-until", exported)
    out = capsys.readouterr().out
    assert "carried 200 pending update(s) in 1 of 2 frame(s)" in out
    assert "covered by the checkpoint (not carried): user 300" in out
    engine = LiveEngine(store).engine
    manifest = engine.snapshot.manifest
    assert manifest["updates_covered_until_ms"] == int(exported.replace(".", ""))
    assert manifest["updates_carried"] == {"user": 200} and manifest["updates_covered"] == {"user": 300}
    got = engine.lookup({"user": hash_ids(np.concatenate([early, late]), "user")}).fields["user"]
    assert not got.found[:300].any() and got.found[300:].all()  # the checkpoint lacked `early`: it said it held them
    # The next publish by default covers what this checkpoint covered: `late` is carried again.
    _compress(_checkpoint(tmp_path / "ckpt3.npz", np.random.default_rng(8), np.arange(4000)), store)
    engine = LiveEngine(store).engine
    assert engine.snapshot.manifest["updates_covered_until_ms"] == int(exported.replace(".", ""))
    assert engine.snapshot.manifest["updates_carried"] == {"user": 200}
    cb = np.asarray(engine.snapshot.fields["user"].codebook)
    got = engine.lookup({"user": hash_ids(late, "user")}).fields["user"]
    assert got.found.all() and np.array_equal(got.vectors, cb[CentroidIndex(cb, method="exact").nearest(late_vec)])


def test_what_cannot_be_carried_is_counted_logged_and_printed(store: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(9)
    _update(store, {"user": (hash_ids(np.arange(10**9, 10**9 + 40), "user"), rng.normal(size=(40, DIM)).astype(np.float32)),
                    "country": (hash_ids(["x", "y"], "country"), rng.normal(size=(2, 5)).astype(np.float32))})
    # The next checkpoint has no "country" and a wider "user".
    np.savez(tmp_path / "ckpt2.npz", **{"user.ids": np.arange(4000), "user.vectors": rng.normal(size=(4000, DIM + 2)).astype(np.float32)})
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="saec.carry"):
        _compress(tmp_path / "ckpt2.npz", store)
    out = capsys.readouterr().out
    assert "DROPPED 40 update(s) of field 'user': the field's dimension changed from 8 to 10" in out
    assert "DROPPED 2 update(s) of field 'country': the field is not in the new snapshot" in out
    assert sum("dropped 40 pending update(s) of field 'user'" in r.getMessage() for r in caplog.records) == 1
    manifest = open_current(store).manifest
    assert manifest["updates_dropped"]["user"]["rows"] == 40 and manifest["updates_dropped"]["country"]["rows"] == 2
    assert manifest["updates_carried"] == {}


def test_a_fold_covers_what_it_folds_and_a_later_compress_carries_it(store: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A fold's rows hold its base's updates; a fresh checkpoint replaces those rows, so the
    compress after it carries them from the fold's base's log (and the fold's own)."""
    rng = np.random.default_rng(10)
    first, second = np.arange(10**9, 10**9 + 100), np.arange(3 * 10**9, 3 * 10**9 + 100)
    v1, v2 = rng.normal(size=(100, DIM)).astype(np.float32), rng.normal(size=(100, DIM)).astype(np.float32)
    base_watermark = open_current(store).manifest["updates_covered_until_ms"]
    _update(store, {"user": (hash_ids(first, "user"), v1)})
    newest = max(r.time_ms for r in deltas.read_all(deltas.deltas_dir(store, StoreLayout(store).current())))
    capsys.readouterr()
    assert main(["fold", "--store", str(store)]) == 0
    assert "covers the updates written until" in capsys.readouterr().out
    folded = open_current(store).manifest
    assert folded["updates_covered_until_ms"] == newest and folded["checkpoint_covered_until_ms"] == base_watermark
    assert folded["folded_from"] and folded["updates_carried"] == {}
    _update(store, {"user": (hash_ids(second, "user"), v2)})
    _compress(_checkpoint(tmp_path / "ckpt2.npz", np.random.default_rng(11), np.arange(4000)), store)
    engine = LiveEngine(store).engine
    assert engine.snapshot.manifest["updates_carried"] == {"user": 200}
    assert engine.snapshot.manifest["carried_from"] == [folded["folded_from"], folded["version"]]
    cb = np.asarray(engine.snapshot.fields["user"].codebook)
    got = engine.lookup({"user": hash_ids(np.concatenate([first, second]), "user")}).fields["user"]
    assert got.found.all()
    assert np.array_equal(got.vectors, cb[CentroidIndex(cb, method="exact").nearest(np.concatenate([v1, v2]))])


def test_a_store_at_a_url_carries_the_updates_of_its_deltas_folder(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Object storage keeps no deltas: they live in a local folder (--deltas), which the
    compress reads, carries into its own deltas for the new snapshot, and moves along."""
    url = f"memory://carry-{tmp_path.name}/store"
    mirror = tmp_path / "mirror"
    rng = np.random.default_rng(12)
    _compress(_checkpoint(tmp_path / "ckpt1.npz", np.random.default_rng(1), np.arange(4000)), url)
    assert "NOT carried into this snapshot: give --deltas MIRROR" in capsys.readouterr().err
    new_ids = np.arange(10**9, 10**9 + 120)
    vectors = rng.normal(size=(120, DIM)).astype(np.float32)
    np.savez(tmp_path / "u.npz", **{"user.ids": new_ids, "user.vectors": vectors})
    assert main(["update", "--store", url, "--deltas", str(mirror), str(tmp_path / "u.npz")]) == 0
    capsys.readouterr()
    _compress(_checkpoint(tmp_path / "ckpt2.npz", np.random.default_rng(2), np.arange(4000)), url,
              "--deltas", str(mirror))
    captured = capsys.readouterr()
    assert "carried 120 pending update(s)" in captured.out and "NOT carried" not in captured.err
    from saec.store import remote

    version = remote.StoreMirror(url, tmp_path / "check").sync()
    assert StoreLayout(mirror).current() == version
    engine = LiveEngine(mirror).engine
    cb = np.asarray(engine.snapshot.fields["user"].codebook)
    got = engine.lookup({"user": hash_ids(new_ids, "user")}).fields["user"]
    assert got.found.all() and np.array_equal(got.vectors, cb[CentroidIndex(cb, method="exact").nearest(vectors)])
    assert main(["compress", str(tmp_path / "ckpt2.npz"), "--out", str(tmp_path / "local"), "--deltas", str(mirror)]) == 2
    assert "expected --deltas only with --out at a URL" in capsys.readouterr().err


def test_the_carry_keeps_the_order_of_frames_across_its_batches(store: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames are re-assigned in groups (here of 100 rows): a later write of an id still wins."""
    monkeypatch.setattr(carry, "CHUNK_ROWS", 100)
    rng = np.random.default_rng(13)
    keys = hash_ids(np.arange(10**9, 10**9 + 60), "user")
    last = None
    for _ in range(7):  # 60 rows a frame: groups of two frames
        last = rng.normal(size=(60, DIM)).astype(np.float32) * 3
        _update(store, {"user": (keys, last)})
    _compress(_checkpoint(tmp_path / "ckpt2.npz", np.random.default_rng(14), np.arange(4000)), store)
    engine = LiveEngine(store).engine
    assert engine.snapshot.manifest["updates_carried"] == {"user": 420}
    cb = np.asarray(engine.snapshot.fields["user"].codebook)
    got = engine.lookup({"user": keys}).fields["user"]
    assert last is not None and np.array_equal(got.vectors, cb[CentroidIndex(cb, method="exact").nearest(last)])
    assert len(deltas.read_all(deltas.deltas_dir(store, engine.version))) == 7


def test_a_bad_watermark_is_refused_before_any_work(store: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    live = StoreLayout(store).current()
    capsys.readouterr()
    assert main(["compress", str(tmp_path / "ckpt1.npz"), "--out", str(store), "--updates-covered-until", "2999-01-01"]) == 2
    err = capsys.readouterr().err
    assert "saec compress: --updates-covered-until: expected a time no later than now" in err
    assert StoreLayout(store).current() == live and StoreLayout(store).versions() == [live]


def test_updates_written_during_the_first_pass_are_carried_by_the_second(store: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The first pass holds no lock: an update acknowledged meanwhile on the old snapshot is
    carried by the second, which holds the lock to the switch; after it, the old snapshot
    refuses updates (superseded: the clients retry on the new one)."""
    old = LiveEngine(store).engine
    late_keys = hash_ids(np.arange(5 * 10**9, 5 * 10**9 + 30), "user")
    late = np.random.default_rng(15).normal(size=(30, DIM)).astype(np.float32)
    first_pass = carry._Carrier.carry_pending
    calls = []

    def carry_then_update(self: carry._Carrier) -> None:
        first_pass(self)
        calls.append(self.report.frames_read)
        if len(calls) == 1:
            Updater(store, old).apply({"user": (late_keys, late)})  # acknowledged on the old snapshot

    monkeypatch.setattr(carry._Carrier, "carry_pending", carry_then_update)
    _update(store, {"user": (hash_ids(np.arange(10**9, 10**9 + 10), "user"), np.ones((10, DIM), np.float32))})
    _compress(_checkpoint(tmp_path / "ckpt2.npz", np.random.default_rng(16), np.arange(4000)), store)
    assert calls == [1, 2]  # the second pass read the frame the first one missed
    engine = LiveEngine(store).engine
    assert engine.snapshot.manifest["updates_carried"] == {"user": 40}
    cb = np.asarray(engine.snapshot.fields["user"].codebook)
    got = engine.lookup({"user": late_keys}).fields["user"]
    assert got.found.all() and np.array_equal(got.vectors, cb[CentroidIndex(cb, method="exact").nearest(late)])
    with pytest.raises(SupersededError):
        Updater(store, old).apply({"user": (late_keys, late)})


def test_a_pruned_fold_base_is_named_not_skipped_silently(store: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    _update(store, {"user": (hash_ids(np.arange(10**9, 10**9 + 10), "user"), np.ones((10, DIM), np.float32))})
    base = StoreLayout(store).current()
    assert main(["fold", "--store", str(store), "--keep", "1"]) == 0  # prunes the base and its deltas
    assert base not in StoreLayout(store).versions()
    folded = StoreLayout(store).current()
    capsys.readouterr()
    _compress(_checkpoint(tmp_path / "ckpt2.npz", np.random.default_rng(17), np.arange(4000)), store)
    out = capsys.readouterr().out
    assert f"NOT READ: the updates of {base} (folded into a later snapshot) are gone with it (pruned)" in out
    manifest = open_current(store).manifest
    assert manifest["carried_from"] == [folded] and manifest["not_read"] == [base]


def test_a_damaged_current_is_still_repaired_by_compress(store: Path, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    (store / "CURRENT").write_bytes(b"\xff\xfe garbage")
    with caplog.at_level(logging.WARNING):
        _compress(_checkpoint(tmp_path / "ckpt2.npz", np.random.default_rng(18), np.arange(4000)), store)
    assert StoreLayout(store).current() == StoreLayout(store).versions()[-1]
    assert any("no pending updates can be found to carry" in r.getMessage() for r in caplog.records)


def test_a_prune_during_the_carry_leaves_the_carried_deltas(store: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Until it is published, the new snapshot's deltas belong to no snapshot in the store:
    another publish's prune meanwhile must not take them (the carry holds their lock)."""
    keys = hash_ids(np.arange(10**9, 10**9 + 25), "user")
    _update(store, {"user": (keys, np.ones((25, DIM), np.float32))})
    first_pass = carry._Carrier.carry_pending
    pruned = []

    def carry_then_prune(self: carry._Carrier) -> None:
        first_pass(self)
        if not pruned:
            pruned.append(StoreLayout(store).prune(5))
            assert self.writer.directory.is_dir()

    monkeypatch.setattr(carry._Carrier, "carry_pending", carry_then_prune)
    _compress(_checkpoint(tmp_path / "ckpt2.npz", np.random.default_rng(19), np.arange(4000)), store)
    engine = LiveEngine(store).engine
    assert pruned and engine.lookup({"user": keys}).fields["user"].found.all()
