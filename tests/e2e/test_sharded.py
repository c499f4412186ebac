"""Fields sharded across two real `saec serve` processes: the merged answer is a single
server's, bit for bit, and says when the replicas answered from different snapshots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from saec.clients import AsyncSaecClient, AsyncShardedSaecClient, SaecClient, ShardedSaecClient, UnknownFieldError
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


TOKEN = "sharded-admin-token"


@pytest.fixture(scope="module")
def updatable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """Two replicas of one store folder, half the fields each, with the admin routes mounted."""
    store = tmp_path_factory.mktemp("sharded-updates") / "store"
    write_store(store, seed=3)
    started: list[Server] = []
    try:
        for fields in ("user,country", "item,tag"):
            started.append(Server(store, SAEC_FIELDS=fields, SAEC_ADMIN_TOKEN=TOKEN))
        yield {"a": started[0], "b": started[1], "store": store}
    finally:
        for server in started:
            server.stop()


def _updates(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    # New ids and one existing id per field (3 * i + field index is in the snapshot).
    return {name: (np.concatenate([np.arange(10**9, 10**9 + 40) + i, [3 * 5 + i]]),
                   rng.normal(size=(41, dim)).astype(np.float32))
            for i, (name, dim) in enumerate(FIELDS.items())}


def test_updates_through_the_sharded_client_reach_the_replicas_serving_each_field(updatable: dict) -> None:
    a, b = updatable["a"], updatable["b"]
    shards = {"user": a.url, "country": a.url, "item": b.url, "tag": b.url}
    rows = _updates(np.random.default_rng(4))
    with ShardedSaecClient(shards) as many:
        before = many.lookup({n: ids for n, (ids, _) in rows.items()})
        answers = many.update(rows, token=TOKEN)
        after = many.lookup({n: ids for n, (ids, _) in rows.items()})
    assert set(answers) == {a.url, b.url}
    assert sorted(answers[a.url]["fields"]) == ["country", "user"]
    assert sorted(answers[b.url]["fields"]) == ["item", "tag"]
    for name, (_ids, vectors) in rows.items():
        assert not before[name].found[:40].any() and before[name].found[40]
        assert after[name].found.all()
        if name in ("country", "tag"):  # dense fields: the vectors themselves
            assert after[name].vectors.tobytes() == vectors.tobytes()
        else:  # compressed: a codebook row, a changed one for most new vectors
            assert not np.array_equal(after[name].vectors, before[name].vectors)
    with SaecClient(a.url) as one:
        counts = one.update({"user": (rows["user"][0][:1], rows["user"][1][:1])}, token=TOKEN)
    assert counts["fields"]["user"]["reassigned"] == 1 and counts["fields"]["user"]["new"] == 0


async def test_async_sharded_updates_are_served(updatable: dict) -> None:
    a, b = updatable["a"], updatable["b"]
    shards = {"user": a.url, "country": a.url, "item": b.url, "tag": b.url}
    vectors = np.full((2, FIELDS["tag"]), 0.25, np.float32)
    async with AsyncShardedSaecClient(shards) as many:
        answers = await many.update({"tag": (["t-new-1", "t-new-2"], vectors)}, token=TOKEN)
        got = await many.lookup({"tag": ["t-new-1", "t-new-2"]})
    assert list(answers) == [b.url] and answers[b.url]["fields"]["tag"]["new"] == 2
    assert got["tag"].found.all() and got["tag"].vectors.tobytes() == vectors.tobytes()


def test_a_replica_refuses_a_field_it_does_not_serve_and_applies_nothing(updatable: dict) -> None:
    a = updatable["a"]
    ids = np.array([5 * 10**9, 5 * 10**9 + 1])
    body = {"user": (ids, np.ones((2, FIELDS["user"]), np.float32)),
            "item": (ids, np.ones((2, FIELDS["item"]), np.float32))}
    with SaecClient(a.url) as one:
        with pytest.raises(UnknownFieldError, match="unknown field 'item': this server serves country, user"):
            one.update(body, token=TOKEN)
        got = one.lookup({"user": ids})
    assert not got["user"].found.any()  # the served field of the refused request was not applied
    with httpx.Client(base_url=a.url) as c:
        r = c.post("/admin/updates", headers={"authorization": f"Bearer {TOKEN}"},
                   json={"fields": {"item": {"ids": [1], "vectors": [[0.0] * FIELDS["item"]]}}})
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert "served by another replica" in r.json()["detail"]


def test_replicas_skip_quietly_the_deltas_of_fields_they_do_not_serve(updatable: dict) -> None:
    # Both replicas read the same deltas folder; each applies only its own fields' frames.
    a, b = updatable["a"], updatable["b"]
    with SaecClient(a.url) as one:
        one.update({"country": (["c-quiet"], np.ones((1, FIELDS["country"]), np.float32))}, token=TOKEN)
    with SaecClient(b.url) as other:
        other.lookup({"tag": [0]})  # refreshes b's overlay past the frame above
        snap = other.snapshot()
    assert "country" not in snap["deltas"]["fields"]
    b.log.flush()
    b.log.seek(0)
    assert b"does not fit snapshot" not in b.log.read()
