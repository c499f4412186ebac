"""The clients' own transport (clients._http) against a scripted HTTP/1.1 server on 127.0.0.1.

The scripted server answers each request on a connection with the next canned reply
(raw bytes, so that chunked bodies, closed connections and stalls can be played),
records what it received, and is stopped by the fixture.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import orjson
import pytest

from saec.clients import AsyncSaecClient, ConnectError, Retry, SaecClient, ServerUnavailableError, UnknownFieldError
from saec.clients._http import AsyncPool, SyncPool, pool_args
from saec.clients.errors import TransportError
from saec.store.hashing import hash_ids
from saec.wire import VECTORS_MEDIA_TYPE, decode_ids, encode_vectors

FAST = Retry(attempts=3, base=0.001, cap=0.002)
Reply = Callable[[bytes, bytes], bytes | None]  # (head, body) -> raw response, or None: close without answering


def http(status: int, body: bytes, content_type: str = "application/octet-stream", extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    )


def echo_vectors(head: bytes, body: bytes) -> bytes:
    """Each id's answer is [id % 1000, len(field)], as float32."""
    msg = decode_ids(body)
    fields = {}
    for name, keys in msg.fields.items():
        v = np.stack([(keys % 1000).astype(np.float32), np.full(keys.shape, len(name), np.float32)], axis=1)
        fields[name] = (v, np.ones(keys.shape[0], bool))
    return http(200, encode_vectors("v1", fields), VECTORS_MEDIA_TYPE)


@dataclass
class Scripted:
    replies: list[Reply]
    port: int = 0
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)
    connections: int = 0
    close_after_each: bool = False

    def serve(self, sock: socket.socket, stop: threading.Event) -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(v)
                        for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n"))
                        if k.strip().lower() == b"content-length"
                    ),
                    0,
                )
                while len(buf) < length:
                    buf += conn.recv(65536)
                body, buf = buf[:length], buf[length:]
                self.requests.append((head, body))
                reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
                out = reply(head, body)
                if out is None:
                    return
                conn.sendall(out)
                if self.close_after_each:
                    return


@pytest.fixture
def scripted() -> Iterator[Callable[..., Scripted]]:
    stops: list[tuple[threading.Event, threading.Thread, socket.socket]] = []

    def start(*replies: Reply, close_after_each: bool = False) -> Scripted:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        s = Scripted(list(replies), sock.getsockname()[1], close_after_each=close_after_each)
        stop = threading.Event()
        t = threading.Thread(target=s.serve, args=(sock, stop), daemon=True)
        t.start()
        stops.append((stop, t, sock))
        return s

    yield start
    for stop, t, sock in stops:
        stop.set()
        t.join(timeout=5)
        sock.close()


def test_lookup_over_one_kept_alive_connection(scripted: Callable[..., Scripted]) -> None:
    s = scripted(echo_vectors)
    ids = np.arange(250) * 3
    with SaecClient(f"http://127.0.0.1:{s.port}", max_ids=100) as c:
        assert c._pool is not None  # plain http:// goes through clients._http
        res = c.lookup({"a": ids})
        res2 = c.lookup({"a": ids[:5]})
    assert np.array_equal(res["a"].vectors[:, 0], (hash_ids(ids, "a") % 1000).astype(np.float32))
    assert res2["a"].vectors.shape == (5, 2)
    assert len(s.requests) == 4 and s.connections == 1
    head = s.requests[0][0].decode().lower()
    assert head.startswith("post /lookup http/1.1") and "content-type: application/x-saec-ids" in head


def test_503_is_retried_then_answers(scripted: Callable[..., Scripted]) -> None:
    busy = lambda h, b: http(503, orjson.dumps({"status": 503, "detail": "busy"}), "application/problem+json")  # noqa: E731
    s = scripted(busy, busy, echo_vectors)
    with SaecClient(f"http://127.0.0.1:{s.port}", max_ids=100, retry=FAST) as c:
        assert c.lookup({"f": [1, 2]})["f"].vectors.shape == (2, 2)
    assert len(s.requests) == 3


def test_problem_details_become_typed_errors(scripted: Callable[..., Scripted]) -> None:
    s = scripted(
        lambda h, b: http(404, orjson.dumps({"status": 404, "detail": "unknown field 'f'"}), "application/problem+json")
    )
    with SaecClient(f"http://127.0.0.1:{s.port}", max_ids=100, retry=FAST) as c:
        with pytest.raises(UnknownFieldError) as err:
            c.lookup({"f": [1]})
    assert err.value.status == 404 and err.value.detail == "unknown field 'f'"
    assert "POST /lookup: 404" in str(err.value)
    assert len(s.requests) == 1


def test_a_connection_closed_while_idle_is_replaced_at_once(scripted: Callable[..., Scripted]) -> None:
    # The server closes every connection after answering (as uvicorn does after its keep-alive
    # timeout, without saying so): the next request finds the pooled one dead before any answer.
    s = scripted(echo_vectors, close_after_each=True)
    retry = Retry(attempts=1)  # no retries: the transport itself must recover
    with SaecClient(f"http://127.0.0.1:{s.port}", max_ids=100, retry=retry) as c:
        for _ in range(3):
            assert c.lookup({"f": [7]})["f"].vectors[0, 1] == 1.0
    assert len(s.requests) == 3 and s.connections == 3


def test_connection_refused_is_retried_then_raised() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    with SaecClient(f"http://127.0.0.1:{port}", max_ids=100, retry=FAST) as c:
        with pytest.raises(ConnectError, match="after 3 attempts"):
            c.lookup({"f": [1]})


def test_answer_cut_short_is_a_transport_error(scripted: Callable[..., Scripted]) -> None:
    # Promises 100 bytes, sends 60, closes.
    s = scripted(lambda h, b: http(200, b"x" * 100)[:-40], close_after_each=True)
    pool = SyncPool(**(pool_args(f"http://127.0.0.1:{s.port}") or {}), timeout=5.0)
    with pytest.raises(TransportError, match="60 bytes into a 100-byte body"):
        pool.request("POST", "/lookup", [b"abc"], {})
    pool.close()


def test_chunked_answers_are_read(scripted: Callable[..., Scripted]) -> None:
    body = b"hello, chunked world"
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:7], body[7:]))
        + b"0\r\n\r\n"
    )
    s = scripted(lambda h, b: chunked)
    url = f"http://127.0.0.1:{s.port}"
    pool = SyncPool(**(pool_args(url) or {}), timeout=5.0)
    assert bytes(pool.request("GET", "/x").content) == body
    assert bytes(pool.request("GET", "/x").content) == body  # the connection stays usable
    pool.close()

    async def go() -> bytes:
        apool = AsyncPool(**(pool_args(url) or {}), timeout=5.0)
        try:
            first = bytes((await apool.request("GET", "/x")).content)
            assert bytes((await apool.request("GET", "/x")).content) == first
            return first
        finally:
            await apool.aclose()

    assert asyncio.run(go()) == body


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_stalled_server_times_out_once(scripted: Callable[..., Scripted], kind: str) -> None:
    release = threading.Event()

    def stall(h: bytes, b: bytes) -> None:
        release.wait(5)
        return None

    # The first lookup is answered; the second, on the same pooled connection, never is.
    s = scripted(echo_vectors, stall)
    url, once = f"http://127.0.0.1:{s.port}", Retry(attempts=1)
    waited = 0.0
    with pytest.raises(ConnectError, match="after 1 attempts"):
        if kind == "sync":
            with SaecClient(url, max_ids=100, retry=once, timeout=0.3) as c:
                c.lookup({"f": [1]})
                started = time.monotonic()
                try:
                    c.lookup({"f": [1]})
                finally:
                    waited = time.monotonic() - started
        else:

            async def go() -> None:
                nonlocal waited
                async with AsyncSaecClient(url, max_ids=100, retry=once, timeout=0.3) as c:
                    await c.lookup({"f": [1]})
                    started = time.monotonic()
                    try:
                        await c.lookup({"f": [1]})
                    finally:
                        waited = time.monotonic() - started

            asyncio.run(go())
    release.set()
    # One timeout, not two: a connection that timed out is not sent the request again on a
    # fresh connection as if it had gone stale (that would be a third request, a second connection).
    assert waited > 0.25
    assert len(s.requests) == 2 and s.connections == 1


def test_async_client_splits_retries_and_reuses_connections(scripted: Callable[..., Scripted]) -> None:
    busy = lambda h, b: http(503, b'{"status":503}', "application/problem+json")  # noqa: E731
    s = scripted(busy, echo_vectors)
    ids = np.arange(250)

    async def go() -> None:
        async with AsyncSaecClient(f"http://127.0.0.1:{s.port}", max_ids=100, retry=FAST) as c:
            res = await c.lookup({"a": ids})
            assert np.array_equal(res["a"].vectors[:, 0], (hash_ids(ids, "a") % 1000).astype(np.float32))
            res = await c.lookup({"a": ids[:10]})
            assert res["a"].found.all()

    asyncio.run(go())
    # 1 refused with 503 and retried, 3 split requests, then 1 more: pooled connections, not one each.
    assert len(s.requests) == 5 and s.connections <= 3


def test_async_gives_up_with_the_servers_problem(scripted: Callable[..., Scripted]) -> None:
    s = scripted(
        lambda h, b: http(503, orjson.dumps({"status": 503, "detail": "no snapshot yet"}), "application/problem+json")
    )

    async def go() -> None:
        async with AsyncSaecClient(f"http://127.0.0.1:{s.port}", max_ids=100, retry=FAST) as c:
            await c.lookup({"f": [1]})

    with pytest.raises(ServerUnavailableError) as err:
        asyncio.run(go())
    assert err.value.detail == "no snapshot yet" and len(s.requests) == 3


def test_send_path_takes_json_and_buffers(scripted: Callable[..., Scripted]) -> None:
    """_send is the one path every request takes; other methods build on it."""
    s = scripted(lambda h, b: http(200, b"{}", "application/json"))
    with SaecClient(f"http://127.0.0.1:{s.port}", max_ids=100) as c:
        r = c._send("POST", "/anything", json={"a": 1})
        assert r.status_code == 200 and bytes(r.content) == b"{}"
        c._send("POST", "/anything", content=[b"ab", memoryview(b"cd")], headers={"x-test": "1"})
    assert s.requests[0][1] == b'{"a":1}' and b"content-type: application/json" in s.requests[0][0].lower()
    assert s.requests[1][1] == b"abcd" and b"x-test: 1" in s.requests[1][0]


def test_the_answer_buffer_is_the_encoded_answer() -> None:
    """The server sends encode_vectors_buffer's memoryview; clients and users read encode_vectors' bytes."""
    from saec import wire
    from saec.wire import decode_vectors, encode_vectors_buffer

    rng = np.random.default_rng(5)
    fields = {
        "a": (rng.normal(size=(7, 3)).astype(np.float32), rng.random(7) < 0.5),
        "b": (np.zeros((0, 5), np.float32), np.zeros(0, np.bool_)),
        "c": (rng.normal(size=(2, 16)).astype(np.float32), np.array([True, False])),
    }
    buffer = encode_vectors_buffer("v9", fields)
    assert bytes(buffer) == encode_vectors("v9", fields)
    # Byte for byte the layout saec.wire documents, padding zeros included.
    header = orjson.dumps({"version": "v9", "fields": [[n, v.shape[0], v.shape[1]] for n, (v, _) in fields.items()]})
    prefix = wire._PREFIX.pack(wire._RESP_MAGIC, wire._VERSION, 0, 0, len(header))
    want = prefix + header + b"\0" * wire._pad(len(prefix) + len(header), 8)
    for vectors, found in fields.values():
        want += vectors.astype("<f4").tobytes() + found.astype(np.uint8).tobytes() + b"\0" * wire._pad(found.shape[0], 4)
    assert bytes(buffer) == want
    back = decode_vectors(bytes(buffer))
    assert back.version == "v9" and list(back.fields) == ["a", "b", "c"]
    for name, (vectors, found) in fields.items():
        assert np.array_equal(back.fields[name][0], vectors) and np.array_equal(back.fields[name][1], found)
