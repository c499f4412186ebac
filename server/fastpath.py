"""POST /lookup as a plain ASGI handler in front of the FastAPI app.

A lookup is the one request that comes thousands of times a second; the framework's
per-request work (routing, dependency solving, the Request and Response objects, the
exception middleware) cost about as much server CPU as the lookup itself. Server CPU a
request under ``wrk -t1 -c4`` (1 worker, 4096 ids of dim 16, binary; load average 8-9):
0.63-0.72 ms through the FastAPI route, 0.62-0.66 ms through a plain Starlette route,
0.50-0.54 ms with this layer (the app's middleware still around it), 0.34-0.40 ms for the
same lookup code as the only ASGI app. So :class:`FastLookup` answers ``POST /lookup``
itself, and the app hands it that request before any of its own layers (``server.app``). It calls the same function the FastAPI route calls (which stays, for the
OpenAPI schema and for anyone mounting the app without this layer), reads the body
under the same limit, and turns errors into problem+json through ``server.problems``,
the one place that maps them.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from saec.server import limits, problems
from saec.server.errors import PayloadTooLargeError

LookupHandler = Callable[[bytes, "str | None", "str | None"], Response]


# What the router would have set: the request counter labels requests by route template.
_ROUTE = SimpleNamespace(path="/lookup")


async def answer_off_loop(handle: LookupHandler, body: bytes, content_type: str | None, accept: str | None) -> Response:
    """``handle(...)``, in a worker thread for a body of ``limits.THREAD_BODY_BYTES`` or
    more: parsing it and writing its answer must not stall the worker's other requests."""
    if len(body) < limits.THREAD_BODY_BYTES:
        return handle(body, content_type, accept)
    return await run_in_threadpool(handle, body, content_type, accept)


class ClientGone(Exception):
    """The client disconnected before its body arrived: nothing to answer."""


class FastLookup:
    """ASGI middleware: ``POST /lookup`` answered by ``handle(body, content_type, accept)``.

    Args:
        app: the application for every other request.
        handle: the lookup; raises ``SaecError`` subclasses for bad requests.
        limit: the most body bytes accepted (413 above, without reading them all).
        redact: rewrites error details before they leave (no absolute paths).
    """

    def __init__(
        self, app: ASGIApp, handle: LookupHandler, limit: int, redact: Callable[[str], str | None] | None = None
    ) -> None:
        self.app = app
        self.handle = handle
        self.limit = limit
        self.redact = redact

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/lookup" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["route"] = _ROUTE
        content_type = accept = declared = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"accept":
                accept = value.decode("latin-1")
            elif name == b"content-length":
                declared = value.decode("latin-1")
        try:
            body = await self._body(receive, declared)
            response = await answer_off_loop(self.handle, body, content_type, accept)
        except ClientGone:
            return
        except Exception as exc:  # every error still becomes a problem, as the app's handlers do
            response = problems.response_for(exc, scope["path"], self.redact)
        await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})

    async def _body(self, receive: Receive, declared: str | None) -> bytes:
        limit = self.limit
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLargeError(f"expected a body of at most {limit} bytes, got Content-Length {declared}")
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(f"expected a body of at most {limit} bytes, got more")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
