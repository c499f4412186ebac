"""Request bodies in, response bodies out, for POST /lookup.

JSON request: ``{"fields": {"user": [17, 42], "query": ["shoes"]}, "hashed": false}``;
ids are raw integers or strings (hashed here with saec-hash-v1) or, with
``"hashed": true``, saec-hash-v1 keys as unsigned 64-bit integers; ``"encoding":
"base64"`` asks for each vector as the base64 of its little-endian float32 bytes.
Binary request: see ``saec.wire``. The response is binary when the request's Accept
names ``application/x-saec-vectors``, else JSON (``server.jsontext``):
``{"version": "...", "fields": {"user": {"dim": 9, "vectors": [[...]], "found": [true, false]}}}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from starlette.responses import Response

from saec.server import limits
from saec.server.errors import MalformedRequestError, UnsupportedMediaTypeError
from saec.server.jsonids import read_int_request
from saec.server.jsontext import ENCODINGS, Encoding, render_json
from saec.store.engine import LookupEngine, LookupResult
from saec.store.hashing import hash_ids
from saec.wire import IDS_MEDIA_TYPE, VECTORS_MEDIA_TYPE, decode_ids, encode_vectors_buffer, ids_header

JSON_MEDIA_TYPE = "application/json"


def media_type(header: str | None) -> str:
    return (header or JSON_MEDIA_TYPE).split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class LookupRequest:
    """A parsed lookup: hashed keys per field (uint64 (n,)), and how JSON vectors are written."""

    fields: dict[str, npt.NDArray[np.uint64]]
    encoding: Encoding = "float"


def parse_lookup(body: bytes, content_type: str | None, engine: LookupEngine) -> LookupRequest:
    """Hashed keys per field, and options, from a request body, checked against
    ``engine``'s snapshot and limits before any hashing (``server.limits`` says the order).

    Raises:
        UnsupportedMediaTypeError, MalformedRequestError, WireError, InvalidIdsError,
        UnknownFieldError, BatchTooLargeError.
    """
    kind = media_type(content_type)
    if kind == IDS_MEDIA_TYPE:
        limits.check_ids_header(ids_header(body), engine)
        msg = decode_ids(body, check_field=engine.field)
        limits.check_counts({name: ids.shape[0] for name, ids in msg.fields.items()}, engine)
        return LookupRequest({name: hash_ids(ids, name, hashed=msg.hashed) for name, ids in msg.fields.items()})
    if kind != JSON_MEDIA_TYPE:
        raise UnsupportedMediaTypeError(
            f"expected Content-Type {JSON_MEDIA_TYPE} or {IDS_MEDIA_TYPE}, got {content_type!r}"
        )
    # Integer ids, the common case, read by one compiled pass over the bytes (its cost is
    # linear in the body, and it gives up past the snapshot's number of fields); anything
    # else takes the general path below, which counts its structure before parsing.
    fast = _int_request(body, engine)
    if fast is not None:
        return fast
    limits.check_json_shape(body, engine)
    try:
        doc: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequestError(f"expected a JSON body, got invalid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("fields"), dict):
        raise MalformedRequestError('expected a JSON object like {"fields": {"<field>": [ids...]}}, got ' + _short(doc))
    hashed = doc.get("hashed", False)
    if not isinstance(hashed, bool):
        raise MalformedRequestError(f'expected "hashed" to be true or false, got {_short(hashed)}')
    encoding = doc.get("encoding", "float")
    if encoding not in ENCODINGS:
        raise MalformedRequestError(f'expected "encoding" to be one of {list(ENCODINGS)}, got {_short(encoding)}')
    extra = set(doc) - {"fields", "hashed", "encoding"}
    if extra:
        raise MalformedRequestError(
            f'expected only the keys "fields", "hashed" and "encoding", got also {_short(sorted(extra))}'
        )
    fields: dict[str, Any] = doc["fields"]
    limits.check_fields(fields, engine)
    for name, ids in fields.items():
        if not isinstance(ids, list):
            raise MalformedRequestError(f"field {name!r}: expected a list of ids, got {_short(ids)}")
    limits.check_counts({name: len(ids) for name, ids in fields.items()}, engine)
    for name, ids in fields.items():
        limits.check_string_ids(name, ids)
    return LookupRequest({name: hash_ids(ids, name, hashed=hashed) for name, ids in fields.items()}, encoding)


def hashed_fields(
    fields: Mapping[str, tuple[Sequence[Any] | npt.NDArray[Any], bool]], engine: LookupEngine
) -> dict[str, npt.NDArray[np.uint64]]:
    """Hashed keys per field of a request already parsed into ids per field (gRPC): the
    checks of every lookup (``server.limits``, same order and errors), then the hashing.

    Args:
        fields: field -> (ids, whether they are saec-hash-v1 keys already).
    Raises:
        UnknownFieldError, BatchTooLargeError, InvalidIdsError.
    """
    limits.check_fields(fields, engine)
    limits.check_counts({name: len(ids) for name, (ids, _) in fields.items()}, engine)
    for name, (ids, hashed) in fields.items():
        if not hashed and isinstance(ids, list):
            limits.check_string_ids(name, ids)
    return {name: hash_ids(ids, name, hashed=hashed) for name, (ids, hashed) in fields.items()}


_TOP_BIT = np.uint64(1 << 63)


def _int_request(body: bytes, engine: LookupEngine) -> LookupRequest | None:
    """The request read by ``server.jsonids`` when it is of integer ids that the general
    path would accept as they are; None sends it down the general path (same answers,
    same errors)."""
    read = read_int_request(body, max_fields=len(engine.snapshot.fields))
    if read is None:
        return None
    fields, negatives, hashed, encoding = read
    limits.check_fields(fields, engine)
    limits.check_counts({name: ids.shape[0] for name, ids in fields.items()}, engine)
    out = {}
    for name, ids in fields.items():
        negative = negatives[name]
        if negative.any() and (hashed or (ids[~negative] >= _TOP_BIT).any()):
            return None  # refused by the general path: negative hashed ids, or ids beyond 64 bits
        out[name] = ids if hashed else hash_ids(ids, name)
    return LookupRequest(out, encoding)


def wants_binary(accept: str | None) -> bool:
    return bool(accept) and VECTORS_MEDIA_TYPE in accept  # type: ignore[operator]


def render_lookup(
    result: LookupResult, accept: str | None, engine: LookupEngine, encoding: Encoding = "float"
) -> Response:
    """The answer in the form the request's Accept asks for; ``engine`` is the one that
    answered (its snapshot's codebook rows are rendered to JSON once and reused)."""
    if wants_binary(accept):
        body = encode_vectors_buffer(result.version, {n: (r.vectors, r.found) for n, r in result.fields.items()})
        return Response(body, media_type=VECTORS_MEDIA_TYPE, headers={"X-Saec-Snapshot": result.version})
    return Response(
        render_json(result, engine, encoding), media_type=JSON_MEDIA_TYPE, headers={"X-Saec-Snapshot": result.version}
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def warm_request_kernels() -> None:
    """Compile (or load from numba's cache) every kernel a request may reach outside the
    engine: the JSON id reader, the structure count, string hashing, the row-text join and
    base64. A worker does this before it accepts requests, so that none waits for it."""
    from saec.server._jsonscan import count_structure
    from saec.server.jsontext import warm_kernels
    from saec.store import hashing

    warm_kernels()
    count_structure(np.frombuffer(b'{"fields": {"f": ["a"]}}', dtype=np.uint8))
    hashing.hash_ids(["a"], "f")
    hashing.hash_ids([b"a"], "f")
