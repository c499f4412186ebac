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


def field_salt(field: str) -> np.uint64:
    """The 64-bit salt of a field name."""
    return splitmix64(np.array([_fnv1a64_bytes(b"saec:" + field.encode("utf-8"))], dtype=np.uint64))[0]


def _fnv1a64_fixed(raw: npt.NDArray[np.bytes_]) -> npt.NDArray[np.uint64]:
    """FNV-1a over fixed-width byte strings, one column of bytes at a time.

    Args:
        raw: numpy ``S<w>`` (n,); each string's length is where its trailing NULs begin.
    Returns:
        uint64 (n,).
    """
    n = raw.shape[0]
    width = raw.dtype.itemsize
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    if n == 0 or width == 0:
        return h
    cols = np.ascontiguousarray(raw).view(np.uint8).reshape(n, width)
    lengths = np.char.str_len(raw)
    # The loop runs over byte positions (at most the longest id), never over ids.
    for j in range(width):
        live = lengths > j
        mixed = (h ^ cols[:, j].astype(np.uint64)) * _FNV_PRIME
        np.copyto(h, mixed, where=live)
    return h


def _as_id_array(ids: Sequence[Any] | npt.NDArray[Any], unsigned_first: bool = False) -> npt.NDArray[Any]:
    """A 1-d numpy array of one kind of id (integers, str or bytes).

    ``unsigned_first``: try uint64 before int64 (hashed keys, half of them above 2**63,
    would otherwise be converted twice).
    """
    if isinstance(ids, np.ndarray) and ids.dtype != object:
        arr = ids
    else:
        # set(map(type, ...)) iterates in C: cheap next to parsing the ids at all.
        kinds = set(map(type, ids))
        if not kinds:
            return np.zeros(0, dtype=np.uint64)
        if kinds <= {int, np.int64, np.uint64}:
            # Hashed keys above 2**63 arrive as large Python ints, negative raw ids as negative
            # ones: whichever type fails, the other is tried.
            first, second = (np.uint64, np.int64) if unsigned_first else (np.int64, np.uint64)
            try:
                arr = np.array(ids, dtype=first)
            except OverflowError:
                try:
                    arr = np.array(ids, dtype=second)
                except OverflowError:
                    raise InvalidIdsError("expected integer ids within 64 bits, got a larger one") from None
        elif kinds == {str}:
            arr = np.array(ids, dtype=np.str_)
        elif kinds == {bytes}:
            arr = np.array(ids, dtype=np.bytes_)
        else:
            names = ", ".join(sorted(k.__name__ for k in kinds))
            got = f"a mix of {names}" if len(kinds) > 1 else names
            raise InvalidIdsError(f"expected ids all integers or all strings, got {got}")
    if arr.ndim != 1:
        raise InvalidIdsError(f"expected a 1-d sequence of ids, got shape {arr.shape}")
    return arr


def hash_ids(
    ids: Sequence[Any] | npt.NDArray[Any], field: str, *, hashed: bool = False
) -> npt.NDArray[np.uint64]:
    """Hash raw feature ids of one field to uint64 keys (saec-hash-v1).

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
    arr = _as_id_array(ids, unsigned_first=hashed)
    if arr.size == 0:
        return np.zeros(0, dtype=np.uint64)
    kind = arr.dtype.kind
    if hashed:
        if kind == "u":
            return arr.astype(np.uint64, copy=False)
        if kind == "i":
            if (arr < 0).any():
                raise InvalidIdsError("expected hashed ids as unsigned 64-bit integers, got negative values")
            return arr.astype(np.uint64)
        raise InvalidIdsError(f"expected hashed ids as unsigned 64-bit integers, got {_describe(arr)}")
    salt = field_salt(field)
    if kind in "iu":
        # astype to uint64 wraps negatives modulo 2**64, as documented.
        return splitmix64(arr.astype(np.uint64) ^ salt)
    if kind == "b":
        raise InvalidIdsError("expected integer or string ids, got booleans")
    if kind == "U":
        raw = np.char.encode(arr, "utf-8")
    elif kind == "S":
        raw = arr
    else:
        raise InvalidIdsError(f"expected integer or string ids, got {_describe(arr)}")
    return splitmix64(_fnv1a64_fixed(raw) ^ salt ^ STRING_TAG)


def _describe(arr: npt.NDArray[Any]) -> str:
    return f"dtype {arr.dtype}"
