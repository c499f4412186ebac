"""The update log on Redis Streams (``redis-server`` >= 7.0, through redis-py).

One stream per store (``?stream=NAME`` in the URL, default ``saec:updates``) and one
hash beside it (``NAME:meta``: the last ordinal and the last time). An entry is
``{"n": ordinal, "b": payload}``; its stream ID ``<ms>-<ordinal>`` is its position and
``ms`` its time: the server's clock, or one more than the previous entry's when that is
not later. (Stream IDs order by ``ms`` first, so the ordinal may sit in the second part:
any position then tells how many entries came before it, and a reader whose position was
trimmed away still counts what it missed.)
Times are therefore unique, so a watermark in milliseconds (a snapshot's
``updates_covered_until_ms``) names exactly one position in the log, even for entries
appended within the same millisecond. (Past a sustained 1,000 entries a second, times
run ahead of the clock; they stay ordered, and a batch is many ids.)

Durability: with ``appendonly yes`` and ``appendfsync always`` Redis writes every command
to its append-only file and fsyncs it before it sends any reply (``beforeSleep`` flushes
the AOF before the clients' replies are written), so an ``XADD`` that answered survives
kill -9 of the server and a power loss. With ``appendfsync everysec`` (Redis' default
once AOF is on) up to a second of acknowledged entries can be lost with the machine, and
without AOF everything since the last RDB save: :attr:`RedisUpdateLog.durability` says
which, and a server that does not fsync every write is logged as a warning on connect.

The append is one Lua script (``TIME``, the ordinal and time in the hash, ``XADD``),
atomic on the server and in the AOF (one ``MULTI``/``EXEC`` block): an entry and its
ordinal never part.
It is not retried by the client: after a timeout the entry may or may not be in the log,
and the caller (HTTP 503) lets its client resend; a batch appended twice is applied twice,
in order, which leaves the same vectors served (last write wins).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from saec.store.updatelog import Lag, LogEntry, UpdateLog, UpdateLogConfigError, UpdateLogUnavailableError

log = logging.getLogger("saec.updatelog")

DEFAULT_STREAM = "saec:updates"
# Seconds a command may take before the server counts as unreachable; a blocking read
# waits at most MAX_BLOCK_MS on top.
SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
MAX_BLOCK_MS = 1000
_LAST_SEQ = (1 << 64) - 1

_APPEND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms = math.max(now, tonumber(redis.call('HGET', KEYS[2], 'ms') or '0') + 1)
local n = redis.call('HINCRBY', KEYS[2], 'n', 1)
redis.call('HSET', KEYS[2], 'ms', string.format('%.0f', ms))
local id = redis.call('XADD', KEYS[1], string.format('%.0f-%d', ms, n), 'n', n, 'b', ARGV[1])
return {id, n}
"""

# The tail's ordinal and position, and the first entry after ARGV[1] ('' : from the start),
# in one round trip and without sending any payload.
_LAG = """
local tail_n = tonumber(redis.call('HGET', KEYS[2], 'n') or '0')
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local tail_id = ''
if #last > 0 then tail_id = last[1][1] end
local start = '-'
if ARGV[1] ~= '' then start = '(' .. ARGV[1] end
local nxt = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 1)
local next_id = ''
local next_n = 0
if #nxt > 0 then next_id = nxt[1][1]; next_n = tonumber(nxt[1][2][2]) end
return {tail_n, tail_id, next_id, next_n}
"""

T = TypeVar("T")


def _split(url: str) -> tuple[str, str, str]:
    """(URL for redis-py without ``stream``, stream name, URL without secrets)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    streams = [v for k, v in query if k == "stream"]
    if len(streams) > 1 or (streams and not streams[0]):
        raise UpdateLogConfigError(f"expected at most one non-empty ?stream= in the update log URL, got {streams}")
    stream = streams[0] if streams else DEFAULT_STREAM
    rest = urlencode([(k, v) for k, v in query if k != "stream"])
    host = parts.hostname or ""
    public = f"{parts.scheme}://{host}{':' + str(parts.port) if parts.port else ''}{parts.path} stream={stream}"
    return urlunsplit(parts._replace(query=rest)), stream, public


class RedisUpdateLog(UpdateLog):
    """The update log in one Redis stream (see the module docstring).

    Args:
        url: ``redis://[:password@]host:port/db?stream=NAME``.
    """

    def __init__(self, url: str) -> None:
        plain, self.stream, self.name = _split(url)
        self.counter = f"{self.stream}:meta"
        try:
            self.client = redis.Redis.from_url(
                plain,
                socket_timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=CONNECT_TIMEOUT,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
        except ValueError as exc:
            raise UpdateLogConfigError(f"update log {self.name}: {exc}") from None
        self._append = self.client.register_script(_APPEND)
        self._lag = self.client.register_script(_LAG)
        self.durability = "not checked yet"
        self.durable: bool | None = None
        self._checked = threading.Event()

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            out = fn()
        except redis.RedisError as exc:
            self._checked.clear()  # a restarted server may come back with other settings
            raise UpdateLogUnavailableError(f"update log {self.name}: {what} failed: {type(exc).__name__}: {exc}") from None
        if not self._checked.is_set():
            self._checked.set()
            self._check_durability()
        return out

    def _check_durability(self) -> None:
        try:
            conf: dict[Any, Any] = {**self.client.config_get("appendonly"), **self.client.config_get("appendfsync")}
        except redis.RedisError as exc:  # CONFIG may be renamed or refused on managed servers
            self.durable = None
            self.durability = f"unknown (CONFIG GET refused: {exc})"
            log.warning("update log %s: cannot read its durability settings: %s", self.name, exc)
            return
        values = {_text(k): _text(v) for k, v in conf.items()}
        aof, fsync = values.get("appendonly", "?"), values.get("appendfsync", "?")
        self.durable = aof == "yes" and fsync == "always"
        if self.durable:
            self.durability = "appendonly yes, appendfsync always: every entry fsynced before it is acknowledged"
        else:
            self.durability = (
                f"appendonly {aof}, appendfsync {fsync}: acknowledged entries can be lost if the log server dies; "
                "run redis-server with --appendonly yes --appendfsync always"
            )
            log.warning("update log %s: %s", self.name, self.durability)

    def append(self, payload: bytes) -> LogEntry:
        entry_id, n = self._call("XADD", lambda: self._append(keys=[self.stream, self.counter], args=[payload]))
        position = _text(entry_id)
        return LogEntry(position=position, time_ms=self.time_of(position), ordinal=int(n))

    def read_after(self, position: str | None, *, count: int = 64, block_ms: int = 0) -> list[LogEntry]:
        block = min(block_ms, MAX_BLOCK_MS) or None
        start = position or "0-0"
        reply: Any = self._call("XREAD", lambda: self.client.xread({self.stream: start}, count=count, block=block))
        out = []
        for _stream, entries in reply or []:
            for entry_id, values in entries:
                pos = _text(entry_id)
                out.append(LogEntry(position=pos, time_ms=self.time_of(pos), ordinal=int(values[b"n"]),
                                    payload=bytes(values[b"b"])))
        return out

    def position_at_time(self, time_ms: int) -> str:
        return f"{int(time_ms)}-{_LAST_SEQ}"

    def order(self, position: str) -> tuple[int, ...]:
        ms, _, seq = position.partition("-")
        return int(ms), int(seq or 0)

    def time_of(self, position: str) -> int:
        return int(position.partition("-")[0])

    def ordinal_of(self, position: str) -> int | None:
        seq = int(position.partition("-")[2] or 0)
        return None if seq in (0, _LAST_SEQ) else seq

    def lag(self, position: str | None) -> Lag:
        reply = self._call("lag query", lambda: self._lag(keys=[self.stream, self.counter], args=[position or ""]))
        tail_n, tail_id, next_id, next_n = int(reply[0]), _text(reply[1]), _text(reply[2]), int(reply[3])
        tail = tail_id or None
        if not next_id:
            return Lag(entries=0, seconds=0.0, tail=tail, tail_ordinal=tail_n)
        seconds = max(0.0, time.time() - self.time_of(next_id) / 1000.0)
        known = self.ordinal_of(position) if position else None
        gap = max(0, next_n - known - 1) if known is not None else 0
        return Lag(entries=tail_n - next_n + 1, seconds=seconds, tail=tail, tail_ordinal=tail_n, gap=gap)

    def trim_before(self, position: str) -> int:
        return int(self._call("XTRIM", lambda: self.client.xtrim(self.stream, minid=position, approximate=False)))

    def close(self) -> None:
        self.client.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
