"""The live snapshot of a store, swapped without failing a request.

A request takes ``live.engine`` once and uses that engine to the end, so it finishes
on the snapshot it started on even if a newer one is swapped in meanwhile; the old
snapshot's maps are released when its last request lets go of it.

A reload never takes the server down. Whatever goes wrong while reading CURRENT or
opening, verifying and warming a snapshot (a damaged file, a FIFO, a bug) is caught,
logged with its traceback, counted and kept in ``last_error`` with its time, and the
old snapshot keeps serving. If CURRENT keeps naming something this server cannot serve
for more than ``UNREADY_AFTER`` reload intervals, :meth:`LiveEngine.unready_reason`
says so and ``/readyz`` answers 503 with it, while lookups still go to the old
snapshot: an orchestrator then sees a replica that does not follow its store (and
will not route new traffic to it or will replace it), where answering 200 would hide
that every replica is serving stale vectors.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from saec.store.engine import DefaultVector, LookupEngine
from saec.store.errors import SnapshotNotFoundError
from saec.store.layout import DELTAS, StoreLayout
from saec.store.overlay import Overlay
from saec.store.snapshot import Snapshot, open_snapshot
from saec.store.warmup import warm_engine

log = logging.getLogger("saec.live")

# Reload intervals CURRENT may name an unservable version before /readyz turns 503.
UNREADY_AFTER = 3
# A refused version is retried after interval * 2**failures seconds, at most this long
# (verifying re-reads every array); a new CURRENT is tried at once.
MAX_RETRY_SECONDS = 60.0


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
        interval: seconds between reload checks (0: none); readiness is judged in these.
        updates: lay the snapshot's pending updates (``STORE/deltas/<version>/``) over its
            lookups; deltas of other versions never apply.
    """

    def __init__(
        self,
        store: str | Path,
        *,
        default: DefaultVector = "zeros",
        max_ids: int = 0,
        verify: bool = True,
        interval: float = 0.0,
        updates: bool = True,
    ) -> None:
        self.layout = StoreLayout(store)
        self.default = default
        self.max_ids = max_ids
        self.verify = verify
        self.interval = interval
        self.updates = updates
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.last_error_at: str | None = None
        self.errors = 0
        self.reloads = 0
        self.open_seconds: float | None = None
        self.warmup_seconds: float | None = None
        # What CURRENT named when reloads started failing, and since when (monotonic).
        self._failing: str | None = None
        self._failing_since: float | None = None
        self._failures = 0
        self._retry_at = 0.0
        # None until the store has a servable snapshot; reload() picks up the first one.
        self.engine: LookupEngine | None = None
        # Called with a newly opened engine before it is served (store.replicate.Fleet:
        # the shared update log is replayed onto it first); never for the first snapshot.
        self.before_swap: Callable[[LookupEngine], object] | None = None
        self.reload()

    def _open_snapshot(self, version: str) -> Snapshot:
        """The snapshot of ``version``, memory-mapped (a replica opens a share of it)."""
        return open_snapshot(self.layout.snapshot_dir(version))

    def _open(self, version: str) -> tuple[LookupEngine, float, float]:
        start = time.perf_counter()
        snapshot = self._open_snapshot(version)
        if self.verify:
            snapshot.verify()
        overlay = Overlay(snapshot, str(self.layout.root / DELTAS / version)) if self.updates else None
        engine = LookupEngine(snapshot, default=self.default, max_ids=self.max_ids, overlay=overlay)
        opened = time.perf_counter()
        warm = warm_engine(engine)
        return engine, opened - start, warm

    def reload(self, *, force: bool = False) -> ReloadOutcome:
        """Swap in the snapshot CURRENT names, if it is new and opens cleanly.

        A snapshot that fails to open, verify or warm up is refused; the old one keeps
        serving and the error is kept in ``last_error``. Never raises an ``Exception``.

        Args:
            force: retry a refused version now (CURRENT was just replaced), not after
                the back-off.
        """
        with self._lock:
            serving = self.engine.version if self.engine is not None else ""
            named: str | None = None
            try:
                named = self.layout.read_current()
                if named is None and self.engine is not None:
                    raise SnapshotNotFoundError(f"{self.layout.root / 'CURRENT'} is gone; expected it to name a version")
                if named is None or named == serving:
                    self._failing = self._failing_since = None
                    self._failures = 0
                    return ReloadOutcome(version=serving, changed=False)
                if named == self._failing and not force and time.monotonic() < self._retry_at:
                    return ReloadOutcome(version=serving, changed=False, error=self.last_error)
                engine, opened, warm = self._open(named)
                if self.before_swap is not None and self.engine is not None:
                    self.before_swap(engine)
            except Exception as exc:
                # Anything at all: the reload thread must outlive every file it meets.
                self._refuse(named, exc)
                return ReloadOutcome(version=serving, changed=False, error=self.last_error)
            self.engine = engine
            self.open_seconds, self.warmup_seconds = opened, warm
            self.last_error = None
            self._failing = self._failing_since = None
            self._failures = 0
            if serving:
                # Swaps since start: the first snapshot served is not a reload.
                self.reloads += 1
            log.info(
                "now serving snapshot %s (was %s); opened in %.3f s, warmed up in %.3f s",
                engine.version, serving or "nothing", opened, warm,
            )
            return ReloadOutcome(version=engine.version, changed=True)

    def _refuse(self, named: str | None, exc: Exception) -> None:
        what = named if named is not None else "CURRENT"
        now = time.monotonic()
        # Unservable since the first failure, whichever versions CURRENT named meanwhile;
        # the back-off starts over for each new version.
        if self._failing_since is None:
            self._failing_since = now
        if self._failing != what:
            self._failing, self._failures = what, 0
        self._failures += 1
        self._retry_at = now + min(max(self.interval, 0.1) * 2 ** (self._failures - 1), MAX_RETRY_SECONDS)
        self.errors += 1
        self.last_error = f"{what}: {type(exc).__name__}: {exc}"
        self.last_error_at = datetime.now(UTC).isoformat()
        serving = self.engine.version if self.engine is not None else "nothing"
        log.error("snapshot %s refused, still serving %s", what, serving, exc_info=exc)

    def unready_reason(self) -> str | None:
        """Why this server should not be called ready although it serves, or None.

        Set when CURRENT has named a version that cannot be served for more than
        ``UNREADY_AFTER`` reload intervals.
        """
        since = self._failing_since
        if since is None or self.interval <= 0:
            return None
        waited = time.monotonic() - since
        if waited <= UNREADY_AFTER * self.interval:
            return None
        serving = self.engine.version if self.engine is not None else "nothing"
        return (
            f"CURRENT has named {self._failing}, which this server cannot serve, for {waited:.1f} s "
            f"(more than {UNREADY_AFTER} reload intervals); still serving {serving}. Last error: {self.last_error}"
        )

    def status(self) -> dict[str, Any]:
        """Reload facts for ``GET /snapshot``."""
        return {
            "last_reload_error": self.last_error,
            "last_reload_error_at": self.last_error_at,
            "reload_errors": self.errors,
            "open_seconds": self.open_seconds,
            "warmup_seconds": self.warmup_seconds,
        }


class Reloader:
    """Keeps ``live`` on the snapshot CURRENT names.

    A watcher thread reacts to CURRENT being replaced within milliseconds (file-system
    events through ``watchfiles``), so the workers of one server switch together; a
    polling thread checks every ``interval`` seconds as the fallback (file systems
    without events, a missed event, a refused version's retry).
    """

    def __init__(self, live: LiveEngine, interval: float, *, watch: bool = True) -> None:
        self.live = live
        self.interval = interval
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._poll, name="saec-reload", daemon=True)]
        if watch:
            from saec.store.watch import watch_current

            self._threads.append(
                threading.Thread(
                    target=watch_current,
                    args=(live.layout.root, self._changed, self._stop),
                    name="saec-watch",
                    daemon=True,
                )
            )

    def start(self) -> None:
        if self.interval > 0:
            for t in self._threads:
                t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=5)

    def _changed(self) -> None:
        self.live.reload(force=True)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.live.reload()
            except Exception:  # reload() catches everything; this guards the thread regardless
                log.exception("reload check failed")
