"""Compiled lookup of a residual-quantised field (format version 4).

A residual-quantised field keeps S masks per row and S codebooks of k rows over the whole
vector; a row's vector is the sum of its S codebook rows, added in float32 in stage order
(what ``compress.ResidualField.vectors`` computes, so the two agree bit for bit). The
probe of the key index is :func:`store._kernels.probe`, the same as every other field's;
this module adds only the gather.

Codebooks may be stored as float16 (``add_residual_field(codebook_dtype="float16")``).
numba has no float16 on the CPU, so :func:`lookup_residual_half` reads their bits
(uint16) and widens each half on the fly: the significand (with its implicit bit) as a
float32 integer times a signed power of two from :data:`HALF_SCALES`. Both factors and
their product are float32 values exactly, so each term equals numpy's
``astype(np.float32)`` of the half bit for bit, and the stage sum is then the same float32
additions in the same order as the float32 kernel's.
"""

from __future__ import annotations

import numba
import numpy as np

from saec.store._kernels import PREFETCH_DISTANCE, _prefetch, probe


def _half_scales() -> np.ndarray:
    """float32 (64,): the factor of a half whose top six bits (sign, 5-bit exponent e) are
    the index: +-2**(e - 25) for e in 1..30 and +-2**-24 for e == 0 (subnormals and zeros:
    their significand lacks the implicit 1024, the scale is that of e == 1). A half is then
    ``float32(significand) * HALF_SCALES[bits >> 10]`` exactly, -0.0 included (0 times a
    negative scale). e == 31 (infinity, NaN) never reaches the kernel: the writer refuses
    non-finite codebooks; its entries keep a damaged file's answers finite.
    """
    e = np.arange(32)
    magnitude = np.ldexp(np.float32(1.0), np.maximum(e, 1) - 25).astype(np.float32)
    magnitude[31] = 0.0
    return np.concatenate([magnitude, -magnitude]).astype(np.float32)


HALF_SCALES = _half_scales()


@numba.njit(inline="always")
def _widen(h, scales):  # pragma: no cover
    """The float32 value of the half whose bits are ``h`` (uint32 below 2**16), exactly:
    its significand (with the implicit 1024 unless the exponent is 0) times ``scales[h >> 10]``."""
    sig = (h & np.uint32(0x3FF)) | (np.uint32(0x400) if h & np.uint32(0x7C00) else np.uint32(0))
    return np.float32(sig) * scales[h >> np.uint32(10)]


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
    _gather(rows, masks, codebooks, default, out, found)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _gather(rows, masks, codebooks, default, out, found):  # pragma: no cover
    """The gather of :func:`lookup_residual` once the rows are known (float32 codebooks)."""
    stages = codebooks.shape[0]
    last = codebooks.shape[1] - 1
    dim = codebooks.shape[2]
    n = rows.shape[0]
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


@numba.njit(cache=True, nogil=True, boundscheck=False)
def lookup_residual_half(
    keys, bucket_bits, block_bits, block_bases, bucket_offsets, fingerprints, masks, halves, scales, default, out,
    found, rows,
):  # pragma: no cover
    """As :func:`lookup_residual` for float16 codebooks given as their bits: out[i] =
    float32(cb[0, masks[r, 0]]) + float32(cb[1, masks[r, 1]]) + ..., summed in float32
    in stage order, each half widened exactly (what numpy's ``astype(np.float32)`` gives).

    Args:
        keys: uint64 (n,).
        masks: uint8 or uint16 (rows, S).
        halves: uint16 (S, k, dim): the float16 codebooks' bits.
        scales: float32 (64,): :data:`HALF_SCALES`.
        default: float32 (dim,).
        out: float32 (n, dim), written.
        found: bool (n,), written.
        rows: int64 (n,), written: the index row of each key, -1 where absent.
    """
    probe(keys, bucket_bits, block_bits, block_bases, bucket_offsets, fingerprints, rows)
    stages = halves.shape[0]
    last = halves.shape[1] - 1
    dim = halves.shape[2]
    n = keys.shape[0]
    dist = PREFETCH_DISTANCE
    if n > halves.shape[1]:
        # More ids than codebook rows: widening every codebook value once, into a
        # transient float32 copy of S * k * dim values, converts fewer halves than
        # widening each id's S rows; the same exact conversion, so the same answers.
        wide = np.empty((stages, last + 1, dim), dtype=np.float32)
        for s in range(stages):
            for c in range(last + 1):
                for d in range(dim):
                    wide[s, c, d] = _widen(np.uint32(halves[s, c, d]), scales)
        _gather(rows, masks, wide, default, out, found)
        return
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
            # As in lookup_residual: the clamp keeps a damaged mask inside the codebook.
            c = min(np.int64(masks[r, 0]), last)
            for d in range(dim):
                out[i, d] = _widen(np.uint32(halves[0, c, d]), scales)
            for s in range(1, stages):
                c = min(np.int64(masks[r, s]), last)
                for d in range(dim):
                    out[i, d] += _widen(np.uint32(halves[s, c, d]), scales)
