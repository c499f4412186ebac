"""schemathesis against POST /admin/updates of a real `saec serve` with the admin token:
no 5xx, answers as documented, schema-invalid bodies refused. Every check but one: that
each schema-valid body is accepted (ST202). Whether a batch is valid depends on what no
JSON schema can say: one vector per id, and each field's vector length in the snapshot
being served; such bodies get a 422 naming the field and row, as documented.

``SAEC_ADMIN_FUZZ_CASES`` cases (200 by default; run with 1000 or more by hand)."""

from __future__ import annotations

import os
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
pytestmark = pytest.mark.slow

CASES = int(os.environ.get("SAEC_ADMIN_FUZZ_CASES", "200"))
TOKEN = "fuzz-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root: Path = tmp_path_factory.mktemp("fuzz-admin") / "store"
    write_small_store(root, np.random.default_rng(7))
    s = Server(root, SAEC_RELOAD_INTERVAL="0", SAEC_ADMIN_TOKEN=TOKEN)
    try:
        yield s
    finally:
        s.stop()


def test_schemathesis_admin_updates(server: Server, tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json",
        "--include-path", "/admin/updates", "-H", f"Authorization: Bearer {TOKEN}",
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--max-examples", str(CASES), "--seed", "2",
        "--no-shrink", "--generation-database", "none", "--workers", "2", "--no-color",
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=tmp_path, stdin=subprocess.DEVNULL)
    tail = run.stdout[-4000:]
    assert run.returncode == 0, tail
    generated = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert generated, tail
    assert int(generated.group(1)) >= CASES and generated.group(1) == generated.group(2), tail
