"""Two stages over a list, overlapped: the next item is prepared while this one is consumed.

``saec compress`` prepares a field (read, hash, cluster, assign) and then writes it (key
index, HNSW, arrays, checksums). Both stages spend most of their time in numpy, BLAS and
hnswlib with the GIL released, so the write of one field runs beside the clustering of
the next on the other core, while the fields are still written one at a time and in
order: the snapshot is the same as when the stages take turns.

One item ahead, not more: at the day-1 size (bench.compress_e2e) preparing two at once
saved 2.4 s of 60 while holding a third field in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def pipelined(items: Sequence[T], prepare: Callable[[T], R]) -> Generator[tuple[T, R], None, None]:
    """``(item, prepare(item))`` for each item in order, ``prepare`` of the next item running
    on a background thread while the caller handles this one.

    At most two items are held at once: the one yielded and the one being prepared. An
    error in ``prepare`` is raised here, at the item it failed on. When the caller stops
    early (an error of its own, or a break) and closes the generator
    (``contextlib.closing``), the item being prepared is let finish and nothing after it
    is started.
    """
    if not items:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="saec-prepare") as pool:
        pending: Future[R] = pool.submit(prepare, items[0])
        try:
            for i, item in enumerate(items):
                ready = pending.result()
                if i + 1 < len(items):
                    pending = pool.submit(prepare, items[i + 1])
                yield item, ready
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
