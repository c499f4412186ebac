"""Nearest centroid of new vectors: the snapshot's HNSW index over a codebook, or exact.

Every update of a compressed field is stored as one mask, the id of the codebook row
nearest to the vector (squared L2, the distance k-means minimised). Two searches:

- exact: one BLAS product against the whole codebook, then argmin, spread over the
  cores (:class:`ExactSearch`), cost growing with k;
- HNSW: an hnswlib graph over the codebook, cost growing about with log k. A graph
  search goes astray on vectors far from every centroid (10x the table's norm, clusters
  the codebook never saw, noise): an answer farther from its centroid than any vector
  near the codebook lies from its nearest (``exact_beyond``, measured at build) is
  searched again exactly, so such vectors cost an exact search and get its answer.

The HNSW index is built once, when a snapshot is written (:func:`build_hnsw`, called by
``SnapshotWriter`` for every compressed field: ``saec compress`` and ``saec fold``), and
stored in the snapshot as the array ``<field>/hnsw`` (hnswlib's saved bytes, uint8,
checksummed like every array). Every process that assigns updates loads it
(:func:`load_hnsw`, after checking its SHA-256 whatever ``SAEC_VERIFY_ON_OPEN`` says),
so every worker and every replica of one snapshot assigns with the same graph and gives
the same answers. Its ``ef`` is chosen when it is built, by a rule on a probe set made
from the codebook alone (:func:`probe_vectors`; no data the benchmarks report on): the
smallest ef of :data:`EF_LADDER` at which recall@1 reaches :data:`PROBE_RECALL` on the
probe's vectors near the centroids by the graph alone, and on each of its four kinds
(near the centroids, 10x their norm, uniform noise around the codebook, a blob
elsewhere) with the exact second search. It is stored with the index.

Which search a field uses (``SAEC_ASSIGN_SEARCH``, ``saec update --search``):

- ``exact``: always exact;
- ``hnsw``: the stored index, at the stored ef (or ``SAEC_HNSW_EF``); exact where the
  snapshot holds none (snapshots written before the index was stored, fields whose
  writer was told not to build one);
- ``auto`` (default): HNSW where the snapshot holds an index whose probe reached
  :data:`PROBE_RECALL` at an ef of at most :data:`AUTO_MAX_EF` and k >= :data:`AUTO_MIN_K`,
  exact elsewhere. The threshold
  comes from ``python -m bench.updates --parts assign`` on k-means codebooks of
  clustered data (docs/updates.md, "Nearest centroid").

Every answer names the search each field used.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from saec.compress.assign import default_threads

Search = Literal["auto", "hnsw", "exact"]
# Kept for callers of the earlier name.
Method = Search
SEARCHES: tuple[Search, ...] = ("auto", "hnsw", "exact")

# HNSW graph parameters (saec compress / saec fold: --hnsw-m, --hnsw-ef-construction).
# By default a graph of M links a node, and one of M_RETRY as well where M's needed an ef
# above RETRY_ABOVE_EF (build_hnsw keeps the one whose rule chose the smaller ef).
M = 16
M_RETRY = 32
RETRY_ABOVE_EF = 32
EF_CONSTRUCTION = 200
# The ef values the build-time rule tries, smallest first.
EF_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
# Recall@1 each kind of probe vector must reach at the chosen ef. Above the 0.995 the
# docs promise, so that vectors the probe never saw still meet it (bench/updates.py
# measures them).
PROBE_RECALL = 0.998
PROBE_PER_KIND = 1000
# "auto" uses HNSW from this k on, where the stored index reached PROBE_RECALL at an ef
# of at most AUTO_MAX_EF (bench/results/updates.md: at k = 16,384 and dim 16 the rule's
# ef 16 answered 6.7x faster than exact; at dim 64 its ef 512 3x slower).
AUTO_MIN_K = 16_384
AUTO_MAX_EF = 128
# Largest |value| of a codebook the writer builds an index over: hnswlib's float32
# squared distances (and the probe's, at 10x the norm) stay finite below it.
HNSW_MAX_ABS = 1e15
log = logging.getLogger("saec.updates")


@dataclass(frozen=True)
class HnswParams:
    """How :func:`build_hnsw` builds a field's index."""

    # None: M, or M_RETRY where it needs a smaller ef (build_hnsw); a number: that M only.
    m: int | None = None
    ef_construction: int = EF_CONSTRUCTION
    # Threads inserting rows: hnswlib's graph depends on the order threads insert in, so
    # only one thread makes the same codebook give the same graph, and the same answers
    # (the saved file also holds a few words of memory addresses); 0: every usable CPU.
    threads: int = 1

    def __post_init__(self) -> None:
        if self.m is not None and self.m < 2:
            raise ValueError(f"expected HNSW M >= 2, got {self.m}")
        if self.ef_construction < 1:
            raise ValueError(f"expected HNSW ef_construction >= 1, got {self.ef_construction}")


DEFAULT_HNSW = HnswParams()


@dataclass(frozen=True)
class BuiltHnsw:
    """An index ready to be stored: hnswlib's saved bytes and what the manifest records."""

    data: npt.NDArray[np.uint8]
    meta: dict[str, Any]


@dataclass(frozen=True)
class Assignment:
    """Nearest centroids of a batch.

    Attributes:
        masks: int64 (n,), codebook rows.
        distances: float32 (n,), squared L2 distance of each vector to its centroid.
    """

    masks: npt.NDArray[np.int64]
    distances: npt.NDArray[np.float32]


def exact_nearest(
    codebook: npt.NDArray[np.float32], vectors: npt.NDArray[np.float32], *, threads: int | None = None
) -> npt.NDArray[np.int64]:
    """Row of ``codebook`` (float32 (k, dim)) nearest each of ``vectors`` (float32 (n, dim))."""
    return ExactSearch(codebook, threads=threads).nearest(vectors)


def squared_distances(
    codebook: npt.NDArray[np.float32], vectors: npt.NDArray[np.float32], masks: npt.NDArray[np.integer]
) -> npt.NDArray[np.float32]:
    """float32 (n,): ``|vectors[i] - codebook[masks[i]]|^2``."""
    with np.errstate(over="ignore"):  # past float32's range the distance is infinity
        diff = vectors - np.take(codebook, masks, axis=0)
        return np.einsum("ij,ij->i", diff, diff)


class ExactSearch:
    """The exact nearest row: per chunk of rows one float32 product against the codebook
    (``|x - c|^2 = |x|^2 - 2 x.c + |c|^2``, rows and codebook shifted by the codebook's
    mean first, as ``compress.assign`` does), then argmin; chunks spread over a pool of
    threads, each product on one BLAS thread.

    OpenBLAS's own threads spin while they wait, and on a machine other processes load
    they measured 5-12x slower than threads of our own (k = 4,096, dim 64, load 10:
    5,135 rows/s against 63,180), so BLAS is held to one thread while a batch is assigned
    (``threadpoolctl``; the limit is process-wide for that time: a process that assigns
    updates does nothing else with BLAS).
    """

    def __init__(self, codebook: npt.NDArray[np.float32], *, threads: int | None = None) -> None:
        self.codebook = np.ascontiguousarray(codebook, dtype=np.float32)
        k, self.dim = self.codebook.shape
        self.origin = self.codebook.mean(axis=0, dtype=np.float64).astype(np.float32)
        shifted = self.codebook.astype(np.float64) - self.origin
        with np.errstate(over="ignore"):  # rows past float32's squared range: infinitely far
            self.minus2t = np.ascontiguousarray((-2.0 * shifted.T).astype(np.float32))
            self.norms = np.einsum("ij,ij->i", shifted, shifted).astype(np.float32)
        # One thread's (rows, k) float32 score block: ~16 MiB, 32 to 2,048 rows.
        self.chunk_rows = int(np.clip((16 << 20) // (4 * k), 32, 2048))
        self.threads = max(1, default_threads() if threads is None else threads)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="saec-assign") if self.threads > 1 else None

    def nearest(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
        n = vectors.shape[0]
        labels = np.empty(n, np.int64)
        if n == 0:
            return labels

        def one(start: int) -> None:
            with np.errstate(over="ignore", invalid="ignore"):  # a codebook past float32's squared range
                block = vectors[start : start + self.chunk_rows] - self.origin
                scores = block @ self.minus2t
                scores += self.norms
            labels[start : start + block.shape[0]] = scores.argmin(axis=1)

        starts = range(0, n, self.chunk_rows)
        with _one_blas_thread():
            if self._pool is None or len(starts) == 1:
                for start in starts:
                    one(start)
            else:
                for _ in self._pool.map(one, starts):
                    pass
        return labels


_BLAS_LOCK = threading.Lock()
_BLAS_USERS = 0
_CONTROLLER: Any = None


def _take_blas_control() -> None:
    """Let this thread's limit take effect: threadpoolctl lets only one thread of a process
    set OpenBLAS's (process-wide) thread count, the first that ever did, and silently
    ignores the others. Batches are assigned on whichever thread the server's pool gives
    them, so the first batch's thread would own it for good and every later batch's limit
    would do nothing (measured: OpenBLAS's own threads then ran and spun beside ours,
    13% + 13% of a worker's time under four clients). Called under ``_BLAS_LOCK``."""
    try:
        from threadpoolctl import OpenBLASController
    except ImportError:  # a threadpoolctl without the rule
        return
    OpenBLASController.clear_controlling_thread(force=True)


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """BLAS on one thread while any batch is being assigned (counted: nested and concurrent
    batches restore the previous limit only when the last one ends, from whichever thread
    that is)."""
    global _BLAS_USERS, _CONTROLLER
    with _BLAS_LOCK:
        if _BLAS_USERS == 0:
            if _CONTROLLER is None:
                from threadpoolctl import ThreadpoolController

                _CONTROLLER = ThreadpoolController()
            _take_blas_control()
            _one_blas_thread.limiter = _CONTROLLER.limit(limits=1, user_api="blas")  # type: ignore[attr-defined]
        _BLAS_USERS += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_USERS -= 1
            if _BLAS_USERS == 0:
                _take_blas_control()
                _one_blas_thread.limiter.restore_original_limits()  # type: ignore[attr-defined]
                _take_blas_control()


# -- building, storing, loading ---------------------------------------------------------


def probe_vectors(codebook: npt.NDArray[np.float32], per_kind: int = PROBE_PER_KIND, seed: int = 0) -> dict[str, npt.NDArray[np.float32]]:
    """Vectors the ef rule is measured on, made from the codebook alone (so that compress
    and fold choose alike and no benchmark's test vectors are looked at).

    Four kinds, ``per_kind`` each:

    - ``near``: a random centroid plus Gaussian noise whose norm is about the median
      distance between a centroid and its nearest other centroid (the trainer's vectors,
      many close to a cell's border);
    - ``far``: ``near`` vectors scaled 10x about the origin;
    - ``uniform``: uniform over the codebook's bounding box widened by half its span;
    - ``elsewhere``: Gaussian with the codebook's per-dimension spread, centred three
      spreads away from the codebook's mean in a random direction (a cluster it never saw).
    """
    rng = np.random.default_rng(seed)
    cb = np.asarray(codebook, dtype=np.float32)
    k, dim = cb.shape
    sample = cb[rng.choice(k, size=min(k, 512), replace=False)]
    if k > 1:
        d = (sample * sample).sum(1)[:, None] - 2 * sample @ cb.T + (cb * cb).sum(1)[None, :]
        d[d <= 1e-12] = np.inf  # the centroid itself
        nearest = np.sqrt(np.maximum(d.min(1), 0))
        gap = float(np.median(nearest[np.isfinite(nearest)])) if np.isfinite(nearest).any() else 1.0
    else:
        gap = 1.0
    gap = gap if gap > 0 else 1.0
    near = cb[rng.integers(0, k, per_kind)] + rng.normal(scale=gap / np.sqrt(dim), size=(per_kind, dim))
    lo, hi = cb.min(0), cb.max(0)
    span = np.maximum(hi - lo, gap)
    uniform = rng.uniform(lo - span / 2, hi + span / 2, size=(per_kind, dim))
    mean, spread = cb.mean(0), np.maximum(cb.std(0), gap / np.sqrt(dim))
    direction = rng.normal(size=dim)
    direction = direction / float(np.linalg.norm(direction))
    elsewhere = mean + 3 * spread * direction + rng.normal(size=(per_kind, dim)) * spread
    return {
        "near": near.astype(np.float32),
        "far": (near * 10).astype(np.float32),
        "uniform": uniform.astype(np.float32),
        "elsewhere": elsewhere.astype(np.float32),
    }


def recall_at_1(codebook: npt.NDArray[np.float32], queries: npt.NDArray[np.float32], got: npt.NDArray[np.integer]) -> float:
    """Share of ``got`` at the exact nearest distance (a tie with another row counts as a hit)."""
    truth = exact_nearest(codebook, queries)
    best = squared_distances(codebook, queries, truth)
    mine = squared_distances(codebook, queries, got)
    # The BLAS expansion and the direct difference round differently: a relative slack.
    return float(np.mean(mine <= best * (1 + 1e-5) + 1e-12))


def _graph(cb: npt.NDArray[np.float32], m: int, params: HnswParams, seed: int) -> Any:
    import hnswlib

    k, dim = cb.shape
    index = hnswlib.Index(space="l2", dim=dim)
    index.init_index(max_elements=k, ef_construction=params.ef_construction, M=m, random_seed=seed)
    index.add_items(cb, np.arange(k), num_threads=params.threads or default_threads())
    return index


def _choose_ef(
    index: Any, cb: npt.NDArray[np.float32], probes: Mapping[str, npt.NDArray[np.float32]],
    truth: Mapping[str, npt.NDArray[np.float32]], exact_beyond: float,
) -> tuple[int, dict[str, float]]:
    """The ef rule of :func:`build_hnsw` on one graph: its ef and the probe's recall per kind."""
    query_threads = default_threads()  # queries do not change the graph
    # Smallest ef at which the graph alone reaches PROBE_RECALL on the vectors near the
    # centroids and, with the exact second search, every kind does; failing the second,
    # the smallest meeting the first (then "auto" leaves the field to the exact search).
    chosen: tuple[int, dict[str, float]] | None = None
    fallback: tuple[int, dict[str, float]] | None = None
    recalls: dict[str, float] = {}
    graph_alone = 0.0
    for ef in EF_LADDER:
        index.set_ef(ef)
        recalls = {}
        for kind, q in probes.items():
            labels, found = index.knn_query(q, k=1, num_threads=query_threads)
            again = found[:, 0] > exact_beyond
            mine = squared_distances(cb, q, labels[:, 0].astype(np.int64))
            hit = again | (mine <= truth[kind] * (1 + 1e-5) + 1e-12)
            recalls[kind] = round(float(np.mean(hit)), 4)
            if kind == "near":
                # The graph alone, without the exact second search: the trainer's
                # vectors lie beyond exact_beyond more often than the probe's do.
                graph_alone = float(np.mean(mine <= truth[kind] * (1 + 1e-5) + 1e-12))
        if graph_alone < PROBE_RECALL:
            continue
        if fallback is None:
            fallback = (ef, dict(recalls))
        if min(recalls.values()) >= PROBE_RECALL:
            chosen = (ef, dict(recalls))
            break
    return chosen or fallback or (EF_LADDER[-1], recalls)


def build_hnsw(codebook: npt.NDArray[np.float32], params: HnswParams = DEFAULT_HNSW, *, seed: int = 0) -> BuiltHnsw:
    """Build the HNSW index over ``codebook`` (float32 (k, dim)) and choose its M and ef.

    M: ``params.m``, or by default (``m=None``) :data:`M`, and :data:`M_RETRY` as well
    where :data:`M`'s graph needed an ef above :data:`RETRY_ABOVE_EF`: the graph whose
    rule chose the smaller ef is kept (the query's cost grows about with ef; ties keep
    the smaller M, half the memory). Both rules look at the probe only.

    Returns:
        The saved index bytes and ``{"m", "m_tried", "ef_construction", "ef",
        "probe_recall", "probe_recall_by_kind", "exact_beyond", "probe", "seconds"}``
        (``exact_beyond``: the squared distance past which an HNSW answer is searched
        again exactly, the largest of the probe's near vectors' exact ones;
        ``probe_recall``: the lowest recall@1 over the probe's kinds at ``ef``; below
        :data:`PROBE_RECALL` when even the largest ef of :data:`EF_LADDER` fell short,
        and then ``ef`` is the smallest at which the ``near`` kind reached it).
    """
    t0 = time.perf_counter()
    cb = np.ascontiguousarray(codebook, dtype=np.float32)
    probes = probe_vectors(cb, seed=seed)
    truth = {kind: squared_distances(cb, q, exact_nearest(cb, q)) for kind, q in probes.items()}
    # Vectors HNSW places farther from their centroid than any vector near the codebook
    # lies from its nearest are searched again exactly (CentroidIndex.nearest): vectors
    # outside the codebook's distribution, where a graph search goes astray.
    exact_beyond = float(truth["near"].max())
    m = params.m or M
    index = _graph(cb, m, params, seed)
    ef, recalls = _choose_ef(index, cb, probes, truth, exact_beyond)
    tried = [m]
    if params.m is None and ef > RETRY_ABOVE_EF:
        # A graph of more links a node reaches the same recall at a smaller ef (at k =
        # 65,536, dim 16: ef 24 at M 32 against 64 at M 16, bench/results/updates.md).
        wider = _graph(cb, M_RETRY, params, seed)
        wider_ef, wider_recalls = _choose_ef(wider, cb, probes, truth, exact_beyond)
        tried.append(M_RETRY)
        if wider_ef < ef and min(wider_recalls.values()) >= min(min(recalls.values()), PROBE_RECALL):
            index, m, ef, recalls = wider, M_RETRY, wider_ef, wider_recalls
    with tempfile.TemporaryDirectory(prefix="saec-hnsw-") as tmp:
        path = os.path.join(tmp, "index.bin")
        index.save_index(path)
        data = np.fromfile(path, dtype=np.uint8)
    meta = {
        "m": m,
        "m_tried": tried,
        "ef_construction": params.ef_construction,
        "ef": ef,
        "probe_recall": min(recalls.values()),
        "probe_recall_by_kind": recalls,
        "exact_beyond": exact_beyond,
        "probe": sum(q.shape[0] for q in probes.values()),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return BuiltHnsw(data=data, meta=meta)


def load_hnsw(path: str | os.PathLike[str], sha256: str, k: int, dim: int) -> Any:
    """The hnswlib index stored at ``path`` (a snapshot's ``<field>/hnsw`` chunk file),
    after checking the file against ``sha256``: hnswlib trusts the bytes it loads.

    Raises:
        CorruptSnapshotError: the file is missing, not a regular file, or differs.
    """
    import hnswlib

    from saec.store._files import open_regular
    from saec.store.errors import CorruptSnapshotError

    try:
        fd = open_regular(Path(path), os.path.realpath(Path(path).parent))
    except FileNotFoundError:
        raise CorruptSnapshotError(f"{path}: the HNSW index file is missing") from None
    try:
        with os.fdopen(os.dup(fd), "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        if digest != sha256:
            raise CorruptSnapshotError(f"{path}: expected sha256 {sha256}, found {digest}")
        index = hnswlib.Index(space="l2", dim=dim)
        # Load the very file just checked (not whatever the path names by now).
        by_fd = f"/proc/self/fd/{fd}"
        index.load_index(by_fd if os.path.exists(by_fd) else str(path), max_elements=k)
    finally:
        os.close(fd)
    if index.element_count != k or index.dim != dim:
        raise CorruptSnapshotError(f"{path}: expected an index of {k} rows of {dim}, found {index.element_count} of {index.dim}")
    return index


# -- assigning --------------------------------------------------------------------------


def resolve(search: Search, k: int, meta: Mapping[str, Any] | None) -> Literal["hnsw", "exact"]:
    """The search a field of ``k`` rows uses under setting ``search``, given its stored
    index's manifest entry (None: the snapshot holds no index for it)."""
    if search not in SEARCHES:
        raise ValueError(f"expected search 'auto', 'hnsw' or 'exact', got {search!r}")
    if meta is None or search == "exact":
        return "exact"
    if search == "hnsw":
        return "hnsw"
    good = float(meta.get("probe_recall", 0.0)) >= PROBE_RECALL and int(meta.get("ef", EF_LADDER[-1])) <= AUTO_MAX_EF
    return "hnsw" if k >= AUTO_MIN_K and good else "exact"


class CentroidIndex:
    """Assigns vectors to their nearest codebook row.

    Args:
        codebook: float32 (k, dim).
        search: "auto", "hnsw" or "exact" (see the module docstring).
        hnsw: a loaded (or freshly built) hnswlib index over ``codebook``, or None.
        meta: its manifest entry (``ef``, ``probe_recall``, ...).
        ef: the query ef; 0: the stored one.
        threads: threads of one batch (None: every usable CPU).
        method: the earlier name of ``search``.
    """

    def __init__(
        self,
        codebook: npt.NDArray[np.float32],
        *,
        search: Search = "auto",
        hnsw: Any = None,
        meta: Mapping[str, Any] | None = None,
        ef: int = 0,
        threads: int | None = None,
        method: Search | None = None,
    ) -> None:
        search = method or search  # the earlier name of the argument
        self.codebook = np.ascontiguousarray(codebook, dtype=np.float32)
        k = self.codebook.shape[0]
        self.threads = default_threads() if threads is None else threads
        self.method: Literal["hnsw", "exact"] = resolve(search, k, meta if hnsw is not None else None)
        self.ef = 0
        self._hnsw = None
        self._exact = ExactSearch(self.codebook, threads=self.threads)
        # Squared distance past which an HNSW answer is searched again exactly (inf: never).
        self.exact_beyond = float("inf")
        if self.method == "hnsw":
            self.ef = ef or int((meta or {}).get("ef", 64))
            self.exact_beyond = float((meta or {}).get("exact_beyond", float("inf")))
            hnsw.set_ef(self.ef)
            self._hnsw = hnsw

    @classmethod
    def build(cls, codebook: npt.NDArray[np.float32], *, search: Search = "hnsw", params: HnswParams = DEFAULT_HNSW,
              ef: int = 0) -> CentroidIndex:
        """An index built here (tests, benchmarks); a server loads the snapshot's."""
        built = build_hnsw(codebook, params)
        with tempfile.TemporaryDirectory(prefix="saec-hnsw-") as tmp:
            path = Path(tmp) / "index.bin"
            built.data.tofile(path)
            index = load_hnsw(path, hashlib.sha256(built.data.tobytes()).hexdigest(), *codebook.shape)
        return cls(codebook, search=search, hnsw=index, meta=built.meta, ef=ef)

    def nearest(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
        """int64 (n,): the assigned codebook row of each of ``vectors`` (float32 (n, dim))."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape[0] == 0:
            return np.empty(0, np.int64)
        if self._hnsw is None:
            return self._exact.nearest(vectors)
        labels, found = self._hnsw.knn_query(vectors, k=1, num_threads=self.threads)
        out = labels[:, 0].astype(np.int64)
        again = np.flatnonzero(found[:, 0] > self.exact_beyond)
        if again.size:
            out[again] = self._exact.nearest(np.ascontiguousarray(vectors[again]))
        return out

    def assign(self, vectors: npt.NDArray[np.float32]) -> Assignment:
        """Nearest rows and the squared distance to them (computed exactly, whatever the search)."""
        masks = self.nearest(vectors)
        return Assignment(masks=masks, distances=squared_distances(self.codebook, vectors, masks))


class SnapshotIndexes:
    """Every stored HNSW index of one snapshot, loaded once (:func:`indexes_for`).

    Attributes:
        loaded: field -> hnswlib index, for the compressed fields whose index is stored.
        seconds: the time loading took.
    """

    def __init__(self, snapshot: Any) -> None:
        from saec.store.snapshot import chunk_path

        t0 = time.perf_counter()
        self.loaded: dict[str, Any] = {}
        self.meta: dict[str, Mapping[str, Any]] = {}
        self.nbytes = 0
        for f in snapshot:
            info = f.arrays.get("hnsw") if f.kind == "compressed" else None
            meta = snapshot.manifest["fields"][f.name].get("hnsw")
            if info is None or not isinstance(meta, Mapping):
                continue
            assert f.k is not None
            self.loaded[f.name] = load_hnsw(chunk_path(snapshot.path / info.path, 1), info.sha256, f.k, f.dim)
            self.meta[f.name] = meta
            self.nbytes += info.nbytes
        self.seconds = time.perf_counter() - t0
        self._lock = threading.Lock()
        self._indexes: dict[tuple[str, Search, int], CentroidIndex] = {}
        self._warned: set[str] = set()

    def get(self, name: str, codebook: npt.NDArray[np.float32], search: Search = "auto", ef: int = 0) -> CentroidIndex:
        """The field's index under ``search`` (one per setting; hnswlib's ef is per index,
        so one snapshot is served at one ef per process)."""
        key = (name, search, ef)
        with self._lock:
            index = self._indexes.get(key)
            if index is None:
                if search == "hnsw" and name not in self.loaded and name not in self._warned:
                    self._warned.add(name)
                    log.warning("field %r: the snapshot holds no HNSW index (written before indexes were stored, "
                                "or without one); its updates use the exact search. `saec fold` writes one", name)
                index = self._indexes[key] = CentroidIndex(
                    codebook, search=search, hnsw=self.loaded.get(name), meta=self.meta.get(name), ef=ef
                )
            return index


_CACHE: OrderedDict[str, SnapshotIndexes] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 2  # the snapshot served and, during a swap, the one before


def indexes_for(snapshot: Any) -> SnapshotIndexes:
    """The loaded indexes of ``snapshot`` (an open ``store.snapshot.Snapshot``): loaded at the
    first call for its folder (``LiveEngine`` calls this when it opens a snapshot that
    takes updates), shared by every later caller in this process."""
    key = f"{os.path.realpath(snapshot.path)}\0{snapshot.version}\0{','.join(sorted(snapshot.fields))}"
    with _CACHE_LOCK:
        found = _CACHE.get(key)
        if found is not None:
            _CACHE.move_to_end(key)
            return found
    loaded = SnapshotIndexes(snapshot)
    with _CACHE_LOCK:
        found = _CACHE.setdefault(key, loaded)
        _CACHE.move_to_end(key)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return found
