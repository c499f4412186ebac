"""Replication: every replica applies the store's shared update log to its own delta log.

A replica with an update log (``saec serve --update-log redis://...``, :mod:`store.updatelog`)
never appends HTTP updates to its local delta log itself. It checks a batch
(``Updater.prepare``), appends it to the log, and answers once the log has it durably;
then the consumer of every replica, this one included, applies it.

The consumer (:class:`Replicator`) and its contract, stated as ``store.deltas`` states its own:

- **One consumer per store folder.** It runs in the server process that holds the flock
  ``STORE/.update-log.lock`` (any worker of a replica; another takes over within a second
  when that one dies); a consumer is never run twice on one folder.
- **One frame per log entry, exactly once per base.** Each entry becomes one frame of
  ``deltas/<base>/`` carrying the entry's position as its ``src`` and the entry's time as
  its time, fsynced (``DeltaWriter``). Under the base's append lock the consumer first
  reads every frame appended since it last looked (its own, or those a publish carried
  forward) and skips each entry at or before the newest ``src``: kill -9 at any point, and
  the restarted consumer neither applies an entry twice nor skips one.
- **Where a base starts.** After the newest ``src`` in its delta log; in a base without
  one, after the snapshot's watermark ``updates_covered_until_ms`` (entries up to it are in
  its checkpoint); a snapshot without a watermark covers nothing and gets every entry the
  log keeps. So every replica applies the same entries on the same base.
- **The same masks everywhere.** Vectors are assigned to their nearest centroid by a
  search that depends only on the snapshot (``IndexCache(background=False)``: the exact
  search, or an HNSW index built on one thread with a fixed seed; never "exact until the
  background build is done"), so replicas of one snapshot write the same frames.
- **What is dropped, on purpose.** A field the replica does not serve (``--fields``) is
  left out of its frames. A field the base lacks, with another dimension, or of a kind
  that takes no updates, and an entry that does not decode, are dropped: counted per
  field (:attr:`Replicator.dropped`) and logged as errors. The frame is still written
  (possibly with no field) so that the position moves on.
- **A log that cannot be reached** stops nothing: the replica serves what it has, retries
  with a back-off up to ``MAX_BACKOFF`` seconds, and reports the lag (:class:`Fleet`).
- **A gap** (entries trimmed from the log before this replica read them) is counted in
  :attr:`Replicator.gaps` and logged as an error: those updates come back only with a
  snapshot that covers them (see ``docs/scaling.md``, retention).

:class:`Fleet` is what each server process holds: it appends batches, waits (bounded) for
its own replica to apply them (read-your-writes), runs the consumer when it holds the
lock, keeps a newly published snapshot from being served before the log's entries are
replayed onto it, and answers lag and readiness.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from saec.store.assign_index import IndexCache, Method
from saec.store.carry import WATERMARK
from saec.store.deltas import DeltaReader, DeltaWriter, FieldDelta, decode_payload, deltas_dir, encode_payload
from saec.store.engine import LookupEngine
from saec.store.errors import CorruptDeltaError, SupersededError
from saec.store.layout import StoreLayout
from saec.store.lock import FileLock
from saec.store.snapshot import Field, Snapshot, open_snapshot
from saec.store.updatelog import Lag, LogEntry, UpdateLog, UpdateLogUnavailableError
from saec.store.updates import FieldReport, PreparedUpdate, Updater

log = logging.getLogger("saec.replicate")

LOCK_NAME = ".update-log.lock"
WATERMARK_KEY = WATERMARK  # the manifest's updates_covered_until_ms (store.carry)
# Entries read (and appended under one hold of the append lock) at a time.
BATCH_ENTRIES = 64
# How long a read waits for a new entry before the consumer looks at CURRENT again.
BLOCK_MS = 200
MAX_BACKOFF = 2.0
# Seconds between two looks at the log's tail by every server process (its /readyz and /metrics).
STATUS_INTERVAL = 0.5
UPDATABLE_KINDS = ("compressed", "dense")


def watermark(snapshot: Snapshot) -> int | None:
    """The snapshot's ``updates_covered_until_ms`` (Unix ms), None when it records none."""
    value = snapshot.manifest.get(WATERMARK_KEY)
    return value if type(value) is int and value >= 0 else None


def newest_source(records: Sequence[Any], log_: UpdateLog, current: str | None) -> str | None:
    """The newest ``src`` among ``records`` (DeltaRecords) and ``current``, in log order."""
    best = current
    for r in records:
        src = r.source
        if src is not None and (best is None or log_.order(src) > log_.order(best)):
            best = src
    return best


def assign_fields(
    snapshot: Snapshot, indexes: IndexCache, fields: Mapping[str, FieldDelta]
) -> tuple[dict[str, FieldDelta], dict[str, str]]:
    """Give each vector of a compressed field its nearest centroid.

    Returns:
        The fields to write (masks filled in), and the fields left out with why: "not
        served" for a field of the snapshot another replica serves, else the reason it
        cannot be applied to this snapshot.
    """
    out: dict[str, FieldDelta] = {}
    left: dict[str, str] = {}
    every = snapshot.manifest.get("fields", {})
    for name, d in fields.items():
        f: Field | None = snapshot.fields.get(name)
        if f is None:
            left[name] = "not served" if name in every else f"snapshot {snapshot.version} has no field {name!r}"
        elif f.kind not in UPDATABLE_KINDS:
            left[name] = f"field {name!r} is {f.kind}, which takes no updates"
        elif d.vectors.ndim != 2 or d.vectors.shape[1] != f.dim:
            left[name] = f"field {name!r}: expected vectors of length {f.dim}, got {d.vectors.shape[1:]}"
        elif f.kind == "compressed":
            assert f.codebook is not None and f.masks is not None
            masks = indexes.get(name, f.codebook).nearest(d.vectors).astype(f.masks.dtype)
            out[name] = FieldDelta(keys=d.keys, vectors=d.vectors, masks=masks)
        else:
            out[name] = FieldDelta(keys=d.keys, vectors=d.vectors, masks=None)
    return out, left


@dataclass
class _Base:
    """The consumer's state on one base snapshot."""

    version: str
    snapshot: Snapshot
    writer: DeltaWriter
    reader: DeltaReader
    indexes: IndexCache
    position: str | None  # newest entry applied (or covered by the watermark)
    ordinal: int = 0  # ordinal of ``position`` when known


class Replicator:
    """Applies the update log to the delta log of the store folder's live snapshot.

    Args:
        log_: the update log.
        store: the store folder (a remote store's cache folder).
        fields: the fields this replica serves; empty for all.
        method: nearest-centroid search (see :class:`store.assign_index.CentroidIndex`).
    """

    def __init__(self, log_: UpdateLog, store: str | os.PathLike[str], *, fields: Sequence[str] = (),
                 method: Method = "auto") -> None:
        self.log = log_
        self.layout = StoreLayout(store)
        self.fields = tuple(fields)
        self.method = method
        self.base: _Base | None = None
        self.applied = 0  # entries appended to a delta log
        self.duplicates = 0  # entries found already applied (skipped)
        self.gaps = 0  # entries trimmed from the log before they were read here
        self.dropped: dict[str, int] = {}  # rows dropped on purpose, by field
        self.reachable: bool | None = None
        self.error: str | None = None
        self.caught_up = False  # a read found nothing newer on the current base
        self.last_contact: float | None = None  # monotonic time of the last read that succeeded

    def _follow_current(self) -> _Base | None:
        version = self.layout.current_or_none()
        if version is None:
            return None
        if self.base is not None and self.base.version == version:
            return self.base
        snapshot = open_snapshot(self.layout.snapshot_dir(version), fields=self.fields or None)
        reader = DeltaReader(deltas_dir(self.layout.root, version))
        position = newest_source(reader.poll(), self.log, None)
        if position is None:
            covered = watermark(snapshot)
            position = None if covered is None else self.log.position_at_time(covered)
        self.base = _Base(
            version=version,
            snapshot=snapshot,
            writer=DeltaWriter(self.layout.root, version, check_current=True),
            reader=reader,
            indexes=IndexCache(self.method, background=False),
            position=position,
            ordinal=(self.log.ordinal_of(position) or 0) if position is not None else 0,
        )
        self.caught_up = False
        log.info("applying the update log %s to %s after position %s", self.log.name, version, position or "(start)")
        return self.base

    def step(self, block_ms: int = BLOCK_MS) -> int:
        """Read what the log holds after the current base's position and apply it.

        Returns:
            Entries appended to the delta log.
        Raises:
            UpdateLogUnavailableError: the log cannot be reached (nothing changed here).
        """
        base = self._follow_current()
        if base is None:
            return 0
        entries = self.log.read_after(base.position, count=BATCH_ENTRIES, block_ms=block_ms)
        self.reachable, self.error, self.last_contact = True, None, time.monotonic()
        if not entries:
            self.caught_up = True
            return 0
        try:
            return self._apply(base, entries)
        except SupersededError:
            # CURRENT moved under the append: the next step starts on the new base.
            self.base = None
            return 0

    def _apply(self, base: _Base, entries: list[LogEntry]) -> int:
        frames = [(e, self._frame(base, e)) for e in entries]  # assignment outside the lock
        if base.ordinal and entries[0].ordinal > base.ordinal + 1:
            missing = entries[0].ordinal - base.ordinal - 1
            self.gaps += missing
            log.error("update log %s: %d entries after %s were trimmed before this replica read them; their updates "
                      "come back only with a snapshot that covers them", self.log.name, missing, base.position)
        written = 0
        with base.writer.lock():
            newest = newest_source(base.reader.poll(), self.log, base.position)
            for entry, payload in frames:
                if newest is not None and self.log.order(entry.position) <= self.log.order(newest):
                    self.duplicates += 1
                    continue
                base.writer.append_locked(payload)
                newest = entry.position
                written += 1
        base.position = newest
        base.ordinal = entries[-1].ordinal
        self.applied += written
        return written

    def _frame(self, base: _Base, entry: LogEntry) -> bytes:
        try:
            fields = decode_payload(entry.payload)
        except CorruptDeltaError as exc:
            log.error("update log %s: entry %s does not decode (%s); dropped", self.log.name, entry.position, exc)
            self.dropped["(undecodable)"] = self.dropped.get("(undecodable)", 0) + 1
            fields = {}
        deltas, left = assign_fields(base.snapshot, base.indexes, fields)
        for name, why in left.items():
            if why != "not served":
                rows = int(fields[name].keys.shape[0])
                self.dropped[name] = self.dropped.get(name, 0) + rows
                log.error("update log %s: entry %s: %d rows of %s dropped: %s", self.log.name, entry.position, rows,
                          name, why)
        return encode_payload(deltas, time_ms=entry.time_ms, source=entry.position)

    def run(self, stop: threading.Event, after_step: Callable[[Replicator], object] | None = None) -> None:
        """Apply the log until ``stop`` is set; never raises.

        Args:
            after_step: called after each step (metrics; cheap when nothing changed).
        """
        backoff = 0.1
        while not stop.is_set():
            try:
                self.step()
                if after_step is not None:
                    after_step(self)
                backoff = 0.1
                if self.base is None:  # no snapshot yet (saec serve --wait), or one just superseded
                    stop.wait(BLOCK_MS / 1000)
            except UpdateLogUnavailableError as exc:
                if self.reachable is not False:
                    log.error("%s; serving what this replica has, retrying", exc)
                self.reachable, self.error = False, str(exc)
                stop.wait(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
            except Exception as exc:
                # Anything at all (a snapshot that fails to open, a full disk): logged,
                # retried, and the thread lives on; /readyz shows the lag it leaves.
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("applying the update log failed; retrying")
                self.base = None
                stop.wait(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)


class _Applied:
    """Follows one base's delta log in this process: the newest ``src`` in it."""

    def __init__(self, store: Path, version: str, log_: UpdateLog) -> None:
        self.version = version
        self.reader = DeltaReader(deltas_dir(store, version))
        self.log = log_
        self.position: str | None = None
        self._lock = threading.Lock()

    def poll(self) -> str | None:
        with self._lock:
            self.position = newest_source(self.reader.poll(), self.log, self.position)
            return self.position


@dataclass(frozen=True)
class Acknowledgement:
    """A batch on the log: its position, the base it was checked against, whether this
    replica already serves it, and per field what :class:`store.updates.UpdateResult` says."""

    base: str
    position: str
    sequence: int  # the entry's ordinal in the log
    applied: bool
    fields: dict[str, FieldReport]

    def as_dict(self) -> dict[str, object]:
        return {"base": self.base, "position": self.position, "sequence": self.sequence, "applied": self.applied,
                "fields": {n: r.as_dict() for n, r in self.fields.items()}}


@dataclass
class FleetStatus:
    """The update log as one replica sees it (``/readyz``, ``/snapshot``, ``/metrics``)."""

    log: str
    durability: str
    reachable: bool
    consumer: bool
    position: str | None
    lag: Lag | None
    error: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    #: seconds since the log last answered, when it does not now (the lag is as of then)
    unreachable_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        lag = self.lag
        return {
            "log": self.log,
            "durability": self.durability,
            "reachable": self.reachable,
            "position": self.position,
            "lag_entries": None if lag is None else lag.entries,
            "lag_seconds": None if lag is None else round(lag.seconds, 3),
            "gap_entries": None if lag is None else lag.gap,
            "unreachable_seconds": None if self.unreachable_seconds is None else round(self.unreachable_seconds, 1),
            "consumer_here": self.consumer,
            "error": self.error,
            **self.counts,
        }


class Fleet:
    """One server process's part in a fleet sharing an update log.

    Args:
        log_: the update log.
        live: the process's live engine; :meth:`start` hooks it so that a newly
            published snapshot is served only once the log's entries are replayed onto it.
        fields: the fields this replica serves (empty: all).
        method: nearest-centroid search of the consumer.
        wait_applied: seconds an append waits for its own replica to apply it.
        catch_up_grace: seconds after start that readiness waits for a log that cannot be
            reached; after that the replica is ready with what it has (and says so).
        swap_wait: seconds a new snapshot waits for the log to be replayed onto it.
    """

    def __init__(self, log_: UpdateLog, live: Any, *, fields: Sequence[str] = (), method: Method = "auto",
                 wait_applied: float = 5.0, catch_up_grace: float = 30.0, swap_wait: float = 10.0) -> None:
        self.log = log_
        self.live = live
        self.store = Path(live.layout.root)
        self.fields = tuple(fields)
        self.wait_applied_seconds = wait_applied
        self.catch_up_grace = catch_up_grace
        self.swap_wait = swap_wait
        self.replicator = Replicator(log_, self.store, fields=self.fields, method=method)
        self._lock = FileLock(self.store / LOCK_NAME)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="saec-update-log-status", daemon=True)
        self._consumer_thread = threading.Thread(target=self._consume, name="saec-update-log", daemon=True)
        self._status: FleetStatus | None = None
        self._applied: dict[str, _Applied] = {}
        self._applied_lock = threading.Lock()
        self._started = time.monotonic()
        self._target: str | None = None  # the log's tail when first reached after start
        self._target_known = False
        self._ready = False
        self._last_error: str | None = None
        self._last_lag: Lag | None = None
        self._last_contact: float | None = None
        #: called by the consumer after each step (the server's metrics)
        self.after_step: Callable[[Replicator], object] | None = None
        #: the server's gauges of the lag (``server.fleet.FleetMetrics``), if any
        self.metrics: Any = None

    # -- the consumer --------------------------------------------------------------------
    def start(self) -> None:
        self.live.before_swap = self.before_swap
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        for t in (self._thread, self._consumer_thread):
            if t.is_alive():
                t.join(timeout=10)
        self._lock.release()
        self.log.close()

    @property
    def consumer(self) -> bool:
        """Whether this process runs the replica's consumer."""
        return self._lock.held

    def _watch(self) -> None:
        """Every ``STATUS_INTERVAL`` s: the status (so that /readyz and /metrics never wait
        on the log server), and the consumer's lock until this process holds it."""
        while True:
            try:
                self._status = self.status()
            except Exception:  # the status of a worker must never stop its consumer from starting
                log.exception("reading the update log's status failed")
            if not self._consumer_thread.is_alive() and not self.consumer and self._take_lock():
                log.info("this process applies the update log %s to %s", self.log.name, self.store)
                self._consumer_thread.start()
            if self._stop.wait(STATUS_INTERVAL):
                return

    def cached_status(self) -> FleetStatus:
        """The status as of at most ``STATUS_INTERVAL`` s ago (computed now before the first);
        the consumer's counts as of now."""
        status = self._status
        if status is None:
            status = self._status = self.status()
        return replace(status, counts=self._counts())

    def _counts(self) -> dict[str, Any]:
        """What this process's consumer did (nothing if another process runs it)."""
        if not self.consumer:
            return {}
        r = self.replicator
        return {"applied": r.applied, "duplicates_skipped": r.duplicates, "gaps": r.gaps, "dropped": dict(r.dropped)}

    def _consume(self) -> None:
        self.replicator.run(self._stop, self.after_step)

    def _take_lock(self) -> bool:
        try:
            self.store.mkdir(parents=True, exist_ok=True)  # a remote store's cache before its first copy
            return self._lock.acquire(blocking=False)
        except OSError as exc:
            log.error("cannot take %s: %s", self.store / LOCK_NAME, exc)
            return False

    # -- appends -------------------------------------------------------------------------
    def append(self, updater: Updater, prepared: PreparedUpdate) -> Acknowledgement:
        """Put a checked batch on the log; wait (bounded) until this replica serves it.

        Raises:
            UpdateLogUnavailableError: not acknowledged; the client retries.
        """
        entry = self.log.append(log_payload(prepared))
        reports = field_reports(updater, prepared)
        applied = self.wait_applied(None, entry.position, self.wait_applied_seconds)
        return Acknowledgement(base=updater.base, position=entry.position, sequence=entry.ordinal, applied=applied,
                               fields=reports)

    def _applied_for(self, version: str) -> _Applied:
        with self._applied_lock:
            applied = self._applied.get(version)
            if applied is None:
                if len(self._applied) >= 2:  # the served base and the one being swapped in
                    self._applied.pop(next(iter(self._applied)))
                applied = self._applied[version] = _Applied(self.store, version, self.log)
            return applied

    def applied_position(self, version: str) -> str | None:
        """The newest log position in ``version``'s local delta log (None: none yet)."""
        return self._applied_for(version).poll()

    def _served(self) -> str | None:
        engine = self.live.engine
        return None if engine is None else str(engine.version)

    def _reached(self, version: str | None, target: str | None, start: str | None) -> bool:
        if target is None:
            return True
        if version is None:
            return False
        key = self.log.order(target)
        for p in (self.applied_position(version), start):
            if p is not None and self.log.order(p) >= key:
                return True
        return False

    def wait_applied(self, version: str | None, position: str | None, timeout: float,
                     start: str | None = None) -> bool:
        """Wait until ``version``'s delta log (None: that of the snapshot served at each
        look, which a swap may change) holds ``position``; False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        delay = 0.001
        while not self._reached(version or self._served(), position, start):
            if time.monotonic() >= deadline or self._stop.is_set():
                return False
            time.sleep(delay)
            delay = min(0.02, delay * 2)
        return True

    # -- snapshots -----------------------------------------------------------------------
    def before_swap(self, engine: LookupEngine) -> None:
        """Called by the live engine before it serves a newly opened snapshot: waits
        (at most ``swap_wait`` s) until this replica's consumer replayed the log onto it."""
        try:
            tail = self.log.lag(None).tail
        except Exception as exc:  # anything: a new snapshot is never refused for the log's sake
            log.warning("serving %s without waiting for the update log: %s", engine.version, exc)
            return
        covered = watermark(engine.snapshot)
        start = None if covered is None else self.log.position_at_time(covered)
        if not self.wait_applied(engine.version, tail, self.swap_wait, start=start):
            log.warning("serving %s before the update log was replayed onto it (waited %.1f s, position %s, "
                        "log at %s)", engine.version, self.swap_wait, self.applied_position(engine.version), tail)

    # -- lag and readiness ---------------------------------------------------------------
    def status(self) -> FleetStatus:
        """Where this replica stands against the log (one round trip to the log server)."""
        engine = self.live.engine
        version = engine.version if engine is not None else None
        position = self.applied_position(version) if version is not None else None
        start = position
        if start is None and engine is not None:
            covered = watermark(engine.snapshot)
            start = None if covered is None else self.log.position_at_time(covered)
        counts = self._counts()
        try:
            lag = self.log.lag(start)
        except UpdateLogUnavailableError as exc:
            # The lag as last known, and for how long the log has not answered: it only grows.
            self._last_error = str(exc)
            contacts = [t for t in (self._last_contact, self.replicator.last_contact if self.consumer else None) if t]
            last = max(contacts) if contacts else self._started
            known = self._last_lag
            if self.consumer and self.replicator.caught_up and (self.replicator.last_contact or 0) >= (
                    self._last_contact or 0):
                known = Lag(entries=0, seconds=0.0, tail=None, tail_ordinal=0)  # its last read found nothing newer
            if known is not None:
                known = Lag(entries=known.entries, seconds=known.seconds + time.monotonic() - last if known.entries
                            else 0.0, tail=known.tail, tail_ordinal=known.tail_ordinal)
            return FleetStatus(self.log.name, getattr(self.log, "durability", ""), False, self.consumer, position,
                               known, str(exc), counts, unreachable_seconds=time.monotonic() - last)
        self._last_lag, self._last_contact = lag, time.monotonic()
        if not self._target_known:
            self._target, self._target_known = lag.tail, True
        return FleetStatus(self.log.name, getattr(self.log, "durability", ""), True, self.consumer, position, lag,
                           self.replicator.error if self.consumer else None, counts)

    def unready_reason(self, status: FleetStatus) -> str | None:
        """Why this replica should not take traffic yet, or None.

        Not ready until it has applied everything the log held when it first reached it
        after starting (so a replica that was down serves every update made meanwhile
        before it is ready); a log that cannot be reached holds readiness back for
        ``catch_up_grace`` seconds at most. Once ready, it stays ready: a log outage must
        not take the whole fleet out of its load balancer; /readyz reports the lag.
        """
        if self._ready:
            return None
        engine = self.live.engine
        if engine is None:
            return None  # the engine's own check answers
        if not self._target_known:
            waited = time.monotonic() - self._started
            if waited > self.catch_up_grace:
                log.error("ready without the update log after %.0f s: %s", waited, status.error)
                self._ready = True
                return None
            return f"catching up: the update log {self.log.name} cannot be reached yet ({status.error})"
        covered = watermark(engine.snapshot)
        start = None if covered is None else self.log.position_at_time(covered)
        if self._reached(engine.version, self._target, start):
            self._ready = True
            return None
        lag = status.lag
        behind = f"{lag.entries} entries, {lag.seconds:.1f} s" if lag is not None else "unknown"
        return f"catching up on the update log {self.log.name}: {behind} behind, up to {self._target}"


def log_payload(prepared: PreparedUpdate) -> bytes:
    """A checked batch as a log entry holds it: hashed keys and float32 vectors per field,
    no masks (each replica assigns them with its own snapshot's codebook)."""
    return encode_payload({name: FieldDelta(keys=k, vectors=v, masks=None) for name, (k, v) in prepared.fields.items()})


def field_reports(updater: Updater, prepared: PreparedUpdate) -> dict[str, FieldReport]:
    """Per field accepted/new/reassigned and the distance to the centroid the batch will be
    given (the same search as the consumer's on this snapshot), for the acknowledgement."""
    out = {}
    for name, (keys, vectors) in prepared.fields.items():
        f = updater.engine.field(name)
        new = prepared.new.get(name, 0)
        if f.kind == "compressed":
            assert f.codebook is not None
            index = updater.indexes.get(name, f.codebook)
            distances = index.assign(vectors).distances
            search = index.method
        else:
            distances, search = np.zeros(keys.shape[0], np.float32), "none"
        out[name] = FieldReport(keys.shape[0], new, keys.shape[0] - new, distances, search)
    return out


def open_fleet(url: str, live: Any, *, fields: Sequence[str] = ()) -> Fleet:
    """A :class:`Fleet` over the update log at ``url`` (see :func:`store.updatelog.open_update_log`)."""
    from saec.store.updatelog import open_update_log

    return Fleet(open_update_log(url), live, fields=fields)

