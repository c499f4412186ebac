"""gRPC lookups against HTTP binary and JSON through the same ``saec serve``, in one run.

    python -m bench.grpc_http

Builds the demo store (as ``bench.http``), starts ``saec serve --grpc-port P`` with 1 and
then 2 workers, and for 4096-id lookups of ``user_id`` measures, on the same server:

- sync, 1 connection: one user calling ``SaecGrpcClient.lookup`` / ``SaecClient.lookup``
  (binary, and JSON with float text) in a loop, hashing, encoding and decoding included;
- async c=8: eight requests in flight, bodies encoded before the clock starts and answers
  read but not decoded: gRPC over eight ``grpc.aio`` channels (eight connections, so the
  kernel spreads them over the workers as it does HTTP's), HTTP over ``bench.http``'s pool
  of eight connections.

The last table divides gRPC's server CPU per request by HTTP binary's (target: at most
1.5x). The client runs on the same cores as the server; the CPU columns say who used them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt

from bench._report import Report, markdown_table
from bench.http import (
    CONCURRENCY,
    FIELD,
    HEADER,
    IDS,
    POOL,
    Cell,
    Server,
    add_cell_arguments,
    cpu_ratio_rows,
    free_port,
    log,
    machine_busy_seconds,
    make_store,
    run_async,
    serve,
)
from saec.clients.client import SaecClient
from saec.clients.grpc_client import SERVICE, SaecGrpcClient, encode_lookup
from saec.progress import Progress
from saec.store.hashing import hash_ids
from saec.v1 import saec_pb2

GRPC = "gRPC"
HTTP_BINARY = "binary in, binary out"
HTTP_JSON = "JSON in, JSON out"


def run_sync(
    server: Server, mode: str, call: Callable[[npt.NDArray[np.int64]], float], pool: npt.NDArray[np.int64],
    count: int, seconds: float, warm: int,
) -> Cell:
    """One user calling ``call`` (raw ids in, found fraction out) in a loop."""
    found = [call(pool[i % len(pool)]) for i in range(warm)]
    lat: list[float] = []
    cpu0, srv0, all0 = time.process_time(), server.cpu_seconds(), machine_busy_seconds()
    start = time.perf_counter()
    i = 0
    while i < count and time.perf_counter() < start + seconds:
        t = time.perf_counter()
        call(pool[i % len(pool)])
        lat.append(time.perf_counter() - t)
        i += 1
    wall = time.perf_counter() - start
    client_cpu, server_cpu = time.process_time() - cpu0, server.cpu_seconds() - srv0
    return Cell(
        server.workers, "sync, 1 connection", mode, lat, wall, client_cpu, server_cpu,
        machine_busy_seconds() - all0, float(np.mean(found)),
    )


def sync_cells(server: Server, target: str, pool: npt.NDArray[np.int64], count: int, seconds: float, warm: int) -> list[Cell]:
    cells = []
    with SaecGrpcClient(target, max_ids=IDS, timeout=30.0) as rpc:
        cells.append(run_sync(server, GRPC, lambda ids: float(rpc.lookup({FIELD: ids})[FIELD].found.mean()), pool, count, seconds, warm))
    for mode, protocol in ((HTTP_BINARY, "binary"), (HTTP_JSON, "json")):
        with SaecClient(server.url, protocol=protocol, max_ids=IDS, timeout=30.0) as http:  # type: ignore[arg-type]
            http._core.json_encoding = "float"  # JSON with float text, as bench.http's JSON cell

            def call(ids: npt.NDArray[np.int64], http: SaecClient = http) -> float:
                return float(http.lookup({FIELD: ids})[FIELD].found.mean())

            cells.append(run_sync(server, mode, call, pool, count, seconds, warm))
    return cells


async def _grpc_async(
    target: str, bodies: list[bytes], count: int, seconds: float, warm: int,
    counters: Callable[[], tuple[float, float, float]],
) -> tuple[list[float], float, float, tuple[float, float, float]]:
    # One connection a channel (no shared subchannel): as many connections as HTTP's pool.
    channels = [
        grpc.aio.insecure_channel(
            target, options=[("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", -1)]
        )
        for _ in range(CONCURRENCY)
    ]
    try:
        calls = [c.unary_unary(SERVICE + "Lookup") for c in channels]  # bytes in, bytes out

        async def one(slot: int, i: int) -> bytes:
            return await calls[slot](bodies[i % len(bodies)], timeout=30.0)

        first = await asyncio.gather(*(one(s, i) for i in range(max(warm, CONCURRENCY)) for s in [i % CONCURRENCY]))
        found = float(np.mean([
            np.frombuffer(saec_pb2.LookupResponse.FromString(b).fields[0].found, np.bool_).mean() for b in first[:4]
        ]))
        lat: list[float] = []
        issued = 0
        deadline = time.perf_counter() + seconds

        async def worker(slot: int) -> None:
            nonlocal issued
            while issued < count and time.perf_counter() < deadline:
                i = issued
                issued += 1
                t = time.perf_counter()
                await one(slot, i)
                lat.append(time.perf_counter() - t)

        before = counters()
        start = time.perf_counter()
        await asyncio.gather(*(worker(s) for s in range(CONCURRENCY)))
        wall = time.perf_counter() - start
        after = counters()
        return lat, wall, found, (after[0] - before[0], after[1] - before[1], after[2] - before[2])
    finally:
        for c in channels:
            await c.close()


def grpc_async(server: Server, target: str, pool: npt.NDArray[np.int64], count: int, seconds: float, warm: int) -> Cell:
    bodies = [encode_lookup({FIELD: hash_ids(ids, FIELD)}) for ids in pool]

    def counters() -> tuple[float, float, float]:
        return time.process_time(), server.cpu_seconds(), machine_busy_seconds()

    lat, wall, found, (client_cpu, server_cpu, machine_cpu) = asyncio.run(
        _grpc_async(target, bodies, count, seconds, warm, counters)
    )
    return Cell(server.workers, f"async, c={CONCURRENCY}", GRPC, lat, wall, client_cpu, server_cpu, machine_cpu, found)


def ratio(cells: list[Cell]) -> str:
    """Server CPU ms a request of gRPC and HTTP JSON ÷ that of HTTP binary, same workers and load."""
    return markdown_table(
        ["workers", "client", "protocol", "server CPU ms/req", "HTTP binary ms/req", "÷ HTTP binary", "gRPC target <= 1.5x"],
        cpu_ratio_rows(cells, HTTP_BINARY, GRPC, 1.5),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_http", description=__doc__.split("\n\n")[0])
    add_cell_arguments(parser, "grpc")
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    env = dict(item.split("=", 1) for item in args.server_env)

    report = Report(args.results, "gRPC against HTTP lookups through saec serve", modules=("numpy", "grpc", "uvicorn", "orjson"))
    cells: list[Cell] = []
    progress = Progress()
    with tempfile.TemporaryDirectory(prefix="saec-bench-grpc-") as tmp:
        root = Path(tmp)
        log("building the store")
        made = make_store(root / "store", None, args.seed)
        for w in workers:
            port = free_port()
            target = f"127.0.0.1:{port}"
            log(f"starting saec serve with {w} worker(s), gRPC on {port}")
            with serve(root / "store", w, root, {**env, "SAEC_GRPC_PORT": str(port)}) as server:
                with SaecClient(server.url) as c:
                    features = int(c.snapshot()["fields"][FIELD]["features"])
                rng = np.random.default_rng(args.seed)
                pool = rng.integers(0, features, size=(POOL, IDS), dtype=np.int64)
                progress.stage(f"{w} worker(s)", total=6)
                # Interleaved, so that load from elsewhere on the machine falls on all three alike.
                for cell in sync_cells(server, target, pool, args.requests, args.seconds, args.warm):
                    cells.append(cell)
                    progress.step(f"{cell.mode}, sync")
                cells.append(grpc_async(server, target, pool, args.requests, args.seconds, args.warm))
                progress.step("gRPC, async")
                for mode in (HTTP_BINARY, HTTP_JSON):
                    cells.append(run_async(server, mode, pool, args.requests, args.seconds, args.warm))
                    progress.step(f"{mode}, async")
                for cell in cells:
                    if cell.found < 0.99:
                        raise RuntimeError(f"expected stored ids to be found, got {cell.found:.2%} found ({cell.mode})")
    progress.close()
    header = [h if h != "in / out" else "protocol" for h in HEADER]
    report.section("Lookups of 4096 ids a request", markdown_table(header, [c.row() for c in cells]))
    report.section(
        "gRPC and HTTP JSON against HTTP binary: the server's CPU per request",
        ratio(cells)
        + "\n\n'JSON in, JSON out' is JSON with vectors as float text (bench.http's first mode);"
        " 'binary in, binary out' is saec.wire's format, what SaecClient speaks by default.",
    )
    report.section(
        "Setup",
        "\n".join(f"- {line}" for line in [
            f"store: {made}; ids drawn from the stored ones",
            "server: `saec serve --host 127.0.0.1 --grpc-port P --workers N --log-level warning`, other settings default"
            + (f"; extra environment: {' '.join(args.server_env)}" if args.server_env else ""),
            f"each cell: up to {args.requests} requests or {args.seconds:g} s after {args.warm} warm-up requests",
            "gRPC request: saec.v1.LookupRequest with the field's saec-hash-v1 keys as packed fixed64 (hashed_ids)",
        ]),
    )
    report.section(
        "How to read this",
        "As bench/results/http.md: req/s and M ids/s over the cell's wall time; p50/p99 per request as the client"
        " measured it; CPU columns are user + system time over wall time (100% = one core); 'server CPU ms/req'"
        " is the figure to compare between runs on a busy machine.",
    )
    if not args.no_write:
        report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
