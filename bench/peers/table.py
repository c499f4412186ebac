"""The benchmark's table: generated, compressed, written as two stores and loaded into Redis."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench import _redis
from bench.peers.common import FIELD


@dataclass(frozen=True)
class Table:
    """The generated table and its compression.

    Attributes:
        ids: int64 (n,) raw ids; keys: uint64 (n,) = hash_ids(ids, FIELD).
        vectors: float32 (n, dim); counts: int64 (n,).
        codebook: float32 (k, dim); masks: uint8|uint16 (n,), aligned with ids.
        served: bool (n,): the id's own row answers it (False for the few ids that share
            a 32-bit key prefix with a more frequent id, see store/keyindex.py).
    """

    ids: npt.NDArray[np.int64]
    keys: npt.NDArray[np.uint64]
    vectors: npt.NDArray[np.float32]
    counts: npt.NDArray[np.int64]
    codebook: npt.NDArray[np.float32]
    masks: npt.NDArray[np.unsignedinteger]
    served: npt.NDArray[np.bool_]
    compress_seconds: float

    @property
    def n(self) -> int:
        return int(self.ids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def k(self) -> int:
        return int(self.codebook.shape[0])


def build_table(n: int, dim: int, k: int, top_n: int, seed: int) -> Table:
    from saec.compress import CompressedField, compress_field
    from saec.store import keyindex
    from saec.store.hashing import hash_ids
    from saec.synthetic import clustered_vectors, zipf_counts

    rng = np.random.default_rng(seed)
    vectors = clustered_vectors(n, dim, rng)
    counts = zipf_counts(n, rng)
    ids = np.arange(n, dtype=np.int64)
    keys = hash_ids(ids, FIELD)
    started = time.perf_counter()
    result = compress_field(vectors, counts, k=k, top_n=top_n, seed=seed, field=FIELD)
    seconds = time.perf_counter() - started
    if not isinstance(result, CompressedField):
        raise SystemExit(f"expected the table to compress, got a dense field: {result.reason}; raise --features")
    built = keyindex.build(keys, counts)  # what the writer builds from the same keys and counts
    served = np.zeros(n, dtype=bool)
    served[built.order] = True
    return Table(ids, keys, vectors, counts, result.codebook, result.masks, served, seconds)


def write_stores(table: Table, workdir: Path) -> tuple[Path, Path]:
    from saec.store.writer import SnapshotWriter

    compressed, dense = workdir / "store-compressed", workdir / "store-dense"
    with SnapshotWriter(compressed, source="bench.peers compressed") as w:
        w.add_compressed_field(FIELD, table.keys, table.codebook, table.masks, table.counts)
        w.publish()
    with SnapshotWriter(dense, source="bench.peers dense") as w:
        w.add_dense_field(FIELD, table.keys, table.vectors, table.counts)
        w.publish()
    return compressed, dense


def query_rows(table: Table, batches: int, batch: int, seed: int) -> npt.NDArray[np.int64]:
    """Row numbers (batches, batch), uniform over the ids saec serves from their own row."""
    pool = np.flatnonzero(table.served)
    rng = np.random.default_rng(seed + 1)
    return pool[rng.integers(0, pool.shape[0], size=(batches, batch))]


def check_rows(
    table: Table, batches: int, batch: int, seed: int
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
    """Keys (batches, batch) for the equality check: stored ids and about 2% never stored.

    Returns:
        keys uint64 (batches, batch); rows int64 (batches, batch), -1 for absent ids.
    """
    from saec.store.hashing import hash_ids

    rng = np.random.default_rng(seed + 2)
    rows = query_rows(table, batches, batch, seed + 3)
    absent = rng.random(rows.shape) < 0.02
    keys = table.keys[rows]
    stranger = hash_ids(table.n + np.arange(int(absent.sum()), dtype=np.int64), FIELD)
    keys[absent] = stranger
    rows = np.where(absent, -1, rows)
    return keys, rows


# -- Redis ----------------------------------------------------------------------------------


def load_redis(server: _redis.RedisServer, table: Table, batch: int = 10_000) -> dict[str, Any]:
    """MSET every row in pipelined batches; used_memory before and after."""
    raw_keys = table.keys.astype("<u8").tobytes()
    raw_values = np.ascontiguousarray(table.vectors, dtype="<f4").tobytes()
    width = 4 * table.dim
    with server.client() as r:
        hiredis = _redis.hiredis_active(r)
        before = int(r.info("memory")["used_memory"])
        started = time.perf_counter()
        pipe = r.pipeline(transaction=False)
        for lo in range(0, table.n, batch):
            hi = min(table.n, lo + batch)
            pipe.mset({raw_keys[8 * i : 8 * i + 8]: raw_values[width * i : width * (i + 1)] for i in range(lo, hi)})
            if len(pipe) >= 8:
                pipe.execute()
        pipe.execute()
        seconds = time.perf_counter() - started
        size = int(r.dbsize())
        if size != table.n:
            raise RuntimeError(f"expected {table.n} keys in Redis after loading, found {size}")
        info = r.info("memory")
    after = int(info["used_memory"])
    return {
        "hiredis": hiredis,
        "load_seconds": seconds,
        "used_memory_before": before,
        "used_memory_after": after,
        "bytes_per_feature": (after - before) / table.n,
        "allocator": info.get("mem_allocator", ""),
    }
