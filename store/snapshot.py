"""Opening a published snapshot by memory map.

A snapshot is a Zarr v3 group. Its root attributes hold the manifest under the key
``saec``: format version, creation time, source, hash identity, one entry per field
and one per array with its shape, dtype and SHA-256. Every array is written as one
uncompressed chunk (codec ``bytes``, little-endian), so its chunk file *is* the array
in C order and the server maps it with ``mmap`` instead of reading it through zarr:
every worker process shares the same page-cache pages, and opening reads no array.

Per field (``<field>/`` subgroup):

- compressed: ``codebook`` float32 (k, dim), ``masks`` uint8 (rows,) (uint16 when k > 256);
- product (version 3): ``codebook`` float32 (M, k, dim / M), ``masks`` (rows, M);
- residual (version 4): ``codebook`` float32 or float16 (S, k, dim), ``masks`` (rows, S);
- dense: ``vectors`` float32 (rows, dim);
- all: ``index/fingerprints`` uint16 (rows,), ``index/bucket_offsets`` uint16|uint32 (B+1,),
  ``index/block_bases`` uint64 (B/2048+2,) (see ``store.keyindex``), ``mean`` float32 (dim,),
  and optionally ``counts`` uint32|uint64 (rows,).
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
import orjson

from saec.store._files import open_regular, read_regular, real_path
from saec.store.errors import (
    CorruptSnapshotError,
    FormatVersionError,
    SnapshotNotFoundError,
    StoreError,
    UnknownFieldError,
    UnsafeFileError,
)
from saec.store.keyindex import BLOCK_BITS, MAX_BUCKET_BITS, KeyIndex
from saec.store.layout import StoreLayout, is_plain_name

FORMAT_VERSION = 1
# Version 2 adds the "quantised" field kind (float16, or 8-bit row-wise with a float32
# scale and bias per row); a snapshot without such a field is still written as version 1.
QUANTISED_FORMAT_VERSION = 2
# Version 3 adds the "product" field kind (product quantisation: M masks a row, M
# sub-codebooks); a snapshot without such a field keeps its lower version.
PRODUCT_FORMAT_VERSION = 3
# Version 4 adds the "residual" field kind (residual quantisation: S masks a row, S
# codebooks over the whole vector, summed); a snapshot without such a field keeps its
# lower version.
RESIDUAL_FORMAT_VERSION = 4
READABLE_FORMATS = frozenset({1, 2, 3, 4})
MANIFEST_KEY = "saec"
FieldKind = Literal["compressed", "dense", "quantised", "product", "residual"]
FIELD_KINDS: tuple[FieldKind, ...] = ("compressed", "dense", "quantised", "product", "residual")
# Kinds whose rows are masks into a codebook.
CODEBOOK_KINDS = ("compressed", "product", "residual")
QUANTISED_DTYPES = ("float16", "int8")
# How a residual field's codebooks may be stored (format version 4); every other kind's
# codebook is float32.
RESIDUAL_CODEBOOK_DTYPES = ("float32", "float16")
# The dtypes a reader accepts per array: the kernels are compiled for these, and a
# signed or wider type than the writer uses could index outside an array.
ARRAY_DTYPES: Mapping[str, frozenset[str]] = {
    # float16 only in a residual field (checked with the field's kind, in _check_shapes).
    "codebook": frozenset(RESIDUAL_CODEBOOK_DTYPES),
    # float16 rows and uint8 codes of a quantised dense field (format version 2).
    "vectors": frozenset({"float32", "float16", "uint8"}),
    "scale": frozenset({"float32"}),
    "bias": frozenset({"float32"}),
    "mean": frozenset({"float32"}),
    "masks": frozenset({"uint8", "uint16"}),
    "counts": frozenset({"uint32", "uint64"}),
    "fold_bits": frozenset({"uint16"}),
    "index/fingerprints": frozenset({"uint16"}),
    "index/bucket_offsets": frozenset({"uint16", "uint32"}),
    "index/block_bases": frozenset({"uint64"}),
}


def chunk_path(array_dir: Path, ndim: int) -> Path:
    """The file of an array's only chunk: ``<array>/c/0`` (1-d), ``<array>/c/0/0`` (2-d)."""
    return array_dir.joinpath("c", *(["0"] * ndim))


@dataclass(frozen=True)
class ArrayInfo:
    """One stored array, as the manifest describes it."""

    path: str
    shape: tuple[int, ...]
    dtype: str
    sha256: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class Field:
    """One field of an open snapshot. Arrays are read-only memory maps.

    Attributes:
        codebook: float32 (k, dim) for a compressed field; float32 (M, k, dim / M), the M
            sub-codebooks, for a product field (format version 3); float32 or float16
            (S, k, dim), the S stage codebooks, for a residual field (format version 4);
            else None.
        masks: uint8 or uint16 (rows,) for a compressed field, (rows, M) for a product
            field, (rows, S) for a residual field, else None.
        vectors: float32 (rows, dim) for a dense field; for a quantised field float16
            (rows, dim), or uint8 (rows, dim) codes of the 8-bit row-wise form
            ``vector = code * scale + bias`` (TorchRec / FBGEMM's convention); else None.
        scale, bias: float32 (rows,) for an 8-bit quantised field, else None.
        mean: float32 (dim,): the mean of the field's (decoded) vectors.
        counts: uint32 or uint64 (rows,), or None.
        features: rows handed to the writer; ``rows`` = features - aliased are stored.
        stages: S, the codebooks a residual field sums (a row's vector is ``sum over s of
            codebook[s, masks[row, s]]`` in stage order); None for other kinds.
    """

    name: str
    kind: FieldKind
    dim: int
    k: int | None
    features: int
    rows: int
    aliased: int
    index: KeyIndex
    mean: npt.NDArray[np.float32]
    codebook: npt.NDArray[np.floating] | None = None
    masks: npt.NDArray[np.unsignedinteger] | None = None
    vectors: npt.NDArray[Any] | None = None
    counts: npt.NDArray[np.unsignedinteger] | None = None
    scale: npt.NDArray[np.float32] | None = None
    bias: npt.NDArray[np.float32] | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)
    arrays: Mapping[str, ArrayInfo] = field(default_factory=dict)

    @property
    def stages(self) -> int | None:
        if self.kind != "residual" or self.codebook is None or self.codebook.ndim != 3:
            return None
        return int(self.codebook.shape[0])


@dataclass(frozen=True)
class Snapshot:
    """An open, immutable snapshot."""

    path: Path
    version: str
    format_version: int
    created: str
    source: str
    hash_name: str
    fields: Mapping[str, Field]
    manifest: Mapping[str, Any]

    def __iter__(self) -> Iterator[Field]:
        return iter(self.fields.values())

    def arrays(self) -> Iterator[ArrayInfo]:
        for f in self.fields.values():
            yield from f.arrays.values()

    def verify(self) -> None:
        """Check every array file against the manifest's size and SHA-256 (reads all data),
        and that no symlink in the snapshot's folder leads outside it.

        Raises:
            CorruptSnapshotError: naming the first array that differs.
            UnsafeFileError: naming a symlink that leads outside the snapshot.
        """
        check_no_escape(self.path)
        within = real_path(self.path)
        for info in self.arrays():
            verify_array(self.path, info, within)


def check_no_escape(root: Path) -> None:
    """Refuse a snapshot folder holding a symlink whose target lies outside it."""
    inside = real_path(root)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                target = real_path(path)
                if not (target == inside or target.startswith(inside + os.sep)):
                    raise UnsafeFileError(f"{path}: expected no symlink leading outside {inside}, it leads to {target}")


def verify_array(root: Path, info: ArrayInfo, within: str | None = None) -> None:
    """Compare one array's chunk file with its manifest entry."""
    path = chunk_path(root / info.path, len(info.shape))
    try:
        fd = open_regular(path, real_path(root) if within is None else within)
    except FileNotFoundError:
        raise CorruptSnapshotError(f"{info.path}: chunk file {path} is missing") from None
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fd).st_size
        if size != info.nbytes:
            raise CorruptSnapshotError(f"{info.path}: expected {info.nbytes} bytes in {path}, found {size}")
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    if digest != info.sha256:
        raise CorruptSnapshotError(f"{info.path}: expected sha256 {info.sha256}, found {digest}")


def _read_json(path: Path, within: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(read_regular(path, within, limit=256 << 20))
    except FileNotFoundError:
        raise CorruptSnapshotError(f"{path} is missing") from None
    except orjson.JSONDecodeError as exc:
        raise CorruptSnapshotError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CorruptSnapshotError(f"{path}: expected a JSON object, found {type(doc).__name__}")
    return doc


def _check_zarr_array(root: Path, info: ArrayInfo, within: str) -> None:
    """The array's own zarr.json must describe exactly the mappable layout we expect."""
    meta = _read_json(root / info.path / "zarr.json", within)
    expected = {
        "node_type": "array",
        "shape": list(info.shape),
        "data_type": info.dtype,
        "chunk_shape": list(info.shape),
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
    }
    found = {
        "node_type": meta.get("node_type"),
        "shape": meta.get("shape"),
        "data_type": meta.get("data_type"),
        "chunk_shape": meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape"),
        "codecs": [
            c if c.get("name") != "bytes" else {"name": "bytes", "configuration": {"endian": c.get("configuration", {}).get("endian", "little")}}
            for c in meta.get("codecs", [])
        ],
    }
    for key, want in expected.items():
        if found[key] != want:
            raise CorruptSnapshotError(f"{info.path}/zarr.json: expected {key} {want}, found {found[key]}")


def _map(root: Path, info: ArrayInfo, within: str) -> npt.NDArray[Any]:
    path = chunk_path(root / info.path, len(info.shape))
    try:
        fd = open_regular(path, within)
    except FileNotFoundError:
        raise CorruptSnapshotError(f"{info.path}: chunk file {path} is missing") from None
    try:
        size = os.fstat(fd).st_size
        if size != info.nbytes:
            raise CorruptSnapshotError(f"{info.path}: expected {info.nbytes} bytes in {path}, found {size}")
        if size == 0:
            return np.zeros(info.shape, dtype=np.dtype(info.dtype).newbyteorder("<"))
        mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    # A plain ndarray over the map (not np.memmap): its indexing is measurably faster.
    arr = np.frombuffer(mm, dtype=np.dtype(info.dtype).newbyteorder("<"), count=int(np.prod(info.shape)))
    return arr.reshape(info.shape)


def _array_info(path: Any, entry: Any, fields: Mapping[str, Any]) -> ArrayInfo:
    """One manifest ``arrays`` entry, checked: a plain path inside a known field, a
    non-negative shape, and for the arrays a lookup reads, the dtype it is compiled for."""
    parts: list[str] = path.split("/") if isinstance(path, str) else []
    if len(parts) < 2 or not all(is_plain_name(p) for p in parts) or parts[0] not in fields:
        raise UnsafeFileError(
            f"manifest: expected array paths <field>/<name> of plain names (letters, digits, '_', '.', '-'), "
            f"found {path!r}"
        )
    shape = entry["shape"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and 0 <= d < 1 << 48 for d in shape):
        raise CorruptSnapshotError(f"manifest: array {path}: expected a shape of non-negative integers, found {shape!r}")
    rel = "/".join(parts[1:])
    dtype = entry["dtype"]
    allowed = ARRAY_DTYPES.get(rel)
    if allowed is not None and dtype not in allowed:
        raise CorruptSnapshotError(f"manifest: array {path}: expected dtype in {sorted(allowed)}, found {dtype!r}")
    try:
        np.dtype(dtype)
    except TypeError:
        raise CorruptSnapshotError(f"manifest: array {path}: expected a numpy dtype, found {dtype!r}") from None
    return ArrayInfo(path=path, shape=tuple(shape), dtype=dtype, sha256=str(entry["sha256"]))


def open_snapshot(path: str | os.PathLike[str], *, fields: Collection[str] | None = None) -> Snapshot:
    """Open a snapshot folder by memory map. Reads metadata only.

    Args:
        path: the snapshot's folder.
        fields: open only these fields (a replica serving a share of them); None: all.
            The others' files are neither mapped nor needed.

    Raises:
        UnknownFieldError: ``fields`` names one the snapshot does not hold.
        SnapshotNotFoundError: no snapshot there.
        FormatVersionError: written by a format this code cannot read.
        CorruptSnapshotError: metadata disagrees with the files.
    """
    root = Path(path)
    if not (root / "zarr.json").exists():
        raise SnapshotNotFoundError(f"expected a snapshot (a Zarr group) at {root}, found no zarr.json")
    within = real_path(root)
    group = _read_json(root / "zarr.json", within)
    attributes = group.get("attributes")
    manifest = attributes.get(MANIFEST_KEY) if isinstance(attributes, dict) else None
    if not isinstance(manifest, dict):
        raise CorruptSnapshotError(f"{root}/zarr.json: expected attributes.{MANIFEST_KEY}, found none")
    fmt = manifest.get("format_version")
    if type(fmt) is not int or fmt not in READABLE_FORMATS:
        raise FormatVersionError(
            f"{root}: expected format_version in {sorted(READABLE_FORMATS)}, found {fmt!r}; upgrade saec"
        )
    held = manifest.get("fields")
    missing = sorted(set(fields or ()) - set(held if isinstance(held, dict) else ()))
    if missing:
        # Outside the manifest checks below: a KeyError there means a corrupt manifest.
        raise UnknownFieldError(
            f"{root}: expected fields {missing} to serve, the snapshot holds {', '.join(sorted(held or ())) or 'none'}"
        )
    try:
        specs = manifest["fields"]
        if not isinstance(specs, dict) or not all(is_plain_name(name) for name in specs):
            bad = [n for n in specs if not is_plain_name(n)] if isinstance(specs, dict) else specs
            raise UnsafeFileError(
                f"{root}/zarr.json: expected field names of letters, digits, '_', '.', '-' "
                f"(not starting with '.' or '-'), found {bad!r}"
            )
        arrays = {p: _array_info(p, a, specs) for p, a in manifest["arrays"].items()}
        if fields is not None:
            specs = {name: spec for name, spec in specs.items() if name in fields}
        opened = {name: _open_field(root, name, spec, arrays, within) for name, spec in specs.items()}
        return Snapshot(
            path=root,
            version=str(manifest["version"]),
            format_version=fmt,
            created=str(manifest["created"]),
            source=str(manifest.get("source", "")),
            hash_name=str(manifest["hash"]),
            fields=opened,
            manifest=manifest,
        )
    except StoreError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise CorruptSnapshotError(f"{root}/zarr.json: manifest lacks or mistypes {exc!r}") from None


def _open_field(
    root: Path, name: str, spec: Mapping[str, Any], arrays: Mapping[str, ArrayInfo], within: str
) -> Field:
    mine = {p[len(name) + 1 :]: a for p, a in arrays.items() if p.startswith(name + "/")}

    def get(rel: str, required: bool = True) -> npt.NDArray[Any] | None:
        info = mine.get(rel)
        if info is None:
            if required:
                raise CorruptSnapshotError(f"field {name!r}: expected array {rel!r} in the manifest, found none")
            return None
        _check_zarr_array(root, info, within)
        return _map(root, info, within)

    kind = spec["kind"]
    if kind not in FIELD_KINDS:
        raise CorruptSnapshotError(
            f"field {name!r}: expected kind {', '.join(FIELD_KINDS[:-1])} or {FIELD_KINDS[-1]}, found {kind!r}"
        )
    bucket_bits = spec["bucket_bits"]
    if not isinstance(bucket_bits, int) or not 0 <= bucket_bits <= MAX_BUCKET_BITS:
        raise CorruptSnapshotError(f"field {name!r}: expected bucket_bits in [0, {MAX_BUCKET_BITS}], found {bucket_bits!r}")
    if spec.get("block_bits", BLOCK_BITS) != BLOCK_BITS:
        raise CorruptSnapshotError(f"field {name!r}: expected block_bits {BLOCK_BITS}, found {spec.get('block_bits')!r}")
    int8 = kind == "quantised" and spec.get("dtype") == "int8"
    index = KeyIndex(
        fingerprints=get("index/fingerprints"),
        bucket_offsets=get("index/bucket_offsets"),
        block_bases=get("index/block_bases"),
        bucket_bits=bucket_bits,
    )
    f = Field(
        name=name,
        kind=kind,
        dim=int(spec["dim"]),
        k=spec.get("k"),
        features=int(spec["features"]),
        rows=int(spec["rows"]),
        aliased=int(spec["aliased"]),
        index=index,
        mean=cast("npt.NDArray[np.float32]", get("mean")),  # required: get() raises if absent
        codebook=get("codebook") if kind in CODEBOOK_KINDS else None,
        masks=get("masks") if kind in CODEBOOK_KINDS else None,
        vectors=get("vectors") if kind not in CODEBOOK_KINDS else None,
        counts=get("counts", required=False),
        scale=get("scale") if int8 else None,
        bias=get("bias") if int8 else None,
        attrs=spec.get("attrs", {}),
        arrays=mine,
    )
    _check_shapes(f)
    return f


def _check_shapes(f: Field) -> None:
    """Cross-array consistency a lookup relies on (a mask past k would read out of bounds)."""
    problems = []
    if f.index.fingerprints.shape != (f.rows,):
        problems.append(f"fingerprints {f.index.fingerprints.shape} for {f.rows} rows")
    if f.index.bucket_offsets.shape != ((1 << f.index.bucket_bits) + 1,):
        problems.append(f"bucket_offsets {f.index.bucket_offsets.shape} for {f.index.bucket_bits} bucket bits")
    if f.index.block_bases.shape != (((1 << f.index.bucket_bits) >> BLOCK_BITS) + 2,):
        problems.append(f"block_bases {f.index.block_bases.shape} for {f.index.bucket_bits} bucket bits")
    if f.dim < 1 or (f.kind in CODEBOOK_KINDS and (not isinstance(f.k, int) or f.k < 1)):
        problems.append(f"dim {f.dim}, k {f.k!r}: expected positive integers")
    if f.mean.shape != (f.dim,):
        problems.append(f"mean {f.mean.shape} for dim {f.dim}")
    if f.codebook is not None:
        allowed = RESIDUAL_CODEBOOK_DTYPES if f.kind == "residual" else ("float32",)
        if f.codebook.dtype.name not in allowed:
            problems.append(f"codebook of dtype {f.codebook.dtype} in a {f.kind} field, expected {' or '.join(allowed)}")
    if f.kind == "compressed":
        assert f.codebook is not None and f.masks is not None
        if f.codebook.shape != (f.k, f.dim):
            problems.append(f"codebook {f.codebook.shape} for k={f.k}, dim={f.dim}")
        if f.masks.shape != (f.rows,):
            problems.append(f"masks {f.masks.shape} for {f.rows} rows")
    elif f.kind == "product":
        assert f.codebook is not None and f.masks is not None
        m = f.codebook.shape[0] if f.codebook.ndim == 3 else 0
        if f.codebook.ndim != 3 or m < 1 or f.codebook.shape != (m, f.k, f.dim // m) or f.dim % m:
            problems.append(f"codebooks {f.codebook.shape} for k={f.k}, dim={f.dim} (expected (M, k, dim / M))")
        elif f.masks.shape != (f.rows, m):
            problems.append(f"masks {f.masks.shape} for {f.rows} rows of {m} slices")
    elif f.kind == "residual":
        assert f.codebook is not None and f.masks is not None
        s = f.codebook.shape[0] if f.codebook.ndim == 3 else 0
        if f.codebook.ndim != 3 or s < 1 or f.codebook.shape != (s, f.k, f.dim):
            problems.append(f"codebooks {f.codebook.shape} for k={f.k}, dim={f.dim} (expected (S, k, dim))")
        elif f.masks.shape != (f.rows, s):
            problems.append(f"masks {f.masks.shape} for {f.rows} rows of {s} stages")
    else:
        assert f.vectors is not None
        if f.vectors.shape != (f.rows, f.dim):
            problems.append(f"vectors {f.vectors.shape} for {f.rows} rows of dim {f.dim}")
        want = {"dense": np.float32, "quantised": np.float16 if f.scale is None else np.uint8}[f.kind]
        if f.vectors.dtype != want:
            problems.append(f"vectors of dtype {f.vectors.dtype} in a {f.kind} field, expected {np.dtype(want)}")
        for extra in (f.scale, f.bias):
            if extra is not None and extra.shape != (f.rows,):
                problems.append(f"scale/bias {extra.shape} for {f.rows} rows")
    if problems:
        raise CorruptSnapshotError(f"field {f.name!r}: inconsistent shapes: " + "; ".join(problems))


def open_current(store: str | os.PathLike[str]) -> Snapshot:
    """Open the snapshot that the store's CURRENT pointer names."""
    layout = StoreLayout(store)
    return open_snapshot(layout.snapshot_dir(layout.current()))
