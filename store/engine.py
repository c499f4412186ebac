"""The lookup engine: hashed ids of several fields in, float32 rows and found flags out.

It knows nothing of HTTP. It holds one open snapshot; swapping snapshots is the job of
``store.live``, which hands each request the engine of the snapshot it started on.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from saec.store import _kernels, _pq, _rq
from saec.store.errors import BatchTooLargeError, InvalidIdsError, UnknownFieldError
from saec.store.keyindex import BLOCK_BITS
from saec.store.snapshot import Field, Snapshot

if TYPE_CHECKING:
    from saec.store.overlay import Overlay

DefaultVector = Literal["zeros", "mean"]


@functools.cache
def _no_additions(dtype: npt.DTypeLike, dim: int = 0) -> tuple:
    """The kernels' added-ids arguments for a field without updates: a two-word all-zero
    filter answers "none" for every key (shift 63 reads word 0 or 1), so the table is never read.

    Same array types as a real overlay's (writable, C order), so numba compiles no extra signature.
    """
    values = np.zeros((1, dim) if dim else 1, dtype)
    return np.zeros(2, np.uint64), 63, np.zeros(1, np.uint64), np.full(1, -1, np.int64), values


@dataclass(frozen=True)
class FieldResult:
    """One field's answer.

    Attributes:
        vectors: float32 (n, dim); the field's default vector where not found.
        found: bool (n,).
        rows: int64 (n,): the row of the field's table that answered each id (a compressed
            field's codebook row, a dense field's stored row), -1 where not found; lets a
            renderer reuse per-row work, e.g. the JSON text of a codebook row. None where
            some answers came from elsewhere (a dense field with pending updates).
    """

    vectors: npt.NDArray[np.float32]
    found: npt.NDArray[np.bool_]
    rows: npt.NDArray[np.int64] | None = None


@dataclass(frozen=True)
class LookupResult:
    """The answer to one multi-field lookup, and the snapshot version that gave it."""

    version: str
    fields: dict[str, FieldResult]


class LookupEngine:
    """Looks up hashed ids in one open snapshot.

    Args:
        snapshot: an open snapshot (memory-mapped).
        default: vector for unseen ids: "zeros" or the field's "mean".
        max_ids: limit on ids in one lookup, summed over fields (0: no limit).
        overlay: pending updates of this snapshot (``store.overlay``), refreshed from
            its delta segments at the start of every lookup; None: the snapshot alone.
    """

    def __init__(
        self, snapshot: Snapshot, *, default: DefaultVector = "zeros", max_ids: int = 0, overlay: Overlay | None = None
    ) -> None:
        if default not in ("zeros", "mean"):
            raise ValueError(f"expected default 'zeros' or 'mean', got {default!r}")
        self.snapshot = snapshot
        self.max_ids = max_ids
        self.default = default
        self.overlay = overlay
        self._defaults = {
            f.name: (np.array(f.mean, dtype=np.float32) if default == "mean" else np.zeros(f.dim, np.float32))
            for f in snapshot
        }

    @property
    def version(self) -> str:
        return self.snapshot.version

    def default_vector(self, name: str) -> npt.NDArray[np.float32]:
        """float32 (dim,): what an unseen id of field ``name`` answers."""
        self.field(name)
        return self._defaults[name]

    def field(self, name: str) -> Field:
        try:
            return self.snapshot.fields[name]
        except KeyError:
            known = ", ".join(sorted(self.snapshot.fields)) or "none"
            if name in self.snapshot.manifest.get("fields", {}):
                # A replica serving a share of the fields (saec serve --fields).
                raise UnknownFieldError(
                    f"unknown field {name!r}: this server serves {known} of snapshot {self.version}; "
                    f"{name!r} is served by another replica"
                ) from None
            # A name of any length may come in; the answer shows its start only.
            shown = repr(name) if len(name) <= 100 else f"{name[:100]!r}... ({len(name)} characters)"
            raise UnknownFieldError(f"unknown field {shown}: snapshot {self.version} holds {known}") from None

    def check(self, request: Mapping[str, npt.NDArray[np.uint64]]) -> None:
        """Raise the error a lookup of ``request`` would raise, before any work."""
        total = 0
        for name, keys in request.items():
            self.field(name)
            if not isinstance(keys, np.ndarray) or keys.dtype != np.uint64 or keys.ndim != 1:
                got = f"{keys.dtype} {keys.shape}" if isinstance(keys, np.ndarray) else type(keys).__name__
                raise InvalidIdsError(f"field {name!r}: expected hashed ids as uint64 (n,), got {got}")
            total += keys.shape[0]
        if self.max_ids and total > self.max_ids:
            raise BatchTooLargeError(f"expected at most {self.max_ids} ids in one lookup, got {total}")

    def lookup(self, request: Mapping[str, npt.NDArray[np.uint64]]) -> LookupResult:
        """Vectors of hashed ids, per field.

        Args:
            request: field name -> uint64 (n,) hashed ids.
        Returns:
            Per field float32 (n, dim) vectors and bool (n,) found flags.
        Raises:
            UnknownFieldError, InvalidIdsError, BatchTooLargeError.
        """
        self.check(request)
        if self.overlay is None:
            return LookupResult(
                version=self.version, fields={name: self._lookup_field(name, keys) for name, keys in request.items()}
            )
        # One lstat() of the segment when nothing was appended: how an update made
        # through another worker or process is visible here before we answer.
        self.overlay.refresh()
        # Every field under one shared hold of the overlay's lock: a batch is seen whole.
        with self.overlay.lock.shared():
            return LookupResult(
                version=self.version, fields={name: self._lookup_field(name, keys) for name, keys in request.items()}
            )

    def lookup_field(self, name: str, keys: npt.NDArray[np.uint64]) -> FieldResult:
        """One field's vectors; see :meth:`lookup` (the overlay is not refreshed)."""
        if self.overlay is None:
            return self._lookup_field(name, keys)
        with self.overlay.lock.shared():
            return self._lookup_field(name, keys)

    def _lookup_field(self, name: str, keys: npt.NDArray[np.uint64]) -> FieldResult:
        f = self.field(name)
        idx = f.index
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        out = np.empty((keys.shape[0], f.dim), dtype=np.float32)
        found = np.empty(keys.shape[0], dtype=np.bool_)
        rows = np.empty(keys.shape[0], dtype=np.int64)
        default = self._defaults[name]
        probe = (idx.bucket_bits, BLOCK_BITS, idx.block_bases, idx.bucket_offsets, idx.fingerprints)
        # Reassigned rows live in the overlay's private copy of the same array; ids the
        # updates added are looked up by the same kernel, for keys the index lacks.
        own = self.overlay.base_values(name) if self.overlay is not None else None
        added = self.overlay.added(name) if self.overlay is not None else None
        if f.kind == "compressed":
            assert f.masks is not None
            _kernels.lookup_compressed(
                keys, *probe, f.masks if own is None else own, f.codebook, default, out, found, rows,
                *(added or _no_additions(f.masks.dtype)),
            )
        elif f.kind == "dense":
            _kernels.lookup_dense(
                keys, *probe, f.vectors if own is None else own, default, out, found, rows,
                *(added or _no_additions(np.float32, f.dim)),
            )
        elif idx.rows == 0:
            out[:] = default
            found[:] = False
            rows[:] = -1
        elif f.kind == "product":
            _pq.lookup_product(keys, *probe, f.masks, f.codebook, default, out, found, rows)
            return FieldResult(vectors=out, found=found)
        elif f.kind == "residual":
            assert f.codebook is not None
            if f.codebook.dtype == np.float16:
                # Widened in the kernel on their bits, as float16 dense rows are.
                _rq.lookup_residual_half(
                    keys, *probe, f.masks, f.codebook.view(np.uint16), _rq.HALF_SCALES, default, out, found, rows
                )
            else:
                _rq.lookup_residual(keys, *probe, f.masks, f.codebook, default, out, found, rows)
            return FieldResult(vectors=out, found=found)
        elif f.scale is not None:
            _kernels.lookup_rowwise_8bit(keys, *probe, f.vectors, f.scale, f.bias, default, out, found)
            return FieldResult(vectors=out, found=found)
        else:
            # float16 rows, widened in the kernel on their bits (numba has no float16 on the CPU).
            assert f.vectors is not None
            _kernels.lookup_half(keys, *probe, f.vectors.view(np.uint16), default.view(np.uint32), out.view(np.uint32), found)
            return FieldResult(vectors=out, found=found)
        if added is not None and f.kind == "dense":
            # Pending updates answer some ids with vectors of their own: no stored row
            # tells a renderer what was answered. (A compressed field's rows are codebook rows.)
            return FieldResult(vectors=out, found=found)
        return FieldResult(vectors=out, found=found, rows=rows)
