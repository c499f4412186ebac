"""Compile (or load from numba's cache) every lookup kernel before a snapshot serves.

numba compiles a kernel the first time it meets a new combination of argument types
(dtype, dimensions, layout, read-only flag). Compiling ``lookup_compressed`` takes
0.3 to 9 s, so a server that answered its first lookups uncompiled would block its
worker that long while saying it is ready. :func:`warm_engine` runs every field of an
engine once on one key, with the field's own memory-mapped arrays, so each type
combination in use is compiled (or loaded from the compile cache) before the engine
is handed to requests; it also touches each field's first pages.

:func:`warm_cache` fills the compile cache for every combination the format allows
(``saec warmup``; the Docker image runs it at build time).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from saec.store.engine import LookupEngine

log = logging.getLogger("saec.store")


def warm_engine(engine: LookupEngine) -> float:
    """Run one lookup of one key per field of ``engine``; returns the seconds it took."""
    start = time.perf_counter()
    # Keys decoded from a binary request are a read-only view of its body, keys hashed
    # by the server are writable: numba compiles each separately.
    writable = np.zeros(1, dtype=np.uint64)
    readonly = np.frombuffer(writable.tobytes(), dtype=np.uint64)
    for name in engine.snapshot.fields:
        for probe in (writable, readonly):
            engine.lookup_field(name, probe)
    return time.perf_counter() - start


def warm_cache() -> float:
    """Compile every kernel signature a snapshot of this format can need; returns seconds.

    Builds a throw-away snapshot with a compressed, a product-quantised and two
    residual-quantised fields (float32 and float16 codebooks) of uint8 and of uint16 masks,
    a dense field and float16 and int8 quantised ones, each once
    with uniform keys (uint16 bucket offsets) and
    once with keys crowded into one block (uint32 offsets), opens it by memory map as
    the server does and warms it.
    """
    from saec.store.snapshot import open_current
    from saec.store.writer import SnapshotWriter

    rng = np.random.default_rng(0)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="saec-warmup-") as tmp:
        with SnapshotWriter(Path(tmp), source="warm-up") as w:
            for crowded in (False, True):
                # 70,000 keys below 2**62 all fall into the first of four blocks: offsets
                # within it exceed 65,535 and are stored as uint32.
                n = 70_000 if crowded else 64
                keys = np.unique(rng.integers(0, 1 << 62 if crowded else 1 << 63, n * 2, dtype=np.uint64))[:n]
                suffix = "_crowded" if crowded else ""
                for k in (4, 300):
                    masks = rng.integers(0, k, n).astype(np.uint8 if k <= 256 else np.uint16)
                    w.add_compressed_field(f"k{k}{suffix}", keys, rng.normal(size=(k, 3)).astype(np.float32), masks)
                    # Product-quantised fields (format version 3) have a kernel of their own.
                    pq_masks = rng.integers(0, k, (n, 2)).astype(masks.dtype)
                    w.add_product_field(f"pq{k}{suffix}", keys, rng.normal(size=(2, k, 2)).astype(np.float32), pq_masks)
                    # So have residual-quantised fields (format version 4), one per codebook dtype.
                    for cb in ("float32", "float16"):
                        w.add_residual_field(
                            f"rq{k}_{cb}{suffix}", keys, rng.normal(size=(2, k, 3)).astype(np.float32), pq_masks,
                            codebook_dtype=cb,
                        )
                w.add_dense_field(f"dense{suffix}", keys, rng.normal(size=(n, 3)).astype(np.float32))
                # Quantised dense fields (format version 2): float16 and 8-bit row-wise kernels.
                for dtype in ("float16", "int8"):
                    w.add_quantised_field(f"{dtype}{suffix}", keys, rng.normal(size=(n, 3)).astype(np.float32), dtype)
            w.publish()
        engine = LookupEngine(open_current(tmp))
        kinds = {
            (
                f.kind,
                str(f.masks.dtype) if f.masks is not None else "",
                str(f.codebook.dtype) if f.codebook is not None else "",
                str(f.vectors.dtype) if f.vectors is not None else "",
                str(f.index.bucket_offsets.dtype),
            )
            for f in engine.snapshot
        }
        warm_engine(engine)
    seconds = time.perf_counter() - start
    log.info("compiled %d kernel signatures in %.2f s", len(kinds), seconds)
    return seconds
