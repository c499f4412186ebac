"""The sharded clients' routing, with in-process replicas (no sockets)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from saec.clients import FieldVectors, Lookup, ShardedSaecClient, UnknownFieldError
from saec.clients.sharded import AsyncShardedSaecClient, ShardMap, merge

pytestmark = pytest.mark.anyio


class FakeReplica:
    """Answers lookups with vectors that say which replica and field answered; records updates."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.version = "v-" + url[-1]
        self.lookups: list[dict[str, Any]] = []
        self.updates: list[tuple[dict[str, Any], bool, str | None]] = []
        self.closed = False

    def _answer(self, fields: dict[str, Any]) -> Lookup:
        self.lookups.append(fields)
        return Lookup(
            fields={name: FieldVectors(np.full((len(ids), 2), ord(self.url[-1]), np.float32), np.ones(len(ids), bool))
                    for name, ids in fields.items()},
            versions=(self.version,),
        )

    def lookup(self, fields: dict[str, Any], *, hashed: bool = False) -> Lookup:
        return self._answer(fields)

    def update(self, fields: dict[str, Any], *, hashed: bool = False, token: str | None = None) -> dict[str, Any]:
        self.updates.append((fields, hashed, token))
        return {"accepted": sorted(fields)}

    def close(self) -> None:
        self.closed = True


class AsyncFakeReplica(FakeReplica):
    async def lookup(self, fields: dict[str, Any], *, hashed: bool = False) -> Lookup:  # type: ignore[override]
        return self._answer(fields)

    async def update(  # type: ignore[override]
        self, fields: dict[str, Any], *, hashed: bool = False, token: str | None = None
    ) -> dict[str, Any]:
        self.updates.append((fields, hashed, token))
        return {"accepted": sorted(fields)}

    async def aclose(self) -> None:
        self.closed = True


SHARDS = {"user": "http://r/a", "item": "http://r/b", "country": ["http://r/a", "http://r/b"]}


def test_lookup_splits_by_field_and_merges_in_request_order() -> None:
    with ShardedSaecClient(SHARDS, connect=FakeReplica) as c:
        res = c.lookup({"item": [1, 2, 3], "user": [4]})
        a, b = c.replicas["http://r/a"], c.replicas["http://r/b"]
    assert list(res.fields) == ["item", "user"]
    assert (res["item"].vectors == ord("b")).all() and res["item"].vectors.shape == (3, 2)
    assert (res["user"].vectors == ord("a")).all()
    assert a.lookups == [{"user": [4]}] and b.lookups == [{"item": [1, 2, 3]}]
    assert set(res.versions) == {"v-a", "v-b"}
    assert a.closed and b.closed


def test_a_field_on_two_replicas_is_looked_up_in_turn() -> None:
    with ShardedSaecClient(SHARDS, connect=FakeReplica) as c:
        answered = [c.lookup({"country": [1]})["country"].vectors[0, 0] for _ in range(4)]
    assert answered == [ord("a"), ord("b"), ord("a"), ord("b")]


def test_updates_go_to_every_replica_serving_the_field() -> None:
    rows = (np.array([7]), np.zeros((1, 9), np.float32))
    with ShardedSaecClient(SHARDS, connect=FakeReplica) as c:
        answers = c.update({"user": rows, "country": rows}, hashed=True, token="t0k")
        a, b = c.replicas["http://r/a"], c.replicas["http://r/b"]
    assert answers == {"http://r/a": {"accepted": ["country", "user"]}, "http://r/b": {"accepted": ["country"]}}
    assert a.updates == [({"user": rows, "country": rows}, True, "t0k")]
    assert b.updates == [({"country": rows}, True, "t0k")]


def test_unknown_field_is_refused_before_any_request() -> None:
    with ShardedSaecClient(SHARDS, connect=FakeReplica) as c:
        with pytest.raises(UnknownFieldError, match="unknown field 'nope': the shard map routes country, item, user"):
            c.lookup({"user": [1], "nope": [2]})
        assert all(not r.lookups for r in c.replicas.values())


def test_shard_map_refuses_a_field_without_replicas() -> None:
    with pytest.raises(ValueError, match="expected at least one base URL"):
        ShardMap({"user": []})


def test_merge_lists_each_version_once() -> None:
    one = Lookup({"a": FieldVectors(np.zeros((1, 1), np.float32), np.ones(1, bool))}, ("v1",))
    two = Lookup({"b": FieldVectors(np.ones((1, 1), np.float32), np.ones(1, bool))}, ("v1", "v2"))
    merged = merge([one, two], ["b", "a"])
    assert list(merged.fields) == ["b", "a"] and merged.versions == ("v1", "v2")


async def test_async_client_routes_the_same_way() -> None:
    rows = (np.array([7]), np.zeros((1, 9), np.float32))
    async with AsyncShardedSaecClient(SHARDS, connect=AsyncFakeReplica) as c:
        res = await c.lookup({"user": [1], "item": [2, 3]})
        answers = await c.update({"country": rows})
        replicas = c.replicas
    assert list(res.fields) == ["user", "item"] and set(res.versions) == {"v-a", "v-b"}
    assert set(answers) == {"http://r/a", "http://r/b"}
    assert all(r.closed for r in replicas.values())


class DownReplica(FakeReplica):
    def lookup(self, fields: dict[str, Any], *, hashed: bool = False) -> Lookup:
        from saec.clients import ConnectError

        self.lookups.append(fields)
        raise ConnectError(f"POST /lookup: {self.url} refused after 4 attempts")


def test_a_replica_down_fails_over_to_the_fields_other_replicas() -> None:
    def connect(url: str) -> FakeReplica:
        return DownReplica(url) if url.endswith("a") else FakeReplica(url)

    from saec.clients import ConnectError

    with ShardedSaecClient(SHARDS, connect=connect) as c:
        # country lives on a and b: a is down, so b answers it.
        res = c.lookup({"country": [1, 2], "item": [3]})
        assert (res["country"].vectors == ord("b")).all() and res.versions == ("v-b",)
        assert c.replicas["http://r/a"].lookups == [{"country": [1, 2]}]
        # user lives on a only: the error is the replica's.
        with pytest.raises(ConnectError, match="r/a refused"):
            c.lookup({"user": [1]})


async def test_async_client_fails_over_too() -> None:
    from saec.clients import ConnectError

    class AsyncDown(AsyncFakeReplica):
        async def lookup(self, fields: dict[str, Any], *, hashed: bool = False) -> Lookup:  # type: ignore[override]
            raise ConnectError("down")

    def connect(url: str) -> AsyncFakeReplica:
        return AsyncDown(url) if url.endswith("b") else AsyncFakeReplica(url)

    async with AsyncShardedSaecClient(SHARDS, connect=connect) as c:
        answers = [(await c.lookup({"country": [1]}))["country"].vectors[0, 0] for _ in range(2)]
        with pytest.raises(ConnectError):
            await c.lookup({"item": [1]})
    assert answers == [ord("a"), ord("a")]
