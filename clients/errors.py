"""Errors the client raises; each carries the server's RFC 9457 problem, if any."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from saec.errors import SaecError


class SaecClientError(SaecError):
    """Base of client errors.

    Attributes:
        status: HTTP status, or None for transport failures.
        problem: the server's problem+json body as a dict (empty if none).
    """

    def __init__(self, message: str, *, status: int | None = None, problem: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.problem = problem or {}

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail", self))


class ConnectError(SaecClientError, ConnectionError):
    """The server could not be reached, after every retry."""


class TransportError(SaecClientError, ConnectionError):
    """One attempt failed below HTTP (refused, reset, timed out, a malformed answer);
    the clients retry it and raise :class:`ConnectError` once the attempts are spent.

    Attributes:
        received: bytes of the answer that had arrived.
        timed_out: no complete answer came within the timeout.
    """

    def __init__(self, message: str, *, received: int = 0, timed_out: bool = False) -> None:
        super().__init__(message)
        self.received = received
        self.timed_out = timed_out

    @property
    def stale(self) -> bool:
        """The connection failed before any byte of an answer, and not by waiting: a pooled
        connection the server closed while idle. The request may go again at once."""
        return not self.received and not self.timed_out


class UnknownFieldError(SaecClientError, KeyError):
    """404: the snapshot holds no such field."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RequestTooLargeError(SaecClientError, ValueError):
    """413: too many ids or too large a body."""


class InvalidRequestError(SaecClientError, ValueError):
    """415/422 and other 4xx: the server could not use the request."""


class ServerUnavailableError(SaecClientError, ConnectionError):
    """503: no snapshot served yet, or the server is overloaded (after retries)."""


class InvalidResponseError(SaecClientError, ValueError):
    """A 200 answer whose body does not hold what the request asked for."""


class ServerError(SaecClientError, RuntimeError):
    """5xx: the server failed."""


def from_response(response: httpx.Response | Any) -> SaecClientError:
    """The typed error of a non-2xx response (an ``httpx.Response`` or the clients' own
    ``clients._http.Response``, which carries its request's method and path)."""
    status = response.status_code
    try:
        problem = orjson.loads(response.content)
        if not isinstance(problem, dict):
            problem = {}
    except orjson.JSONDecodeError:
        problem = {}
    detail = problem.get("detail") or response.text[:200] or response.reason_phrase
    if isinstance(response, httpx.Response):
        method, path = response.request.method, response.request.url.path
    else:
        method, path = response.method, response.path
    message = f"{method} {path}: {status} {detail}"
    cls: type[SaecClientError]
    if status == 404:
        cls = UnknownFieldError
    elif status == 413:
        cls = RequestTooLargeError
    elif status == 503:
        cls = ServerUnavailableError
    elif 400 <= status < 500:
        cls = InvalidRequestError
    else:
        cls = ServerError
    return cls(message, status=status, problem=problem)
