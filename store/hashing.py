"""saec-hash-v1: the one 64-bit hash of raw feature ids, salted per field.

The writer, the lookup engine and the client all call :func:`hash_ids`, so a raw id
hashes to the same key wherever it is seen. The definition is part of the snapshot
format (``HASH_NAME`` is recorded in every snapshot) and must never change under
that name:

- field salt: ``splitmix64(fnv1a64(b"saec:" + field.encode("utf-8")))``
- integer id ``x`` (any width; negative values are taken modulo 2**64):
  ``splitmix64(uint64(x) ^ salt)``
- string id ``s``: ``splitmix64(fnv1a64(s.encode("utf-8")) ^ salt ^ STRING_TAG)``;
  bytes are hashed as they are. Trailing NUL bytes are not significant (numpy's
  fixed-width byte strings cannot hold them).

splitmix64 is a bijection on 64-bit integers, so distinct integer ids of one field
never collide; its output is uniform, which the key index relies on.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from saec.store.errors import InvalidIdsError

HASH_NAME = "saec-hash-v1"

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
# Keeps the string 7 and the integer 7 apart.
STRING_TAG = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """The splitmix64 finaliser, elementwise.

    Args:
        x: uint64 (n,).
    Returns:
        uint64 (n,), a new array.
    """
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _fnv1a64_bytes(data: bytes) -> np.uint64:
    h = int(_FNV_OFFSET)
    for b in data:
        h = ((h ^ b) * int(_FNV_PRIME)) & 0xFFFFFFFFFFFFFFFF
    return np.uint64(h)


@functools.lru_cache(maxsize=4096)
def field_salt(field: str) -> np.uint64:
    """The 64-bit salt of a field name (cached: a service sees the same few names)."""
    return splitmix64(np.array([_fnv1a64_bytes(b"saec:" + field.encode("utf-8"))], dtype=np.uint64))[0]


def _fnv1a64_strings(buf: npt.NDArray[np.uint8], starts: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    # Imported on first use: hashing integer ids (the client's common case) needs no compiler.
    from saec.store._strhash import fnv1a64_segments

    return fnv1a64_segments(buf, starts)


def _starts(lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """int64 (n + 1,) offsets of strings of ``lengths`` laid end to end."""
    starts = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    return starts


def _pack_strings(ids: Sequence[Any], kind: type) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """The UTF-8 bytes of a sequence of str (or bytes) end to end, and where each starts.

    Memory is the ids' own bytes plus 8 bytes an id, whatever their lengths.

    Returns:
        uint8 (total,) and int64 (n + 1,).
    """
    n = len(ids)
    if kind is str:
        joined = "".join(ids)
        try:
            data = joined.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidIdsError(f"expected string ids encodable as UTF-8, got {exc.reason}") from None
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=n)
        del joined
        buf = np.frombuffer(data, dtype=np.uint8)
        if len(data) == lengths.sum():
            return buf, _starts(lengths)  # ASCII: one byte per character
        from saec.store._strhash import utf8_starts

        return buf, utf8_starts(buf, lengths)
    data = b"".join(ids)
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=n)
    return np.frombuffer(data, dtype=np.uint8), _starts(lengths)


def _int_array(ids: Sequence[Any] | npt.NDArray[Any], unsigned_first: bool = False) -> npt.NDArray[Any]:
    """int64 (n,) of Python integers, or uint64 (n,) when some are at or above 2**63.

    ``unsigned_first``: try uint64 before int64 (hashed keys, half of them above 2**63,
    would otherwise be converted twice).
    """
    # Hashed keys above 2**63 arrive as large Python ints, negative raw ids as negative
    # ones: whichever type fails, the other is tried.
    for dtype in (np.uint64, np.int64) if unsigned_first else (np.int64, np.uint64):
        try:
            return np.array(ids, dtype=dtype)
        except OverflowError:
            pass
    # Negative and >= 2**63 ids together: reduce modulo 2**64 as documented.
    obj = np.array(ids, dtype=object)
    if ((obj < -(1 << 63)) | (obj >= (1 << 64))).any():
        raise InvalidIdsError("expected integer ids within 64 bits, got a larger one") from None
    return (obj % (1 << 64)).astype(np.uint64)


def _classify(ids: Sequence[Any] | npt.NDArray[Any], unsigned_first: bool = False) -> tuple[str, Any]:
    """("int", int or uint array), ("str", list of str), ("bytes", list of bytes) or ("fixed", S array)."""
    if isinstance(ids, np.ndarray) and ids.dtype != object:
        if ids.ndim != 1:
            raise InvalidIdsError(f"expected a 1-d sequence of ids, got shape {ids.shape}")
        kind = ids.dtype.kind
        if kind in "iu":
            return "int", ids
        if kind == "U":
            return "fixed", np.char.encode(ids, "utf-8")
        if kind == "S":
            return "fixed", ids
        if kind == "b":
            raise InvalidIdsError("expected integer or string ids, got booleans")
        raise InvalidIdsError(f"expected integer or string ids, got {_describe(ids)}")
    if isinstance(ids, np.ndarray) and ids.ndim != 1:
        raise InvalidIdsError(f"expected a 1-d sequence of ids, got shape {ids.shape}")
    # set(map(type, ...)) iterates in C: cheap next to parsing the ids at all.
    kinds = set(map(type, ids))
    if not kinds:
        return "int", np.zeros(0, dtype=np.uint64)
    if kinds <= {int, np.int64, np.uint64}:
        return "int", _int_array(ids, unsigned_first)
    if kinds == {str}:
        return "str", ids
    if kinds == {bytes}:
        return "bytes", ids
    names = ", ".join(sorted(k.__name__ for k in kinds))
    got = f"a mix of {names}" if len(kinds) > 1 else names
    raise InvalidIdsError(f"expected ids all integers or all strings, got {got}")


def hash_ids(
    ids: Sequence[Any] | npt.NDArray[Any], field: str, *, hashed: bool = False
) -> npt.NDArray[np.uint64]:
    """Hash raw feature ids of one field to uint64 keys (saec-hash-v1).

    String ids cost one pass over their bytes and 8 bytes an id of offsets, whatever
    their lengths (no fixed-width array sized by the longest).

    Args:
        ids: (n,) integers (any numpy int dtype, uint64, or Python ints) or strings
            (str/bytes, numpy ``U``/``S``/object holding str). One kind per call.
        field: the field's name; it salts the hash.
        hashed: the ids are already saec-hash-v1 keys; they are returned as uint64.
    Returns:
        uint64 (n,).
    Raises:
        InvalidIdsError: ids of mixed or unsupported kinds, or not 1-d.
    """
    kind, arr = _classify(ids, unsigned_first=hashed)
    if len(arr) == 0:
        return np.zeros(0, dtype=np.uint64)
    if hashed:
        if kind != "int":
            raise InvalidIdsError(f"expected hashed ids as unsigned 64-bit integers, got {kind} ids")
        if arr.dtype.kind == "u":
            return arr.astype(np.uint64, copy=False)
        if (arr < 0).any():
            raise InvalidIdsError("expected hashed ids as unsigned 64-bit integers, got negative values")
        return arr.astype(np.uint64)
    salt = field_salt(field)
    if kind == "int":
        # astype to uint64 wraps negatives modulo 2**64, as documented.
        return splitmix64(arr.astype(np.uint64) ^ salt)
    if kind == "fixed":
        # Rows of a fixed-width array end to end; the kernel drops each row's NUL padding.
        width = arr.dtype.itemsize
        buf = np.ascontiguousarray(arr).view(np.uint8).reshape(-1)
        starts = np.arange(arr.shape[0] + 1, dtype=np.int64) * width
    else:
        buf, starts = _pack_strings(arr, str if kind == "str" else bytes)
    return splitmix64(_fnv1a64_strings(buf, starts) ^ salt ^ STRING_TAG)


def _describe(arr: npt.NDArray[Any]) -> str:
    return f"dtype {arr.dtype}"
