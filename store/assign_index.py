"""Nearest centroid of new vectors: an hnswlib index over a field's codebook, or exact.

Every update of a compressed field is stored as one mask, the id of the codebook row
nearest to the vector (squared L2, the distance k-means minimised). HNSW answers in
time that grows about with log k; the exact search (one BLAS matrix product against
the whole codebook, then argmin) grows with k. ``bench/updates.py`` measures both over
k = 256 ... 65,536 and dims 9 ... 64; from that table:

- ``EXACT_MAX_K``: up to this k the exact search is faster than HNSW at the recall HNSW
  needs, so it is used there (k <= 256 is the uint8-mask case: most fields);
- above it HNSW with ``M`` and ``EF`` below, recall@1 >= 0.995 in the table.

The index is built on the first update of a field (a snapshot opens without it) and
kept with the snapshot's engine.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Method = Literal["auto", "hnsw", "exact"]

# From bench/results/updates.md (see there for the figures).
EXACT_MAX_K = 1024
M = 16
EF_CONSTRUCTION = 200
EF = 64
# Rows of the exact search's distance block: bounds its memory to ~16 MiB of float32.
_BLOCK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class Assignment:
    """Nearest centroids of a batch.

    Attributes:
        masks: int64 (n,), codebook rows.
        distances: float32 (n,), squared L2 distance of each vector to its centroid.
    """

    masks: npt.NDArray[np.int64]
    distances: npt.NDArray[np.float32]


def exact_nearest(codebook: npt.NDArray[np.float32], vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    """Row of ``codebook`` (float32 (k, dim)) nearest each of ``vectors`` (float32 (n, dim)).

    ``|x - c|^2 = |x|^2 - 2 x.c + |c|^2``, and ``|x|^2`` does not change the argmin, so
    one float32 GEMM per block of rows does the work.
    """
    k = codebook.shape[0]
    norms = np.einsum("ij,ij->i", codebook, codebook)
    out = np.empty(vectors.shape[0], np.int64)
    step = max(1, _BLOCK_ELEMENTS // k)
    for start in range(0, vectors.shape[0], step):
        block = vectors[start : start + step]
        scores = block @ codebook.T
        scores *= -2.0
        scores += norms
        out[start : start + step] = scores.argmin(axis=1)
    return out


def squared_distances(
    codebook: npt.NDArray[np.float32], vectors: npt.NDArray[np.float32], masks: npt.NDArray[np.integer]
) -> npt.NDArray[np.float32]:
    """float32 (n,): ``|vectors[i] - codebook[masks[i]]|^2``."""
    diff = vectors - np.take(codebook, masks, axis=0)
    return np.einsum("ij,ij->i", diff, diff)


class CentroidIndex:
    """Assigns vectors to their nearest codebook row.

    Args:
        codebook: float32 (k, dim).
        method: "auto" (exact up to ``EXACT_MAX_K``, HNSW above), "hnsw" or "exact".
        ef, m, ef_construction: HNSW parameters.
        threads: threads of one HNSW query batch.
    """

    def __init__(
        self,
        codebook: npt.NDArray[np.float32],
        *,
        method: Method = "auto",
        ef: int = EF,
        m: int = M,
        ef_construction: int = EF_CONSTRUCTION,
        threads: int = 1,
    ) -> None:
        if method not in ("auto", "hnsw", "exact"):
            raise ValueError(f"expected method 'auto', 'hnsw' or 'exact', got {method!r}")
        self.codebook = np.ascontiguousarray(codebook, dtype=np.float32)
        k, dim = self.codebook.shape
        self.method: Method = ("exact" if k <= EXACT_MAX_K else "hnsw") if method == "auto" else method
        self.threads = threads
        self.build_seconds = 0.0
        self._hnsw = None
        if self.method == "hnsw":
            import hnswlib

            t0 = time.perf_counter()
            index = hnswlib.Index(space="l2", dim=dim)
            index.init_index(max_elements=k, ef_construction=ef_construction, M=m, random_seed=0)
            index.add_items(self.codebook, np.arange(k), num_threads=threads)
            index.set_ef(ef)
            self._hnsw = index
            self.build_seconds = time.perf_counter() - t0

    def nearest(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
        """int64 (n,): the assigned codebook row of each of ``vectors`` (float32 (n, dim))."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape[0] == 0:
            return np.empty(0, np.int64)
        if self._hnsw is None:
            return exact_nearest(self.codebook, vectors)
        labels, _ = self._hnsw.knn_query(vectors, k=1, num_threads=self.threads)
        return labels[:, 0].astype(np.int64)

    def assign(self, vectors: npt.NDArray[np.float32]) -> Assignment:
        """Nearest rows and the squared distance to them (computed exactly, whatever the search)."""
        masks = self.nearest(vectors)
        return Assignment(masks=masks, distances=squared_distances(self.codebook, vectors, masks))


class IndexCache:
    """One :class:`CentroidIndex` per field of one snapshot, built on first use."""

    def __init__(self, method: Method = "auto") -> None:
        self.method = method
        self._lock = threading.Lock()
        self._indexes: dict[str, CentroidIndex] = {}

    def get(self, name: str, codebook: npt.NDArray[np.float32]) -> CentroidIndex:
        with self._lock:
            index = self._indexes.get(name)
            if index is None:
                index = self._indexes[name] = CentroidIndex(codebook, method=self.method)
            return index
