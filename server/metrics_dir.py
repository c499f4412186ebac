"""The directory ``prometheus_client`` shares between uvicorn workers.

Kept apart from ``server.metrics`` so that ``saec serve`` sets it up before anything
imports ``prometheus_client`` (which reads the variable when values are created).
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def shared_metrics_dir(workers: int) -> Iterator[str | None]:
    """With more than one worker, an empty metrics directory in ``PROMETHEUS_MULTIPROC_DIR``.

    A directory the environment already names is made if missing, emptied of earlier
    runs' files and kept, whatever the workers (``prometheus_client`` writes there
    whenever the variable is set: one worker named a missing one and died at its first
    metric). Otherwise a fresh temporary one is made and removed at exit; with one
    worker, nothing is shared and this yields None.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if not given and workers <= 1:
        yield None
        return
    if given:
        os.makedirs(given, exist_ok=True)
        # Values left by an earlier run would be summed into this run's.
        for stale in glob.glob(os.path.join(given, "*.db")):
            os.remove(stale)
        yield given
        return
    path = tempfile.mkdtemp(prefix="saec-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def counts_by_pid(directory: str, metric: str, *labels: str) -> dict[int, float]:
    """Each worker's own value of counter ``metric`` (summed over series whose labels
    contain every text in ``labels``), read from its file in the shared directory.

    The scrape sums the workers; this tells them apart, for an operator asking which
    worker is busy, and for tests that must see a request reach every worker.
    """
    from prometheus_client.mmap_dict import MmapedDict

    out: dict[int, float] = {}
    for path in glob.glob(os.path.join(directory, "counter_*.db")):
        pid = os.path.basename(path)[len("counter_") : -len(".db")]
        if not pid.isdigit():
            continue
        d = MmapedDict(path, read_mode=True)
        try:
            out[int(pid)] = sum(
                v for k, v, _ in d.read_all_values() if metric in k and all(text in k for text in labels)
            )
        finally:
            d.close()
    return out
