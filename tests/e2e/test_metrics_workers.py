"""With two uvicorn workers, one scrape of /metrics counts the requests of both."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import write_small_store
from tests.e2e.test_uvicorn import Server

pytestmark = pytest.mark.slow

N = 60


def _lookups_by_pid(metrics_dir: str) -> dict[str, float]:
    """Each worker's own count of /lookup 200s, read from its file in the shared directory."""
    out = {}
    for path in glob.glob(os.path.join(metrics_dir, "counter_*.db")):
        d = MmapedDict(path, read_mode=True)
        try:
            out[path] = sum(v for k, v, _ in d.read_all_values() if "saec_requests_total" in k and '"/lookup"' in k)
        finally:
            d.close()
    return out


def test_one_scrape_counts_every_worker(tmp_path: Path) -> None:
    root = tmp_path / "store"
    write_small_store(root, np.random.default_rng(4))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    server = Server(root, SAEC_WORKERS="2", TMPDIR=str(tmp), SAEC_RELOAD_INTERVAL="0")
    try:
        dirs = glob.glob(str(tmp / "saec-metrics-*"))
        assert len(dirs) == 1, dirs
        for _ in range(N):
            # A new connection each time, so that both workers take some.
            with httpx.Client(base_url=server.url, timeout=30) as c:
                assert c.post("/lookup", json={"fields": {"user": [3, 10]}}).status_code == 200
        per_worker = _lookups_by_pid(dirs[0])
        with httpx.Client(base_url=server.url, timeout=30) as c:
            text = c.get("/metrics").text
    finally:
        server.stop()
    assert sum(1 for v in per_worker.values() if v > 0) == 2, per_worker  # both workers served some
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert samples[("saec_requests_total", (("protocol", "http"), ("route", "/lookup"), ("status", "200")))] == N
    assert samples[("saec_lookup_ids_total", (("field", "user"),))] == 2 * N
    assert samples[("saec_lookup_seconds_count", ())] == N
    # The directory is removed when `saec serve` exits.
    assert not glob.glob(str(tmp / "saec-metrics-*"))
