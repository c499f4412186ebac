"""Applying a batch of updates to the live snapshot: check, assign, append durably.

Every way updates come in (``POST /admin/updates``, ``saec update``, later a consumer of
a message queue) goes through :class:`Updater`:

1. :meth:`Updater.prepare` checks the whole batch before anything is written (unknown
   field, wrong vector length, NaN or infinity, ids and vectors of different counts, an
   id twice in one batch, an empty batch: each error names the field and the row) and
   counts which ids are new and which reassign an id the snapshot or an earlier update
   holds;
2. :meth:`Updater.commit` assigns each vector of a compressed field to its nearest
   centroid (``store.assign_index``), appends one frame to the base's delta segments and
   fsyncs it (``store.deltas``). Only then does the caller acknowledge the batch.

The two steps are apart so that a server can run the second, which blocks on the disk,
off its event loop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from saec.store.assign_index import IndexCache, Method
from saec.store.deltas import DeltaWriter, FieldDelta, encode_payload
from saec.store.engine import LookupEngine
from saec.store.errors import EmptyUpdateError, InvalidUpdateError, SupersededError

log = logging.getLogger("saec.updates")

# Largest magnitude of an update's value: a squared distance of such vectors, (2e15)^2 * dim,
# stays finite in float32 up to dim 8e7, so no update turns its field's drift into infinity.
MAX_ABS_VALUE = 1e15


@dataclass(frozen=True)
class FieldReport:
    """What a batch did to one field.

    Attributes:
        distances: float32 (accepted,), squared L2 distance of each vector to the
            centroid it was given (0 for a dense field, which stores the vector itself).
    """

    accepted: int
    new: int
    reassigned: int
    distances: npt.NDArray[np.float32]
    search: str = "none"  # "exact", "hnsw", or "none" for a dense field

    def as_dict(self) -> dict[str, object]:
        d = self.distances
        return {
            "accepted": self.accepted,
            "new": self.new,
            "reassigned": self.reassigned,
            "search": self.search,
            "distance": {
                "mean": float(d.mean()) if d.size else 0.0,
                "p99": float(np.quantile(d, 0.99)) if d.size else 0.0,
            },
        }


@dataclass(frozen=True)
class UpdateResult:
    """The acknowledgement of one batch: it is on disk under ``base`` as frame ``sequence``."""

    base: str
    sequence: int
    fields: dict[str, FieldReport]

    def as_dict(self) -> dict[str, object]:
        return {"base": self.base, "sequence": self.sequence, "fields": {n: r.as_dict() for n, r in self.fields.items()}}


@dataclass(frozen=True)
class PreparedUpdate:
    """A checked batch, not yet assigned or written."""

    fields: dict[str, tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]]
    new: dict[str, int] = field(default_factory=dict)


class Updater:
    """Writes updates on top of one engine's snapshot.

    Args:
        store: the store folder.
        engine: the engine of the snapshot the updates apply to (its overlay, if any,
            tells new ids from reassigned ones).
        method: nearest-centroid search ("auto": exact for small k, HNSW above).
        check_current: refuse once CURRENT names another snapshot.
        on_superseded: called before :class:`SupersededError` is raised (a server reloads).
    """

    def __init__(
        self,
        store: str | os.PathLike[str],
        engine: LookupEngine,
        *,
        method: Method = "auto",
        check_current: bool = True,
        on_superseded: Callable[[], object] | None = None,
    ) -> None:
        self.engine = engine
        self.indexes = IndexCache(method)
        self.writer = DeltaWriter(store, engine.version, check_current=check_current)
        self.on_superseded = on_superseded

    @property
    def base(self) -> str:
        return self.engine.version

    def prepare(self, fields: Mapping[str, tuple[npt.NDArray[np.uint64], npt.ArrayLike]]) -> PreparedUpdate:
        """Check a batch; count new ids.

        Args:
            fields: field -> (uint64 (n,) hashed ids, float32 (n, dim) vectors).
        Raises:
            UnknownFieldError, InvalidUpdateError, EmptyUpdateError.
        """
        if not fields:
            raise EmptyUpdateError('expected at least one field in "fields", got none')
        checked = {}
        for name, (keys, vectors) in fields.items():
            checked[name] = self._check(name, keys, vectors)
        overlay = self.engine.overlay
        if overlay is not None:
            overlay.refresh()
        new = {}
        for name, (keys, _) in checked.items():
            known = self.engine.field(name).index.lookup(keys) >= 0
            if overlay is not None:
                known |= overlay.contains(name, keys)
            new[name] = int((~known).sum())
        return PreparedUpdate(fields=checked, new=new)

    def _check(
        self, name: str, keys: npt.NDArray[np.uint64], vectors: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]:
        f = self.engine.field(name)  # UnknownFieldError
        if f.kind in ("product", "residual"):
            # M or S masks a row: the overlay and fold hold one mask or one float32 row per id.
            raise InvalidUpdateError(
                f"field {name!r}: expected a compressed or float32 dense field, got a {f.kind}-quantised one; "
                "it changes only with a new snapshot"
            )
        if f.kind == "quantised":
            # Its rows are float16 or 8-bit codes with a scale and bias: the overlay and
            # fold write float32 rows, so such a field takes no updates until they do.
            raise InvalidUpdateError(
                f"field {name!r}: expected a compressed or float32 dense field, got a quantised one "
                f"({'int8' if f.scale is not None else 'float16'}); it changes only with a new snapshot"
            )
        keys = np.asarray(keys)
        if keys.ndim != 1 or keys.dtype != np.uint64:
            raise InvalidUpdateError(f"field {name!r}: expected ids as uint64 (n,), got {keys.dtype} {keys.shape}")
        arr = np.asarray(vectors)
        if arr.ndim != 2 or arr.dtype.kind not in "fiu":
            raise InvalidUpdateError(
                f"field {name!r}: expected vectors as float32 (n, {f.dim}), got {arr.dtype} with shape {arr.shape}"
            )
        if arr.shape[0] != keys.shape[0]:
            raise InvalidUpdateError(
                f"field {name!r}: expected one vector per id, got {keys.shape[0]} ids and {arr.shape[0]} vectors"
            )
        if keys.shape[0] == 0:
            raise EmptyUpdateError(f"field {name!r}: expected at least one id, got none")
        if arr.shape[1] != f.dim:
            raise InvalidUpdateError(f"field {name!r}: expected vectors of length {f.dim}, got {arr.shape[1]} (row 0)")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        finite = np.isfinite(arr).all(axis=1)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            raise InvalidUpdateError(f"field {name!r}: expected finite float32 values, row {row} holds NaN or infinity")
        large = np.abs(arr).max(axis=1) > MAX_ABS_VALUE
        if large.any():
            row = int(np.flatnonzero(large)[0])
            raise InvalidUpdateError(
                f"field {name!r}: expected values within +-{MAX_ABS_VALUE:.0e} (their squared distances must stay finite "
                f"in float32), row {row} holds {float(np.abs(arr[row]).max()):.3g}"
            )
        order = np.argsort(keys, kind="stable")
        same = np.flatnonzero(keys[order][1:] == keys[order][:-1])
        if same.size:
            first, second = sorted(int(r) for r in order[same[0] : same[0] + 2])
            raise InvalidUpdateError(
                f"field {name!r}: expected each id once per batch, row {second} repeats the id of row {first}"
            )
        return keys, arr

    def commit(self, prepared: PreparedUpdate) -> UpdateResult:
        """Assign, append one frame and fsync it; returns the acknowledgement.

        Raises:
            SupersededError: the snapshot is no longer live (nothing was written).
        """
        deltas: dict[str, FieldDelta] = {}
        reports = {}
        for name, (keys, vectors) in prepared.fields.items():
            f = self.engine.field(name)
            if f.kind == "compressed":
                assert f.codebook is not None and f.masks is not None
                index = self.indexes.get(name, f.codebook)
                assignment = index.assign(vectors)
                masks = assignment.masks.astype(f.masks.dtype)
                distances = assignment.distances
                search = index.method
            else:
                masks = None
                distances = np.zeros(keys.shape[0], np.float32)
                search = "none"
            deltas[name] = FieldDelta(keys=keys, vectors=vectors, masks=masks)
            new = prepared.new.get(name, 0)
            reports[name] = FieldReport(keys.shape[0], new, keys.shape[0] - new, distances, search)
        payload = encode_payload(deltas)
        try:
            with self.writer.lock():
                sequence = self.writer.append_locked(payload)
        except SupersededError:
            if self.on_superseded is not None:
                self.on_superseded()
            raise
        return UpdateResult(base=self.base, sequence=sequence, fields=reports)

    def apply(self, fields: Mapping[str, tuple[npt.NDArray[np.uint64], npt.ArrayLike]]) -> UpdateResult:
        """:meth:`prepare` then :meth:`commit`."""
        return self.commit(self.prepare(fields))
