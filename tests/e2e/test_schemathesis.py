"""schemathesis, every check, against a real `saec serve`: at least 1,000 generated
requests, no failure (no 5xx, answers as documented, schema-valid bodies accepted,
schema-invalid ones refused)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_small_store
from tests.e2e.test_uvicorn import Server

pytest.importorskip("schemathesis")
pytestmark = [pytest.mark.slow, pytest.mark.long]

CASES = 1000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root: Path = tmp_path_factory.mktemp("fuzz") / "store"
    write_small_store(root, np.random.default_rng(6))
    s = Server(root, SAEC_RELOAD_INTERVAL="0")
    try:
        yield s
    finally:
        s.stop()


def test_schemathesis_all_checks(server: Server, tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json",
        "--checks", "all", "--max-examples", str(CASES), "--seed", "1",
        "--no-shrink", "--generation-database", "none", "--workers", "2", "--no-color",
    ]  # fmt: skip
    # No --max-time: it turns the run into fuzzing until the time is up.
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path, stdin=subprocess.DEVNULL)
    tail = run.stdout[-3000:]
    assert run.returncode == 0, tail
    generated = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert generated, tail
    assert int(generated.group(1)) >= CASES and generated.group(1) == generated.group(2), tail
