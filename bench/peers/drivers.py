"""Inside a load process: one driver per system and client kind, and the phase loop.

Both systems get their query in the form they take it: saec a uint64 array of hashed
ids (``AsyncSaecClient.lookup(..., hashed=True)``), Redis a list of 8-byte keys built
before the clock starts. Both end with float32 (n, dim) rows and bool (n,) found flags.
"""

from __future__ import annotations

import asyncio
import time
from multiprocessing.connection import Connection

import numpy as np
import numpy.typing as npt

from bench.peers.load import LOOPBACK, Phase, Target


class _Driver:
    """One system's client: ``await call(row)`` answers (vectors, found)."""

    async def open(self, connections: int) -> None: ...

    async def call(self, row: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]: ...

    async def close(self) -> None: ...


class _SaecDriver(_Driver):
    def __init__(self, target: Target, queries: npt.NDArray[np.uint64]) -> None:
        self.target = target
        self.queries = queries

    async def open(self, connections: int) -> None:
        from saec.clients import AsyncSaecClient

        self.client = AsyncSaecClient(f"http://{LOOPBACK}:{self.target.port}", protocol=self.target.protocol)

    async def call(self, row: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        answer = await self.client.lookup({self.target.field: self.queries[row]}, hashed=True)
        f = answer[self.target.field]
        return f.vectors, f.found

    async def close(self) -> None:
        await self.client.aclose()


class _RedisDriver(_Driver):
    def __init__(self, target: Target, keylists: list[list[bytes]]) -> None:
        self.target = target
        self.keylists = keylists
        self.zero = b"\0" * (4 * target.dim)

    async def open(self, connections: int) -> None:
        import redis.asyncio as aredis

        self.client = aredis.Redis(host=LOOPBACK, port=self.target.port, max_connections=max(1, connections))

    async def call(self, row: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        values = await self.client.mget(self.keylists[row])
        n = len(values)
        if None in values:
            found = np.fromiter((v is not None for v in values), dtype=np.bool_, count=n)
            values = [self.zero if v is None else v for v in values]
        else:
            found = np.ones(n, dtype=np.bool_)
        vectors = np.frombuffer(b"".join(values), dtype="<f4").reshape(n, self.target.dim)
        return vectors, found

    async def close(self) -> None:
        await self.client.aclose()


def _keylists(batches: npt.NDArray[np.uint64]) -> list[list[bytes]]:
    """Each row of hashed ids as a list of 8-byte little-endian Redis keys."""
    out = []
    for row in batches:
        raw = row.astype("<u8").tobytes()
        out.append([raw[i : i + 8] for i in range(0, len(raw), 8)])
    return out


class _BareSaecDriver(_Driver):
    """saec's binary protocol (``saec.wire``) over one plain keep-alive HTTP/1.1 connection
    per task (asyncio streams, one write a request): what the service does when the
    client costs next to nothing."""

    def __init__(self, target: Target, queries: npt.NDArray[np.uint64]) -> None:
        self.target = target
        self.queries = queries
        self.head = (
            f"POST /lookup HTTP/1.1\r\nhost: {LOOPBACK}:{target.port}\r\n"
            "content-type: application/x-saec-ids\r\naccept: application/x-saec-vectors\r\n"
            "content-length: %d\r\n\r\n"
        ).encode()

    async def open(self, connections: int) -> None:
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self.writers = []
        for _ in range(max(1, connections)):
            reader, writer = await asyncio.open_connection(LOOPBACK, self.target.port)
            self.writers.append(writer)
            self.idle.put_nowait((reader, writer))

    async def call(self, row: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        from saec.wire import decode_vectors, encode_ids

        body = encode_ids({self.target.field: self.queries[row]}, hashed=True)
        reader, writer = await self.idle.get()
        writer.write(self.head % len(body) + body)
        head = await reader.readuntil(b"\r\n\r\n")
        length = _content_length(head)
        payload = await reader.readexactly(length)
        self.idle.put_nowait((reader, writer))
        if head[9:12] != b"200":
            raise RuntimeError(f"HTTP {head[9:12].decode()}: {payload[:200]!r}")
        vectors, found = decode_vectors(payload).fields[self.target.field]
        return vectors, found

    async def close(self) -> None:
        for w in self.writers:
            w.close()


class _BareRedisDriver(_Driver):
    """MGET as pre-encoded RESP bytes over one asyncio connection per task, replies parsed
    by ``hiredis.Reader``: Redis without redis-py's per-call Python work."""

    def __init__(self, target: Target, commands: list[bytes]) -> None:
        self.target = target
        self.zero = b"\0" * (4 * target.dim)
        self.commands = commands

    async def open(self, connections: int) -> None:
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self.writers = []
        for _ in range(max(1, connections)):
            reader, writer = await asyncio.open_connection(LOOPBACK, self.target.port)
            self.writers.append(writer)
            self.idle.put_nowait((reader, writer))

    async def call(self, row: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        import hiredis

        parser = hiredis.Reader()
        reader, writer = await self.idle.get()
        writer.write(self.commands[row])
        values = False
        while values is False:
            chunk = await reader.read(1 << 20)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            parser.feed(chunk)
            values = parser.gets()
        self.idle.put_nowait((reader, writer))
        n = len(values)
        if None in values:
            found = np.fromiter((v is not None for v in values), dtype=np.bool_, count=n)
            values = [self.zero if v is None else v for v in values]
        else:
            found = np.ones(n, dtype=np.bool_)
        return np.frombuffer(b"".join(values), dtype="<f4").reshape(n, self.target.dim), found

    async def close(self) -> None:
        for w in self.writers:
            w.close()


def _resp(command: str, args: list[bytes]) -> bytes:
    parts = [b"*%d\r\n$%d\r\n%s\r\n" % (len(args) + 1, len(command), command.encode())]
    parts.extend(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
    return b"".join(parts)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise RuntimeError(f"expected a Content-Length header, got {head[:300]!r}")


class _Worker:
    def __init__(self, arrays_path: str) -> None:
        with np.load(arrays_path) as arrays:
            self.batches = {"queries": arrays["queries"], "checks": arrays["checks"]}
        self._keylists: dict[str, list[list[bytes]]] = {}
        self._commands: dict[str, list[bytes]] = {}

    def driver(self, target: Target, which: str = "queries") -> _Driver:
        if target.system == "redis":
            # Built once, outside every clock: Redis is not charged for turning ids into keys.
            if which not in self._keylists:
                self._keylists[which] = _keylists(self.batches[which])
            if target.client == "bare":
                if which not in self._commands:
                    self._commands[which] = [_resp("MGET", keys) for keys in self._keylists[which]]
                return _BareRedisDriver(target, self._commands[which])
            return _RedisDriver(target, self._keylists[which])
        if target.client == "bare":
            return _BareSaecDriver(target, self.batches[which])
        return _SaecDriver(target, self.batches[which])

    async def check(self, target: Target, row: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        d = self.driver(target, "checks")
        await d.open(1)
        try:
            v, f = await d.call(row)
            return np.array(v, dtype=np.float32), np.array(f, dtype=np.bool_)
        finally:
            await d.close()

    async def phase(self, phase: Phase, share: int, start: float, rate: float | None, offset: float, seed: int) -> dict:
        d = self.driver(phase.target)
        await d.open(share)
        lat: list[float] = []
        errors = 0
        late = 0
        unfinished = 0
        first_error = ""
        sent = 0
        rows = self.batches["queries"].shape[0]
        rng = np.random.default_rng(seed)
        order = rng.permutation(rows)
        w0 = start + phase.warmup
        w1 = w0 + phase.duration
        try:
            # One request before the clock starts opens connections and warms both ends.
            await d.call(int(order[0]))

            async def one(row: int, t0: float) -> None:
                nonlocal errors, first_error, late
                try:
                    vectors, found = await d.call(row)
                    if vectors.shape[0] != found.shape[0]:
                        raise RuntimeError(f"answer of {vectors.shape[0]} rows for {found.shape[0]} flags")
                except Exception as exc:  # a failed request is counted, never retried here
                    errors += 1
                    first_error = first_error or f"{type(exc).__name__}: {exc}"[:300]
                    return
                t1 = time.monotonic()
                if w0 <= t0 and t1 <= w1:
                    lat.append(t1 - t0)
                elif t0 < w1 < t1:
                    late += 1

            await _sleep_until(start)
            if rate is None:

                async def loop(task: int) -> None:
                    nonlocal sent
                    i = task
                    while sent < phase.max_requests:
                        t0 = time.monotonic()
                        if t0 >= w1:
                            return
                        sent += 1
                        await one(int(order[i % rows]), t0)
                        i += share

                await asyncio.gather(*(loop(t) for t in range(share)))
            else:
                # Open loop: request k is due at start + offset + k / rate, whatever came before; at
                # most `share` are in flight (one a connection), later ones wait, and their wait counts.
                inflight = asyncio.Semaphore(share)
                tasks = set()

                async def scheduled(row: int, due: float) -> None:
                    async with inflight:
                        await one(row, due)

                k = 0
                while sent < phase.max_requests:
                    due = start + offset + k / rate
                    if due >= w1:
                        break
                    await _sleep_until(due)
                    t = asyncio.ensure_future(scheduled(int(order[k % rows]), due))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                    sent += 1
                    k += 1
                if tasks:
                    # Requests still queued or in flight 10 s after the window are abandoned, not
                    # failed: the load generator's bound, counted apart (their latency exceeds it).
                    _, pending = await asyncio.wait(tasks, timeout=max(1.0, w1 + 10.0 - time.monotonic()))
                    for t in pending:
                        t.cancel()
                    await asyncio.gather(*pending, return_exceptions=True)
                    unfinished = len(pending)
        finally:
            await d.close()
        return {
            "latencies": np.asarray(lat, dtype=np.float64),
            "errors": errors,
            "first_error": first_error,
            "late": late,
            "unfinished": unfinished,
            "capped": sent >= phase.max_requests,
        }


async def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def worker_main(conn: Connection, arrays_path: str, index: int) -> None:
    import gc
    import signal

    import uvloop

    # Ctrl-C goes to the parent, which stops this process through the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker = _Worker(arrays_path)
    # As the server's workers do: what is alive after start-up is never collected, so a
    # full collection (tens of ms, once every few thousand requests) does not stall a
    # phase's requests and show up as the systems' latency. Same for both systems' clients.
    gc.collect()
    gc.freeze()
    conn.send("ready")
    phases = 0
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        if msg[0] == "check":
            _, target, row = msg
            try:
                conn.send(uvloop.run(worker.check(target, row)))
            except Exception as exc:
                conn.send(f"{type(exc).__name__}: {exc}")
            continue
        _, phase, share, start, rate, offset = msg
        phases += 1
        conn.send(uvloop.run(worker.phase(phase, share, start, rate, offset, seed=1000 * index + phases)))
