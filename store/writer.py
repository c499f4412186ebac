"""Writing and publishing a snapshot.

Everything is written under ``STORE/.partial/<version>/``; :meth:`SnapshotWriter.publish`
re-reads every array file and checks it against the SHA-256 computed from memory,
renames the folder into ``snapshots/`` and only then switches CURRENT. A crash at any
point leaves the live snapshot untouched; a half-written one is never visible.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from saec.store import keyindex
from saec.store.errors import BadCurrentError, InvalidTableError, StaleSnapshotError, StoreError
from saec.store.hashing import HASH_NAME
from saec.store.keyindex import BLOCK_BITS, FINGERPRINT_BITS
from saec.store.layout import LOCK_SUFFIX, StoreLayout, fsync_path, is_plain_name, new_version
from saec.store.lock import FileLock
from saec.store.snapshot import (
    FORMAT_VERSION,
    MANIFEST_KEY,
    PRODUCT_FORMAT_VERSION,
    QUANTISED_DTYPES,
    QUANTISED_FORMAT_VERSION,
    RESIDUAL_CODEBOOK_DTYPES,
    RESIDUAL_FORMAT_VERSION,
    ArrayInfo,
    chunk_path,
    verify_array,
)

DEFAULT_KEEP = 5
log = logging.getLogger("saec.store")


class SnapshotWriter:
    """Builds one snapshot; use as a context manager so a failure discards it.

    Example::

        with SnapshotWriter(store, source="hourly 2026-11-26T04") as w:
            w.add_compressed_field("user", keys, codebook, masks, counts)
            w.add_dense_field("country", keys2, vectors)
            version = w.publish()
    """

    def __init__(self, store: str | os.PathLike[str], *, source: str = "", keep: int = DEFAULT_KEEP) -> None:
        self.layout = StoreLayout(store)
        self.version = new_version()
        self.source = source
        self.keep = keep
        self.created = datetime.now(UTC).isoformat()
        self.path = self.layout.partial_dir / self.version
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Held until publication: tells the next publish's clean-up that this folder is
        # being written, and is released by the kernel if this process dies.
        self._hold = FileLock(self.path.parent / (self.version + LOCK_SUFFIX))
        self._hold.acquire()
        self.path.mkdir()
        self._fields: dict[str, dict[str, Any]] = {}
        self._arrays: dict[str, ArrayInfo] = {}
        self._published = False
        self._sealed = False
        # Entries added to the manifest at publication (the watermark of the updates this
        # snapshot covers and what a publish carried forward: store.carry).
        self.manifest_extra: dict[str, Any] = {}

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._published:
            self.discard()

    def discard(self) -> None:
        """Remove the partial snapshot; the store is as it was."""
        shutil.rmtree(self.path, ignore_errors=True)
        self._hold.release(unlink=True)

    # -- fields ---------------------------------------------------------------------------

    def add_compressed_field(
        self,
        name: str,
        keys: npt.NDArray[np.uint64],
        codebook: npt.NDArray[np.float32],
        masks: npt.NDArray[np.unsignedinteger],
        counts: npt.NDArray[np.integer] | None = None,
        attrs: Mapping[str, Any] | None = None,
        bucket_bits: int | None = None,
    ) -> None:
        """Add a k-means compressed field.

        Args:
            name: field name, ``[A-Za-z0-9_][A-Za-z0-9_.-]*``.
            keys: uint64 (n,), hashed ids (``store.hashing.hash_ids``), distinct.
            codebook: float32 (k, dim), finite.
            masks: uint8 (n,) when k <= 256, else uint16; each < k.
            counts: integer (n,) >= 0, or None.
            attrs: JSON-serialisable facts kept with the field (init, inertia, ...).
            bucket_bits: key index bucket bits (default: from n); see ``keyindex.build``.
        """
        self._check_name(name)
        codebook = _as_matrix(name, "codebook", codebook)
        k, dim = codebook.shape
        masks = np.asarray(masks)
        want = np.uint8 if k <= 256 else np.uint16
        if k > 65536:
            raise InvalidTableError(f"field {name!r}: expected k <= 65536, got {k}")
        if masks.dtype != want:
            if masks.dtype.kind not in "iu":
                raise InvalidTableError(f"field {name!r}: expected integer masks, got {masks.dtype}")
            if masks.size and (masks.min() < 0 or masks.max() >= k):
                raise InvalidTableError(
                    f"field {name!r}: expected masks in [0, {k}), got [{masks.min()}, {masks.max()}]"
                )
            masks = masks.astype(want)
        elif masks.size and int(masks.max()) >= k:
            raise InvalidTableError(f"field {name!r}: expected masks < k={k}, got {int(masks.max())}")
        keys = self._check_rows(name, keys, masks.shape[0], "masks", masks.ndim)
        counts = self._check_counts(name, counts, keys.shape[0])
        built = keyindex.build(keys, counts, bucket_bits=bucket_bits)
        masks = masks[built.order]
        mean = (np.bincount(masks, minlength=k).astype(np.float64) @ codebook.astype(np.float64)) / masks.shape[0]
        self._write_field(
            name,
            {"kind": "compressed", "dim": dim, "k": k},
            built,
            keys.shape[0],
            {"codebook": codebook, "masks": masks, "mean": mean.astype(np.float32)},
            counts,
            attrs,
        )

    def add_product_field(
        self,
        name: str,
        keys: npt.NDArray[np.uint64],
        codebooks: npt.NDArray[np.float32],
        masks: npt.NDArray[np.unsignedinteger],
        counts: npt.NDArray[np.integer] | None = None,
        attrs: Mapping[str, Any] | None = None,
        bucket_bits: int | None = None,
    ) -> None:
        """Add a product-quantised field (``compress.ProductField``); format version 3.

        Args:
            name: field name.
            keys: uint64 (n,), hashed ids, distinct.
            codebooks: float32 (M, k, dim / M), finite: slice m of a row's vector is
                ``codebooks[m, masks[row, m]]``.
            masks: uint8 (n, M) when k <= 256, else uint16; each < k.
            counts: integer (n,) >= 0, or None.
            attrs: JSON-serialisable facts kept with the field.
            bucket_bits: key index bucket bits (default: from n); see ``keyindex.build``.
        """
        self._check_name(name)
        codebooks, masks = _check_codebooks_and_masks(name, codebooks, masks, "(M, k, dim / M)")
        slices, k, width = codebooks.shape
        keys = self._check_rows(name, keys, masks.shape[0], "masks", 1)
        counts = self._check_counts(name, counts, keys.shape[0])
        built = keyindex.build(keys, counts, bucket_bits=bucket_bits)
        masks = np.ascontiguousarray(masks[built.order])
        # The mean served vector: the slices' row sums side by side, over the rows.
        mean = np.concatenate(_row_sums(masks, codebooks)) / masks.shape[0]
        self._write_field(
            name,
            {"kind": "product", "dim": slices * width, "k": k, "subvectors": slices},
            built,
            keys.shape[0],
            {"codebook": np.ascontiguousarray(codebooks), "masks": masks, "mean": mean.astype(np.float32)},
            counts,
            attrs,
        )

    def add_residual_field(
        self,
        name: str,
        keys: npt.NDArray[np.uint64],
        codebooks: npt.NDArray[np.float32],
        masks: npt.NDArray[np.unsignedinteger],
        counts: npt.NDArray[np.integer] | None = None,
        attrs: Mapping[str, Any] | None = None,
        bucket_bits: int | None = None,
        *,
        codebook_dtype: str = "float32",
    ) -> None:
        """Add a residual-quantised field (``compress.ResidualField``); format version 4.

        Args:
            name: field name.
            keys: uint64 (n,), hashed ids, distinct.
            codebooks: float32 (S, k, dim), finite: a row's vector is ``codebooks[0,
                masks[row, 0]] + codebooks[1, masks[row, 1]] + ...``, added in float32 in
                stage order (``ResidualField.vectors``).
            masks: uint8 (n, S) when k <= 256, else uint16; each < k.
            counts: integer (n,) >= 0, or None.
            attrs: JSON-serialisable facts kept with the field.
            bucket_bits: key index bucket bits (default: from n); see ``keyindex.build``.
            codebook_dtype: how the codebooks are stored: "float32", or "float16" (rounded
                to nearest, |x| <= 65504; half the codebook bytes). The stored array's dtype
                is what a reader goes by; the served vector is the float32 stage sum of the
                widened float16 rows.
        """
        self._check_name(name)
        if codebook_dtype not in RESIDUAL_CODEBOOK_DTYPES:
            raise InvalidTableError(
                f"field {name!r}: expected codebook_dtype in {list(RESIDUAL_CODEBOOK_DTYPES)}, got {codebook_dtype!r}"
            )
        codebooks, masks = _check_codebooks_and_masks(name, codebooks, masks, "(S, k, dim)")
        stored: npt.NDArray[Any] = codebooks
        if codebook_dtype == "float16":
            stored = _as_float16(name, codebooks)
            # What is served: the float16 rows widened back (exactly) to float32.
            codebooks = stored.astype(np.float32)
        stages, k, dim = codebooks.shape
        keys = self._check_rows(name, keys, masks.shape[0], "masks", 1)
        counts = self._check_counts(name, counts, keys.shape[0])
        built = keyindex.build(keys, counts, bucket_bits=bucket_bits)
        masks = np.ascontiguousarray(masks[built.order])
        # The mean served vector: the stages' row sums added, over the rows.
        mean = sum(_row_sums(masks, codebooks)) / masks.shape[0]
        self._write_field(
            name,
            {"kind": "residual", "dim": dim, "k": k, "stages": stages},
            built,
            keys.shape[0],
            {"codebook": np.ascontiguousarray(stored), "masks": masks, "mean": np.asarray(mean, dtype=np.float32)},
            counts,
            attrs,
        )

    def add_dense_field(
        self,
        name: str,
        keys: npt.NDArray[np.uint64],
        vectors: npt.NDArray[np.float32],
        counts: npt.NDArray[np.integer] | None = None,
        attrs: Mapping[str, Any] | None = None,
        bucket_bits: int | None = None,
    ) -> None:
        """Add a field stored whole (too small to compress).

        Args:
            name: field name.
            keys: uint64 (n,), hashed ids, distinct.
            vectors: float32 (n, dim), finite.
            counts: integer (n,) >= 0, or None.
            attrs: JSON-serialisable facts kept with the field.
            bucket_bits: key index bucket bits (default: from n); see ``keyindex.build``.
        """
        self._check_name(name)
        vectors = _as_matrix(name, "vectors", vectors)
        keys = self._check_rows(name, keys, vectors.shape[0], "vectors", 1)
        counts = self._check_counts(name, counts, keys.shape[0])
        built = keyindex.build(keys, counts, bucket_bits=bucket_bits)
        stored = vectors[built.order]
        mean = vectors.mean(axis=0, dtype=np.float64).astype(np.float32)
        self._write_field(
            name,
            {"kind": "dense", "dim": vectors.shape[1], "k": None},
            built,
            keys.shape[0],
            {"vectors": stored, "mean": mean},
            counts,
            attrs,
        )

    def add_quantised_field(
        self,
        name: str,
        keys: npt.NDArray[np.uint64],
        vectors: npt.NDArray[np.float32],
        dtype: str,
        counts: npt.NDArray[np.integer] | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        """Add a field stored whole in fewer bytes: float16, or 8-bit row-wise.

        "int8" follows TorchRec / FBGEMM's 8-bit row-wise form: each row keeps uint8
        codes and a float32 scale and bias, ``vector = code * scale + bias`` with
        ``bias = min(row)`` and ``scale = (max(row) - min(row)) / 255``, so each row uses
        all 256 levels over its own range. A snapshot holding such a field is written
        as format version 2.

        Args:
            name: field name.
            keys: uint64 (n,), hashed ids, distinct.
            vectors: float32 (n, dim), finite (float16 also needs |x| <= 65504).
            dtype: "float16" or "int8".
            counts: integer (n,) >= 0, or None.
            attrs: JSON-serialisable facts kept with the field.
        """
        self._check_name(name)
        if dtype not in QUANTISED_DTYPES:
            raise InvalidTableError(f"field {name!r}: expected dtype in {list(QUANTISED_DTYPES)}, got {dtype!r}")
        vectors = _as_matrix(name, "vectors", vectors)
        arrays: dict[str, npt.NDArray[Any]]
        if dtype == "float16":
            arrays = {"vectors": _as_float16(name, vectors)}
        else:
            codes, scale, bias = quantise_rowwise_8bit(vectors)
            arrays = {"vectors": codes, "scale": scale, "bias": bias}
        self.add_quantised_rows(name, keys, arrays, counts, attrs)

    def add_quantised_rows(
        self,
        name: str,
        keys: npt.NDArray[np.uint64],
        arrays: Mapping[str, npt.NDArray[Any]],
        counts: npt.NDArray[np.integer] | None = None,
        attrs: Mapping[str, Any] | None = None,
        bucket_bits: int | None = None,
    ) -> None:
        """Add a quantised field from rows already in their stored form (``saec fold``
        carries such fields over this way: quantising 8-bit rows again could move codes).

        Args:
            name: field name.
            keys: uint64 (n,), hashed ids, distinct.
            arrays: rows in the order of ``keys``: ``{"vectors": float16 (n, dim)}``, or
                ``{"vectors": uint8 (n, dim), "scale": float32 (n,), "bias": float32 (n,)}``.
            counts: integer (n,) >= 0, or None.
            attrs: JSON-serialisable facts kept with the field.
            bucket_bits: key index bucket bits (default: from n); see ``keyindex.build``.
        """
        self._check_name(name)
        codes = np.asarray(arrays.get("vectors"))
        int8 = codes.dtype == np.uint8
        want = {"vectors", "scale", "bias"} if int8 else {"vectors"}
        if codes.ndim != 2 or codes.dtype not in (np.float16, np.uint8) or set(arrays) != want:
            raise InvalidTableError(
                f"field {name!r}: expected float16 vectors (n, dim), or uint8 vectors with float32 scale and bias "
                f"(n,), got {sorted(arrays)} with vectors {codes.dtype} {codes.shape}"
            )
        stored_arrays = {k: np.asarray(v) for k, v in arrays.items()}
        for k in ("scale", "bias") if int8 else ():
            if stored_arrays[k].dtype != np.float32 or stored_arrays[k].shape != codes.shape[:1]:
                raise InvalidTableError(
                    f"field {name!r}: expected {k} as float32 ({codes.shape[0]},), got "
                    f"{stored_arrays[k].dtype} {stored_arrays[k].shape}"
                )
        keys = self._check_rows(name, keys, codes.shape[0], "vectors", 1)
        counts = self._check_counts(name, counts, keys.shape[0])
        built = keyindex.build(keys, counts, bucket_bits=bucket_bits)
        stored = {k: v[built.order] for k, v in stored_arrays.items()}
        if int8:
            decoded = dequantise_rowwise_8bit(stored["vectors"], stored["scale"], stored["bias"])
        else:
            decoded = stored["vectors"].astype(np.float32)
        mean = decoded.mean(axis=0, dtype=np.float64).astype(np.float32)
        self._write_field(
            name,
            {"kind": "quantised", "dim": codes.shape[1], "k": None, "dtype": "int8" if int8 else "float16"},
            built,
            keys.shape[0],
            {**stored, "mean": mean},
            counts,
            attrs,
        )

    # -- publishing -----------------------------------------------------------------------

    def publish(self, *, make_current: bool = True) -> str:
        """Verify, move into ``snapshots/`` and (by default) make this snapshot live.

        Returns:
            The published version.
        Raises:
            StoreError: no fields, or already published.
            CorruptSnapshotError: a file on disk differs from what was written.
            StaleSnapshotError: a newer snapshot went live while this one was written; this
                one is published into ``snapshots/`` but CURRENT is left alone.
        """
        if self._published:
            raise StoreError(f"snapshot {self.version} is already published")
        self.seal()
        kinds = {spec["kind"] for spec in self._fields.values()}
        manifest = {
            # Readers of version 1 do not know quantised fields, those of version 2 product
            # fields, those of version 3 residual fields; a snapshot takes the lowest
            # version that reads it.
            "format_version": (
                RESIDUAL_FORMAT_VERSION if "residual" in kinds
                else PRODUCT_FORMAT_VERSION if "product" in kinds
                else QUANTISED_FORMAT_VERSION if "quantised" in kinds
                else FORMAT_VERSION
            ),
            "version": self.version,
            "created": self.created,
            "source": self.source,
            "hash": HASH_NAME,
            "fields": self._fields,
            "arrays": {
                p: {"shape": list(a.shape), "dtype": a.dtype, "sha256": a.sha256} for p, a in self._arrays.items()
            },
        }
        manifest.update(self.manifest_extra)
        self._write_group("", {MANIFEST_KEY: manifest})
        fsync_path(self.path / "zarr.json")
        fsync_path(self.path)
        layout = self.layout
        final = layout.snapshot_path(self.version)
        # Everything from here on changes what other processes see: one publisher, pruner
        # or rollback at a time.
        with layout.locked():
            layout.clean()
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(self.path, final)
            fsync_path(final.parent)
            self._published = True
            self._hold.release(unlink=True)
            if make_current:
                try:
                    live = layout.read_current()
                except BadCurrentError as exc:
                    live = None  # a damaged CURRENT is repaired by this publish
                    log.warning("replacing a damaged CURRENT: %s", exc)
                if live is not None and live > self.version and (layout.snapshots_dir / live).is_dir():
                    raise StaleSnapshotError(
                        f"snapshot {self.version} is older than the live {live} (published while this one was "
                        f"written); it is kept in {layout.snapshots_dir} but not made live. Only a rollback goes "
                        f"back: `saec rollback --store {layout.root} --to {self.version}`"
                    )
                layout.write_current(self.version)
                layout.prune(self.keep)
        return self.version

    @property
    def field_specs(self) -> Mapping[str, Mapping[str, Any]]:
        """The manifest entry of each field added so far (kind, dim, k, ...)."""
        return self._fields

    @property
    def published(self) -> bool:
        """Whether :meth:`publish` moved the snapshot into ``snapshots/`` (live or not)."""
        return self._published

    def seal(self) -> None:
        """Check every array file against what was written and make them durable; no field
        may be added afterwards. :meth:`publish` seals first if nobody did: a publish that
        holds a lock (store.carry) seals before taking it, so reading the arrays back
        happens outside it.

        Raises:
            StoreError: no fields.
            CorruptSnapshotError: a file on disk differs from what was written.
        """
        if self._sealed:
            return
        if not self._fields:
            raise StoreError("expected at least one field in a snapshot, got none")
        for info in self._arrays.values():
            verify_array(self.path, info)
        _sync_tree(self.path)
        self._sealed = True

    # -- internals ------------------------------------------------------------------------

    def _check_name(self, name: str) -> None:
        if not is_plain_name(name):
            raise InvalidTableError(
                f"expected a field name of letters, digits, '_', '.', '-' (max 128, not starting with '.' or '-'), "
                f"got {name!r}"
            )
        if name in self._fields:
            raise InvalidTableError(f"field {name!r} was already added to this snapshot")
        if self._sealed:
            raise StoreError(f"snapshot {self.version} is sealed; expected no more fields, got {name!r}")

    @staticmethod
    def _check_rows(name: str, keys: npt.NDArray[Any], rows: int, what: str, ndim: int) -> npt.NDArray[np.uint64]:
        keys = np.asarray(keys)
        if keys.dtype != np.uint64 or keys.ndim != 1:
            raise InvalidTableError(
                f"field {name!r}: expected keys as uint64 (n,) from store.hashing.hash_ids, got {keys.dtype} {keys.shape}"
            )
        if ndim != 1:
            raise InvalidTableError(f"field {name!r}: expected {what} as a 1-d array, got {ndim} dimensions")
        if keys.shape[0] != rows:
            raise InvalidTableError(f"field {name!r}: expected one key per row of {what}: {keys.shape[0]} keys, {rows} rows")
        if rows == 0:
            raise InvalidTableError(f"field {name!r}: expected at least one feature, got none")
        return keys

    @staticmethod
    def _check_counts(name: str, counts: npt.NDArray[Any] | None, rows: int) -> npt.NDArray[np.unsignedinteger] | None:
        if counts is None:
            return None
        counts = np.asarray(counts)
        if counts.ndim != 1 or counts.shape[0] != rows or counts.dtype.kind not in "iu":
            raise InvalidTableError(
                f"field {name!r}: expected counts as integers ({rows},), got {counts.dtype} {counts.shape}"
            )
        if counts.size and counts.min() < 0:
            raise InvalidTableError(f"field {name!r}: expected counts >= 0, got {counts.min()}")
        # Counts are kept for the next compression run (top-n, top-k init), not for serving:
        # four bytes suffice for all but the hottest features.
        fits = counts.size == 0 or int(counts.max()) <= np.iinfo(np.uint32).max
        return counts.astype(np.uint32 if fits else np.uint64, copy=False)

    def _write_field(
        self,
        name: str,
        spec: dict[str, Any],
        built: keyindex.BuiltIndex,
        features: int,
        arrays: dict[str, npt.NDArray[Any]],
        counts: npt.NDArray[np.unsignedinteger] | None,
        attrs: Mapping[str, Any] | None,
    ) -> None:
        idx = built.index
        arrays = {
            **arrays,
            "index/fingerprints": idx.fingerprints,
            "index/bucket_offsets": idx.bucket_offsets,
            "index/block_bases": idx.block_bases,
        }
        if counts is not None:
            arrays["counts"] = counts[built.order]
        if built.next_bits is not None:
            arrays["fold_bits"] = built.next_bits  # read by a fold only (store.fold), never served
        self._write_group(name)
        self._write_group(f"{name}/index")
        for rel, arr in arrays.items():
            self._write_array(f"{name}/{rel}", arr)
        self._fields[name] = {
            **spec,
            "features": features,
            "rows": idx.rows,
            "aliased": built.aliased,
            "bucket_bits": idx.bucket_bits,
            "block_bits": BLOCK_BITS,
            "fingerprint_bits": FINGERPRINT_BITS,
            "attrs": dict(attrs or {}),
        }

    def _write_array(self, path: str, arr: npt.NDArray[Any]) -> None:
        """Write an array's ``zarr.json`` and its one chunk file.

        The metadata is the document zarr itself writes for an uncompressed,
        single-chunk array (a test holds the two equal, and zarr reads the arrays
        back); writing it directly costs microseconds where zarr's store machinery
        costs milliseconds, which adds up over a snapshot of a thousand fields.
        """
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        folder = self.path / path
        target = chunk_path(folder, arr.ndim)
        target.parent.mkdir(parents=True, exist_ok=True)
        (folder / "zarr.json").write_bytes(orjson.dumps(array_metadata(arr.shape, arr.dtype), option=orjson.OPT_INDENT_2))
        data = arr.reshape(-1).view(np.uint8).data  # the bytes as they lie, no copy
        with open(target, "wb") as fh:
            fh.write(data)
        sha = hashlib.sha256(data).hexdigest()
        self._arrays[path] = ArrayInfo(path=path, shape=tuple(arr.shape), dtype=str(arr.dtype), sha256=sha)

    def _write_group(self, path: str, attributes: Mapping[str, Any] | None = None) -> None:
        folder = self.path / path if path else self.path
        folder.mkdir(parents=True, exist_ok=True)
        doc = {"attributes": dict(attributes or {}), "zarr_format": 3, "node_type": "group"}
        (folder / "zarr.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))


def quantise_rowwise_8bit(
    vectors: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """uint8 (n, dim) codes, float32 (n,) scales and biases of float32 (n, dim) rows.

    A constant row gets scale 1 and codes 0, so it decodes to itself exactly.
    """
    lo = vectors.min(axis=1)
    span = vectors.max(axis=1) - lo
    scale = np.where(span > 0, span / 255.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint((vectors - lo[:, None]) / scale[:, None]), 0, 255).astype(np.uint8)
    return codes, scale, lo.astype(np.float32)


def dequantise_rowwise_8bit(
    codes: npt.NDArray[np.uint8], scale: npt.NDArray[np.float32], bias: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """float32 (n, dim) rows from 8-bit row-wise codes; the engine's kernel computes the same."""
    return (codes.astype(np.float32) * scale[:, None] + bias[:, None]).astype(np.float32)


def array_metadata(shape: tuple[int, ...], dtype: np.dtype) -> dict[str, Any]:
    """Zarr v3 metadata of an uncompressed array stored as one little-endian chunk."""
    return {
        "shape": list(shape),
        "data_type": str(dtype),
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(shape)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0.0 if dtype.kind == "f" else 0,
        # Endianness means nothing for one-byte types, and zarr leaves it out there.
        "codecs": [{"name": "bytes"} if dtype.itemsize == 1 else {"name": "bytes", "configuration": {"endian": "little"}}],
        "attributes": {},
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }


def _sync_tree(root: Path) -> None:
    """Make every file written under ``root`` durable before it is renamed into view.

    One ``syncfs`` of the file system instead of an fsync per file: a snapshot of a
    thousand fields holds ~16,000 files, and an fsync each cost seconds.
    """
    fd = os.open(root, os.O_RDONLY)
    try:
        if _syncfs is not None and _syncfs(fd) == 0:
            return
    finally:
        os.close(fd)
    for path in root.rglob("*"):
        if path.is_file():
            fsync_path(path)


def _load_syncfs() -> Any:
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


_syncfs = _load_syncfs()


def _check_codebooks_and_masks(
    name: str, codebooks: npt.NDArray[Any], masks: npt.NDArray[Any], layout: str
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.unsignedinteger]]:
    """The checks a field of several masks a row (product, residual) shares: codebooks
    float32 of three dimensions (``layout`` says what they are), finite, k <= 65536;
    masks integer (n, codebooks.shape[0]) in [0, k). Returns the codebooks and the masks
    as uint8 (k <= 256) or uint16."""
    codebooks = np.asarray(codebooks)
    if codebooks.dtype != np.float32 or codebooks.ndim != 3 or 0 in codebooks.shape:
        raise InvalidTableError(
            f"field {name!r}: expected codebooks as float32 {layout}, got {codebooks.dtype} {codebooks.shape}"
        )
    if not np.isfinite(codebooks).all():
        raise InvalidTableError(f"field {name!r}: expected finite codebooks, got NaN or infinity")
    columns, k = codebooks.shape[:2]
    if k > 65536:
        raise InvalidTableError(f"field {name!r}: expected k <= 65536, got {k}")
    masks = np.asarray(masks)
    if masks.ndim != 2 or masks.shape[1] != columns or masks.dtype.kind not in "iu":
        raise InvalidTableError(
            f"field {name!r}: expected integer masks of shape (n, {columns}), got {masks.dtype} {masks.shape}"
        )
    if masks.size and (int(masks.min()) < 0 or int(masks.max()) >= k):
        raise InvalidTableError(f"field {name!r}: expected masks in [0, {k}), got [{masks.min()}, {masks.max()}]")
    return codebooks, masks.astype(np.uint8 if k <= 256 else np.uint16)


def _row_sums(masks: npt.NDArray[np.unsignedinteger], codebooks: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float64]]:
    """float64 (width,) per mask column c: the sum over all n rows of the ``codebooks[c]``
    row each reads, from how often each is read (masks (n, C), codebooks (C, k, width))."""
    k = codebooks.shape[1]
    return [
        np.bincount(masks[:, c], minlength=k).astype(np.float64) @ codebooks[c].astype(np.float64)
        for c in range(codebooks.shape[0])
    ]


def _as_float16(name: str, values: npt.NDArray[np.float32]) -> npt.NDArray[np.float16]:
    """``values`` rounded to float16, refused when any lies outside float16's range."""
    if np.abs(values).max(initial=0.0) > np.finfo(np.float16).max:
        raise InvalidTableError(f"field {name!r}: expected values within float16's range (|x| <= 65504)")
    return values.astype(np.float16)


def _as_matrix(name: str, what: str, arr: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    arr = np.asarray(arr)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise InvalidTableError(f"field {name!r}: expected {what} as float32 (rows, dim), got shape {arr.shape}")
    if arr.dtype.kind != "f":
        raise InvalidTableError(f"field {name!r}: expected {what} as float32, got {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise InvalidTableError(f"field {name!r}: expected finite {what}, row {bad} holds NaN or infinity")
    return arr
