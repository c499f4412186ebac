"""Base64 of many equal-length byte rows at once, and back (RFC 4648, padded).

The JSON answer's ``"encoding": "base64"`` option (the convention of embedding APIs)
carries each vector as the base64 of its little-endian float32 bytes. Python's
``base64`` module encodes one buffer a call, which would be a call per id; rows of one
field all have the same length, so one compiled loop encodes or decodes a whole batch.
CPU for 4096 rows of 64 bytes (process_time, this machine): these kernels 0.27 ms to
encode and 0.45 ms to decode; ``binascii`` over the rows padded to 3 bytes 0.53 ms and
1.0-1.8 ms; the same in numpy uint8 array operations 2.6 ms and 1.6-2.1 ms.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

_ALPHABET = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", dtype=np.uint8).copy()
_VALUES = np.full(256, 255, dtype=np.uint8)
_VALUES[_ALPHABET] = np.arange(64, dtype=np.uint8)


class Base64Error(ValueError):
    """Text that is not base64 rows of the expected length."""


def encoded_width(length: int) -> int:
    """Characters of the base64 text of ``length`` bytes (padded)."""
    return 4 * ((length + 2) // 3)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _encode(rows, alphabet, out):  # pragma: no cover
    n, length = rows.shape
    for i in range(n):
        o = 0
        j = 0
        while j + 3 <= length:
            w = (np.uint32(rows[i, j]) << 16) | (np.uint32(rows[i, j + 1]) << 8) | np.uint32(rows[i, j + 2])
            out[i, o] = alphabet[w >> 18]
            out[i, o + 1] = alphabet[(w >> 12) & 63]
            out[i, o + 2] = alphabet[(w >> 6) & 63]
            out[i, o + 3] = alphabet[w & 63]
            o += 4
            j += 3
        rest = length - j
        if rest:
            w = np.uint32(rows[i, j]) << 16
            if rest == 2:
                w |= np.uint32(rows[i, j + 1]) << 8
            out[i, o] = alphabet[w >> 18]
            out[i, o + 1] = alphabet[(w >> 12) & 63]
            out[i, o + 2] = alphabet[(w >> 6) & 63] if rest == 2 else 61  # "="
            out[i, o + 3] = 61


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _decode(text, values, out):  # pragma: no cover
    n = text.shape[0]
    length = out.shape[1]
    bad = np.uint8(0)
    for i in range(n):
        j = 0
        o = 0
        while o < length:
            a = values[text[i, j]]
            b = values[text[i, j + 1]]
            c = values[text[i, j + 2]] if o + 1 < length else np.uint8(0)
            d = values[text[i, j + 3]] if o + 2 < length else np.uint8(0)
            bad |= a | b | c | d
            w = (np.uint32(a) << 18) | (np.uint32(b) << 12) | (np.uint32(c) << 6) | np.uint32(d)
            out[i, o] = (w >> 16) & 255
            if o + 1 < length:
                out[i, o + 1] = (w >> 8) & 255
            if o + 2 < length:
                out[i, o + 2] = w & 255
            o += 3
            j += 4
    # Valid characters decode to 0-63; the 255 of any other sets the top bits.
    return bad < 64


def encode_rows(rows: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """ASCII base64 of each row.

    Args:
        rows: uint8 (n, length).
    Returns:
        uint8 (n, encoded_width(length)): each row's base64, padded with "=".
    """
    out = np.empty((rows.shape[0], encoded_width(rows.shape[1])), dtype=np.uint8)
    _encode(np.ascontiguousarray(rows, dtype=np.uint8), _ALPHABET, out)
    return out


def decode_rows(text: npt.NDArray[np.uint8], length: int) -> npt.NDArray[np.uint8]:
    """The bytes of each row of base64 text (the padding characters are not read).

    Args:
        text: uint8 (n, encoded_width(length)), ASCII.
        length: bytes per row.
    Returns:
        uint8 (n, length).
    Raises:
        Base64Error: a width other than encoded_width(length), or characters outside the alphabet.
    """
    n, width = text.shape
    if width != encoded_width(length):
        raise Base64Error(f"expected base64 rows of {encoded_width(length)} characters for {length} bytes, got {width}")
    out = np.empty((n, length), dtype=np.uint8)
    if not _decode(np.ascontiguousarray(text, dtype=np.uint8), _VALUES, out):
        raise Base64Error("expected base64 characters (A-Z a-z 0-9 + /), got others")
    return out
