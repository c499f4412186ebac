"""Compiled lookup of a residual-quantised field (format version 4).

A residual-quantised field keeps S masks per row and S codebooks of k rows over the whole
vector; a row's vector is the sum of its S codebook rows, added in float32 in stage order
(what ``compress.ResidualField.vectors`` computes, so the two agree bit for bit). The
probe of the key index is :func:`store._kernels.probe`, the same as every other field's;
this module adds only the gather.
"""

from __future__ import annotations

import numba
import numpy as np

from saec.store._kernels import PREFETCH_DISTANCE, _prefetch, probe


@numba.njit(cache=True, nogil=True, boundscheck=False)
def lookup_residual(
    keys, bucket_bits, block_bits, block_bases, bucket_offsets, fingerprints, masks, codebooks, default, out, found, rows
):  # pragma: no cover
    """out[i] = codebooks[0, masks[r, 0]] + ... + codebooks[S-1, masks[r, S-1]] for
    r = row(keys[i]), summed in float32 in that order; default where absent.

    Args:
        keys: uint64 (n,).
        masks: uint8 or uint16 (rows, S).
        codebooks: float32 (S, k, dim).
        default: float32 (dim,).
        out: float32 (n, dim), written.
        found: bool (n,), written.
        rows: int64 (n,), written: the index row of each key, -1 where absent.
    """
    probe(keys, bucket_bits, block_bits, block_bases, bucket_offsets, fingerprints, rows)
    stages = codebooks.shape[0]
    last = codebooks.shape[1] - 1
    dim = codebooks.shape[2]
    n = keys.shape[0]
    dist = PREFETCH_DISTANCE
    for i in range(n):
        if i + dist < n and rows[i + dist] >= 0:
            # The row itself: a flat index into a 2-D array would step rows, not bytes.
            _prefetch(masks[rows[i + dist]], 0)
        r = rows[i]
        if r < 0:
            found[i] = False
            for d in range(dim):
                out[i, d] = default[d]
        else:
            found[i] = True
            # As in lookup_compressed: the clamp keeps a damaged mask inside the codebook.
            c = min(np.int64(masks[r, 0]), last)
            for d in range(dim):
                out[i, d] = codebooks[0, c, d]
            # Each stage's row is added to the float32 sum so far, stage 0 first.
            for s in range(1, stages):
                c = min(np.int64(masks[r, s]), last)
                for d in range(dim):
                    out[i, d] += codebooks[s, c, d]
