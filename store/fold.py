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
HTTP, which clients retry against the new snapshot): none is lost between the two. The
fold covers every update it folded: its manifest's watermark is the newest folded frame's
time, and it keeps its base's checkpoint watermark (``store.carry.fold_manifest``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from saec.store import carry, drift
from saec.store.deltas import DeltaWriter
from saec.store.errors import StoreError
from saec.store.keyindex import BLOCK_BITS, FINGERPRINT_BITS, KeyIndex
from saec.store.layout import StoreLayout
from saec.store.overlay import FieldOverlay, Overlay
from saec.store.snapshot import CODEBOOK_KINDS, Field, Snapshot, open_snapshot
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
    values = f.masks if f.kind in CODEBOOK_KINDS else f.vectors
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


def _write_fields(w: SnapshotWriter, snapshot: Snapshot, overlay: Overlay, base: str) -> dict[str, dict[str, int]]:
    """Add every field of ``snapshot`` with its overlay folded in to ``w``; per field counts."""
    report: dict[str, dict[str, int]] = {}
    for f in snapshot:
        fo = overlay.fields.get(f.name)
        attrs = {**f.attrs, "folded_from": base, "folded_frames": overlay.sequence}
        if f.kind == "compressed" and (error := drift.baseline(f)) is not None:
            attrs[drift.QUANTISATION_ERROR] = error  # same codebook: the base's fit is the baseline
        bits = f.index.bucket_bits
        if f.kind == "quantised":
            # Takes no updates (store.updates): its stored rows are carried over as they are.
            assert f.vectors is not None
            arrays = {"vectors": np.asarray(f.vectors)}
            if f.scale is not None and f.bias is not None:
                arrays |= {"scale": np.asarray(f.scale), "bias": np.asarray(f.bias)}
            counts = None if f.counts is None else np.asarray(f.counts)
            w.add_quantised_rows(f.name, prefix_keys(f.index), arrays, counts, attrs=attrs, bucket_bits=bits)
            report[f.name] = {"rows_before": f.rows, "updates": 0, "reassigned": 0}
            continue
        keys, values, counts = _merge(f, fo)
        if f.kind == "compressed":
            assert f.codebook is not None
            w.add_compressed_field(f.name, keys, f.codebook, values, counts, attrs=attrs, bucket_bits=bits)
        elif f.kind == "product":
            # Takes no updates (store.updates): its rows are carried over as they are.
            assert f.codebook is not None
            w.add_product_field(f.name, keys, f.codebook, values, counts, attrs=attrs, bucket_bits=bits)
        elif f.kind == "residual":
            # Takes no updates either: carried over as it is. float16 codebooks go in widened
            # and are stored as float16 again: both conversions are exact, so the stored
            # bits and the answers stay the same.
            assert f.codebook is not None
            w.add_residual_field(
                f.name, keys, f.codebook.astype(np.float32), values, counts, attrs=attrs, bucket_bits=bits,
                codebook_dtype=f.codebook.dtype.name,
            )
        else:
            w.add_dense_field(f.name, keys, values, counts, attrs=attrs, bucket_bits=bits)
        report[f.name] = {
            "rows_before": f.rows,
            "updates": 0 if fo is None else fo.pending,
            "reassigned": 0 if fo is None else fo.reassigned,
        }
    return report


def _finish(layout: StoreLayout, version: str, report: dict[str, dict[str, int]], keep: int) -> None:
    for name, f in open_snapshot(layout.snapshot_path(version)).fields.items():
        report[name]["rows_after"] = f.rows
    # The publish pruned while the fold held its base's append lock, which keeps that
    # base's deltas (if the base itself was pruned); now the lock is free.
    layout.prune(keep)


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
    with appends.lock():
        overlay = Overlay(snapshot, str(appends.directory))
        with SnapshotWriter(store, source=source or f"fold of {base} and {overlay.sequence} delta frames", keep=keep) as w:
            report = _write_fields(w, snapshot, overlay, base)
            w.manifest_extra.update(carry.fold_manifest(layout, base, overlay.drift.newest_ms))
            version = w.publish()
    _finish(layout, version, report, keep)
    return FoldResult(base=base, version=version, frames=overlay.sequence, fields=report, seconds=time.perf_counter() - t0)


def fold_remote(
    url: str,
    deltas: str | os.PathLike[str],
    *,
    keep: int = DEFAULT_KEEP,
    source: str = "",
    storage_options: Mapping[str, Any] | None = None,
) -> FoldResult:
    """Fold a store in object storage: its live snapshot plus the deltas kept in a local folder.

    Deltas are never objects: object stores have no append, no fsync and no lock, which is
    what makes an acknowledged update durable. They live in a local folder that mirrors
    the store (``deltas/<base>/`` next to ``snapshots/``): the cache folder of the replica
    that takes the updates, or a folder ``saec update`` writes to. This brings ``deltas``
    up to the store's live snapshot (copied and verified if it lacks it; deltas of an
    older base stop applying, as in a local store), folds, and publishes the result to
    ``url`` with the guarantees of :func:`store.remote.publish_snapshot` (every object
    read back and checked before ``CURRENT`` is replaced) before it becomes current in
    the folder.

    The folder's append lock is held from reading the deltas until both ``CURRENT`` are
    replaced, so an update there is either in the fold or refused afterwards (503, retried
    on the new snapshot).

    Raises:
        StoreError: the store's ``CURRENT`` moved while folding (run again); the folder's
            snapshot lacks fields (a replica serving a share cannot hold a whole fold).
        RemoteStoreError, CorruptSnapshotError: as publish_snapshot; nothing is made live.
    """
    from saec.store import remote

    t0 = time.perf_counter()
    mirror = remote.StoreMirror(url, deltas, keep=keep, storage_options=storage_options)
    base = mirror.sync()
    layout = mirror.layout
    folder = layout.snapshot_path(base)
    snapshot = open_snapshot(folder)
    lacking = sorted(name for name in snapshot.manifest.get("fields", {}) if not (folder / name).is_dir())
    if lacking:
        raise StoreError(
            f"{folder}: expected every field of snapshot {base} to fold, this copy lacks {', '.join(lacking)} "
            f"(a replica serving a share of the fields keeps only its own); give a folder of its own to --deltas"
        )
    appends = DeltaWriter(layout.root, base)
    with appends.lock():
        moved = mirror.remote_current()
        if moved != base or layout.current() != base:
            raise StoreError(f"{url}: expected the live snapshot to stay {base} while folding, it is now {moved}; "
                             f"run the fold again")
        overlay = Overlay(snapshot, str(appends.directory))
        with SnapshotWriter(layout.root, source=source or f"fold of {base} and {overlay.sequence} delta frames",
                            keep=keep) as w:
            report = _write_fields(w, snapshot, overlay, base)
            w.manifest_extra.update(carry.fold_manifest(layout, base, overlay.drift.newest_ms))
            # Into the folder's snapshots/ but not live there: the store at the URL goes first,
            # so a replica mirroring it never finds the folder ahead of the store.
            version = w.publish(make_current=False)
        remote.publish_snapshot(layout.root, version, url, keep=keep, storage_options=storage_options)
        with layout.locked():
            layout.write_current(version)
    _finish(layout, version, report, keep)
    return FoldResult(base=base, version=version, frames=overlay.sequence, fields=report, seconds=time.perf_counter() - t0)
