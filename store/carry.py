"""Carrying pending updates across a publish: nothing acknowledged is lost by a new snapshot.

A store's pending updates live in the delta log of the snapshot they were written on
(``store.deltas``). A fold publishes them inside the next snapshot; a fresh ``saec
compress`` of the trainer's checkpoint does not: the checkpoint holds the updates the
trainer had made when it was exported, and not those that came later (or from
elsewhere). So every snapshot's manifest records the *watermark* it covers::

    "updates_covered_until_ms": 1764633600000     updates written at or before this time
                                                  (Unix ms, a frame's "t") are in it; null: none
    "checkpoint_covered_until_ms": ...            the same for the checkpoint it grew from
                                                  (a fold keeps its base's)

and at publication every update the new snapshot does not cover is re-appended to the new
snapshot's own delta log, re-assigned to its codebooks, keeping its time and source
(:func:`publish`). What ``saec compress`` covers is declared by the trainer
(``--updates-covered-until``); the default covers nothing new: the watermark of the
checkpoint the live snapshot grew from, so every pending update is carried and the last
write wins over the checkpoint's row of the same id. A frame without a time (written by
an earlier release) is covered by no watermark.

Which logs hold the uncovered updates: the live snapshot's, and, when the live snapshot
is a fold, its base's, back to the last snapshot that was not a fold (a fold holds its
base's updates in its rows, which a fresh checkpoint replaces). They are read oldest
first, so a later write of an id wins.

What cannot be carried is dropped on purpose, counted per field, logged, and recorded in
the new manifest (``updates_dropped``): a field the new snapshot lacks, whose dimension
changed, or that became a field that takes no updates (product, residual, quantised).
Carried and covered rows are recorded too (``updates_carried``, ``updates_covered``).

The carry happens in two passes. The first reads and re-assigns everything in the logs
and appends it to the new log without any lock (assignment against a large codebook
takes time). The second takes the live snapshot's append lock (``store.deltas``), carries
what was appended meanwhile, and keeps the lock while CURRENT switches (lock order: the
deltas lock, then the store lock, as ``store.fold``). An update arriving then waits for
the lock and is refused as superseded (503); the clients retry it on the new snapshot.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from saec.store.assign_index import CentroidIndex
from saec.store.deltas import DeltaReader, DeltaRecord, DeltaWriter, FieldDelta, deltas_dir, encode_payload
from saec.store.errors import BadCurrentError, StoreError
from saec.store.layout import StoreLayout
from saec.store.snapshot import MANIFEST_KEY, chunk_path
from saec.store.writer import SnapshotWriter

log = logging.getLogger("saec.carry")

WATERMARK = "updates_covered_until_ms"
CHECKPOINT_WATERMARK = "checkpoint_covered_until_ms"
CARRIED = "updates_carried"
COVERED = "updates_covered"
DROPPED = "updates_dropped"
# What a manifest says about the updates it covers and carried (GET /snapshot shows them).
MANIFEST_KEYS = (WATERMARK, CHECKPOINT_WATERMARK, CARRIED, COVERED, DROPPED, "carried_from", "not_read", "folded_from")
# Rows re-assigned in one batch: bounds the carry's memory beyond the frames it reads.
CHUNK_ROWS = 1 << 20
# Publish attempts when CURRENT moves between the two passes (another publish won).
ATTEMPTS = 3


class WatermarkError(StoreError, ValueError):
    """A watermark that is not a time this store can use."""


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()


def parse_watermark(text: str, *, now_ms: int | None = None) -> int | None:
    """A watermark from the command line: ISO-8601 time (no zone: UTC), Unix seconds, or ``none``.

    Returns:
        Unix milliseconds, or None for ``none`` (the checkpoint covers no update).
    Raises:
        WatermarkError: not one of those, or later than now (updates yet to come cannot be
            in a checkpoint; a later watermark would drop them at the next publish).
    """
    raw = text.strip()
    if raw.lower() == "none":
        return None
    try:
        # Decimal: "1764633600.123" is 1764633600123 ms exactly (a float would make it ...122).
        seconds = Decimal(raw)
    except InvalidOperation:
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00") if raw.endswith("Z") else raw)
        except ValueError:
            raise WatermarkError(
                f"--updates-covered-until: expected an ISO-8601 time (2026-12-07T17:00:00Z), Unix seconds or "
                f"'none', got {text!r}"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = Decimal(int(when.timestamp() * 1_000_000)) / 1_000_000
    if not seconds.is_finite() or seconds < 0:
        raise WatermarkError(f"--updates-covered-until: expected a time after 1970, got {text!r}")
    # Below a millisecond is cut off: the watermark then covers a little less, never more.
    ms = int(seconds * 1000)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if ms > now:
        raise WatermarkError(
            f"--updates-covered-until: expected a time no later than now ({iso(now)}), got {iso(ms)}: "
            "updates written after now cannot be in the checkpoint"
        )
    return ms


def iso(ms: object) -> str:
    """A watermark as ISO-8601 UTC, or 'none'."""
    ms = _time(ms)
    if ms is None:
        return "none"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_manifest(layout: StoreLayout, version: str) -> dict[str, Any] | None:
    """The manifest of a published snapshot, or None if it is gone (pruned)."""
    try:
        doc = orjson.loads((layout.snapshot_path(version) / "zarr.json").read_bytes())
        manifest = doc["attributes"][MANIFEST_KEY]
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (KeyError, TypeError, orjson.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _time(value: object) -> int | None:
    return value if type(value) is int and value >= 0 else None


def checkpoint_watermark(manifest: Mapping[str, Any]) -> int | None:
    """What the checkpoint a snapshot grew from covers (a fold keeps its base's)."""
    if CHECKPOINT_WATERMARK in manifest:
        return _time(manifest[CHECKPOINT_WATERMARK])
    return _time(manifest.get(WATERMARK))


def folded_from(manifest: Mapping[str, Any]) -> str | None:
    """The base a fold was made from; None for any other snapshot."""
    base = manifest.get("folded_from")
    if isinstance(base, str):
        return base
    for spec in manifest.get("fields", {}).values():  # folds of earlier releases said it per field
        base = spec.get("attrs", {}).get("folded_from") if isinstance(spec, dict) else None
        if isinstance(base, str):
            return base
    return None


def uncovered_logs(layout: StoreLayout, live: str) -> tuple[list[str], list[str]]:
    """The bases whose delta logs hold updates a fresh checkpoint may lack, oldest first,
    and the bases that should have been read but are gone (pruned, with their deltas)."""
    bases = [live]
    gone: list[str] = []
    version = live
    for _ in range(len(layout.versions()) + 1):
        manifest = read_manifest(layout, version)
        base = None if manifest is None else folded_from(manifest)
        if base is None or base in bases:
            break
        if read_manifest(layout, base) is None and not deltas_dir(layout.root, base).is_dir():
            gone.append(base)
            break
        bases.insert(0, base)
        version = base
    return bases, gone


@dataclass(frozen=True)
class Target:
    """What a field of the new snapshot takes: its kind, dimension and (compressed) codebook."""

    kind: str
    dim: int
    codebook: npt.NDArray[np.float32] | None = None
    mask_dtype: np.dtype | None = None


def targets_of(writer: SnapshotWriter) -> dict[str, Target]:
    """Per field of a snapshot being written, what an update of it becomes (codebooks read
    from the written files)."""
    out = {}
    for name, spec in writer.field_specs.items():
        kind, dim = spec["kind"], int(spec["dim"])
        if kind == "compressed":
            k = int(spec["k"])
            raw = np.fromfile(chunk_path(writer.path / name / "codebook", 2), dtype="<f4")
            out[name] = Target(kind, dim, raw.reshape(k, dim).astype(np.float32, copy=False),
                               np.dtype(np.uint8 if k <= 256 else np.uint16))
        else:
            out[name] = Target(kind, dim)
    return out


def _why_not(name: str, d: FieldDelta, target: Target | None) -> str | None:
    if target is None:
        return "the field is not in the new snapshot"
    if d.vectors.shape[1] != target.dim:
        return f"the field's dimension changed from {d.vectors.shape[1]} to {target.dim}"
    if target.kind not in ("compressed", "dense"):
        return f"the field is now {target.kind}, which takes no updates"
    return None


@dataclass
class CarryReport:
    """What a publish did with the pending updates (rows per field)."""

    watermark_ms: int | None
    checkpoint_ms: int | None
    bases: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    frames_read: int = 0
    frames_carried: int = 0
    carried: dict[str, int] = field(default_factory=dict)
    covered: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0  # the first pass, no lock held
    locked_seconds: float = 0.0  # the second pass and the switch, holding the live base's append lock

    def manifest(self) -> dict[str, Any]:
        """The manifest's entries (see the module docstring)."""
        return {
            WATERMARK: self.watermark_ms,
            CHECKPOINT_WATERMARK: self.checkpoint_ms,
            CARRIED: dict(self.carried),
            COVERED: dict(self.covered),
            DROPPED: {name: dict(d) for name, d in self.dropped.items()},
            "carried_from": list(self.bases),
            "not_read": list(self.gone),
        }

    def lines(self) -> list[str]:
        """What ``saec compress`` prints about the updates."""
        out = [f"updates covered by this checkpoint: until {iso(self.watermark_ms)}"]
        if not self.bases:
            return out
        rows = sum(self.carried.values())
        out.append(
            f"carried {rows:,} pending update(s) in {self.frames_carried:,} of {self.frames_read:,} frame(s) "
            f"from {', '.join(self.bases)}"
            + (": " + ", ".join(f"{n} {c:,}" for n, c in self.carried.items()) if self.carried else "")
        )
        if self.covered:
            out.append("covered by the checkpoint (not carried): " + ", ".join(f"{n} {c:,}" for n, c in self.covered.items()))
        for name, d in self.dropped.items():
            out.append(f"DROPPED {d['rows']:,} update(s) of field {name!r}: {d['reason']}")
        for base in self.gone:
            out.append(f"NOT READ: the updates of {base} (folded into a later snapshot) are gone with it (pruned)")
        out.append(f"carrying took {self.seconds:.2f} s, then {self.locked_seconds * 1000:.0f} ms holding the append "
                   "lock to the switch (updates arriving meanwhile waited, then were retried on the new snapshot)")
        return out


class _Carrier:
    """Reads the uncovered logs and appends what they hold to the new snapshot's log."""

    def __init__(self, layout: StoreLayout, version: str, live: str, report: CarryReport,
                 targets: Mapping[str, Target]) -> None:
        self.layout = layout
        self.version = version
        self.report = report
        self.targets = targets
        bases, gone = uncovered_logs(layout, live)
        report.bases, report.gone = bases, gone
        self.readers = [DeltaReader(deltas_dir(layout.root, b)) for b in bases]
        self.writer = DeltaWriter(layout.root, version, check_current=False)
        self._indexes: dict[str, CentroidIndex] = {}

    def index(self, name: str, codebook: npt.NDArray[np.float32]) -> CentroidIndex:
        index = self._indexes.get(name)
        if index is None:
            index = self._indexes[name] = CentroidIndex(codebook)
        return index

    def carry_pending(self) -> None:
        """Carry every frame appended to the logs since the last call, in order, in groups
        of about ``CHUNK_ROWS`` rows (one assignment batch per field and group)."""
        for reader in self.readers:
            records = reader.poll()
            self.report.frames_read += len(records)
            group: list[DeltaRecord] = []
            rows = 0
            for r in records:
                group.append(r)
                rows += sum(int(d.keys.shape[0]) for d in r.fields.values())
                if rows >= CHUNK_ROWS:
                    self._append(carry_records(group, self.report, self.targets, self.index))
                    group, rows = [], 0
            if group:
                self._append(carry_records(group, self.report, self.targets, self.index))

    def _append(self, frames: list[tuple[dict[str, FieldDelta], int | None, str | None]]) -> None:
        """Append to the new log; the caller holds its lock (:func:`publish` does throughout)."""
        for fields, time_ms, source in frames:
            # A frame without a time gets now's: later than the truth, so a watermark
            # that covers it covers the truth too.
            self.writer.append_locked(encode_payload(fields, time_ms=time_ms, source=source))
        self.report.frames_carried += len(frames)

    def discard(self) -> None:
        shutil.rmtree(self.writer.directory, ignore_errors=True)


def carry_records(
    records: list[DeltaRecord],
    report: CarryReport,
    targets: Mapping[str, Target],
    index: Callable[[str, npt.NDArray[np.float32]], CentroidIndex],
) -> list[tuple[dict[str, FieldDelta], int | None, str | None]]:
    """The frames to append for ``records``: each uncovered frame's fields that the new
    snapshot takes, vectors re-assigned to its codebooks (one batch per field over all
    frames); counts go to ``report``.

    Returns:
        [(fields, time_ms, source)] in the records' order.
    """
    watermark = report.watermark_ms
    kept: list[tuple[DeltaRecord, list[str]]] = []
    pending: dict[str, list[npt.NDArray[np.float32]]] = {}
    for r in records:
        covered = watermark is not None and r.time_ms is not None and r.time_ms <= watermark
        names = []
        for name, d in r.fields.items():
            rows = int(d.keys.shape[0])
            if covered:
                report.covered[name] = report.covered.get(name, 0) + rows
                continue
            why = _why_not(name, d, targets.get(name))
            if why is not None:
                drop = report.dropped.setdefault(name, {"rows": 0, "reason": why})
                drop["rows"] += rows
                continue
            names.append(name)
            if targets[name].kind == "compressed":
                pending.setdefault(name, []).append(d.vectors)
        if names:
            kept.append((r, names))
    masks: dict[str, npt.NDArray[np.unsignedinteger]] = {}
    for name, parts in pending.items():
        target = targets[name]
        assert target.codebook is not None and target.mask_dtype is not None
        vectors = np.concatenate(parts) if len(parts) > 1 else np.asarray(parts[0])
        masks[name] = index(name, target.codebook).nearest(vectors).astype(target.mask_dtype)
    offsets = dict.fromkeys(masks, 0)
    out = []
    for r, names in kept:
        fields = {}
        for name in names:
            d = r.fields[name]
            n = int(d.keys.shape[0])
            m = None
            if name in masks:
                m = masks[name][offsets[name] : offsets[name] + n]
                offsets[name] += n
            fields[name] = FieldDelta(keys=d.keys, vectors=d.vectors, masks=m)
            report.carried[name] = report.carried.get(name, 0) + n
        out.append((fields, r.time_ms, r.source))
    return out


def _log(version: str, report: CarryReport) -> None:
    log.info("snapshot %s: carrying took %.2f s, then %.0f ms holding the append lock of %s to the switch", version,
             report.seconds, report.locked_seconds * 1000, report.bases[-1] if report.bases else "-")
    for name, rows in report.carried.items():
        log.info("snapshot %s: carried %d pending update(s) of field %r from %s", version, rows, name,
                 ", ".join(report.bases))
    for name, rows in report.covered.items():
        log.info("snapshot %s: %d update(s) of field %r are covered by its checkpoint (until %s), not carried",
                 version, rows, name, iso(report.watermark_ms))
    for name, d in report.dropped.items():
        log.warning("snapshot %s: dropped %d pending update(s) of field %r: %s", version, d["rows"], name, d["reason"])
    for base in report.gone:
        log.warning("snapshot %s: the updates folded from %s cannot be carried: that snapshot and its deltas were "
                    "pruned (raise --keep)", version, base)


def _live(layout: StoreLayout) -> str | None:
    """The live version, None when there is none, or when CURRENT is damaged: then no log
    can be told pending (the publish repairs CURRENT, and says so)."""
    try:
        return layout.current_or_none()
    except BadCurrentError as exc:
        log.warning("CURRENT is damaged (%s): no pending updates can be found to carry into the new snapshot", exc)
        return None


def fold_manifest(layout: StoreLayout, base: str, newest_ms: int | None) -> dict[str, Any]:
    """The manifest entries of a fold of ``base`` whose newest folded frame was written at
    ``newest_ms``: it covers what its base covered and every update it folded, and nothing
    was carried (the fold holds the base's append lock from reading its deltas to the switch)."""
    manifest = read_manifest(layout, base) or {}
    times = [t for t in (_time(manifest.get(WATERMARK)), newest_ms) if t is not None]
    report = CarryReport(watermark_ms=max(times) if times else None, checkpoint_ms=checkpoint_watermark(manifest))
    return {**report.manifest(), "folded_from": base}


def publish(
    writer: SnapshotWriter,
    *,
    covered_until: int | None = DEFAULT,
    make_current: bool = True,
    switch: Callable[[str], None] | None = None,
) -> tuple[str, CarryReport]:
    """Publish ``writer``'s snapshot, carrying every pending update it does not cover.

    Args:
        writer: a snapshot with all its fields added.
        covered_until: the watermark (Unix ms) of the checkpoint it was made from; None: it
            covers no update; DEFAULT: the watermark of the checkpoint the live snapshot
            grew from (covers nothing new).
        make_current: as :meth:`SnapshotWriter.publish`.
        switch: called with the version once it is published, still under the live
            snapshot's append lock (a store at a URL: upload it and move CURRENT there).

    Returns:
        The version and what happened to the pending updates.
    Raises:
        StoreError: CURRENT kept moving while this publish tried to switch it.
        StaleSnapshotError, CorruptSnapshotError: as :meth:`SnapshotWriter.publish`.
    """
    layout = writer.layout
    writer.seal()  # reading the arrays back happens before any lock is taken
    targets = targets_of(writer)
    for _ in range(ATTEMPTS):
        live = _live(layout)
        live_manifest = None if live is None else read_manifest(layout, live)
        checkpoint = None if live_manifest is None else checkpoint_watermark(live_manifest)
        watermark = checkpoint if covered_until is DEFAULT else covered_until
        report = CarryReport(watermark_ms=watermark, checkpoint_ms=watermark)
        if live is None:
            writer.manifest_extra.update(report.manifest())
            version = writer.publish(make_current=make_current)
            if switch is not None:
                switch(version)
            return version, report
        if checkpoint is not None and (watermark is None or watermark < checkpoint):
            log.warning("the new checkpoint covers updates until %s, the live one until %s: updates between the two "
                        "were not kept in any delta log (the live checkpoint held them) and are in neither",
                        iso(watermark), iso(checkpoint))
        t0 = time.perf_counter()
        carrier = _Carrier(layout, writer.version, live, report, targets)
        published = False
        try:
            # The new log's lock, held to the end: until the snapshot is published, a prune
            # (of another publish) would take its deltas for those of a snapshot that is gone.
            # Lock order: the new log's, the live one's, the store's.
            with carrier.writer.lock():
                carrier.carry_pending()
                version = _switch(layout, writer, live, carrier, make_current, switch, t0)
                if version is None:
                    carrier.discard()
                    continue
                published = True
        finally:
            if not published and not writer.published:
                carrier.discard()
        _log(version, report)
        layout.prune(writer.keep)  # the publish's prune left the base's deltas while their lock was held
        return version, report
    raise StoreError(f"{layout.root}: expected CURRENT to stay put while publishing, it moved {ATTEMPTS} times; "
                     "run the publish again")


def _switch(layout: StoreLayout, writer: SnapshotWriter, live: str, carrier: _Carrier, make_current: bool,
            switch: Callable[[str], None] | None, t0: float) -> str | None:
    """The second pass and the switch, under the live snapshot's append lock; None if
    CURRENT no longer names ``live`` (another publish won: start over)."""
    report = carrier.report
    with DeltaWriter(layout.root, live, check_current=False).lock():
        t1 = time.perf_counter()
        report.seconds = t1 - t0
        if _live(layout) != live:
            return None
        carrier.carry_pending()
        writer.manifest_extra.update(report.manifest())
        version = writer.publish(make_current=make_current)
        if switch is not None:
            switch(version)
    report.locked_seconds = time.perf_counter() - t1
    return version
