"""Pending updates in memory, laid over a snapshot's lookups.

An update of an id the snapshot holds (its key index finds a row) is a *reassignment*:
it is written straight into the row, in a private copy of the field's masks (or dense
vectors) that only this process sees. Lookups then read the same kernel's array, at no
extra cost; the price is memory. Up to ``COPY_MAX_BYTES`` the copy is whole and on huge
pages (``store.hugepages``): a copy-on-write map copies 4 KiB pages, and reading those at
random measured ~9 ns an id slower at 1e8 features than the file mapped from the page
cache. Larger arrays (dense fields of 1 GiB and more) stay copy-on-write maps, each
touched page copied once per process. A reassignment is also what a fold writes: the row
that the key's bucket and 16-bit fingerprint select.

An update of an id the snapshot lacks goes into an open-addressing hash table of its
full key with one value: the assigned mask of a compressed field, the float32 vector of a
dense one. The engine's lookup kernels probe it (``_kernels.find_added``) in the loop that
gathers the rows, only for ids the snapshot did not find, behind a blocked Bloom filter
(three bits of the key in one 64-bit word chosen by its top bits; 16 filter bits per table
slot, 32-64 per key) that answers "not updated" for over 99% of them with one read. A
later update of a key overwrites it: last write wins.

The overlay is filled from the base's delta segments (:class:`store.deltas.DeltaReader`);
:meth:`Overlay.refresh` reads only what was appended since its last call.

Concurrency: one owner, one lock. Each worker process has its own overlay (the delta log
is what processes share; see ``store.deltas`` for its contract), and everything in it is
guarded by ``Overlay.lock``, an :class:`OverlayLock`: lookups hold it *shared* while they
read the overlay's arrays (``LookupEngine.lookup`` takes it around all fields of a
request), any number at once, threads of the big-body pool included; one refresh at a
time holds it *refreshing* while it reads new frames from disk (lookups go on) and then
*exclusive* while it applies them, all of one poll, so a lookup sees a batch whole or not
at all. A segment that shrank, was replaced or deleted, or a frame that fails to apply
part way, makes the refresh build a fresh overlay from the log, off to the side, and swap
it in whole under the exclusive lock. Refresh never raises for what it finds on disk:
damage and odd files are reported (:meth:`Overlay.summary`) and the snapshot is served.
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import numpy.typing as npt

from saec.store import hugepages
from saec.store._kernels import PREFETCH_DISTANCE, _prefetch, filter_bits, find_added
from saec.store.deltas import DeltaReader, DeltaRecord, FieldDelta, segment_bytes
from saec.store.drift import Drift
from saec.store.errors import DeltaLogChangedError
from saec.store.snapshot import Field, Snapshot, chunk_path

log = logging.getLogger("saec.overlay")

MIN_SLOTS = 1 << 10
# Filter bits per table slot; at most half the slots are used, so >= 32 bits a key.
FILTER_BITS_PER_SLOT = 16
# Reassignments copy a field's masks (or vectors) whole, on huge pages, up to this size;
# beyond it, page by page (copy-on-write).
COPY_MAX_BYTES = 1 << 30


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _insert(tkeys, tvals, keys, first_value, out_index):  # pragma: no cover
    """Insert ``keys`` (existing ones keep their value slot); returns how many were new.

    Args:
        tkeys: uint64 (cap,); tvals: int64 (cap,), -1 = empty slot.
        keys: uint64 (n,).
        first_value: value index given to the first new key.
        out_index: int64 (n,), written: the value index of each key.
    """
    mask = np.uint64(tkeys.shape[0] - 1)
    nxt = first_value
    for i in range(keys.shape[0]):
        k = keys[i]
        s = np.int64(k & mask)
        while True:
            v = tvals[s]
            if v < 0:
                tkeys[s] = k
                tvals[s] = nxt
                out_index[i] = nxt
                nxt += 1
                break
            if tkeys[s] == k:
                out_index[i] = v
                break
            s = np.int64((np.uint64(s) + np.uint64(1)) & mask)
    return nxt - first_value


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _find(keys, filt, wshift, tkeys, tvals, out):  # pragma: no cover
    """out[i] = value index of keys[i], -1 where it has none (uint64 (m,) -> int64 (m,))."""
    m = keys.shape[0]
    sh = np.uint64(wshift)
    dist = PREFETCH_DISTANCE
    for i in range(m):
        if i + dist < m:
            _prefetch(filt, np.int64(keys[i + dist] >> sh))
        out[i] = find_added(keys[i], filt, wshift, tkeys, tvals)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _set_filter(filt, wshift, keys):  # pragma: no cover
    sh = np.uint64(wshift)
    for i in range(keys.shape[0]):
        filt[np.int64(keys[i] >> sh)] |= filter_bits(keys[i])


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _mark_rows(bitmap, rows):  # pragma: no cover
    """Set the bits of ``rows`` (int64 (m,), >= 0) in ``bitmap`` (uint8); returns how many were unset."""
    fresh = 0
    for i in range(rows.shape[0]):
        r = rows[i]
        bit = np.uint8(1) << np.uint8(r & 7)
        if not bitmap[r >> 3] & bit:
            bitmap[r >> 3] |= bit
            fresh += 1
    return fresh


PAGE = 4096


class FieldOverlay:
    """The pending updates of one field.

    Attributes:
        keys: uint64 (n,), each id new to the snapshot once, in order of first update.
        masks: uint8|uint16 (n,) of those for a compressed field; vectors: float32 (n, dim) for a dense one.
        base: the field's masks (or vectors) with reassignments written in: a private copy
            of the snapshot's array; None before the first reassignment.
        reassigned: snapshot rows reassigned (each once).
        updates: rows applied, repeats of a key included.
    """

    def __init__(self, field: Field, snapshot_path: str | os.PathLike[str]) -> None:
        self.field = field
        self.kind = field.kind
        self.snapshot_path = snapshot_path
        self.n = 0
        self.updates = 0
        self.reassigned = 0
        self.base: npt.NDArray | None = None
        self._copied = False
        self._rows_set = np.zeros(0, np.uint8)
        self._pages = np.zeros(0, np.bool_)
        self._keys = np.empty(0, np.uint64)
        self._masks = np.empty(0, field.masks.dtype if field.masks is not None else np.uint8)
        self._vectors = np.empty((0, field.dim), np.float32)
        self._resize_table(MIN_SLOTS)

    @property
    def pending(self) -> int:
        """Distinct ids with an update."""
        return self.n + self.reassigned

    @property
    def keys(self) -> npt.NDArray[np.uint64]:
        return self._keys[: self.n]

    @property
    def masks(self) -> npt.NDArray[np.unsignedinteger]:
        return self._masks[: self.n]

    @property
    def vectors(self) -> npt.NDArray[np.float32]:
        return self._vectors[: self.n]

    @property
    def nbytes(self) -> int:
        """Bytes of memory this process holds for the updates (capacity and copied pages included)."""
        return int(
            self._keys.nbytes + self._masks.nbytes + self._vectors.nbytes
            + self._tkeys.nbytes + self._tvals.nbytes + self._filter.nbytes
            + self._rows_set.nbytes + self._pages.nbytes + PAGE * int(self._pages.sum())
            + (self.base.nbytes if self._copied and self.base is not None else 0)
        )

    def _resize_table(self, slots: int) -> None:
        self._tkeys = hugepages.zeros(slots, np.uint64)
        self._tvals = hugepages.full(slots, -1, np.int64)
        words = slots * FILTER_BITS_PER_SLOT // 64
        self._wshift = 64 - int(np.log2(words))
        self._filter = hugepages.zeros(words, np.uint64)
        if self.n:
            scratch = np.empty(self.n, np.int64)
            _insert(self._tkeys, self._tvals, self.keys, 0, scratch)
            _set_filter(self._filter, self._wshift, self.keys)

    def _reserve(self, n: int) -> None:
        if n > self._keys.shape[0]:
            cap = max(n, 2 * self._keys.shape[0], 1024)
            self._keys = np.resize(self._keys, cap)
            if self.kind == "compressed":
                self._masks = np.resize(self._masks, cap)
            else:
                grown = np.empty((cap, self.field.dim), np.float32)
                grown[: self.n] = self._vectors[: self.n]
                self._vectors = grown
        slots = self._tkeys.shape[0]
        while 2 * n > slots:
            slots *= 2
        if slots != self._tkeys.shape[0]:
            self._resize_table(slots)

    def _writable_base(self) -> npt.NDArray:
        """A private copy of the snapshot's masks (or vectors): whole on huge pages, or copy-on-write."""
        if self.base is None:
            name = "masks" if self.kind == "compressed" else "vectors"
            info = self.field.arrays[name]
            self._copied = info.nbytes <= COPY_MAX_BYTES
            if self._copied:
                # The snapshot already maps the array: copy it from that map.
                self.base = hugepages.copy(np.asarray(getattr(self.field, name)))
            else:
                path = chunk_path(Path(self.snapshot_path) / info.path, len(info.shape))
                fd = os.open(path, os.O_RDONLY)
                try:
                    mm = mmap.mmap(fd, info.nbytes, access=mmap.ACCESS_COPY)
                finally:
                    os.close(fd)
                count = int(np.prod(info.shape))
                dtype = np.dtype(info.dtype).newbyteorder("<")
                self.base = np.frombuffer(mm, dtype=dtype, count=count).reshape(info.shape)
            self._rows_set = np.zeros((self.field.rows + 7) // 8, np.uint8)
            self._pages = np.zeros(0 if self._copied else -(-info.nbytes // PAGE), np.bool_)
        return self.base

    def add(self, keys: npt.NDArray[np.uint64], values: npt.NDArray) -> int:
        """Apply updates; returns how many ids were new to the snapshot and to this overlay.

        Args:
            keys: uint64 (m,).
            values: masks (m,) for a compressed field, float32 (m, dim) vectors for a dense one.
        """
        keys = np.ascontiguousarray(keys, np.uint64)
        rows = self.field.index.lookup(keys)
        held = rows >= 0
        if held.any():
            base = self._writable_base()
            r = rows[held]
            base[r] = values[held]
            self.reassigned += int(_mark_rows(self._rows_set, r))
            if not self._copied:
                row_bytes = base.strides[0]
                self._pages[(r * row_bytes) // PAGE] = True
                self._pages[(r * row_bytes + row_bytes - 1) // PAGE] = True
        new = 0
        if not held.all():
            fresh_keys = keys[~held] if held.any() else keys
            fresh_values = values[~held] if held.any() else values
            m = fresh_keys.shape[0]
            self._reserve(self.n + m)
            index = np.empty(m, np.int64)
            new = int(_insert(self._tkeys, self._tvals, fresh_keys, self.n, index))
            if new:
                first = index >= self.n
                self._keys[index[first]] = fresh_keys[first]
                _set_filter(self._filter, self._wshift, fresh_keys)
            if self.kind == "compressed":
                self._masks[index] = fresh_values
            else:
                self._vectors[index] = fresh_values
            self.n += new
        self.updates += keys.shape[0]
        return new

    def find(self, keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
        """int64 (m,): the value index of each key new to the snapshot, -1 elsewhere."""
        out = np.empty(keys.shape[0], np.int64)
        _find(np.ascontiguousarray(keys, np.uint64), self._filter, self._wshift, self._tkeys, self._tvals, out)
        return out

    def added(self) -> tuple[npt.NDArray[np.uint64], int, npt.NDArray[np.uint64], npt.NDArray[np.int64], npt.NDArray]:
        """The ids this overlay added, as the lookup kernels take them (``_kernels.lookup_compressed``):
        filter, its shift, table keys, table values, and the masks (or vectors) they index."""
        values = self._masks if self.kind == "compressed" else self._vectors
        return self._filter, self._wshift, self._tkeys, self._tvals, values

    def contains(self, keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
        """bool (m,): keys whose snapshot row was reassigned, or that an update added."""
        out = self.find(keys) >= 0
        if self.reassigned:
            rows = self.field.index.lookup(keys)
            held = rows >= 0
            r = rows[held]
            out[held] |= (self._rows_set[r >> 3] >> (r & 7).astype(np.uint8)) & 1 == 1
        return out


@dataclass(frozen=True)
class OverlayStats:
    """Counts for /memory and /snapshot."""

    sequence: int
    delta_bytes: int
    fields: dict[str, dict[str, int]]


def frame_fits(f: Field, d: FieldDelta) -> bool:
    """Whether a frame's rows of field ``f`` can be applied: its dim, kind, mask dtype and
    range (masks below k) and one row per key. Frames are checked before they are written;
    one that does not fit was written by something else."""
    keys, vectors, masks = d.keys, d.vectors, d.masks
    if vectors.shape[1] != f.dim or (f.kind == "compressed") != (masks is not None):
        return False
    if masks is not None:
        assert f.masks is not None
        if masks.dtype != f.masks.dtype or (masks.size and int(masks.max()) >= f.k):
            return False
    return bool(keys.shape[0] == vectors.shape[0])


class OverlayLock:
    """A readers-writer lock with one refresher: lookups share it, one refresh at a time
    reads alongside them, then waits for them to finish and applies alone.

    Waiting refreshes go before new readers, so a stream of lookups cannot starve a refresh.
    Not re-entrant: a thread holding it shared must not take it again. A shared hold costs
    two acquisitions of a plain mutex (the condition is waited on and notified only while
    a refresh applies).
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0
        self._refresher = threading.Lock()
        self._shared = _Shared(self)

    @property
    def refreshing_now(self) -> bool:
        return self._refresher.locked()

    def shared(self) -> _Shared:
        """Context manager: hold the lock shared (lookups)."""
        return self._shared

    @contextmanager
    def refreshing(self) -> Iterator[None]:
        with self._refresher:
            yield

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Taken only while holding :meth:`refreshing`."""
        with self._mutex:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._mutex:
                self._writing = False
                self._cond.notify_all()


class _Shared:
    __slots__ = ("_lock",)

    def __init__(self, lock: OverlayLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        lock = self._lock
        with lock._mutex:
            while lock._writing or lock._writers_waiting:
                lock._cond.wait()
            lock._readers += 1

    def __exit__(self, *exc: object) -> None:
        lock = self._lock
        with lock._mutex:
            lock._readers -= 1
            if not lock._readers and lock._writers_waiting:
                lock._cond.notify_all()


class Overlay:
    """All pending updates of one snapshot, read from its delta segments.

    Args:
        snapshot: the base snapshot.
        directory: its deltas folder (``STORE/deltas/<version>``); need not exist yet.

    Attributes:
        lock: the one lock of everything below (see the module docstring).
        rebuilds: times the overlay was built again from the log (a segment shrank,
            was replaced or deleted, or a frame failed to apply).
    """

    def __init__(self, snapshot: Snapshot, directory: str) -> None:
        self.snapshot = snapshot
        self.directory = directory
        self.lock = OverlayLock()
        self.rebuilds = 0
        self._load()

    def _load(self) -> None:
        """Start over: a fresh reader and no updates (nobody else sees this object yet)."""
        self.reader = DeltaReader(self.directory)
        self.fields: dict[str, FieldOverlay] = {}
        self.drift = Drift(self.snapshot)  # every frame's distance to its centroid (store.drift)
        for _ in range(3):
            try:
                for r in self.reader.poll():
                    self.apply(r)
                return
            except DeltaLogChangedError as exc:
                # Changed while read from the start: read it once more.
                log.error("%s; reading the delta log again", exc)
                self.reader = DeltaReader(self.directory)
                self.fields = {}
                self.drift = Drift(self.snapshot)
        self.reader.refused = f"{self.directory}: the delta log kept changing while it was read from the start"

    def __iter__(self) -> Iterator[FieldOverlay]:
        return iter(self.fields.values())

    @property
    def sequence(self) -> int:
        return self.reader.sequence

    def refresh(self) -> int:
        """Apply frames appended since the last call; returns how many. One ``lstat`` if none.

        Never raises for what is on disk; call it without holding :attr:`lock`.
        """
        # Unchanged since the last complete refresh: checked before whether one is under
        # way, so a refresh that has read frames but not applied them is waited for.
        if self.reader.unchanged() and not self.lock.refreshing_now:
            return 0
        with self.lock.refreshing():
            try:
                records = self.reader.poll()
            except DeltaLogChangedError as exc:
                log.error("%s; building the overlay of %s again from its delta log", exc, self.snapshot.version)
                return self._rebuild()
            if not records:
                return 0
            try:
                with self.lock.exclusive():
                    for r in records:
                        self.apply(r)
            except Exception:
                # Half a poll may be in: nothing of it may be served.
                log.exception("applying delta frames to the overlay of %s failed; building it again from the log",
                              self.snapshot.version)
                return self._rebuild()
            return len(records)

    def _rebuild(self) -> int:
        """Build a fresh overlay from the log beside this one and swap it in whole (the
        caller holds ``lock.refreshing()``); returns the frames it holds."""
        fresh = Overlay(self.snapshot, self.directory)
        with self.lock.exclusive():
            rebuilds = self.rebuilds + 1
            self.__dict__.update({k: v for k, v in fresh.__dict__.items() if k != "lock"})
            self.rebuilds = rebuilds
        return fresh.sequence

    def apply(self, record: DeltaRecord) -> None:
        """Apply one frame; the caller holds ``lock.exclusive()`` (or owns an unshared overlay)."""
        self.drift.observe(record)
        for name, d in record.fields.items():
            f = self.snapshot.fields.get(name)
            if f is None and name in self.snapshot.manifest.get("fields", {}):
                continue  # a field of the snapshot another replica serves (saec serve --fields)
            if f is None or not frame_fits(f, d):
                # Frames are checked against this very snapshot before they are written;
                # one that does not fit was written by something else and is skipped, not served.
                log.error("frame %d: field %r does not fit snapshot %s; skipped", record.sequence, name, self.snapshot.version)
                continue
            fo = self.fields.get(name)
            if fo is None:
                fo = self.fields[name] = FieldOverlay(f, self.snapshot.path)
            fo.add(d.keys, d.masks if d.masks is not None else d.vectors)

    def added(self, name: str) -> tuple | None:
        """The field's added ids as the lookup kernels take them (:meth:`FieldOverlay.added`),
        or None; the caller holds ``lock.shared()``."""
        fo = self.fields.get(name)
        return None if fo is None else fo.added()

    def base_values(self, name: str) -> npt.NDArray | None:
        """The field's masks (or vectors) with reassignments in, or None if it has none;
        the caller holds ``lock.shared()``."""
        fo = self.fields.get(name)
        return None if fo is None else fo.base

    def contains(self, name: str, keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
        """bool (m,): keys with a pending update in ``name`` (a row reassigned, or added)."""
        with self.lock.shared():
            fo = self.fields.get(name)
            if fo is None:
                return np.zeros(keys.shape[0], np.bool_)
            return fo.contains(keys)

    def summary(self) -> dict[str, object]:
        """The pending updates for /memory and /snapshot: frames, bytes, keys per field, and
        what the log holds that is not served (damage, an unreadable segment, a torn tail)."""
        self.refresh()
        st = self.stats()
        reader = self.reader
        return {
            "sequence": st.sequence,
            "bytes": segment_bytes(reader.directory),
            "memory_bytes": sum(f["memory_bytes"] for f in st.fields.values()),
            "fields": st.fields,
            "damage": [d.as_dict() for d in reader.damage],
            "damaged_bytes": reader.damaged_bytes(),
            "missing_sequences": reader.missing + sum(d.gap for d in reader.damage),
            "unreadable": reader.refused,
            "torn_tail": None if reader.torn is None else {"offset": reader.torn[0], "bytes": reader.torn[1]},
            "rebuilds": self.rebuilds,
        }

    def health(self) -> str | None:
        """What an operator must know about the log in one line, or None when it is whole."""
        reader = self.reader
        if reader.refused is not None:
            return reader.refused
        if reader.damage:
            return (f"{len(reader.damage)} damaged ranges ({reader.damaged_bytes()} bytes) in {reader.directory}, "
                    f"first: {reader.damage[0]}; every intact frame is served, see /snapshot deltas.damage")
        return None

    def stats(self) -> OverlayStats:
        with self.lock.shared():
            return OverlayStats(
                sequence=self.reader.sequence,
                delta_bytes=self.reader.bytes,
                fields={
                    f.field.name: {
                        "pending": f.pending, "new": f.n, "reassigned": f.reassigned, "updates": f.updates,
                        "memory_bytes": f.nbytes,
                    }
                    for f in self.fields.values()
                },
            )
