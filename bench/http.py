"""HTTP lookups through a real ``saec serve``: requests and ids per second, latency.

    python -m bench.http

Builds the demo store (``saec.demo.build_demo``; ``--features N`` writes one generated
compressed field of N features instead), starts ``saec serve`` on 127.0.0.1 at a
free port with 1 and then 2 workers, and for each of four encodings of a 4096-id
request (JSON in/JSON out with float text, JSON in/JSON out with base64 vectors, JSON
in/binary out, binary in/binary out) runs

- sync: one connection, one request at a time, end to end as a user sees it:
  ``clients.SaecClient`` hashes the raw ids, encodes, sends, decodes (JSON in/binary
  out, which SaecClient does not offer, goes through its transport doing the same);
- async c=8: eight requests in flight over ``clients._http.AsyncPool`` (the saec
  clients' transport), bodies encoded before the clock starts and answers read but not
  decoded, so the client spends as little of the shared CPU as it can.

The last table divides the server's CPU per request of each JSON answer by the binary
one's (target for float text: at most 2x).

Every cell is bounded by a request count and a time limit. The client runs on the
same cores as the server; the CPU columns say who used them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import orjson

from bench._report import Report, markdown_table
from saec.clients._http import AsyncPool, SyncPool, pool_args
from saec.clients.client import SaecClient
from saec.progress import Progress
from saec.store.hashing import hash_ids
from saec.wire import IDS_MEDIA_TYPE, VECTORS_MEDIA_TYPE, decode_vectors, encode_ids

FIELD = "user_id"
IDS = 4096
MODES = ("JSON in, JSON out", "JSON in, base64 out", "JSON in, binary out", "binary in, binary out")
CONCURRENCY = 8
POOL = 64
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in a process group."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces; fields after it are fixed.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat), to see work that is not ours."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user).
    return (sum(values[:8]) - values[3] - values[4]) / CLK_TCK


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    workers: int
    log_path: Path

    def cpu_seconds(self) -> float:
        return group_cpu_seconds(self.proc.pid)


@contextmanager
def serve(store: Path, workers: int, logs: Path, env: dict[str, str]) -> Iterator[Server]:
    """``saec serve`` in its own process group, stopped (group and all) on exit."""
    port = free_port()
    log_path = logs / f"serve-{workers}w-{port}.log"
    cmd = [
        sys.executable,
        "-m",
        "saec.cli",
        "serve",
        "--store",
        str(store),
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **env}
        )
    server = Server(proc=proc, url=f"http://{HOST}:{port}", workers=workers, log_path=log_path)
    try:
        wait_ready(server, workers)
        yield server
    finally:
        stop(proc)


def wait_ready(server: Server, workers: int, timeout: float = 60.0) -> None:
    """Until /readyz answers 200 on enough fresh connections to have met every worker."""
    deadline = time.monotonic() + timeout
    ready = 0
    while ready < 4 * workers:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"saec serve exited with {server.proc.returncode}:\n{server.log_path.read_text()[-2000:]}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"saec serve not ready after {timeout} s:\n{server.log_path.read_text()[-2000:]}")
        try:
            with httpx.Client(base_url=server.url, timeout=2.0) as c:
                ready = ready + 1 if c.get("/readyz").status_code == 200 else 0
        except httpx.TransportError:
            time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (uvicorn's supervisor and its workers), then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# -- workloads ----------------------------------------------------------------------------


@dataclass
class Cell:
    workers: int
    load: str
    mode: str
    latencies: list[float]
    seconds: float
    client_cpu: float
    server_cpu: float
    machine_cpu: float
    found: float

    @property
    def requests(self) -> int:
        return len(self.latencies)

    def row(self) -> list[str]:
        lat = np.array(self.latencies) * 1e3
        rps = self.requests / self.seconds
        return [
            str(self.workers),
            self.load,
            self.mode,
            f"{self.requests:,}",
            f"{rps:,.0f}",
            f"{rps * IDS / 1e6:.2f}",
            f"{np.percentile(lat, 50):.2f}",
            f"{np.percentile(lat, 99):.2f}",
            f"{100 * self.client_cpu / self.seconds:.0f}%",
            f"{100 * self.server_cpu / self.seconds:.0f}%",
            f"{100 * max(0.0, self.machine_cpu - self.client_cpu - self.server_cpu) / self.seconds:.0f}%",
            f"{1e3 * self.server_cpu / self.requests:.2f}",
        ]


HEADER = [
    "workers",
    "client",
    "in / out",
    "requests",
    "req/s",
    "M ids/s",
    "p50 ms",
    "p99 ms",
    "client CPU",
    "server CPU",
    "other CPU",
    "server CPU ms/req",
]


def sync_caller(url: str, mode: str) -> tuple[Callable[[npt.NDArray[np.int64]], float], Callable[[], None]]:
    """A function that looks up raw ids end to end and returns the found fraction, and its closer."""
    if mode == "JSON in, binary out":
        pool = SyncPool(timeout=30.0, **(pool_args(url) or {}))

        def call(ids: npt.NDArray[np.int64]) -> float:
            keys = hash_ids(ids, FIELD)
            body = orjson.dumps({"fields": {FIELD: keys.tolist()}, "hashed": True})
            r = pool.request(
                "POST", "/lookup", [body], {"content-type": "application/json", "accept": VECTORS_MEDIA_TYPE}
            )
            if r.status_code != 200:
                raise RuntimeError(f"POST /lookup answered {r.status_code}: {r.text[:300]}")
            return float(decode_vectors(r.content).fields[FIELD][1].mean())

        return call, pool.close
    client = SaecClient(url, protocol="json" if mode.startswith("JSON") else "binary", max_ids=IDS, timeout=30.0)
    # SaecClient's JSON mode asks for base64 vectors; the float-text cell asks for floats.
    client._core.json_encoding = "float" if mode == "JSON in, JSON out" else "base64"

    def call(ids: npt.NDArray[np.int64]) -> float:
        return float(client.lookup({FIELD: ids})[FIELD].found.mean())

    return call, client.close


def encoded(mode: str, ids: npt.NDArray[np.int64]) -> tuple[bytes, dict[str, str]]:
    keys = hash_ids(ids, FIELD)
    if mode.startswith("binary"):
        return encode_ids({FIELD: keys}, hashed=True), {"content-type": IDS_MEDIA_TYPE, "accept": VECTORS_MEDIA_TYPE}
    accept = VECTORS_MEDIA_TYPE if mode.endswith("binary out") else "application/json"
    doc: dict[str, object] = {"fields": {FIELD: keys.tolist()}, "hashed": True}
    if mode.endswith("base64 out"):
        doc["encoding"] = "base64"
    return orjson.dumps(doc), {"content-type": "application/json", "accept": accept}


def found_fraction(mode: str, content: bytes | bytearray) -> float:
    if mode.endswith("binary out"):
        return float(decode_vectors(content).fields[FIELD][1].mean())
    return float(np.mean(orjson.loads(content)["fields"][FIELD]["found"]))


PAUSE_S = 0.005


def run_sync(
    server: Server, mode: str, pool: npt.NDArray[np.int64], count: int, seconds: float, warm: int, pause: float = 0.0
) -> Cell:
    """One user in a loop; with ``pause``, sleeping that long between lookups (as a client
    busy with each answer would: the float-text JSON cell's client parses for ~5 ms)."""
    call, close = sync_caller(server.url, mode)
    try:
        found = [call(pool[i % len(pool)]) for i in range(warm)]
        lat: list[float] = []
        cpu0, srv0, all0 = time.process_time(), server.cpu_seconds(), machine_busy_seconds()
        start = time.perf_counter()
        deadline = start + seconds
        i = 0
        while i < count and time.perf_counter() < deadline:
            t = time.perf_counter()
            call(pool[i % len(pool)])
            lat.append(time.perf_counter() - t)
            i += 1
            if pause:
                time.sleep(pause)
        wall = time.perf_counter() - start
        client_cpu, server_cpu = time.process_time() - cpu0, server.cpu_seconds() - srv0
        machine_cpu = machine_busy_seconds() - all0
    finally:
        close()
    return Cell(
        server.workers,
        f"sync, 1 connection, {pause * 1e3:g} ms pause" if pause else "sync, 1 connection",
        mode,
        lat,
        wall,
        client_cpu,
        server_cpu,
        machine_cpu,
        float(np.mean(found)),
    )


async def _run_async(
    url: str,
    bodies: list[tuple[bytes, dict[str, str]]],
    mode: str,
    count: int,
    seconds: float,
    warm: int,
    counters: Callable[[], tuple[float, float, float]],
) -> tuple[list[float], float, float, tuple[float, float, float]]:
    http = AsyncPool(timeout=30.0, max_idle=CONCURRENCY, **(pool_args(url) or {}))
    try:

        async def one(i: int) -> bytes | bytearray:
            body, headers = bodies[i % len(bodies)]
            r = await http.request("POST", "/lookup", [body], headers)
            if r.status_code != 200:
                raise RuntimeError(f"POST /lookup answered {r.status_code}: {r.text[:300]}")
            return r.content

        # Warm every connection in the pool, and check the answers once.
        first = await asyncio.gather(*(one(i) for i in range(max(warm, CONCURRENCY))))
        found = float(np.mean([found_fraction(mode, c) for c in first[:4]]))
        lat: list[float] = []
        issued = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal issued
            while issued < count and time.perf_counter() < deadline:
                i = issued
                issued += 1
                t = time.perf_counter()
                await one(i)
                lat.append(time.perf_counter() - t)

        before = counters()
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        wall = time.perf_counter() - start
        after = counters()
        return lat, wall, found, (after[0] - before[0], after[1] - before[1], after[2] - before[2])
    finally:
        await http.aclose()


def run_async(server: Server, mode: str, pool: npt.NDArray[np.int64], count: int, seconds: float, warm: int) -> Cell:
    bodies = [encoded(mode, ids) for ids in pool]

    def counters() -> tuple[float, float, float]:
        return time.process_time(), server.cpu_seconds(), machine_busy_seconds()

    lat, wall, found, (client_cpu, server_cpu, machine_cpu) = asyncio.run(
        _run_async(server.url, bodies, mode, count, seconds, warm, counters)
    )
    return Cell(server.workers, f"async, c={CONCURRENCY}", mode, lat, wall, client_cpu, server_cpu, machine_cpu, found)


# -- the store ----------------------------------------------------------------------------


def make_store(root: Path, features: int | None, seed: int) -> str:
    """A store whose field ``user_id`` holds raw ids 0..features-1; returns how it was made."""
    if features is None:
        from saec.demo import build_demo

        build_demo(root, seed=seed, quiet=True)
        return f"saec.demo.build_demo (seed {seed}): user_id 200,000 x 9 compressed at k=100, and 4 more fields"
    from saec.store.writer import SnapshotWriter

    rng = np.random.default_rng(seed)
    keys = np.empty(features, dtype=np.uint64)
    for s in range(0, features, 1 << 22):
        e = min(features, s + (1 << 22))
        keys[s:e] = hash_ids(np.arange(s, e, dtype=np.int64), FIELD)
    with SnapshotWriter(root, source="bench.http") as w:
        w.add_compressed_field(
            FIELD, keys, rng.standard_normal((100, 9), dtype=np.float32), rng.integers(0, 100, features, dtype=np.uint8)
        )
        w.publish()
    return f"one generated field user_id, {features:,} x 9, k=100, random masks"


def cpu_ratio_rows(cells: list[Cell], reference: str, judged: str, bound: float) -> list[list[str]]:
    """Per cell not in mode ``reference``: its server CPU ms a request ÷ that of the
    ``reference`` cell with the same workers and load, judged against ``bound`` where its
    mode is ``judged``. Rows: workers, client, mode, ms, reference ms, ratio, verdict."""
    rows = []
    for c in cells:
        if c.mode == reference:
            continue
        ref = next(b for b in cells if b.mode == reference and b.workers == c.workers and b.load == c.load)
        ms, ref_ms = 1e3 * c.server_cpu / c.requests, 1e3 * ref.server_cpu / ref.requests
        verdict = ("met" if ms / ref_ms <= bound else "**missed**") if c.mode == judged else ""
        rows.append([str(c.workers), c.load, c.mode, f"{ms:.2f}", f"{ref_ms:.2f}", f"{ms / ref_ms:.2f}x", verdict])
    return rows


def json_ratio(cells: list[Cell]) -> str:
    """Server CPU ms a request of each JSON answer ÷ that of binary in/binary out, same workers and load."""
    return markdown_table(
        ["workers", "client", "in / out", "server CPU ms/req", "binary in/out ms/req", "÷ binary", "target <= 2x"],
        cpu_ratio_rows(cells, "binary in, binary out", "JSON in, JSON out", 2.0),
    )


def add_cell_arguments(parser: argparse.ArgumentParser, results: str) -> None:
    """The flags bench.http and bench.grpc_http share: cells, the server, the report."""
    parser.add_argument("--workers", default="1,2", help="server worker counts to run, e.g. 1,2")
    parser.add_argument("--requests", type=int, default=4000, help="most requests per cell")
    parser.add_argument("--seconds", type=float, default=6.0, help="most seconds per cell")
    parser.add_argument("--warm", type=int, default=30, help="requests before the clock starts")
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="NAME=VALUE", help="extra environment for saec serve"
    )
    parser.add_argument("--results", default=results, help="write bench/results/<RESULTS>.md")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http", description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=lambda s: int(float(s)), help="serve one generated field of this size")
    add_cell_arguments(parser, "http")
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.server_env)
    workers = [int(w) for w in args.workers.split(",")]

    report = Report(
        args.results, "HTTP lookups through saec serve", modules=("numpy", "uvicorn", "fastapi", "httpx", "orjson")
    )
    cells: list[Cell] = []
    progress = Progress()
    with tempfile.TemporaryDirectory(prefix="saec-bench-http-") as tmp:
        root = Path(tmp)
        log("building the store")
        t = time.perf_counter()
        made = make_store(root / "store", args.features, args.seed)
        built_s = time.perf_counter() - t
        for w in workers:
            log(f"starting saec serve with {w} worker(s)")
            with serve(root / "store", w, root, env) as server:
                with SaecClient(server.url) as c:
                    features = int(c.snapshot()["fields"][FIELD]["features"])
                rng = np.random.default_rng(args.seed)
                pool = rng.integers(0, features, size=(POOL, IDS), dtype=np.int64)
                progress.stage(f"{w} worker(s)", total=2 * len(MODES))
                for mode in MODES:
                    for runner in (run_sync, run_async):
                        cell = runner(server, mode, pool, args.requests, args.seconds, args.warm)
                        progress.step(f"{mode}, {runner.__name__}")
                        if cell.found < 0.99:
                            raise RuntimeError(f"expected stored ids to be found, got {cell.found:.2%} found")
                        cells.append(cell)
                # The same binary lookups with the server left idle between them.
                cells.append(run_sync(server, MODES[-1], pool, args.requests, args.seconds, args.warm, pause=PAUSE_S))
    progress.close()
    report.section("Lookups of 4096 ids a request", markdown_table(HEADER, [c.row() for c in cells]))
    report.section(
        "JSON against binary: the server's CPU per request",
        json_ratio(cells)
        + "\n\nThe sync and async cells send the same requests and get the same answers; in the sync float-text"
        " cell the one client spends ~5 ms parsing each answer's float text (client CPU column) while the server"
        " waits. A server left idle between requests spends more CPU on each: the binary lookups with a"
        f" {PAUSE_S * 1e3:g} ms pause between them (the 'pause' rows above) cost "
        + ", ".join(
            f"{1e3 * p.server_cpu / p.requests:.2f} ms against {1e3 * b.server_cpu / b.requests:.2f} ms"
            f" ({p.workers} worker{'s' if p.workers > 1 else ''})"
            for p in cells if "pause" in p.load
            for b in cells if b.load == "sync, 1 connection" and b.mode == p.mode and b.workers == p.workers
        )
        + " without one. The async cells and `wrk` (`bench.peers`) measure a busy server.",
    )
    setup = [
        f"store: {made} (built in {built_s:.1f} s); ids drawn from the stored ones",
        f"server: `saec serve --host {HOST} --workers N --log-level warning`, other settings default"
        + (f"; extra environment: {' '.join(args.server_env)}" if args.server_env else ""),
        f"each cell: up to {args.requests} requests or {args.seconds:g} s after {args.warm} warm-up requests",
    ]
    report.section("Setup", "\n".join(f"- {line}" for line in setup))
    report.section(
        "How to read this",
        "req/s and M ids/s count completed requests over the cell's wall time; p50/p99 are per request, "
        "measured by the client (async: from sending to the last byte, so they include waiting behind the "
        "other 7). 'sync' is one user calling SaecClient in a loop: hashing, encoding and decoding are in "
        "the time. 'async' pre-encodes the bodies and does not decode answers, to leave the server as much "
        "of the 2 cores as it can; when client CPU + server CPU is near 200%, the cores are the limit, not "
        "the server alone. CPU columns are user + system time over wall time (100% = one core); 'other "
        "CPU' is what the rest of the machine used meanwhile: when it is high, the cell measured a shared "
        "machine. 'server CPU ms/req' is the server's CPU time per request: it moves much less with other "
        "load than the rates do, so it is the figure to compare between runs on a busy machine.",
    )
    if not args.no_write:
        report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
