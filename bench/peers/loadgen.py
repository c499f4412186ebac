"""Compiled load generators: each server's capacity with a client that costs next to nothing.

- saec: ``wrk`` (Debian package ``wrk``) with a Lua script that posts prepared request
  bodies (binary ``application/x-saec-ids``, or JSON ids with float-text JSON answers),
  rotating over several bodies, and prints its counts and latency percentiles.
- Redis: ``redis-benchmark`` (Debian package ``redis-tools``) sending ``MGET`` of
  ``batch`` keys ``k:<12 digits>`` drawn at random from the table's rows (its
  ``__rand_int__`` placeholders); the keys are loaded next to the table's binary keys
  after the memory was measured (:func:`load_text_keys`).

Both are installed by the benchmark when missing, as ``redis-server`` is. The load
generator's own CPU comes from ``wait4`` (its rusage), the server's from /proc over the
same run; the capacity (load generator CPU excluded) is the cores the server can use
divided by its CPU per request.
"""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson

from bench import _apt, _redis
from bench.peers.common import FIELD, log
from bench.peers.cpu import TICK, CpuSampler
from bench.peers.table import Table
from saec.wire import IDS_MEDIA_TYPE, VECTORS_MEDIA_TYPE, encode_ids

WRK_BODIES = 16
TEXT_KEY = "k:%012d"  # what redis-benchmark's __rand_int__ expands to, with prefix "k:"


@dataclass
class LoadgenPoint:
    """One run of a compiled load generator against one server.

    Attributes:
        cpu: cores used over the run by "server" (its processes), "loadgen", "other".
    """

    system: str
    config: str
    concurrency: int
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    server_cpu_s: float
    loadgen_cpu_s: float
    cpu: dict[str, float]
    server_cores: int  # cores the server can use: Redis 1 (one thread runs commands), saec min(workers, nproc)
    batch: int

    @property
    def ids_per_s(self) -> float:
        return self.requests * self.batch / self.seconds if self.seconds else 0.0

    @property
    def server_ms(self) -> float:
        return 1e3 * self.server_cpu_s / self.requests if self.requests else float("nan")

    @property
    def loadgen_ms(self) -> float:
        return 1e3 * self.loadgen_cpu_s / self.requests if self.requests else float("nan")

    @property
    def capacity_ids_per_s(self) -> float:
        """ids/s the server's CPU per request allows on the cores it can use, with a free load generator."""
        return self.server_cores * self.batch / (self.server_ms / 1e3) if self.requests else 0.0


def ensure_tools(install: bool) -> dict[str, str]:
    return {
        "wrk": _apt.ensure_binary("wrk", "wrk", install=install, log=log),
        "redis-benchmark": _apt.ensure_binary("redis-benchmark", "redis-tools", install=install, log=log),
    }


def tool_versions(tools: dict[str, str]) -> dict[str, str]:
    out = {}
    for name, path in tools.items():
        flag = "-v" if name == "wrk" else "--version"
        text = subprocess.run([path, flag], capture_output=True, text=True, timeout=10, check=False)
        line = (text.stdout or text.stderr).strip().splitlines()
        out[name] = line[0][:80] if line else "unknown"
    return out


def load_text_keys(server: _redis.RedisServer, table: Table, batch: int = 10_000) -> None:
    """SET ``k:<row, 12 digits>`` -> the row's float32 bytes for every row, for redis-benchmark."""
    raw_values = np.ascontiguousarray(table.vectors, dtype="<f4").tobytes()
    width = 4 * table.dim
    with server.client() as r:
        pipe = r.pipeline(transaction=False)
        for lo in range(0, table.n, batch):
            hi = min(table.n, lo + batch)
            pipe.mset({(TEXT_KEY % i).encode(): raw_values[width * i : width * (i + 1)] for i in range(lo, hi)})
            if len(pipe) >= 8:
                pipe.execute()
        pipe.execute()


_LUA = """
-- Posts prepared bodies in turn; prints one parseable line at the end.
local bodies = {}
local paths = {%(paths)s}
for i, p in ipairs(paths) do
  local f = assert(io.open(p, "rb"))
  bodies[i] = f:read("*a")
  f:close()
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "%(content_type)s"
wrk.headers["Accept"] = "%(accept)s"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/lookup", nil, bodies[(n %% #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("SAEC requests=%%d duration_us=%%d errors=%%d status_errors=%%d p50_us=%%d p99_us=%%d\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def write_wrk_script(workdir: Path, queries: npt.NDArray[np.uint64], protocol: str) -> Path:
    """A Lua script posting WRK_BODIES request bodies of ``protocol`` ("binary" or "json")."""
    paths = []
    for i in range(min(WRK_BODIES, queries.shape[0])):
        path = workdir / f"wrk-{protocol}-{i}.body"
        if protocol == "binary":
            path.write_bytes(encode_ids({FIELD: queries[i]}, hashed=True))
        else:
            path.write_bytes(orjson.dumps({"fields": {FIELD: queries[i].tolist()}, "hashed": True}))
        paths.append(path)
    content_type, accept = (
        (IDS_MEDIA_TYPE, VECTORS_MEDIA_TYPE) if protocol == "binary" else ("application/json", "application/json")
    )
    script = workdir / f"wrk-{protocol}.lua"
    script.write_text(
        _LUA % {"paths": ", ".join(f'"{p}"' for p in paths), "content_type": content_type, "accept": accept}
    )
    return script


def measure(
    cmd: list[str], server_pids: list[int], timeout: float
) -> tuple[str, float, float, float, dict[str, float]]:
    """Run a load generator to its end.

    Returns:
        (stdout, wall s, load generator CPU s (its rusage), server CPU s (/proc), cores used
        over the run by "server", "loadgen" and "other" (the rest of the machine)).
    """
    sampler = CpuSampler({"server": server_pids})
    t0, busy0, g0 = sampler.sample()
    children0 = _children_cpu()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"{os.path.basename(cmd[0])} did not finish within {timeout:.0f} s") from None
    t1, busy1, g1 = sampler.sample()
    # communicate() reaped it, so its rusage is now in this process's children's times.
    loadgen = _children_cpu() - children0
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[:3])} ... exited with {proc.returncode}: {err.decode(errors='replace')[-500:]}"
        )
    wall = t1 - t0
    server = (g1["server"] - g0["server"]) / TICK
    ours = (g1["bench"] - g0["bench"]) / TICK
    busy = (busy1 - busy0) / TICK
    cores = {
        "server": server / wall,
        "loadgen": loadgen / wall,
        "other": max(0.0, (busy - server - loadgen - ours) / wall),
    }
    return out.decode(errors="replace"), wall, loadgen, server, cores


def _children_cpu() -> float:
    r = os.times()
    return r.children_user + r.children_system


def run_wrk(
    wrk: str,
    script: Path,
    port: int,
    concurrency: int,
    duration: float,
    server_pids: list[int],
    system: str,
    config: str,
    server_cores: int,
    batch: int,
) -> LoadgenPoint:
    cmd = [
        wrk,
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://{_redis.LOOPBACK}:{port}/lookup",
    ]
    out, wall, loadgen, server, cores = measure(cmd, server_pids, duration + 60)
    m = re.search(
        r"SAEC requests=(\d+) duration_us=(\d+) errors=(\d+) status_errors=(\d+) p50_us=(\d+) p99_us=(\d+)", out
    )
    if m is None:
        raise RuntimeError(f"wrk printed no summary line: {out[-500:]}")
    requests, dur_us, errors, status_errors, p50, p99 = (int(x) for x in m.groups())
    return LoadgenPoint(
        system,
        config,
        concurrency,
        requests,
        dur_us / 1e6,
        errors + status_errors,
        p50 / 1e3,
        p99 / 1e3,
        server,
        loadgen,
        cores,
        server_cores,
        batch,
    )


def run_redis_benchmark(
    tool: str, port: int, n_keys: int, batch: int, concurrency: int, duration: float, redis_pid: int, config: str
) -> LoadgenPoint:
    """``MGET`` of ``batch`` random keys, enough requests for about ``duration`` seconds (calibrated)."""

    def once(requests: int) -> tuple[LoadgenPoint, float]:
        cmd = [
            tool,
            "-h",
            _redis.LOOPBACK,
            "-p",
            str(port),
            "-c",
            str(concurrency),
            "-n",
            str(requests),
            "-r",
            str(n_keys),
            "--csv",
            "MGET",
            *(["k:__rand_int__"] * batch),
        ]
        out, wall, loadgen, server, cores = measure(cmd, [redis_pid], duration * 5 + 60)
        rows = [r for r in csv.reader(io.StringIO(out)) if len(r) >= 8 and r[0] != "test"]
        if not rows:
            raise RuntimeError(f"redis-benchmark printed no result: {out[-300:]}")
        rps, _avg, _min, p50, _p95, p99 = (float(x) for x in rows[-1][-7:-1])
        seconds = requests / rps if rps else wall
        point = LoadgenPoint(
            "Redis MGET (redis-benchmark)",
            config,
            concurrency,
            requests,
            seconds,
            0,
            p50,
            p99,
            server,
            loadgen,
            cores,
            1,
            batch,
        )
        return point, rps

    _, rps = once(max(20, 4 * concurrency))
    point, _ = once(max(50, int(rps * duration)))
    return point


def warm_text_keys(tool: str, port: int, n_keys: int, batch: int) -> None:
    """A few MGETs so that Redis's first measured run does not pay for cold pages."""
    subprocess.run(
        [
            tool,
            "-h",
            _redis.LOOPBACK,
            "-p",
            str(port),
            "-c",
            "2",
            "-n",
            "20",
            "-r",
            str(n_keys),
            "-q",
            "MGET",
            *(["k:__rand_int__"] * batch),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )


def check_text_keys(server: _redis.RedisServer, table: Table, rows: npt.NDArray[np.int64]) -> None:
    """The text keys answer the same float32 rows as the table (raises AssertionError otherwise)."""
    with server.client() as r:
        values = r.mget([(TEXT_KEY % int(i)).encode() for i in rows])
    got = np.frombuffer(b"".join(values), dtype="<f4").reshape(len(rows), table.dim)
    if not np.array_equal(got.view(np.uint32), table.vectors[rows].view(np.uint32)):
        raise AssertionError("expected Redis's k:<row> keys to hold the table's float32 rows, got other bytes")
