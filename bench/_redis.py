"""A throw-away redis-server on loopback, for the peer benchmark.

:func:`find_redis_server` looks for the binary; :func:`ensure_redis_server` installs
Debian's ``redis-server`` with apt-get when it is missing and we run as root, and
otherwise says how to get one. :class:`RedisServer` starts it on 127.0.0.1 on a free
port with persistence off (``--save "" --appendonly no``) in a temporary folder, and
stops it (``SHUTDOWN NOSAVE``, then SIGTERM, then SIGKILL) however the run ends. With
``durable=True`` it runs as the update log of a fleet is run (``--appendonly yes
--appendfsync always``), and a folder given as ``directory`` outlives :meth:`RedisServer.kill`
(SIGKILL, as a crash) and a later :meth:`RedisServer.start`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

LOOPBACK = "127.0.0.1"
# Where Debian and most source builds put it, for a PATH that lacks /usr/sbin or /usr/local/bin.
_CANDIDATES = ("/usr/bin/redis-server", "/usr/local/bin/redis-server", "/usr/sbin/redis-server")


class RedisUnavailableError(RuntimeError):
    """No redis-server binary, and none could be installed."""


def find_redis_server(explicit: str | None = None) -> str | None:
    """The path of a redis-server binary, or None.

    Args:
        explicit: a path given by the user (``--redis-server``); it must exist.
    """
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("redis-server")
    if found:
        return found
    return next((c for c in _CANDIDATES if os.access(c, os.X_OK)), None)


def ensure_redis_server(explicit: str | None = None, *, install: bool = True, log=print) -> str:
    """A redis-server binary, installing Debian's package if needed and allowed.

    Raises:
        RedisUnavailableError: not found, and not root or no apt-get (or install refused).
    """
    from bench._apt import ensure_binary

    return ensure_binary(
        "redis-server", "redis-server", explicit=explicit, install=install, log=log, error=RedisUnavailableError
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def server_version(binary: str) -> str:
    """``7.0.15`` from ``redis-server --version``."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip() or "unknown"


def hiredis_active(client: redis.Redis) -> bool:
    """Whether ``client`` parses replies with hiredis (the C parser), not pure Python."""
    from redis._parsers.hiredis import _HiredisParser

    conn = client.connection_pool.get_connection()
    try:
        conn.connect()
        return isinstance(conn._parser, _HiredisParser)
    finally:
        client.connection_pool.release(conn)


class RedisServer:
    """A redis-server process on 127.0.0.1, persistence off, in a temporary folder.

    Use as a context manager; :meth:`stop` is idempotent and also runs on Ctrl-C
    through the ``with`` block.
    """

    def __init__(self, binary: str, *, port: int | None = None, startup_timeout: float = 15.0,
                 durable: bool = False, directory: str | None = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.durable = durable
        self.proc: subprocess.Popen[bytes] | None = None
        # A folder given by the caller is the caller's: kept when the server stops.
        self._own_dir = directory is None
        self._dir: str | None = directory

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def client(self, **kwargs) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=self.port, **kwargs)

    def start(self) -> None:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="saec-peers-redis-")
        Path(self._dir).mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else ["--appendonly", "no"]
        args = [
            self.binary,
            "--bind",
            LOOPBACK,
            "--port",
            str(self.port),
            "--save",
            "",
            *persistence,
            "--dir",
            self._dir,
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            str(Path(self._dir) / "redis.log"),
        ]
        # Its own session: a Ctrl-C at the terminal reaches this process, which then stops Redis in order.
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + self.startup_timeout
        probe = self.client(socket_timeout=1.0)
        try:
            while True:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                    raise RedisUnavailableError(f"redis-server exited with code {self.proc.returncode}: {err[-500:]}")
                try:
                    probe.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RedisUnavailableError(
                            f"redis-server did not answer PING on {LOOPBACK}:{self.port} "
                            f"within {self.startup_timeout} s"
                        ) from None
                    time.sleep(0.05)
        finally:
            probe.close()

    def used_memory(self) -> int:
        """``INFO memory`` used_memory, bytes."""
        with self.client() as c:
            return int(c.info("memory")["used_memory"])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                # No retries: the server closing the connection is the answer (redis-py's
                # default retries and backs off for seconds first).
                with self.client(socket_timeout=2.0, retry=Retry(NoBackoff(), 0)) as c:
                    c.shutdown(nosave=True)
            except (redis.RedisError, OSError):
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        if proc is not None and proc.stderr:
            proc.stderr.close()
        if self._dir and self._own_dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown; the folder (and its append-only file) stays for :meth:`start`."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait(timeout=10)
            if proc.stderr:
                proc.stderr.close()
