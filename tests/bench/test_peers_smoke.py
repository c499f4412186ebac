"""The peer benchmark's smoke mode: every system answers the same vectors for the same ids.

Runs ``python -m bench.peers --smoke`` as a subprocess (it starts redis-server and two
``saec serve`` processes on 127.0.0.1 and stops them), so a failure shows the
benchmark's own output. Skipped only when no redis-server binary can be found; the
compiled load generators run when ``wrk`` and ``redis-benchmark`` are installed
(scripts/test.sh installs them), and are left out otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench._apt import find_binary
from bench._redis import find_redis_server

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.long]


@pytest.fixture(scope="module")
def redis_server() -> str:
    binary = find_redis_server()
    if binary is None:
        pytest.skip(
            "no redis-server binary on PATH or in /usr/bin, /usr/local/bin, /usr/sbin (apt-get install redis-server)"
        )
    return binary


def test_smoke_every_system_answers_the_same_vectors(redis_server: str, tmp_path: Path) -> None:
    # The run's temporary folders (redis-server --dir, the stores saec serve maps) go under
    # tmp_path, so that only this run's processes can match below, whatever else runs.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "TMPDIR": str(scratch),
    }
    loadgen = all(find_binary(name) for name in ("wrk", "redis-benchmark"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.peers",
            "--smoke",
            "--no-install",
            "--redis-server",
            redis_server,
            "--out",
            str(tmp_path),
            "--loadgen" if loadgen else "--no-loadgen",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr[-4000:]}"
    assert done.returncode == 0, output
    assert "smoke: every system answered the same vectors" in done.stdout, output
    # One equality line per store: Redis (both clients) with compressed saec, then dense saec.
    checks = [line for line in done.stdout.splitlines() if line.startswith("equal answers:")]
    assert len(checks) == 2, output
    assert all(name in checks[0] for name in ("Redis MGET", "saec binary", "saec JSON")), output
    assert "saec dense binary" in checks[1] and "saec dense JSON" in checks[1], output
    report = (tmp_path / "peers.md").read_text()
    assert "bytes per feature" in report and "Equal work" in report
    if loadgen:
        # Every compiled load generator point completed: wrk against saec (binary, JSON), redis-benchmark.
        assert "## Server capacity with compiled load generators" in report
        assert all(f"| {s} | 1 worker | 2 |" in report for s in ("saec binary (wrk)", "saec JSON (wrk)")), report
        assert "| Redis MGET (redis-benchmark) | 1 worker | 2 |" in report, report
    assert (tmp_path / "peers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Every redis-server and saec serve the run started has stopped with it.
    assert _processes_using(scratch) == set(), output


def _processes_using(folder: Path) -> set[int]:
    """Processes whose command line names ``folder`` (redis-server's --dir, saec serve's --store)."""
    needle = str(folder).encode()
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            found.add(int(name))
    return found
