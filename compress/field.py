"""Compressing one field's embedding table (paper 2.2.1 and 2.4).

A field large enough is clustered into a codebook of k rows plus one mask (cluster id)
per feature; a smaller one is left dense, as the paper only compresses fields of at least
``min_factor * k`` features. Fast clustering runs k-means on the ``top_n`` most frequent
rows only, then assigns every row of the field to its nearest centroid.

A *frequency head* (``private_rows``) keeps the most frequent features out of the
clustering: each gets a private codebook row holding its own vector, after the k shared
centroids, so the features that carry the most signal are not merged with others. The
result is the same codebook-plus-masks format (k + private_rows rows, masks uint16 once
that exceeds 256), which the store serves unchanged.

``weight_by_count`` makes k-means weight each feature by its count, so centroids sit where
the traffic is rather than where the features are. ``subvectors`` (M > 1) is product
quantisation: each of M equal slices of the vectors gets its own codebook of k rows and
each feature one mask byte per slice (:class:`ProductField`); Saec is M = 1.
``stages`` (S > 1) is residual quantisation: S codebooks of k rows over the whole vector,
stage s fitted to what stages ``< s`` left over, and a feature reads the sum of its S rows
(:class:`ResidualField`). At the same mask bytes as M = S slices it holds S full-length
codebooks instead of one cut into slices, which is where it gains.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from saec.compress import _validate
from saec.compress._rank import largest_rows
from saec.compress.assign import assign_rows, default_threads, label_dtype
from saec.compress.errors import InvalidParameterError
from saec.compress.init import INIT_METHODS
from saec.compress.kmeans import check_init, fit

DEFAULT_MIN_FACTOR = 100
DEFAULT_TOP_N = 100_000
# Masks are stored as uint16 at most.
MAX_K = 1 << 16


@dataclass(frozen=True, eq=False)
class CompressedField:
    """A field as a codebook plus one mask per row.

    Attributes:
        codebook: float32 (k, dim), the representative vectors.
        masks: uint8 (n,) for k <= 256, else uint16; row i's vector is
            ``codebook[masks[i]]``. Aligned with the input rows.
        inertia: sum over all n rows (not only the clustered ones) of the squared distance
            to their centroid, accumulated in float64.
        n_iter: k-means centroid updates performed.
        seconds: wall time of the call: input checks, clustering and assignment.
        init: the initialisation used: "kmeans++", "random" or "topk".
        clustered: rows k-means ran on (min(top_n, n), or n for full clustering).
        private_rows: features with a private codebook row (rows ``k..k + private_rows - 1``
            of the codebook, after the k shared centroids).
    """

    codebook: npt.NDArray[np.float32]
    masks: npt.NDArray[np.uint8] | npt.NDArray[np.uint16]
    inertia: float
    n_iter: int
    seconds: float
    init: str
    clustered: int
    private_rows: int = 0


@dataclass(frozen=True, eq=False)
class ProductField:
    """A field as M sub-codebooks plus M masks per row (product quantisation).

    Attributes:
        codebooks: float32 (M, k, dim / M): slice m of row i's vector is
            ``codebooks[m, masks[i, m]]``; the vector is the M slices concatenated.
        masks: uint8 (n, M) for k <= 256, else uint16. Aligned with the input rows.
        inertia: sum over all n rows of the squared distance to their reconstruction,
            accumulated in float64.
        n_iter: k-means centroid updates, summed over the M slices.
        seconds: wall time of the call.
        init: the initialisation used in every slice.
        clustered: rows k-means ran on per slice.
        private_rows: features with a private row (rows ``k..k + private_rows - 1`` of every
            slice's codebook, the same row in each, so they read back their own vector).
    """

    codebooks: npt.NDArray[np.float32]
    masks: npt.NDArray[np.uint8] | npt.NDArray[np.uint16]
    inertia: float
    n_iter: int
    seconds: float
    init: str
    clustered: int
    private_rows: int = 0

    @property
    def subvectors(self) -> int:
        return int(self.codebooks.shape[0])

    def vectors(self) -> npt.NDArray[np.float32]:
        """float32 (n, dim): every row's reconstruction."""
        m = np.arange(self.subvectors)
        return self.codebooks[m, self.masks.astype(np.intp)].reshape(len(self.masks), -1)


@dataclass(frozen=True, eq=False)
class ResidualField:
    """A field as S codebooks over the whole vector plus S masks per row (residual quantisation).

    Attributes:
        codebooks: float32 (S, k, dim): row i's vector is ``sum over s of codebooks[s,
            masks[i, s]]``, added in stage order in float32 (what :meth:`vectors` and the
            store's kernel both do, so they agree bit for bit).
        masks: uint8 (n, S) for k <= 256, else uint16. Aligned with the input rows.
        inertia: sum over all n rows of the squared distance to their reconstruction,
            accumulated in float64.
        n_iter: k-means centroid updates, summed over the S stages.
        seconds: wall time of the call.
        init: the initialisation used in every stage.
        clustered: rows k-means ran on per stage.
    """

    codebooks: npt.NDArray[np.float32]
    masks: npt.NDArray[np.uint8] | npt.NDArray[np.uint16]
    inertia: float
    n_iter: int
    seconds: float
    init: str
    clustered: int

    @property
    def stages(self) -> int:
        return int(self.codebooks.shape[0])

    def vectors(self) -> npt.NDArray[np.float32]:
        """float32 (n, dim): every row's reconstruction, stage 0 first."""
        out = self.codebooks[0][self.masks[:, 0].astype(np.intp)]
        for s in range(1, self.stages):
            out += self.codebooks[s][self.masks[:, s].astype(np.intp)]
        return out


@dataclass(frozen=True, eq=False)
class DenseField:
    """A field left uncompressed.

    Attributes:
        vectors: float32 (n, dim), the input array itself (not a copy).
        reason: why it was not compressed, for logs and reports.
    """

    vectors: npt.NDArray[np.float32]
    reason: str


def min_rows_to_compress(k: int, min_factor: int = DEFAULT_MIN_FACTOR) -> int:
    """Fewest rows a field needs to be compressed into k centroids: ``min_factor * k``."""
    return min_factor * k


def compress_field(
    vectors: npt.NDArray[np.float32],
    counts: npt.NDArray[np.integer] | None,
    *,
    k: int = 100,
    init: str = "kmeans++",
    top_n: int | None = DEFAULT_TOP_N,
    min_factor: int = DEFAULT_MIN_FACTOR,
    seed: int = 0,
    max_iter: int = 50,
    tol: float = 1e-4,
    private_rows: int = 0,
    weight_by_count: bool = False,
    subvectors: int = 1,
    stages: int = 1,
    field: str = "",
) -> CompressedField | ProductField | ResidualField | DenseField:
    """Compress one field's table, or explain why it stays dense.

    Args:
        vectors: float32 (n, dim), finite; row i is feature i's embedding.
        counts: integer (n,) feature frequencies, >= 0, or None. They choose the rows
            fast clustering runs on and the "topk" initial centroids.
        k: codebook rows, 1..65536.
        init: "kmeans++" (default, as in the paper), "random" or "topk" (needs counts).
        top_n: cluster only the top_n most frequent rows (ties to the lower row; the first
            top_n rows when counts is None), then assign all rows. None clusters all rows.
            Must be >= k.
        min_factor: a field of fewer than ``min_factor * k`` rows stays dense; >= 0.
        seed: seeds every random draw; the same seed gives the same arrays.
        max_iter: cap on k-means iterations, >= 1.
        tol: k-means relative tolerance on the centroid shift (scikit-learn's meaning).
        private_rows: the most frequent features (ties to the lower row; the first rows
            when counts is None) that keep their own vector as a private codebook row
            instead of sharing a centroid; at most ``n - k`` are taken. ``k +
            private_rows`` <= 65536.
        weight_by_count: each centroid is the count-weighted mean of its features (needs
            counts), so it sits where the traffic is; k-means++ seeding is weighted too.
        subvectors: M >= 1 dividing dim; M > 1 is product quantisation (a codebook of k
            rows per slice of dim / M values, one mask per slice). With ``private_rows`` each
            slice's codebook has k + private_rows rows, and a head feature's private row is
            the same row in every slice.
        stages: S >= 1; S > 1 is residual quantisation (S codebooks of k rows over the
            whole vector, each fitted to what the earlier stages left, one mask per stage);
            it takes neither subvectors > 1 nor private_rows.
        field: the field's name, used in messages.

    Returns:
        CompressedField (M = S = 1), ProductField (M > 1), ResidualField (S > 1), or DenseField when n <
        min_factor * k. A CompressedField's codebook holds the k centroids, then the
        private rows.

    Raises:
        CompressError: on bad input or parameters (see :mod:`compress.errors`), the
            message naming the field.
    """
    started = time.perf_counter()
    vectors = _validate.vectors(vectors, field)
    n, dim = vectors.shape
    counts = _validate.counts(counts, n, field)
    k = _validate.integer(k, "k", field, minimum=1)
    if k > MAX_K:
        raise InvalidParameterError(
            f"{_validate.where(field)}: expected k <= {MAX_K} (masks are uint16 at most), got k={k}"
        )
    if not isinstance(init, str):
        raise InvalidParameterError(
            f"{_validate.where(field)}: expected init as a string, got {type(init).__name__}"
        )
    if init not in INIT_METHODS:
        init = check_init(init, k, dim, counts, field)  # raises, naming the methods
    if top_n is not None:
        top_n = _validate.integer(top_n, "top_n", field, minimum=1)
    min_factor = _validate.integer(min_factor, "min_factor", field, minimum=0)
    seed = _validate.integer(seed, "seed", field, minimum=0)
    max_iter = _validate.integer(max_iter, "max_iter", field, minimum=1)
    tol = _validate.tolerance(tol, field)
    private_rows = _validate.integer(private_rows, "private_rows", field, minimum=0)
    if k + private_rows > MAX_K:
        raise InvalidParameterError(
            f"{_validate.where(field)}: expected k + private_rows <= {MAX_K} (masks are uint16 at "
            f"most), got k={k}, private_rows={private_rows}"
        )

    if not isinstance(weight_by_count, bool):
        raise InvalidParameterError(
            f"{_validate.where(field)}: expected weight_by_count True or False, got {weight_by_count!r}"
        )
    subvectors = _validate.integer(subvectors, "subvectors", field, minimum=1)
    stages = _validate.integer(stages, "stages", field, minimum=1)
    if stages > 1 and (subvectors > 1 or private_rows):
        raise InvalidParameterError(
            f"{_validate.where(field)}: residual quantisation (stages > 1) takes subvectors=1 and "
            f"private_rows=0, got stages={stages}, subvectors={subvectors}, private_rows={private_rows}"
        )

    needed = min_rows_to_compress(k, min_factor)
    if n < needed:
        # A field that stays dense is never clustered: what init needs (counts for
        # "topk") does not matter for it, so a run over many fields does not fail on it.
        return DenseField(
            vectors=vectors,
            reason=f"{n} rows, fewer than min_factor * k = {min_factor} * {k} = {needed}",
        )
    init = check_init(init, k, dim, counts, field)
    if weight_by_count and counts is None:
        # Checked only here, as init="topk" is: a field that stays dense needs no counts,
        # nor a dim the slices divide, so one setting serves a run over many fields.
        raise InvalidParameterError(
            f"{_validate.where(field)}: weight_by_count=True weights features by their counts and "
            f"expected counts, got counts=None"
        )
    if dim % subvectors:
        raise InvalidParameterError(
            f"{_validate.where(field)}: expected subvectors dividing dim={dim}, got subvectors={subvectors}"
        )
    _validate.k_for_rows(k, n, field)
    if top_n is not None and top_n < k:
        raise InvalidParameterError(
            f"{_validate.where(field)}: expected top_n >= k ({k}) or None, got top_n={top_n}"
        )

    threads = default_threads()
    weighted = weight_by_count
    private_rows = min(private_rows, n - k)
    if stages > 1:
        return _residual(vectors, counts, k, init, top_n, seed, max_iter, tol, threads, stages, weighted, started)
    if subvectors > 1:
        return _product(vectors, counts, k, init, top_n, seed, max_iter, tol, threads, subvectors,
                        weighted, private_rows, started)
    if private_rows == 0:
        centroids, masks, inertia, n_iter, clustered = _cluster(
            vectors, counts, k, init, top_n, seed, max_iter, tol, threads, weighted
        )
        codebook = centroids
    else:
        head, rest = _split_head(counts, private_rows, n)
        centroids, labels, inertia, n_iter, clustered = _cluster(
            vectors[rest], None if counts is None else counts[rest], k, init, top_n, seed,
            max_iter, tol, threads, weighted,
        )
        codebook = np.concatenate([centroids, vectors[head]])
        masks = np.empty(n, dtype=label_dtype(k + private_rows))
        masks[rest] = labels
        masks[head] = np.arange(k, k + private_rows)

    return CompressedField(
        codebook=codebook,
        masks=masks,
        inertia=inertia,
        n_iter=n_iter,
        seconds=time.perf_counter() - started,
        init=init,
        clustered=clustered,
        private_rows=private_rows,
    )


def _split_head(
    counts: npt.NDArray[np.integer] | None, private_rows: int, n: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """The frequency head's rows (the ``private_rows`` most frequent, or the first rows
    without counts) and a bool (n,) mask of every other row."""
    head = largest_rows(counts, private_rows) if counts is not None else np.arange(private_rows)
    rest = np.ones(n, dtype=bool)
    rest[head] = False
    return head, rest


def _cluster(
    vectors: npt.NDArray[np.float32],
    counts: npt.NDArray[np.integer] | None,
    k: int,
    init: str,
    top_n: int | None,
    seed: int,
    max_iter: int,
    tol: float,
    threads: int,
    weighted: bool = False,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.unsignedinteger], float, int, int]:
    """k-means over all rows, or over the top_n most frequent then assignment of all.

    ``weighted``: centroids are count-weighted means (counts is then not None).

    Returns:
        float32 (k, dim) centroids, (n,) labels of :func:`label_dtype` (k), inertia over
        all rows, centroid updates, rows clustered.
    """
    n = vectors.shape[0]
    if top_n is None or top_n >= n:
        result = fit(vectors, k, init=init, counts=counts, seed=seed, max_iter=max_iter, tol=tol,
                     chunk_rows=None, threads=threads, weights=_weights(counts, weighted))
        return result.centroids, result.labels, result.inertia, result.n_iter, n
    rows = largest_rows(counts, top_n) if counts is not None else np.arange(top_n)
    result = fit(
        vectors[rows],
        k,
        init=init,
        counts=None if counts is None else counts[rows],
        seed=seed,
        max_iter=max_iter,
        tol=tol,
        chunk_rows=None,
        threads=threads,
        weights=_weights(None if counts is None else counts[rows], weighted),
    )
    masks = np.empty(n, dtype=label_dtype(k))
    sqdist = np.empty(n, dtype=np.float32)
    assign_rows(vectors, result.centroids, masks, sqdist, threads=threads)
    return result.centroids, masks, float(sqdist.sum(dtype=np.float64)), result.n_iter, top_n


def _weights(counts: npt.NDArray[np.integer] | None, weighted: bool) -> npt.NDArray[np.float64] | None:
    """float64 (n,) k-means weights (the counts) when weighting is asked for, else None."""
    if not weighted or counts is None:
        return None
    return counts.astype(np.float64)


def _product(
    vectors: npt.NDArray[np.float32],
    counts: npt.NDArray[np.integer] | None,
    k: int,
    init: str,
    top_n: int | None,
    seed: int,
    max_iter: int,
    tol: float,
    threads: int,
    subvectors: int,
    weighted: bool,
    private_rows: int,
    started: float,
) -> ProductField:
    """Product quantisation: :func:`_cluster` on each of ``subvectors`` column slices.

    Slice m is seeded with ``seed + m`` so the slices do not share k-means++ draws. With a
    frequency head, the ``private_rows`` most frequent features are left out of every
    slice's clustering and get rows ``k..k + private_rows - 1`` of every slice's codebook:
    the same private row in each slice, so their vectors are kept whole.
    """
    n, dim = vectors.shape
    width = dim // subvectors
    rows = k + private_rows
    codebooks = np.empty((subvectors, rows, width), dtype=np.float32)
    masks = np.empty((n, subvectors), dtype=label_dtype(rows))
    rest: npt.NDArray[np.bool_] | slice = slice(None)
    if private_rows:
        head, rest = _split_head(counts, private_rows, n)
        masks[head] = np.arange(k, rows)[:, None]
        codebooks[:, k:] = vectors[head].reshape(private_rows, subvectors, width).transpose(1, 0, 2)
    clustered_counts = None if counts is None else counts[rest]
    inertia, n_iter, clustered = 0.0, 0, 0
    for m in range(subvectors):
        part = np.ascontiguousarray(vectors[rest, m * width : (m + 1) * width])
        centroids, labels, part_inertia, part_iter, clustered = _cluster(
            part, clustered_counts, k, init, top_n, seed + m, max_iter, tol, threads, weighted
        )
        codebooks[m, :k] = centroids
        masks[rest, m] = labels
        # Squared distances add over disjoint column slices.
        inertia += part_inertia
        n_iter += part_iter
    return ProductField(
        codebooks=codebooks,
        masks=masks,
        inertia=inertia,
        n_iter=n_iter,
        seconds=time.perf_counter() - started,
        init=init,
        clustered=clustered,
        private_rows=private_rows,
    )


def _residual(
    vectors: npt.NDArray[np.float32],
    counts: npt.NDArray[np.integer] | None,
    k: int,
    init: str,
    top_n: int | None,
    seed: int,
    max_iter: int,
    tol: float,
    threads: int,
    stages: int,
    weighted: bool,
    started: float,
) -> ResidualField:
    """Residual quantisation: :func:`_cluster` on what the earlier stages left over.

    Stage s is seeded with ``seed + 101 * s``. What is left is recomputed from the
    reconstruction as served (stage sums in float32), so the last stage's inertia is the
    served error.
    """
    n, dim = vectors.shape
    codebooks = np.empty((stages, k, dim), dtype=np.float32)
    masks = np.empty((n, stages), dtype=label_dtype(k))
    built = np.zeros((n, dim), dtype=np.float32)
    n_iter, clustered, inertia = 0, 0, 0.0
    for s in range(stages):
        left = vectors - built
        centroids, labels, inertia, part_iter, clustered = _cluster(
            left, counts, k, init, top_n, seed + 101 * s, max_iter, tol, threads, weighted
        )
        codebooks[s] = centroids
        masks[:, s] = labels
        built += centroids[labels.astype(np.intp)]
        n_iter += part_iter
    return ResidualField(
        codebooks=codebooks,
        masks=masks,
        inertia=inertia,
        n_iter=n_iter,
        seconds=time.perf_counter() - started,
        init=init,
        clustered=clustered,
    )
