"""Tables kept as a PyTorch state dict (``torch.save`` of a dict of tensors).

Each field is one 2-D floating-point weight: an ``nn.Embedding``/``nn.EmbeddingBag``
(``user_emb.weight``), or a table of a TorchRec ``EmbeddingBagCollection``
(``embedding_bags.<table>.weight``, possibly under a module prefix such as
``sparse_arch.embedding_bag_collection.``) or ``EmbeddingCollection``
(``embeddings.<table>.weight``). A field's ids are its row numbers unless the spec names
an id tensor (or a ``.npy`` file beside the state dict); its counts come from a tensor the
spec names, else there are none.

PyTorch is optional (the ``training`` extra) and imported only when such a file is opened.
The file is loaded with ``weights_only=True``, which refuses pickled code, and memory-mapped
where its format allows (files written by ``torch.save`` since PyTorch 1.6).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from saec.loaders._npy import open_npy
from saec.loaders._rows import RowArrays, RowNumbers, RowRangeTable, RowReader
from saec.loaders.errors import (
    InputNotFoundError,
    MissingArrayError,
    MissingDependencyError,
    MissingFieldError,
    UnreadableInputError,
    UnsupportedDtypeError,
)
from saec.loaders.source import ResolvedField
from saec.loaders.spec import FieldSpec, TableSpec

_WEIGHT = ".weight"
_ZIP_MAGIC = b"PK\x03\x04"
# <prefix.>embedding_bags.<table>.weight (EmbeddingBagCollection) or
# <prefix.>embeddings.<table>.weight (EmbeddingCollection).
_COLLECTION_KEY = re.compile(r"(?:^|\.)(?:embedding_bags|embeddings)\.([^.]+)\.weight$")


def import_torch() -> ModuleType:
    """The torch module, or :class:`MissingDependencyError` saying how to install it."""
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(
            "reading a PyTorch state dict needs PyTorch, which is not installed; "
            "install the training extra: pip install 'saec[training]'"
        ) from exc
    return torch


@dataclass(frozen=True)
class _TensorRows:
    """A tensor of the state dict, read as numpy rows (bfloat16 widened to float32)."""

    name: str
    tensor: Any  # torch.Tensor; torch is not imported at module level

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.read(0, 0).dtype

    def read(self, start: int, stop: int) -> npt.NDArray[Any]:
        rows = self.tensor[start:stop].detach()
        if rows.dtype == import_torch().bfloat16:  # numpy has no bfloat16
            rows = rows.float()
        array: npt.NDArray[Any] = rows.numpy()
        return array


class TorchTable(RowRangeTable):
    """A ``torch.save``'d state dict of embedding weights (plain PyTorch or TorchRec)."""

    format = "torch"

    def __init__(self, path: str | os.PathLike[str], spec: TableSpec) -> None:
        super().__init__(path, spec)
        torch = import_torch()
        self._state = _load_state_dict(torch, self.path)
        self._weights = {
            key: value
            for key, value in self._state.items()
            if isinstance(value, torch.Tensor) and value.ndim == 2 and value.is_floating_point()
        }
        self._by_name = _field_names(self._weights, default=self.path.stem)

    def _discover(self) -> list[str]:
        return list(self._by_name)

    def _resolve(self, spec: FieldSpec) -> ResolvedField[RowArrays]:
        vectors = self._tensor(spec, self._weight_key(spec), "vectors")
        rows = vectors.shape[0] if vectors.shape else 0
        ids: RowReader = (
            self._tensor(spec, spec.ids, "ids") if spec.ids else RowNumbers("row numbers", rows)
        )
        counts = self._tensor(spec, spec.counts, "counts") if spec.counts else None
        return self._field_of(spec, RowArrays(ids, vectors, counts))

    def _weight_key(self, spec: FieldSpec) -> str:
        if spec.vectors:
            return spec.vectors
        for key in (self._by_name.get(spec.key), spec.key, spec.key + _WEIGHT):
            if key is not None and key in self._weights:
                return key
        raise MissingFieldError(
            f"expected an embedding weight for {spec.key!r} (a 2-D floating tensor "
            f"'{spec.key}.weight' or a TorchRec table '{spec.key}'); the file holds "
            f"{_listing(list(self._by_name))}",
            path=self.path,
            field=spec.name,
        )

    def _tensor(self, spec: FieldSpec, key: str, role: str) -> RowReader:
        torch = import_torch()
        value = self._state.get(key)
        if value is None and key.endswith(".npy"):
            # An array the training job wrote beside the state dict (e.g. string ids).
            sidecar = self.path.parent / key
            if not sidecar.is_file():
                raise MissingArrayError(
                    f"expected {role} in {key!r}, which is neither a key of the state dict "
                    f"nor a file beside it",
                    path=self.path,
                    field=spec.name,
                )
            return open_npy(sidecar, key)
        if value is None:
            raise MissingArrayError(
                f"expected {role} in tensor {key!r}, found keys {_listing(list(self._state))}",
                path=self.path,
                field=spec.name,
            )
        if not isinstance(value, torch.Tensor):
            raise UnsupportedDtypeError(
                f"{role} in {key!r}: expected a tensor, found {type(value).__name__}",
                path=self.path,
                field=spec.name,
            )
        return _TensorRows(key, value)


def _load_state_dict(torch: ModuleType, path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise InputNotFoundError("no such file", path=path)
    try:
        with path.open("rb") as fp:
            # Only the zip format written since PyTorch 1.6 can be memory-mapped.
            mmap = fp.read(4) == _ZIP_MAGIC
    except OSError as exc:
        raise UnreadableInputError(f"cannot read the file: {exc}", path=path) from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:
        # torch.load's unpickler raises whatever damaged bytes provoke (KeyError,
        # TypeError, RuntimeError, ...); all of them mean the same to a caller.
        if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in str(exc):
            raise UnreadableInputError(
                "torch.load(weights_only=True) refused the file: it holds Python objects "
                "other than tensors, numbers, strings, lists and dicts (save the state dict "
                f"and the ids as tensors). PyTorch said: {_first_line(exc)}",
                path=path,
            ) from exc
        raise UnreadableInputError(
            f"not a readable PyTorch file: {type(exc).__name__}: {_first_line(exc)}", path=path
        ) from exc
    if isinstance(state, Mapping) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        # A training checkpoint ({"state_dict": ..., "epoch": ...}) rather than a state dict.
        inner = state.get("state_dict")
        if isinstance(inner, Mapping):
            state = inner
    if not isinstance(state, Mapping):
        raise UnsupportedDtypeError(
            f"expected a state dict (a dict of tensors), found {type(state).__name__}", path=path
        )
    return state


def _field_names(weights: Mapping[str, Any], *, default: str) -> dict[str, str]:
    """Field name -> key for every 2-D floating tensor.

    TorchRec tables are named by table; when a state dict holds any, the other weights
    (dense layers) are left out. Otherwise ``m.weight`` is field ``m``, any other key is a
    field of its own name, and a bare ``weight`` (a lone module's state dict) takes the
    file's stem.
    """
    tables = {key: m.group(1) for key in weights if (m := _COLLECTION_KEY.search(key))}
    if tables:
        names = list(tables.values())
        if len(set(names)) == len(names):
            return {name: key for key, name in tables.items()}
        return {key[: -len(_WEIGHT)]: key for key in tables}  # same table name in two modules
    found: dict[str, str] = {}
    for key in weights:
        if key == "weight":
            found[default] = key
        else:
            found[key.removesuffix(_WEIGHT)] = key
    return found


def _listing(keys: list[str], limit: int = 20) -> str:
    if not keys:
        return "nothing usable"
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
