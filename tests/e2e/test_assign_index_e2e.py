"""Both workers of a real `saec serve` assign updates with the snapshot's stored HNSW index."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import orjson

from saec.store.assign_index import SnapshotIndexes
from saec.store.hashing import hash_ids
from saec.store.snapshot import open_current
from saec.synthetic import clustered_vectors
from saec.wire import UPDATES_MEDIA_TYPE, encode_updates
from tests.conftest import write_small_store
from tests.e2e.test_uvicorn import Server

TOKEN = "e2e-admin-token"


def test_every_worker_assigns_with_the_stored_index_and_says_so(tmp_path: Path) -> None:
    root = tmp_path / "store"
    write_small_store(root, np.random.default_rng(3), n=20_000, k=256)
    snap = open_current(root)
    f = snap.fields["user"]
    assert f.hnsw is not None and f.codebook is not None
    # What the stored index answers, loaded here as a worker loads it.
    index = SnapshotIndexes(snap).get("user", f.codebook, "hnsw")
    vectors = clustered_vectors(4000, 9, np.random.default_rng(4))
    # Far vectors too: those are searched again exactly, in every worker alike.
    vectors[::4] *= 10
    server = Server(root, SAEC_WORKERS="2", SAEC_ADMIN_TOKEN=TOKEN, SAEC_RELOAD_INTERVAL="0",
                    SAEC_ASSIGN_SEARCH="hnsw")
    try:
        ids = np.arange(10**12, 10**12 + 4000)
        for part in range(20):  # a new connection each: the kernel hands them to either worker
            s = slice(part * 200, (part + 1) * 200)
            body = encode_updates({"user": (hash_ids(ids[s], "user"), vectors[s])}, hashed=True)
            with httpx.Client(base_url=server.url, timeout=30) as c:
                r = c.post("/admin/updates", content=body, headers={
                    "authorization": f"Bearer {TOKEN}", "content-type": UPDATES_MEDIA_TYPE, "connection": "close"})
            assert r.status_code == 200, r.text
            assert orjson.loads(r.content)["fields"]["user"]["search"] == "hnsw"
        with httpx.Client(base_url=server.url, timeout=30) as c:
            doc = c.post("/lookup", json={"fields": {"user": ids.tolist()}}).json()
        served = np.array(doc["fields"]["user"]["vectors"], dtype=np.float32)
        assert np.array_equal(served, f.codebook[index.nearest(vectors)])
    finally:
        server.stop()
