"""A real redis-server (append-only, fsync always) and replicas with their own store folders.

Every test here starts its own ``redis-server`` on a free loopback port with its own
folder; it is skipped only where no redis-server binary exists (scripts/test.sh installs
one, CI has it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench._redis import RedisServer, find_redis_server
from tests.conftest import write_small_store

TOKEN = "fleet-admin-token"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    binary = find_redis_server()
    if binary is None:
        pytest.skip("no redis-server binary on PATH or in /usr/bin, /usr/local/bin, /usr/sbin (apt-get install redis-server)")
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(binary, durable=True, directory=str(folder))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def log_url(server: RedisServer, stream: str = "saec:test") -> str:
    return f"redis://127.0.0.1:{server.port}/0?stream={stream}"


def replica_stores(root: Path, count: int, *, seed: int = 3, n: int = 4000, k: int = 32) -> tuple[list[Path], dict]:
    """``count`` store folders holding the same snapshot (copied byte for byte)."""
    first = root / "store0"
    data = write_small_store(first, np.random.default_rng(seed), n=n, k=k)
    stores = [first]
    for i in range(1, count):
        shutil.copytree(first, root / f"store{i}")
        stores.append(root / f"store{i}")
    return stores, data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Replica:
    """``saec serve --update-log`` in its own process group; :meth:`kill` is kill -9 of the group."""

    def __init__(self, store: Path, log: str, *args: str, port: int | None = None, store_arg: str | None = None,
                 **env: str) -> None:
        """``store``: the replica's own folder (its cache, given ``store_arg`` as the --store URL)."""
        self.store = store
        self.store_arg = store_arg or str(store)
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.env = {"SAEC_ADMIN_TOKEN": TOKEN, "SAEC_RELOAD_INTERVAL": "0.3", **env}
        self.log_url = log
        self.log = open(store.parent / f"serve-{store.name}.log", "ab+")
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "saec.cli", "serve", "--store", self.store_arg, "--port", str(self.port),
             "--update-log", self.log_url, "--log-level", "warning", *self.args],
            env={**os.environ, **self.env}, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def restart(self) -> None:
        self.proc = self._spawn()

    def ready(self) -> bool:
        try:
            return httpx.get(self.url + "/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 120) -> float:
        """Poll /readyz until 200; returns the monotonic time it first answered 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return time.monotonic()
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"saec serve on {self.store} did not become ready:\n{self.output()[-4000:]}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def close(self) -> None:
        self.stop()
        self.log.close()


def set_watermark(store: Path, version: str, covered_until_ms: int | None) -> None:
    """Record ``updates_covered_until_ms`` in a published snapshot's manifest (what
    ``saec compress --updates-covered-until`` and ``saec fold`` write)."""
    import orjson

    from saec.store.snapshot import MANIFEST_KEY

    path = store / "snapshots" / version / "zarr.json"
    doc = orjson.loads(path.read_bytes())
    doc["attributes"][MANIFEST_KEY]["updates_covered_until_ms"] = covered_until_ms
    path.write_bytes(orjson.dumps(doc))


def fold_copy(store: Path, staging: Path) -> tuple[str, int | None]:
    """Fold a copy of ``store`` (its live snapshot and the deltas applied so far) in
    ``staging``; the fold records the newest folded frame's time as its watermark.

    Returns:
        The new version and its watermark.
    """
    from saec.store.deltas import read_all
    from saec.store.fold import fold
    from saec.store.layout import StoreLayout
    from saec.store.snapshot import open_snapshot

    shutil.copytree(store, staging)
    base = StoreLayout(staging).current()
    frames = read_all(staging / "deltas" / base)
    newest = max((f.time_ms for f in frames if f.time_ms is not None), default=None)
    version = fold(staging).version
    covered = open_snapshot(StoreLayout(staging).snapshot_path(version)).manifest.get("updates_covered_until_ms")
    assert covered == newest, (covered, newest)  # a fold covers what it folded
    return version, covered


def publish_copy(staging: Path, version: str, stores: list[Path]) -> None:
    """Publish ``staging``'s snapshot ``version`` to every store folder (copy, then CURRENT)."""
    from saec.store.layout import StoreLayout

    for s in stores:
        shutil.copytree(staging / "snapshots" / version, s / "snapshots" / version)
    for s in stores:
        StoreLayout(s).set_current(version)
