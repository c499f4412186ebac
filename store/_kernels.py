"""Compiled loops for the lookup hot path.

numpy's vectorised probe of the key index costs 200-400 ns an id at 1e8 rows
because every pass over the batch is another random walk over memory; a compiled
loop touches each bucket once (bench/keyindex.py prints both kernels side by side).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, boundscheck=False)
def probe(keys, bucket_bits, block_bits, block_bases, bucket_offsets, fingerprints, out):  # pragma: no cover
    """Row of each key in the index, -1 where absent.

    Args:
        keys: uint64 (m,).
        bucket_bits, block_bits: int.
        block_bases: uint64 (blocks,).
        bucket_offsets: uint16 or uint32 (B + 1,).
        fingerprints: uint16 (n,), sorted within buckets.
        out: int64 (m,), written.
    """
    fp_shift = np.uint64(64 - bucket_bits - 16)
    b_shift = np.uint64(64 - bucket_bits) if bucket_bits > 0 else np.uint64(0)
    for i in range(keys.shape[0]):
        key = keys[i]
        bucket = np.int64(key >> b_shift) if bucket_bits > 0 else np.int64(0)
        fp = np.uint16((key >> fp_shift) & np.uint64(0xFFFF))
        start = np.int64(block_bases[bucket >> block_bits]) + np.int64(bucket_offsets[bucket])
        nxt = bucket + 1
        end = np.int64(block_bases[nxt >> block_bits]) + np.int64(bucket_offsets[nxt])
        row = -1
        for j in range(start, end):
            f = fingerprints[j]
            if f >= fp:
                if f == fp:
                    row = j
                break
        out[i] = row


@numba.njit(cache=True, nogil=True, boundscheck=False)
def gather_codebook(rows, masks, codebook, default, out):  # pragma: no cover
    """out[i] = codebook[masks[rows[i]]], or default where rows[i] < 0.

    Args:
        rows: int64 (m,).
        masks: uint8 or uint16 (n,).
        codebook: float32 (k, dim).
        default: float32 (dim,).
        out: float32 (m, dim), written.
    """
    dim = codebook.shape[1]
    last = codebook.shape[0] - 1
    for i in range(rows.shape[0]):
        r = rows[i]
        if r < 0:
            for d in range(dim):
                out[i, d] = default[d]
        else:
            # Masks are checked against k when written and by checksum when opened; the
            # clamp keeps a damaged file from reading outside the codebook regardless.
            c = min(np.int64(masks[r]), last)
            for d in range(dim):
                out[i, d] = codebook[c, d]


@numba.njit(cache=True, nogil=True, boundscheck=False)
def gather_rows(rows, table, default, out):  # pragma: no cover
    """out[i] = table[rows[i]], or default where rows[i] < 0.

    Args:
        rows: int64 (m,).
        table: float32 (n, dim).
        default: float32 (dim,).
        out: float32 (m, dim), written.
    """
    dim = table.shape[1]
    for i in range(rows.shape[0]):
        r = rows[i]
        if r < 0:
            for d in range(dim):
                out[i, d] = default[d]
        else:
            for d in range(dim):
                out[i, d] = table[r, d]
