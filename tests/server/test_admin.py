"""POST /admin/updates in-process (ASGI): token, both body formats, refusals, counters."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from saec.server.app import create_app
from saec.settings import Settings
from saec.store import deltas
from saec.store.hashing import hash_ids
from saec.wire import UPDATES_MEDIA_TYPE, encode_updates

pytestmark = pytest.mark.anyio
TOKEN = "s3cret-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def _client(root: Path, **settings: object) -> httpx.AsyncClient:
    app = create_app(Settings.from_mapping({"store": str(root), "reload_interval": 0, **settings}))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://saec")


def _nearest(codebook: np.ndarray, x: np.ndarray) -> np.ndarray:
    return ((x.astype(np.float64)[:, None] - codebook.astype(np.float64)[None]) ** 2).sum(-1).argmin(1)


async def test_admin_routes_are_absent_without_a_token(small_store: tuple[Path, dict]) -> None:
    root, _ = small_store
    async with _client(root) as c:
        r = await c.post("/admin/updates", json={"fields": {}}, headers=AUTH)
        schema = (await c.get("/openapi.json")).json()
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert "/admin/updates" not in schema["paths"]
    async with _client(root, admin_token=TOKEN) as c:
        schema = (await c.get("/openapi.json")).json()
    assert UPDATES_MEDIA_TYPE in schema["paths"]["/admin/updates"]["post"]["requestBody"]["content"]


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Bearer {TOKEN}x", TOKEN, f"bearer  {TOKEN}"])
async def test_missing_or_wrong_token_is_401(small_store: tuple[Path, dict], header: str | None) -> None:
    root, data = small_store
    body = {"fields": {"user": {"ids": [1], "vectors": [[0.0] * 9]}}}
    async with _client(root, admin_token=TOKEN) as c:
        r = await c.post("/admin/updates", json=body, headers={} if header is None else {"authorization": header})
    assert r.status_code == 401
    assert r.json()["type"].endswith("/unauthorized") and "Bearer" in r.headers["www-authenticate"]
    assert deltas.read_all(deltas.deltas_dir(root, data["version"])) == []


async def test_json_and_binary_updates_are_served(small_store: tuple[Path, dict], rng: np.random.Generator) -> None:
    root, data = small_store
    vec = rng.normal(size=(3, 9)).astype(np.float32)
    dense = rng.normal(size=(2, 17)).astype(np.float32)
    async with _client(root, admin_token=TOKEN) as c:
        r = await c.post(
            "/admin/updates",
            headers=AUTH,
            json={"fields": {"user": {"ids": [10**12, 10**12 + 1, 3], "vectors": vec.tolist()},
                             "country": {"ids": ["new-country", "c4"], "vectors": dense.tolist()}}},
        )
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["base"] == data["version"] and doc["sequence"] == 1
        assert {k: doc["fields"]["user"][k] for k in ("accepted", "new", "reassigned")} == {"accepted": 3, "new": 2, "reassigned": 1}
        d = ((vec - data["codebook"][_nearest(data["codebook"], vec)]) ** 2).sum(1)
        assert doc["fields"]["user"]["distance"]["mean"] == pytest.approx(float(d.mean()), rel=1e-4)
        assert doc["fields"]["user"]["distance"]["p99"] == pytest.approx(float(np.quantile(d, 0.99)), rel=1e-4)
        big = rng.normal(size=(1000, 9)).astype(np.float32)
        ids = np.arange(5 * 10**12, 5 * 10**12 + 1000)
        r = await c.post(
            "/admin/updates",
            headers={**AUTH, "content-type": UPDATES_MEDIA_TYPE},
            content=encode_updates({"user": (hash_ids(ids, "user"), big)}, hashed=True),
        )
        assert r.status_code == 200 and r.json()["sequence"] == 2 and r.json()["fields"]["user"]["new"] == 1000
        look = (await c.post("/lookup", json={"fields": {"user": [10**12, 3, 5 * 10**12 + 999], "country": ["new-country", "c4"]}})).json()
        assert look["fields"]["user"]["found"] == [True, True, True]
        want = data["codebook"][_nearest(data["codebook"], np.stack([vec[0], vec[2], big[-1]]))]
        assert np.array_equal(np.array(look["fields"]["user"]["vectors"], np.float32), want)
        assert np.array_equal(np.array(look["fields"]["country"]["vectors"], np.float32), dense)
        snap = (await c.get("/snapshot")).json()["deltas"]
        assert snap["sequence"] == 2 and snap["fields"]["user"]["pending"] == 1003 and snap["bytes"] > 1000 * 9 * 4
        mem = (await c.get("/memory")).json()["deltas"]
        assert mem["fields"]["country"]["pending"] == 2 and mem["memory_bytes"] > 0
        metrics = (await c.get("/metrics")).text
    assert 'saec_updates_total{field="user"' in metrics and "} 1003" in metrics
    # The summed squared distance of the 1003 user updates to their centroids, a positive float.
    drift = re.search(r'saec_update_distance_total\{field="user"\} ([0-9.e+-]+)', metrics)
    assert drift is not None and float(drift.group(1)) > 0


@pytest.mark.parametrize(
    ("fields", "status", "detail"),
    [
        ({"nope": {"ids": [1], "vectors": [[0.0]]}}, 404, "unknown field 'nope'"),
        ({"user": {"ids": [1, 2], "vectors": [[0.0] * 9, [0.0] * 8]}}, 422, "field 'user'"),
        ({"user": {"ids": [1, 2], "vectors": [[0.0] * 9, [1e39] + [0.0] * 8]}}, 422, "row 1 holds NaN or infinity"),
        ({"user": {"ids": [1, 2, 3], "vectors": [[0.0] * 9] * 2}}, 422, "3 ids and 2 vectors"),
        ({"user": {"ids": [4, 5, 4], "vectors": [[0.0] * 9] * 3}}, 422, "row 2 repeats the id of row 0"),
        ({"user": {"ids": [], "vectors": []}}, 422, "field 'user'"),
        ({}, 422, "at least one field"),
        ({"user": {"ids": [1]}}, 422, "field 'user'"),
    ],
)
async def test_bad_input_is_a_problem_and_nothing_is_applied(
    small_store: tuple[Path, dict], fields: dict, status: int, detail: str
) -> None:
    root, data = small_store
    body = {"fields": {"country": {"ids": ["zz"], "vectors": [[1.0] * 17]}, **fields}} if fields else {"fields": {}}
    async with _client(root, admin_token=TOKEN) as c:
        r = await c.post("/admin/updates", json=body, headers=AUTH)
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/problem+json" and detail in r.json()["detail"]
        look = (await c.post("/lookup", json={"fields": {"country": ["zz"]}})).json()
    assert look["fields"]["country"]["found"] == [False]
    assert deltas.read_all(deltas.deltas_dir(root, data["version"])) == []


async def test_wrong_media_type_is_415(small_store: tuple[Path, dict]) -> None:
    root, _ = small_store
    async with _client(root, admin_token=TOKEN) as c:
        r = await c.post("/admin/updates", content=b"x", headers={**AUTH, "content-type": "text/plain"})
    assert r.status_code == 415


async def test_async_client_update(small_store: tuple[Path, dict], rng: np.random.Generator) -> None:
    from saec.clients import AsyncSaecClient

    root, _ = small_store
    app = create_app(Settings.from_mapping({"store": str(root), "reload_interval": 0, "admin_token": TOKEN}))
    vectors = rng.normal(size=(4, 17)).astype(np.float32)
    async with AsyncSaecClient("http://saec", transport=httpx.ASGITransport(app=app)) as c:
        answer = await c.update({"country": (["a1", "a2", "a3", "a4"], vectors)}, token=TOKEN)
        got = await c.lookup({"country": ["a1", "a2", "a3", "a4"]})
    assert answer["fields"]["country"]["new"] == 4 and answer["fields"]["country"]["search"] == "none"
    assert got["country"].found.all() and np.array_equal(got["country"].vectors, vectors)


async def test_update_after_a_new_snapshot_is_503_then_lands_on_it(small_store: tuple[Path, dict], rng: np.random.Generator) -> None:
    from tests.conftest import write_small_store

    root, data = small_store
    body = {"fields": {"country": {"ids": ["late"], "vectors": [[2.0] * 17]}}}
    async with _client(root, admin_token=TOKEN) as c:
        assert (await c.post("/admin/updates", json=body, headers=AUTH)).status_code == 200
        newer = write_small_store(root, rng)["version"]  # published while the server still serves the old one
        r = await c.post("/admin/updates", json=body, headers=AUTH)
        assert r.status_code == 503 and r.json()["type"].endswith("/superseded")
        r = await c.post("/admin/updates", json=body, headers=AUTH)  # the 503 made this worker reload
        assert r.status_code == 200 and r.json()["base"] == newer and r.json()["sequence"] == 1
        look = (await c.post("/lookup", json={"fields": {"country": ["late"]}})).json()
    assert look["version"] == newer and look["fields"]["country"]["vectors"] == [[2.0] * 17]
    assert [f.sequence for f in deltas.read_all(deltas.deltas_dir(root, data["version"]))] == [1]
