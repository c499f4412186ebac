"""Odd and damaged delta logs never 500, hang or un-ready the server: lookups of the
snapshot go on, and /readyz, /snapshot and /metrics say what is wrong."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from saec.server.app import create_app
from saec.settings import Settings
from saec.store import deltas
from saec.store.deltas import DeltaWriter, FieldDelta
from saec.store.hashing import hash_ids

pytestmark = pytest.mark.anyio
TOKEN = "t0ken"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def _client(root: Path) -> httpx.AsyncClient:
    app = create_app(Settings.from_mapping({"store": str(root), "reload_interval": 0, "admin_token": TOKEN}))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://saec", timeout=30)


def _country(i: int) -> dict[str, FieldDelta]:
    keys = hash_ids(np.array([f"new{i}"]), "country")
    return {"country": FieldDelta(keys, np.full((1, 17), float(i), np.float32), None)}


def _append(root: Path, version: str, frames: int) -> tuple[Path, list[int]]:
    w = DeltaWriter(root, version)
    seg = deltas.deltas_dir(root, version) / deltas.segment_name(0)
    offsets = []
    for i in range(frames):
        offsets.append(seg.stat().st_size if seg.exists() else 0)
        w.append(_country(i))
    return seg, offsets + [seg.stat().st_size]


async def _served(c: httpx.AsyncClient, frames: range) -> list[bool]:
    r = await c.post("/lookup", json={"fields": {"country": [f"new{i}" for i in frames], "user": [3, 10]}})
    assert r.status_code == 200, r.text
    return r.json()["fields"]["country"]["found"]


@pytest.mark.parametrize("kind", ["folder", "fifo", "symlink"])
async def test_an_odd_segment_is_reported_and_the_snapshot_served(
    small_store: tuple[Path, dict], kind: str, tmp_path: Path
) -> None:
    root, data = small_store
    seg, _ = _append(root, data["version"], 3)
    kept = tmp_path / "kept"
    shutil.copy(seg, kept)
    seg.unlink()
    {"folder": seg.mkdir, "fifo": lambda: os.mkfifo(seg), "symlink": lambda: seg.symlink_to(kept)}[kind]()
    async with _client(root) as c:
        assert await _served(c, range(3)) == [False] * 3
        ready = await c.get("/readyz")
        assert ready.status_code == 200 and "expected a regular file" in ready.json()["deltas"]
        snap = (await c.get("/snapshot")).json()["deltas"]
        assert "expected a regular file" in snap["unreadable"]
        assert "saec_delta_unreadable 1.0" in (await c.get("/metrics")).text
        up = await c.post("/admin/updates", json={"fields": {"country": {"ids": ["z"], "vectors": [[0.0] * 17]}}},
                          headers=AUTH)
        assert up.status_code == 503 and "nothing was written" in up.json()["detail"]
        # Put back: served again without a restart.
        seg.rmdir() if kind == "folder" else seg.unlink()
        shutil.copy(kept, seg)
        assert await _served(c, range(3)) == [True] * 3
        assert "deltas" not in (await c.get("/readyz")).json()


async def test_damage_in_the_middle_is_skipped_and_reported(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    seg, offsets = _append(root, data["version"], 6)
    raw = bytearray(seg.read_bytes())
    raw[offsets[2] + 40] ^= 0x10
    seg.write_bytes(bytes(raw))
    async with _client(root) as c:
        assert await _served(c, range(6)) == [True, True, False, True, True, True]
        snap = (await c.get("/snapshot")).json()["deltas"]
        [d] = snap["damage"]
        assert (d["offset"], d["bytes"], d["after_sequence"], d["next_sequence"], d["missing_sequences"]) == (
            offsets[2], offsets[3] - offsets[2], 2, 4, 1
        )
        ready = await c.get("/readyz")
        assert ready.status_code == 200 and "1 damaged ranges" in ready.json()["deltas"]
        assert f"saec_delta_damaged_bytes {float(offsets[3] - offsets[2])}" in (await c.get("/metrics")).text
        # Updates go on after the damage, with a sequence never used before.
        up = await c.post("/admin/updates", json={"fields": {"country": {"ids": ["new9"], "vectors": [[9.0] * 17]}}},
                          headers=AUTH)
        assert up.status_code == 200 and up.json()["sequence"] == 7
        assert await _served(c, range(9, 10)) == [True]


@pytest.mark.parametrize("change", ["shrink", "replace", "delete"])
async def test_a_segment_that_shrinks_or_is_replaced_is_read_again(small_store: tuple[Path, dict], change: str) -> None:
    root, data = small_store
    seg, offsets = _append(root, data["version"], 6)
    async with _client(root) as c:
        assert await _served(c, range(6)) == [True] * 6
        if change == "shrink":
            os.truncate(seg, offsets[3] + 10)  # frames 1-3 and a torn piece of frame 4
            expected = [True] * 3 + [False] * 3
        elif change == "replace":
            raw = seg.read_bytes()
            tmp = seg.with_name("tmp")
            tmp.write_bytes(raw[: offsets[2]] + raw[offsets[4] :])  # frames 3 and 4 gone, same tail
            os.rename(tmp, seg)
            expected = [True, True, False, False, True, True]
        else:
            seg.unlink()
            expected = [False] * 6
        for _ in range(3):
            assert await _served(c, range(6)) == expected
        snap = (await c.get("/snapshot")).json()["deltas"]
        assert snap["rebuilds"] == 1
