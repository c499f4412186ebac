"""Fields sharded across two real `saec serve` processes: the merged answer is a single
server's, bit for bit, and says when the replicas answered from different snapshots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from saec.clients import AsyncSaecClient, AsyncShardedSaecClient, SaecClient, ShardedSaecClient
from saec.store.hashing import hash_ids
from saec.store.writer import SnapshotWriter
from tests.e2e.test_uvicorn import Server

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

FIELDS = {"user": 9, "item": 17, "country": 9, "tag": 5}


def write_store(root: Path, seed: int) -> str:
    """Four fields, two compressed and two dense; the same arrays for the same seed."""
    rng = np.random.default_rng(seed)
    with SnapshotWriter(root, source="sharding test") as w:
        for i, (name, dim) in enumerate(FIELDS.items()):
            n = 3000 if i < 2 else 200
            keys = hash_ids(np.arange(n, dtype=np.int64) * 3 + i, name)
            if i < 2:
                w.add_compressed_field(name, keys, rng.normal(size=(32, dim)).astype(np.float32),
                                       rng.integers(0, 32, n).astype(np.uint8), rng.integers(1, 99, n))
            else:
                w.add_dense_field(name, keys, rng.normal(size=(n, dim)).astype(np.float32))
        return w.publish()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    base = tmp_path_factory.mktemp("sharded")
    first, second = base / "a" / "store", base / "b" / "store"
    version_a = write_store(first, seed=8)
    # The same arrays published again: another version, identical vectors.
    version_b = write_store(second, seed=8)
    started: list[Server] = []
    try:
        for store, fields in ((first, ""), (first, "user,country"), (second, "item,tag")):
            started.append(Server(store, SAEC_FIELDS=fields, SAEC_MAX_IDS="700"))
        yield {"single": started[0], "a": started[1], "b": started[2], "versions": (version_a, version_b)}
    finally:
        for server in started:
            server.stop()


def _request() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    # Known and unknown ids, more than one request's worth for the user field (max_ids 700).
    return {name: rng.integers(0, 9000 if name in ("user", "item") else 600, size=1500 if name == "user" else 300)
            for name in ("tag", "user", "item", "country")}


def _assert_same(merged, single) -> None:  # type: ignore[no-untyped-def]
    assert list(merged.fields) == list(single.fields) == ["tag", "user", "item", "country"]
    for name in single.fields:
        assert merged[name].vectors.dtype == np.float32
        assert merged[name].vectors.tobytes() == single[name].vectors.tobytes()
        assert np.array_equal(merged[name].found, single[name].found)
        assert single[name].found.any() and not single[name].found.all()


def test_merged_lookup_equals_single_server(servers: dict) -> None:
    shards = {"user": servers["a"].url, "country": servers["a"].url, "item": servers["b"].url, "tag": servers["b"].url}
    with SaecClient(servers["single"].url) as one, ShardedSaecClient(shards) as many:
        single = one.lookup(_request())
        merged = many.lookup(_request())
        hashed = many.lookup({n: hash_ids(ids, n) for n, ids in _request().items()}, hashed=True)
    _assert_same(merged, single)
    _assert_same(hashed, single)
    version_a, version_b = servers["versions"]
    assert single.versions == (version_a,)
    # Replica b serves another snapshot (the same vectors): the answer says so.
    assert set(merged.versions) == {version_a, version_b}


async def test_async_merged_lookup_equals_single_server(servers: dict) -> None:
    shards = {"user": servers["a"].url, "country": servers["a"].url, "item": servers["b"].url, "tag": servers["b"].url}
    async with AsyncSaecClient(servers["single"].url) as one, AsyncShardedSaecClient(shards) as many:
        single = await one.lookup(_request())
        merged = await many.lookup(_request())
        one_replica = await many.lookup({"user": [0, 3]})
    _assert_same(merged, single)
    assert one_replica.versions == (servers["versions"][0],)


def test_replica_shows_its_share(servers: dict) -> None:
    with SaecClient(servers["a"].url) as a, SaecClient(servers["single"].url) as single:
        snap, memory = a.snapshot(), a.memory()
        whole = single.memory()
    assert sorted(snap["fields"]) == ["country", "user"]
    assert snap["shard"] == {"fields": ["user", "country"], "snapshot_fields": 4, "all": False}
    assert sorted(memory["fields"]) == ["country", "user"] and memory["shard"]["all"] is False
    assert whole["shard"]["all"] is True
    assert 0 < memory["total"]["serving_bytes"] < whole["total"]["serving_bytes"]
