"""The update log's contract (store.updatelog), on a real redis-server.

:class:`UpdateLogContract` is what any implementation must pass: a Kafka or NATS log
subclasses it with its own ``make_log`` fixture.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from bench._redis import RedisServer
from saec.store.updatelog import (
    UpdateLog,
    UpdateLogConfigError,
    UpdateLogUnavailableError,
    open_update_log,
)
from tests.fleet.conftest import _free_port, log_url

pytestmark = pytest.mark.redis


class UpdateLogContract:
    @pytest.fixture
    def ulog(self) -> Iterator[UpdateLog]:
        raise NotImplementedError

    def test_append_then_read_in_order_with_payloads(self, ulog: UpdateLog) -> None:
        acks = [ulog.append(b"batch-%d" % i) for i in range(10)]
        assert [a.ordinal for a in acks] == list(range(1, 11))
        keys = [ulog.order(a.position) for a in acks]
        assert keys == sorted(keys) and len(set(keys)) == 10
        times = [a.time_ms for a in acks]
        assert all(b > a for a, b in zip(times, times[1:], strict=False))  # strictly increasing
        assert abs(times[0] / 1000 - time.time()) < 60
        got = ulog.read_after(None, count=100)
        assert [e.payload for e in got] == [b"batch-%d" % i for i in range(10)]
        assert [e.position for e in got] == [a.position for a in acks]
        after = ulog.read_after(acks[6].position, count=100)
        assert [e.ordinal for e in after] == [8, 9, 10]
        assert [e.ordinal for e in ulog.read_after(acks[1].position, count=2)] == [3, 4]

    def test_position_at_time_splits_the_log_by_time(self, ulog: UpdateLog) -> None:
        acks = [ulog.append(b"x") for _ in range(6)]
        cut = acks[3].time_ms
        after = ulog.read_after(ulog.position_at_time(cut), count=100)
        assert [e.position for e in after] == [a.position for a in acks[4:]]
        assert all(e.time_ms > cut for e in after)

    def test_blocking_read_waits_then_returns_a_new_entry(self, ulog: UpdateLog) -> None:
        last = ulog.append(b"first")
        t0 = time.monotonic()
        assert ulog.read_after(last.position, block_ms=300) == []
        assert 0.25 <= time.monotonic() - t0 < 5
        later = threading.Timer(0.1, lambda: ulog.append(b"second"))
        later.start()
        got = ulog.read_after(last.position, block_ms=1000)
        later.join()
        assert [e.payload for e in got] == [b"second"]

    def test_lag_in_entries_and_seconds(self, ulog: UpdateLog) -> None:
        empty = ulog.lag(None)
        assert (empty.entries, empty.seconds, empty.tail, empty.tail_ordinal) == (0, 0.0, None, 0)
        acks = [ulog.append(b"x") for _ in range(5)]
        time.sleep(0.2)
        lag = ulog.lag(acks[1].position)
        assert lag.entries == 3 and lag.tail == acks[-1].position and lag.tail_ordinal == 5
        assert 0.2 <= lag.seconds < 30
        assert ulog.lag(None).entries == 5
        caught_up = ulog.lag(acks[-1].position)
        assert (caught_up.entries, caught_up.seconds) == (0, 0.0)

    def test_trim_removes_only_older_entries(self, ulog: UpdateLog) -> None:
        acks = [ulog.append(b"%d" % i) for i in range(8)]
        assert ulog.trim_before(acks[5].position) == 5
        assert [e.ordinal for e in ulog.read_after(None, count=100)] == [6, 7, 8]
        # A reader whose position was trimmed still gets what follows it, and learns how
        # many entries it will never read (3, 4 and 5).
        lag = ulog.lag(acks[1].position)
        assert (lag.entries, lag.gap) == (3, 3)
        assert ulog.lag(acks[4].position).gap == 0
        assert ulog.ordinal_of(acks[1].position) == 2
        assert ulog.ordinal_of(ulog.position_at_time(acks[1].time_ms)) is None
        assert [e.ordinal for e in ulog.read_after(acks[1].position)] == [6, 7, 8]
        assert ulog.trim_before(acks[5].position) == 0
        # Ordinals go on after a trim.
        assert ulog.append(b"next").ordinal == 9


class TestRedisUpdateLog(UpdateLogContract):
    @pytest.fixture
    def ulog(self, redis_server: RedisServer) -> Iterator[UpdateLog]:
        log = open_update_log(log_url(redis_server))
        try:
            yield log
        finally:
            log.close()

    def test_durability_is_checked_on_connect(self, ulog: UpdateLog) -> None:
        ulog.append(b"x")
        assert ulog.durability.startswith("appendonly yes, appendfsync always")

    def test_kill_9_and_restart_keeps_every_acknowledged_entry(self, redis_server: RedisServer) -> None:
        url = log_url(redis_server, "kill9")
        acked: list[tuple[str, bytes]] = []
        stop = threading.Event()

        def writer() -> None:
            w = open_update_log(url)
            i = 0
            while not stop.is_set():
                payload = b"entry-%06d" % i + b"." * (i % 997)
                try:
                    entry = w.append(payload)
                except UpdateLogUnavailableError:
                    return
                acked.append((entry.position, payload))
                i += 1
            w.close()

        t = threading.Thread(target=writer)
        t.start()
        while len(acked) < 200:
            time.sleep(0.01)
        redis_server.kill()  # SIGKILL mid-stream
        t.join(timeout=30)
        stop.set()
        redis_server.start()
        log = open_update_log(url)
        try:
            kept = {e.position: e.payload for e in log.read_after(None, count=1_000_000)}
            assert len(acked) >= 200
            missing = [p for p, payload in acked if kept.get(p) != payload]
            assert not missing, f"{len(missing)} acknowledged entries lost, first {missing[:3]}"
            # Nothing beyond what was sent either: at most the one in flight at the kill.
            assert len(kept) - len(acked) in (0, 1)
            # The log goes on after the restart: new entries come after every old one.
            nxt = log.append(b"after")
            assert all(log.order(nxt.position) > log.order(p) for p in kept)
            assert nxt.ordinal == len(kept) + 1
        finally:
            log.close()


def test_an_unreachable_log_is_an_error_that_names_it() -> None:
    log = open_update_log(f"redis://:secret@127.0.0.1:{_free_port()}/0?stream=s")
    with pytest.raises(UpdateLogUnavailableError, match="XADD failed") as err:
        log.append(b"x")
    assert "secret" not in str(err.value) and "secret" not in log.name
    assert isinstance(err.value, ConnectionError)
    with pytest.raises(UpdateLogUnavailableError):
        log.lag(None)


@pytest.mark.parametrize("url", ["kafka://broker:9092/topic", "http://127.0.0.1:6379", "127.0.0.1:6379"])
def test_unknown_log_urls_are_refused(url: str) -> None:
    with pytest.raises(UpdateLogConfigError, match="expected an update log URL"):
        open_update_log(url)


def test_stream_given_twice_is_refused() -> None:
    with pytest.raises(UpdateLogConfigError, match="stream"):
        open_update_log("redis://127.0.0.1:1/0?stream=a&stream=b")
