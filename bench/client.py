"""The client's CPU per lookup: HTTP client libraries against hand-written transports.

    python -m bench.client                # about 2 minutes
    python -m bench.client --requests 100 # quicker, noisier

Starts one ``saec serve`` (1 worker) over a generated compressed field (dim 16, k=256)
on 127.0.0.1 and, from this process, sends the same 4096-id binary lookups one at a
time through each candidate: well-kept HTTP clients (httpx sync and async with the
options that cut its work, httpcore under httpx, aiohttp, urllib3, the standard
library's http.client) and hand-written ones (asyncio streams, and ``clients._http``,
the transport the saec clients use). Each candidate sends a prepared body and decodes
the answer with ``saec.wire.decode_vectors``; the end-to-end rows go through
``SaecClient`` / ``AsyncSaecClient`` (with httpx, as before, and with ``clients._http``)
and include splitting, hashing checks and decoding.

The figure is this process's CPU time (``time.process_time``: user + system, every
thread) per request: what a ranking service pays, barely moved by other load on the
machine, unlike wall time. Candidates run in interleaved rounds; the table shows the
median round. The rule (STYLE.md 12): a library is used if it is within 1.5x of the
best hand-written transport.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench._report import Report, markdown_table
from saec.progress import Progress
from saec.wire import IDS_MEDIA_TYPE, VECTORS_MEDIA_TYPE, decode_vectors, encode_ids

FIELD = "emb"
HEADERS = {"content-type": IDS_MEDIA_TYPE, "accept": VECTORS_MEDIA_TYPE}
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Candidate:
    name: str
    kind: str  # "library", "hand-written", "saec client"
    make: Callable[[str, list[bytes], npt.NDArray[np.uint64]], object]
    is_async: bool


def _check(content: bytes | bytearray, n: int) -> None:
    vectors, found = decode_vectors(content).fields[FIELD]
    if vectors.shape[0] != n or found.shape[0] != n:
        raise RuntimeError(f"expected {n} rows, got {vectors.shape[0]}")


# -- sync candidates: each returns (call(i), close) ------------------------------------------


def httpx_sync(url: str, bodies: list[bytes], keys: npt.NDArray[np.uint64]):
    import httpx

    c = httpx.Client(base_url=url, trust_env=False, timeout=30.0)

    def call(i: int) -> None:
        _check(c.post("/lookup", content=bodies[i], headers=HEADERS).content, keys.shape[1])

    return call, c.close


def urllib3_pool(url: str, bodies: list[bytes], keys: npt.NDArray[np.uint64]):
    import urllib3

    port = int(url.rsplit(":", 1)[1])
    pool = urllib3.HTTPConnectionPool(HOST, port, maxsize=1, retries=False)

    def call(i: int) -> None:
        r = pool.urlopen("POST", "/lookup", body=bodies[i], headers=HEADERS, preload_content=True)
        _check(r.data, keys.shape[1])

    return call, pool.close


def stdlib_http(url: str, bodies: list[bytes], keys: npt.NDArray[np.uint64]):
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection(HOST, port, timeout=30.0)

    def call(i: int) -> None:
        conn.request("POST", "/lookup", body=bodies[i], headers=HEADERS)
        _check(conn.getresponse().read(), keys.shape[1])

    return call, conn.close


def own_sync(url: str, bodies: list[bytes], keys: npt.NDArray[np.uint64]):
    from saec.clients._http import SyncPool, pool_args

    args = pool_args(url)
    assert args is not None
    pool = SyncPool(timeout=30.0, **args)

    def call(i: int) -> None:
        _check(pool.request("POST", "/lookup", [bodies[i]], HEADERS).content, keys.shape[1])

    return call, pool.close


def saec_sync(transport: str):
    def make(url: str, bodies: list[bytes], keys: npt.NDArray[np.uint64]):
        import httpx

        from saec.clients import SaecClient

        c = SaecClient(url, max_ids=keys.shape[1], transport=httpx.HTTPTransport() if transport == "httpx" else None)

        def call(i: int) -> None:
            c.lookup({FIELD: keys[i]}, hashed=True)

        return call, c.close

    return make


# -- async candidates: each returns (async call(i), async close) -----------------------------


def httpx_async(trust_env: bool):
    def make(url: str, bodies: list[bytes], keys: npt.NDArray[np.uint64]):
        import httpx

        c = httpx.AsyncClient(base_url=url, trust_env=trust_env, timeout=30.0)

        async def call(i: int) -> None:
            _check((await c.post("/lookup", content=bodies[i], headers=HEADERS)).content, keys.shape[1])

        return call, c.aclose

    return make


def httpcore_async(url: str, bodies: list[bytes], keys: npt.NDArray[np.uint64]):
    import httpcore

    pool = httpcore.AsyncConnectionPool()
    target = url + "/lookup"
    hdrs = list(HEADERS.items())

    async def call(i: int) -> None:
        r = await pool.request("POST", target, content=bodies[i], headers=hdrs)
        _check(r.content, keys.shape[1])

    return call, pool.aclose


def aiohttp_session(url: str, bodies: list[bytes], keys: npt.NDArray[np.uint64]):
    import aiohttp

    state: dict[str, aiohttp.ClientSession] = {}
    target = url + "/lookup"

    async def call(i: int) -> None:
        if "s" not in state:
            state["s"] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), auto_decompress=False, skip_auto_headers=("User-Agent",)
            )
        async with state["s"].post(target, data=bodies[i], headers=HEADERS) as r:
            _check(await r.read(), keys.shape[1])

    async def close() -> None:
        if "s" in state:
            await state["s"].close()

    return call, close


def streams(url: str, bodies: list[bytes], keys: npt.NDArray[np.uint64]):
    """A minimal keep-alive client on asyncio streams (readuntil + readexactly)."""
    port = int(url.rsplit(":", 1)[1])
    head = (
        f"POST /lookup HTTP/1.1\r\nhost: {HOST}:{port}\r\ncontent-type: {IDS_MEDIA_TYPE}\r\n"
        f"accept: {VECTORS_MEDIA_TYPE}\r\ncontent-length: %d\r\n\r\n"
    ).encode()
    state: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}

    async def call(i: int) -> None:
        if "c" not in state:
            state["c"] = await asyncio.open_connection(HOST, port)
        reader, writer = state["c"]
        writer.writelines([head % len(bodies[i]), bodies[i]])
        raw = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(v) for k, _, v in (ln.partition(b":") for ln in raw.split(b"\r\n")) if k.lower() == b"content-length"
        )
        _check(await reader.readexactly(length), keys.shape[1])

    async def close() -> None:
        if "c" in state:
            state["c"][1].close()

    return call, close


def own_async(url: str, bodies: list[bytes], keys: npt.NDArray[np.uint64]):
    from saec.clients._http import AsyncPool, pool_args

    args = pool_args(url)
    assert args is not None
    pool = AsyncPool(timeout=30.0, **args)

    async def call(i: int) -> None:
        _check((await pool.request("POST", "/lookup", [bodies[i]], HEADERS)).content, keys.shape[1])

    return call, pool.aclose


def saec_async(transport: str, protocol: str = "binary", json_encoding: str = "base64"):
    def make(url: str, bodies: list[bytes], keys: npt.NDArray[np.uint64]):
        import httpx

        from saec.clients import AsyncSaecClient

        c = AsyncSaecClient(
            url,
            max_ids=keys.shape[1],
            protocol=protocol,  # type: ignore[arg-type]
            transport=httpx.AsyncHTTPTransport() if transport == "httpx" else None,
        )
        c._core.json_encoding = json_encoding

        async def call(i: int) -> None:
            await c.lookup({FIELD: keys[i]}, hashed=True)

        return call, c.aclose

    return make


CANDIDATES = [
    Candidate("httpx.AsyncClient (trust_env=True, the default)", "library", httpx_async(True), True),
    Candidate("httpx.AsyncClient (trust_env=False)", "library", httpx_async(False), True),
    Candidate("httpcore.AsyncConnectionPool (httpx's transport, no Client layer)", "library", httpcore_async, True),
    Candidate("aiohttp.ClientSession (auto_decompress=False)", "library", aiohttp_session, True),
    Candidate("asyncio streams, keep-alive (hand-written, minimal)", "hand-written", streams, True),
    Candidate("clients._http.AsyncPool (hand-written, BufferedProtocol)", "hand-written", own_async, True),
    Candidate("httpx.Client (trust_env=False)", "library", httpx_sync, False),
    Candidate("urllib3.HTTPConnectionPool", "library", urllib3_pool, False),
    Candidate("http.client.HTTPConnection (standard library)", "library", stdlib_http, False),
    Candidate("clients._http.SyncPool (hand-written, socket.sendmsg + recv_into)", "hand-written", own_sync, False),
    Candidate("AsyncSaecClient over httpx (before)", "saec client", saec_async("httpx"), True),
    Candidate("AsyncSaecClient over clients._http (now)", "saec client", saec_async("own"), True),
    Candidate("SaecClient over httpx (before)", "saec client", saec_sync("httpx"), False),
    Candidate("SaecClient over clients._http (now)", "saec client", saec_sync("own"), False),
    Candidate(
        "AsyncSaecClient JSON, float text, over httpx (before)",
        "saec client",
        saec_async("httpx", "json", "float"),
        True,
    ),
    Candidate(
        "AsyncSaecClient JSON, float text, over clients._http", "saec client", saec_async("own", "json", "float"), True
    ),
    Candidate(
        "AsyncSaecClient JSON, base64 vectors, over clients._http (now)", "saec client", saec_async("own", "json"), True
    ),
]


def measure(
    c: Candidate, url: str, bodies: list[bytes], keys: npt.NDArray[np.uint64], n: int, warm: int
) -> tuple[float, float]:
    """(CPU ms a request, wall ms a request) over ``n`` requests after ``warm`` unmeasured ones."""
    rows = keys.shape[0]
    if c.is_async:
        import uvloop

        async def go() -> tuple[float, float]:
            call, close = c.make(url, bodies, keys)  # type: ignore[misc]
            fn: Callable[[int], Awaitable[None]] = call
            try:
                for i in range(warm):
                    await fn(i % rows)
                cpu0, t0 = time.process_time(), time.perf_counter()
                for i in range(n):
                    await fn(i % rows)
                return time.process_time() - cpu0, time.perf_counter() - t0
            finally:
                await close()

        cpu, wall = uvloop.run(go())
    else:
        call, close = c.make(url, bodies, keys)  # type: ignore[misc]
        try:
            for i in range(warm):
                call(i % rows)
            cpu0, t0 = time.process_time(), time.perf_counter()
            for i in range(n):
                call(i % rows)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        finally:
            close()
    return 1e3 * cpu / n, 1e3 * wall / n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=300, help="measured requests a candidate a round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--features", type=int, default=100_000)
    p.add_argument("--only", default="", help="run only candidates whose name contains this text")
    p.add_argument("--out", type=Path, default=None, help="folder for client.md (default bench/results)")
    args = p.parse_args(argv)

    from bench.peers.servers import SaecServer, ServerConfig
    from bench.peers.table import build_table, query_rows, write_stores

    report = Report(
        "client",
        "The client's CPU per 4096-id lookup",
        modules=("numpy", "httpx", "httpcore", "aiohttp", "urllib3", "uvloop"),
    )
    progress = Progress()
    progress.stage("table and server")
    table = build_table(args.features, 16, 256, 50_000, 0)
    candidates = [c for c in CANDIDATES if args.only in c.name]
    with tempfile.TemporaryDirectory(prefix="saec-client-bench-") as tmp:
        store, _ = write_stores(table, Path(tmp))
        keys = table.keys[query_rows(table, 64, args.batch, 0)]
        bodies = [encode_ids({FIELD: k}, hashed=True) for k in keys]
        results: dict[str, list[tuple[float, float]]] = {c.name: [] for c in candidates}
        with SaecServer(store, ServerConfig(1, True)) as server:
            progress.stage("candidates, interleaved rounds", total=args.rounds * len(candidates))
            for _ in range(args.rounds):
                for c in candidates:
                    results[c.name].append(measure(c, server.url, bodies, keys, args.requests, 20))
                    progress.step(c.name)
    progress.close()
    # Each candidate against the best hand-written transport of its own kind (async or blocking).
    best_own = {
        a: min(
            (
                statistics.median(x[0] for x in results[c.name])
                for c in candidates
                if c.kind == "hand-written" and c.is_async == a
            ),
            default=float("nan"),
        )
        for a in (True, False)
    }
    rows = []
    for c in candidates:
        cpu = statistics.median(x[0] for x in results[c.name])
        wall = statistics.median(x[1] for x in results[c.name])
        verdict = ("within 1.5x" if cpu <= 1.5 * best_own[c.is_async] else "no") if c.kind == "library" else ""
        rows.append([c.name, c.kind, f"{cpu:.3f}", f"{wall:.3f}", f"{cpu / best_own[c.is_async]:.2f}x", verdict])
    report.section(
        f"CPU of the client process per {args.batch}-id binary lookup (one request at a time, same server)",
        markdown_table(
            [
                "client",
                "kind",
                "CPU ms/request",
                "wall ms/request",
                "÷ best hand-written (same kind)",
                "library usable",
            ],
            rows,
        )
        + f"\n\nMedian of {args.rounds} interleaved rounds of {args.requests} requests each (after 20 unmeasured). "
        "Async candidates run on uvloop. CPU = time.process_time() of this process (user + system). "
        "The rule: a library is used if within 1.5x of the best hand-written transport.",
    )
    if args.out is not None or not args.only:
        report.write(args.out) if args.out is not None else report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
