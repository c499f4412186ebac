"""The clients' HTTP/1.1 transport: pooled keep-alive connections, one write a request,
each response body read straight into one buffer of its announced length.

Why not a library: ``bench/client.py`` measures the client CPU a 4096-id binary lookup
costs through httpx, aiohttp, urllib3, http.client and this module against the same
server; the libraries spend 2-10x the CPU of this transport (the table is in
``bench/results/client.md``), and at 4096 ids a request that CPU is most of what a
ranking service pays for a lookup. The transport does what the saec server needs and
nothing more: plain ``http://``, requests with a ``Content-Length`` body, responses with
``Content-Length`` or chunked bodies. Anything else (https, proxies, a custom httpx
transport) goes through httpx, as before (``clients.client`` decides).

A request goes out as one vectored write (``socket.sendmsg`` / ``transport.writelines``)
of the head and the caller's buffers, so the body is never copied; the response head is
read into a small scratch buffer and the body into a ``bytearray`` of its length, which
the caller decodes with ``np.frombuffer`` (no copy either). A pooled connection that
the server closed while idle (uvicorn drops keep-alive connections after 5 s) fails
before the first byte of the answer, and not by timing out; the request is then sent
once more on a fresh connection, which is safe because every request the clients send
is idempotent.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from saec.clients.errors import TransportError

Buffer = bytes | bytearray | memoryview
_SCRATCH = 16 * 1024  # the head and, usually, the start of the body
_HEAD_LIMIT = 64 * 1024
_CRLF2 = b"\r\n\r\n"


@dataclass
class Response:
    """An HTTP response, with the attribute names of ``httpx.Response`` that the clients read.

    Attributes:
        status_code: e.g. 200.
        headers: lower-cased names -> values.
        content: the body (a ``bytearray`` owned by this response).
        method, path: of the request that got it (for error messages).
    """

    status_code: int
    headers: dict[str, str]
    content: bytes | bytearray
    method: str
    path: str
    reason_phrase: str = ""

    @property
    def text(self) -> str:
        return bytes(self.content).decode("utf-8", "replace")


def request_head(method: str, path: str, host: str, headers: Mapping[str, str], length: int) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}", f"content-length: {length}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class _Head:
    status: int
    reason: str
    headers: dict[str, str]
    length: int  # -1: chunked
    keep_alive: bool


def _parse_head(raw: bytes | bytearray | memoryview) -> _Head:
    text = bytes(raw).decode("latin-1")
    lines = text.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise TransportError(f"expected an HTTP/1.x status line, got {lines[0][:100]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    keep_alive = headers.get("connection", "").lower() != "close" and parts[0] != "HTTP/1.0"
    if "chunked" in headers.get("transfer-encoding", "").lower():
        length = -1
    else:
        declared = headers.get("content-length", "0")
        if not declared.isdigit():
            raise TransportError(f"expected a numeric Content-Length, got {declared!r}")
        length = int(declared)
    return _Head(int(parts[1]), parts[2] if len(parts) > 2 else "", headers, length, keep_alive)


def _dechunk(data: bytes | bytearray) -> bytearray | None:
    """The body of a complete chunked encoding, or None while more bytes are needed."""
    out = bytearray()
    pos = 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return None
        size_text = bytes(data[pos:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise TransportError(f"expected a chunk size in hex, got {size_text[:40]!r}") from None
        start = eol + 2
        if size == 0:
            return out if data.find(_CRLF2, eol) >= 0 or data[start : start + 2] == b"\r\n" else None
        if len(data) < start + size + 2:
            return None
        out += data[start : start + size]
        pos = start + size + 2


def _split_url(host: str, port: int) -> str:
    return f"{host}:{port}"


# -- blocking --------------------------------------------------------------------------------


class _Connection:
    """One keep-alive socket."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise TransportError(f"connect to {host}:{port}: {exc!r}") from exc
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.scratch = bytearray(_SCRATCH)
        self.reused = False

    def close(self) -> None:
        self.sock.close()

    def _send(self, parts: Sequence[Buffer]) -> None:
        views = [memoryview(p).cast("B") for p in parts if len(p)]
        while views:
            sent = self.sock.sendmsg(views)
            # A blocking socket with a timeout may take part of a large body; send the rest.
            while views and sent >= views[0].nbytes:
                sent -= views[0].nbytes
                views.pop(0)
            if views and sent:
                views[0] = views[0][sent:]

    def exchange(self, head: bytes, body: Sequence[Buffer]) -> tuple[_Head, bytearray, bool]:
        """Send one request; the response head, its body, and whether any byte of it came."""
        received = 0
        try:
            self._send([head, *body])
            scratch = memoryview(self.scratch)
            filled = 0
            while True:
                n = self.sock.recv_into(scratch[filled:])
                if n == 0:
                    raise TransportError("the server closed the connection before answering")
                filled += n
                received += n
                end = self.scratch.find(_CRLF2, 0, filled)
                if end >= 0:
                    break
                if filled == len(self.scratch):
                    if filled >= _HEAD_LIMIT:
                        raise TransportError(f"expected a response head under {_HEAD_LIMIT} bytes, got more")
                    scratch.release()  # a bytearray with a live view cannot grow
                    self.scratch.extend(bytes(len(self.scratch)))
                    scratch = memoryview(self.scratch)
            parsed = _parse_head(scratch[:end])
            rest = scratch[end + 4 : filled]
            if parsed.length >= 0:
                content = bytearray(parsed.length)
                got = min(len(rest), parsed.length)
                content[:got] = rest[:got]
                view = memoryview(content)
                while got < parsed.length:
                    n = self.sock.recv_into(view[got:])
                    if n == 0:
                        raise TransportError(
                            f"the server closed the connection {got} bytes into a {parsed.length}-byte body"
                        )
                    got += n
                return parsed, content, True
            data = bytearray(rest)
            while (body_out := _dechunk(data)) is None:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise TransportError("the server closed the connection inside a chunked body")
                data += chunk
            return parsed, body_out, True
        except TransportError as exc:
            exc.received = received
            raise
        except OSError as exc:
            timed_out = isinstance(exc, TimeoutError)
            raise TransportError(f"{type(exc).__name__}: {exc}", received=received, timed_out=timed_out) from exc


@dataclass
class SyncPool:
    """Keep-alive connections to one server, safe to share between threads."""

    host: str
    port: int
    timeout: float
    max_idle: int = 16
    _idle: list[_Connection] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def request(
        self, method: str, path: str, body: Sequence[Buffer] = (), headers: Mapping[str, str] | None = None
    ) -> Response:
        length = sum(len(memoryview(b).cast("B")) for b in body)
        head = request_head(method, path, _split_url(self.host, self.port), headers or {}, length)
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is not None:
            try:
                result = conn.exchange(head, body)
            except TransportError as exc:
                conn.close()
                if not exc.stale:
                    raise
                conn = None  # went stale while idle: once more on a fresh connection
        if conn is None:
            conn = _Connection(self.host, self.port, self.timeout)
            try:
                result = conn.exchange(head, body)
            except TransportError:
                conn.close()
                raise
        h, content, _ = result
        if h.keep_alive:
            conn.reused = True
            with self._lock:
                if len(self._idle) < self.max_idle:
                    self._idle.append(conn)
                    conn = None
        if conn is not None:
            conn.close()
        return Response(h.status, h.headers, content, method, path, h.reason)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


# -- asyncio ---------------------------------------------------------------------------------


class _Protocol(asyncio.BufferedProtocol):
    """One keep-alive connection: the event loop reads straight into the response's buffer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.scratch = bytearray(_SCRATCH)
        self.filled = 0
        self.head: _Head | None = None
        self.content = bytearray()
        self.view = memoryview(self.content)
        self.got = 0
        self.chunked: bytearray | None = None
        self.waiter: asyncio.Future[tuple[_Head, bytearray]] | None = None
        self.received = 0
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("connection closed")
        self._fail(TransportError(f"the server closed the connection: {self.lost!r}"))

    def eof_received(self) -> bool:
        return False

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.waiter is None:
            # Idle, or the answer is complete: the loop asks before every read, and only an
            # EOF (or bytes nobody asked for, refused in buffer_updated) can come now.
            return memoryview(self.scratch)
        if self.head is not None and self.chunked is None:
            return self.view[self.got :]
        if self.filled == len(self.scratch):
            self.scratch.extend(bytes(len(self.scratch)))
        return memoryview(self.scratch)[self.filled :]

    def buffer_updated(self, nbytes: int) -> None:
        self.received += nbytes
        if self.waiter is None:
            self._fail(TransportError("the server sent bytes nobody asked for"))
            return
        try:
            if self.head is None:
                self.filled += nbytes
                end = self.scratch.find(_CRLF2, 0, self.filled)
                if end < 0:
                    if self.filled >= _HEAD_LIMIT:
                        raise TransportError(f"expected a response head under {_HEAD_LIMIT} bytes, got more")
                    return
                self.head = _parse_head(memoryview(self.scratch)[:end])
                rest = memoryview(self.scratch)[end + 4 : self.filled]
                if self.head.length < 0:
                    self.chunked = bytearray(rest)
                else:
                    self.content = bytearray(self.head.length)
                    self.view = memoryview(self.content)
                    self.got = min(len(rest), self.head.length)
                    self.content[: self.got] = rest[: self.got]
            elif self.chunked is not None:
                self.chunked += memoryview(self.scratch)[:nbytes]
            else:
                self.got += nbytes
            if self.chunked is not None:
                self.filled = 0
                body = _dechunk(self.chunked)
                if body is not None:
                    self._finish(body)
            elif self.got >= self.head.length:
                self._finish(self.content)
        except TransportError as exc:
            self._fail(exc)

    def _finish(self, body: bytearray) -> None:
        waiter, head = self.waiter, self.head
        self.waiter = None
        assert head is not None and waiter is not None
        if not waiter.done():
            waiter.set_result((head, body))

    def _fail(self, exc: TransportError) -> None:
        exc.received = self.received
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, head: bytes, body: Sequence[Buffer], timeout: float) -> tuple[_Head, bytearray]:
        if self.lost is not None or self.transport is None or self.transport.is_closing():
            raise TransportError(f"the connection is closed: {self.lost!r}")
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.head, self.filled, self.got, self.chunked, self.received = None, 0, 0, None, 0
        self.transport.writelines([head, *body])
        # A timer handle costs less than asyncio.timeout() (measured: ~25 us a request).
        timer = loop.call_later(
            timeout, self._fail, TransportError(f"no complete answer within {timeout} s", timed_out=True)
        )
        try:
            return await self.waiter
        finally:
            timer.cancel()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class AsyncPool:
    """Keep-alive connections to one server for one event loop; a new connection opens
    whenever every pooled one is busy, so concurrent requests never queue here."""

    host: str
    port: int
    timeout: float
    max_idle: int = 64
    _idle: list[_Protocol] = field(default_factory=list)

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                transport, proto = await loop.create_connection(_Protocol, self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise TransportError(f"connect to {self.host}:{self.port}: {exc!r}") from exc
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return proto

    async def request(
        self, method: str, path: str, body: Sequence[Buffer] = (), headers: Mapping[str, str] | None = None
    ) -> Response:
        length = sum(len(memoryview(b).cast("B")) for b in body)
        head = request_head(method, path, _split_url(self.host, self.port), headers or {}, length)
        conn = self._idle.pop() if self._idle else None
        result: tuple[_Head, bytearray] | None = None
        if conn is not None:
            try:
                result = await conn.exchange(head, body, self.timeout)
            except TransportError as exc:
                conn.close()
                if not exc.stale:
                    raise
                conn = None  # went stale while idle: once more on a fresh connection
            except BaseException:
                conn.close()  # cancelled mid-exchange: the connection's state is unknown
                raise
        if conn is None or result is None:
            conn = await self._open()
            try:
                result = await conn.exchange(head, body, self.timeout)
            except BaseException:
                conn.close()
                raise
        h, content = result
        if h.keep_alive and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.close()
        return Response(h.status, h.headers, content, method, path, h.reason)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def pool_args(base_url: str) -> dict[str, Any] | None:
    """host and port of a plain ``http://host[:port]`` URL without a path, else None
    (the caller then uses httpx)."""
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/") or parts.query:
        return None
    return {"host": parts.hostname, "port": parts.port or 80}
