"""What sharding by field costs a lookup: one server holding both fields against two
replicas holding one each, behind :class:`saec.clients.ShardedSaecClient`.

    python -m bench.sharded                  # 2 fields x 1e6 features, 2048 ids of each a lookup
    python -m bench.sharded --seconds 3      # shorter cells

Each cell is one user calling the client in a loop (binary protocol, hashing, encoding and
decoding in the time). The servers run one worker each; the sharded cell's two requests go
out concurrently from the client's threads. Before timing, the merged answer is checked to
equal the single server's, bit for bit. Server CPU per lookup sums every server process's
CPU over the cell: the figure to compare on a shared machine.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench._report import Report, markdown_table
from bench.http import serve
from saec.clients import SaecClient, ShardedSaecClient
from saec.progress import Progress
from saec.store.hashing import hash_ids
from saec.store.writer import SnapshotWriter

FIELDS = ("user", "item")


def make_store(root: Path, features: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with SnapshotWriter(root, source="bench.sharded") as w:
        for name in FIELDS:
            keys = hash_ids(np.arange(features, dtype=np.int64), name)
            w.add_compressed_field(name, keys, rng.standard_normal((100, 9), dtype=np.float32),
                                   rng.integers(0, 100, features, dtype=np.uint8))
        w.publish()


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_cell(call: Callable[[dict[str, np.ndarray]], object], requests: list[dict[str, np.ndarray]],
             seconds: float, servers_cpu: Callable[[], float]) -> dict[str, float]:
    for r in requests[:20]:  # warm-up: connections, kernels compiled in every server
        call(r)
    latencies = []
    cpu0, srv0, t0 = cpu_self(), servers_cpu(), time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < seconds:
        s = time.perf_counter()
        call(requests[i % len(requests)])
        latencies.append(time.perf_counter() - s)
        i += 1
    wall = time.perf_counter() - t0
    ids = sum(len(v) for v in requests[0].values())
    return {
        "lookups": i, "per_s": i / wall, "mids": i * ids / wall / 1e6,
        "p50": float(np.percentile(latencies, 50)) * 1e3, "p99": float(np.percentile(latencies, 99)) * 1e3,
        "client_cpu": (cpu_self() - cpu0) / wall, "server_ms": (servers_cpu() - srv0) / i * 1e3,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", type=int, default=1_000_000)
    ap.add_argument("--ids", type=int, default=2048, help="ids of each field per lookup")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    report = Report("sharded", "Lookups across field shards against one server", modules=("numpy", "httpx"))
    rng = np.random.default_rng(args.seed)
    requests = [{name: rng.integers(0, args.features, args.ids) for name in FIELDS} for _ in range(64)]
    with tempfile.TemporaryDirectory(prefix="saec-sharded-") as tmp, Progress() as progress:
        store, logs = Path(tmp) / "store", Path(tmp)
        progress.stage(f"writing 2 fields of {args.features:,} features")
        make_store(store, args.features, args.seed)
        progress.stage("starting 3 servers")
        with serve(store, 1, logs, {}) as single, \
                serve(store, 1, logs, {"SAEC_FIELDS": "user"}) as a, \
                serve(store, 1, logs, {"SAEC_FIELDS": "item"}) as b:
            with SaecClient(single.url) as one, ShardedSaecClient({"user": a.url, "item": b.url}) as many:
                progress.stage("checking the merged answers")
                for r in requests[:4]:
                    x, y = one.lookup(r), many.lookup(r)
                    assert all(x[f].vectors.tobytes() == y[f].vectors.tobytes() for f in FIELDS)
                progress.stage(f"timing 2 cells of {args.seconds:g} s", 2)
                cells = {"one server, both fields": run_cell(one.lookup, requests, args.seconds, single.cpu_seconds)}
                progress.step("one server")
                cells["two replicas, one field each"] = run_cell(
                    many.lookup, requests, args.seconds, lambda: a.cpu_seconds() + b.cpu_seconds())
                progress.step("two replicas")
    report.section(
        f"Lookups of {args.ids} ids of each of 2 fields ({2 * args.ids} in all), {args.features:,} features a field",
        markdown_table(
            ["setup", "lookups", "lookups/s", "M ids/s", "p50 ms", "p99 ms", "client CPU", "server CPU ms/lookup"],
            [[label, c["lookups"], f"{c['per_s']:.0f}", f"{c['mids']:.2f}", f"{c['p50']:.2f}", f"{c['p99']:.2f}",
              f"{c['client_cpu']:.0%}", f"{c['server_ms']:.2f}"] for label, c in cells.items()],
        ) + "\n\nThe merged answers were checked equal, bit for bit, to the single server's before timing.",
    )
    report.write()


if __name__ == "__main__":
    main()
