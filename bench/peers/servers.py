"""``saec serve`` as a subprocess on 127.0.0.1, in each server configuration."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import _redis
from bench.peers.common import MALLOC_ENV, ROOT
from bench.peers.cpu import descendants


@dataclass(frozen=True)
class ServerConfig:
    workers: int
    malloc: bool

    @property
    def label(self) -> str:
        return f"{self.workers} worker{'s' if self.workers > 1 else ''}, " + (
            "malloc env" if self.malloc else "default malloc"
        )

    @property
    def short(self) -> str:
        return f"{self.workers}w{'+m' if self.malloc else ''}"


class SaecServer:
    """``saec serve`` as a subprocess in its own session on 127.0.0.1 (stopped on exit)."""

    def __init__(self, store: Path, config: ServerConfig, *, startup_timeout: float = 120.0) -> None:
        self.store = store
        self.config = config
        self.port = _redis.free_port()
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()

    @property
    def url(self) -> str:
        return f"http://{_redis.LOOPBACK}:{self.port}"

    def __enter__(self) -> SaecServer:
        import httpx

        env = {k: v for k, v in os.environ.items() if not k.startswith("SAEC_") and k not in MALLOC_ENV}
        if self.config.malloc:
            env.update(MALLOC_ENV)
        cmd = [
            sys.executable,
            "-m",
            "saec.cli",
            "serve",
            "--store",
            str(self.store),
            "--host",
            _redis.LOOPBACK,
            "--port",
            str(self.port),
            "--workers",
            str(self.config.workers),
            "--log-level",
            "warning",
        ]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"saec serve exited with code {self.proc.returncode}: {self.output()}")
                try:
                    if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"saec serve was not ready within {self.startup_timeout} s: {self.output()}")
                time.sleep(0.1)
            # Every worker answers before the clock starts (with 2 workers, the second may still be importing).
            while len(self.worker_pids()) < self.config.workers and time.monotonic() < deadline:
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-1500:]

    def pids(self) -> list[int]:
        return descendants(self.proc.pid) if self.proc else []

    def worker_pids(self) -> list[int]:
        """The processes that answer requests (the uvicorn worker children, or the one process)."""
        if self.proc is None:
            return []
        if self.config.workers == 1:
            return [self.proc.pid]
        # uvicorn's supervisor spawns workers with multiprocessing; skip its resource tracker.
        out = []
        for pid in self.pids():
            if pid == self.proc.pid:
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"resource_tracker" not in cmdline:
                out.append(pid)
        return out

    def memory(self) -> dict[str, Any]:
        import httpx

        return httpx.get(self.url + "/memory", timeout=30.0).json()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                # Our own session: its group is uvicorn and the workers it spawned.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # a worker left behind by a supervisor that died
