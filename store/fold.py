"""Folding: the live snapshot plus its pending updates, published as the next snapshot.

No re-clustering: codebooks stay as they are, each field's keys, masks (or vectors),
counts and key index are rebuilt from the base and its delta frames, and the result is
published through :class:`SnapshotWriter` like any snapshot.

A snapshot keeps a key only to its bucket bits, its 16-bit fingerprint and the 16 bits
after it (``fold_bits``, read only here), so the base's rows go into the fold as *prefix
keys* (those bits, zeros below). The fold grows the bucket bits when the rows per bucket
pass the key index's design target (``keyindex.bucket_bits_for``), by at most as many
bits as the base rows' keys are known past their fingerprint, so that every base id
still finds its row and false matches and probe cost stay those of a fresh snapshot
(docs/FORMAT.md); the manifest's field ``attrs.fold_bits_known`` says how many of the 16
are real (16 from ``saec compress``; a fold that grows by g bits leaves 16 - g; snapshots
written before fold bits existed: 0, so their folds keep the base's bucket bits).
Reassignments are already in the rows (the overlay writes them there, as the live
lookups read them); ids new to the snapshot get rows of their own.

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
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from saec.store import carry, drift
from saec.store._files import read_regular
from saec.store.deltas import DeltaRecord, DeltaWriter, check_log, read_all
from saec.store.errors import StoreError
from saec.store.keyindex import BLOCK_BITS, FINGERPRINT_BITS, KeyIndex, bucket_bits_for
from saec.store.layout import StoreLayout
from saec.store.overlay import FieldOverlay, Overlay, frame_fits
from saec.store.snapshot import CODEBOOK_KINDS, Field, Snapshot, chunk_path, open_snapshot
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


def known_keys(f: Field, root: str | os.PathLike[str]) -> tuple[npt.NDArray[np.uint64], int]:
    """uint64 (rows,) prefix keys of a field's rows with their fold bits in, and how many of
    the 16 fold bits are real (0 for a snapshot without them)."""
    keys = prefix_keys(f.index)
    info = f.arrays.get("fold_bits")
    known = int(f.attrs.get("fold_bits_known", FINGERPRINT_BITS)) if info is not None else 0
    known = max(0, min(known, FINGERPRINT_BITS))
    if info is None or known == 0 or f.rows == 0:
        return keys, 0
    raw = read_regular(chunk_path(Path(root) / info.path, 1), limit=2 * f.rows)
    if len(raw) != 2 * f.rows:
        raise StoreError(f"{info.path}: expected {2 * f.rows} bytes of fold bits, found {len(raw)}")
    ext = np.frombuffer(raw, dtype="<u2").astype(np.uint64)
    ext &= np.uint64((0xFFFF << (FINGERPRINT_BITS - known)) & 0xFFFF)  # only the real ones
    shift = 64 - f.index.bucket_bits - 2 * FINGERPRINT_BITS
    keys |= ext << np.uint64(shift) if shift >= 0 else ext >> np.uint64(-shift)
    return keys, known


def grown_bits(bits: int, known: int, rows: int) -> int:
    """The bucket bits of a folded field of ``rows`` rows whose base has ``bits`` and keys
    known ``known`` bits past the fingerprint: the design target, within what is known."""
    return max(bits, min(bucket_bits_for(rows), bits + known))


def _merge(
    f: Field, fo: FieldOverlay | None, base_keys: npt.NDArray[np.uint64]
) -> tuple[npt.NDArray[np.uint64], npt.NDArray, npt.NDArray | None]:
    """Keys, values (masks or vectors) and counts of a folded field: every base row (with
    its reassignments), then the ids new to the snapshot."""
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


def _merge_grown(
    f: Field, base_keys: npt.NDArray[np.uint64], known: int, records: list[DeltaRecord]
) -> tuple[npt.NDArray[np.uint64], npt.NDArray, npt.NDArray | None]:
    """:func:`_merge` for a fold that grows the bucket bits, from the frames themselves.

    The overlay applies an update whose key matches a stored row's bucket and fingerprint
    to that row (it cannot tell them apart). With more bits, it can: an update whose key
    agrees with the row's known bits is that row's; one that does not (a false match of
    the smaller index) gets a row of its own, and the row keeps its own value.
    """
    stored = f.masks if f.kind in CODEBOOK_KINDS else f.vectors
    assert stored is not None
    values = np.array(stored)
    counts = None if f.counts is None else np.asarray(f.counts)
    keys_in, values_in = [], []
    for r in records:
        d = r.fields.get(f.name)
        if d is not None and frame_fits(f, d):
            keys_in.append(d.keys)
            values_in.append(d.masks if d.masks is not None else d.vectors)
    if not keys_in:
        return base_keys, values, counts
    k, v = np.concatenate(keys_in), np.concatenate(values_in)
    # The last write of each key, in the order written.
    uk, first = np.unique(k[::-1], return_index=True)
    last = np.sort(k.shape[0] - 1 - first)
    uk, uv = k[last], v[last]
    rows = f.index.lookup(uk)
    own = rows >= 0
    shift = np.uint64(64 - f.index.bucket_bits - FINGERPRINT_BITS - known)
    own[own] = (uk[own] >> shift) == (base_keys[rows[own]] >> shift)
    values[rows[own]] = uv[own]
    keys = np.concatenate([base_keys, uk[~own]])
    values = np.concatenate([values, uv[~own]])
    if counts is not None:
        counts = np.concatenate([counts, np.zeros(int((~own).sum()), counts.dtype)])
    return keys, values, counts


def _write_fields(
    w: SnapshotWriter, snapshot: Snapshot, overlay: Overlay, base: str, records: list[DeltaRecord]
) -> dict[str, dict[str, int]]:
    """Add every field of ``snapshot`` with its overlay folded in to ``w``; per field counts.

    Args:
        records: the frames the overlay holds (read for a field whose bucket bits grow).
    """
    report: dict[str, dict[str, int]] = {}
    for f in snapshot:
        fo = overlay.fields.get(f.name)
        base_keys, known = known_keys(f, snapshot.path)
        rows = f.rows + (0 if fo is None else fo.n)
        bits = grown_bits(f.index.bucket_bits, known, rows) if f.kind in ("compressed", "dense") else f.index.bucket_bits
        # Bits past the fingerprint still known of every row: all 16 when there are no base rows.
        attrs = {
            **f.attrs, "folded_from": base, "folded_frames": overlay.sequence,
            "fold_bits_known": known - (bits - f.index.bucket_bits) if f.rows else FINGERPRINT_BITS,
        }
        if f.kind == "compressed" and (error := drift.baseline(f)) is not None:
            attrs[drift.QUANTISATION_ERROR] = error  # same codebook: the base's fit is the baseline
        if f.kind == "quantised":
            # Takes no updates (store.updates): its stored rows are carried over as they are.
            assert f.vectors is not None
            arrays = {"vectors": np.asarray(f.vectors)}
            if f.scale is not None and f.bias is not None:
                arrays |= {"scale": np.asarray(f.scale), "bias": np.asarray(f.bias)}
            counts = None if f.counts is None else np.asarray(f.counts)
            w.add_quantised_rows(f.name, base_keys, arrays, counts, attrs=attrs, bucket_bits=bits)
            report[f.name] = {"rows_before": f.rows, "updates": 0, "reassigned": 0}
            continue
        if bits > f.index.bucket_bits and f.rows:
            keys, values, counts = _merge_grown(f, base_keys, known, records)
        else:
            keys, values, counts = _merge(f, fo, base_keys)
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


def fold(store: str | os.PathLike[str], *, keep: int = DEFAULT_KEEP, source: str = "", repair: bool = False) -> FoldResult:
    """Publish the live snapshot plus its deltas as a new live snapshot.

    Args:
        repair: rewrite damaged delta segments with their intact frames first
            (``store.deltas.repair``); without it a damaged log is refused.

    Returns:
        The new version, the frames folded and per field the rows before and after.
    Raises:
        DamagedDeltaLogError: the log has damage and ``repair`` is False (nothing published).
    """
    t0 = time.perf_counter()
    layout = StoreLayout(store)
    base = layout.current()
    snapshot = open_snapshot(layout.snapshot_path(base))
    appends = DeltaWriter(store, base)
    with appends.lock():
        check_log(appends.directory, repair_it=repair)
        overlay = Overlay(snapshot, str(appends.directory))
        records = read_all(appends.directory)
        with SnapshotWriter(store, source=source or f"fold of {base} and {overlay.sequence} delta frames", keep=keep) as w:
            report = _write_fields(w, snapshot, overlay, base, records)
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
    repair: bool = False,
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
        check_log(appends.directory, repair_it=repair)
        overlay = Overlay(snapshot, str(appends.directory))
        records = read_all(appends.directory)
        with SnapshotWriter(layout.root, source=source or f"fold of {base} and {overlay.sequence} delta frames",
                            keep=keep) as w:
            report = _write_fields(w, snapshot, overlay, base, records)
            w.manifest_extra.update(carry.fold_manifest(layout, base, overlay.drift.newest_ms))
            # Into the folder's snapshots/ but not live there: the store at the URL goes first,
            # so a replica mirroring it never finds the folder ahead of the store.
            version = w.publish(make_current=False)
        remote.publish_snapshot(layout.root, version, url, keep=keep, storage_options=storage_options)
        with layout.locked():
            layout.write_current(version)
    _finish(layout, version, report, keep)
    return FoldResult(base=base, version=version, frames=overlay.sequence, fields=report, seconds=time.perf_counter() - t0)
