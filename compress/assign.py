"""Nearest-centroid assignment, chunk by chunk, on BLAS.

Squared distances are expanded as ``||x||^2 - 2 x.c + ||c||^2`` so that the bulk of the
work is one float32 matrix product per chunk. The product is taken with an augmented
matrix, ``[x - o, 1] @ [[-2 c^T], [||c||^2]]``, which folds the ``+ ||c||^2`` into the
sgemm instead of another pass over the (chunk, k) block. Rows and centroids are first
shifted by a common origin ``o`` near the data: distances do not change, but the norms
shrink, and with them the float32 cancellation in the expansion.

Memory stays bounded: one (chunk_rows, k) float32 block per thread is alive at a time
(4 MiB by default), never an (n, k) matrix for the whole field.

Threads: the argmin over each (chunk, k) block costs as much as the sgemm and numpy runs
it on one core, so chunks are spread over a thread pool (numpy releases the GIL in both).
Each thread then cuts its chunk into slabs small enough that OpenBLAS runs their sgemm on
the calling thread: two pools of BLAS threads fighting over the same cores measured slower
than one thread alone, and many times slower while other processes load the machine.
With 2 cores this halves the time of an E-step or better (bench/kmeans.py prints ns/row
for threads=1 and the default).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Self

import numpy as np
import numpy.typing as npt

from saec.compress import _validate
from saec.compress.errors import InputShapeError

# One thread's (chunk, k) float32 score block. 4 MiB (10,485 rows at k = 100) measured
# as fast as any size from k = 100 to 8192 on 2 cores: small enough to stay in cache
# between the sgemm writing it and argmin reading it. bench/kmeans.py prints a sweep.
BLOCK_BYTES = 1 << 22

# OpenBLAS computes an sgemm on the calling thread when M * N * K is at most
# SMP_THRESHOLD_MIN (65536) * GEMM_MULTITHREAD_THRESHOLD (4).
_SINGLE_THREAD_MNK = 65536 * 4


def default_threads() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_chunk_rows(k: int) -> int:
    """Rows a chunk so that its (rows, k) float32 score block is :data:`BLOCK_BYTES`."""
    return max(1, BLOCK_BYTES // (4 * k))


def single_thread_slab_rows(inner: int, cols: int) -> int:
    """Rows of an (rows, inner) @ (inner, cols) sgemm that OpenBLAS keeps on one thread."""
    return max(1, _SINGLE_THREAD_MNK // (inner * cols))


def slab_matmul(
    lhs: npt.NDArray[np.float32],
    rhs: npt.NDArray[np.float32],
    out: npt.NDArray[np.float32],
    slab_rows: int,
) -> None:
    """``out[...] = lhs @ rhs``, as one sgemm per slab of ``slab_rows`` rows.

    numpy's matmul loops over stacked slabs in C, so small slabs cost no Python time;
    they keep OpenBLAS on the calling thread, where its own thread pool would fight the
    caller's threads (or other processes) for the cores: under contention that measured
    several times slower than one thread.

    Args:
        lhs: float32 (m, inner), C-contiguous.
        rhs: float32 (inner, cols).
        out: float32 (m, cols), C-contiguous, written.
        slab_rows: rows per sgemm.
    """
    # A reshape of a non-contiguous array would be a copy, and the product lost.
    assert lhs.flags.c_contiguous and out.flags.c_contiguous
    m = lhs.shape[0]
    whole = m - m % slab_rows
    if whole:
        np.matmul(
            lhs[:whole].reshape(whole // slab_rows, slab_rows, lhs.shape[1]),
            rhs,
            out=out[:whole].reshape(whole // slab_rows, slab_rows, out.shape[1]),
        )
    if whole < m:
        np.matmul(lhs[whole:], rhs, out=out[whole:])


def label_dtype(k: int) -> np.dtype:
    """The narrowest unsigned dtype holding cluster ids 0..k-1: uint8 up to k = 256."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if k <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def augmented_centroids(
    centroids: npt.NDArray[np.float32], origin: npt.NDArray[np.floating]
) -> npt.NDArray[np.float32]:
    """The (dim + 1, k) float32 right-hand side of the distance product.

    Args:
        centroids: float32 (k, dim).
        origin: float (dim,), subtracted from centroids and rows alike.

    Returns:
        float32 (dim + 1, k): rows 0..dim-1 hold ``-2 (c - o)^T``, row dim ``||c - o||^2``.
    """
    shifted = centroids.astype(np.float64) - origin
    out = np.empty((centroids.shape[1] + 1, centroids.shape[0]), dtype=np.float32)
    out[:-1] = -2.0 * shifted.T
    out[-1] = np.einsum("ij,ij->i", shifted, shifted)
    return out


class Scratch:
    """One thread's buffers for one chunk: rows, their norms, the score block."""

    def __init__(self, chunk_rows: int, dim: int, k: int) -> None:
        self.rows_aug = np.ones((chunk_rows, dim + 1), dtype=np.float32)
        self.sqnorm = np.empty(chunk_rows, dtype=np.float32)
        self.block = np.empty((chunk_rows, k), dtype=np.float32)
        # Flat offset of each row's first score, to gather the minima in one take.
        self.row_offsets = np.arange(chunk_rows, dtype=np.intp) * k


# Fills a thread's scratch (or not) and returns that chunk's ``[x - o, 1]`` float32
# (m, dim + 1) and ``||x - o||^2`` float32 (m,).
Prepare = Callable[[int, int, Scratch], tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]


class Assigner:
    """Runs nearest-centroid assignment over many chunks, reusing threads and buffers.

    Use as a context manager; the thread pool lives until exit, so a k-means loop pays
    for it once rather than once an iteration.
    """

    def __init__(self, dim: int, k: int, *, chunk_rows: int | None, threads: int) -> None:
        self.dim, self.k = dim, k
        self.chunk_rows = default_chunk_rows(k) if chunk_rows is None else chunk_rows
        # Past ~26,000 centroids even a one-row sgemm is big enough for OpenBLAS to thread
        # it; then leave the cores to OpenBLAS rather than have two pools fight over them.
        self.threads = max(1, threads) if k * (dim + 1) <= _SINGLE_THREAD_MNK else 1
        # With one thread, let BLAS use every core on the whole chunk instead.
        self.slab_rows = (
            single_thread_slab_rows(dim + 1, k) if self.threads > 1 else self.chunk_rows
        )
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def _scratch(self, rows: int) -> Scratch:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None or scratch.block.shape[0] < rows:
            scratch = self._local.scratch = Scratch(rows, self.dim, self.k)
        return scratch

    def chunk_rows_for(self, n: int) -> int:
        """Rows per chunk when assigning ``n`` rows: chunks start at multiples of it.

        A run over a slice of rows that starts at such a multiple and holds at least
        ``threads * chunk_rows`` rows cuts its chunks (and their sgemm slabs) exactly
        where a run over all rows does, so each row gets the same bits either way;
        compression on Dask splits a field's assignment on that rule.
        """
        # At least one chunk a thread, so a small field still uses every core.
        return max(1, min(self.chunk_rows, -(-n // self.threads)))

    def run(
        self,
        n: int,
        prepare: Prepare,
        centroids_aug: npt.NDArray[np.float32],
        labels_out: npt.NDArray[np.integer],
        sqdist_out: npt.NDArray[np.float32],
    ) -> None:
        """Write each row's nearest centroid and squared distance to it.

        Args:
            n: rows in all.
            prepare: gives chunk [start, stop)'s augmented rows and norms.
            centroids_aug: float32 (dim + 1, k) from :func:`augmented_centroids`.
            labels_out: integer (n,), written; ties go to the lowest centroid index.
            sqdist_out: float32 (n,), written, >= 0.
        """

        chunk_rows = self.chunk_rows_for(n)

        def one_chunk(start: int) -> None:
            stop = min(start + chunk_rows, n)
            scratch = self._scratch(chunk_rows)
            rows_aug, sqnorm = prepare(start, stop, scratch)
            self._assign_chunk(
                rows_aug, sqnorm, centroids_aug, scratch,
                labels_out[start:stop], sqdist_out[start:stop],
            )

        starts = range(0, n, chunk_rows)
        if self._pool is None or len(starts) == 1:
            for start in starts:
                one_chunk(start)
        else:
            # Chunks are handed out as threads free up, which keeps both cores busy even
            # when another process takes one of them for a while.
            for _ in self._pool.map(one_chunk, starts):
                pass

    def _assign_chunk(
        self,
        rows_aug: npt.NDArray[np.float32],
        sqnorm: npt.NDArray[np.float32],
        centroids_aug: npt.NDArray[np.float32],
        scratch: Scratch,
        labels_out: npt.NDArray[np.integer],
        sqdist_out: npt.NDArray[np.float32],
    ) -> None:
        m = rows_aug.shape[0]
        scores = scratch.block[:m]
        slab_matmul(rows_aug, centroids_aug, scores, self.slab_rows)
        best = scores.argmin(axis=1)
        labels_out[...] = best
        best += scratch.row_offsets[:m]
        np.add(scores.reshape(-1).take(best), sqnorm, out=sqdist_out)
        # The expansion can dip below zero by rounding when a row sits on its centroid.
        np.maximum(sqdist_out, 0.0, out=sqdist_out)


def assign_rows(
    vectors: npt.NDArray[np.float32],
    centroids: npt.NDArray[np.float32],
    labels_out: npt.NDArray[np.integer],
    sqdist_out: npt.NDArray[np.float32],
    *,
    chunk_rows: int | None = None,
    threads: int | None = None,
) -> None:
    """:func:`nearest_centroid` without input checks, writing into the caller's arrays.

    Args:
        vectors: float32 (n, dim), finite.
        centroids: float32 (k, dim), finite.
        labels_out: integer (n,), written.
        sqdist_out: float32 (n,), written.
        chunk_rows: rows per chunk; None for :func:`default_chunk_rows`.
        threads: threads to spread chunks over; None for every usable CPU.
    """
    n, dim = vectors.shape
    k = centroids.shape[0]
    origin = centroids.mean(axis=0, dtype=np.float64).astype(np.float32)
    centroids_aug = augmented_centroids(centroids, origin)

    def prepare(start: int, stop: int, scratch: Scratch) -> tuple[
        npt.NDArray[np.float32], npt.NDArray[np.float32]
    ]:
        m = stop - start
        rows_aug = scratch.rows_aug[:m]
        shifted = rows_aug[:, :dim]
        np.subtract(vectors[start:stop], origin, out=shifted)
        sqnorm = np.einsum("ij,ij->i", shifted, shifted, out=scratch.sqnorm[:m])
        return rows_aug, sqnorm

    threads = default_threads() if threads is None else threads
    with Assigner(dim, k, chunk_rows=chunk_rows, threads=threads) as assigner:
        assigner.run(n, prepare, centroids_aug, labels_out, sqdist_out)


def nearest_centroid(
    vectors: npt.NDArray[np.float32],
    centroids: npt.NDArray[np.float32],
    *,
    chunk_rows: int | None = None,
    threads: int | None = None,
    field: str = "",
) -> tuple[npt.NDArray[np.unsignedinteger], npt.NDArray[np.float32]]:
    """Index of, and squared Euclidean distance to, each row's nearest centroid.

    Args:
        vectors: float32 (n, dim), finite.
        centroids: float32 (k, dim), finite, k >= 1.
        chunk_rows: rows per chunk; None for as many as fill a 4 MiB score block
            (10,485 at k = 100). Memory besides the outputs is about
            threads * chunk_rows * k * 4 bytes.
        threads: threads to spread chunks over; None for every usable CPU. The result
            does not depend on it.
        field: the field's name, used in error messages.

    Returns:
        labels: (n,) of :func:`label_dtype` (k), i.e. uint8 for k <= 256, uint16 for
            k <= 65536; ties go to the lowest centroid index.
        sqdist: float32 (n,), squared distance of each row to its centroid, >= 0.

    Raises:
        CompressError: on input of the wrong dtype or shape, non-finite values, or
            vectors and centroids of different lengths.
    """
    vectors = _validate.vectors(vectors, field)
    centroids = _validate.vectors(centroids, field, name="centroids")
    if centroids.shape[0] < 1 or centroids.shape[1] != vectors.shape[1]:
        raise InputShapeError(
            f"{_validate.where(field)}: expected centroids of shape (k >= 1, {vectors.shape[1]}), "
            f"got shape {centroids.shape}"
        )
    if chunk_rows is not None:
        chunk_rows = _validate.integer(chunk_rows, "chunk_rows", field, minimum=1)
    if threads is not None:
        threads = _validate.integer(threads, "threads", field, minimum=1)
    n = vectors.shape[0]
    labels = np.empty(n, dtype=label_dtype(centroids.shape[0]))
    sqdist = np.empty(n, dtype=np.float32)
    assign_rows(vectors, centroids, labels, sqdist, chunk_rows=chunk_rows, threads=threads)
    return labels, sqdist
