"""The shared log of updates a fleet of replicas consumes: the interface.

A fleet of ``saec serve`` replicas (separate machines, separate store folders) shares one
durable log per store. Whoever takes an update (``POST /admin/updates`` on any replica,
``saec update --update-log``) checks the batch against its live snapshot and appends it
to the log; every replica's consumer (:mod:`store.replicate`) reads the log from its last
applied position and appends each entry to its local delta log, where its workers serve
it as any update (:mod:`store.overlay`).

Contract of an implementation (``store.redis_log`` is the one shipped; a Kafka or NATS
one is one more module behind :func:`open_update_log`):

- :meth:`UpdateLog.append` returns only once the log server holds the entry durably (by
  the server's own durability setting, which :attr:`UpdateLog.durability` describes);
  its return value is the acknowledgement. It is never retried inside: an error leaves the
  entry either absent or present once, and the caller answers "not acknowledged".
- Entries are totally ordered by position. A position is an opaque string; its order is
  :meth:`UpdateLog.order` and every entry also carries its time (Unix ms, strictly
  increasing along the log, so that a snapshot's watermark in milliseconds names exactly
  one position) and its ordinal (1, 2, 3, ... over the log's whole life, trimmed entries
  included), so that lag is counted in entries and in seconds.
- :meth:`UpdateLog.read_after` returns entries strictly after a position, oldest first.
- :meth:`UpdateLog.trim_before` removes entries older than a position and nothing else.

Errors reaching the log server are :class:`UpdateLogUnavailableError` (503 over HTTP).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from urllib.parse import urlsplit

from saec.store.errors import StoreError


class UpdateLogError(StoreError):
    """Base of the update log's errors."""


class UpdateLogUnavailableError(UpdateLogError, ConnectionError):
    """The log server cannot be reached or refused a command: nothing was acknowledged (503)."""


class UpdateLogConfigError(UpdateLogError, ValueError):
    """An update log URL that names no supported log server."""


@dataclass(frozen=True)
class LogEntry:
    """One batch of updates in the log.

    Attributes:
        position: where it sits in the log (opaque; ordered by :meth:`UpdateLog.order`).
        time_ms: when the log server appended it, Unix milliseconds.
        ordinal: its number in the log, 1 for the first entry ever appended.
        payload: the batch as :func:`store.deltas.encode_payload` wrote it (vectors as
            received, no masks); empty in the answer of :meth:`UpdateLog.append`.
    """

    position: str
    time_ms: int
    ordinal: int
    payload: bytes = b""


@dataclass(frozen=True)
class Lag:
    """How far a position is behind the end of the log.

    Attributes:
        entries: entries after the position (0: caught up).
        seconds: age of the oldest entry after it, by this machine's clock (0: caught up).
        tail: the position of the log's last entry (None: the log is empty).
        tail_ordinal: its ordinal (0: empty).
        gap: entries right after the position that were trimmed before they were read
            (they come back only with a snapshot that covers them).
    """

    entries: int
    seconds: float
    tail: str | None
    tail_ordinal: int
    gap: int = 0


class UpdateLog(abc.ABC):
    """A durable, ordered log of update batches (see the module docstring)."""

    #: the log named without secrets, for logs and /readyz (``redis://host:port/0 stream``).
    name: str
    #: what "durable" means on this server right now, for operators.
    durability: str

    @abc.abstractmethod
    def append(self, payload: bytes) -> LogEntry:
        """Append one batch; return its position, time and ordinal once it is durable."""

    @abc.abstractmethod
    def read_after(self, position: str | None, *, count: int = 64, block_ms: int = 0) -> list[LogEntry]:
        """Up to ``count`` entries after ``position`` (None: from the oldest kept), oldest
        first; waits up to ``block_ms`` for one when there is none yet."""

    @abc.abstractmethod
    def position_at_time(self, time_ms: int) -> str:
        """A position whose successors are exactly the entries appended after ``time_ms``."""

    @abc.abstractmethod
    def order(self, position: str) -> tuple[int, ...]:
        """A key that sorts positions in log order."""

    @abc.abstractmethod
    def time_of(self, position: str) -> int:
        """The time (Unix ms) of the entry at ``position``."""

    @abc.abstractmethod
    def ordinal_of(self, position: str) -> int | None:
        """The ordinal of the entry at ``position``; None for a position no entry had
        (one from :meth:`position_at_time`)."""

    @abc.abstractmethod
    def lag(self, position: str | None) -> Lag:
        """How far ``position`` (None: nothing read yet) is behind the log's end."""

    @abc.abstractmethod
    def trim_before(self, position: str) -> int:
        """Remove every entry before ``position``; returns how many were removed."""

    def close(self) -> None:  # noqa: B027 - optional for implementations without resources
        """Let go of connections."""


SCHEMES = ("redis", "rediss", "unix")


def open_update_log(url: str) -> UpdateLog:
    """The log at ``url``: ``redis://[:password@]host:port/db?stream=NAME`` (``rediss://``
    for TLS, ``unix:///path/redis.sock?stream=NAME``), Redis Streams (``store.redis_log``).

    Raises:
        UpdateLogConfigError: another scheme.
    """
    scheme = urlsplit(url).scheme
    if scheme in SCHEMES:
        try:
            from saec.store.redis_log import RedisUpdateLog
        except ModuleNotFoundError as exc:
            raise UpdateLogConfigError(
                f"an update log at {scheme}:// needs redis-py ({exc}): pip install 'saec[fleet]'"
            ) from None

        return RedisUpdateLog(url)
    raise UpdateLogConfigError(
        f"expected an update log URL starting with {', '.join(s + '://' for s in SCHEMES)} "
        f"(redis://127.0.0.1:6379/0?stream=saec:updates), got {url.split('@')[-1]!r}"
    )
