"""End to end: `saec serve` (real uvicorn, loopback) and the Python clients."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from saec.clients import AsyncSaecClient, SaecClient, UnknownFieldError
from saec.clients.errors import RequestTooLargeError
from saec.store.errors import InvalidIdsError
from saec.store.hashing import hash_ids
from saec.store.writer import SnapshotWriter
from tests.conftest import write_small_store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, store: Path, **env: str) -> None:
        self.port = _free_port()
        # A file, not a pipe: a pipe nobody reads would block the server once full.
        self.log = open(store.parent / f"serve-{self.port}.log", "w+b")
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "saec.cli", "serve", "--store", str(store), "--port", str(self.port),
             "--log-level", "warning"],
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        with SaecClient(self.url) as probe:
            while True:
                try:
                    probe.snapshot()
                    return
                except Exception:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        self.log.seek(0)
                        out = self.log.read().decode(errors="replace")
                        raise RuntimeError(f"saec serve did not come up:\n{out}") from None
                    time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path, dict]]:
    root = tmp_path_factory.mktemp("e2e") / "store"
    data = write_small_store(root, np.random.default_rng(5), n=20_000, k=32)
    server = Server(root, SAEC_MAX_IDS="1000", SAEC_RELOAD_INTERVAL="0.2")
    try:
        yield server, root, data
    finally:
        server.stop()


def test_binary_and_json_return_the_same_vectors(served: tuple[Server, Path, dict]) -> None:
    server, _, data = served
    ids = np.concatenate([data["user_ids"][:2500], np.array([-1, -2])])  # 2502 ids > max_ids: split in 3
    with SaecClient(server.url) as binary, SaecClient(server.url, protocol="json") as js:
        a = binary.lookup({"user": ids, "country": ["c0", "c49", "zz"]})
        b = js.lookup({"user": ids, "country": ["c0", "c49", "zz"]})
    assert a["user"].vectors.shape == (2502, 9)
    assert np.array_equal(a["user"].vectors, b["user"].vectors)
    assert np.array_equal(a["user"].found, b["user"].found)
    assert a["user"].found[:2500].all() and not a["user"].found[2500:].any()
    expected = data["codebook"][data["masks"][:2500]]
    wrong = ~(a["user"].vectors[:2500] == expected).all(axis=1)
    assert wrong.sum() <= 2  # aliased ids only (a handful in 20,000)
    assert np.array_equal(a["country"].vectors[:2], data["country"][[0, 49]])
    assert a["country"].found.tolist() == [True, True, False]
    assert a.version == data["version"]


def test_async_client(served: tuple[Server, Path, dict]) -> None:
    import asyncio

    server, _, data = served

    async def go() -> np.ndarray:
        async with AsyncSaecClient(server.url) as c:
            res = await c.lookup({"user": hash_ids(data["user_ids"][:3000], "user")}, hashed=True)
            return res["user"].vectors

    got = asyncio.run(go())
    with SaecClient(server.url) as c:
        want = c.lookup({"user": data["user_ids"][:3000]})["user"].vectors
    assert np.array_equal(got, want)


def test_typed_errors_carry_the_problem(served: tuple[Server, Path, dict]) -> None:
    server, _, _ = served
    with SaecClient(server.url) as c:
        with pytest.raises(UnknownFieldError) as err:
            c.lookup({"nope": [1]})
        assert err.value.status == 404 and "holds country, user" in err.value.detail
        # Ids are hashed in the client, so bad ids fail before any request is sent.
        with pytest.raises(InvalidIdsError, match="got float"):
            c.lookup({"user": [1.5]})
    with SaecClient(server.url, max_ids=5000, protocol="json") as c, pytest.raises(RequestTooLargeError) as big:
        c.lookup({"user": list(range(1500))})
    assert big.value.status == 413 and big.value.problem["type"].endswith("batch-too-large")


def test_hot_reload_swaps_without_failing(served: tuple[Server, Path, dict]) -> None:
    server, root, data = served
    with SaecClient(server.url) as c:
        before = c.lookup({"country": ["c3"]})
        new_vectors = np.full((50, 17), 7.0, np.float32)
        with SnapshotWriter(root, source="reload test") as w:
            w.add_compressed_field(
                "user", hash_ids(data["user_ids"], "user"), data["codebook"], data["masks"], data["counts"]
            )
            w.add_dense_field("country", hash_ids(data["country_ids"], "country"), new_vectors)
            version = w.publish()
        deadline = time.monotonic() + 20
        seen = []
        while time.monotonic() < deadline:
            res = c.lookup({"country": ["c3"]})  # must never fail during the swap
            seen.append(res.version)
            if res.version == version:
                break
            time.sleep(0.05)
        assert seen[-1] == version, seen[-5:]
        assert before.version == data["version"]
        assert np.array_equal(res["country"].vectors[0], new_vectors[3])


def test_refuses_a_corrupt_snapshot_and_keeps_serving(served: tuple[Server, Path, dict]) -> None:
    server, root, data = served
    with SaecClient(server.url) as c:
        serving = c.snapshot()["version"]
        with SnapshotWriter(root, source="to be corrupted") as w:
            w.add_dense_field("country", hash_ids(data["country_ids"], "country"), data["country"])
            version = w.publish(make_current=False)
        vec = root / "snapshots" / version / "country" / "vectors" / "c" / "0" / "0"
        raw = bytearray(vec.read_bytes())
        raw[0] ^= 0xFF
        vec.write_bytes(bytes(raw))
        from saec.store.layout import StoreLayout

        StoreLayout(root).set_current(version)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not c.snapshot().get("last_reload_error"):
            time.sleep(0.1)
        snap = c.snapshot()
        assert snap["version"] == serving
        assert "sha256" in snap["last_reload_error"]
        assert c.lookup({"country": ["c1"]}).version == serving
        StoreLayout(root).set_current(serving)
