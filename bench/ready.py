"""Ready means fast: time to /readyz 200 and the first lookups after it, cold and warm cache.

    python -m bench.ready            # 3 starts each, writes bench/results/ready.md
    python -m bench.ready --no-write

Starts ``saec serve`` (1 worker) over a demo snapshot with an empty numba cache
(``NUMBA_CACHE_DIR`` a fresh folder: every kernel compiles during warm-up) and then
with that cache warm, and measures for each start: seconds from launch to the first
``/readyz`` 200, the open and warm-up seconds the server reports in ``GET /snapshot``,
the first lookup after ready (4096 ids of a compressed field and 64 of a dense one,
binary) and, as the baseline, the median of the next 20 identical lookups.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench._report import Report, markdown_table
from saec.progress import Progress

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_start(store: Path, cache: Path) -> dict[str, float]:
    from saec.clients import SaecClient

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    launched = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "saec.cli", "serve", "--store", str(store), "--port", str(port), "--log-level", "warning"],
        cwd=REPO, env={**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() - launched > 300:
                raise RuntimeError("saec serve did not become ready")
            time.sleep(0.01)
        ready = time.monotonic() - launched
        request = {"user_id": np.arange(4096), "country": np.arange(64)}
        with SaecClient(url) as c:
            times = []
            for _ in range(21):
                start = time.perf_counter()
                c.lookup(request)
                times.append(time.perf_counter() - start)
            snap = c.snapshot()
        return {
            "ready": ready,
            "open": snap["open_seconds"],
            "warmup": snap["warmup_seconds"],
            "first_ms": times[0] * 1000,
            "next_ms": statistics.median(times[1:]) * 1000,
        }
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    from saec.demo import build_demo

    report = Report("ready", "Ready means fast: warm-up before /readyz", modules=("numpy", "numba", "uvicorn"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="saec-ready-") as tmp, Progress() as progress:
        store = Path(tmp) / "store"
        progress.stage("building the demo snapshot")
        build_demo(str(store), seed=0, k=100, scale=1.0, quiet=True)
        progress.stage("starts of saec serve", 2 * args.starts)
        for i in range(args.starts):
            cache = Path(tmp) / f"cache-{i}"
            cache.mkdir()
            for label in ("empty cache", "warm cache"):
                r = one_start(store, cache)
                progress.step(f"{label}: ready in {r['ready']:.2f} s")
                rows.append((label, f"{r['ready']:.2f}", f"{r['open']:.3f}", f"{r['warmup']:.3f}",
                             f"{r['first_ms']:.1f}", f"{r['next_ms']:.1f}"))
    rows.sort(key=lambda r: r[0])
    report.section(
        "Starts of `saec serve` (1 worker, demo snapshot)",
        markdown_table(["compile cache", "launch to ready s", "open s", "warm-up s",
                        "first lookup ms", "next 20 median ms"], rows),
    )
    if not args.no_write:
        report.write()


if __name__ == "__main__":
    main()
