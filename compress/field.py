"""Compressing one field's embedding table (paper 2.2.1 and 2.4).

A field large enough is clustered into a codebook of k rows plus one mask (cluster id)
per feature; a smaller one is left dense, as the paper only compresses fields of at least
``min_factor * k`` features. Fast clustering runs k-means on the ``top_n`` most frequent
rows only, then assigns every row of the field to its nearest centroid.
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
    """

    codebook: npt.NDArray[np.float32]
    masks: npt.NDArray[np.uint8] | npt.NDArray[np.uint16]
    inertia: float
    n_iter: int
    seconds: float
    init: str
    clustered: int


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
    field: str = "",
) -> CompressedField | DenseField:
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
        field: the field's name, used in messages.

    Returns:
        CompressedField, or DenseField when n < min_factor * k.

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

    needed = min_rows_to_compress(k, min_factor)
    if n < needed:
        # A field that stays dense is never clustered: what init needs (counts for
        # "topk") does not matter for it, so a run over many fields does not fail on it.
        return DenseField(
            vectors=vectors,
            reason=f"{n} rows, fewer than min_factor * k = {min_factor} * {k} = {needed}",
        )
    init = check_init(init, k, dim, counts, field)
    _validate.k_for_rows(k, n, field)
    if top_n is not None and top_n < k:
        raise InvalidParameterError(
            f"{_validate.where(field)}: expected top_n >= k ({k}) or None, got top_n={top_n}"
        )

    threads = default_threads()
    if top_n is None or top_n >= n:
        result = fit(
            vectors,
            k,
            init=init,
            counts=counts,
            seed=seed,
            max_iter=max_iter,
            tol=tol,
            chunk_rows=None,
            threads=threads,
        )
        masks, inertia, clustered = result.labels, result.inertia, n
    else:
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
        )
        masks = np.empty(n, dtype=label_dtype(k))
        sqdist = np.empty(n, dtype=np.float32)
        assign_rows(vectors, result.centroids, masks, sqdist, threads=threads)
        inertia, clustered = float(sqdist.sum(dtype=np.float64)), top_n

    return CompressedField(
        codebook=result.centroids,
        masks=masks,
        inertia=inertia,
        n_iter=result.n_iter,
        seconds=time.perf_counter() - started,
        init=init,
        clustered=clustered,
    )
