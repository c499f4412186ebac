"""Admin routes, mounted only when ``SAEC_ADMIN_TOKEN`` is set: ``POST /admin/updates``.

Every request carries ``Authorization: Bearer <SAEC_ADMIN_TOKEN>`` (the scheme in any
case), the token compared in constant time; without it, or with another token, the
answer is a 401 problem. Bodies get a lookup's checks (``server.limits``) before any
parse work, and large ones are parsed off the event loop.

JSON body::

    {"fields": {"user": {"ids": [17, 42], "vectors": [[...], [...]]}}, "hashed": false}

ids raw (integers or strings, hashed here with saec-hash-v1) or, with ``"hashed": true``,
saec-hash-v1 keys. The binary form for large batches (``application/x-saec-updates``) is
described in ``saec.wire``. The answer, once the batch is on disk::

    {"base": "<snapshot version>", "sequence": 12,
     "fields": {"user": {"accepted": 2, "new": 1, "reassigned": 1,
                         "distance": {"mean": 0.41, "p99": 0.97}}}}

A batch with any bad row is refused whole (422, naming field and row); an id given
twice in one batch is such a row. See ``store.updates``.

With an update log shared by a fleet (``SAEC_UPDATE_LOG``), the checked batch goes to the
log instead, and the 200 comes once the log has it durably: ``{"base", "position",
"applied", "fields"}``, ``applied`` telling whether this replica already serves it
(``store.replicate``); a log that cannot be reached is a 503 and nothing is acknowledged.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import orjson
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from saec.server import limits
from saec.server.codec import JSON_MEDIA_TYPE, media_type
from saec.server.errors import MalformedRequestError, NotReadyError, UnauthorizedError, UnsupportedMediaTypeError
from saec.server.metrics import Metrics
from saec.settings import Settings
from saec.store.engine import LookupEngine
from saec.store.errors import InvalidUpdateError
from saec.store.hashing import hash_ids
from saec.store.live import LiveEngine
from saec.store.updates import PreparedUpdate, Updater, UpdateResult
from saec.wire import UPDATES_MEDIA_TYPE, decode_updates, ids_header

if TYPE_CHECKING:
    from saec.store.replicate import Acknowledgement, Fleet

Fields = dict[str, tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]]

_UPDATES_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            JSON_MEDIA_TYPE: {
                "schema": {
                    "type": "object",
                    "required": ["fields"],
                    "additionalProperties": False,
                    "properties": {
                        "fields": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "required": ["ids", "vectors"],
                                "properties": {
                                    "ids": {"type": "array", "items": {"anyOf": [
                                        {"type": "integer", "minimum": -(2**63), "exclusiveMaximum": 2**64},
                                        {"type": "string", "maxLength": limits.MAX_ID_CHARS},
                                    ]}},
                                    "vectors": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                                },
                            },
                        },
                        "hashed": {"type": "boolean", "default": False},
                    },
                },
                # A field of `saec demo` (dim 9, raw ids 0..199), so that "Try it out" there is accepted.
                "example": {"fields": {"country": {"ids": [3, 1000], "vectors": [[0.1] * 9, [0.2] * 9]}}},
            },
            UPDATES_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "responses": {
        "200": {"description": "On disk: base snapshot, frame sequence, per field accepted/new/reassigned/distance."},
        "401": {"description": "No or wrong bearer token", "content": {"application/problem+json": {}}},
        "404": {"description": "Unknown field", "content": {"application/problem+json": {}}},
        "413": {"description": "Body too large", "content": {"application/problem+json": {}}},
        "422": {"description": "A bad row (named) or a malformed body; nothing applied", "content": {"application/problem+json": {}}},
        "503": {"description": "A newer snapshot went live; retry", "content": {"application/problem+json": {}}},
    },
}


def parse_updates(body: bytes, content_type: str | None, engine: LookupEngine | None = None) -> Fields:
    """Hashed ids and float32 vectors per field from a request body.

    With ``engine``, the checks of ``server.limits`` run first: structure before parsing,
    then field names, row counts and string id lengths before any hashing.

    Raises:
        UnsupportedMediaTypeError, MalformedRequestError, WireError, InvalidIdsError,
        InvalidUpdateError, UnknownFieldError, BatchTooLargeError.
    """
    kind = media_type(content_type)
    if kind == UPDATES_MEDIA_TYPE:
        if engine is not None:
            limits.check_updates_header(ids_header(body), engine)
        msg = decode_updates(body)
        if engine is not None:
            limits.check_fields(msg.fields, engine)
            limits.check_counts({n: ids.shape[0] for n, (ids, _) in msg.fields.items()}, engine, "update")
        return {n: (hash_ids(ids, n, hashed=msg.hashed), v) for n, (ids, v) in msg.fields.items()}
    if kind != JSON_MEDIA_TYPE:
        raise UnsupportedMediaTypeError(f"expected Content-Type {JSON_MEDIA_TYPE} or {UPDATES_MEDIA_TYPE}, got {content_type!r}")
    if engine is not None:
        limits.check_update_json_shape(body, engine)
    try:
        doc: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequestError(f"expected a JSON body, got invalid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("fields"), dict) or set(doc) - {"fields", "hashed"}:
        raise MalformedRequestError(
            'expected a JSON object like {"fields": {"<field>": {"ids": [...], "vectors": [[...]]}}, "hashed": false}, '
            f"got keys {_short(sorted(doc)) if isinstance(doc, dict) else type(doc).__name__}"
        )
    hashed = doc.get("hashed", False)
    if not isinstance(hashed, bool):
        raise MalformedRequestError(f'expected "hashed" to be true or false, got {hashed!r}'[:200])
    entries: dict[str, Any] = doc["fields"]
    for name, entry in entries.items():
        if not isinstance(entry, dict) or set(entry) != {"ids", "vectors"} or not isinstance(entry["ids"], list):
            raise MalformedRequestError(f'field {_short(name)}: expected {{"ids": [...], "vectors": [[...], ...]}}')
    if engine is not None:
        limits.check_fields(entries, engine)
        limits.check_counts({name: len(e["ids"]) for name, e in entries.items()}, engine, "update")
    # Booleans are numbers to numpy; in a body without the words there are none to look for.
    maybe_booleans = b"true" in body or b"false" in body
    out: Fields = {}
    for name, entry in entries.items():
        limits.check_string_ids(name, entry["ids"])
        out[name] = (hash_ids(entry["ids"], name, hashed=hashed), _vectors(name, entry["vectors"], maybe_booleans))
    return out


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _vectors(name: str, rows: Any, maybe_booleans: bool = True) -> npt.NDArray[np.float32]:
    if not isinstance(rows, list):
        raise InvalidUpdateError(f"field {name!r}: expected vectors as a list of lists of numbers")
    if not rows:
        return np.empty((0, 0), np.float32)
    if maybe_booleans:
        # orjson writes numbers as digits and booleans as words: one C pass finds them.
        text = orjson.dumps(rows)
        if b"true" in text or b"false" in text:
            row = next(i for i, r in enumerate(rows) if isinstance(r, list) and any(type(x) is bool for x in r))
            raise InvalidUpdateError(f"field {_short(name)}: expected vectors of numbers, row {row} holds a boolean")
    try:
        # Numbers past float32's range become infinity, which the update check refuses by row.
        with np.errstate(over="ignore"):
            arr = np.array(rows, dtype=np.float32)
    except (ValueError, TypeError):
        arr = None
    if arr is None or arr.ndim != 2:
        # The error path only: find the first row that is not like row 0, to name it.
        width = len(rows[0]) if rows and isinstance(rows[0], list) else None
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != width or not all(isinstance(x, int | float) for x in row):
                raise InvalidUpdateError(
                    f"field {name!r}: expected every vector as a list of {width} numbers, row {i} is {str(row)[:80]}"
                )
        raise InvalidUpdateError(f"field {name!r}: expected vectors as a list of lists of numbers")
    return arr


class UpdatePath:
    """The one way a batch of updates is applied, for ``POST /admin/updates`` and the gRPC
    ``Update`` (``server.grpc_service``): the same token check, the same Updater per
    snapshot, the same all-or-nothing prepare and durable commit, the same metrics.

    With ``fleet`` (an update log shared by every replica), the durable write is the
    append to the log (``store.replicate.Fleet.append``), not to this replica's delta log.
    """

    def __init__(self, settings: Settings, live: LiveEngine, metrics: Metrics, fleet: Fleet | None = None) -> None:
        self.settings = settings
        self.live = live
        self.metrics = metrics
        self.fleet = fleet
        self._token = settings.admin_token.encode()
        self._updaters: dict[str, Updater] = {}
        # The event loop (HTTP) and gRPC's threads both ask: one Updater a snapshot.
        self._lock = threading.Lock()

    def authorize(self, given: str | bytes | None) -> None:
        """Raise UnauthorizedError unless ``given`` is ``Bearer <SAEC_ADMIN_TOKEN>``: the scheme
        in any case (RFC 7235), the token compared in constant time."""
        raw = given.encode("latin-1", "replace") if isinstance(given, str) else (given or b"")
        scheme, _, token = raw.partition(b" ")
        if (
            not self.settings.admin_token or scheme.lower() != b"bearer"
            or not hmac.compare_digest(token, self._token)
        ):
            raise UnauthorizedError("expected the header Authorization: Bearer <SAEC_ADMIN_TOKEN>")

    def updater(self) -> Updater:
        """One Updater (and its centroid indexes) per snapshot served."""
        engine = self.live.engine
        if engine is None:
            raise NotReadyError(f"no snapshot published in {self.settings.store} yet")
        with self._lock:
            up = self._updaters.get(engine.version)
            if up is None:
                self._updaters.clear()
                up = self._updaters[engine.version] = Updater(
                    self.live.layout.root, engine, search=self.settings.assign_search,
                    ef=self.settings.hnsw_ef, on_superseded=self.live.reload,
                )
            return up

    async def apply(self, up: Updater, fields: Fields) -> UpdateResult | Acknowledgement:
        """Check the whole batch, then write it durably; nothing is applied if any row is bad."""
        prepared = up.prepare(fields)
        # Assignment and fsync block: off the event loop, so lookups go on meanwhile.
        return await run_in_threadpool(self.commit, up, prepared)

    def apply_blocking(self, up: Updater, fields: Fields) -> UpdateResult | Acknowledgement:
        """:meth:`apply` for a caller on its own thread (the gRPC server's)."""
        return self.commit(up, up.prepare(fields))

    def commit(self, up: Updater, prepared: PreparedUpdate) -> UpdateResult | Acknowledgement:
        """Write a prepared batch (blocks on the disk, or on the log) and count it."""
        result: UpdateResult | Acknowledgement = up.commit(prepared) if self.fleet is None else self.fleet.append(
            up, prepared)
        for name, rep in result.fields.items():
            self.metrics.observe_updates(name, rep.accepted, float(rep.distances.sum(dtype=np.float64)))
        return result


def admin_router(
    settings: Settings,
    live: LiveEngine,
    metrics: Metrics,
    read_body: Callable[[Request, int], Awaitable[bytes]],
    path: UpdatePath | None = None,
) -> APIRouter:
    """The admin routes over ``live``; ``read_body`` is the app's size-limited body reader;
    ``path`` the update path to share (one is made if None)."""
    path = path if path is not None else UpdatePath(settings, live, metrics)

    def authorized(request: Request) -> None:
        path.authorize(request.headers.get("authorization", ""))

    router = APIRouter(prefix="/admin", dependencies=[Depends(authorized)])

    @router.post(
        "/updates", openapi_extra=_UPDATES_OPENAPI, summary="Append updated or new features' vectors (durable before 200)"
    )
    async def updates(request: Request) -> Response:
        up = path.updater()
        body = await read_body(request, settings.max_body_bytes)
        content_type = request.headers.get("content-type")

        def prepare() -> PreparedUpdate:
            return up.prepare(parse_updates(body, content_type, up.engine))

        # A large body is parsed and checked off the event loop, as a lookup's is.
        prepared = prepare() if len(body) < limits.THREAD_BODY_BYTES else await run_in_threadpool(prepare)
        # Assignment and fsync block: off the event loop, so lookups go on meanwhile.
        result = await run_in_threadpool(path.commit, up, prepared)
        return Response(orjson.dumps(result.as_dict()), media_type=JSON_MEDIA_TYPE)

    return router
