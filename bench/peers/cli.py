"""The command line of ``python -m bench.peers``: flags, smoke defaults, exit codes."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bench.peers
from bench import _redis
from bench.peers.common import RESULTS, log
from bench.peers.headline import summary
from bench.peers.plot import write_results
from bench.peers.run import run_benchmark


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _malloc(text: str) -> list[bool]:
    choices = {"off": [False], "on": [True], "both": [False, True]}
    if text not in choices:
        raise argparse.ArgumentTypeError(f"expected off, on or both, got {text!r}")
    return choices[text]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench/peers",
        description=(bench.peers.__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="small table, short phases, one server configuration: checks equal answers (for CI)",
    )
    p.add_argument("--features", type=int, default=1_000_000, help="rows of the table")
    p.add_argument("--dim", type=int, default=16, help="floats per vector (16 = 64-byte vectors)")
    p.add_argument("--k", type=int, default=256, help="codebook size")
    p.add_argument(
        "--top-n", dest="top_n", type=int, default=100_000, help="rows k-means runs on (compress_field top_n)"
    )
    p.add_argument("--batch", type=int, default=4096, help="ids a request")
    p.add_argument("--concurrency", type=_ints, default=[1, 2, 4, 8, 16], help="client concurrencies, comma-separated")
    p.add_argument("--workers", type=_ints, default=[1, 2], help="uvicorn worker counts to measure, comma-separated")
    p.add_argument(
        "--malloc",
        type=_malloc,
        default=[False, True],
        metavar="{off,on,both}",
        help="glibc malloc env for the server: off, on or both",
    )
    p.add_argument("--client-procs", dest="client_procs", type=int, default=2, help="load generator processes")
    p.add_argument("--duration", type=float, default=3.0, help="measured seconds a point")
    p.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds before each point")
    p.add_argument("--warm", type=float, default=1.0, help="unmeasured seconds of requests after a server starts")
    p.add_argument(
        "--rate-duration", dest="rate_duration", type=float, default=5.0, help="seconds of the half-peak phase"
    )
    p.add_argument(
        "--max-requests", dest="max_requests", type=int, default=50_000, help="cap on requests a process a point"
    )
    p.add_argument("--query-batches", dest="query_batches", type=int, default=256, help="distinct request bodies")
    p.add_argument("--check-batches", dest="check_batches", type=int, default=4, help="batches compared across systems")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--busy",
        type=float,
        default=0.3,
        help="cores of CPU used by processes outside the benchmark above which a point is measured again",
    )
    p.add_argument("--retries", type=int, default=1, help="extra attempts of a point measured under outside load")
    p.add_argument(
        "--wait-idle",
        dest="wait_idle",
        type=float,
        default=120.0,
        help="seconds to wait, before measuring, for outside load to drop under --busy",
    )
    p.add_argument(
        "--bare",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure both services through bare asyncio clients (no redis-py, no httpx)",
    )
    p.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="profile server and clients with py-spy in an extra phase (if py-spy is installed)",
    )
    p.add_argument("--profile-seconds", dest="profile_seconds", type=float, default=4.0)
    p.add_argument(
        "--loadgen",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also drive each server with a compiled load generator (wrk; redis-benchmark), installed if missing",
    )
    p.add_argument(
        "--loadgen-concurrency",
        dest="loadgen_concurrency",
        type=_ints,
        default=[1, 4, 16],
        help="connections of the compiled load generators, comma-separated",
    )
    p.add_argument(
        "--loadgen-duration", dest="loadgen_duration", type=float, default=4.0, help="seconds a compiled load point"
    )
    p.add_argument("--redis-server", dest="redis_server", help="path of the redis-server binary (default: PATH)")
    p.add_argument(
        "--no-install",
        dest="no_install",
        action="store_true",
        help="never apt-get install redis-server when it is missing",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for peers.md and peers.png (default: bench/results; --smoke: a temporary folder)",
    )
    return p


SMOKE = {
    "features": 10_000,
    "k": 50,
    "top_n": 5_000,
    "batch": 1024,
    "concurrency": [2],
    "workers": [1],
    "malloc": [False],
    "client_procs": 1,
    "duration": 0.5,
    "warmup": 0.15,
    "rate_duration": 0.3,
    "warm": 0.4,
    "max_requests": 2_000,
    "query_batches": 16,
    "check_batches": 2,
    "profile": False,
    "loadgen_concurrency": [2],
    "loadgen_duration": 1.0,
    "retries": 0,
    "wait_idle": 0.0,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.smoke:
        given = {a.lstrip("-").split("=")[0].replace("-", "_") for a in argv if a.startswith("--")}
        for k, value in SMOKE.items():
            if k not in given:
                setattr(args, k, value)
    if args.k * 100 > args.features:
        raise SystemExit(
            f"expected --features >= 100 * k = {100 * args.k} (compress_field's min_factor), got {args.features}"
        )

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        run = run_benchmark(args)
    except KeyboardInterrupt:
        log("interrupted: every process this run started has been stopped")
        return 130
    except (_redis.RedisUnavailableError, AssertionError, RuntimeError) as exc:
        log(f"bench.peers: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    errors = sum(p.result.errors for p in run.points) + sum(p.errors for p in run.loadgen)
    empty = [p for p in run.points if p.result.requests == 0]
    with contextlib.ExitStack() as stack:
        out = args.out
        if out is None:
            out = (
                Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="saec-peers-smoke-")))
                if args.smoke
                else RESULTS
            )
        md, png = write_results(run, out, argv)
        print(summary(run))
        for c in run.checks:
            print(f"equal answers: {c}")
        if not args.smoke or args.out is not None:
            print(f"wrote {md} and {png}")
    if errors or empty:
        log(f"bench.peers: {errors} failed requests; {len(empty)} points without a completed request")
        return 1
    if args.smoke:
        print("smoke: every system answered the same vectors and found flags; every phase completed")
    return 0
