"""Folding: the live snapshot plus its pending updates, published as the next snapshot.

No re-clustering: codebooks stay as they are, each field's keys, masks (or vectors),
counts and key index are rebuilt from the base and its delta frames, and the result is
published through :class:`SnapshotWriter` like any snapshot.

A snapshot keeps a key only to its bucket bits and 16-bit fingerprint, so the base's
rows go into the fold as *prefix keys* (those bits, zeros below) and the fold keeps the
base's bucket bits: every base id then finds its row exactly as before. Reassignments
are already in the rows (the overlay writes them there, as the live lookups read them);
ids new to the snapshot get rows of their own.

The append lock of the base is held from reading the deltas to switching CURRENT, so
an update is either in the fold or refused afterwards (``SupersededError``, 503 over
HTTP, which clients retry against the new snapshot): none is lost between the two.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from saec.store.deltas import DeltaWriter
from saec.store.keyindex import BLOCK_BITS, FINGERPRINT_BITS, KeyIndex
from saec.store.layout import DELTAS, StoreLayout
from saec.store.overlay import FieldOverlay, Overlay
from saec.store.snapshot import Field, open_snapshot
from saec.store.writer import DEFAULT_KEEP, SnapshotWriter


@dataclass(frozen=True)
class FoldResult:
    """What a fold published."""

    base: str
    version: str
    frames: int
    fields: dict[str, dict[str, int]]
    seconds: float


def prefix_keys(index: KeyIndex) -> npt.NDArray[np.uint64]:
    """uint64 (rows,): each row's bucket and fingerprint bits in place, zeros below.

    They sort as the original keys did and land in the same bucket with the same
    fingerprint, so an index built from them with the same bucket bits is the same index.
    """
    bits = index.bucket_bits
    buckets = np.arange((1 << bits) + 1, dtype=np.int64)
    starts = index.block_bases[buckets >> BLOCK_BITS].astype(np.int64) + index.bucket_offsets[buckets].astype(np.int64)
    bucket_of_row = np.repeat(np.arange(1 << bits, dtype=np.uint64), np.diff(starts))
    shift = np.uint64(64 - bits - FINGERPRINT_BITS)
    keys = index.fingerprints.astype(np.uint64) << shift
    if bits:
        keys |= bucket_of_row << np.uint64(64 - bits)
    return keys


def _merge(f: Field, fo: FieldOverlay | None) -> tuple[npt.NDArray[np.uint64], npt.NDArray, npt.NDArray | None]:
    """Keys, values (masks or vectors) and counts of a folded field: every base row (with
    its reassignments), then the ids new to the snapshot."""
    base_keys = prefix_keys(f.index)
    values = f.masks if f.kind == "compressed" else f.vectors
    assert values is not None
    counts = None if f.counts is None else np.asarray(f.counts)
    if fo is None:
        return base_keys, np.asarray(values), counts
    if fo.base is not None:
        values = fo.base
    new_values = fo.masks if f.kind == "compressed" else fo.vectors
    keys = np.concatenate([base_keys, fo.keys])
    merged = np.concatenate([np.asarray(values), new_values])
    if counts is not None:
        counts = np.concatenate([counts, np.zeros(fo.n, counts.dtype)])
    return keys, merged, counts


def fold(store: str | os.PathLike[str], *, keep: int = DEFAULT_KEEP, source: str = "") -> FoldResult:
    """Publish the live snapshot plus its deltas as a new live snapshot.

    Returns:
        The new version, the frames folded and per field the rows before and after.
    """
    t0 = time.perf_counter()
    layout = StoreLayout(store)
    base = layout.current()
    snapshot = open_snapshot(layout.snapshot_path(base))
    appends = DeltaWriter(store, base)
    report: dict[str, dict[str, int]] = {}
    with appends.lock():
        overlay = Overlay(snapshot, str(appends.directory))
        with SnapshotWriter(store, source=source or f"fold of {base} and {overlay.sequence} delta frames", keep=keep) as w:
            for f in snapshot:
                fo = overlay.fields.get(f.name)
                keys, values, counts = _merge(f, fo)
                attrs = {**f.attrs, "folded_from": base, "folded_frames": overlay.sequence}
                bits = f.index.bucket_bits
                if f.kind == "compressed":
                    assert f.codebook is not None
                    w.add_compressed_field(f.name, keys, f.codebook, values, counts, attrs=attrs, bucket_bits=bits)
                else:
                    w.add_dense_field(f.name, keys, values, counts, attrs=attrs, bucket_bits=bits)
                report[f.name] = {
                    "rows_before": f.rows,
                    "updates": 0 if fo is None else fo.pending,
                    "reassigned": 0 if fo is None else fo.reassigned,
                }
            version = w.publish()
    for name, f in open_snapshot(layout.snapshot_path(version)).fields.items():
        report[name]["rows_after"] = f.rows
    # Deltas of snapshots no longer kept can never apply again.
    kept = set(layout.versions())
    deltas_root = layout.root / DELTAS
    if deltas_root.is_dir():
        for d in deltas_root.iterdir():
            if d.is_dir() and d.name not in kept:
                shutil.rmtree(d, ignore_errors=True)
    return FoldResult(base=base, version=version, frames=overlay.sequence, fields=report, seconds=time.perf_counter() - t0)
