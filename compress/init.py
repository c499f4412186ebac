"""Initial centroids: k-means++, random rows, or the k most frequent rows (paper 2.2.2).

All three pick rows of the data, so the initial centroids are real embedding vectors.
Every choice is drawn from the ``numpy.random.Generator`` passed in, so a seed fixes it.

k-means++ is a compiled loop here (:mod:`compress._kernels`) rather than scikit-learn's
``kmeans_plusplus`` (the reference greedy k-means++, which this follows: 2 + ln k
candidates a step, keep the one that lowers the potential most). scikit-learn is only an
optional extra, and results must not change with whether it is installed: the same seed
gives the same codebook everywhere. bench/kmeans.py times both and prints the inertia of
the seeds each leaves.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from saec.compress._kernels import greedy_kmeans_plusplus
from saec.compress._rank import top_rows

INIT_METHODS = ("kmeans++", "random", "topk")



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
        x: float32 (n, dim), n >= k, ideally centred near the origin.
        k: number of centres.
        rng: source of every draw: ``rng.integers(n)`` (or one weighted draw) for the
            first centre, then ``rng.random((k - 1, 2 + ln k))`` for the candidates.
        threads: accepted for symmetry with the E-step; seeding runs on the calling
            thread (a compiled loop, :mod:`compress._kernels`), which leaves the other
            cores to whatever runs beside it, such as the previous field being written.
        row_weights: float32 (n,) >= 0 with a positive sum, or None: weighted k-means++
            (scikit-learn's ``sample_weight``): the first centre is drawn in proportion to
            the weights, the next candidates to weight times squared distance, and the
            potential is the weighted sum.

    Returns:
        intp (k,): the rows chosen, in the order chosen. Memory: (dim + 2) * n float32.
    """
    del threads
    n, _ = x.shape
    trials = 2 + int(np.log(k))
    if row_weights is None:
        first = int(rng.integers(n))
        weights = np.empty(0, dtype=np.float32)
    else:
        weights = np.ascontiguousarray(row_weights, dtype=np.float32)
        cumulative = np.cumsum(weights, dtype=np.float64)
        # side="right" never lands on a row of zero weight.
        first = min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")), n - 1)
    uniforms = rng.random((k - 1, trials))
    return greedy_kmeans_plusplus(
        np.ascontiguousarray(x.T), k, first, uniforms, weights, row_weights is not None
    )


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
