"""Drift that speaks: every update's distance to its centroid against the snapshot's own, in
/snapshot, /metrics and one warning per field and snapshot."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from saec.cli import main
from saec.server.app import create_app
from saec.settings import Settings, SettingsError
from saec.store.drift import QUANTISATION_ERROR, DriftWarnings
from saec.store.errors import InvalidUpdateError
from saec.store.hashing import hash_ids
from saec.store.live import LiveEngine
from saec.store.updates import MAX_ABS_VALUE, Updater

pytestmark = pytest.mark.anyio
DIM = 8


@pytest.fixture
def checkpoint(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(16, DIM)) * 4
    ids = np.arange(5000)
    vectors = (centres[rng.integers(0, 16, ids.shape[0])] + rng.normal(size=(ids.shape[0], DIM))).astype(np.float32)
    root = tmp_path / "store"
    np.savez(tmp_path / "ckpt.npz", **{"user.ids": ids, "user.vectors": vectors})
    assert main(["compress", str(tmp_path / "ckpt.npz"), "--out", str(root), "--k", "16", "--min-factor", "10",
                 "--top-n", "0"]) == 0
    return root, ids, vectors


def _mean_sq(a: np.ndarray, b: np.ndarray) -> float:
    d = a.astype(np.float64) - b.astype(np.float64)
    return float((d * d).sum(axis=1).mean())


def test_every_update_counts_whatever_wrote_it(checkpoint: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path) -> None:
    root, ids, vectors = checkpoint
    engine = LiveEngine(root).engine
    user = engine.snapshot.fields["user"]
    # The baseline compress recorded is the snapshot's own mean squared distance of a row to
    # its centroid (k-means' inertia over the rows, summed at its last assignment: within 1%
    # of the distance to the final centroids).
    served = engine.lookup({"user": hash_ids(ids, "user")}).fields["user"].vectors
    assert user.attrs[QUANTISATION_ERROR] == pytest.approx(_mean_sq(vectors, served), rel=1e-2)
    assert user.attrs[QUANTISATION_ERROR] == user.attrs["inertia"] / 5000
    rng = np.random.default_rng(2)
    a = rng.normal(size=(300, DIM)).astype(np.float32) * 5
    b = rng.normal(size=(200, DIM)).astype(np.float32) * 5
    Updater(root, engine).apply({"user": (hash_ids(np.arange(10**9, 10**9 + 300), "user"), a)})  # the HTTP path
    np.savez(tmp_path / "u.npz", **{"user.ids": np.arange(2 * 10**9, 2 * 10**9 + 200), "user.vectors": b})
    assert main(["update", "--store", str(root), str(tmp_path / "u.npz")]) == 0
    assert engine.overlay is not None
    engine.overlay.refresh()
    report = engine.overlay.drift.report()["user"]
    cb = np.asarray(user.codebook).astype(np.float64)
    both = np.concatenate([a, b]).astype(np.float64)
    exact = ((both[:, None, :] - cb[None]) ** 2).sum(-1).min(1).mean()
    assert report["updates"] == 500
    assert report["mean_distance"] == pytest.approx(exact, rel=1e-5)
    assert report["baseline"] == user.attrs[QUANTISATION_ERROR]
    assert report["ratio"] == pytest.approx(exact / user.attrs[QUANTISATION_ERROR], rel=1e-5)
    # A fold keeps the baseline (same codebook); its own updates start from zero.
    assert main(["fold", "--store", str(root)]) == 0
    folded = LiveEngine(root).engine
    assert folded.snapshot.fields["user"].attrs[QUANTISATION_ERROR] == user.attrs[QUANTISATION_ERROR]
    assert folded.overlay is not None and folded.overlay.drift.report()["user"]["updates"] == 0


def _samples(text: str) -> dict[tuple[str, str], float]:
    return {(s.name, s.labels.get("field", "")): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


async def test_snapshot_metrics_and_one_warning_per_field_and_snapshot(
    checkpoint: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, _, vectors = checkpoint
    app = create_app(Settings.from_mapping({"store": str(root), "reload_interval": 0, "drift_min_updates": 100}))
    live_engine = LiveEngine(root).engine
    rng = np.random.default_rng(3)
    up = Updater(root, live_engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://saec") as c:
        doc = (await c.get("/snapshot")).json()
        assert doc["updates"]["updates_covered_until_ms"] is None and doc["updates"]["updates_carried"] == {}
        before = doc["drift"]
        assert before["warn_ratio"] == 4.0 and before["fields"]["user"]["updates"] == 0
        assert before["fields"]["user"]["ratio"] is None and before["fields"]["user"]["baseline"] > 0
        text = (await c.get("/metrics")).text
        assert math.isnan(_samples(text)[("saec_drift_ratio", "user")])
        # Vectors like the table's: no warning.
        near = vectors[rng.integers(0, vectors.shape[0], 150)] + rng.normal(size=(150, DIM)).astype(np.float32) * 0.1
        up.apply({"user": (hash_ids(np.arange(10**9, 10**9 + 150), "user"), near)})
        with caplog.at_level(logging.WARNING, logger="saec.drift"):
            doc = (await c.get("/snapshot")).json()["drift"]["fields"]["user"]
        assert doc["updates"] == 150 and doc["ratio"] < 4 and not caplog.records
        # Vectors 10x the table's norm: the ratio passes 4; one warning, however often it is checked.
        far = rng.normal(size=(2000, DIM)).astype(np.float32) * 40
        up.apply({"user": (hash_ids(np.arange(2 * 10**9, 2 * 10**9 + 2000), "user"), far)})
        with caplog.at_level(logging.WARNING, logger="saec.drift"):
            doc = (await c.get("/snapshot")).json()["drift"]["fields"]["user"]
            text = (await c.get("/metrics")).text
            await c.get("/snapshot")
        assert doc["updates"] == 2150 and doc["ratio"] > 4
        warnings = [r.getMessage() for r in caplog.records if r.name == "saec.drift"]
        assert len(warnings) == 1, warnings
        assert "'user'" in warnings[0] and "Compress a fresh checkpoint" in warnings[0]
        values = _samples(text)
        assert values[("saec_drift_updates", "user")] == 2150
        assert values[("saec_drift_ratio", "user")] == pytest.approx(doc["ratio"])
        assert values[("saec_drift_baseline", "user")] == pytest.approx(doc["baseline"])
        assert values[("saec_drift_mean_distance", "user")] == pytest.approx(doc["mean_distance"])


def test_distances_stay_finite_at_the_largest_values(checkpoint: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, _, _ = checkpoint
    engine = LiveEngine(root).engine
    up = Updater(root, engine)
    beyond = np.ones((3, DIM), np.float32)
    beyond[2, 5] = -np.finfo(np.float32).max
    with pytest.raises(InvalidUpdateError, match=r"expected values within \+-1e\+15 .* row 2 holds 3.4e\+38"):
        up.apply({"user": (hash_ids(np.arange(3), "user"), beyond)})
    huge = np.full((50, DIM), MAX_ABS_VALUE, np.float32)
    huge[::2] *= -1
    up.apply({"user": (hash_ids(np.arange(10**9, 10**9 + 50), "user"), huge)})
    assert engine.overlay is not None
    engine.overlay.refresh()
    report = engine.overlay.drift.report()["user"]
    assert report["updates"] == 50
    assert math.isfinite(report["mean_distance"]) and math.isfinite(report["ratio"])
    orjson.dumps(report)  # JSON-safe: no inf, no NaN
    assert report["ratio"] > 1e28


def test_warnings_are_shared_between_workers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    report = {"user": {"updates": 5000, "mean_distance": 50.0, "baseline": 1.0, "ratio": 50.0},
              "item": {"updates": 10, "mean_distance": 50.0, "baseline": 1.0, "ratio": 50.0}}
    one, two = DriftWarnings(shared_dir=str(tmp_path)), DriftWarnings(shared_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="saec.drift"):
        assert one.check("v1", report) == ["user"]  # "item": too few updates to judge
        assert two.check("v1", report) == []  # the other worker: already warned
        assert two.check("v2", report) == ["user"]  # a new snapshot: warned again
    assert len(caplog.records) == 2


def test_the_threshold_is_a_checked_setting() -> None:
    assert Settings.from_mapping({"SAEC_DRIFT_WARN_RATIO": "2.5"}).drift_warn_ratio == 2.5
    for bad in ("0", "-1", "inf", "nan"):
        with pytest.raises(SettingsError, match="SAEC_DRIFT_WARN_RATIO"):
            Settings.from_mapping({"SAEC_DRIFT_WARN_RATIO": bad})


def _alert_rule() -> str:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "updates.md").read_text()
    section = doc[doc.index("## Drift"):]
    return section[section.index("```yaml\n") + 8 : section.index("```\n", section.index("```yaml\n") + 8)]


PROMTOOL_TEST = """
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'saec_drift_ratio{job="saec", instance="a:8000", field="user"}'
        values: '5+0x40'
      - series: 'saec_drift_updates{job="saec", instance="a:8000", field="user"}'
        values: '2000+10x40'
      - series: 'saec_drift_ratio{job="saec", instance="a:8000", field="item"}'
        values: '9+0x40'
      - series: 'saec_drift_updates{job="saec", instance="a:8000", field="item"}'
        values: '10+0x40'
      - series: 'saec_drift_ratio{job="saec", instance="a:8000", field="tag"}'
        values: '2+0x40'
      - series: 'saec_drift_updates{job="saec", instance="a:8000", field="tag"}'
        values: '5000+0x40'
    alert_rule_test:
      - eval_time: 10m
        alertname: SaecCodebookDrift
        exp_alerts: []
      - eval_time: 20m
        alertname: SaecCodebookDrift
        exp_alerts:
          - exp_labels: {severity: warning, job: saec, instance: "a:8000", field: user}
            exp_annotations:
              summary: "saec: updates of user no longer fit the codebook (a:8000)"
              description: "Updates of field user lie 5.0x as far from their centroid as the snapshot's own rows (saec_drift_ratio) for 15 minutes. Compress a fresh checkpoint: saec compress CHECKPOINT --out STORE --updates-covered-until TIME."
"""


def test_the_documented_alert_rule(tmp_path: Path) -> None:
    import shutil
    import subprocess

    import yaml

    text = _alert_rule()
    rule = yaml.safe_load(text)["groups"][0]["rules"][0]
    assert rule["alert"] == "SaecCodebookDrift" and rule["for"] == "15m"
    # The rule's thresholds are the server's defaults, and its metrics are the ones it exports.
    defaults = Settings()
    assert f"saec_drift_ratio > {defaults.drift_warn_ratio:g}" in rule["expr"]
    assert f"saec_drift_updates >= {defaults.drift_min_updates}" in rule["expr"]
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: prometheus); the rule's YAML was checked, not its PromQL")
    (tmp_path / "rules.yml").write_text(text)
    (tmp_path / "test.yml").write_text(PROMTOOL_TEST)
    for args in (["check", "rules", "rules.yml"], ["test", "rules", "test.yml"]):
        done = subprocess.run([promtool, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
