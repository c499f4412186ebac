"""Lloyd's k-means on numpy and BLAS, and its result.

One iteration is an E-step (nearest centroid of every row, :mod:`compress.assign`) and
an M-step (centroid = mean of its rows, by ``np.bincount`` per dimension, which measured
1.5x faster than sorting by label and ``np.add.reduceat``, 30x faster than
``np.add.at``). The stopping rule is scikit-learn's: stop when no label changes, or when
the squared shift of all centroids falls to ``tol`` times the mean per-dimension
variance of the data.

scikit-learn's ``KMeans`` and faiss's ``Kmeans`` are not used, even when installed.
bench/kmeans.py runs all three on the same data: this loop is several times faster than
scikit-learn's at an inertia within 0.5% of it (lower in three cases of four). From the
same k-means++ start faiss reaches the same inertia, and is faster per iteration at 1e6
rows but slower at 1e5, the size fast clustering runs at; it has no tolerance (it runs
every iteration), and using it when importable would make the codebook depend on which
extras are installed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from saec.compress import _validate
from saec.compress._rank import top_rows
from saec.compress.assign import (
    Assigner,
    Scratch,
    augmented_centroids,
    default_threads,
    label_dtype,
)
from saec.compress.errors import InputShapeError, InvalidParameterError
from saec.compress.init import INIT_METHODS, initial_rows

# Rows per block when copying the rows into float64 columns for the M-step.
_TRANSPOSE_ROWS = 1 << 13


@dataclass(frozen=True, eq=False)
class KMeansResult:
    """What :func:`kmeans` found.

    Attributes:
        centroids: float32 (k, dim).
        labels: (n,) of :func:`compress.assign.label_dtype` (k) (uint8 for k <= 256):
            each row's nearest centroid among ``centroids``.
        inertia: sum over rows of the squared distance to their centroid, accumulated
            in float64.
        n_iter: centroid updates performed (M-steps), 1..max_iter.
        converged: whether a stopping rule fired before max_iter ran out.
    """

    centroids: npt.NDArray[np.float32]
    labels: npt.NDArray[np.unsignedinteger]
    inertia: float
    n_iter: int
    converged: bool


def check_init(
    init: object,
    k: int,
    dim: int,
    counts: npt.NDArray[np.integer] | None,
    field: str,
) -> str | npt.NDArray[np.float32]:
    """Return ``init`` once it is a known method, or float32 (k, dim) finite centroids."""
    if isinstance(init, np.ndarray):
        centroids = _validate.vectors(init, field, name="initial centroids")
        if centroids.shape != (k, dim):
            raise InputShapeError(
                f"{_validate.where(field)}: expected initial centroids of shape ({k}, {dim}), "
                f"got shape {centroids.shape}"
            )
        return centroids
    if not isinstance(init, str) or init not in INIT_METHODS:
        raise InvalidParameterError(
            f"{_validate.where(field)}: expected init to be one of "
            f"{', '.join(map(repr, INIT_METHODS))} or a float32 ({k}, {dim}) array, got {init!r}"
        )
    if init == "topk" and counts is None:
        raise InvalidParameterError(
            f"{_validate.where(field)}: init='topk' picks the most frequent rows and "
            f"expected counts, got counts=None"
        )
    return init


def kmeans(
    vectors: npt.NDArray[np.float32],
    k: int,
    *,
    init: str | npt.NDArray[np.float32] = "kmeans++",
    counts: npt.NDArray[np.integer] | None = None,
    seed: int = 0,
    max_iter: int = 50,
    tol: float = 1e-4,
    chunk_rows: int | None = None,
    threads: int | None = None,
    field: str = "",
) -> KMeansResult:
    """Cluster every row of ``vectors`` into k clusters.

    Args:
        vectors: float32 (n, dim), finite, n >= k.
        k: number of clusters, >= 1.
        init: "kmeans++" (greedy k-means++), "random" (k distinct rows), "topk" (the k
            rows of largest count, ties to the lower row), or float32 (k, dim) centroids.
        counts: integer (n,) feature frequencies, >= 0; needed only by "topk".
        seed: seeds every random draw; the same seed gives the same result.
        max_iter: cap on centroid updates, >= 1.
        tol: relative tolerance on the centroid shift (scikit-learn's meaning), >= 0.
        chunk_rows: rows per chunk of the E-step; None for
            :func:`compress.assign.default_chunk_rows`.
        threads: threads for k-means++ and the E-step; None for every usable CPU. The
            result does not depend on it.
        field: the field's name, used in error messages.

    Returns:
        KMeansResult. Clusters that go empty are re-seeded with the rows farthest from
        their centroids; a cluster that cannot be re-seeded (fewer distinct rows than k)
        keeps its previous centroid, so all k centroids are always finite.

    Raises:
        CompressError: on bad input or parameters (see :mod:`compress.errors`).
    """
    vectors = _validate.vectors(vectors, field)
    n, dim = vectors.shape
    k = _validate.integer(k, "k", field, minimum=1)
    _validate.k_for_rows(k, n, field)
    counts = _validate.counts(counts, n, field)
    init = check_init(init, k, dim, counts, field)
    return fit(
        vectors,
        k,
        init=init,
        counts=counts,
        seed=_validate.integer(seed, "seed", field, minimum=0),
        max_iter=_validate.integer(max_iter, "max_iter", field, minimum=1),
        tol=_validate.tolerance(tol, field),
        chunk_rows=(
            None
            if chunk_rows is None
            else _validate.integer(chunk_rows, "chunk_rows", field, minimum=1)
        ),
        threads=(
            default_threads()
            if threads is None
            else _validate.integer(threads, "threads", field, minimum=1)
        ),
    )


def fit(
    vectors: npt.NDArray[np.float32],
    k: int,
    *,
    init: str | npt.NDArray[np.float32],
    counts: npt.NDArray[np.integer] | None,
    seed: int,
    max_iter: int,
    tol: float,
    chunk_rows: int | None,
    threads: int,
    weights: npt.NDArray[np.float64] | None = None,
) -> KMeansResult:
    """:func:`kmeans` on already validated input.

    ``weights``, float64 (n,) >= 0 or None, makes each centroid the weighted mean of its
    rows (count-weighted k-means: a row seen 100 times pulls its centroid as 100 copies
    of it would), and k-means++ seeding weighted the same way (scikit-learn's
    ``sample_weight``). The reported inertia stays unweighted.
    """
    n, dim = vectors.shape
    # Working relative to the mean keeps norms small, and with them the float32 rounding
    # of ||x||^2 - 2 x.c + ||c||^2. The trailing column of ones folds ||c||^2 into the
    # sgemm (see compress.assign); building it once serves every iteration.
    origin = vectors.mean(axis=0, dtype=np.float64)
    rows_aug = np.empty((n, dim + 1), dtype=np.float32)
    shifted = rows_aug[:, :dim]
    np.subtract(vectors, origin.astype(np.float32), out=shifted)
    rows_aug[:, dim] = 1.0
    sqnorm = np.einsum("ij,ij->i", shifted, shifted)
    # np.bincount sums float64 weights; handing it contiguous float64 columns saves it a
    # conversion per column and iteration (a third of the M-step at dim 17). Copied in
    # blocks of rows: one strided transpose of the whole table measured 3x slower.
    columns = np.empty((dim, n), dtype=np.float64)
    for start in range(0, n, _TRANSPOSE_ROWS):
        columns[:, start : start + _TRANSPOSE_ROWS] = shifted[start : start + _TRANSPOSE_ROWS].T
    if weights is not None:
        # Weighted sums per cluster come from the same bincount over pre-scaled columns.
        weighted_columns = columns * weights
    # mean(var(x, axis=0)) as scikit-learn scales tol: the rows are centred already.
    tol_abs = tol * float(sqnorm.sum(dtype=np.float64)) / (n * dim)

    if isinstance(init, str):
        rng = np.random.default_rng(seed)
        row_weights = None
        if weights is not None and weights.sum() > 0:
            row_weights = weights.astype(np.float32)
        centres = shifted[initial_rows(shifted, k, init, counts, rng, threads=threads, row_weights=row_weights)]
    else:
        centres = (init.astype(np.float64) - origin).astype(np.float32)

    labels = np.empty(n, dtype=np.intp)
    spare = np.empty(n, dtype=np.intp)
    sqdist = np.empty(n, dtype=np.float32)
    no_shift = np.zeros(dim, dtype=np.float32)

    def prepare(start: int, stop: int, scratch: Scratch) -> tuple[
        npt.NDArray[np.float32], npt.NDArray[np.float32]
    ]:
        return rows_aug[start:stop], sqnorm[start:stop]

    assigner = Assigner(dim, k, chunk_rows=chunk_rows, threads=threads)

    def e_step(centres: npt.NDArray[np.float32], labels_out: npt.NDArray[np.intp]) -> None:
        assigner.run(n, prepare, augmented_centroids(centres, no_shift), labels_out, sqdist)

    with assigner:
        e_step(centres, labels)
        n_iter = 0
        converged = False
        while n_iter < max_iter:
            updated = m_step(columns, labels, sqdist, centres)
            if weights is not None:
                updated = weighted_means(weighted_columns, weights, labels, updated)
            n_iter += 1
            shift = float(np.square(updated.astype(np.float64) - centres).sum())
            centres = updated
            # The E-step after every update keeps labels and inertia true to the centroids
            # returned, whichever rule stops the loop.
            e_step(centres, spare)
            unchanged = np.array_equal(spare, labels)
            labels, spare = spare, labels
            if unchanged or shift <= tol_abs:
                converged = True
                break

    return KMeansResult(
        centroids=(centres.astype(np.float64) + origin).astype(np.float32),
        labels=labels.astype(label_dtype(k)),
        inertia=float(sqdist.sum(dtype=np.float64)),
        n_iter=n_iter,
        converged=converged,
    )


def m_step(
    columns: npt.NDArray[np.float64],
    labels: npt.NDArray[np.intp],
    sqdist: npt.NDArray[np.float32],
    centres: npt.NDArray[np.float32],
) -> npt.NDArray[np.float32]:
    """New centroids as the means of their rows, re-seeding empty clusters first.

    Equal centroids are merged first (their rows go to the first copy) and the other
    copies count as empty. Empty clusters take the rows farthest from their own centroids
    (farthest first, ties to the lower row), as scikit-learn does, with two guards it
    lacks: the rows chosen are
    distinct from each other (a far point repeated 50 times re-seeds one cluster, not 50
    copies of the same centroid), and a row whose distance to its centroid is only float32
    rounding is not taken (it sits on an existing centroid). The rows leave their old
    clusters; ``labels`` is updated in place to match.

    Args:
        columns: float64 (dim, n), the rows transposed.
        labels: intp (n,), each row's cluster; modified for re-seeded rows.
        sqdist: float32 (n,), each row's squared distance to its cluster's centroid.
        centres: float32 (k, dim), the centroids the labels were computed against.

    Returns:
        float32 (k, dim). A cluster still empty (no distinct row left off the existing
        centroids) keeps its centroid from ``centres``.
    """
    k, dim = centres.shape
    # Equal centroids split their rows by BLAS rounding (an sgemm may round one column
    # differently from an equal one) and would stay equal for ever: the rows of every
    # copy but the first go to the first, and the copies are re-seeded as empty.
    _, first, inverse = np.unique(centres, axis=0, return_index=True, return_inverse=True)
    if first.size < k:
        labels[:] = first[inverse.reshape(-1)][labels]
    sizes = np.bincount(labels, minlength=k)
    empty = np.flatnonzero(sizes == 0)
    if empty.size:
        far = reseed_rows(columns, labels, sqdist, centres, empty.size)
        labels[far] = empty[: far.size]
        sizes = np.bincount(labels, minlength=k)
    sums = np.empty((k, dim), dtype=np.float64)
    for j in range(dim):
        sums[:, j] = np.bincount(labels, weights=columns[j], minlength=k)
    updated = centres.copy()
    filled = sizes > 0
    updated[filled] = sums[filled] / sizes[filled, None]
    return updated


def weighted_means(
    weighted_columns: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    labels: npt.NDArray[np.intp],
    centres: npt.NDArray[np.float32],
) -> npt.NDArray[np.float32]:
    """Weighted centroids for the labels :func:`m_step` settled (empty clusters re-seeded).

    Args:
        weighted_columns: float64 (dim, n), the rows transposed, each scaled by its weight.
        weights: float64 (n,), >= 0.
        labels: intp (n,), each row's cluster after :func:`m_step`.
        centres: float32 (k, dim), :func:`m_step`'s unweighted means.

    Returns:
        float32 (k, dim): the weighted mean of each cluster whose rows weigh more than 0;
        a cluster of weightless rows keeps its unweighted mean from ``centres``.
    """
    k, dim = centres.shape
    mass = np.bincount(labels, weights=weights, minlength=k)
    sums = np.empty((k, dim), dtype=np.float64)
    for j in range(dim):
        sums[:, j] = np.bincount(labels, weights=weighted_columns[j], minlength=k)
    updated = centres.copy()
    heavy = mass > 0
    updated[heavy] = sums[heavy] / mass[heavy, None]
    return updated


# A row whose exact squared distance to its centroid is below this fraction of their
# squared norms is on the centroid: float32 storage of the centroid alone leaves ~1e-14.
_ON_CENTROID = 1e-10


def reseed_rows(
    columns: npt.NDArray[np.float64],
    labels: npt.NDArray[np.intp],
    sqdist: npt.NDArray[np.float32],
    centres: npt.NDArray[np.float32],
    wanted: int,
) -> npt.NDArray[np.intp]:
    """Up to ``wanted`` distinct rows off their centroids, farthest first.

    The E-step's float32 distances rank the candidates; their float64 distances decide
    which are truly off their centroid. Candidates are examined in growing batches (4x
    ``wanted``, doubling) so that a far point repeated many times cannot crowd out the
    next distinct one, while the common case touches only a few rows.

    Returns:
        intp (m,), m <= wanted: row indices, farthest first, ties to the lower row.
    """
    n = labels.shape[0]
    batch = min(n, 4 * wanted)
    while True:
        cand = top_rows(sqdist, batch)
        diff = columns[:, cand].T - centres[labels[cand]].astype(np.float64)
        exact = np.einsum("ij,ij->i", diff, diff)
        scale = np.einsum("ij,ij->i", columns[:, cand].T, columns[:, cand].T)
        scale += np.square(centres[labels[cand]], dtype=np.float64).sum(axis=1)
        off = exact > _ON_CENTROID * scale
        cand, exact = cand[off], exact[off]
        cand = cand[np.lexsort((cand, -exact))]
        # First occurrence of each distinct row, in the order just set.
        _, first = np.unique(columns[:, cand].T, axis=0, return_index=True)
        chosen = cand[np.sort(first)][:wanted]
        if chosen.size == wanted or batch == n:
            return chosen
        batch = min(n, 2 * batch)
