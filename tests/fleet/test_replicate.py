"""The consumer (store.replicate.Replicator) in process, against a real redis-server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench._redis import RedisServer
from saec.store.assign_index import exact_nearest
from saec.store.deltas import FieldDelta, encode_payload, read_all
from saec.store.hashing import hash_ids
from saec.store.live import LiveEngine
from saec.store.replicate import Replicator
from saec.store.updatelog import LogEntry, UpdateLog, open_update_log
from tests.fleet.conftest import fold_copy, log_url, publish_copy, replica_stores, set_watermark

pytestmark = pytest.mark.redis


def _batch(rng: np.random.Generator, start: int, n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Raw ids and vectors of ``user`` (compressed, dim 9) and ``country`` (dense, dim 17)."""
    uid = np.arange(start, start + n)
    cid = np.array([f"n{i}" for i in uid])
    return {"user": (uid, rng.normal(size=(n, 9)).astype(np.float32)),
            "country": (cid, rng.normal(size=(n, 17)).astype(np.float32))}


def _append(ulog: UpdateLog, batch: dict[str, tuple[np.ndarray, np.ndarray]]) -> LogEntry:
    """What a replica's POST /admin/updates puts on the log: hashed keys and vectors, no masks."""
    fields = {name: FieldDelta(keys=hash_ids(ids, name), vectors=v, masks=None) for name, (ids, v) in batch.items()}
    return ulog.append(encode_payload(fields))


def _drain(r: Replicator) -> None:
    """Step until a read finds nothing newer."""
    r.caught_up = False
    for _ in range(1000):
        r.step(block_ms=0)
        if r.caught_up:
            return
    raise AssertionError("the replicator did not catch up")


def _lookup(store: Path, batches: list[dict]) -> dict[str, np.ndarray]:
    engine = LiveEngine(store, verify=False).engine
    assert engine is not None
    out = {}
    for name in ("user", "country"):
        ids = np.concatenate([b[name][0] for b in batches])
        got = engine.lookup({name: hash_ids(ids, name)}).fields[name]
        assert got.found.all(), name
        out[name] = got.vectors
    return out


@pytest.fixture
def ulog(redis_server: RedisServer) -> UpdateLog:
    return open_update_log(log_url(redis_server))


def test_each_entry_becomes_one_frame_with_its_position_time_and_nearest_centroid(
    ulog: UpdateLog, tmp_path: Path
) -> None:
    (store,), data = replica_stores(tmp_path, 1)
    rng = np.random.default_rng(1)
    batches = [_batch(rng, 10**12 + 1000 * i, 50 + i) for i in range(3)]
    acks = [_append(ulog, b) for b in batches]
    r = Replicator(ulog, store)
    _drain(r)
    frames = read_all(store / "deltas" / data["version"])
    assert [f.source for f in frames] == [a.position for a in acks]
    assert [f.time_ms for f in frames] == [a.time_ms for a in acks]
    got = _lookup(store, batches)
    user_vectors = np.concatenate([b["user"][1] for b in batches])
    assert np.array_equal(got["user"], data["codebook"][exact_nearest(data["codebook"], user_vectors)])
    assert np.array_equal(got["country"], np.concatenate([b["country"][1] for b in batches]))
    assert r.applied == 3 and r.duplicates == 0 and not r.dropped


def test_a_restarted_consumer_never_appends_an_entry_twice(ulog: UpdateLog, tmp_path: Path) -> None:
    (store,), data = replica_stores(tmp_path, 1)
    rng = np.random.default_rng(2)
    first = [_append(ulog, _batch(rng, 10**12 + 100 * i, 20)) for i in range(5)]
    a = Replicator(ulog, store)
    _drain(a)
    # A consumer that forgot where it was (its process died after the fsync, before it
    # noted the position) reads the same entries again: every one is skipped.
    assert a.base is not None
    a.base.position = None
    _drain(a)
    assert (a.applied, a.duplicates) == (5, 5)
    # A new process starts from the newest src in the delta log.
    more = [_append(ulog, _batch(rng, 10**13 + 100 * i, 20)) for i in range(3)]
    b = Replicator(ulog, store)
    _drain(b)
    assert (b.applied, b.duplicates) == (3, 0)
    frames = read_all(store / "deltas" / data["version"])
    assert [f.source for f in frames] == [e.position for e in first + more]


def test_fields_that_cannot_be_applied_are_dropped_counted_and_the_position_moves_on(
    ulog: UpdateLog, tmp_path: Path
) -> None:
    (store,), data = replica_stores(tmp_path, 1)
    keys = hash_ids(np.arange(3), "x")
    bad = {
        "nope": FieldDelta(keys=keys, vectors=np.ones((3, 4), np.float32), masks=None),
        "user": FieldDelta(keys=keys, vectors=np.ones((3, 5), np.float32), masks=None),  # dim 9 expected
        "country": FieldDelta(keys=keys, vectors=np.ones((3, 17), np.float32), masks=None),
    }
    entry = ulog.append(encode_payload(bad))
    garbage = ulog.append(b"not a payload")
    r = Replicator(ulog, store)
    _drain(r)
    assert r.dropped == {"nope": 3, "user": 3, "(undecodable)": 1}
    frames = read_all(store / "deltas" / data["version"])
    assert [f.source for f in frames] == [entry.position, garbage.position]
    assert list(frames[0].fields) == ["country"] and frames[1].fields == {}


def test_a_replica_serving_a_share_writes_only_its_fields(ulog: UpdateLog, tmp_path: Path) -> None:
    (store,), data = replica_stores(tmp_path, 1)
    _append(ulog, _batch(np.random.default_rng(3), 10**12, 10))
    r = Replicator(ulog, store, fields=("user",))
    _drain(r)
    (frame,) = read_all(store / "deltas" / data["version"])
    assert list(frame.fields) == ["user"] and not r.dropped


def test_a_new_snapshot_gets_exactly_the_entries_after_its_watermark(ulog: UpdateLog, tmp_path: Path) -> None:
    (store,), data = replica_stores(tmp_path, 1)
    rng = np.random.default_rng(4)
    batches = [_batch(rng, 10**12 + 1000 * i, 30) for i in range(6)]
    acks = [_append(ulog, b) for b in batches[:3]]
    r = Replicator(ulog, store)
    _drain(r)
    version, covered = fold_copy(store, tmp_path / "staging")
    assert covered == acks[2].time_ms
    acks += [_append(ulog, b) for b in batches[3:]]
    _drain(r)  # still on the old base
    publish_copy(tmp_path / "staging", version, [store])
    _drain(r)
    assert r.base is not None and r.base.version == version
    frames = read_all(store / "deltas" / version)
    assert [f.source for f in frames] == [a.position for a in acks[3:]]
    # Every update is served on the new base: the first three from its checkpoint.
    got = _lookup(store, batches)
    user_vectors = np.concatenate([b["user"][1] for b in batches])
    assert np.array_equal(got["user"], data["codebook"][exact_nearest(data["codebook"], user_vectors)])


def test_a_snapshot_without_a_watermark_covers_nothing(ulog: UpdateLog, tmp_path: Path) -> None:
    (store,), data = replica_stores(tmp_path, 1)
    rng = np.random.default_rng(5)
    acks = [_append(ulog, _batch(rng, 10**12 + 1000 * i, 10)) for i in range(4)]
    r = Replicator(ulog, store)
    _drain(r)
    version, _ = fold_copy(store, tmp_path / "staging")
    set_watermark(tmp_path / "staging", version, None)
    publish_copy(tmp_path / "staging", version, [store])
    _drain(r)
    assert [f.source for f in read_all(store / "deltas" / version)] == [a.position for a in acks]


@pytest.mark.parametrize("method", ["exact", "hnsw"])
def test_replicas_answer_byte_for_byte_the_same_after_a_publish(
    ulog: UpdateLog, tmp_path: Path, method: str
) -> None:
    stores, data = replica_stores(tmp_path, 3, k=64)
    rng = np.random.default_rng(6)
    replicators = [Replicator(ulog, s, method=method) for s in stores]  # type: ignore[arg-type]
    batches = []
    for i in range(9):
        batches.append(_batch(rng, 10**12 + 1000 * i, 40))
        _append(ulog, batches[-1])
        # The replicas apply at different paces: the first keeps up, the others lag.
        _drain(replicators[0])
        if i % 3 == 2:
            _drain(replicators[1])
        if i == 4:
            version, covered = fold_copy(stores[0], tmp_path / "staging")
            publish_copy(tmp_path / "staging", version, stores)
    for r in replicators:
        _drain(r)
    assert all(r.base is not None and r.base.version == version for r in replicators)
    answers = [_lookup(s, batches) for s in stores]
    snapshot_ids = {"user": data["user_ids"][:500], "country": data["country_ids"]}
    for name in ("user", "country"):
        assert answers[0][name].tobytes() == answers[1][name].tobytes() == answers[2][name].tobytes()
        engines = [LiveEngine(s, verify=False).engine for s in stores]
        same = [e.lookup({name: hash_ids(snapshot_ids[name], name)}).fields[name].vectors.tobytes()
                for e in engines if e is not None]
        assert len(same) == 3 and same[0] == same[1] == same[2]
    frames = [[(f.source, f.time_ms) for f in read_all(s / "deltas" / version)] for s in stores]
    assert frames[0] == frames[1] == frames[2] and len(frames[0]) == 9 - 5


def test_entries_trimmed_before_a_restarted_replica_read_them_are_counted(ulog: UpdateLog, tmp_path: Path) -> None:
    (store,), data = replica_stores(tmp_path, 1)
    rng = np.random.default_rng(7)
    acks = [_append(ulog, _batch(rng, 10**12 + 100 * i, 5)) for i in range(3)]
    _drain(Replicator(ulog, store))
    acks += [_append(ulog, _batch(rng, 10**13 + 100 * i, 5)) for i in range(4)]
    ulog.trim_before(acks[5].position)  # entries 4 and 5 go before this replica read them
    again = Replicator(ulog, store)
    _drain(again)
    assert (again.gaps, again.applied) == (2, 2)
    frames = read_all(store / "deltas" / data["version"])
    assert [f.source for f in frames] == [a.position for a in acks[:3] + acks[5:]]


def test_a_compress_published_into_the_replicas_own_folder_carries_what_the_consumer_continues(
    ulog: UpdateLog, tmp_path: Path
) -> None:
    """A checkpoint published straight into a replica's folder (``saec compress --out STORE``):
    the publish carries the entries its watermark does not cover (with their positions), and
    the consumer goes on after the newest of them: each entry after the watermark once, in order."""
    from saec.store import carry
    from saec.store.writer import SnapshotWriter

    (store,), data = replica_stores(tmp_path, 1)
    rng = np.random.default_rng(8)
    batches = [_batch(rng, 10**12 + 1000 * i, 20) for i in range(8)]
    acks = [_append(ulog, b) for b in batches[:5]]
    r = Replicator(ulog, store)
    _drain(r)
    with SnapshotWriter(store, source="a checkpoint") as w:
        w.add_compressed_field("user", hash_ids(data["user_ids"], "user"), data["codebook"], data["masks"])
        w.add_dense_field("country", hash_ids(data["country_ids"], "country"), data["country"])
        version, report = carry.publish(w, covered_until=acks[1].time_ms)
    assert report.carried  # entries 3..5, from the old base's delta log
    acks += [_append(ulog, b) for b in batches[5:]]
    _drain(r)
    assert r.base is not None and r.base.version == version and r.duplicates == 0
    frames = read_all(store / "deltas" / version)
    assert [f.source for f in frames] == [a.position for a in acks[2:]]
    got = _lookup(store, batches[2:])
    user_vectors = np.concatenate([b["user"][1] for b in batches[2:]])
    assert np.array_equal(got["user"], data["codebook"][exact_nearest(data["codebook"], user_vectors)])
