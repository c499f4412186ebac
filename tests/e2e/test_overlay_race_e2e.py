"""The race of issue-size lookups against updates in one worker, over real HTTP: lookups of
512 KiB and more run in the thread pool on 4 threads while 3 threads post updates. No
5xx, and afterwards every acknowledged id answers as a fresh reader of the log does."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from saec.store.hashing import hash_ids
from saec.store.live import LiveEngine
from saec.wire import IDS_MEDIA_TYPE, UPDATES_MEDIA_TYPE, VECTORS_MEDIA_TYPE, decode_vectors, encode_ids, encode_updates
from tests.conftest import write_small_store
from tests.e2e.test_uvicorn import Server

pytestmark = pytest.mark.slow
TOKEN = "race"
SECONDS = 8.0
ROWS = 2000  # updated ids a batch


def test_big_lookups_and_updates_in_one_worker(tmp_path: Path) -> None:
    root = tmp_path / "store"
    data = write_small_store(root, np.random.default_rng(4), n=50_000)
    server = Server(root, SAEC_WORKERS="1", SAEC_RELOAD_INTERVAL="0", SAEC_ADMIN_TOKEN=TOKEN)
    acked: list[int] = []
    statuses: list[int] = []
    stop = threading.Event()
    next_batch = iter(range(10**6))
    lock = threading.Lock()

    def batch_ids(b: int) -> tuple[np.ndarray, np.ndarray]:
        new = np.arange(ROWS // 2, dtype=np.int64) + 10**9 + b * ROWS
        stored = data["user_ids"][(b * ROWS // 2) % 50_000 :][: ROWS // 2]
        return new, stored

    def update() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            while not stop.is_set():
                with lock:
                    b = next(next_batch)
                new, stored = batch_ids(b)
                ids = np.concatenate([new, stored])
                vectors = np.random.default_rng(b).normal(size=(ids.shape[0], 9)).astype(np.float32)
                r = c.post("/admin/updates", content=encode_updates({"user": (ids, vectors)}, hashed=False),
                           headers={"authorization": f"Bearer {TOKEN}", "content-type": UPDATES_MEDIA_TYPE})
                statuses.append(r.status_code)
                if r.status_code == 200:
                    acked.append(b)

    def look(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(base_url=server.url, timeout=60) as c:
            while not stop.is_set():
                ids = np.concatenate([rng.integers(10**9, 10**9 + 200 * ROWS, 40_000), rng.choice(data["user_ids"], 30_000)])
                body = encode_ids({"user": hash_ids(ids, "user")}, hashed=True)  # 560 KB: the thread pool
                assert len(body) >= 512 * 1024
                r = c.post("/lookup", content=body, headers={"content-type": IDS_MEDIA_TYPE, "accept": VECTORS_MEDIA_TYPE})
                statuses.append(r.status_code)

    try:
        threads = [threading.Thread(target=look, args=(s,)) for s in range(4)]
        threads += [threading.Thread(target=update) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(SECONDS)
        stop.set()
        for t in threads:
            t.join(timeout=120)
        assert set(statuses) == {200}, sorted(set(statuses))
        assert len(acked) >= 3
        # Every acknowledged id: the server's answer against a fresh reader of the log.
        ids = np.concatenate([np.concatenate(batch_ids(b)) for b in sorted(acked)])
        keys = hash_ids(ids, "user")
        parts = []
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for chunk in np.array_split(keys, -(-keys.shape[0] // 100_000)):  # within SAEC_MAX_IDS
                r = c.post("/lookup", content=encode_ids({"user": chunk}, hashed=True),
                           headers={"content-type": IDS_MEDIA_TYPE, "accept": VECTORS_MEDIA_TYPE})
                assert r.status_code == 200
                parts.append(decode_vectors(r.content).fields["user"])
        served = np.concatenate([v for v, _ in parts])
        found = np.concatenate([f for _, f in parts])
        fresh = LiveEngine(root, verify=False).engine
        assert fresh is not None
        expected = fresh.lookup({"user": keys}).fields["user"]
        assert found.all() and expected.found.all()
        assert np.array_equal(served, expected.vectors), int((served != expected.vectors).any(axis=1).sum())
    finally:
        stop.set()
        server.stop()
