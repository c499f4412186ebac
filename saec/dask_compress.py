"""``saec compress --dask ADDRESS``: the same compression, spread over a Dask cluster.

    --dask local:N            a ``distributed.LocalCluster`` of N worker processes
    --dask tcp://HOST:PORT    an existing scheduler (``distributed.Client(address)``)

Fields are compressed in parallel: the client reads the fields, scatters their vectors to
the workers in batches (one task a batch) and gets back codebooks and masks (or the dense
vectors). A field
of more than ``split_rows`` rows is not sent to one worker: its input chunks become the
blocks of a ``dask.array``, the fast-clustering sample (its ``top_n`` rows by count) is
gathered from them into one k-means task, and the assignment of every row to its nearest
centroid runs block by block on whichever workers hold the blocks.

The published snapshot is identical, array for array, to the single-process one with the
same seed: the sample is the same rows in the same order, k-means runs the same code on
it, and the blocks are cut where the single-process assignment cuts its chunks
(:meth:`compress.assign.Assigner.chunk_rows_for`), so every row's distances come from the
same sgemm slabs. That holds when the workers see as many CPUs as the single process did
(the chunking follows the thread count); ``tests/cli/test_dask_compress.py`` proves it on
a two-process ``LocalCluster``.

The keys (8 bytes a row), masks (1-2 bytes) and counts of a split field still come back to
the client, which writes the snapshot: the vectors (4 * dim bytes a row) never do.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from saec.compress import CompressedField, DenseField, ProductField, ResidualField, compress_field
from saec.compress._rank import largest_rows
from saec.compress.assign import Assigner, assign_rows, default_threads, label_dtype
from saec.errors import SaecError
from saec.loaders import FieldInfo, check_unique
from saec.loaders.source import TableSource
from saec.progress import Progress
from saec.store.hashing import hash_ids

# Fields of more rows than this are split over the cluster: at dim 17 that is ~270 MB
# of vectors, which a worker of the usual few GB holds several times over.
DEFAULT_SPLIT_ROWS = 4_000_000
# Small fields go to the workers in batches of about this many rows (or fields).
BATCH_ROWS = 500_000
BATCH_FIELDS = 256


class DaskAddressError(SaecError, ValueError):
    """``--dask`` named neither ``local:N`` nor a scheduler address."""


class DaskSplitError(SaecError, ValueError):
    """A field too large for one worker was asked for what only a whole field gets."""


@dataclass(frozen=True)
class Params:
    """What :func:`compress.compress_field` is called with, for every field."""

    k: int = 100
    init: str = "kmeans++"
    top_n: int | None = 100_000
    min_factor: int = 100
    seed: int = 0
    max_iter: int = 50
    private_rows: int = 0
    weight_by_count: bool = False
    subvectors: int = 1
    stages: int = 1

    @property
    def whole_field_only(self) -> bool:
        """Options a field split over the cluster does not take (see :func:`compress_plan`)."""
        return self.private_rows > 0 or self.subvectors > 1 or self.stages > 1


@dataclass(frozen=True, eq=False)
class FieldOutcome:
    """One field, compressed; handed back in the order of the plan.

    Attributes:
        keys: uint64 (n,), the field's hashed ids, in input row order.
        counts: int64 (n,) or None, in input row order.
        dim: vector length.
        result: what :func:`compress.compress_field` returns for the field.
        seconds: wall time from sending the field to having it back: for a small field
            its batch's, for a split field from the first block sent to the last mask back.
    """

    name: str
    keys: npt.NDArray[np.uint64]
    counts: npt.NDArray[np.int64] | None
    dim: int
    result: CompressedField | ProductField | ResidualField | DenseField
    seconds: float


@contextmanager
def connect(address: str) -> Iterator[Any]:
    """A ``distributed.Client`` for ``local:N`` (a cluster started and stopped here) or a
    scheduler address such as ``tcp://10.0.0.5:8786``."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # the optional extra
        raise DaskAddressError(
            f"--dask {address}: expected the 'dask' extra to be installed (pip install 'saec[dask]'), got {exc}"
        ) from None
    if address == "local" or address.startswith("local:"):
        _, _, count = address.partition(":")
        if count and not count.isdigit() or count == "0":
            raise DaskAddressError(f"expected --dask local:N with N >= 1 worker processes, got {address!r}")
        workers = int(count) if count else default_threads()
        # One thread a worker: the compression kernels already use every CPU they see.
        # ":0": the scheduler's HTTP endpoint on a free port, not 8787, which another
        # cluster on the machine may hold.
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            yield client
        return
    if "://" not in address:
        raise DaskAddressError(f"expected --dask local:N or a scheduler address like tcp://HOST:8786, got {address!r}")
    with Client(address) as client:
        yield client


def compress_plan(
    client: Any,
    plan: Sequence[tuple[TableSource[Any], FieldInfo]],
    params: Params,
    *,
    split_rows: int = DEFAULT_SPLIT_ROWS,
    progress: Progress | None = None,
) -> Iterator[FieldOutcome]:
    """Compress every field of ``plan`` on the cluster, yielding outcomes in plan order.

    Small fields travel in batches of about :data:`BATCH_ROWS` rows, one task a batch: a
    task costs the scheduler milliseconds, and most fields of a real model are tiny. At
    most two batches a worker are in flight, so the workers hold a bounded share of the
    table whatever the size of the plan.
    """
    if params.whole_field_only:
        # A split field's sample is fitted as one codebook and every block assigned to it;
        # a frequency head, slices or stages would each change what is sampled and
        # assigned. Refused before any work, so nothing is published.
        for _, info in plan:
            if info.rows is not None and info.rows > split_rows and _clusters_part(info.rows, params):
                raise DaskSplitError(
                    f"field {info.name!r}: {info.rows:,} rows is over the split limit of {split_rows:,} rows, and a field "
                    f"split over the cluster takes one codebook without a frequency head for now; expected --private-rows 0, "
                    f"--subvectors 1 and --stages 1, or --dask-split-rows of at least {info.rows:,}; got private_rows="
                    f"{params.private_rows}, subvectors={params.subvectors}, stages={params.stages}"
                )
    window = 2 * max(1, len(client.scheduler_info()["workers"]))
    worker_threads = int(client.submit(default_threads, pure=False).result())
    pending: deque[tuple[list[_Read], Any, float]] = deque()
    batch: list[_Read] = []

    def submit() -> Iterator[FieldOutcome]:
        nonlocal batch
        if batch:
            # Scatter rather than embed the arrays in the task: the task graph stays small.
            data = client.scatter([(r.vectors, r.counts, r.name) for r in batch], direct=False)
            future = client.submit(_compress_batch, data, params, pure=False)
            pending.append(([r.without_vectors() for r in batch], future, time.perf_counter()))
            batch = []
        while len(pending) >= window:
            yield from _resolve(pending.popleft(), progress)

    for table, info in plan:
        name = info.name
        if info.rows is not None and info.rows > split_rows and _clusters_part(info.rows, params):
            # A split field keeps the whole cluster busy by itself: finish the ones before it first.
            yield from submit()
            while pending:
                yield from _resolve(pending.popleft(), progress)
            started = time.perf_counter()
            keys, counts, result = _split_field(client, table, info, params, split_rows, worker_threads)
            outcome = FieldOutcome(name, keys, counts, info.dim, result, time.perf_counter() - started)
            if progress is not None:
                progress.step(f"{name} ({info.rows:,} rows, split)")
            yield outcome
            continue
        chunk = table.read_field(name)
        batch.append(_Read(name, hash_ids(chunk.ids, name), chunk.counts, chunk.vectors))
        if sum(r.vectors.shape[0] for r in batch if r.vectors is not None) >= BATCH_ROWS or len(batch) >= BATCH_FIELDS:
            yield from submit()
    yield from submit()
    while pending:
        yield from _resolve(pending.popleft(), progress)


@dataclass(frozen=True, eq=False)
class _Read:
    """A field read on the client; its vectors are dropped once scattered."""

    name: str
    keys: npt.NDArray[np.uint64]
    counts: npt.NDArray[np.int64] | None
    vectors: npt.NDArray[np.float32] | None
    dim: int = 0

    def without_vectors(self) -> _Read:
        assert self.vectors is not None
        return _Read(self.name, self.keys, self.counts, None, self.vectors.shape[1])


def _compress_batch(
    fields: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64] | None, str]], params: Params
) -> list[CompressedField | ProductField | ResidualField | DenseField]:
    """compress_field on each field of a batch, on a worker."""
    return [
        compress_field(vectors, counts, k=params.k, init=params.init, top_n=params.top_n,
                       min_factor=params.min_factor, seed=params.seed, max_iter=params.max_iter,
                       private_rows=params.private_rows, weight_by_count=params.weight_by_count,
                       subvectors=params.subvectors, stages=params.stages, field=name)
        for vectors, counts, name in fields
    ]


def _resolve(item: tuple[list[_Read], Any, float], progress: Progress | None) -> Iterator[FieldOutcome]:
    reads, future, started = item
    results = future.result()
    seconds = time.perf_counter() - started
    for read, result in zip(reads, results, strict=True):
        if progress is not None:
            progress.step(read.name)
        yield FieldOutcome(read.name, read.keys, read.counts, read.dim, result, seconds)


def _clusters_part(rows: int, params: Params) -> bool:
    """Whether compress_field would run fast clustering (a sample, then all rows assigned)."""
    return rows >= params.min_factor * params.k and params.top_n is not None and params.top_n < rows


def _split_field(
    client: Any, table: TableSource[Any], info: FieldInfo, params: Params, split_rows: int, threads: int
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64] | None, CompressedField]:
    """Fast clustering of one field too large for one worker, over a ``dask.array``."""
    import dask
    import dask.array as da

    name, n, dim = info.name, int(info.rows or 0), info.dim
    assert params.top_n is not None
    # Blocks start where the single-process assignment starts a chunk and hold at least one
    # chunk a thread (see Assigner.chunk_rows_for); the last block takes the remainder.
    with Assigner(dim, params.k, chunk_rows=None, threads=threads) as plan:
        chunk, chunk_threads = plan.chunk_rows_for(n), plan.threads
    block = max(split_rows // chunk, chunk_threads) * chunk
    ids, counts_parts, blocks = [], [], []
    for part in table.iter_chunks(name, chunk_rows=block):
        ids.append(part.ids)
        if part.counts is not None:
            counts_parts.append(part.counts)
        future = client.scatter(part.vectors, direct=False)
        blocks.append(da.from_delayed(dask.delayed(future), shape=part.vectors.shape, dtype=np.float32))
    all_ids = np.concatenate(ids) if len(ids) > 1 else ids[0]
    check_unique(all_ids, name, path=table.path)
    keys = hash_ids(all_ids, name)
    counts = (np.concatenate(counts_parts) if len(counts_parts) > 1 else counts_parts[0]) if counts_parts else None
    vectors = da.concatenate(blocks, axis=0)
    sizes = [block] * (n // block)
    if n % block:
        if sizes:
            sizes[-1] += n % block  # a short tail would be cut into smaller chunks than the whole run's
        else:
            sizes = [n]
    vectors = vectors.rechunk(((*sizes,), (dim,)))

    # The sample: the same rows, in the same order, as compress_field takes them.
    rows = largest_rows(counts, params.top_n) if counts is not None else np.arange(params.top_n)
    sample = client.compute(vectors[rows])
    fitted = client.submit(
        compress_field, sample, None if counts is None else counts[rows], k=params.k, init=params.init,
        top_n=None, min_factor=0, seed=params.seed, max_iter=params.max_iter,
        weight_by_count=params.weight_by_count, field=name, pure=False,
    )
    fit: CompressedField = fitted.result()
    codebook = fit.codebook

    parts = client.compute([dask.delayed(_assign_block)(b, codebook, chunk, threads, name)
                            for b in vectors.to_delayed().ravel()])
    assigned = client.gather(parts)
    masks = np.concatenate([m for m, _ in assigned])
    sqdist = np.concatenate([d for _, d in assigned])
    result = CompressedField(
        codebook=codebook,
        masks=masks,
        inertia=float(sqdist.sum(dtype=np.float64)),
        n_iter=fit.n_iter,
        seconds=fit.seconds,
        init=fit.init,
        clustered=params.top_n,
    )
    return keys, counts, result


def _assign_block(
    vectors: npt.NDArray[np.float32], codebook: npt.NDArray[np.float32], chunk_rows: int, threads: int, name: str
) -> tuple[npt.NDArray[np.unsignedinteger], npt.NDArray[np.float32]]:
    """Masks (uint8 or uint16 (m,)) and squared distances (float32 (m,)) of one block of rows."""
    from saec.compress import _validate

    vectors = _validate.vectors(vectors, name)
    masks = np.empty(vectors.shape[0], dtype=label_dtype(codebook.shape[0]))
    sqdist = np.empty(vectors.shape[0], dtype=np.float32)
    assign_rows(vectors, codebook, masks, sqdist, chunk_rows=chunk_rows, threads=threads)
    return masks, sqdist
