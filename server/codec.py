"""Request bodies in, response bodies out, for POST /lookup.

JSON request: ``{"fields": {"user": [17, 42], "query": ["shoes"]}, "hashed": false}``;
ids are raw integers or strings (hashed here with saec-hash-v1) or, with
``"hashed": true``, saec-hash-v1 keys as unsigned 64-bit integers.
Binary request: see ``saec.wire``. The response is binary when the request's Accept
names ``application/x-saec-vectors``, else JSON:
``{"version": "...", "fields": {"user": {"dim": 9, "vectors": [[...]], "found": [true, false]}}}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from saec.server import limits
from saec.server.errors import MalformedRequestError, UnsupportedMediaTypeError
from saec.store.engine import LookupEngine, LookupResult
from saec.store.hashing import hash_ids
from saec.wire import IDS_MEDIA_TYPE, VECTORS_MEDIA_TYPE, decode_ids, encode_vectors, ids_header

JSON_MEDIA_TYPE = "application/json"


def media_type(header: str | None) -> str:
    return (header or JSON_MEDIA_TYPE).split(";", 1)[0].strip().lower()


def parse_lookup(body: bytes, content_type: str | None, engine: LookupEngine) -> dict[str, npt.NDArray[np.uint64]]:
    """Hashed keys per field from a request body, checked against ``engine``'s snapshot
    and limits before any hashing (see ``server.limits`` for the order).

    Raises:
        UnsupportedMediaTypeError, MalformedRequestError, WireError, InvalidIdsError,
        UnknownFieldError, BatchTooLargeError.
    """
    kind = media_type(content_type)
    if kind == IDS_MEDIA_TYPE:
        limits.check_ids_header(ids_header(body), engine)
        msg = decode_ids(body, check_field=engine.field)
        limits.check_counts({name: ids.shape[0] for name, ids in msg.fields.items()}, engine)
        return {name: hash_ids(ids, name, hashed=msg.hashed) for name, ids in msg.fields.items()}
    if kind != JSON_MEDIA_TYPE:
        raise UnsupportedMediaTypeError(
            f"expected Content-Type {JSON_MEDIA_TYPE} or {IDS_MEDIA_TYPE}, got {content_type!r}"
        )
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
    extra = set(doc) - {"fields", "hashed"}
    if extra:
        raise MalformedRequestError(f'expected only the keys "fields" and "hashed", got also {_short(sorted(extra))}')
    fields: dict[str, Any] = doc["fields"]
    limits.check_fields(fields, engine)
    for name, ids in fields.items():
        if not isinstance(ids, list):
            raise MalformedRequestError(f"field {name!r}: expected a list of ids, got {_short(ids)}")
    limits.check_counts({name: len(ids) for name, ids in fields.items()}, engine)
    for name, ids in fields.items():
        limits.check_string_ids(name, ids)
    return {name: hash_ids(ids, name, hashed=hashed) for name, ids in fields.items()}


async def read_lookup(body: bytes, content_type: str | None, engine: LookupEngine) -> dict[str, npt.NDArray[np.uint64]]:
    """:func:`parse_lookup`, in a worker thread for large bodies so the event loop stays free."""
    if len(body) < limits.THREAD_BODY_BYTES:
        return parse_lookup(body, content_type, engine)
    return await run_in_threadpool(parse_lookup, body, content_type, engine)


def wants_binary(accept: str | None) -> bool:
    return bool(accept) and VECTORS_MEDIA_TYPE in accept  # type: ignore[operator]


def render_lookup(result: LookupResult, accept: str | None) -> Response:
    if wants_binary(accept):
        body = encode_vectors(result.version, {n: (r.vectors, r.found) for n, r in result.fields.items()})
        return Response(body, media_type=VECTORS_MEDIA_TYPE, headers={"X-Saec-Snapshot": result.version})
    doc = {
        "version": result.version,
        "fields": {
            n: {"dim": int(r.vectors.shape[1]), "vectors": r.vectors, "found": r.found} for n, r in result.fields.items()
        },
    }
    return Response(
        orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY),
        media_type=JSON_MEDIA_TYPE,
        headers={"X-Saec-Snapshot": result.version},
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
