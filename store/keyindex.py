"""The key index: hashed feature id -> row of a field, in about 2.3 bytes a feature.

Hashed ids (``store.hashing``) are uniform over 64 bits, so the index needs no hash
table: sort the keys, cut the key space into ``2**bucket_bits`` equal buckets by the
top bits, and keep for every row only the 16 bits that follow the bucket bits (its
*fingerprint*). A key's bucket is its top bits; its row is the position of its
fingerprint inside the bucket's run of the sorted fingerprint array.

Memory, for n rows and B = 2**bucket_bits buckets (bucket_bits chosen so that
5 <= n / B < 10):

- ``fingerprints``   uint16 (n,)       2 bytes a row
- ``bucket_offsets`` uint16 (B + 1,)   start of each bucket relative to its block
- ``block_bases``    uint64 (B / 2048 + 2,)  absolute start of each block of 2048 buckets

so 2 + 2 / (n / B) <= 2.4 bytes a row. Rows are stored in key order, so the masks (or
dense vectors) of a field are stored in that order too.

The price of storing 16 bits instead of 64:
- an unseen key is falsely matched when its fingerprint equals one in its bucket,
  with probability about (n / B) / 65536 < 0.016 %;
- two stored keys that agree on their top ``bucket_bits + 16`` bits cannot be told
  apart; the writer keeps the more frequent one (``aliased`` counts the others, about
  n**2 / 2**(bucket_bits + 17): ~60 at 1e6 rows, ~4,500 at 1e8) and their lookups return
  the kept row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from saec.store import _kernels
from saec.store.errors import InvalidTableError

FINGERPRINT_BITS = 16
BLOCK_BITS = 11
# The top bits pick a bucket, the next 16 are the fingerprint: together at most 64.
MAX_BUCKET_BITS = 64 - FINGERPRINT_BITS
# n / B stays in [TARGET_LOAD, 2 * TARGET_LOAD): 5 keeps the offsets near 0.3 bytes a
# row while a bucket still fits in one cache line of fingerprints.
TARGET_LOAD = 5

Kernel = Literal["numba", "numpy"]


def bucket_bits_for(n: int) -> int:
    """The number of top key bits that select a bucket for ``n`` rows."""
    if n < 2 * TARGET_LOAD:
        return 0
    return min(int(np.floor(np.log2(n / TARGET_LOAD))), MAX_BUCKET_BITS)


@dataclass(frozen=True)
class KeyIndex:
    """A field's key index; arrays may be memory-mapped.

    Attributes:
        fingerprints: uint16 (n,), sorted within each bucket.
        bucket_offsets: uint16 or uint32 (B + 1,), bucket starts relative to their block.
        block_bases: uint64 (B // 2048 + 2,), absolute block starts; the last is n.
        bucket_bits: log2 of the number of buckets B.
    """

    fingerprints: npt.NDArray[np.uint16]
    bucket_offsets: npt.NDArray[np.unsignedinteger]
    block_bases: npt.NDArray[np.uint64]
    bucket_bits: int

    @property
    def rows(self) -> int:
        return int(self.fingerprints.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.fingerprints.nbytes + self.bucket_offsets.nbytes + self.block_bases.nbytes)

    def lookup(self, keys: npt.NDArray[np.uint64], kernel: Kernel = "numba") -> npt.NDArray[np.int64]:
        """Rows of hashed keys.

        Args:
            keys: uint64 (m,), hashed ids.
            kernel: "numba" (compiled loop) or "numpy" (vectorised reference).
        Returns:
            int64 (m,): the row of each key, -1 where the key is not stored.
        """
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        out = np.empty(keys.shape[0], dtype=np.int64)
        if self.rows == 0:
            out.fill(-1)
            return out
        if kernel == "numba":
            _kernels.probe(keys, self.bucket_bits, BLOCK_BITS, self.block_bases, self.bucket_offsets, self.fingerprints, out)
        else:
            _probe_numpy(keys, self, out)
        return out


@dataclass(frozen=True)
class BuiltIndex:
    """What :func:`build` returns.

    Attributes:
        index: the key index over the kept rows.
        order: int64 (rows,), for each stored row the input row it came from.
        aliased: input keys dropped because a kept key shares their fingerprint.
        next_bits: uint16 (rows,), the 16 key bits after each stored row's fingerprint
            (zeros past bit 64): what lets a fold grow the bucket bits (``store.fold``).
    """

    index: KeyIndex
    order: npt.NDArray[np.int64]
    aliased: int
    next_bits: npt.NDArray[np.uint16] | None = None


def build(
    keys: npt.NDArray[np.uint64], counts: npt.NDArray[np.integer] | None = None, *, bucket_bits: int | None = None
) -> BuiltIndex:
    """Build the index of a field's hashed keys.

    Args:
        keys: uint64 (n,), distinct hashed ids.
        counts: integer (n,) feature frequencies; among keys that alias, the most
            frequent is kept (the first in key order when counts is None or tied).
        bucket_bits: force the number of bucket bits (default: ``bucket_bits_for(n)``);
            a fold keeps its base's, whose keys are known only to that many bits + 16.
    Returns:
        The index and, for each stored row, the input row it holds.
    Raises:
        InvalidTableError: keys not uint64 1-d, or a key given twice.
    """
    keys = np.asarray(keys)
    if keys.ndim != 1 or keys.dtype != np.uint64:
        raise InvalidTableError(f"expected keys as uint64 (n,), got {keys.dtype} {keys.shape}")
    n = keys.shape[0]
    # Distinct keys have one sorted order, so an unstable sort gives the same index; it
    # measured 2x faster than a stable one on 5e6 keys (numpy's vectorised introsort).
    order = np.argsort(keys)
    sorted_keys = keys[order]
    dup = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    if dup.size:
        # Ties are broken by row only in a stable order: name the first two rows of the key.
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        dup = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
        raise InvalidTableError(
            f"expected distinct keys, got {dup.size} repeated (first: {int(sorted_keys[dup[0]])} "
            f"at rows {sorted(int(r) for r in order[dup[0] : dup[0] + 2])})"
        )
    bits = bucket_bits_for(n) if bucket_bits is None else bucket_bits
    prefix = sorted_keys >> np.uint64(64 - bits - FINGERPRINT_BITS)
    if n and (prefix[1:] == prefix[:-1]).any():
        keep = _keep_most_frequent(prefix, None if counts is None else np.asarray(counts)[order])
    else:
        keep = np.arange(n)
    order = order[keep].astype(np.int64)
    prefix = prefix[keep]
    fingerprints = (prefix & np.uint64(0xFFFF)).astype(np.uint16)
    buckets = (prefix >> np.uint64(FINGERPRINT_BITS)).astype(np.int64)
    bucket_starts = np.zeros((1 << bits) + 1, dtype=np.int64)
    np.cumsum(np.bincount(buckets, minlength=1 << bits), out=bucket_starts[1:])
    index = _split_offsets(bucket_starts, bits, fingerprints)
    shift = bits + FINGERPRINT_BITS
    kept = sorted_keys[keep]
    if shift < 64:
        next_bits = ((kept << np.uint64(shift)) >> np.uint64(64 - FINGERPRINT_BITS)).astype(np.uint16)
    else:
        next_bits = np.zeros(kept.shape[0], np.uint16)
    return BuiltIndex(index=index, order=order, aliased=n - int(keep.shape[0]), next_bits=next_bits)


def _keep_most_frequent(
    prefix: npt.NDArray[np.uint64], counts: npt.NDArray[np.integer] | None
) -> npt.NDArray[np.intp]:
    """For each run of keys sharing a fingerprint (equal sorted ``prefix``), the position of
    the one to keep: the most frequent, the first of equals (the first without counts)."""
    if counts is None:
        starts = np.ones(prefix.shape[0], dtype=bool)
        starts[1:] = prefix[1:] != prefix[:-1]
        return np.flatnonzero(starts)
    return _kernels.keep_most_frequent(prefix, np.ascontiguousarray(counts))


def _split_offsets(
    bucket_starts: npt.NDArray[np.int64], bits: int, fingerprints: npt.NDArray[np.uint16]
) -> KeyIndex:
    """Store bucket starts as small offsets from a base per block of 2**BLOCK_BITS buckets."""
    n_buckets = 1 << bits
    blocks = (n_buckets >> BLOCK_BITS) + 2
    block_first_bucket = np.minimum(np.arange(blocks, dtype=np.int64) << BLOCK_BITS, n_buckets)
    block_bases = bucket_starts[block_first_bucket].astype(np.uint64)
    offsets = bucket_starts - bucket_starts[block_first_bucket[np.arange(n_buckets + 1) >> BLOCK_BITS]]
    # Hashed keys put ~10k rows in a block; keys that are not uniform may not.
    dtype = np.uint16 if offsets.max(initial=0) <= np.iinfo(np.uint16).max else np.uint32
    return KeyIndex(
        fingerprints=fingerprints,
        bucket_offsets=offsets.astype(dtype),
        block_bases=block_bases,
        bucket_bits=bits,
    )


def _probe_numpy(keys: npt.NDArray[np.uint64], index: KeyIndex, out: npt.NDArray[np.int64]) -> None:
    """Vectorised probe: one pass over the batch per fingerprint compared."""
    bits = index.bucket_bits
    if bits:
        bucket = (keys >> np.uint64(64 - bits)).astype(np.int64)
    else:
        bucket = np.zeros(keys.shape[0], dtype=np.int64)
    fp = ((keys >> np.uint64(64 - bits - FINGERPRINT_BITS)) & np.uint64(0xFFFF)).astype(np.uint16)
    bases = index.block_bases
    offs = index.bucket_offsets
    pos = (bases[bucket >> BLOCK_BITS] + offs[bucket]).astype(np.int64)
    nxt = bucket + 1
    end = (bases[nxt >> BLOCK_BITS] + offs[nxt]).astype(np.int64)
    out.fill(-1)
    live = np.flatnonzero(pos < end)
    fps = index.fingerprints
    while live.size:
        seen = fps[pos[live]]
        want = fp[live]
        hit = seen == want
        out[live[hit]] = pos[live[hit]]
        # Fingerprints are sorted within a bucket: passing the wanted one ends the search.
        go_on = (seen < want) & (pos[live] + 1 < end[live])
        live = live[go_on]
        pos[live] += 1
