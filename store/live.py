"""The live snapshot of a store, swapped without failing a request.

A request takes ``live.engine`` once and uses that engine to the end, so it finishes
on the snapshot it started on even if a newer one is swapped in meanwhile; the old
snapshot's maps are released when its last request lets go of it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from saec.errors import SaecError
from saec.store.engine import DefaultVector, LookupEngine
from saec.store.layout import DELTAS, StoreLayout
from saec.store.overlay import Overlay
from saec.store.snapshot import open_snapshot

log = logging.getLogger("saec.live")


@dataclass(frozen=True)
class ReloadOutcome:
    """What one reload check did."""

    version: str
    changed: bool
    error: str | None = None


class LiveEngine:
    """Holds the engine of the store's CURRENT snapshot and reloads it on demand.

    Args:
        store: the store folder.
        default: vector of unseen ids ("zeros" or "mean").
        max_ids: ids allowed per lookup (0: unlimited).
        verify: check checksums of a snapshot before serving it.
        updates: lay the snapshot's pending updates (``STORE/deltas/<version>/``) over its
            lookups; deltas of other versions never apply.
    """

    def __init__(self, store: str | Path, *, default: DefaultVector = "zeros", max_ids: int = 0, verify: bool = True,
                 updates: bool = True):
        self.layout = StoreLayout(store)
        self.default = default
        self.max_ids = max_ids
        self.verify = verify
        self.updates = updates
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.reloads = 0
        # None until the store has a published snapshot; reload() picks up the first one.
        self.engine: LookupEngine | None = None
        first = self.layout.current_or_none()
        if first is not None:
            self.engine = self._open(first)

    def _open(self, version: str) -> LookupEngine:
        snapshot = open_snapshot(self.layout.snapshot_path(version))
        if self.verify:
            snapshot.verify()
        overlay = Overlay(snapshot, str(self.layout.root / DELTAS / version)) if self.updates else None
        return LookupEngine(snapshot, default=self.default, max_ids=self.max_ids, overlay=overlay)

    def reload(self) -> ReloadOutcome:
        """Swap in the snapshot CURRENT names, if it is new and opens cleanly.

        A snapshot that fails to open or verify is refused; the old one keeps serving
        and the error is kept in ``last_error``.
        """
        with self._lock:
            try:
                version = self.layout.current()
                if self.engine is not None and version == self.engine.version:
                    return ReloadOutcome(version=version, changed=False)
                engine = self._open(version)
            except SaecError as exc:
                self.last_error = str(exc)
                serving = self.engine.version if self.engine is not None else ""
                log.error("snapshot refused, still serving %s: %s", serving or "nothing", exc)
                return ReloadOutcome(version=serving, changed=False, error=str(exc))
            old = self.engine.version if self.engine is not None else "nothing"
            self.engine = engine
            self.last_error = None
            self.reloads += 1
            log.info("now serving snapshot %s (was %s)", engine.version, old)
            return ReloadOutcome(version=engine.version, changed=True)


class Reloader:
    """A daemon thread that calls ``live.reload()`` every ``interval`` seconds."""

    def __init__(self, live: LiveEngine, interval: float) -> None:
        self.live = live
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="saec-reload", daemon=True)

    def start(self) -> None:
        if self.interval > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.live.reload()
