"""The FastAPI application, built by :func:`create_app` over a :class:`LiveEngine`.

Routes validate input, make one engine call and return a response; errors travel
as exceptions to ``server.problems``, the only place that knows HTTP statuses.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import orjson
from fastapi import FastAPI, Request
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from saec import __version__
from saec.server import problems
from saec.server.codec import parse_lookup, render_lookup, warm_request_kernels
from saec.server.errors import NotReadyError, PayloadTooLargeError
from saec.server.fastpath import FastLookup, answer_off_loop
from saec.server.metrics import CONTENT_TYPE, MULTIPROC_ENV, Metrics, route_label
from saec.server.openapi import LOOKUP_OPENAPI
from saec.server.redact import Redactor
from saec.server.supervision import die_with_supervisor
from saec.settings import Settings
from saec.store.carry import MANIFEST_KEYS
from saec.store.drift import DriftWarnings
from saec.store.engine import LookupEngine, LookupResult
from saec.store.footprint import snapshot_footprint
from saec.store.live import LiveEngine, Reloader
from saec.store.replica import open_live, parse_fields, shard_of

if TYPE_CHECKING:
    from saec.store.replicate import Fleet

log = logging.getLogger("saec.server")


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


class DriftWatch:
    """Reports the served snapshot's drift (``store.drift``): in /snapshot, as gauges, and as
    one warning per field and snapshot past ``settings.drift_warn_ratio``, checked on every
    /snapshot and /metrics and by a thread every few seconds (what lookups applied since)."""

    def __init__(self, live: LiveEngine, metrics: Metrics, settings: Settings) -> None:
        self.live = live
        self.metrics = metrics
        self.warnings = DriftWarnings(settings.drift_warn_ratio, settings.drift_min_updates,
                                      shared_dir=os.environ.get(MULTIPROC_ENV) or None)
        self.settings = settings
        self.interval = max(settings.reload_interval, 1.0) if settings.reload_interval > 0 else 5.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="saec-drift", daemon=True)

    def check(self, serving: LookupEngine) -> dict[str, Any] | None:
        """The drift of ``serving``'s compressed fields (None without an overlay); sets the
        gauges and warns where due."""
        overlay = serving.overlay
        if overlay is None:
            return None
        report = overlay.drift.report()
        self.metrics.observe_drift(report)
        self.warnings.check(serving.version, report)
        return {"warn_ratio": self.settings.drift_warn_ratio, "min_updates": self.settings.drift_min_updates,
                "fields": report}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            serving = self.live.engine
            if serving is None:
                continue
            try:
                self.check(serving)
            except Exception:  # a report must never take the worker down
                log.exception("drift check failed")


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
    fleet = _open_fleet(settings, live, metrics)
    drift_watch = DriftWatch(live, metrics, settings)

    def engine() -> LookupEngine:
        current = live.engine
        if current is None:
            raise NotReadyError(f"no snapshot served from {settings.store} yet; last error: {live.last_error}")
        return current

    public = Redactor([settings.store, *([settings.store_cache] if settings.store_cache else [])])
    updates = None
    if settings.admin_token:
        from saec.server.admin import UpdatePath

        updates = UpdatePath(settings, live, metrics, fleet)

    def lookup_keys(serving: LookupEngine, keys: dict[str, npt.NDArray[np.uint64]]) -> LookupResult:
        """The lookup of every protocol: one engine's answer, its ids counted."""
        result = serving.lookup(keys)
        for name, r in result.fields.items():
            metrics.observe_lookup(name, r.found.shape[0], int(r.found.shape[0] - r.found.sum()))
        return result

    def memory_document() -> dict[str, Any]:
        serving = engine()
        snap = serving.snapshot
        return {
            **snapshot_footprint(snap),
            "shard": shard_of(snap),
            "deltas": serving.overlay and serving.overlay.summary(),
        }

    def snapshot_document() -> dict[str, Any]:
        serving = engine()
        snap = serving.snapshot
        return {
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
            "updates": {key: snap.manifest.get(key) for key in MANIFEST_KEYS},
            "drift": drift_watch.check(serving),
        }

    def unready() -> str | None:
        if live.engine is None:
            return f"no snapshot served from {settings.store} yet"
        if reason := live.unready_reason():
            return reason
        # A replica catching up on the fleet's update log is not ready on any protocol.
        return None if fleet is None else fleet.unready_reason(fleet.cached_status())

    grpc_server = None
    if settings.grpc_port:
        from saec.server.grpc_service import Core, GrpcServer

        grpc_server = GrpcServer(
            Core(settings, metrics, engine, lookup_keys, snapshot_document, memory_document, unready, updates, public)
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # What is alive once the app is built (modules, the app, compiled kernels: ~190,000
        # objects) lives as long as the worker. Left to the collector, every full collection
        # walks it all, 20-80 ms with the worker's requests waiting (measured with gc.callbacks
        # under wrk): that was the p99. Frozen, a collection walks only newer objects.
        gc.collect()
        gc.freeze()
        if fleet is not None:
            fleet.start()
        if grpc_server is not None:
            grpc_server.start()  # in this worker, beside HTTP (server.grpc_service); raises if the port is taken
        reloader.start()
        drift_watch.start()
        yield
        drift_watch.stop()
        if grpc_server is not None:
            await run_in_threadpool(grpc_server.stop)
        reloader.stop()
        if fleet is not None:
            fleet.stop()

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
    app.state.grpc = grpc_server
    problems.install(app, redact=public)

    def answer_lookup(body: bytes, content_type: str | None, accept: str | None) -> Response:
        serving = engine()  # one engine for the whole request, even across a reload
        parsed = parse_lookup(body, content_type, serving)
        result = lookup_keys(serving, parsed.fields)
        return render_lookup(result, accept, serving, parsed.encoding)

    # POST /lookup skips the framework and its middleware (server/fastpath.py), counted
    # by the same request counter as every other route.
    app.lookup = _CountRequests(
        FastLookup(app, handle=answer_lookup, limit=settings.max_body_bytes, redact=public), metrics=metrics
    )
    app.add_middleware(_CountRequests, metrics=metrics)
    if settings.admin_token:
        from saec.server.admin import admin_router

        app.include_router(admin_router(settings, live, metrics, read_body, updates))

    @app.post("/lookup", openapi_extra=LOOKUP_OPENAPI, summary="Vectors of a batch of ids, per field")
    async def lookup(request: Request) -> Response:
        # Answered by FastLookup in front of the app; this route documents it in the OpenAPI schema.
        body = await read_body(request, settings.max_body_bytes)
        return await answer_off_loop(answer_lookup, body, request.headers.get("content-type"), request.headers.get("accept"))

    @app.get("/memory", summary="Bytes per field against the same table uncompressed")
    async def memory() -> Response:
        return _json(memory_document())

    @app.get("/snapshot", summary="The snapshot being served")
    async def snapshot() -> Response:
        return _json(snapshot_document())

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
        if fleet is not None:
            status = await run_in_threadpool(fleet.cached_status)
            if reason := fleet.unready_reason(status):
                raise NotReadyError(reason)
            doc["update_log"] = status.as_dict()
        return _json(doc)

    @app.get("/metrics", summary="Prometheus metrics of every worker")
    async def prometheus() -> Response:
        serving = live.engine
        if serving is not None and serving.overlay is not None:
            serving.overlay.refresh()  # as /snapshot: the drift gauges count every frame written so far
            drift_watch.check(serving)
        if fleet is not None and fleet.metrics is not None:
            fleet.metrics.observe(await run_in_threadpool(fleet.cached_status))
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app


def _open_fleet(settings: Settings, live: LiveEngine, metrics: Metrics) -> Fleet | None:
    """This process's part in a fleet sharing ``settings.update_log``; None without one."""
    if not settings.update_log:
        return None
    from saec.server.fleet import FleetMetrics
    from saec.store.replicate import open_fleet

    fleet = open_fleet(settings.update_log, live, fields=parse_fields(settings.fields))
    fleet.metrics = FleetMetrics(metrics.registry)
    fleet.after_step = fleet.metrics.count
    return fleet


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` and worker processes: settings from SAEC_*."""
    die_with_supervisor()
    return create_app(Settings.from_env())
