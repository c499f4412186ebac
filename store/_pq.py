"""Compiled lookup of a product-quantised field (format version 3).

A product-quantised field keeps M masks per row and M sub-codebooks of k rows of
``dim / M`` values; a row's vector is its M sub-centroids side by side. The probe of the
key index is :func:`store._kernels.probe`, the same as every other field's; this module
adds only the gather.
"""

from __future__ import annotations

import numba
import numpy as np

from saec.store._kernels import PREFETCH_DISTANCE, _prefetch, probe


@numba.njit(cache=True, nogil=True, boundscheck=False)
def lookup_product(
    keys, bucket_bits, block_bits, block_bases, bucket_offsets, fingerprints, masks, codebooks, default, out, found, rows
):  # pragma: no cover
    """out[i] = concat over m of codebooks[m, masks[row(keys[i]), m]], or default where absent.

    Args:
        keys: uint64 (n,).
        masks: uint8 or uint16 (rows, M).
        codebooks: float32 (M, k, dim / M).
        default: float32 (dim,).
        out: float32 (n, dim), written.
        found: bool (n,), written.
        rows: int64 (n,), written: the index row of each key, -1 where absent.
    """
    probe(keys, bucket_bits, block_bits, block_bases, bucket_offsets, fingerprints, rows)
    slices = codebooks.shape[0]
    width = codebooks.shape[2]
    last = codebooks.shape[1] - 1
    n = keys.shape[0]
    dist = PREFETCH_DISTANCE
    for i in range(n):
        if i + dist < n and rows[i + dist] >= 0:
            # The row itself: a flat index into a 2-D array would step rows, not bytes.
            _prefetch(masks[rows[i + dist]], 0)
        r = rows[i]
        if r < 0:
            found[i] = False
            for d in range(slices * width):
                out[i, d] = default[d]
        else:
            found[i] = True
            for s in range(slices):
                # As in lookup_compressed: the clamp keeps a damaged mask inside the codebook.
                c = min(np.int64(masks[r, s]), last)
                for d in range(width):
                    out[i, s * width + d] = codebooks[s, c, d]
