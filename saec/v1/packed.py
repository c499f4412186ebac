"""saec.v1 messages written straight to protobuf bytes where the generated classes cost
too much: a lookup's keys (the generated ``FieldIds`` takes one Python int an id, 0.3 ms
for 4096) and a lookup's answer (the generated ``FieldVectors`` copies the vectors three
times). Hand-written, beside the generated stubs; tests/grpc parses what they write with
the generated classes and compares it with what protobuf itself writes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt


def varint(n: int) -> bytes:
    """``n`` (>= 0) as a protobuf base-128 varint."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def len_key(tag: int, size: int) -> bytes:
    """The key and length of a length-delimited field (wire type 2) of ``size`` bytes."""
    return varint(tag << 3 | 2) + varint(size)


def uint_field(tag: int, value: int) -> bytes:
    """A varint field (wire type 0); proto3 leaves a zero out."""
    return varint(tag << 3) + varint(value) if value else b""


def with_keys(head: bytes, keys: npt.NDArray[np.uint64]) -> bytes:
    """A serialized FieldIds or FieldUpdate (``head``, without ids) with ``keys`` as its
    packed ``hashed_ids`` (field 4): protobuf reads concatenated fields as one message."""
    data = np.ascontiguousarray(keys).astype("<u8", copy=False).tobytes()
    return head + len_key(4, len(data)) + data if data else head


def repeated(tag: int, entries: list[bytes]) -> bytes:
    """Serialized messages as the repeated message field ``tag``."""
    return b"".join(len_key(tag, len(e)) + e for e in entries)


def lookup_response(version: str, fields: Mapping[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]]) -> bytes:
    """A serialized ``saec.v1.LookupResponse``: per field float32 (n, dim) vectors and bool
    (n,) found flags, each copied once into the answer."""
    parts: list[bytes | memoryview] = []
    name = version.encode()
    if name:
        parts += [len_key(1, len(name)), name]
    for field, (vectors, found) in fields.items():
        n, dim = found.shape[0], vectors.shape[1]
        rows = np.ascontiguousarray(vectors, dtype="<f4").reshape(-1).view(np.uint8).data
        flags = np.ascontiguousarray(found).view(np.uint8).data
        label = field.encode()
        head = b"".join([
            len_key(1, len(label)) + label if label else b"",
            uint_field(2, n),
            uint_field(3, dim),
            len_key(4, rows.nbytes) if rows.nbytes else b"",
        ])
        tail = len_key(5, n) if n else b""
        parts += [len_key(2, len(head) + rows.nbytes + len(tail) + flags.nbytes), head, rows, tail, flags]
    return b"".join(parts)
