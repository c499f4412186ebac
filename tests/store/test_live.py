"""The live engine's reload machinery in-process: file events, back-off, readiness."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from saec.store.hashing import hash_ids
from saec.store.layout import StoreLayout
from saec.store.live import LiveEngine, Reloader
from saec.store.writer import SnapshotWriter


def _publish(root: Path, make_current: bool = True) -> str:
    with SnapshotWriter(root) as w:
        w.add_dense_field("d", hash_ids(np.arange(4), "d"), np.ones((4, 2), np.float32))
        return w.publish(make_current=make_current)


def test_a_new_current_is_picked_up_by_its_file_event_not_the_poll(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    live = LiveEngine(root, interval=30)  # the poll would wait 30 s
    reloader = Reloader(live, 30)
    reloader.start()
    try:
        time.sleep(0.3)  # the watch is set up
        version = _publish(root)
        published = time.monotonic()
        while time.monotonic() - published < 10 and live.engine is not None and live.engine.version != version:
            time.sleep(0.005)
        took = time.monotonic() - published
    finally:
        reloader.stop()
    assert live.engine is not None and live.engine.version == version
    assert took < 10
    assert live.warmup_seconds is not None and live.open_seconds is not None


def test_a_refused_version_is_retried_with_back_off(
    small_store: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, data = small_store
    live = LiveEngine(root, interval=0.2)
    bad = _publish(root, make_current=False)
    (root / "snapshots" / bad / "d" / "mean" / "c" / "0").write_bytes(b"\x00")
    StoreLayout(root).set_current(bad)
    opened = []
    real_open = live._open
    monkeypatch.setattr(live, "_open", lambda v: (opened.append(v), real_open(v))[1])
    live.reload()
    live.reload()  # within the back-off: not opened again
    assert opened == [bad] and live.errors == 1
    live.reload(force=True)  # CURRENT was replaced (a file event): retried at once
    assert opened == [bad, bad] and live.errors == 2
    assert live.engine is not None and live.engine.version == data["version"]
