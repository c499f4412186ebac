"""Tables kept as numpy arrays: an ``.npz`` archive, or a directory of ``.npy`` files.

Both hold arrays by key; a directory is simply an unzipped ``.npz`` (key ``user.ids`` is
the member or file ``user.ids.npy``). By default field ``f`` keeps its ids in ``f.ids``,
its vectors in ``f.vectors`` and, optionally, its counts in ``f.counts``; a spec may name
other keys. Arrays are memory-mapped (or streamed, for a compressed ``.npz``), so a field
larger than memory is read a chunk at a time.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path

from saec.loaders._npy import DAMAGED, npy_files, open_npy, open_npz_member
from saec.loaders._rows import RowArrays, RowRangeTable, RowReader
from saec.loaders.errors import (
    InputNotFoundError,
    MissingArrayError,
    MissingFieldError,
    UnreadableInputError,
)
from saec.loaders.source import ResolvedField
from saec.loaders.spec import FieldSpec, TableSpec

_IDS, _VECTORS, _COUNTS = ".ids", ".vectors", ".counts"


class _KeyedArrays(RowRangeTable):
    """Fields found by array key, whatever holds the arrays."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        spec: TableSpec,
        keys: list[str],
        opener: Callable[[str], RowReader],
    ) -> None:
        super().__init__(path, spec)
        self._keys = keys
        self._open = opener

    def _discover(self) -> list[str]:
        return [k[: -len(_VECTORS)] for k in self._keys if k.endswith(_VECTORS)]

    def _resolve(self, spec: FieldSpec) -> ResolvedField[RowArrays]:
        vectors_key = _key(spec.vectors) or spec.key + _VECTORS
        if vectors_key not in self._keys:
            error = MissingArrayError if spec.vectors else MissingFieldError
            raise error(
                f"expected an array {vectors_key!r} of vectors, found {_listing(self._keys)}",
                path=self.path,
                field=spec.name,
            )
        ids_key = _key(spec.ids) or spec.key + _IDS
        if ids_key not in self._keys:
            raise MissingArrayError(
                f"expected an array {ids_key!r} of ids, found {_listing(self._keys)}",
                path=self.path,
                field=spec.name,
            )
        counts_key = _key(spec.counts) or spec.key + _COUNTS
        if counts_key not in self._keys:
            if spec.counts:
                raise MissingArrayError(
                    f"expected an array {counts_key!r} of counts, found {_listing(self._keys)}",
                    path=self.path,
                    field=spec.name,
                )
            counts = None
        else:
            counts = self._open(counts_key)
        return self._field_of(spec, RowArrays(self._open(ids_key), self._open(vectors_key), counts))


class NpzTable(_KeyedArrays):
    """An ``.npz`` archive (``np.savez`` or ``np.savez_compressed``)."""

    format = "npz"

    def __init__(self, path: str | os.PathLike[str], spec: TableSpec) -> None:
        path = Path(path)
        try:
            archive = zipfile.ZipFile(path)
        except FileNotFoundError as exc:
            raise InputNotFoundError("no such file", path=path) from exc
        except DAMAGED as exc:
            raise UnreadableInputError(f"not a readable .npz archive: {exc}", path=path) from exc
        self._archive = archive
        names = [n[: -len(".npy")] for n in archive.namelist() if n.endswith(".npy")]
        super().__init__(path, spec, names, lambda key: open_npz_member(archive, path, key))

    def close(self) -> None:
        for resolved in self._resolved.values():
            for reader in (resolved.locator.ids, resolved.locator.vectors, resolved.locator.counts):
                close = getattr(reader, "close", None)
                if close is not None:
                    close()
        self._archive.close()


class NpyDirTable(_KeyedArrays):
    """A directory of ``.npy`` files, one per array."""

    format = "npy"

    def __init__(self, path: str | os.PathLike[str], spec: TableSpec) -> None:
        path = Path(path)
        if not path.is_dir():
            raise InputNotFoundError("no such directory", path=path)
        files = npy_files(path)
        super().__init__(path, spec, list(files), lambda key: open_npy(files[key], key))


def _key(name: str | None) -> str | None:
    """A spec's array name, accepting a trailing ``.npy``."""
    if name is not None and name.endswith(".npy"):
        return name[: -len(".npy")]
    return name


def _listing(keys: list[str], limit: int = 20) -> str:
    if not keys:
        return "no arrays"
    shown = ", ".join(repr(k) for k in keys[:limit])
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"arrays {shown}{more}"
