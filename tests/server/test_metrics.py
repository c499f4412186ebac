"""/metrics: labels from route templates, escaped by prometheus_client, names kept."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from saec.server.app import create_app
from saec.settings import Settings
from tests.conftest import write_small_store

pytestmark = pytest.mark.anyio

INJECTION = '/x"} 1\nsaec_reloads_total{pid="1"} 9999\n# '


def _client(root: Path) -> httpx.AsyncClient:
    app = create_app(Settings.from_mapping({"store": str(root), "reload_interval": 0}))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://saec")


def _samples(text: str) -> list:
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


async def test_names_and_counts(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "store"
    data = write_small_store(root, rng)
    async with _client(root) as c:
        for _ in range(3):
            assert (await c.post("/lookup", json={"fields": {"user": [3, 999999], "country": ["c1"]}})).status_code == 200
        text = (await c.get("/metrics")).text
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in _samples(text)}
    assert values[("saec_requests_total", (("protocol", "http"), ("route", "/lookup"), ("status", "200")))] == 3
    assert values[("saec_lookup_ids_total", (("field", "user"),))] == 6
    assert values[("saec_lookup_not_found_total", (("field", "user"),))] == 3
    assert values[("saec_lookup_ids_total", (("field", "country"),))] == 3
    assert values[("saec_lookup_seconds_count", ())] == 3
    assert values[("saec_snapshot_info", (("version", data["version"]),))] == 1
    assert values[("saec_reloads_total", ())] == 0


async def test_unknown_paths_share_one_label_and_cannot_inject(small_store: tuple[Path, dict]) -> None:
    root, _ = small_store
    async with _client(root) as c:
        assert (await c.get(quote(INJECTION))).status_code == 404
        for i in range(200):
            await c.get(f"/nowhere/{i}")
        assert (await c.get("/lookup")).status_code == 405
        text = (await c.get("/metrics")).text
    assert not any(s.value == 9999 for s in _samples(text))
    assert not any(line.startswith('saec_reloads_total{pid="1"}') for line in text.splitlines())
    requests = [s for s in _samples(text) if s.name == "saec_requests_total"]
    routes = {s.labels["route"] for s in requests}
    assert routes == {"unmatched", "/lookup"}  # /metrics is counted after its own answer
    unmatched = [s for s in requests if s.labels["route"] == "unmatched"]
    assert [(s.labels["status"], s.value) for s in unmatched] == [("404", 201)]
    assert len(text) < 10_000  # 201 distinct paths added no series


def test_a_named_metrics_dir_is_made_even_for_one_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """prometheus_client writes to PROMETHEUS_MULTIPROC_DIR whenever it is set: one worker
    given a missing directory must find it made (it died at its first metric), and
    emptied of an earlier run's values."""
    from saec.server.metrics_dir import shared_metrics_dir

    missing = tmp_path / "metrics" / "here"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(missing))
    with shared_metrics_dir(1) as got:
        assert got == str(missing) and missing.is_dir()
    (missing / "counter_1.db").write_bytes(b"stale")
    with shared_metrics_dir(1) as got:
        assert got == str(missing) and not (missing / "counter_1.db").exists()
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    with shared_metrics_dir(1) as got:
        assert got is None
