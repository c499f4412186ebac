"""Drift: how far updates land from their centroid, against how far the snapshot's own rows did.

k-means chose a compressed field's codebook to fit the table it was trained on; its mean
squared distance of a row to its centroid is the snapshot's *quantisation error*, kept in
the field's attributes (``quantisation_error``, written by ``saec compress``; a fold keeps
its base's, the codebook being the same). Updates are assigned to the nearest centroid of
that codebook; when the trainer's vectors move away from it (new features unlike the old,
a shift of scale), their distance to the nearest centroid grows. The ratio of the two
means says when the codebook no longer fits and a fresh ``saec compress`` is due.

:class:`Drift` accumulates, per compressed field, the updates applied to a snapshot and
their summed squared distance to the centroid they were given, computed from each frame's
vectors, masks and the codebook as the overlay applies it (``store.overlay``), so every
update counts, whatever wrote it: HTTP, ``saec update``, a carried one. Sums are float64
and clamped to its largest finite value, so no input makes them infinite or NaN.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from saec.store.deltas import DeltaRecord
from saec.store.snapshot import Field, Snapshot

log = logging.getLogger("saec.drift")

# The field attribute holding the snapshot's own mean squared distance of a row to its centroid.
QUANTISATION_ERROR = "quantisation_error"
# Above this ratio of the updates' mean distance to the snapshot's own, the server warns
# (SAEC_DRIFT_WARN_RATIO), once it has seen at least DEFAULT_MIN_UPDATES updates of the
# field (SAEC_DRIFT_MIN_UPDATES): a handful of outliers is not drift.
DEFAULT_WARN_RATIO = 4.0
DEFAULT_MIN_UPDATES = 1000
_MAX = float(np.finfo(np.float64).max)


def baseline(f: Field) -> float | None:
    """The snapshot's own mean squared distance of a row to its centroid, or None if it was
    not recorded (snapshots written by other tools, or before it was)."""
    value = f.attrs.get(QUANTISATION_ERROR)
    if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
        return float(value)
    inertia = f.attrs.get("inertia")
    # A fold of an older snapshot has more rows than the inertia was summed over.
    if "folded_from" not in f.attrs and isinstance(inertia, int | float) and math.isfinite(inertia) and f.features:
        return float(inertia) / f.features
    return None


class Drift:
    """Per compressed field of one snapshot: updates seen and their summed squared distance.

    Attributes:
        newest_ms: the latest frame time seen (Unix ms), None while no frame had one.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.updates: dict[str, int] = {}
        self.distance: dict[str, float] = {}
        self.newest_ms: int | None = None

    def observe(self, record: DeltaRecord) -> None:
        """Count one frame (called by the overlay for every frame it reads)."""
        if record.time_ms is not None and (self.newest_ms is None or record.time_ms > self.newest_ms):
            self.newest_ms = record.time_ms
        for name, d in record.fields.items():
            f = self.snapshot.fields.get(name)
            if f is None or f.kind != "compressed" or d.masks is None or d.vectors.shape[1] != f.dim:
                continue  # the overlay skips (and logs) a frame that does not fit
            assert f.codebook is not None and f.k is not None
            masks = np.asarray(d.masks).astype(np.int64)
            fits = masks < f.k
            if not fits.all():
                masks = masks[fits]
            vectors = d.vectors if fits.all() else d.vectors[fits]
            diff = vectors.astype(np.float64) - np.take(f.codebook, masks, axis=0).astype(np.float64)
            with np.errstate(over="ignore", invalid="ignore"):
                total = float(np.einsum("ij,ij->", diff, diff))
            if not math.isfinite(total):
                total = _MAX
            self.updates[name] = self.updates.get(name, 0) + int(masks.shape[0])
            self.distance[name] = min(self.distance.get(name, 0.0) + total, _MAX)

    def report(self) -> dict[str, dict[str, Any]]:
        """Per compressed field: updates, their mean squared distance, the snapshot's own
        (baseline) and the ratio of the two (None where either is unknown or 0)."""
        out = {}
        for f in self.snapshot:
            if f.kind != "compressed":
                continue
            n = self.updates.get(f.name, 0)
            mean = self.distance.get(f.name, 0.0) / n if n else None
            base = baseline(f)
            ratio = mean / base if mean is not None and base else None
            out[f.name] = {"updates": n, "mean_distance": mean, "baseline": base,
                           "ratio": None if ratio is None else min(ratio, _MAX)}
        return out


class DriftWarnings:
    """Logs one warning per field and snapshot whose updates drifted past ``ratio``.

    Args:
        ratio: warn when the updates' mean distance exceeds ``ratio`` times the snapshot's own.
        min_updates: and at least this many updates of the field were seen.
        shared_dir: a folder the worker processes of one server share (the metrics folder):
            the first worker to create the marker file of a field and snapshot warns, the
            others do not. None: one process, remembered in memory.
    """

    def __init__(self, ratio: float = DEFAULT_WARN_RATIO, min_updates: int = DEFAULT_MIN_UPDATES,
                 shared_dir: str | None = None) -> None:
        self.ratio = ratio
        self.min_updates = min_updates
        self.shared_dir = shared_dir
        self._warned: set[tuple[str, str]] = set()

    def check(self, version: str, report: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Warn for every field of ``report`` (:meth:`Drift.report`) past the threshold not
        warned about yet; returns those fields."""
        warned = []
        for name, r in report.items():
            ratio = r.get("ratio")
            if ratio is None or ratio <= self.ratio or r["updates"] < self.min_updates:
                continue
            if (version, name) in self._warned:
                continue
            self._warned.add((version, name))
            if not self._claim(version, name):
                continue
            warned.append(name)
            log.warning(
                "field %r of snapshot %s: its %d updates lie %.1fx as far from their centroid as the snapshot's own "
                "rows (mean squared distance %.4g against %.4g; warning above %.1fx): the codebook no longer fits the "
                "trainer's vectors. Compress a fresh checkpoint (saec compress CHECKPOINT --out STORE "
                "--updates-covered-until TIME); a fold would keep this codebook",
                name, version, r["updates"], ratio, r["mean_distance"], r["baseline"], self.ratio,
            )
        return warned

    def _claim(self, version: str, name: str) -> bool:
        if self.shared_dir is None:
            return True
        path = os.path.join(self.shared_dir, f"drift-warned.{version}.{name}")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            return False
        except OSError:
            return True  # cannot share: better twice than never
        return True
