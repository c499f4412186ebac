"""What every part of the peer benchmark shares: paths, the field name, the targets, the log."""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
FIELD = "emb"
# glibc: serve the 256 KB-1 MB response buffers from the heap instead of fresh mmaps
# (MEASURED.md: np.take(...).tobytes() 393 us -> 33 us).
MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "16777216",
    "MALLOC_TRIM_THRESHOLD_": "268435456",
    "MALLOC_TOP_PAD_": "16777216",
}
TARGETS = {
    "binary_x": 10.0,
    "json_x": 2.0,
    "p99_ms": 5.0,
    "memory_x": 20.0,
    "wrk_binary_x": 10.0,
    "wrk_json_x": 3.0,
    "json_cost_x": 2.0,
}


_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f} s] {msg}", file=sys.stderr, flush=True)
