"""Compiled loops for the lookup hot path.

numpy's vectorised probe of the key index costs 200-400 ns an id at 1e8 rows
because every pass over the batch is another random walk over memory; a compiled
loop touches each bucket once (bench/keyindex.py prints both kernels side by side).
The engine's kernels run the probe and the gather in one compiled call.

At 1e7-1e8 rows nearly every read misses the caches and the TLB. Passes of
independent iterations let the core overlap some misses, but the scan's
data-dependent branches still stall it; so every pass also prefetches the line it
will read PREFETCH_DISTANCE ids ahead, which keeps ~16 misses in flight
(bench/keyindex.py, alternating runs: about 2x fewer ns an id at 1e8 than the same
passes without it).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

# Ids ahead that a pass prefetches; 12-24 measured alike.
PREFETCH_DISTANCE = 16
# The intrinsic is named after its pointer type: opaque "ptr" from LLVM 15 on, "i8*" before.
_PREFETCH_NAME = "llvm.prefetch.p0" if binding.llvm_version_info >= (15,) else "llvm.prefetch.p0i8"


@intrinsic
def _prefetch(typingctx, arr, index):  # pragma: no cover
    """Hint the CPU to load the cache line of ``arr[index]``; a prefetch never faults,
    so ``index`` may be one past the end."""
    sig = types.void(arr, index)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], ary, [args[1]], wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), _PREFETCH_NAME
        )
        # rw=0 (read), locality=3 (keep in all levels), cache type=1 (data).
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def copy_bytes(typingctx, dst, dst_start, src, src_start, count):  # pragma: no cover
    """``dst[dst_start:dst_start + count] = src[src_start:src_start + count]`` for 1-byte
    arrays, as one ``memcpy``: numba compiles the slice assignment to a loop of byte
    copies, ~10x slower for rows of ~200 bytes. The caller keeps the ranges in bounds."""
    sig = types.void(dst, dst_start, src, src_start, count)

    def codegen(context, builder, signature, args):
        d = context.make_array(signature.args[0])(context, builder, args[0])
        s = context.make_array(signature.args[2])(context, builder, args[2])
        dp = cgutils.get_item_pointer(context, builder, signature.args[0], d, [args[1]], wraparound=False)
        sp = cgutils.get_item_pointer(context, builder, signature.args[2], s, [args[3]], wraparound=False)
        cgutils.raw_memcpy(builder, dp, sp, args[4], 1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def load_u64(typingctx, arr, index):  # pragma: no cover
    """The 8 bytes of a 1-byte array from ``index`` on as one little-endian uint64 (an
    unaligned load; numba has no view for it). The caller keeps ``index + 8`` in bounds."""
    sig = types.uint64(arr, index)

    def codegen(context, builder, signature, args):
        a = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], a, [args[1]], wraparound=False)
        return builder.load(builder.bitcast(ptr, ir.IntType(64).as_pointer()), align=1)

    return sig, codegen


@numba.njit(cache=True, nogil=True, boundscheck=False)
def probe(keys, bucket_bits, block_bits, block_bases, bucket_offsets, fingerprints, out):  # pragma: no cover
    """Row of each key in the index, -1 where absent.

    The work runs in passes over the batch (bucket starts, bucket ends, fingerprint
    scans), each pass's iterations independent of one another, so the CPU keeps many
    cache misses in flight; one loop doing all three per key waits on each miss in
    turn and measured 35-40% slower at 1e6-1e7 rows.

    Args:
        keys: uint64 (m,).
        bucket_bits, block_bits: int.
        block_bases: uint64 (blocks,).
        bucket_offsets: uint16 or uint32 (B + 1,).
        fingerprints: uint16 (n,), sorted within buckets.
        out: int64 (m,), written.
    """
    m = keys.shape[0]
    n = np.int64(fingerprints.shape[0])
    end = np.empty(m, dtype=np.int64)
    fp_shift = np.uint64(64 - bucket_bits - 16)
    b_shift = np.uint64(64 - bucket_bits) if bucket_bits > 0 else np.uint64(0)
    dist = PREFETCH_DISTANCE
    # Bucket bounds come from the files: clamped to [0, n] and end >= start, so damaged
    # offsets or bases give wrong rows (or none), never a read outside ``fingerprints``.
    # (The arrays' shapes are checked against each other when the snapshot is opened.)
    for i in range(m):
        if bucket_bits > 0 and i + dist < m:
            _prefetch(bucket_offsets, np.int64(keys[i + dist] >> b_shift))
        b = np.int64(keys[i] >> b_shift) if bucket_bits > 0 else np.int64(0)
        start = np.int64(block_bases[b >> block_bits]) + np.int64(bucket_offsets[b])
        out[i] = min(max(start, np.int64(0)), n)
    for i in range(m):
        b = (np.int64(keys[i] >> b_shift) if bucket_bits > 0 else np.int64(0)) + 1
        stop = np.int64(block_bases[b >> block_bits]) + np.int64(bucket_offsets[b])
        end[i] = min(max(stop, out[i]), n)
    for i in range(m):
        if i + dist < m:
            _prefetch(fingerprints, out[i + dist])
        fp = np.uint16((keys[i] >> fp_shift) & np.uint64(0xFFFF))
        row = -1
        for j in range(out[i], end[i]):
            f = fingerprints[j]
            if f >= fp:
                if f == fp:
                    row = j
                break
        out[i] = row


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def filter_bits(key):  # pragma: no cover
    """The three bits of ``key`` in its filter word (a blocked Bloom filter: one word read)."""
    one = np.uint64(1)
    s = np.uint64(63)
    return (one << (key & s)) | (one << ((key >> np.uint64(6)) & s)) | (one << ((key >> np.uint64(12)) & s))


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def added_slot(key, filt, wshift, tkeys):  # pragma: no cover
    """The overlay table slot where a search for ``key`` starts, -1 where the filter says
    the overlay has no such key.

    ``filt`` (uint64 words, word = key >> wshift) answers "none" for nearly every key
    without touching the table; the table is open addressing on the key's low bits.
    """
    bits = filter_bits(key)
    if filt[np.int64(key >> np.uint64(wshift))] & bits != bits:
        return np.int64(-1)
    return np.int64(key & np.uint64(tkeys.shape[0] - 1))


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def find_added(key, filt, wshift, tkeys, tvals):  # pragma: no cover
    """Value index of ``key`` in an update overlay's table, -1 where it has none."""
    s = added_slot(key, filt, wshift, tkeys)
    if s < 0:
        return np.int64(-1)
    mask = np.uint64(tkeys.shape[0] - 1)
    while True:
        v = tvals[s]
        if v < 0 or tkeys[s] == key:
            return v
        s = np.int64((np.uint64(s) + np.uint64(1)) & mask)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def lookup_compressed(
    keys, bucket_bits, block_bits, block_bases, bucket_offsets, fingerprints, masks, codebook, default, out, found, rows,
    filt, wshift, tkeys, tvals, added,
):  # pragma: no cover
    """out[i] = codebook[masks[row(keys[i])]], or the mask an update added, or default.

    Args:
        keys: uint64 (m,).
        masks: uint8 or uint16 (n,).
        codebook: float32 (k, dim).
        default: float32 (dim,).
        out: float32 (m, dim), written.
        found: bool (m,), written.
        rows: int64 (m,), written: the codebook row that answered each key, -1 where
            none did (what a renderer of per-row text needs).
        filt, wshift, tkeys, tvals, added: ids updates added to the field
            (``store.overlay``; an empty overlay has an all-zero filter): filter uint64,
            table uint64/int64 (slots,), masks (added,) like ``masks``. Only keys the
            index lacks are looked up there, in the same loop, so a stored id pays
            nothing for them and an unseen one one filter word.
    """
    probe(keys, bucket_bits, block_bits, block_bases, bucket_offsets, fingerprints, rows)
    dim = codebook.shape[1]
    last = codebook.shape[0] - 1
    m = keys.shape[0]
    dist = PREFETCH_DISTANCE
    half = dist // 2
    sh = np.uint64(wshift)
    for i in range(m):
        if i + dist < m:
            if rows[i + dist] >= 0:
                _prefetch(masks, rows[i + dist])
            else:
                _prefetch(filt, np.int64(keys[i + dist] >> sh))
        # Half as far ahead, an id the index lacks whose filter word (prefetched above)
        # says the overlay may hold it: its table slot too. Without this, each id an
        # update added waited for one more miss (lookups of updated ids: 1.85x plain).
        j = i + half
        if j < m and rows[j] < 0:
            slot = added_slot(keys[j], filt, wshift, tkeys)
            if slot >= 0:
                _prefetch(tvals, slot)
                _prefetch(tkeys, slot)
        r = rows[i]
        c = np.int64(-1)
        if r >= 0:
            # Masks are checked against k when written and by checksum when opened; the
            # clamp keeps a damaged file (or one changed after opening, or opened
            # unverified) from reading outside the codebook regardless.
            c = min(np.int64(masks[r]), last)
        else:
            v = find_added(keys[i], filt, wshift, tkeys, tvals)
            if v >= 0:
                c = min(np.int64(added[v]), last)
        rows[i] = c
        if c < 0:
            found[i] = False
            for d in range(dim):
                out[i, d] = default[d]
        else:
            found[i] = True
            for d in range(dim):
                out[i, d] = codebook[c, d]


@numba.njit(cache=True, nogil=True, boundscheck=False)
def lookup_dense(
    keys, bucket_bits, block_bits, block_bases, bucket_offsets, fingerprints, table, default, out, found, rows,
    filt, wshift, tkeys, tvals, added,
):  # pragma: no cover
    """out[i] = table[row(keys[i])], or the vector an update added, or default.

    Args:
        keys: uint64 (m,).
        table: float32 (n, dim).
        default: float32 (dim,).
        out: float32 (m, dim), written.
        found: bool (m,), written.
        rows: int64 (m,), written: the index row of each key, -1 where absent.
        filt, wshift, tkeys, tvals, added: as in :func:`lookup_compressed`; added is
            float32 (added, dim).
    """
    probe(keys, bucket_bits, block_bits, block_bases, bucket_offsets, fingerprints, rows)
    dim = table.shape[1]
    m = keys.shape[0]
    dist = PREFETCH_DISTANCE
    sh = np.uint64(wshift)
    for i in range(m):
        if i + dist < m:
            if rows[i + dist] >= 0:
                _prefetch(table[rows[i + dist]], 0)
            else:
                _prefetch(filt, np.int64(keys[i + dist] >> sh))
        r = rows[i]
        if r >= 0:
            found[i] = True
            for d in range(dim):
                out[i, d] = table[r, d]
            continue
        v = find_added(keys[i], filt, wshift, tkeys, tvals)
        if v >= 0:
            found[i] = True
            for d in range(dim):
                out[i, d] = added[v, d]
        else:
            found[i] = False
            for d in range(dim):
                out[i, d] = default[d]



@numba.njit(inline="always")
def half_to_float_bits(h):  # pragma: no cover
    """The float32 bit pattern of the IEEE half whose bits are ``h`` (uint32 below 2**16).

    numba has no float16 on the CPU, so the conversion is done on the bits: the same
    value, exactly (every half is a float32), infinities kept and NaN payloads shifted
    into place the way numpy's ``astype(np.float32)`` does.
    """
    sign = (h & np.uint32(0x8000)) << np.uint32(16)
    exp = (h >> np.uint32(10)) & np.uint32(0x1F)
    mant = h & np.uint32(0x3FF)
    if exp == np.uint32(0x1F):
        return sign | np.uint32(0x7F800000) | (mant << np.uint32(13))
    if exp == np.uint32(0):
        if mant == np.uint32(0):
            return sign
        # A subnormal half, mant * 2**-24: shift its leading 1 up to the implicit bit.
        shifts = np.uint32(0)
        while (mant & np.uint32(0x400)) == np.uint32(0):
            mant = mant << np.uint32(1)
            shifts += np.uint32(1)
        return sign | ((np.uint32(113) - shifts) << np.uint32(23)) | ((mant & np.uint32(0x3FF)) << np.uint32(13))
    return sign | ((exp + np.uint32(112)) << np.uint32(23)) | (mant << np.uint32(13))


@numba.njit(cache=True, nogil=True, boundscheck=False)
def lookup_half(
    keys, bucket_bits, block_bits, block_bases, bucket_offsets, fingerprints, halves, default_bits, out_bits, found
):  # pragma: no cover
    """out[i] = float32(vectors[r]) for r = row(keys[i]), or default where absent, on bits.

    Widened here, row by row, so a lookup never materialises a float32 table.

    Args:
        keys: uint64 (m,).
        halves: uint16 (n, dim): the float16 vectors' bits.
        default_bits: uint32 (dim,): the float32 default's bits.
        out_bits: uint32 (m, dim), written: the answer's float32 bits.
        found: bool (m,), written.
    """
    rows = np.empty(keys.shape[0], dtype=np.int64)
    probe(keys, bucket_bits, block_bits, block_bases, bucket_offsets, fingerprints, rows)
    dim = halves.shape[1]
    m = keys.shape[0]
    dist = PREFETCH_DISTANCE
    for i in range(m):
        if i + dist < m and rows[i + dist] >= 0:
            _prefetch(halves[rows[i + dist]], 0)
        r = rows[i]
        if r < 0:
            found[i] = False
            for d in range(dim):
                out_bits[i, d] = default_bits[d]
        else:
            found[i] = True
            for d in range(dim):
                out_bits[i, d] = half_to_float_bits(np.uint32(halves[r, d]))


@numba.njit(cache=True, nogil=True, boundscheck=False)
def lookup_rowwise_8bit(
    keys, bucket_bits, block_bits, block_bases, bucket_offsets, fingerprints, codes, scale, bias, default, out, found
):  # pragma: no cover
    """out[i] = codes[r] * scale[r] + bias[r] for r = row(keys[i]), or default where absent.

    Dequantised here, row by row, so a lookup never materialises a float32 table.

    Args:
        keys: uint64 (m,).
        codes: uint8 (n, dim).
        scale, bias: float32 (n,).
        default: float32 (dim,).
        out: float32 (m, dim), written.
        found: bool (m,), written.
    """
    rows = np.empty(keys.shape[0], dtype=np.int64)
    probe(keys, bucket_bits, block_bits, block_bases, bucket_offsets, fingerprints, rows)
    dim = codes.shape[1]
    m = keys.shape[0]
    dist = PREFETCH_DISTANCE
    for i in range(m):
        if i + dist < m and rows[i + dist] >= 0:
            _prefetch(codes[rows[i + dist]], 0)
        r = rows[i]
        if r < 0:
            found[i] = False
            for d in range(dim):
                out[i, d] = default[d]
        else:
            found[i] = True
            s = scale[r]
            b = bias[r]
            for d in range(dim):
                out[i, d] = np.float32(codes[r, d]) * s + b


@numba.njit(cache=True, nogil=True, boundscheck=False)
def keep_most_frequent(prefix, counts):  # pragma: no cover - compiled
    """For each run of equal ``prefix`` values, the position of its largest count.

    Args:
        prefix: uint64 (n,), n >= 1, sorted: each key's bucket and fingerprint bits.
        counts: integer (n,), each key's count, in the same order.

    Returns:
        intp (groups,): per run, in order, the first position holding the run's largest
        count. One pass; the reduceat, repeat and where it replaces took 40% of building
        the index of a field with any aliasing.
    """
    n = prefix.shape[0]
    out = np.empty(n, dtype=np.intp)
    groups = 0
    best_pos = 0
    best = counts[0]
    for i in range(1, n):
        if prefix[i] != prefix[i - 1]:
            out[groups] = best_pos
            groups += 1
            best_pos = i
            best = counts[i]
        elif counts[i] > best:
            best = counts[i]
            best_pos = i
    out[groups] = best_pos
    return out[: groups + 1]
