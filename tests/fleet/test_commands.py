"""``saec trim-log``, ``saec update --update-log`` and ``saec serve --update-log`` checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench._redis import RedisServer
from saec.cli import main
from saec.store.assign_index import exact_nearest
from saec.store.deltas import read_all
from saec.store.hashing import hash_ids
from saec.store.layout import StoreLayout
from saec.store.live import LiveEngine
from saec.store.replicate import Replicator
from saec.store.updatelog import open_update_log
from saec.store.writer import SnapshotWriter
from tests.fleet.conftest import log_url, replica_stores, set_watermark

pytestmark = pytest.mark.redis


def _republish(store: Path, data: dict) -> str:
    with SnapshotWriter(store, source="tests") as w:
        w.add_dense_field("country", hash_ids(data["country_ids"], "country"), data["country"])
        return w.publish()


def test_trim_log_keeps_what_the_oldest_kept_snapshot_needs(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (store,), data = replica_stores(tmp_path, 1)
    url = log_url(redis_server)
    log = open_update_log(url)
    acks = [log.append(b"%d" % i) for i in range(10)]
    second = _republish(store, data)
    # Without a watermark the first snapshot covers nothing: everything is kept.
    assert main(["trim-log", "--store", str(store), "--update-log", url]) == 0
    assert "nothing trimmed" in capsys.readouterr().out
    assert log.lag(None).entries == 10
    set_watermark(store, data["version"], acks[3].time_ms)
    set_watermark(store, second, acks[7].time_ms)
    assert main(["trim-log", "--store", str(store), "--update-log", url, "--dry-run"]) == 0
    assert "would trim 4 of 10 entries" in capsys.readouterr().out
    assert log.lag(None).entries == 10
    assert main(["trim-log", "--store", str(store), "--update-log", url]) == 0
    assert "trimmed 4 entries" in capsys.readouterr().out
    assert [e.position for e in log.read_after(None, count=100)] == [a.position for a in acks[4:]]
    # The older snapshot is pruned away: now the newer one decides.
    StoreLayout(store).prune(1)
    assert main(["trim-log", "--store", str(store), "--update-log", url]) == 0
    assert [e.position for e in log.read_after(None, count=100)] == [a.position for a in acks[8:]]


def test_update_command_appends_to_the_log_and_every_replica_applies_it(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stores, data = replica_stores(tmp_path, 2)
    url = log_url(redis_server)
    rng = np.random.default_rng(3)
    ids = np.arange(10**12, 10**12 + 250)
    vectors = rng.normal(size=(250, 9)).astype(np.float32)
    np.savez(tmp_path / "u.npz", **{"user.ids": ids, "user.vectors": vectors})
    code = main(["update", "--store", str(stores[0]), "--update-log", url, "--batch-rows", "100", str(tmp_path / "u.npz")])
    assert code == 0
    assert "entries of the update log" in capsys.readouterr().out
    # Nothing went to the local deltas: the replicas apply what the log holds.
    assert not (stores[0] / "deltas").exists() or not read_all(stores[0] / "deltas" / data["version"])
    log = open_update_log(url)
    assert log.lag(None).entries == 3
    for store in stores:
        r = Replicator(log, store)
        r.step(block_ms=0)
        engine = LiveEngine(store, verify=False).engine
        assert engine is not None
        got = engine.lookup({"user": hash_ids(ids, "user")}).fields["user"]
        assert got.found.all()
        cb = data["codebook"]
        nearest = np.concatenate([exact_nearest(cb, vectors[i : i + 100]) for i in range(0, 250, 100)])
        assert np.array_equal(got.vectors, cb[nearest])


def test_serve_refuses_an_update_log_it_cannot_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (store,), _ = replica_stores(tmp_path, 1)
    assert main(["serve", "--store", str(store), "--update-log", "kafka://broker:9092/t"]) == 2
    assert "expected an update log URL" in capsys.readouterr().err


def test_the_sharded_client_sends_a_field_once_to_replicas_sharing_a_log() -> None:
    from saec.clients.sharded import ShardMap

    shards = ShardMap({"user": ["http://a", "http://b"], "country": ["http://b", "http://c"]})
    rows = {"user": "U", "country": "C"}
    assert shards.split_update(rows) == {"http://a": {"user": "U"}, "http://b": {"user": "U", "country": "C"},
                                         "http://c": {"country": "C"}}
    assert shards.split_update(rows, shared_log=True) == {"http://a": {"user": "U"}, "http://b": {"country": "C"}}
