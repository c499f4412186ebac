"""Compiled FNV-1a over many byte strings laid end to end in one buffer.

String ids arrive as a buffer of their UTF-8 bytes and the offsets where each one
starts, so the cost is one pass over the bytes the request actually holds: no
fixed-width array sized by the longest id (a single 8 MB id beside 200,000 empty ones
would otherwise cost 200,001 x 8 MB).
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def fnv1a64_segments(buf: npt.NDArray[np.uint8], starts: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    """FNV-1a of ``buf[starts[i]:starts[i + 1]]`` with trailing NUL bytes dropped.

    Trailing NULs are not significant in saec-hash-v1 (numpy's fixed-width byte
    strings cannot hold them), so a fixed-width array's rows hash the same as the
    strings they hold.

    Args:
        buf: uint8 (total,), the strings' bytes end to end.
        starts: int64 (n + 1,), nondecreasing, ``starts[n] <= total``.
    Returns:
        uint64 (n,).
    """
    n = starts.shape[0] - 1
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        lo = starts[i]
        hi = starts[i + 1]
        while hi > lo and buf[hi - 1] == 0:
            hi -= 1
        h = _FNV_OFFSET
        for j in range(lo, hi):
            h = (h ^ np.uint64(buf[j])) * _FNV_PRIME
        out[i] = h
    return out
