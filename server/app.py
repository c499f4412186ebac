"""The FastAPI application, built by :func:`create_app` over a :class:`LiveEngine`.

Routes validate input, make one engine call and return a response; errors travel
as exceptions to ``server.problems``, the only place that knows HTTP statuses.
"""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi_offline import FastAPIOffline
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from saec import __version__
from saec.server import problems
from saec.server.codec import parse_lookup, render_lookup, warm_request_kernels
from saec.server.errors import NotReadyError, PayloadTooLargeError
from saec.server.fastpath import FastLookup, answer_off_loop
from saec.server.metrics import CONTENT_TYPE, Metrics, route_label
from saec.server.openapi import LOOKUP_OPENAPI
from saec.server.redact import Redactor
from saec.server.supervision import die_with_supervisor
from saec.settings import Settings
from saec.store.engine import LookupEngine
from saec.store.footprint import snapshot_footprint
from saec.store.live import LiveEngine, Reloader
from saec.store.replica import open_live, shard_of


def _json(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type="application/json")


class _SaecApp(FastAPI):
    """The FastAPI app, with ``POST /lookup`` handed to :attr:`lookup` before any of the
    framework's layers: the middleware stack around a route (error handling, body limit,
    telemetry, request counting) cost ~0.1 ms of a 0.45 ms binary lookup (server CPU
    under wrk)."""

    lookup: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.lookup is not None and scope["type"] == "http" and scope["path"] == "/lookup"
            and scope["method"] == "POST"
        ):
            await self.lookup(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


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
            self.metrics.observe_request(route_label(scope), status, time.perf_counter() - start)


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
        live = open_live(
            settings.store,
            fields=settings.fields,
            cache=settings.store_cache,
            default=settings.default_vector,
            max_ids=settings.max_ids,
            verify=settings.verify_on_open,
            interval=settings.reload_interval,
        )
    metrics = Metrics(live)
    warm_request_kernels()
    reloader = Reloader(live, settings.reload_interval)

    def engine() -> LookupEngine:
        current = live.engine
        if current is None:
            raise NotReadyError(f"no snapshot served from {settings.store} yet; last error: {live.last_error}")
        return current

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # What is alive once the app is built (modules, the app, compiled kernels: ~190,000
        # objects) lives as long as the worker. Left to the collector, every full collection
        # walks it all, 20-80 ms with the worker's requests waiting (measured with gc.callbacks
        # under wrk): that was the p99. Frozen, a collection walks only newer objects.
        gc.collect()
        gc.freeze()
        reloader.start()
        yield
        reloader.stop()

    # /docs and /redoc from assets shipped in fastapi-offline's wheel: they work offline.
    app = FastAPIOffline(
        title="saec",
        version=__version__,
        summary="Compressed embedding lookups from memory-mapped snapshots",
        lifespan=lifespan,
        default_response_class=Response,
    )
    # FastAPIOffline is a function that builds a FastAPI; the subclass adds only __call__.
    app.__class__ = _SaecApp
    assert isinstance(app, _SaecApp)
    public = Redactor([settings.store, *([settings.store_cache] if settings.store_cache else [])])
    problems.install(app, redact=public)

    def answer_lookup(body: bytes, content_type: str | None, accept: str | None) -> Response:
        serving = engine()  # one engine for the whole request, even across a reload
        parsed = parse_lookup(body, content_type, serving)
        result = serving.lookup(parsed.fields)
        for name, r in result.fields.items():
            metrics.observe_lookup(name, r.found.shape[0], int(r.found.shape[0] - r.found.sum()))
        return render_lookup(result, accept, serving, parsed.encoding)

    # POST /lookup skips the framework and its middleware (server/fastpath.py), counted
    # by the same request counter as every other route.
    app.lookup = _CountRequests(
        FastLookup(app, handle=answer_lookup, limit=settings.max_body_bytes, redact=public), metrics=metrics
    )
    app.add_middleware(_CountRequests, metrics=metrics)
    if settings.admin_token:
        from saec.server.admin import admin_router

        app.include_router(admin_router(settings, live, metrics, read_body))

    @app.post("/lookup", openapi_extra=LOOKUP_OPENAPI, summary="Vectors of a batch of ids, per field")
    async def lookup(request: Request) -> Response:
        # Answered by FastLookup in front of the app; this route documents it in the OpenAPI schema.
        body = await read_body(request, settings.max_body_bytes)
        return await answer_off_loop(answer_lookup, body, request.headers.get("content-type"), request.headers.get("accept"))

    @app.get("/memory", summary="Bytes per field against the same table uncompressed")
    async def memory() -> Response:
        serving = engine()
        snap = serving.snapshot
        return _json({
            **snapshot_footprint(snap),
            "shard": shard_of(snap),
            "deltas": serving.overlay and serving.overlay.summary(),
        })

    @app.get("/snapshot", summary="The snapshot being served")
    async def snapshot() -> Response:
        serving = engine()
        snap = serving.snapshot
        return _json(
            {
                "version": snap.version,
                "created": snap.created,
                "source": public(snap.source),
                "format_version": snap.format_version,
                "hash": snap.hash_name,
                "fields": {
                    f.name: {"kind": f.kind, "dim": f.dim, "k": f.k, "features": f.features, "rows": f.rows}
                    for f in snap
                },
                "shard": shard_of(snap),
                "limits": {"max_ids": settings.max_ids, "max_body_bytes": settings.max_body_bytes},
                **live.status(),
                "last_reload_error": public(live.last_error),
                "deltas": serving.overlay and serving.overlay.summary(),
            }
        )

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz", summary="A snapshot is being served")
    async def readyz() -> Response:
        serving = engine()
        if reason := live.unready_reason():
            raise NotReadyError(reason)
        doc = {"status": "ready", "version": serving.version}
        if serving.overlay is not None:
            # Damage or an unreadable segment of the delta log: the snapshot and every intact
            # frame are still served, so ready, and said here (and in /snapshot, /metrics).
            serving.overlay.refresh()
            if (health := serving.overlay.health()) is not None:
                doc["deltas"] = public(health)
        return _json(doc)

    @app.get("/metrics", summary="Prometheus metrics of every worker")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` and worker processes: settings from SAEC_*."""
    die_with_supervisor()
    return create_app(Settings.from_env())
