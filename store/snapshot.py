"""Opening a published snapshot by memory map.

A snapshot is a Zarr v3 group. Its root attributes hold the manifest under the key
``saec``: format version, creation time, source, hash identity, one entry per field
and one per array with its shape, dtype and SHA-256. Every array is written as one
uncompressed chunk (codec ``bytes``, little-endian), so its chunk file *is* the array
in C order and the server maps it with ``mmap`` instead of reading it through zarr:
every worker process shares the same page-cache pages, and opening reads no array.

Per field (``<field>/`` subgroup):

- compressed: ``codebook`` float32 (k, dim), ``masks`` uint8 (rows,) (uint16 when k > 256);
- dense: ``vectors`` float32 (rows, dim);
- both: ``index/fingerprints`` uint16 (rows,), ``index/bucket_offsets`` uint16|uint32 (B+1,),
  ``index/block_bases`` uint64 (B/2048+2,) (see ``store.keyindex``), ``mean`` float32 (dim,),
  and optionally ``counts`` uint32|uint64 (rows,).
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

from saec.store.errors import CorruptSnapshotError, FormatVersionError, SnapshotNotFoundError
from saec.store.keyindex import KeyIndex
from saec.store.layout import StoreLayout

FORMAT_VERSION = 1
# Version 2 adds the "quantised" field kind (float16, or 8-bit row-wise with a float32
# scale and bias per row); a snapshot without such a field is still written as version 1.
QUANTISED_FORMAT_VERSION = 2
READABLE_FORMATS = frozenset({1, 2})
MANIFEST_KEY = "saec"
FieldKind = Literal["compressed", "dense", "quantised"]
QUANTISED_DTYPES = ("float16", "int8")


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
        codebook: float32 (k, dim) for a compressed field, else None.
        masks: uint8 or uint16 (rows,) for a compressed field, else None.
        vectors: float32 (rows, dim) for a dense field; for a quantised field float16
            (rows, dim), or uint8 (rows, dim) codes of the 8-bit row-wise form
            ``vector = code * scale + bias`` (TorchRec / FBGEMM's convention); else None.
        scale, bias: float32 (rows,) for an 8-bit quantised field, else None.
        mean: float32 (dim,): the mean of the field's (decoded) vectors.
        counts: uint32 or uint64 (rows,), or None.
        features: rows handed to the writer; ``rows`` = features - aliased are stored.
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
    codebook: npt.NDArray[np.float32] | None = None
    masks: npt.NDArray[np.unsignedinteger] | None = None
    vectors: npt.NDArray[Any] | None = None
    counts: npt.NDArray[np.unsignedinteger] | None = None
    scale: npt.NDArray[np.float32] | None = None
    bias: npt.NDArray[np.float32] | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)
    arrays: Mapping[str, ArrayInfo] = field(default_factory=dict)


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
        """Check every array file against the manifest's size and SHA-256 (reads all data).

        Raises:
            CorruptSnapshotError: naming the first array that differs.
        """
        for info in self.arrays():
            verify_array(self.path, info)


def verify_array(root: Path, info: ArrayInfo) -> None:
    """Compare one array's chunk file with its manifest entry."""
    path = chunk_path(root / info.path, len(info.shape))
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CorruptSnapshotError(f"{info.path}: chunk file {path} is missing") from None
    if size != info.nbytes:
        raise CorruptSnapshotError(f"{info.path}: expected {info.nbytes} bytes in {path}, found {size}")
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    if digest != info.sha256:
        raise CorruptSnapshotError(f"{info.path}: expected sha256 {info.sha256}, found {digest}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise CorruptSnapshotError(f"{path} is missing") from None
    except orjson.JSONDecodeError as exc:
        raise CorruptSnapshotError(f"{path} is not valid JSON: {exc}") from None


def _check_zarr_array(root: Path, info: ArrayInfo) -> None:
    """The array's own zarr.json must describe exactly the mappable layout we expect."""
    meta = _read_json(root / info.path / "zarr.json")
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


def _map(root: Path, info: ArrayInfo) -> npt.NDArray[Any]:
    path = chunk_path(root / info.path, len(info.shape))
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise CorruptSnapshotError(f"{info.path}: chunk file {path} is missing") from None
    try:
        size = os.fstat(fd).st_size
        if size != info.nbytes:
            raise CorruptSnapshotError(f"{info.path}: expected {info.nbytes} bytes in {path}, found {size}")
        mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    # A plain ndarray over the map (not np.memmap): its indexing is measurably faster.
    arr = np.frombuffer(mm, dtype=np.dtype(info.dtype).newbyteorder("<"), count=int(np.prod(info.shape)))
    return arr.reshape(info.shape)


def open_snapshot(path: str | os.PathLike[str]) -> Snapshot:
    """Open a snapshot folder by memory map. Reads metadata only.

    Raises:
        SnapshotNotFoundError: no snapshot there.
        FormatVersionError: written by a format this code cannot read.
        CorruptSnapshotError: metadata disagrees with the files.
    """
    root = Path(path)
    if not (root / "zarr.json").is_file():
        raise SnapshotNotFoundError(f"expected a snapshot (a Zarr group) at {root}, found no zarr.json")
    group = _read_json(root / "zarr.json")
    manifest = group.get("attributes", {}).get(MANIFEST_KEY)
    if not isinstance(manifest, dict):
        raise CorruptSnapshotError(f"{root}/zarr.json: expected attributes.{MANIFEST_KEY}, found none")
    fmt = manifest.get("format_version")
    if fmt not in READABLE_FORMATS:
        raise FormatVersionError(
            f"{root}: expected format_version in {sorted(READABLE_FORMATS)}, found {fmt!r}; upgrade saec"
        )
    try:
        arrays = {
            p: ArrayInfo(path=p, shape=tuple(a["shape"]), dtype=a["dtype"], sha256=a["sha256"])
            for p, a in manifest["arrays"].items()
        }
        fields = {name: _open_field(root, name, spec, arrays) for name, spec in manifest["fields"].items()}
        return Snapshot(
            path=root,
            version=manifest["version"],
            format_version=fmt,
            created=manifest["created"],
            source=manifest.get("source", ""),
            hash_name=manifest["hash"],
            fields=fields,
            manifest=manifest,
        )
    except (KeyError, TypeError) as exc:
        raise CorruptSnapshotError(f"{root}/zarr.json: manifest lacks or mistypes {exc}") from None


def _open_field(root: Path, name: str, spec: Mapping[str, Any], arrays: Mapping[str, ArrayInfo]) -> Field:
    mine = {p[len(name) + 1 :]: a for p, a in arrays.items() if p.startswith(name + "/")}

    def get(rel: str, required: bool = True) -> npt.NDArray[Any] | None:
        info = mine.get(rel)
        if info is None:
            if required:
                raise CorruptSnapshotError(f"field {name!r}: expected array {rel!r} in the manifest, found none")
            return None
        _check_zarr_array(root, info)
        return _map(root, info)

    kind = spec["kind"]
    if kind not in ("compressed", "dense", "quantised"):
        raise CorruptSnapshotError(f"field {name!r}: expected kind compressed, dense or quantised, found {kind!r}")
    int8 = kind == "quantised" and spec.get("dtype") == "int8"
    index = KeyIndex(
        fingerprints=get("index/fingerprints"),
        bucket_offsets=get("index/bucket_offsets"),
        block_bases=get("index/block_bases"),
        bucket_bits=int(spec["bucket_bits"]),
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
        mean=get("mean"),
        codebook=get("codebook") if kind == "compressed" else None,
        masks=get("masks") if kind == "compressed" else None,
        vectors=get("vectors") if kind != "compressed" else None,
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
    if f.mean.shape != (f.dim,):
        problems.append(f"mean {f.mean.shape} for dim {f.dim}")
    if f.kind == "compressed":
        assert f.codebook is not None and f.masks is not None
        if f.codebook.shape != (f.k, f.dim):
            problems.append(f"codebook {f.codebook.shape} for k={f.k}, dim={f.dim}")
        if f.masks.shape != (f.rows,):
            problems.append(f"masks {f.masks.shape} for {f.rows} rows")
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
    return open_snapshot(layout.snapshot_path(layout.current()))
