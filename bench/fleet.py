"""A fleet of replicas sharing one update log: updates/s into the log and replication lag.

    python -m bench.fleet [--seconds 8] [--trials 200] [--writers 4] [--batch 100] [--no-write]

Starts a ``redis-server`` (``--appendonly yes --appendfsync always``, its own folder, a
free loopback port) and three ``saec serve --update-log`` replicas, each with its own
store folder holding the same snapshot (one compressed field, k = 256, and one dense
field; 200,000 features each, dim 16), and measures:

1. **Updates/s into the log**: ``--writers`` client threads post batches of ``--batch``
   ids (binary ``POST /admin/updates``) to the replicas in turn for ``--seconds``: batches
   and ids acknowledged per second, and the request's p50 / p99. Peers measured in the
   same run: the same load on one more replica *without* a log (today's path: the batch
   fsynced to that replica's own delta log), and ``XADD`` alone (``RedisUpdateLog.append``
   of a payload of the same size from the benchmark process: the log server's share).
2. **Replication lag**: ``--trials`` times, one batch is posted to replica i and, from its
   200, replica j != i is asked until a lookup finds every id: median, p99 and max of that
   delay, while the replicas are idle and while the writers of part 1 keep posting. Peer:
   the same delay on the replica that took the update (which answers only once it serves
   it, so this is one lookup round trip).
3. **Catch-up**: the third replica is stopped while the writers post to the other two for
   ``--seconds``, then started again: seconds from its start to ``/readyz`` 200 (which
   waits until it applied every entry the log held when it started), and the entries it
   applied. Peer: the same replica started again with nothing to catch up.

Results go to ``bench/results/fleet.md`` (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from bench._redis import RedisServer, ensure_redis_server, server_version
from bench._report import Report, markdown_table
from bench.http import Server, serve
from bench.keyindex import generate_keys

TOKEN = "bench-fleet-token"
DIM = 16
FEATURES = 200_000


def _store(root: Path) -> str:
    from saec.store.writer import SnapshotWriter

    rng = np.random.default_rng(0)
    with SnapshotWriter(root, source="bench.fleet") as w:
        w.add_compressed_field("user", generate_keys(0, FEATURES, "user"), rng.standard_normal((256, DIM), np.float32),
                               rng.integers(0, 256, FEATURES).astype(np.uint8))
        w.add_dense_field("item", generate_keys(0, FEATURES, "item"), rng.standard_normal((FEATURES, DIM), np.float32))
        return w.publish()


class _Ids:
    """Fresh ids, handed out under a lock to every thread."""

    def __init__(self) -> None:
        self._next = 10**12
        self._lock = threading.Lock()

    def take(self, n: int) -> np.ndarray:
        with self._lock:
            start, self._next = self._next, self._next + n
        return np.arange(start, start + n)


def _batch(ids: _Ids, n: int, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {"user": (ids.take(n), rng.standard_normal((n, DIM), np.float32)),
            "item": (ids.take(n), rng.standard_normal((n, DIM), np.float32))}


def _post_for(servers: list[Server], seconds: float, writers: int, batch: int, ids: _Ids,
              stop: threading.Event | None = None) -> tuple[int, list[float], float]:
    """``writers`` threads posting to ``servers`` in turn; (acknowledged, latencies, seconds)."""
    from saec.clients import SaecClient

    lat: list[float] = []
    lock = threading.Lock()
    end = time.perf_counter() + seconds

    def work(k: int) -> None:
        rng = np.random.default_rng(100 + k)
        mine = []
        with SaecClient(servers[k % len(servers)].url, timeout=60) as c:
            while time.perf_counter() < end and not (stop is not None and stop.is_set()):
                fields = _batch(ids, batch, rng)
                t0 = time.perf_counter()
                c.update(fields, token=TOKEN)
                mine.append(time.perf_counter() - t0)
        with lock:
            lat.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(lat), lat, time.perf_counter() - started


def _xadd_for(url: str, seconds: float, writers: int, payload: bytes) -> tuple[int, list[float], float]:
    from saec.store.updatelog import open_update_log

    lat: list[float] = []
    lock = threading.Lock()
    end = time.perf_counter() + seconds

    def work() -> None:
        log = open_update_log(url)
        mine = []
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            log.append(payload)
            mine.append(time.perf_counter() - t0)
        log.close()
        with lock:
            lat.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(lat), lat, time.perf_counter() - started


def _lag_trials(servers: list[Server], trials: int, batch: int, ids: _Ids) -> tuple[list[float], list[float]]:
    """(delays to another replica, delays on the replica that took it), seconds."""
    from saec.clients import SaecClient

    rng = np.random.default_rng(7)
    clients = [SaecClient(s.url, timeout=60) for s in servers]
    other, same = [], []
    try:
        for t in range(trials):
            i = t % len(servers)
            j = (i + 1 + (t // len(servers)) % (len(servers) - 1)) % len(servers)
            fields = _batch(ids, batch, rng)
            clients[i].update(fields, token=TOKEN)
            acked = time.perf_counter()
            for reader, out in ((clients[j], other), (clients[i], same)):
                while not all(r.found.all() for r in reader.lookup({n: v[0] for n, v in fields.items()}).fields.values()):
                    pass
                out.append(time.perf_counter() - acked)
                acked = time.perf_counter()
    finally:
        for c in clients:
            c.close()
    return other, same


def _caught_up(servers: list[Server], timeout: float = 300.0) -> float:
    """Wait until every replica has applied the whole log (its /readyz says lag 0); seconds waited."""
    import httpx

    t0 = time.perf_counter()
    for s in servers:
        while httpx.get(s.url + "/readyz", timeout=30).json()["update_log"]["lag_entries"] != 0:
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"{s.url} did not catch up on the log within {timeout} s")
            time.sleep(0.05)
    return time.perf_counter() - t0


def _ms(values: list[float], q: float) -> str:
    return f"{np.quantile(values, q) * 1e3:.1f}" if values else "-"


def _env(url: str) -> dict[str, str]:
    return {"SAEC_ADMIN_TOKEN": TOKEN, "SAEC_RELOAD_INTERVAL": "1", **({"SAEC_UPDATE_LOG": url} if url else {})}


@contextmanager
def _fleet(tmp: Path, redis_bin: str) -> Iterator[tuple[RedisServer, list[Server], Server, ExitStack]]:
    """The log server, three replicas with the log (the third in its own stack, to stop and
    start it), and one replica without."""
    root = tmp / "store0"
    _store(root)
    stores = [root] + [tmp / f"store{i}" for i in (1, 2, 3)]
    for s in stores[1:]:
        shutil.copytree(root, s)
    with ExitStack() as stack:
        redis = stack.enter_context(RedisServer(redis_bin, durable=True, directory=str(tmp / "redis")))
        url = f"redis://127.0.0.1:{redis.port}/0?stream=bench"
        replicas = [stack.enter_context(serve(s, 1, tmp, _env(url))) for s in stores[:2]]
        third = stack.enter_context(ExitStack())
        replicas.append(third.enter_context(serve(stores[2], 1, tmp, _env(url))))
        alone = stack.enter_context(serve(stores[3], 1, tmp, _env("")))
        yield redis, replicas, alone, third


def _restart(store: Path, tmp: Path, url: str) -> tuple[float, int, ExitStack]:
    """Start ``saec serve`` on ``store``: (seconds to /readyz 200, entries it applied meanwhile, its stack)."""
    import httpx

    stack = ExitStack()
    t0 = time.perf_counter()
    server = stack.enter_context(serve(store, 1, tmp, _env(url)))
    seconds = time.perf_counter() - t0
    applied = httpx.get(server.url + "/readyz", timeout=30).json()["update_log"].get("applied", 0)
    return seconds, applied, stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each throughput run")
    parser.add_argument("--trials", type=int, default=200, help="updates timed from 200 to visible elsewhere")
    parser.add_argument("--writers", type=int, default=4, help="client threads posting updates")
    parser.add_argument("--batch", type=int, default=100, help="ids per field per update")
    parser.add_argument("--redis-server", dest="redis_server", help="path of the redis-server binary (default: PATH)")
    parser.add_argument("--no-write", action="store_true", help="print only; keep bench/results as it is")
    args = parser.parse_args(argv)
    redis_bin = ensure_redis_server(args.redis_server)
    report = Report("fleet", "A fleet sharing one update log", modules=("numpy", "redis"))
    with tempfile.TemporaryDirectory(prefix="saec-bench-fleet-") as tmpdir, _fleet(Path(tmpdir), redis_bin) as (
        redis, replicas, alone, third
    ):
        url = f"redis://127.0.0.1:{redis.port}/0?stream=bench"
        ids = _Ids()
        _post_for(replicas + [alone], 1.0, len(replicas) + 1, args.batch, ids)  # first requests load kernels
        from saec.store.deltas import FieldDelta, encode_payload

        rng = np.random.default_rng(1)
        payload = encode_payload({n: FieldDelta(keys=v[0].astype(np.uint64), vectors=v[1], masks=None)
                                  for n, v in _batch(ids, args.batch, rng).items()})
        rows = []
        runs: list[tuple[str, Callable[[], tuple[int, list[float], float]]]] = [
            ("POST /admin/updates, 3 replicas with the log (acknowledged once XADD returned and the replica serves it)",
             lambda: _post_for(replicas, args.seconds, args.writers, args.batch, ids)),
            ("peer: POST /admin/updates, 1 replica without a log (fsynced to its own delta log)",
             lambda: _post_for([alone], args.seconds, args.writers, args.batch, ids)),
            (f"peer: XADD alone from {args.writers} clients (RedisUpdateLog.append, {len(payload):,} B a batch)",
             lambda: _xadd_for(url, args.seconds, args.writers, payload)),
        ]
        for what, run in runs:
            _caught_up(replicas)  # the XADD run leaves the replicas entries to apply: not in the next figures
            n, lat, seconds = run()
            rows.append((what, n, f"{n / seconds:,.0f}", f"{2 * args.batch * n / seconds:,.0f}", _ms(lat, 0.5),
                         _ms(lat, 0.99)))
        report.section(
            f"Updates/s into the log: {args.writers} client threads, batches of {args.batch} ids in each of 2 fields, "
            f"{args.seconds:g} s a run",
            markdown_table(["path", "batches", "batches/s", "ids/s", "p50 ms", "p99 ms"], rows)
            + f"\n\n- redis-server {server_version(redis_bin)}, --appendonly yes --appendfsync always"
            + "\n- all on this one machine: the log server, three replicas (each fsyncs every entry to its own delta "
            "log) and the clients share its cores and its disk",
        )
        backlog = _caught_up(replicas)
        other, same = _lag_trials(replicas, args.trials, args.batch, ids)
        stop = threading.Event()
        background = threading.Thread(target=_post_for, args=(replicas, 3600, args.writers, args.batch, ids, stop))
        background.start()
        try:
            other_busy, same_busy = _lag_trials(replicas, max(20, args.trials // 2), args.batch, ids)
        finally:
            stop.set()
            background.join()
        lag_rows = [
            ("idle", "another replica", len(other), _ms(other, 0.5), _ms(other, 0.99), f"{max(other) * 1e3:.1f}"),
            ("idle", "peer: the replica that took it", len(same), _ms(same, 0.5), _ms(same, 0.99),
             f"{max(same) * 1e3:.1f}"),
            (f"{args.writers} writers posting", "another replica", len(other_busy), _ms(other_busy, 0.5),
             _ms(other_busy, 0.99), f"{max(other_busy) * 1e3:.1f}"),
            (f"{args.writers} writers posting", "peer: the replica that took it", len(same_busy),
             _ms(same_busy, 0.5), _ms(same_busy, 0.99), f"{max(same_busy) * 1e3:.1f}"),
        ]
        report.section(
            "Replication lag: from the 200 of an update on one replica to a lookup finding all its ids",
            markdown_table(["load", "found on", "updates", "median ms", "p99 ms", "max ms"], lag_rows)
            + "\n\n- each figure includes the lookups that polled for it (one lookup round trip is the resolution)"
            + f"\n- before the idle rows, the replicas first applied what the XADD run had put on the log "
            f"({backlog:.1f} s)",
        )
        store = Path(tmpdir) / "store2"
        third.close()
        posted, _, _ = _post_for(replicas[:2], args.seconds, args.writers, args.batch, ids)
        behind, applied, stack = _restart(store, Path(tmpdir), url)
        stack.close()
        fresh, _, stack = _restart(store, Path(tmpdir), url)
        stack.close()
        report.section(
            "Catch-up: a replica stopped while updates flowed, started again",
            markdown_table(["start", "entries missed", "entries applied before ready", "start to /readyz 200 s"], [
                (f"after {args.seconds:g} s down with {args.writers} writers posting to the other two", posted,
                 applied, f"{behind:.1f}"),
                ("peer: started again with nothing to catch up", 0, 0, f"{fresh:.1f}"),
            ]) + "\n\n- the start includes the process start (Python, numba kernels from the cache) and the snapshot's "
            "verification; the difference between the rows is the catch-up",
        )
    if not args.no_write:
        report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
