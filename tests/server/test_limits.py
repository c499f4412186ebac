"""Checks that need no work run before any work: field names, id counts and id lengths
are refused before a body is parsed or an id hashed."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from saec.server import codec
from saec.server.app import create_app
from saec.server.limits import MAX_ID_CHARS
from saec.settings import Settings
from saec.wire import IDS_MEDIA_TYPE, encode_ids

pytestmark = pytest.mark.anyio


def _client(root: Path, **settings: object) -> httpx.AsyncClient:
    app = create_app(Settings.from_mapping({"store": str(root), "reload_interval": 0, **settings}))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://saec")


def _forbid(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{name} was called before the request was refused")

    monkeypatch.setattr(codec, name, refuse)


async def test_too_many_field_names_are_refused_before_parsing(
    small_store: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = small_store
    body = orjson.dumps({"fields": {f"f{i}": [] for i in range(1000)}})
    async with _client(root) as c:
        # Opening the snapshot reads JSON too: forbid parsing only from here on.
        monkeypatch.setattr(codec.orjson, "loads", lambda *_: pytest.fail("orjson.loads ran"))
        r = await c.post("/lookup", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 404
    assert "among the snapshot's 2 fields (country, user), got a body with 1001 object keys" in r.json()["detail"]


async def test_too_many_ids_are_refused_before_parsing_or_hashing(
    small_store: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = small_store
    _forbid(monkeypatch, "hash_ids")
    async with _client(root, max_ids=100) as c:
        monkeypatch.setattr(codec.orjson, "loads", lambda *_: pytest.fail("orjson.loads ran"))
        r = await c.post("/lookup", content=orjson.dumps({"fields": {"user": list(range(500))}}),
                         headers={"content-type": "application/json"})  # fmt: skip
        assert r.status_code == 413 and "at most 100 ids" in r.json()["detail"]
        monkeypatch.undo()
        _forbid(monkeypatch, "hash_ids")
        # Within the structure count's bound, counted exactly after parsing: 51 + 50 ids.
        r = await c.post("/lookup", json={"fields": {"user": list(range(51)), "country": ["c1"] * 50}})
        assert r.status_code == 413 and r.json()["detail"].endswith("got 101")
        r = await c.post("/lookup", content=encode_ids({"user": list(range(101))}, hashed=False),
                         headers={"content-type": IDS_MEDIA_TYPE})  # fmt: skip
        assert r.status_code == 413


async def test_string_ids_longer_than_the_cap_are_refused_before_hashing(
    small_store: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = small_store
    async with _client(root) as c:
        ok = await c.post("/lookup", json={"fields": {"country": ["é" * MAX_ID_CHARS, "c1"]}})
        assert ok.status_code == 200 and ok.json()["fields"]["country"]["found"] == [False, True]
        _forbid(monkeypatch, "hash_ids")
        r = await c.post("/lookup", json={"fields": {"country": ["c1", "x" * (MAX_ID_CHARS + 1)]}})
    assert r.status_code == 422
    assert (
        r.json()["detail"]
        == f"field 'country': expected string ids of at most {MAX_ID_CHARS} characters, got one of {MAX_ID_CHARS + 1}"
    )


async def test_binary_header_naming_unknown_fields_stops_at_the_first(
    small_store: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = small_store
    _forbid(monkeypatch, "hash_ids")
    async with _client(root) as c:
        body = encode_ids({"user": [1], "nope": [2]}, hashed=False)
        r = await c.post("/lookup", content=body, headers={"content-type": IDS_MEDIA_TYPE})
        assert r.status_code == 404 and "'nope'" in r.json()["detail"]
        many = encode_ids({f"f{i}": [] for i in range(50)}, hashed=False)
        r = await c.post("/lookup", content=many, headers={"content-type": IDS_MEDIA_TYPE})
        assert r.status_code == 422 and "at most the snapshot's 2 fields" in r.json()["detail"]


@pytest.mark.parametrize("ids", [[{}] * 1000, [[]] * 1000, [[1, 2]] * 10])
async def test_containers_nested_in_id_lists_are_refused_before_parsing(
    small_store: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch, ids: list
) -> None:
    root, _ = small_store
    async with _client(root) as c:
        monkeypatch.setattr(codec.orjson, "loads", lambda *_: pytest.fail("orjson.loads ran"))
        r = await c.post(
            "/lookup", content=orjson.dumps({"fields": {"user": ids}}), headers={"content-type": "application/json"}
        )
    assert r.status_code == 422 and "flat lists of ids" in r.json()["detail"]
