"""A real ``saec serve`` (2 workers) over a deltas folder holding a FIFO or a folder where
a segment should be: it comes up, answers lookups and probes at once, stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from saec.store import deltas
from tests.conftest import write_small_store
from tests.e2e.test_uvicorn import Server

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_odd_segment_neither_hangs_nor_unreadies_a_server(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "store"
    data = write_small_store(root, np.random.default_rng(3))
    seg = deltas.deltas_dir(root, data["version"]) / deltas.segment_name(0)
    seg.parent.mkdir(parents=True)
    os.mkfifo(seg) if kind == "fifo" else seg.mkdir()
    server = Server(root, SAEC_WORKERS="2", SAEC_RELOAD_INTERVAL="0.5", SAEC_ADMIN_TOKEN="tok")
    try:
        with httpx.Client(base_url=server.url, timeout=5) as c:
            for _ in range(6):  # both workers, most likely
                assert c.get("/healthz").status_code == 200
                ready = c.get("/readyz")
                assert ready.status_code == 200 and "expected a regular file" in ready.json()["deltas"]
                look = c.post("/lookup", json={"fields": {"user": [3, 10], "country": ["c1"]}})
                assert look.status_code == 200 and look.json()["fields"]["user"]["found"] == [True, True]
            up = c.post("/admin/updates", json={"fields": {"country": {"ids": ["z"], "vectors": [[0.0] * 17]}}},
                        headers={"authorization": "Bearer tok"})
            assert up.status_code == 503
        start = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=15)
        assert time.monotonic() - start < 15
    finally:
        server.stop()
