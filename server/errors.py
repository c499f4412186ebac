"""Errors of the HTTP layer itself (before a request reaches the engine)."""

from __future__ import annotations

from saec.errors import SaecError


class RequestError(SaecError, ValueError):
    """A request the service cannot parse."""


class MalformedRequestError(RequestError):
    """A body that is not the JSON or binary lookup the service expects (422)."""


class UnsupportedMediaTypeError(RequestError):
    """A Content-Type the service does not speak (415)."""


class PayloadTooLargeError(RequestError):
    """A body over the configured byte limit (413)."""


class NotReadyError(SaecError, RuntimeError):
    """No snapshot is being served yet (503)."""


class UnauthorizedError(SaecError, PermissionError):
    """No admin token, or the wrong one (401)."""
