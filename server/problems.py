"""The one place where errors become HTTP responses: RFC 9457 problem+json, and the
gRPC status codes of the same problems (:data:`GRPC_CODES`, used by ``server.grpc_service``).

Every deliberate error is a :class:`saec.errors.SaecError`; its class picks the status.
Anything else is a bug, answered with a 500 problem whose detail hides internals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from saec.errors import SaecError
from saec.server.errors import (
    MalformedRequestError,
    NotReadyError,
    PayloadTooLargeError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)
from saec.store.errors import (
    BatchTooLargeError,
    DeltaLogError,
    InvalidIdsError,
    InvalidUpdateError,
    SnapshotNotFoundError,
    SupersededError,
    UnknownFieldError,
)
from saec.store.updatelog import UpdateLogUnavailableError
from saec.wire import WireError

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("saec.server")

# Most specific first: the first class an error is an instance of decides.
STATUS: list[tuple[type[Exception], int, str]] = [
    (UnauthorizedError, 401, "unauthorized"),
    (UnknownFieldError, 404, "unknown-field"),
    (BatchTooLargeError, 413, "batch-too-large"),
    (PayloadTooLargeError, 413, "payload-too-large"),
    (UnsupportedMediaTypeError, 415, "unsupported-media-type"),
    (InvalidIdsError, 422, "malformed-ids"),
    (WireError, 422, "malformed-request"),
    (MalformedRequestError, 422, "malformed-request"),
    (InvalidUpdateError, 422, "invalid-update"),
    (SupersededError, 503, "superseded"),
    (DeltaLogError, 503, "deltas-unavailable"),
    (NotReadyError, 503, "not-ready"),
    (UpdateLogUnavailableError, 503, "update-log-unavailable"),
    (SnapshotNotFoundError, 503, "not-ready"),
]
# The gRPC status code (by name) of each HTTP status above: the same meaning to a client
# (the HTTP mapping of google.rpc.Code). A status not listed here is INTERNAL.
GRPC_CODES: dict[int, str] = {
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "RESOURCE_EXHAUSTED",  # as gRPC's own answer to a message over the size limit
    415: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",  # retry: no snapshot yet, or a newer one went live meanwhile
    504: "DEADLINE_EXCEEDED",
}
TITLES = {
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def problem(
    status: int, kind: str, detail: str, instance: str = "", headers: Mapping[str, str] | None = None, **extra: object
) -> Response:
    body = {
        "type": problem_type(kind),
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        **({"instance": instance} if instance else {}),
        **extra,
    }
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def status_of(exc: Exception) -> tuple[int, str]:
    for cls, status, kind in STATUS:
        if isinstance(exc, cls):
            return status, kind
    return 500, "internal"


def grpc_status_of(exc: Exception) -> tuple[str, int, str]:
    """The gRPC code name, HTTP status and problem kind of an error: what the same error
    answers over HTTP, said as gRPC."""
    status, kind = status_of(exc)
    return GRPC_CODES.get(status, "INTERNAL"), status, kind


def problem_type(kind: str) -> str:
    """The problem's type URI (its ``type`` member in problem+json)."""
    return f"https://saec.dev/problems/{kind}"


def response_for(exc: Exception, path: str, redact: Callable[[str], str | None] | None = None) -> Response:
    """The problem response of an error raised while answering ``path`` (for handlers
    that run outside the app's exception handlers, such as ``server.fastpath``)."""
    status, kind = status_of(exc)
    if status == 500:
        log.error("unexpected error on %s", path, exc_info=exc)
        return problem(500, "internal", "the server failed; see its log", path)
    detail = str(exc)
    return problem(status, kind, (redact(detail) or "") if redact is not None else detail, path)


def install(app: FastAPI, redact: Callable[[str], str | None] | None = None) -> None:
    """Register the handlers that turn every error into a problem response.

    Args:
        redact: rewrites each detail before it leaves (``server.redact.Redactor``: no
            absolute paths in public answers); the log keeps the original.
    """

    def public(text: str) -> str:
        return (redact(text) or "") if redact is not None else text

    @app.exception_handler(SaecError)
    async def saec_error(request: Request, exc: SaecError) -> Response:
        status, kind = status_of(exc)
        if status == 500:
            log.error("unmapped error on %s: %r", request.url.path, exc)
            return problem(500, "internal", "the server failed; see its log", request.url.path)
        response = problem(status, kind, public(str(exc)), request.url.path)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="saec-admin"'
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Keeps the exception's headers: Allow on a 405 (RFC 9110 requires it).
        return problem(exc.status_code, "http", str(exc.detail), request.url.path, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return problem(422, "malformed-request", "request did not validate", request.url.path, errors=exc.errors())

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return problem(500, "internal", "the server failed; see its log", request.url.path)
