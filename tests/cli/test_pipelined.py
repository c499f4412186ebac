"""saec.pipelined: the next item prepared while this one is handled, in order, errors where
they happened, at most two items held."""

from __future__ import annotations

import threading
import time

import pytest

from saec.pipelined import pipelined


def test_items_come_in_order_with_what_was_prepared_for_them() -> None:
    # Earlier items take longer, so a pool that answered as work finished would reorder.
    items = [5, 4, 3, 2, 1, 0]

    def prepare(x: int) -> int:
        time.sleep(x / 1000)
        return x * x

    assert list(pipelined(items, prepare)) == [(x, x * x) for x in items]
    assert list(pipelined([], prepare)) == []


def test_the_next_item_is_prepared_while_this_one_is_handled() -> None:
    started: list[int] = []
    second_started = threading.Event()

    def prepare(x: int) -> int:
        started.append(x)
        if x == 1:
            second_started.set()
        return x

    for x, _ in pipelined([0, 1, 2], prepare):
        if x == 0:
            # Handling item 0 waits for item 1's preparation, which must run meanwhile.
            assert second_started.wait(5), "item 1 was not prepared while item 0 was handled"
            assert started == [0, 1]


def test_no_more_than_one_item_ahead_is_prepared() -> None:
    started: list[int] = []
    handled: list[int] = []

    def prepare(x: int) -> int:
        started.append(x)
        # Never more than one item past the one being handled.
        assert x <= (handled[-1] if handled else -1) + 2
        return x

    for x, _ in pipelined(list(range(20)), prepare):
        time.sleep(0.001)
        handled.append(x)
    assert started == list(range(20))


def test_an_error_in_prepare_is_raised_at_its_item_after_the_items_before_it() -> None:
    def prepare(x: int) -> int:
        if x == 2:
            raise ValueError("item 2 is bad")
        return x

    seen = []
    with pytest.raises(ValueError, match="item 2 is bad"):
        for x, _ in pipelined([0, 1, 2, 3], prepare):
            seen.append(x)
    assert seen == [0, 1]


def test_stopping_early_starts_nothing_more() -> None:
    started: list[int] = []

    def prepare(x: int) -> int:
        started.append(x)
        return x

    with pytest.raises(RuntimeError):
        for x, _ in pipelined(list(range(10)), prepare):
            if x == 3:
                raise RuntimeError("the writer failed")
    # Item 4 may have been under way when item 3 failed; nothing after it.
    assert started in ([0, 1, 2, 3], [0, 1, 2, 3, 4])


def test_with_two_workers_reads_run_one_at_a_time_in_order_and_prepares_overlap() -> None:
    reads: list[int] = []
    reading = threading.Lock()
    both_preparing = threading.Barrier(2, timeout=5)
    overlapped: list[int] = []

    def read(x: int) -> int:
        # A second read while one runs would find the lock taken.
        assert reading.acquire(blocking=False), f"read of {x} ran beside another read"
        try:
            # Later items read faster: a pool that let reads race would reorder them.
            time.sleep((10 - x) / 2000)
            reads.append(x)
        finally:
            reading.release()
        return x

    def prepare(x: int) -> int:
        if x in (0, 1):
            # Items 0 and 1 are prepared at the same time, or the barrier times out.
            both_preparing.wait()
            overlapped.append(x)
        return x * 10

    assert list(pipelined(list(range(10)), prepare, workers=2, read=read)) == [(x, 10 * x) for x in range(10)]
    assert reads == list(range(10))
    assert sorted(overlapped) == [0, 1]


def test_no_more_than_workers_items_ahead_are_prepared() -> None:
    handled: list[int] = []

    def prepare(x: int) -> int:
        # The item being handled is handled[-1] + 1; three more may be under way.
        assert x <= (handled[-1] if handled else -1) + 4, f"item {x} started with {handled[-1:]} handled"
        return x

    for x, _ in pipelined(list(range(30)), prepare, workers=3):
        time.sleep(0.001)
        handled.append(x)
    assert handled == list(range(30))


def test_a_failed_read_gives_the_next_item_its_turn() -> None:
    def read(x: int) -> int:
        if x == 1:
            raise OSError("item 1 unreadable")
        return x

    seen = []
    with pytest.raises(OSError, match="item 1 unreadable"):
        for x, _ in pipelined([0, 1, 2, 3], lambda x: x, workers=2, read=read):
            seen.append(x)
    assert seen == [0]
