"""Pending updates in memory, laid over a snapshot's lookups.

Each field with updates keeps an open-addressing hash table of its updated keys (a
compiled loop probes it, as ``_kernels`` probes the key index) and one value per key:
the assigned mask (uint8 or uint16) of a compressed field, the float32 vector of a
dense one. A later update of a key overwrites its value: last write wins, both for
keys new to the snapshot and for keys the snapshot holds.

Lookups of keys that were never updated must cost what they cost without updates. A
bit filter over the top bits of the key, 16 bits per table slot (32-64 per key, a few
MiB at 1e6 updates, mostly cache-resident), answers "certainly not updated" for ~97% of
them with one read; only the rest probe the table. With no updates in a field the
overlay is not touched at all. ``bench/updates.py`` measures the difference.

The overlay is filled from the base's delta segments (:class:`store.deltas.DeltaReader`);
:meth:`Overlay.refresh` reads only what was appended since its last call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numba
import numpy as np
import numpy.typing as npt

from saec.store._kernels import PREFETCH_DISTANCE, _prefetch
from saec.store.deltas import DeltaReader, DeltaRecord, segment_bytes
from saec.store.snapshot import Field, Snapshot

log = logging.getLogger("saec.overlay")

MIN_SLOTS = 1 << 10
# Filter bits per table slot; at most half the slots are used, so >= 32 bits a key.
FILTER_BITS_PER_SLOT = 16


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
def _find(keys, filt, fshift, tkeys, tvals, out):  # pragma: no cover
    """out[i] = value index of keys[i], -1 where it has none.

    Args:
        keys: uint64 (m,); filt: uint64 (2**fbits / 64,); fshift: 64 - fbits.
        tkeys: uint64 (cap,); tvals: int64 (cap,).
        out: int64 (m,), written.
    """
    m = keys.shape[0]
    mask = np.uint64(tkeys.shape[0] - 1)
    sh = np.uint64(fshift)
    dist = PREFETCH_DISTANCE
    for i in range(m):
        if i + dist < m:
            _prefetch(filt, np.int64((keys[i + dist] >> sh) >> np.uint64(6)))
        k = keys[i]
        b = k >> sh
        out[i] = -1
        if (filt[np.int64(b >> np.uint64(6))] >> (b & np.uint64(63))) & np.uint64(1):
            s = np.int64(k & mask)
            while True:
                v = tvals[s]
                if v < 0:
                    break
                if tkeys[s] == k:
                    out[i] = v
                    break
                s = np.int64((np.uint64(s) + np.uint64(1)) & mask)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _overlay_compressed(keys, filt, fshift, tkeys, tvals, masks, codebook, out, found):  # pragma: no cover
    """Where keys[i] was updated: out[i] = codebook[masks[value]], found[i] = True."""
    idx = np.empty(keys.shape[0], dtype=np.int64)
    _find(keys, filt, fshift, tkeys, tvals, idx)
    last = codebook.shape[0] - 1
    for i in range(keys.shape[0]):
        v = idx[i]
        if v >= 0:
            found[i] = True
            c = min(np.int64(masks[v]), last)
            for d in range(codebook.shape[1]):
                out[i, d] = codebook[c, d]


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _overlay_dense(keys, filt, fshift, tkeys, tvals, vectors, out, found):  # pragma: no cover
    """Where keys[i] was updated: out[i] = vectors[value], found[i] = True."""
    idx = np.empty(keys.shape[0], dtype=np.int64)
    _find(keys, filt, fshift, tkeys, tvals, idx)
    for i in range(keys.shape[0]):
        v = idx[i]
        if v >= 0:
            found[i] = True
            for d in range(vectors.shape[1]):
                out[i, d] = vectors[v, d]


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _set_filter(filt, fshift, keys):  # pragma: no cover
    sh = np.uint64(fshift)
    for i in range(keys.shape[0]):
        b = keys[i] >> sh
        filt[np.int64(b >> np.uint64(6))] |= np.uint64(1) << (b & np.uint64(63))


class FieldOverlay:
    """The pending updates of one field.

    Attributes:
        keys: uint64 (n,), each updated key once, in order of first update.
        masks: uint8|uint16 (n,) for a compressed field; vectors: float32 (n, dim) for a dense one.
        updates: rows applied, repeats of a key included.
    """

    def __init__(self, field: Field) -> None:
        self.field = field
        self.kind = field.kind
        self.n = 0
        self.updates = 0
        self._keys = np.empty(0, np.uint64)
        self._masks = np.empty(0, field.masks.dtype if field.masks is not None else np.uint8)
        self._vectors = np.empty((0, field.dim), np.float32)
        self._resize_table(MIN_SLOTS)

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
        """Bytes of memory held (capacity included)."""
        return int(
            self._keys.nbytes + self._masks.nbytes + self._vectors.nbytes
            + self._tkeys.nbytes + self._tvals.nbytes + self._filter.nbytes
        )

    def _resize_table(self, slots: int) -> None:
        self._tkeys = np.zeros(slots, np.uint64)
        self._tvals = np.full(slots, -1, np.int64)
        fbits = int(np.log2(slots * FILTER_BITS_PER_SLOT))
        self._fshift = 64 - fbits
        self._filter = np.zeros((1 << fbits) // 64, np.uint64)
        if self.n:
            scratch = np.empty(self.n, np.int64)
            _insert(self._tkeys, self._tvals, self.keys, 0, scratch)
            _set_filter(self._filter, self._fshift, self.keys)

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

    def add(self, keys: npt.NDArray[np.uint64], values: npt.NDArray) -> int:
        """Apply updates; returns how many keys were new to this overlay.

        Args:
            keys: uint64 (m,).
            values: masks (m,) for a compressed field, float32 (m, dim) vectors for a dense one.
        """
        m = keys.shape[0]
        self._reserve(self.n + m)
        index = np.empty(m, np.int64)
        new = int(_insert(self._tkeys, self._tvals, np.ascontiguousarray(keys, np.uint64), self.n, index))
        if new:
            self._keys[index[index >= self.n]] = keys[index >= self.n]
            _set_filter(self._filter, self._fshift, np.ascontiguousarray(keys, np.uint64))
        if self.kind == "compressed":
            self._masks[index] = values
        else:
            self._vectors[index] = values
        self.n += new
        self.updates += m
        return new

    def find(self, keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
        """int64 (m,): the value index of each key, -1 where it has no update."""
        out = np.empty(keys.shape[0], np.int64)
        _find(np.ascontiguousarray(keys, np.uint64), self._filter, self._fshift, self._tkeys, self._tvals, out)
        return out

    def overlay(self, keys: npt.NDArray[np.uint64], out: npt.NDArray[np.float32], found: npt.NDArray[np.bool_]) -> None:
        """Overwrite ``out`` (float32 (m, dim)) and ``found`` (bool (m,)) where a key has an update."""
        if self.kind == "compressed":
            _overlay_compressed(
                keys, self._filter, self._fshift, self._tkeys, self._tvals, self._masks, self.field.codebook, out, found
            )
        else:
            _overlay_dense(keys, self._filter, self._fshift, self._tkeys, self._tvals, self._vectors, out, found)


@dataclass(frozen=True)
class OverlayStats:
    """Counts for /memory and /snapshot."""

    sequence: int
    delta_bytes: int
    fields: dict[str, dict[str, int]]


class Overlay:
    """All pending updates of one snapshot, read from its delta segments.

    Args:
        snapshot: the base snapshot.
        directory: its deltas folder (``STORE/deltas/<version>``); need not exist yet.
    """

    def __init__(self, snapshot: Snapshot, directory: str) -> None:
        self.snapshot = snapshot
        self.reader = DeltaReader(directory)
        self.fields: dict[str, FieldOverlay] = {}
        self.refresh()

    def __iter__(self) -> Iterator[FieldOverlay]:
        return iter(self.fields.values())

    @property
    def sequence(self) -> int:
        return self.reader.sequence

    def refresh(self) -> int:
        """Apply frames appended since the last call; returns how many. One ``stat`` if none."""
        records = self.reader.poll()
        for r in records:
            self.apply(r)
        return len(records)

    def apply(self, record: DeltaRecord) -> None:
        for name, d in record.fields.items():
            f = self.snapshot.fields.get(name)
            if f is None or d.vectors.shape[1] != f.dim or (f.kind == "compressed") != (d.masks is not None):
                # Frames are checked against this very snapshot before they are written;
                # one that does not fit was written by something else and is skipped, not served.
                log.error("frame %d: field %r does not fit snapshot %s; skipped", record.sequence, name, self.snapshot.version)
                continue
            fo = self.fields.get(name)
            if fo is None:
                fo = self.fields[name] = FieldOverlay(f)
            fo.add(d.keys, d.masks if d.masks is not None else d.vectors)

    def overlay(self, name: str, keys: npt.NDArray[np.uint64], out: npt.NDArray[np.float32],
                found: npt.NDArray[np.bool_]) -> None:
        """Lay the field's updates over a lookup's ``out`` and ``found`` (no-op without updates)."""
        fo = self.fields.get(name)
        if fo is not None and fo.n:
            fo.overlay(keys, out, found)

    def contains(self, name: str, keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
        """bool (m,): keys with a pending update in ``name``."""
        fo = self.fields.get(name)
        if fo is None or not fo.n:
            return np.zeros(keys.shape[0], np.bool_)
        return fo.find(keys) >= 0

    def summary(self) -> dict[str, object]:
        """The pending updates for /memory and /snapshot: frames, bytes, keys per field."""
        self.refresh()
        st = self.stats()
        return {
            "sequence": st.sequence,
            "bytes": segment_bytes(self.reader.directory),
            "memory_bytes": sum(f["memory_bytes"] for f in st.fields.values()),
            "fields": st.fields,
        }

    def stats(self) -> OverlayStats:
        return OverlayStats(
            sequence=self.reader.sequence,
            delta_bytes=self.reader.bytes,
            fields={
                f.field.name: {"pending": f.n, "updates": f.updates, "memory_bytes": f.nbytes} for f in self.fields.values()
            },
        )
