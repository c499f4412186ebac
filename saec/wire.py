"""The binary lookup protocol, shared by the server and the client.

Request, ``Content-Type: application/x-saec-ids``::

    "SAEC"  u8 version=1  u8 flags (bit 0: ids are already hashed)  u16 0
    u32 header length H
    H bytes of JSON: {"fields": [["user", 4096], ["item", 4096]]}
    zero padding to a multiple of 8 bytes
    the ids of every field in header order: little-endian uint64 (int64 raw ids
    are sent as their two's complement, which hashes the same)

Response, ``Content-Type: application/x-saec-vectors``::

    "SAEV"  u8 version=1  u8 0  u16 0
    u32 header length H
    H bytes of JSON: {"version": "<snapshot>", "fields": [["user", 4096, 9], ...]}
    zero padding to a multiple of 8 bytes
    per field in header order: float32 little-endian (n, dim) rows, then n bytes of
    found flags (0 or 1), then zero padding to a multiple of 4 bytes

Offsets are computable from the header alone, so either side decodes with
``np.frombuffer`` and no copy.

Updates, ``POST /admin/updates`` with ``Content-Type: application/x-saec-updates``::

    "SAEU"  u8 version=1  u8 flags (bit 0: ids are already hashed)  u16 0
    u32 header length H
    H bytes of JSON: {"fields": [["user", 1000, 9], ["item", 500, 16]]}  (name, n, dim)
    zero padding to a multiple of 8 bytes
    per field in header order: the ids as little-endian uint64 (n,) (raw int64 ids as
    their two's complement, as in a lookup), then the vectors as little-endian float32
    (n, dim), then zero padding to a multiple of 8 bytes

The answer is the same JSON as for a JSON update (see ``server/admin.py``). String ids
travel hashed: the client hashes them with saec-hash-v1 and sets the flag.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson

from saec.errors import SaecError

IDS_MEDIA_TYPE = "application/x-saec-ids"
VECTORS_MEDIA_TYPE = "application/x-saec-vectors"
UPDATES_MEDIA_TYPE = "application/x-saec-updates"
_REQ_MAGIC = b"SAEC"
_UPD_MAGIC = b"SAEU"
_RESP_MAGIC = b"SAEV"
_VERSION = 1
_PREFIX = struct.Struct("<4sBBHI")
FLAG_HASHED = 1


class WireError(SaecError, ValueError):
    """Bytes that do not follow the binary protocol."""


def _pad(n: int, to: int) -> int:
    return -n % to


@dataclass(frozen=True)
class IdsMessage:
    """A decoded request: field -> uint64 (n,) ids, and whether they are hashed."""

    fields: dict[str, npt.NDArray[np.uint64]]
    hashed: bool


def encode_ids(fields: Mapping[str, npt.NDArray[np.uint64]], *, hashed: bool) -> bytes:
    """Encode ids per field.

    Args:
        fields: field -> uint64 or int64 (n,) ids.
        hashed: the ids are saec-hash-v1 keys (else raw integer ids).
    """
    return b"".join(encode_ids_parts(fields, hashed=hashed))


def encode_ids_parts(fields: Mapping[str, npt.NDArray[np.uint64]], *, hashed: bool) -> list[bytes | memoryview]:
    """The request of :func:`encode_ids` as buffers to write one after another: the
    header, then a view of each field's ids (no copy of a contiguous little-endian
    array), for a vectored write (``socket.sendmsg``, ``transport.writelines``)."""
    arrays = [np.ascontiguousarray(a).astype("<u8", copy=False) for a in fields.values()]
    header = orjson.dumps({"fields": [[name, int(a.shape[0])] for name, a in zip(fields, arrays, strict=True)]})
    prefix = _PREFIX.pack(_REQ_MAGIC, _VERSION, FLAG_HASHED if hashed else 0, 0, len(header))
    pad = b"\0" * _pad(len(prefix) + len(header), 8)
    return [prefix + header + pad, *(a.data.cast("B") for a in arrays if a.shape[0])]


def ids_header(body: bytes) -> bytes:
    """The JSON header bytes of a binary request, unparsed (for checks before parsing).

    Raises:
        WireError: the body is too short to hold its prefix and header.
    """
    if len(body) < _PREFIX.size:
        raise WireError(f"expected at least {_PREFIX.size} bytes of binary header, got {len(body)}")
    hlen = _PREFIX.unpack_from(body)[4]
    end = _PREFIX.size + hlen
    if len(body) < end:
        raise WireError(f"expected a {hlen}-byte JSON header, got {len(body) - _PREFIX.size} bytes")
    return body[_PREFIX.size : end]


def _read_header(body: bytes, magic: bytes) -> tuple[int, dict, int]:
    if len(body) < _PREFIX.size:
        raise WireError(f"expected at least {_PREFIX.size} bytes of binary header, got {len(body)}")
    got_magic, version, flags, _, hlen = _PREFIX.unpack_from(body)
    if got_magic != magic:
        raise WireError(f"expected the magic bytes {magic!r}, got {got_magic!r}")
    if version != _VERSION:
        raise WireError(f"expected protocol version {_VERSION}, got {version}")
    end = _PREFIX.size + hlen
    if len(body) < end:
        raise WireError(f"expected a {hlen}-byte JSON header, got {len(body) - _PREFIX.size} bytes")
    try:
        header = orjson.loads(body[_PREFIX.size : end])
    except orjson.JSONDecodeError as exc:
        raise WireError(f"expected a JSON header, got invalid JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("fields"), list):
        raise WireError('expected a header like {"fields": [...]}, got ' + repr(header)[:200])
    return flags, header, end + _pad(end, 8)


def decode_ids(body: bytes, check_field: Callable[[str], object] | None = None) -> IdsMessage:
    """Decode a binary request; the arrays are views into ``body``.

    Args:
        body: the request.
        check_field: called with each field name before its ids are read; it raises
            to refuse the field (the server passes the engine's field lookup, so a
            header naming a million unknown fields stops at the first).
    """
    flags, header, offset = _read_header(body, _REQ_MAGIC)
    fields: dict[str, npt.NDArray[np.uint64]] = {}
    for entry in header["fields"]:
        if (
            not isinstance(entry, list)
            or len(entry) != 2
            or not isinstance(entry[0], str)
            or type(entry[1]) is not int  # not a bool either
            or entry[1] < 0
        ):
            raise WireError(f'expected each header field as ["name", count >= 0], got {entry!r}'[:300])
        name, count = entry
        if check_field is not None:
            check_field(name)
        if name in fields:
            raise WireError(f"expected each field once, got {name!r} twice")
        end = offset + 8 * count
        if end > len(body):
            raise WireError(f"field {name!r}: expected {count} ids ({8 * count} bytes), body ends {len(body) - offset} bytes in")
        fields[name] = np.frombuffer(body, dtype="<u8", count=count, offset=offset).astype(np.uint64, copy=False)
        offset = end
    if offset != len(body):
        raise WireError(f"expected {offset} bytes for the ids the header announces, got {len(body)}")
    return IdsMessage(fields=fields, hashed=bool(flags & FLAG_HASHED))


def encode_vectors_buffer(
    version: str, fields: Mapping[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]]
) -> memoryview:
    """The answer :func:`encode_vectors` encodes, as a memoryview of one buffer (each
    array copied into it once; the server sends it without another copy).

    Args:
        version: the snapshot version that served it.
        fields: field -> (float32 (n, dim) vectors, bool (n,) found).
    """
    header = orjson.dumps(
        {"version": version, "fields": [[name, int(v.shape[0]), int(v.shape[1])] for name, (v, _) in fields.items()]}
    )
    prefix = _PREFIX.pack(_RESP_MAGIC, _VERSION, 0, 0, len(header))
    start = len(prefix) + len(header) + _pad(len(prefix) + len(header), 8)
    total = start + sum(4 * v.size + f.shape[0] + _pad(f.shape[0], 4) for v, f in fields.values())
    # One buffer, each array copied into it once (tobytes and a join copied twice).
    out = np.empty(total, dtype=np.uint8)
    out[: len(prefix)] = np.frombuffer(prefix, np.uint8)
    out[len(prefix) : len(prefix) + len(header)] = np.frombuffer(header, np.uint8)
    out[len(prefix) + len(header) : start] = 0
    offset = start
    for vectors, found in fields.values():
        n = 4 * vectors.size
        out[offset : offset + n].view("<f4").reshape(vectors.shape)[...] = vectors
        offset += n
        out[offset : offset + found.shape[0]] = found
        offset += found.shape[0]
        out[offset : offset + _pad(found.shape[0], 4)] = 0
        offset += _pad(found.shape[0], 4)
    return out.data


def encode_vectors(
    version: str, fields: Mapping[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]]
) -> bytes:
    """Encode a lookup answer.

    Args:
        version: the snapshot version that served it.
        fields: field -> (float32 (n, dim) vectors, bool (n,) found).
    """
    return encode_vectors_buffer(version, fields).tobytes()


@dataclass(frozen=True)
class VectorsMessage:
    """A decoded answer: field -> (float32 (n, dim), bool (n,)), and the snapshot version."""

    version: str
    fields: dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]]


def decode_vectors(body: bytes) -> VectorsMessage:
    """Decode a binary answer; the arrays are read-only views into ``body``."""
    _, header, offset = _read_header(body, _RESP_MAGIC)
    out: dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]] = {}
    for name, n, dim in header["fields"]:
        vectors = np.frombuffer(body, dtype="<f4", count=n * dim, offset=offset).reshape(n, dim)
        offset += 4 * n * dim
        found = np.frombuffer(body, dtype=np.uint8, count=n, offset=offset).view(np.bool_)
        offset += n + _pad(n, 4)
        out[name] = (vectors, found)
    return VectorsMessage(version=header.get("version", ""), fields=out)


@dataclass(frozen=True)
class UpdatesMessage:
    """A decoded update: field -> (uint64 (n,) ids, float32 (n, dim) vectors), and whether ids are hashed."""

    fields: dict[str, tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]]
    hashed: bool


def encode_updates(
    fields: Mapping[str, tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]], *, hashed: bool
) -> bytes:
    """Encode updates per field.

    Args:
        fields: field -> (uint64 or int64 (n,) ids, float32 (n, dim) vectors).
        hashed: the ids are saec-hash-v1 keys (else raw integer ids).
    """
    pairs = []
    for name, (ids, vectors) in fields.items():
        ids = np.ascontiguousarray(ids).astype("<u8", copy=False)
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        if vectors.ndim != 2 or vectors.shape[0] != ids.shape[0]:
            raise WireError(f"field {name!r}: expected vectors (n, dim) for {ids.shape[0]} ids, got shape {vectors.shape}")
        pairs.append((name, ids, vectors))
    header = orjson.dumps({"fields": [[name, int(i.shape[0]), int(v.shape[1])] for name, i, v in pairs]})
    prefix = _PREFIX.pack(_UPD_MAGIC, _VERSION, FLAG_HASHED if hashed else 0, 0, len(header))
    parts = [prefix, header, b"\0" * _pad(len(prefix) + len(header), 8)]
    for _, ids, vectors in pairs:
        parts += [ids.tobytes(), vectors.tobytes(), b"\0" * _pad(vectors.nbytes, 8)]
    return b"".join(parts)


def decode_updates(body: bytes) -> UpdatesMessage:
    """Decode a binary update; the arrays are read-only views into ``body``."""
    flags, header, offset = _read_header(body, _UPD_MAGIC)
    fields: dict[str, tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]] = {}
    for entry in header["fields"]:
        if (
            not isinstance(entry, list)
            or len(entry) != 3
            or not isinstance(entry[0], str)
            or not all(type(x) is int and x >= 0 for x in entry[1:])  # not a bool either
        ):
            raise WireError(f'expected each header field as ["name", n >= 0, dim >= 0], got {entry!r}'[:300])
        name, n, dim = entry
        if name in fields:
            raise WireError(f"expected each field once, got {name!r} twice")
        size = 8 * n + 4 * n * dim
        end = offset + size + _pad(size, 8)
        if end > len(body):
            raise WireError(f"field {name!r}: expected {n} ids and {n}x{dim} vectors ({size} bytes), body ends {len(body) - offset} bytes in")
        ids = np.frombuffer(body, dtype="<u8", count=n, offset=offset).astype(np.uint64, copy=False)
        vectors = np.frombuffer(body, dtype="<f4", count=n * dim, offset=offset + 8 * n).reshape(n, dim)
        fields[name] = (ids, vectors.astype(np.float32, copy=False))
        offset = end
    if offset != len(body):
        raise WireError(f"expected {offset} bytes for the updates the header announces, got {len(body)}")
    return UpdatesMessage(fields=fields, hashed=bool(flags & FLAG_HASHED))
