"""What clients see: no absolute paths, Allow on 405, a request schema that says
exactly which bodies the server accepts."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from saec.server.app import create_app
from saec.server.limits import MAX_ID_CHARS
from saec.settings import Settings
from saec.store.hashing import hash_ids
from saec.store.live import LiveEngine
from saec.store.writer import SnapshotWriter
from tests.conftest import write_small_store

pytestmark = pytest.mark.anyio


def _client(root: Path) -> httpx.AsyncClient:
    app = create_app(Settings.from_mapping({"store": str(root), "reload_interval": 0}))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://saec")


async def test_405_names_the_allowed_methods(small_store: tuple[Path, dict]) -> None:
    root, _ = small_store
    async with _client(root) as c:
        r = await c.get("/lookup")
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        r = await c.post("/snapshot")
        assert r.status_code == 405 and "GET" in r.headers["allow"].split(", ")


async def test_no_absolute_path_in_public_answers(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "store"
    (tmp_path / "empty").mkdir()
    async with _client(tmp_path / "empty") as c:
        r = await c.get("/readyz")
    assert r.status_code == 503 and str(tmp_path) not in r.text and "<store>" in r.json()["detail"]

    with SnapshotWriter(root, source=f"{tmp_path}/tables/user_emb.npz /data/item_emb.parquet") as w:
        w.add_dense_field("country", hash_ids(np.arange(5), "country"), rng.normal(size=(5, 3)).astype(np.float32))
        w.publish()
    live = LiveEngine(root)
    (root / "CURRENT").write_text("20990101T000000.000000Z-dead\n")  # names a version that is not there
    live.reload()  # refused; the old snapshot keeps serving
    assert live.last_error and str(root) in live.last_error  # the log and the object keep the path
    app = create_app(Settings.from_mapping({"store": str(root), "reload_interval": 0}), live=live)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://saec") as c:
        snap = (await c.get("/snapshot")).json()
    assert snap["source"] == "user_emb.npz item_emb.parquet"
    error = snap["last_reload_error"]
    assert str(tmp_path) not in error and error.endswith("is not in snapshots"), error


@pytest.mark.parametrize(
    "fields, hashed, accepted",
    [
        ({"user": [3, -5, 2**64 - 1]}, False, True),
        ({"country": ["c1", "é" * MAX_ID_CHARS]}, False, True),
        ({"user": [3, "c1"]}, False, False),  # mixed
        ({"country": ["x" * (MAX_ID_CHARS + 1)]}, False, False),
        ({"user": [2**64]}, False, False),
        ({"user": [-(2**63) - 1]}, False, False),
        ({"user": [0, 2**64 - 1]}, True, True),
        ({"user": [-1]}, True, False),
        ({"country": ["c1"]}, True, False),
        ({"user": [1.5]}, False, False),
    ],
)
async def test_schema_and_server_agree(
    small_store: tuple[Path, dict], fields: dict, hashed: bool, accepted: bool
) -> None:
    import jsonschema

    root, _ = small_store
    body = {"fields": fields, "hashed": hashed}
    async with _client(root) as c:
        schema = (await c.get("/openapi.json")).json()["paths"]["/lookup"]["post"]["requestBody"]["content"][
            "application/json"
        ]["schema"]
        r = await c.post("/lookup", json=body)
    valid = jsonschema.Draft202012Validator(schema).is_valid(body)
    assert valid == accepted
    assert (r.status_code == 200) == accepted, r.text
    if not accepted:
        assert r.status_code == 422


async def test_every_write_of_the_small_store_fixture_is_found(tmp_path: Path, rng: np.random.Generator) -> None:
    # Guards the fixture the tests above rely on: "c1" and user 3 are stored ids.
    data = write_small_store(tmp_path / "s", rng)
    assert "c1" in data["country_ids"].tolist() and 3 in data["user_ids"].tolist()
