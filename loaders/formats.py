"""Which format a path holds, and the reader that opens it.

The format comes from, in order: the ``format`` argument, the spec's ``format``, the path's
suffix, the file's first bytes. Readers are imported on demand, so opening an ``.npz``
imports neither pyarrow nor PyTorch.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from saec.loaders._npy import DAMAGED
from saec.loaders.errors import InputNotFoundError, UnknownFormatError, UnreadableInputError
from saec.loaders.source import TableSource
from saec.loaders.spec import FORMATS, SpecLike, load_spec

_SUFFIXES = {
    ".npz": "npz",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".pt": "torch",
    ".pth": "torch",
    ".bin": "torch",
    ".ckpt": "torch",
}
_NPY_MAGIC = b"\x93NUMPY"
_PARQUET_MAGIC = b"PAR1"
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_2 = b"\x80\x02"  # the legacy (pre-1.6) torch.save format starts with a pickle
_ONE_ARRAY = (
    "a single .npy file holds one array; save a field's arrays as '<field>.ids.npy', "
    "'<field>.vectors.npy' and optionally '<field>.counts.npy' in one directory and open "
    "the directory (or np.savez them into one .npz)"
)


def open_table(
    path: str | os.PathLike[str], spec: SpecLike = None, *, format: str | None = None
) -> TableSource[Any]:
    """Open the embedding table at ``path``: a ``.npz``, a directory of ``.npy`` files, a
    Parquet file, or a PyTorch / TorchRec state dict.

    ``spec`` is a :class:`loaders.TableSpec`, a mapping, a ``.json``/``.toml`` spec file, or
    None (every field, default names). ``format`` (``npz``, ``npy``, ``parquet``, ``torch``)
    overrides detection.
    """
    table_spec = load_spec(spec)
    chosen = format or table_spec.format or detect_format(path)
    if chosen == "npz":
        from saec.loaders.numpy_table import NpzTable

        return NpzTable(path, table_spec)
    if chosen == "npy":
        from saec.loaders.numpy_table import NpyDirTable

        return NpyDirTable(path, table_spec)
    if chosen == "parquet":
        from saec.loaders.parquet_table import ParquetTable

        return ParquetTable(path, table_spec)
    if chosen == "torch":
        from saec.loaders.torch_table import TorchTable

        return TorchTable(path, table_spec)
    raise UnknownFormatError(
        f"format: expected one of {list(FORMATS)}, found {chosen!r}", path=path
    )


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of ``path`` by its suffix, else by its first bytes: one of
    ``npz``, ``npy`` (a directory), ``parquet``, ``torch``."""
    path = Path(path)
    if path.is_dir():
        if any(path.glob("*.npy")):
            return "npy"
        raise UnknownFormatError(
            "expected a directory of .npy files (e.g. 'user.ids.npy', 'user.vectors.npy'), "
            f"found none among {sorted(p.name for p in path.iterdir())[:20]}",
            path=path,
        )
    if not path.exists():
        raise InputNotFoundError("no such file or directory", path=path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        raise UnknownFormatError(_ONE_ARRAY, path=path)
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    try:
        with path.open("rb") as fp:
            head = fp.read(8)
    except OSError as exc:
        raise UnreadableInputError(f"cannot read the file: {exc}", path=path) from exc
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    if head.startswith(_NPY_MAGIC):
        raise UnknownFormatError(_ONE_ARRAY, path=path)
    if head.startswith(_ZIP_MAGIC):
        return _zip_format(path)
    if head.startswith(_PICKLE_PROTOCOL_2):
        return "torch"
    raise UnknownFormatError(
        f"expected an .npz, .parquet or PyTorch file, found a {suffix or 'suffix-less'} file "
        f"starting {head!r}; pass format= or set format in the spec",
        path=path,
    )


def _zip_format(path: Path) -> str:
    """npz and torch.save both write zip archives; their member names tell them apart."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except DAMAGED as exc:
        raise UnreadableInputError(f"not a readable zip archive: {exc}", path=path) from exc
    if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        return "torch"
    if any(n.endswith(".npy") for n in names):
        return "npz"
    raise UnknownFormatError(
        f"expected an .npz (members '*.npy') or a torch.save archive (member 'data.pkl'), "
        f"found members {names[:20]}",
        path=path,
    )
