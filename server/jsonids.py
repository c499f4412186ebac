"""A fast reader for the common shape of a JSON lookup request: integer ids.

``orjson.loads`` turns every id of ``{"fields": {"user": [17, 42, ...]}, "hashed": true}``
into a Python int, and ``hash_ids`` then checks their types and turns them into a numpy
array: for 4096 ids about 0.19 + 0.29 ms of server CPU, more than the lookup and the
JSON answer together. :func:`read_int_request` reads that shape straight from the bytes:
the few structural tokens in Python, each id array by one compiled loop into uint64
(``parse_lookup`` of 4096 hashed ids: 0.19 ms against 0.51 ms, process CPU, load 7-9).

It is strict and narrow: anything it does not recognise exactly (string ids, floats or
exponents, escapes in names, other keys, repeated keys or fields, numbers out of range,
any syntax error) makes it return None, and the request goes through ``orjson`` and
``hash_ids`` as before, which give the same answers and the same errors. A differential
test (tests/server/test_jsonids.py) holds the two paths equal on valid and mutated bodies.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

from saec.store._kernels import load_u64

_WS = b" \t\n\r"
_KEYS = (b"fields", b"hashed", b"encoding")
_ENCODINGS = {b"float": "float", b"base64": "base64"}


@numba.njit(cache=True, nogil=True, inline="always")
def _eight_digits(x):  # pragma: no cover
    """Whether the 8 bytes in ``x`` (little-endian uint64) are all ASCII digits."""
    hi = np.uint64(0xF0F0F0F0F0F0F0F0)
    return ((x & hi) | (((x + np.uint64(0x0606060606060606)) & hi) >> np.uint64(4))) == np.uint64(0x3333333333333333)


@numba.njit(cache=True, nogil=True, inline="always")
def _eight_digits_value(x):  # pragma: no cover
    """The number the 8 ASCII digits in ``x`` write (first digit in the lowest byte), with
    three multiplies instead of eight dependent multiply-adds (the SWAR method of simdjson)."""
    mask = np.uint64(0x000000FF000000FF)
    v = x - np.uint64(0x3030303030303030)
    v = v * np.uint64(10) + (v >> np.uint64(8))
    return ((v & mask) * np.uint64(0x000F424000000064) + ((v >> np.uint64(16)) & mask) * np.uint64(0x0000271000000001)) >> np.uint64(32)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _parse_ints(body, start, close):  # pragma: no cover
    """Parse ``[ int , int ... ]`` from body[start] == '[' to body[close] == ']' (the first
    "]" after start, found by the caller with bytes.find, which is faster than a loop here).

    Returns (end, values uint64 (n,), negative bool (n,), ok): ``end`` is the index after
    ']'; negative values are stored as their two's complement; ok is False on anything
    but JSON integers (-?(0|[1-9][0-9]*)) in range (-2**63 .. 2**64-1) separated by commas.
    Indices are unsigned: with signed ones numba checks every access for a negative
    (wrap-around) index, which measured 10x slower here as in server.jsontext._join.
    """
    one = np.uint64(1)
    size = np.uint64(close) + one
    i = np.uint64(start) + one
    n_max = (close - start) // 2 + 1  # each id takes at least a digit and a comma
    values = np.empty(n_max, dtype=np.uint64)
    negative = np.zeros(n_max, dtype=np.bool_)
    n = 0
    ten = np.uint64(10)
    eight = np.uint64(8)
    limit = np.uint64(1844674407370955161)  # (2**64 - 1) // 10
    while i < size and (body[i] == 32 or body[i] == 9 or body[i] == 10 or body[i] == 13):
        i += one
    if i < size and body[i] == 93:
        return i + one, values[:0], negative[:0], True
    while True:
        neg = False
        if i < size and body[i] == 45:  # "-"
            neg = True
            i += one
        if i >= size or body[i] < 48 or body[i] > 57:
            return i, values[:0], negative[:0], False
        first = i
        v = np.uint64(0)
        # Eight digits a step while the number has at most 16 so far (no overflow is
        # possible below 20 digits): the digit-by-digit loop is one long chain of
        # multiply-adds, ~2x the cost of the whole parse of 20-digit hashed ids.
        while i + eight <= size and i - first <= eight:
            x = load_u64(body, i)
            if not _eight_digits(x):
                break
            v = v * np.uint64(100_000_000) + _eight_digits_value(x)
            i += eight
        while i < size and body[i] >= 48 and body[i] <= 57:
            d = np.uint64(body[i]) - np.uint64(48)
            if v > limit or (v == limit and d > np.uint64(5)):
                return i, values[:0], negative[:0], False
            v = v * ten + d
            i += one
        if body[first] == 48 and i - first > one:  # a leading zero
            return i, values[:0], negative[:0], False
        if i < size and (body[i] == 46 or body[i] == 101 or body[i] == 69):  # ".", "e", "E"
            return i, values[:0], negative[:0], False
        if neg:
            if v > np.uint64(9223372036854775808):  # below -2**63
                return i, values[:0], negative[:0], False
            v = ~v + one  # two's complement, as int64 ids travel
        values[n] = v
        negative[n] = neg
        n += 1
        while i < size and (body[i] == 32 or body[i] == 9 or body[i] == 10 or body[i] == 13):
            i += one
        if i >= size:
            return i, values[:0], negative[:0], False
        if body[i] == 93:
            return i + one, values[:n], negative[:n], True
        if body[i] != 44:
            return i, values[:0], negative[:0], False
        i += one
        while i < size and (body[i] == 32 or body[i] == 9 or body[i] == 10 or body[i] == 13):
            i += one


class _Reader:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.pos = 0

    def ws(self) -> None:
        b, i = self.body, self.pos
        while i < len(b) and b[i] in _WS:
            i += 1
        self.pos = i

    def char(self, c: int) -> bool:
        self.ws()
        if self.pos < len(self.body) and self.body[self.pos] == c:
            self.pos += 1
            return True
        return False

    def string(self) -> bytes | None:
        """A string without escapes or control characters, else None."""
        self.ws()
        b, i = self.body, self.pos
        if i >= len(b) or b[i] != 0x22:
            return None
        end = b.find(b'"', i + 1)
        if end < 0:
            return None
        raw = b[i + 1 : end]
        if b"\\" in raw or any(c < 0x20 for c in raw):
            return None
        self.pos = end + 1
        return raw

    def literal(self, word: bytes) -> bool:
        self.ws()
        if self.body.startswith(word, self.pos):
            self.pos += len(word)
            return True
        return False


def read_int_request(
    body: bytes, max_fields: int | None = None
) -> tuple[dict[str, npt.NDArray[np.uint64]], dict[str, npt.NDArray[np.bool_]], bool, str] | None:
    """(ids per field as uint64 (two's complement for negatives), which ids were negative,
    hashed, encoding) from a JSON lookup request of integer ids, or None for any other body.

    ``max_fields``: None as soon as a body names more fields than that (the snapshot's
    count), so a body of a million names costs no more than one of a few here; the general
    path then refuses it after counting its structure (``server.limits``)."""
    r = _Reader(body)
    if not r.char(ord("{")):
        return None
    seen: set[bytes] = set()
    fields: dict[str, npt.NDArray[np.uint64]] = {}
    negatives: dict[str, npt.NDArray[np.bool_]] = {}
    hashed, encoding = False, "float"
    arr = np.frombuffer(body, dtype=np.uint8)
    while True:
        key = r.string()
        if key is None or key not in _KEYS or key in seen or not r.char(ord(":")):
            return None
        seen.add(key)
        if key == b"fields":
            if not r.char(ord("{")):
                return None
            if not r.char(ord("}")):
                while True:
                    raw = r.string()
                    if raw is None or not r.char(ord(":")):
                        return None
                    try:
                        name = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        return None
                    if name in fields or (max_fields is not None and len(fields) >= max_fields):
                        return None
                    r.ws()
                    if r.pos >= len(body) or body[r.pos] != ord("["):
                        return None
                    close = body.find(b"]", r.pos)
                    if close < 0:
                        return None
                    end, values, negative, ok = _parse_ints(arr, r.pos, close)
                    if not ok:
                        return None
                    r.pos = int(end)
                    fields[name], negatives[name] = values, negative
                    if r.char(ord("}")):
                        break
                    if not r.char(ord(",")):
                        return None
        elif key == b"hashed":
            if r.literal(b"true"):
                hashed = True
            elif r.literal(b"false"):
                hashed = False
            else:
                return None
        else:
            value = r.string()
            if value not in _ENCODINGS:
                return None
            encoding = _ENCODINGS[value]
        if r.char(ord("}")):
            break
        if not r.char(ord(",")):
            return None
    r.ws()
    if r.pos != len(body) or b"fields" not in seen:
        return None
    return fields, negatives, hashed, encoding
