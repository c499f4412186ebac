"""Nearest centroid of new vectors: an hnswlib index over a field's codebook, or exact.

Every update of a compressed field is stored as one mask, the id of the codebook row
nearest to the vector (squared L2, the distance k-means minimised). HNSW answers in
time that grows about with log k; the exact search (one BLAS matrix product against
the whole codebook, then argmin) grows with k. ``bench/updates.py`` measures both over
k = 256 ... 65,536 and dims 9 ... 64; from that table:

- up to k = 1,024 the exact search is 2.5-14x faster than HNSW at the ef that reaches
  recall@1 0.995 (every field with uint8 masks); at k = 4,096 they are within 3x either
  way; the exact search is used up to there;
- from k = 16,384 (``HNSW_MIN_K``) at dim <= 32 (``HNSW_MAX_DIM``) HNSW with ``M`` and
  ``EF`` below is 2-6x faster than the exact search at recall@1 >= 0.995;
- at dim 64 HNSW needs ef = 256 at k = 16,384 and does not reach 0.995 at k = 65,536 on
  random codebooks, while the exact search's cost grows more slowly with dim: exact there.

The HNSW index is built on a background thread when a field first receives an update (a
snapshot opens without it, in milliseconds); until it is ready the exact search answers.
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
HNSW_MIN_K = 16_384
HNSW_MAX_DIM = 32
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


def uses_hnsw(k: int, dim: int) -> bool:
    """Whether "auto" picks HNSW for a codebook of ``k`` rows of ``dim`` (see the module docstring)."""
    return k >= HNSW_MIN_K and dim <= HNSW_MAX_DIM


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
        method: "auto" (HNSW where :func:`uses_hnsw`, else exact), "hnsw" or "exact".
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
        self.method: Method = ("hnsw" if uses_hnsw(k, dim) else "exact") if method == "auto" else method
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
    """One :class:`CentroidIndex` per field of one snapshot.

    An HNSW index over a large codebook takes seconds to build (``bench/updates.py``), so it
    is built on a background thread started by the field's first update; until it is
    ready, that field's updates use the exact search, which gives the same masks (it is
    the reference HNSW's recall is measured against), only slower.

    Args:
        method: as :class:`CentroidIndex`.
        background: build HNSW indexes on a thread (False: build in the caller, e.g. tests).
    """

    def __init__(self, method: Method = "auto", *, background: bool = True) -> None:
        self.method = method
        self.background = background
        self._lock = threading.Lock()
        self._indexes: dict[str, CentroidIndex] = {}
        self._exact: dict[str, CentroidIndex] = {}
        self._building: set[str] = set()

    def get(self, name: str, codebook: npt.NDArray[np.float32]) -> CentroidIndex:
        with self._lock:
            index = self._indexes.get(name)
            if index is not None:
                return index
            wants_hnsw = self.method == "hnsw" or (self.method == "auto" and uses_hnsw(*codebook.shape))
            if not wants_hnsw or not self.background:
                index = self._indexes[name] = CentroidIndex(codebook, method=self.method)
                return index
            if name not in self._building:
                self._building.add(name)
                threading.Thread(target=self._build, args=(name, codebook), name=f"saec-hnsw-{name}", daemon=True).start()
            exact = self._exact.get(name)
            if exact is None:
                exact = self._exact[name] = CentroidIndex(codebook, method="exact")
            return exact

    def _build(self, name: str, codebook: npt.NDArray[np.float32]) -> None:
        index = CentroidIndex(codebook, method="hnsw")
        with self._lock:
            self._indexes[name] = index
            self._exact.pop(name, None)

    def wait(self, timeout: float = 600.0) -> None:
        """Until every started build has finished (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._building <= set(self._indexes):
                    return
            time.sleep(0.01)
