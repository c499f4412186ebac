"""The app in-process (ASGI, no socket): every route and every error status."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from saec.server.app import create_app
from saec.settings import Settings
from saec.store.hashing import hash_ids
from saec.wire import IDS_MEDIA_TYPE, VECTORS_MEDIA_TYPE, decode_vectors, encode_ids
from tests.conftest import write_small_store

pytestmark = pytest.mark.anyio


@pytest.fixture
def store_data(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, dict]:
    root = tmp_path / "store"
    return root, write_small_store(root, rng)


def _client(root: Path, **settings: object) -> httpx.AsyncClient:
    app = create_app(Settings.from_mapping({"store": str(root), "reload_interval": 0, **settings}))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://saec")


def _expected_user(data: dict, idx: np.ndarray) -> np.ndarray:
    return data["codebook"][data["masks"][idx]]


async def test_json_lookup(store_data: tuple[Path, dict]) -> None:
    root, data = store_data
    async with _client(root) as c:
        r = await c.post("/lookup", json={"fields": {"user": [3, 10, -5], "country": ["c1", "nowhere"]}})
    assert r.status_code == 200
    doc = r.json()
    assert doc["version"] == data["version"] == r.headers["x-saec-snapshot"]
    user = doc["fields"]["user"]
    assert user["found"] == [True, True, False]
    assert np.allclose(np.array(user["vectors"][:2], np.float32), _expected_user(data, np.array([0, 1])))
    assert user["vectors"][2] == [0.0] * 9
    country = doc["fields"]["country"]
    assert country["found"] == [True, False]
    assert np.array_equal(np.array(country["vectors"][0], np.float32), data["country"][1])


async def test_binary_lookup_matches_json(store_data: tuple[Path, dict]) -> None:
    root, data = store_data
    ids = data["user_ids"][:100]
    async with _client(root) as c:
        rb = await c.post(
            "/lookup",
            content=encode_ids({"user": ids}, hashed=False),
            headers={"content-type": IDS_MEDIA_TYPE, "accept": VECTORS_MEDIA_TYPE},
        )
        rj = await c.post("/lookup", json={"fields": {"user": hash_ids(ids, "user").tolist()}, "hashed": True})
    assert rb.status_code == 200 and rb.headers["content-type"] == VECTORS_MEDIA_TYPE
    msg = decode_vectors(rb.content)
    vectors, found = msg.fields["user"]
    assert msg.version == data["version"]
    assert found.all()
    assert np.array_equal(vectors, np.array(rj.json()["fields"]["user"]["vectors"], np.float32))


async def test_default_vector_mean(store_data: tuple[Path, dict]) -> None:
    root, data = store_data
    async with _client(root, default_vector="mean") as c:
        r = await c.post("/lookup", json={"fields": {"country": ["nowhere"]}})
    got = np.array(r.json()["fields"]["country"]["vectors"][0], np.float32)
    assert np.allclose(got, data["country"].mean(axis=0), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, status, kind",
    [
        ({"json": {"fields": {"nope": [1]}}}, 404, "unknown-field"),
        ({"json": {"fields": {"user": [1, "a"]}}}, 422, "malformed-ids"),
        ({"json": {"fields": {"user": [1.5]}}}, 422, "malformed-ids"),
        ({"json": {"fields": {"user": 7}}}, 422, "malformed-request"),
        ({"json": {"fields": {"user": [-1]}, "hashed": True}}, 422, "malformed-ids"),
        ({"json": {"fields": {"user": [1]}, "hashed": "yes"}}, 422, "malformed-request"),
        ({"json": {"ids": [1]}}, 422, "malformed-request"),
        ({"json": [1, 2]}, 422, "malformed-request"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "malformed-request"),
        ({"content": b"SAEC", "headers": {"content-type": IDS_MEDIA_TYPE}}, 422, "malformed-request"),
        ({"content": b"ids=1", "headers": {"content-type": "text/plain"}}, 415, "unsupported-media-type"),
    ],
)
async def test_errors_are_problems(store_data: tuple[Path, dict], kwargs: dict, status: int, kind: str) -> None:
    root, _ = store_data
    async with _client(root) as c:
        r = await c.post("/lookup", **kwargs)
    assert r.status_code == status
    assert r.headers["content-type"] == "application/problem+json"
    doc = r.json()
    assert doc["status"] == status and doc["type"].endswith("/" + kind) and doc["detail"]
    assert doc["instance"] == "/lookup"


async def test_batch_over_limit_is_413(store_data: tuple[Path, dict]) -> None:
    root, _ = store_data
    async with _client(root, max_ids=10) as c:
        ok = await c.post("/lookup", json={"fields": {"user": list(range(5)), "country": ["a"] * 5}})
        over = await c.post("/lookup", json={"fields": {"user": list(range(6)), "country": ["a"] * 5}})
    assert ok.status_code == 200
    assert over.status_code == 413 and "at most 10 ids" in over.json()["detail"]


async def test_body_over_limit_is_413(store_data: tuple[Path, dict]) -> None:
    root, _ = store_data
    async with _client(root, max_body_bytes=1000) as c:
        r = await c.post("/lookup", json={"fields": {"user": list(range(1000))}})
    assert r.status_code == 413 and r.json()["type"].endswith("payload-too-large")


async def test_binary_header_lies_about_counts(store_data: tuple[Path, dict]) -> None:
    root, _ = store_data
    body = encode_ids({"user": np.arange(10)}, hashed=False)
    async with _client(root) as c:
        short = await c.post("/lookup", content=body[:-8], headers={"content-type": IDS_MEDIA_TYPE})
        long = await c.post("/lookup", content=body + b"\0" * 8, headers={"content-type": IDS_MEDIA_TYPE})
    assert short.status_code == 422 and "expected 10 ids" in short.json()["detail"]
    assert long.status_code == 422


async def test_memory_report(store_data: tuple[Path, dict]) -> None:
    root, _ = store_data
    async with _client(root) as c:
        await c.post("/lookup", json={"fields": {"user": list(range(100))}})
        doc = (await c.get("/memory")).json()
    user = doc["fields"]["user"]
    assert user["features"] == 5000 and user["k"] == 16 and user["dim"] == 9
    assert user["codebook_bytes"] == 16 * 9 * 4
    assert user["masks_bytes"] == user["rows"]
    assert user["uncompressed_bytes"] == 5000 * (9 * 4 + 8)
    assert user["ratio_paper"] == pytest.approx(5000 * 36 / (user["rows"] + 16 * 36))
    assert user["ratio_with_keys"] == pytest.approx(user["uncompressed_bytes"] / user["serving_bytes"])
    assert user["bytes_per_feature"] < 3.5
    assert user["counts_bytes"] == user["rows"] * 4
    country = doc["fields"]["country"]
    assert country["kind"] == "dense" and country["vectors_bytes"] == 50 * 17 * 4
    total = doc["total"]
    assert total["features"] == 5050
    if doc["resident_measured"]:
        assert 0 < total["resident_bytes"] <= total["mapped_bytes"] + 4096 * 20


async def test_snapshot_health_ready_metrics_openapi(store_data: tuple[Path, dict]) -> None:
    root, data = store_data
    async with _client(root) as c:
        snap = (await c.get("/snapshot")).json()
        assert snap["version"] == data["version"]
        assert snap["fields"]["user"] == {"kind": "compressed", "dim": 9, "k": 16, "features": 5000, "rows": snap["fields"]["user"]["rows"]}
        assert snap["limits"]["max_ids"] == Settings().max_ids
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        assert (await c.get("/readyz")).json()["version"] == data["version"]
        await c.post("/lookup", json={"fields": {"user": [3, 999999]}})
        metrics = (await c.get("/metrics")).text
        assert 'saec_lookup_ids_total{field="user"' in metrics
        assert 'saec_lookup_not_found_total{field="user"} 1.0\n' in metrics
        assert 'saec_requests_total{protocol="http",route="/lookup",status="200"' in metrics
        schema = (await c.get("/openapi.json")).json()
        assert IDS_MEDIA_TYPE in schema["paths"]["/lookup"]["post"]["requestBody"]["content"]
        r404 = await c.get("/nowhere")
        assert r404.status_code == 404 and r404.headers["content-type"] == "application/problem+json"
        r405 = await c.get("/lookup")
        assert r405.status_code == 405 and r405.headers["content-type"] == "application/problem+json"


async def test_not_ready_until_a_snapshot_is_published(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    app = create_app(Settings.from_mapping({"store": str(root), "reload_interval": 0}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://saec") as c:
        assert (await c.get("/healthz")).status_code == 200
        r = await c.get("/readyz")
        assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
        assert (await c.post("/lookup", json={"fields": {"user": [1]}})).status_code == 503
