"""Hostile bodies against a real `saec serve` (uvicorn on loopback): each is answered
with its status, costs the server a small multiple of its size, and does not stall
/healthz meanwhile."""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from saec.wire import IDS_MEDIA_TYPE, VECTORS_MEDIA_TYPE
from tests.conftest import write_small_store
from tests.e2e.test_uvicorn import Server

# Timing-bound (/healthz under a hostile body): in the long tier, which runs with no neighbour.
pytestmark = [pytest.mark.slow, pytest.mark.long]

# What the server may grow by, over the body plus its answer.
GROWTH = 16
HEALTHZ_MS = 100


def _binary_many_unknown_fields(n: int) -> bytes:
    header = orjson.dumps({"fields": [[f"f{i}", 0] for i in range(n)]})
    prefix = struct.pack("<4sBBHI", b"SAEC", 1, 0, 0, len(header))
    return prefix + header + b"\0" * (-(len(prefix) + len(header)) % 8)


HOSTILE: dict[str, tuple[bytes, str, int]] = {
    # (body, content type, expected status); answers are binary, so that what is
    # measured is the request's parsing, not the rendering of a large JSON answer.
    "one 2000-char id and 200k empty ones": (
        orjson.dumps({"fields": {"user": ["x" * 2000] + [""] * 200_000}}), "application/json", 422),
    "one 1000-char id and a million empty ones": (
        orjson.dumps({"fields": {"user": ["x" * 1000] + [""] * 1_000_000}}), "application/json", 413),
    "one 8 MB id": (orjson.dumps({"fields": {"user": ["z" * 8_000_000]}}), "application/json", 422),
    "1.1M unknown field names": (
        orjson.dumps({"fields": {f"f{i:07d}": [] for i in range(1_100_000)}}), "application/json", 404),
    "1.1M unknown top-level keys": (
        orjson.dumps({"fields": {}, **{f"k{i:07d}": 0 for i in range(1_100_000)}}), "application/json", 404),
    "a million unknown fields, binary": (_binary_many_unknown_fields(1_000_000), IDS_MEDIA_TYPE, 422),
    "260k empty objects as ids": (b'{"fields": {"user": [' + b",".join([b"{}"] * 260_000) + b"]}}", "application/json", 422),
    "8M integer ids": (b'{"fields": {"user": [' + b",".join([b"1"] * 8_000_000) + b"]}}", "application/json", 413),
    "120k distinct string ids of 30 characters (valid)": (
        orjson.dumps({"fields": {"country": [f"{'é' * 20}{i:010d}" for i in range(120_000)]}}), "application/json", 200),
}


def _status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


class HealthProbe:
    """Polls /healthz from a thread and keeps the slowest answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.worst = 0.0
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as c:
            while not self._stop.is_set():
                t = time.perf_counter()
                assert c.get("/healthz").status_code == 200
                self.worst = max(self.worst, time.perf_counter() - t)
                self.count += 1
                time.sleep(0.005)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root: Path = tmp_path_factory.mktemp("hostile") / "store"
    write_small_store(root, np.random.default_rng(3))
    s = Server(root)
    try:
        with httpx.Client(base_url=s.url, timeout=60) as c:
            # Compile every kernel once (scan, string hash, lookup) before measuring.
            assert c.post("/lookup", json={"fields": {"country": ["c1", "é"], "user": [3]}}).status_code == 200
        yield s
    finally:
        s.stop()


def _send(server: Server, body: bytes, content_type: str) -> tuple[httpx.Response, int, int, HealthProbe]:
    """Post ``body`` while probing /healthz; returns the answer, RSS before and peak RSS, the probe."""
    pid = server.proc.pid
    with httpx.Client(base_url=server.url, timeout=120) as c:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # resets the peak RSS (VmHWM) to the current RSS
        before = _status(pid, "VmRSS")
        with HealthProbe(server.url) as probe:
            time.sleep(0.05)
            r = c.post("/lookup", content=body, headers={"content-type": content_type, "accept": VECTORS_MEDIA_TYPE})
            time.sleep(0.05)
        peak = _status(pid, "VmHWM")
    return r, before, peak, probe


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_body_is_answered_cheaply_without_stalling_others(server: Server, name: str) -> None:
    body, content_type, expected = HOSTILE[name]
    r, before, peak, probe = _send(server, body, content_type)
    assert r.status_code == expected, r.text[:300]
    if expected != 200:
        assert r.headers["content-type"] == "application/problem+json"
        assert len(r.content) < 1000
    growth = peak - before
    allowed = GROWTH * (len(body) + len(r.content))
    assert growth < allowed, f"RSS grew {growth / 1e6:.1f} MB for a {len(body) / 1e6:.1f} MB body"
    # The 2 cores are shared with other jobs, which can stall any process for a while:
    # a stall of the server's own making shows in every attempt, so the best of three counts.
    worst = [probe.worst]
    while worst[-1] * 1000 >= HEALTHZ_MS and len(worst) < 3:
        worst.append(_send(server, body, content_type)[3].worst)
    print(f"{name}: {r.status_code}, body {len(body) / 1e6:.2f} MB, RSS +{growth / 1e6:.1f} MB, "
          f"worst /healthz {', '.join(f'{w * 1000:.1f}' for w in worst)} ms")  # fmt: skip
    assert probe.count > 0
    assert min(worst) * 1000 < HEALTHZ_MS, f"/healthz took {min(worst) * 1000:.0f} ms at best during {name}"
