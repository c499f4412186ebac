"""Two stages over a list, overlapped: later items are prepared while this one is consumed.

``saec compress`` prepares a field (read, hash, cluster, assign) and then writes it (key
index, HNSW, arrays, checksums). Both stages spend most of their time in numpy, BLAS,
compiled loops and hnswlib with the GIL released, so the write of one field runs beside
the clustering of the next ones on the other cores, while the fields are still written
one at a time and in order: the snapshot is the same as when the stages take turns.

How many items are prepared at once is the caller's choice (``workers``). Reading the
input is the part of preparing that must not run twice at once (a zip member or a Parquet
file is one stream) and whose order may matter (a generator's random draws): ``read``
runs on the workers one item at a time, in the items' order.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _identity(item: Any) -> Any:
    return item


def pipelined(
    items: Sequence[T],
    prepare: Callable[[Any], R],
    *,
    workers: int = 1,
    read: Callable[[T], Any] = _identity,
) -> Generator[tuple[T, R], None, None]:
    """``(item, prepare(read(item)))`` for each item in order, preparing up to ``workers``
    items ahead on background threads while the caller handles this one.

    ``read`` runs for one item at a time and in order (item i's ``read`` starts after item
    i - 1's has returned or raised); ``prepare`` calls of different items overlap.

    At most ``workers + 1`` items are held at once: the one yielded and those being
    prepared. An error in ``read`` or ``prepare`` is raised here, at the item it failed on.
    When the caller stops early (an error of its own, or a break) and closes the generator
    (``contextlib.closing``), the items being prepared are let finish and nothing after
    them is started.
    """
    if not items:
        return
    turns = [threading.Event() for _ in range(len(items) + 1)]
    turns[0].set()

    def job(i: int) -> R:
        turns[i].wait()
        try:
            raw = read(items[i])
        finally:
            turns[i + 1].set()
        return prepare(raw)

    workers = max(1, workers)
    with ThreadPoolExecutor(workers, thread_name_prefix="saec-prepare") as pool:
        # Submitted in order, so the item whose read is next is always running.
        pending: deque[Future[R]] = deque(pool.submit(job, i) for i in range(min(workers, len(items))))
        submitted = len(pending)
        try:
            for item in items:
                ready = pending.popleft().result()
                if submitted < len(items):
                    pending.append(pool.submit(job, submitted))
                    submitted += 1
                yield item, ready
        finally:
            # Items start in order, so a running item's read never waits on a cancelled
            # one: the item before it started, and gives the turn even when it fails.
            pool.shutdown(wait=True, cancel_futures=True)
