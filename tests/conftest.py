"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Under pytest-xdist every core already runs a worker: one thread each for the OpenMP and
# BLAS pools (torch, numpy), else they oversubscribe the cores and spin against each
# other. Set before torch or numpy is imported; servers the tests start inherit it.
if "PYTEST_XDIST_WORKER" in os.environ:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import numpy as np
import pytest

from saec.store.hashing import hash_ids
from saec.store.writer import SnapshotWriter


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def write_small_store(root: Path, rng: np.random.Generator, *, n: int = 5000, k: int = 16, dim: int = 9) -> dict:
    """A store with one compressed field ``user`` and one dense field ``country``.

    Returns the arrays written, in input order, for comparison.
    """
    user_ids = np.arange(n, dtype=np.int64) * 7 + 3
    codebook = rng.normal(size=(k, dim)).astype(np.float32)
    masks = rng.integers(0, k, size=n).astype(np.uint8)
    counts = rng.integers(1, 1000, size=n)
    country_ids = np.array([f"c{i}" for i in range(50)])
    country = rng.normal(size=(50, 17)).astype(np.float32)
    with SnapshotWriter(root, source="tests") as w:
        w.add_compressed_field("user", hash_ids(user_ids, "user"), codebook, masks, counts)
        w.add_dense_field("country", hash_ids(country_ids, "country"), country)
        version = w.publish()
    return {
        "version": version,
        "user_ids": user_ids,
        "codebook": codebook,
        "masks": masks,
        "counts": counts,
        "country_ids": country_ids,
        "country": country,
    }


@pytest.fixture
def small_store(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, dict]:
    root = tmp_path / "store"
    return root, write_small_store(root, rng)


@pytest.fixture
def anyio_backend() -> str:
    # Async tests run on asyncio only: uvicorn's loop in production.
    return "asyncio"


@contextmanager
def moto_s3(log_dir: Path) -> Iterator[dict[str, Any]]:
    """moto's standalone S3 server on loopback, in a process of its own (its output in
    ``log_dir/moto.log``); yields the storage options that reach it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(log_dir / "moto.log", "w+b")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing", "secret": "testing"}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not come up") from None
                time.sleep(0.1)
        yield options
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
