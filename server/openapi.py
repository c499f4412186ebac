"""The OpenAPI description of POST /lookup, which FastAPI cannot infer: the route reads
its body itself (JSON or the binary protocol) so that limits are checked before parsing.

Bounds are written as values a float holds exactly (FastAPI renders large integers as
floats): -2**63 and an exclusive 2**64. The JSON schema says exactly what the server accepts: ids of one field all integers
(within 64 bits) or all strings (at most ``MAX_ID_CHARS`` characters), and with
``"hashed": true`` only unsigned 64-bit keys.
"""

from __future__ import annotations

from typing import Any

from saec.server import problems
from saec.server.limits import MAX_ID_CHARS
from saec.wire import IDS_MEDIA_TYPE, VECTORS_MEDIA_TYPE


def _ids(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


def _lookup_body(
    ids: dict[str, Any], *, hashed: dict[str, Any], required: tuple[str, ...] = ("fields",)
) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(required),
        "additionalProperties": False,
        "properties": {
            "fields": {"type": "object", "additionalProperties": ids},
            "hashed": hashed,
            # How JSON answers write each vector: float text, or the base64 of its
            # little-endian float32 bytes.
            "encoding": {"type": "string", "enum": ["float", "base64"], "default": "float"},
        },
    }


LOOKUP_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                # Ids of one field are all integers or all strings; "hashed": true takes
                # saec-hash-v1 keys, unsigned 64-bit integers (server.limits has the rest).
                "schema": {
                    "anyOf": [
                        _lookup_body(
                            {
                                "anyOf": [
                                    _ids({"type": "integer", "minimum": -(2**63), "exclusiveMaximum": 2**64}),
                                    _ids({"type": "string", "maxLength": MAX_ID_CHARS}),
                                ]
                            },
                            hashed={"type": "boolean", "const": False, "default": False},
                        ),
                        _lookup_body(
                            _ids({"type": "integer", "minimum": 0, "exclusiveMaximum": 2**64}),
                            hashed={"type": "boolean", "const": True},
                            required=("fields", "hashed"),
                        ),
                    ]
                },
                # Ids of `saec demo`, so that "Try it out" on the demo answers 200 with every id found.
                "example": {"fields": {"user_id": [17, 42], "item_id": [10, 11], "country": [3]}},
            },
            IDS_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "responses": {
        "200": {
            "description": "Vectors per field, found flags, and the snapshot version that served them.",
            "content": {"application/json": {}, VECTORS_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        },
        "404": {"description": "Unknown field", "content": {problems.PROBLEM_MEDIA_TYPE: {}}},
        "413": {"description": "Too many ids or too large a body", "content": {problems.PROBLEM_MEDIA_TYPE: {}}},
        "415": {"description": "Unsupported Content-Type", "content": {problems.PROBLEM_MEDIA_TYPE: {}}},
        "422": {"description": "Malformed request or ids", "content": {problems.PROBLEM_MEDIA_TYPE: {}}},
        "503": {"description": "No snapshot served yet", "content": {problems.PROBLEM_MEDIA_TYPE: {}}},
    },
}
