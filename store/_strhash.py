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


@numba.njit(cache=True, nogil=True, boundscheck=False)
def utf8_starts(buf: npt.NDArray[np.uint8], char_lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Byte offsets of strings laid end to end in UTF-8, from their lengths in characters.

    Encoding the joined text once and walking its lead bytes costs one pass over the
    bytes, where encoding each string apart would build one bytes object per id.

    Args:
        buf: uint8 (total,), valid UTF-8 of the strings end to end.
        char_lengths: int64 (n,), each string's length in code points.
    Returns:
        int64 (n + 1,), where each string starts, then the end.
    """
    n = char_lengths.shape[0]
    starts = np.empty(n + 1, dtype=np.int64)
    pos = 0
    for i in range(n):
        starts[i] = pos
        for _ in range(char_lengths[i]):
            lead = buf[pos]
            if lead < 0x80:
                pos += 1
            elif lead < 0xE0:
                pos += 2
            elif lead < 0xF0:
                pos += 3
            else:
                pos += 4
    starts[n] = pos
    return starts
