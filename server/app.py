"""The FastAPI application, built by :func:`create_app` over a :class:`LiveEngine`.

Routes validate input, make one engine call and return a response; errors travel
as exceptions to ``server.problems``, the only place that knows HTTP statuses.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from saec import __version__
from saec.server import problems
from saec.server.codec import parse_lookup, render_lookup
from saec.server.errors import NotReadyError, PayloadTooLargeError
from saec.server.fastpath import FastLookup
from saec.server.metrics import Metrics
from saec.settings import Settings
from saec.store.engine import LookupEngine
from saec.store.footprint import snapshot_footprint
from saec.store.live import LiveEngine, Reloader
from saec.wire import IDS_MEDIA_TYPE, VECTORS_MEDIA_TYPE


def _json(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type="application/json")


_LOOKUP_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["fields"],
                    "additionalProperties": False,
                    "properties": {
                        "fields": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "array",
                                "items": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                            },
                        },
                        "hashed": {"type": "boolean", "default": False},
                        "encoding": {"type": "string", "enum": ["float", "base64"], "default": "float"},
                    },
                },
                "example": {"fields": {"user": [1, 2, 3], "item": [10, 11]}},
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


class _CountRequests:
    """Pure ASGI middleware (no per-request task, unlike BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            self.metrics.observe_request(scope["path"], status, time.perf_counter() - start)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes without reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"expected a body of at most {limit} bytes, got Content-Length {declared}")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"expected a body of at most {limit} bytes, got more")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: Settings, live: LiveEngine | None = None) -> FastAPI:
    """Build the service over ``live`` (by default, the CURRENT snapshot of ``settings.store``)."""
    if live is None:
        live = LiveEngine(
            settings.store,
            default=settings.default_vector,  # type: ignore[arg-type]
            max_ids=settings.max_ids,
            verify=settings.verify_on_open,
        )
    metrics = Metrics()
    reloader = Reloader(live, settings.reload_interval)

    def engine() -> LookupEngine:
        current = live.engine
        if current is None:
            raise NotReadyError(f"no snapshot published in {settings.store} yet")
        return current

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reloader.start()
        yield
        reloader.stop()

    app = FastAPI(
        title="saec",
        version=__version__,
        summary="Compressed embedding lookups from memory-mapped snapshots",
        lifespan=lifespan,
        default_response_class=Response,
    )
    problems.install(app)

    def answer_lookup(body: bytes, content_type: str | None, accept: str | None) -> Response:
        serving = engine()  # one engine for the whole request, even across a reload
        parsed = parse_lookup(body, content_type)
        result = serving.lookup(parsed.fields)
        for name, r in result.fields.items():
            metrics.observe_lookup(name, r.found.shape[0], int(r.found.shape[0] - r.found.sum()))
        return render_lookup(result, accept, serving, parsed.encoding)

    # POST /lookup skips the framework (server/fastpath.py); added first, so that the
    # request counter added next still sees every lookup.
    app.add_middleware(FastLookup, handle=answer_lookup, limit=settings.max_body_bytes)
    app.add_middleware(_CountRequests, metrics=metrics)

    @app.post("/lookup", openapi_extra=_LOOKUP_OPENAPI, summary="Vectors of a batch of ids, per field")
    async def lookup(request: Request) -> Response:
        # Answered by FastLookup in front of the app; this route documents it in the OpenAPI schema.
        body = await read_body(request, settings.max_body_bytes)
        return answer_lookup(body, request.headers.get("content-type"), request.headers.get("accept"))

    @app.get("/memory", summary="Bytes per field against the same table uncompressed")
    async def memory() -> Response:
        return _json(snapshot_footprint(engine().snapshot))

    @app.get("/snapshot", summary="The snapshot being served")
    async def snapshot() -> Response:
        snap = engine().snapshot
        return _json(
            {
                "version": snap.version,
                "created": snap.created,
                "source": snap.source,
                "format_version": snap.format_version,
                "hash": snap.hash_name,
                "fields": {
                    f.name: {"kind": f.kind, "dim": f.dim, "k": f.k, "features": f.features, "rows": f.rows}
                    for f in snap
                },
                "limits": {"max_ids": settings.max_ids, "max_body_bytes": settings.max_body_bytes},
                "last_reload_error": live.last_error,
            }
        )

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz", summary="A snapshot is being served")
    async def readyz() -> Response:
        return _json({"status": "ready", "version": engine().version})

    @app.get("/metrics", summary="Prometheus metrics of this worker")
    async def prometheus() -> Response:
        current = live.engine
        metrics.reloads = live.reloads
        return Response(
            metrics.render(current.version if current else ""), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    return app


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` and worker processes: settings from SAEC_*."""
    return create_app(Settings.from_env())
