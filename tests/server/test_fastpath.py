"""POST /lookup answered in front of the framework (server.fastpath): same answers, same problems."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from starlette.responses import Response

from saec.server.app import create_app
from saec.server.errors import MalformedRequestError
from saec.server.fastpath import FastLookup
from saec.settings import Settings
from saec.wire import IDS_MEDIA_TYPE, VECTORS_MEDIA_TYPE, decode_vectors, encode_ids
from tests.conftest import write_small_store

pytestmark = pytest.mark.anyio


def _client(root: Path, **settings: object) -> httpx.AsyncClient:
    app = create_app(Settings.from_mapping({"store": str(root), "reload_interval": 0, **settings}))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://saec")


async def _pieces(body: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


async def test_body_in_pieces_answers_like_one_body(tmp_path: Path, rng: np.random.Generator) -> None:
    data = write_small_store(tmp_path / "store", rng)
    body = encode_ids({"user": data["user_ids"][:300]}, hashed=False)
    headers = {"content-type": IDS_MEDIA_TYPE, "accept": VECTORS_MEDIA_TYPE}
    async with _client(tmp_path / "store") as c:
        whole = await c.post("/lookup", content=body, headers=headers)
        pieces = await c.post("/lookup", content=_pieces(body, 1000), headers=headers)
    assert whole.status_code == pieces.status_code == 200
    assert whole.content == pieces.content
    assert decode_vectors(pieces.content).fields["user"][1].all()


async def test_body_in_pieces_over_the_limit_is_413(tmp_path: Path, rng: np.random.Generator) -> None:
    data = write_small_store(tmp_path / "store", rng)
    body = encode_ids({"user": data["user_ids"][:300]}, hashed=False)  # 2,400 bytes of ids
    async with _client(tmp_path / "store", max_body_bytes=1024) as c:
        # No Content-Length: the limit is found while reading.
        r = await c.post("/lookup", content=_pieces(body, 500), headers={"content-type": IDS_MEDIA_TYPE})
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("payload-too-large") and "at most 1024 bytes" in r.json()["detail"]


async def _call(app: FastLookup, body: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        return messages.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "path": "/lookup", "method": "POST", "headers": [(b"content-type", b"application/json")]}
    await app(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


async def test_errors_become_problems() -> None:
    async def inner(scope: dict, receive: object, send: object) -> None:
        raise AssertionError("POST /lookup must not reach the app")

    def bad_request(body: bytes, content_type: str | None, accept: str | None) -> Response:
        raise MalformedRequestError("expected a JSON object, got []")

    def bug(body: bytes, content_type: str | None, accept: str | None) -> Response:
        raise RuntimeError("secret internals")

    status, headers, body = await _call(FastLookup(inner, bad_request, 100), b"[]")
    assert status == 422 and headers[b"content-type"] == b"application/problem+json"
    assert orjson.loads(body)["detail"] == "expected a JSON object, got []"
    status, _, body = await _call(FastLookup(inner, bug, 100), b"[]")
    assert status == 500 and b"secret" not in body


async def test_other_requests_reach_the_app() -> None:
    seen = []

    async def inner(scope: dict, receive: object, send: object) -> None:
        seen.append((scope["method"], scope["path"]))

    def never(body: bytes, content_type: str | None, accept: str | None) -> Response:
        raise AssertionError("only POST /lookup goes to the handler")

    app = FastLookup(inner, never, 100)
    for method, path in (("GET", "/lookup"), ("POST", "/lookups"), ("GET", "/metrics")):
        await app({"type": "http", "path": path, "method": method, "headers": []}, None, None)  # type: ignore[arg-type]
    assert seen == [("GET", "/lookup"), ("POST", "/lookups"), ("GET", "/metrics")]
