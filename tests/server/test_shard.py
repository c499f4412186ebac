"""A replica serving a share of the fields (SAEC_FIELDS / saec serve --fields)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from saec.server.app import create_app
from saec.settings import Settings
from saec.store.live import LiveEngine
from saec.store.replica import ReplicaEngine, open_live, parse_fields
from saec.store.writer import SnapshotWriter

pytestmark = pytest.mark.anyio


def _client(root: Path, **settings: object) -> httpx.AsyncClient:
    app = create_app(Settings.from_mapping({"store": str(root), "reload_interval": 0, **settings}))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://saec")


async def test_replica_serves_only_its_fields(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    async with _client(root, fields="country") as c:
        ok = await c.post("/lookup", json={"fields": {"country": ["c1"]}})
        other = await c.post("/lookup", json={"fields": {"user": [3]}})
        snap = (await c.get("/snapshot")).json()
        memory = (await c.get("/memory")).json()
    assert ok.status_code == 200
    assert np.array_equal(np.array(ok.json()["fields"]["country"]["vectors"][0], np.float32), data["country"][1])
    assert other.status_code == 404 and "user" in other.json()["detail"]
    assert list(snap["fields"]) == ["country"] and snap["shard"] == {"fields": ["country"], "snapshot_fields": 2, "all": False}
    assert list(memory["fields"]) == ["country"]


def test_a_snapshot_without_a_served_field_is_refused(small_store: tuple[Path, dict], rng: np.random.Generator) -> None:
    root, data = small_store
    # As with any snapshot it cannot serve, the replica starts unready and says why.
    missing = open_live(str(root), fields="user,item")
    assert missing.engine is None
    assert "UnknownFieldError" in (missing.last_error or "")
    assert "expected fields ['item'] to serve" in (missing.last_error or "")
    live = open_live(str(root), fields="user")
    assert isinstance(live, ReplicaEngine)
    with SnapshotWriter(root) as w:  # the next snapshot drops 'user'
        w.add_dense_field("country", np.arange(1, 4, dtype=np.uint64), np.ones((3, 4), np.float32))
        w.publish()
    outcome = live.reload()
    assert not outcome.changed and "user" in (outcome.error or "")
    assert live.engine is not None and live.engine.version == data["version"]


def test_all_fields_is_the_plain_engine(small_store: tuple[Path, dict]) -> None:
    root, _ = small_store
    assert type(open_live(str(root), fields="")) is LiveEngine
    assert parse_fields(" a, b,a,,") == ("a", "b")
    # A file:// URL is a local folder, served directly.
    live = open_live(root.resolve().as_uri())
    assert type(live) is LiveEngine and live.engine is not None
