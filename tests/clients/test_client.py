"""Client behaviour against a scripted transport: retries, splitting, typed errors."""

from __future__ import annotations

import httpx
import numpy as np
import orjson
import pytest

from saec.clients import ConnectError, Retry, SaecClient, ServerUnavailableError
from saec.clients.client import _Core
from saec.wire import VECTORS_MEDIA_TYPE, decode_ids, encode_vectors

FAST = Retry(attempts=3, base=0.001, cap=0.002)


def _answer(request: httpx.Request, dim: int = 2) -> httpx.Response:
    """Echo each id back as a vector [id % 1000, field length]."""
    msg = decode_ids(request.content)
    fields = {}
    for name, keys in msg.fields.items():
        v = np.stack([(keys % 1000).astype(np.float32), np.full(keys.shape, len(name), np.float32)], axis=1)
        fields[name] = (v, np.ones(keys.shape[0], bool))
    return httpx.Response(200, content=encode_vectors("v1", fields), headers={"content-type": VECTORS_MEDIA_TYPE})


def test_retries_503_then_succeeds() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) < 3:
            return httpx.Response(503, json={"status": 503, "detail": "busy"})
        return _answer(request)

    with SaecClient("http://x", max_ids=100, retry=FAST, transport=httpx.MockTransport(handler)) as c:
        res = c.lookup({"f": [1, 2]})
    assert len(calls) == 3
    assert res["f"].vectors.shape == (2, 2)


def test_gives_up_with_the_servers_problem() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            503, content=orjson.dumps({"status": 503, "detail": "no snapshot yet"}),
            headers={"content-type": "application/problem+json"},
        )

    with SaecClient("http://x", max_ids=100, retry=FAST, transport=httpx.MockTransport(handler)) as c:
        with pytest.raises(ServerUnavailableError) as err:
            c.lookup({"f": [1]})
    assert err.value.status == 503 and err.value.detail == "no snapshot yet"


def test_connection_errors_are_retried_then_raised() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ConnectError("refused", request=request)

    with SaecClient("http://x", max_ids=100, retry=FAST, transport=httpx.MockTransport(handler)) as c:
        with pytest.raises(ConnectError, match="after 3 attempts"):
            c.lookup({"f": [1]})
    assert len(calls) == 3


def test_client_errors_are_not_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(404, json={"status": 404, "detail": "unknown field 'f'"})

    with SaecClient("http://x", max_ids=100, retry=FAST, transport=httpx.MockTransport(handler)) as c:
        with pytest.raises(KeyError):
            c.lookup({"f": [1]})
    assert len(calls) == 1


def test_split_lookups_come_back_in_order() -> None:
    sizes = []

    def handler(request: httpx.Request) -> httpx.Response:
        sizes.append(sum(k.shape[0] for k in decode_ids(request.content).fields.values()))
        return _answer(request)

    ids_a = np.arange(250) * 3
    ids_b = np.arange(70)
    with SaecClient("http://x", max_ids=100, transport=httpx.MockTransport(handler)) as c:
        res = c.lookup({"a": ids_a, "bb": ids_b, "empty": []})
    assert sizes == [100, 100, 100, 20]
    from saec.store.hashing import hash_ids

    assert np.array_equal(res["a"].vectors[:, 0], (hash_ids(ids_a, "a") % 1000).astype(np.float32))
    assert np.array_equal(res["bb"].vectors[:, 0], (hash_ids(ids_b, "bb") % 1000).astype(np.float32))
    assert (res["bb"].vectors[:, 1] == 2).all()
    assert res["empty"].vectors.shape[0] == 0 and res["empty"].found.shape == (0,)


@pytest.mark.parametrize("limit", [1, 3, 7, 1000])
def test_batches_cover_every_id_once(limit: int) -> None:
    core = _Core("binary", limit)
    keys = {"a": np.arange(10, dtype=np.uint64), "b": np.arange(5, dtype=np.uint64) + 100}
    batches = list(core.batches(keys, limit))
    assert all(sum(v.shape[0] for v in b.values()) <= limit for b in batches)
    joined = {n: np.concatenate([b[n] for b in batches if n in b]) for n in keys}
    assert all(np.array_equal(joined[n], keys[n]) for n in keys)
