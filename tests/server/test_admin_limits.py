"""POST /admin/updates gets a lookup's pre-checks, and the small refusals of odd input."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from saec.server.app import create_app
from saec.settings import Settings
from saec.store import deltas
from saec.wire import UPDATES_MEDIA_TYPE, encode_updates

pytestmark = pytest.mark.anyio
TOKEN = "s3cret-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def _client(root: Path, **settings: object) -> httpx.AsyncClient:
    app = create_app(Settings.from_mapping({"store": str(root), "reload_interval": 0, "admin_token": TOKEN, **settings}))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://saec", timeout=60)


def _nothing_written(root: Path, data: dict) -> bool:
    return deltas.read_all(deltas.deltas_dir(root, data["version"])) == []


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_the_bearer_scheme_is_case_insensitive(small_store: tuple[Path, dict], scheme: str) -> None:
    root, _ = small_store
    async with _client(root) as c:
        r = await c.post("/admin/updates", json={"fields": {"user": {"ids": [1], "vectors": [[0.0] * 9]}}},
                         headers={"authorization": f"{scheme} {TOKEN}"})
    assert r.status_code == 200, r.text


def _binary(header: object, tail: bytes = b"") -> bytes:
    raw = orjson.dumps(header)
    prefix = struct.pack("<4sBBHI", b"SAEU", 1, 0, 0, len(raw))
    return prefix + raw + b"\0" * (-(len(prefix) + len(raw)) % 8) + tail


@pytest.mark.parametrize("entry", [["user", True, 9], ["user", 1, True], ["user", False, 0], ["user", 1.0, 9]])
async def test_booleans_in_a_binary_header_are_a_problem_not_a_500(small_store: tuple[Path, dict], entry: list) -> None:
    root, data = small_store
    async with _client(root) as c:
        r = await c.post("/admin/updates", content=_binary({"fields": [entry]}, b"\0" * 64),
                         headers={**AUTH, "content-type": UPDATES_MEDIA_TYPE})
    assert r.status_code == 422 and "n >= 0" in r.json()["detail"]
    assert _nothing_written(root, data)


async def test_a_lookup_header_with_a_boolean_count_is_422(small_store: tuple[Path, dict]) -> None:
    root, _ = small_store
    raw = orjson.dumps({"fields": [["user", True]]})
    body = struct.pack("<4sBBHI", b"SAEC", 1, 0, 0, len(raw)) + raw + b"\0" * (-(12 + len(raw)) % 8) + b"\0" * 8
    async with _client(root) as c:
        r = await c.post("/lookup", content=body, headers={"content-type": "application/x-saec-ids"})
    assert r.status_code == 422


async def test_booleans_are_not_vector_values(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    rows = [[0.0] * 9, [0.5] * 8 + [True]]
    async with _client(root) as c:
        r = await c.post("/admin/updates", json={"fields": {"user": {"ids": [1, 2], "vectors": rows}}}, headers=AUTH)
        assert r.status_code == 422 and "row 1 holds a boolean" in r.json()["detail"]
        r = await c.post("/admin/updates", json={"fields": {"user": {"ids": ["true", "false"], "vectors": [[1.0] * 9] * 2}},
                                                 "hashed": False}, headers=AUTH)
        assert r.status_code == 200, r.text  # the words inside strings are ids, not booleans
    assert len(deltas.read_all(deltas.deltas_dir(root, data["version"]))) == 1


async def test_string_ids_are_capped_like_a_lookups(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    async with _client(root) as c:
        r = await c.post("/admin/updates", json={"fields": {"country": {"ids": ["x" * 1025], "vectors": [[0.0] * 17]}}},
                         headers=AUTH)
        assert r.status_code == 422 and "at most 1024 characters" in r.json()["detail"]
        ok = await c.post("/admin/updates", json={"fields": {"country": {"ids": ["x" * 1024], "vectors": [[0.0] * 17]}}},
                          headers=AUTH)
        assert ok.status_code == 200
    assert len(deltas.read_all(deltas.deltas_dir(root, data["version"]))) == 1


async def test_a_404_does_not_echo_a_huge_field_name(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    name = "f" * 100_000
    async with _client(root) as c:
        r = await c.post("/admin/updates", json={"fields": {name: {"ids": [1], "vectors": [[0.0]]}}}, headers=AUTH)
        look = await c.post("/lookup", json={"fields": {name: [1]}})
    for answer in (r, look):
        assert answer.status_code == 404 and len(answer.content) < 2000
        assert "100000 characters" in answer.json()["detail"]
    assert _nothing_written(root, data)


async def test_a_distance_that_overflows_is_refused_and_metrics_stay_finite(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    async with _client(root) as c:
        r = await c.post("/admin/updates", json={"fields": {"user": {"ids": [1, 2], "vectors": [[0.0] * 9, [1e20] * 9]}}},
                         headers=AUTH)
        assert r.status_code == 422 and "row 1" in r.json()["detail"]
        ok = await c.post("/admin/updates", json={"fields": {"user": {"ids": [1], "vectors": [[1e3] * 9]}}}, headers=AUTH)
        assert ok.status_code == 200 and ok.json()["fields"]["user"]["distance"]["mean"] is not None
        text = (await c.get("/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith("saec_update_distance_total"))
    assert np.isfinite(float(line.split()[-1]))
    assert len(deltas.read_all(deltas.deltas_dir(root, data["version"]))) == 1


async def test_a_json_body_naming_many_fields_is_refused_before_parsing(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    body = orjson.dumps({"fields": {f"f{i}": {"ids": [i], "vectors": [[0.0]]} for i in range(200_000)}})
    async with _client(root) as c:
        start = time.perf_counter()
        r = await c.post("/admin/updates", content=body, headers={**AUTH, "content-type": "application/json"})
        took = time.perf_counter() - start
    assert r.status_code == 404 and "object keys" in r.json()["detail"]
    assert took < 2.0, took
    assert _nothing_written(root, data)


async def test_a_binary_header_naming_many_fields_is_refused_before_parsing(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    body = _binary({"fields": [[f"f{i}", 0, 0] for i in range(1_000_000)]})
    async with _client(root) as c:
        start = time.perf_counter()
        r = await c.post("/admin/updates", content=body, headers={**AUTH, "content-type": UPDATES_MEDIA_TYPE})
        took = time.perf_counter() - start
    assert r.status_code == 422 and "at most the snapshot's 2 fields" in r.json()["detail"]
    assert took < 2.0, took
    assert _nothing_written(root, data)


async def test_more_rows_than_max_ids_is_413(small_store: tuple[Path, dict], rng: np.random.Generator) -> None:
    root, data = small_store
    vectors = rng.normal(size=(11, 9)).astype(np.float32)
    async with _client(root, max_ids=10) as c:
        js = await c.post("/admin/updates", json={"fields": {"user": {"ids": list(range(11)), "vectors": vectors.tolist()}}},
                          headers=AUTH)
        binary = await c.post("/admin/updates", content=encode_updates({"user": (np.arange(11), vectors)}, hashed=False),
                              headers={**AUTH, "content-type": UPDATES_MEDIA_TYPE})
    assert js.status_code == 413 and binary.status_code == 413
    assert _nothing_written(root, data)


async def test_a_big_body_is_parsed_off_the_event_loop(
    small_store: tuple[Path, dict], rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from saec.server import admin

    where: list[str] = []
    real = admin.parse_updates

    def parse(*args: object) -> object:
        where.append(threading.current_thread().name)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(admin, "parse_updates", parse)
    root, _ = small_store
    n = 20_000  # ~ 2 MB of JSON
    big = {"fields": {"user": {"ids": list(range(10**6, 10**6 + n)), "vectors": rng.normal(size=(n, 9)).tolist()}}}
    small = {"fields": {"user": {"ids": [1], "vectors": [[0.0] * 9]}}}
    async with _client(root) as c:
        r = await c.post("/admin/updates", json=big, headers=AUTH)
        assert r.status_code == 200 and r.json()["fields"]["user"]["accepted"] == n
        assert (await c.post("/admin/updates", json=small, headers=AUTH)).status_code == 200
    loop = threading.main_thread().name
    assert where[0] != loop and where[1] == loop
