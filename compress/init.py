"""Initial centroids: k-means++, random rows, or the k most frequent rows (paper 2.2.2).

All three pick rows of the data, so the initial centroids are real embedding vectors.
Every choice is drawn from the ``numpy.random.Generator`` passed in, so a seed fixes it.

k-means++ is written here in numpy rather than taken from scikit-learn's
``kmeans_plusplus`` (the reference greedy k-means++, which this follows: 2 + ln k
candidates a step, keep the one that lowers the potential most). scikit-learn is only an
optional extra, and results must not change with whether it is installed: the same seed
gives the same codebook everywhere. bench/kmeans.py times both: this one is 5-20x faster on
2 cores, its seeds as good (inertia of the seeds within 2.5%, either way).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import numpy.typing as npt

from saec.compress._rank import top_rows
from saec.compress.assign import single_thread_slab_rows

INIT_METHODS = ("kmeans++", "random", "topk")

# Rows per unit of work in a k-means++ step.
_BLOCK_ROWS = 1 << 15
# Rows per group in k-means++'s weighted draw.
_GROUP_ROWS = 1 << 10


def random_rows(n: int, k: int, rng: np.random.Generator) -> npt.NDArray[np.intp]:
    """k distinct rows drawn uniformly from n: intp (k,)."""
    return rng.choice(n, size=k, replace=False).astype(np.intp)


def kmeans_plusplus_rows(
    x: npt.NDArray[np.float32],
    k: int,
    rng: np.random.Generator,
    *,
    threads: int = 1,
    row_weights: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.intp]:
    """Greedy k-means++ (Arthur and Vassilvitskii 2007; scikit-learn's variant).

    The first centre is a uniform draw; each next one is the best, by resulting
    potential, of 2 + ln k candidates drawn with probability proportional to their squared
    distance to the nearest centre so far.

    Args:
        x: float32 (n, dim), n >= k, ideally centred near the origin (the distance
            expansion loses less to float32 rounding).
        k: number of centres.
        rng: source of every draw.
        threads: threads sharing each step's distance computations; the result does
            not depend on it.
        row_weights: float32 (n,) >= 0 with a positive sum, or None: weighted k-means++
            (scikit-learn's ``sample_weight``): the first centre is drawn in proportion to
            the weights, the next candidates to weight times squared distance, and the
            potential is the weighted sum.

    Returns:
        intp (k,): the rows chosen, in the order chosen. Memory: (2 + ln k) * n float32.
    """
    n, dim = x.shape
    trials = 2 + int(np.log(k))
    # Rows are kept transposed, [x, ||x||^2, 1]^T, so that [-2c, 1, ||c||^2] @ rows
    # gives each candidate's squared distances as one contiguous row: the elementwise
    # minimum and sums over (trials, n) measured 2x faster than over (n, trials).
    rows_t = np.empty((dim + 2, n), dtype=np.float32)
    rows_t[:dim] = x.T
    rows_t[dim] = np.einsum("ij,ij->i", x, x)
    rows_t[dim + 1] = 1.0
    slab = single_thread_slab_rows(dim + 2, trials)
    dist = np.empty((trials, n), dtype=np.float32)
    # float32 like the distances: mixing in float64 made each minimum 4x slower. Padded
    # with zeros to whole groups for the two-level draw (see _draw_rows).
    weights = np.zeros(-(-n // _GROUP_ROWS) * _GROUP_ROWS, dtype=np.float32)
    if row_weights is None:
        closest = weights[:n]
    else:
        # The draws then use weights = row_weights * closest, kept up to date below.
        closest = np.empty(n, dtype=np.float32)
    closest[:] = np.inf
    # Blocks of fixed size, summed in a fixed order: the potentials, hence the choices,
    # come out the same whatever the number of threads.
    blocks = [(start, min(start + _BLOCK_ROWS, n)) for start in range(0, n, _BLOCK_ROWS)]

    def potentials(block: tuple[int, int], lhs: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        start, stop = block
        _slab_distances(lhs, rows_t, dist, start, stop, slab)
        d = dist[:, start:stop]
        np.minimum(d, closest[start:stop], out=d)
        if row_weights is not None:
            d *= row_weights[start:stop]
        # A float32 pairwise sum over one block is exact enough to rank the candidates.
        return d.sum(axis=1)

    chosen = np.empty(k, dtype=np.intp)
    with ThreadPoolExecutor(max(1, min(threads, len(blocks)))) as pool:
        # The first centre is one uniform draw, posed as `trials` equal candidates so that
        # every step runs the same code.
        if row_weights is None:
            candidates = np.full(trials, rng.integers(n))
        else:
            weights[:n] = row_weights
            candidates = np.full(trials, _draw_rows(weights, n, 1, rng)[0])
        for c in range(k):
            centres = rows_t[:, candidates]
            lhs = np.empty((trials, dim + 2), dtype=np.float32)
            lhs[:, :dim] = -2.0 * centres[:dim].T
            lhs[:, dim] = 1.0
            lhs[:, dim + 1] = centres[dim]
            totals = np.sum(
                list(pool.map(partial(potentials, lhs=lhs), blocks)), axis=0, dtype=np.float64
            )
            best = int(np.argmin(totals))
            chosen[c] = candidates[best]
            # Rounding in the expansion can go below zero on the centres themselves.
            np.maximum(dist[best], 0.0, out=closest)
            if c + 1 == k:
                break
            if row_weights is not None:
                np.multiply(closest, row_weights, out=weights[:n])
            candidates = _draw_rows(weights, n, trials, rng)
    return chosen


def _draw_rows(
    weights: npt.NDArray[np.float32], n: int, m: int, rng: np.random.Generator
) -> npt.NDArray[np.intp]:
    """m rows drawn with probability proportional to their weight.

    Inverse CDF in two levels, groups of rows and then rows in the chosen groups: a
    cumulative sum is sequential (3 ns a row, a third of a k-means++ step when taken
    over all rows), while the group sums are one vectorised pass.

    Args:
        weights: float32 (groups * _GROUP_ROWS,), >= 0, zero past row n; summed in
            float64.
        n: rows that may be drawn.
        m: draws.
        rng: source of the draws.

    Returns:
        intp (m,), rows of positive weight (any rows when all weights are zero).
    """
    grouped = weights.reshape(-1, _GROUP_ROWS)
    group_sums = grouped.sum(axis=1, dtype=np.float64)
    cumulative = np.cumsum(group_sums)
    if not cumulative[-1] > 0.0:
        # Every row coincides with a chosen centre: any row will do.
        return rng.integers(n, size=m)
    draws = rng.random(m) * cumulative[-1]
    # side="right" never lands on a group, or below on a row, of zero weight.
    group = np.minimum(np.searchsorted(cumulative, draws, side="right"), len(group_sums) - 1)
    draws -= cumulative[group] - group_sums[group]
    within = np.cumsum(grouped[group], axis=1, dtype=np.float64)
    row = np.minimum((within <= draws[:, None]).sum(axis=1), _GROUP_ROWS - 1)
    return np.minimum(group * _GROUP_ROWS + row, n - 1)


def _slab_distances(
    lhs: npt.NDArray[np.float32],
    rows_t: npt.NDArray[np.float32],
    out: npt.NDArray[np.float32],
    start: int,
    stop: int,
    slab: int,
) -> None:
    """``out[:, start:stop] = lhs @ rows_t[:, start:stop]``, one sgemm per slab of columns.

    The column analogue of :func:`compress.assign.slab_matmul`: stacked slabs small
    enough that OpenBLAS keeps each on the calling thread.

    Args:
        lhs: float32 (trials, dim + 2).
        rows_t: float32 (dim + 2, n).
        out: float32 (trials, n), written in columns start..stop-1.
    """
    inner, trials = lhs.shape[1], lhs.shape[0]
    whole = (stop - start) - (stop - start) % slab
    if whole:
        end = start + whole
        # Splitting a unit-stride axis is always a view, so the product lands in ``out``.
        rhs = rows_t[:, start:end].reshape(inner, whole // slab, slab).transpose(1, 0, 2)
        dst = out[:, start:end].reshape(trials, whole // slab, slab).transpose(1, 0, 2)
        np.matmul(lhs, rhs, out=dst)
    if start + whole < stop:
        np.matmul(lhs, rows_t[:, start + whole : stop], out=out[:, start + whole : stop])


def initial_rows(
    x: npt.NDArray[np.float32],
    k: int,
    init: str,
    counts: npt.NDArray[np.integer] | None,
    rng: np.random.Generator,
    *,
    threads: int = 1,
    row_weights: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.intp]:
    """Rows of x to start from, for an already validated ``init`` (one of INIT_METHODS).

    ``row_weights`` (float32 (n,), or None) weights k-means++'s draws and potentials;
    "random" and "topk" ignore them.

    Args:
        x: float32 (n, dim), n >= k.
        k: number of centroids.
        init: "kmeans++", "random" or "topk".
        counts: integer (n,) feature frequencies; required for "topk".
        rng: source of every draw.
        threads: threads k-means++ may use.

    Returns:
        intp (k,).
    """
    if init == "kmeans++":
        return kmeans_plusplus_rows(x, k, rng, threads=threads, row_weights=row_weights)
    if init == "random":
        return random_rows(x.shape[0], k, rng)
    assert counts is not None
    return top_rows(counts, k)
