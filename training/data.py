"""A click log in time order, its categorical fields encoded, split into segments.

Every field is stored as integer codes of shape ``(n, width)``: ``width`` is 1 for a
single-valued field and the longest bag for a multi-valued one (genres). Code 0 means
"no feature" (missing value, bag padding, or a feature not seen yet); codes ``1..V`` are given
in order of first appearance in time, so the features seen before row ``r`` are exactly the
codes ``1..live`` with ``live`` the largest code in rows ``< r``. That makes the growing
embedding table of the paper a prefix of one preallocated table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from saec.training.errors import DataError


@dataclass(frozen=True)
class Field:
    """One categorical field.

    Attributes:
        name: field name; also the salt of its keys in the store (``hash_ids(ids, name)``).
        codes: int64 ``(n, width)``; 0 = no feature, ``1..V`` by first appearance.
        vocab: ``(V + 1,)`` raw ids (int64 or str), ``vocab[c]`` is the raw id of code ``c``;
            ``vocab[0]`` is a placeholder.
    """

    name: str
    codes: npt.NDArray[np.int64]
    vocab: npt.NDArray

    @property
    def size(self) -> int:
        """Number of distinct features in the whole log (V)."""
        return len(self.vocab) - 1

    @property
    def multi_valued(self) -> bool:
        return self.codes.shape[1] > 1


@dataclass(frozen=True)
class ClickLog:
    """Rows in time order with binary labels, split into equal-count segments ("hours").

    Attributes:
        name: data set name for reports.
        fields: the categorical fields, all with ``n`` rows.
        labels: float32 ``(n,)`` in {0, 1}.
        bounds: int64 ``(segments + 1,)`` row offsets; segment ``s`` is ``bounds[s]:bounds[s+1]``.
        notes: one line on where the data came from and how it was labelled.
    """

    name: str
    fields: tuple[Field, ...]
    labels: npt.NDArray[np.float32]
    bounds: npt.NDArray[np.int64]
    notes: str = ""
    _live: dict[int, npt.NDArray[np.int64]] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.labels)
        for f in self.fields:
            if f.codes.shape[0] != n:
                raise DataError(f"field {f.name!r}: expected {n} rows, found {f.codes.shape[0]}")
        if self.bounds[0] != 0 or self.bounds[-1] != n or np.any(np.diff(self.bounds) <= 0):
            raise DataError(f"segment bounds must rise strictly from 0 to {n}, found {self.bounds.tolist()}")

    @property
    def n_rows(self) -> int:
        return len(self.labels)

    @property
    def n_segments(self) -> int:
        return len(self.bounds) - 1

    def segment(self, s: int) -> slice:
        """Rows of segment ``s``."""
        return slice(int(self.bounds[s]), int(self.bounds[s + 1]))

    def live(self, f: int) -> npt.NDArray[np.int64]:
        """int64 ``(segments + 1,)``: features of field ``f`` seen before each segment bound.

        ``live(f)[s]`` is the number of distinct features in segments ``< s``, which is also
        the largest code seen there (codes are given by first appearance).
        """
        if f not in self._live:
            codes = self.fields[f].codes
            row_max = np.maximum.accumulate(codes.max(axis=1))
            at = np.zeros(self.n_segments + 1, dtype=np.int64)
            at[1:] = row_max[self.bounds[1:] - 1]
            self._live[f] = at
        return self._live[f]

    def counts(self, f: int, end_segment: int) -> npt.NDArray[np.int64]:
        """int64 ``(V + 1,)``: occurrences of each code of field ``f`` in segments ``< end_segment``.

        Index 0 (no feature) is set to 0.
        """
        end = int(self.bounds[end_segment])
        c = np.bincount(self.fields[f].codes[:end].ravel(), minlength=self.fields[f].size + 1)
        c[0] = 0
        return c.astype(np.int64)

    def summary(self) -> dict[str, object]:
        """Plain numbers for reports: rows, positive rate, segments and field sizes."""
        return {
            "rows": self.n_rows,
            "positive_rate": float(self.labels.mean()),
            "segments": self.n_segments,
            "fields": {f.name: f.size for f in self.fields},
        }


def encode_values(name: str, values: npt.ArrayLike) -> Field:
    """Encode a single-valued column, in time order, into codes by first appearance.

    Args:
        name: field name.
        values: ``(n,)`` raw ids, integers or strings; ``None``, NaN and ``""`` are missing
            and get code 0.
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"field {name!r}: expected a 1-d column, found shape {arr.shape}")
    offsets = np.arange(len(arr) + 1, dtype=np.int64)
    return encode_bags(name, arr, offsets)


def encode_bags(name: str, flat: npt.ArrayLike, offsets: npt.NDArray[np.int64]) -> Field:
    """Encode a multi-valued column given as a flat value array and row offsets.

    Args:
        name: field name.
        flat: ``(m,)`` raw ids of all rows concatenated in row (time) order.
        offsets: int64 ``(n + 1,)``; row ``i`` holds ``flat[offsets[i]:offsets[i+1]]``.

    Returns:
        a :class:`Field` whose codes are ``(n, width)`` with ``width`` the longest bag
        (at least 1), padded with 0.
    """
    flat, present = _normalise(name, np.asarray(flat))
    offsets = np.asarray(offsets, dtype=np.int64)
    n = len(offsets) - 1
    lengths = np.diff(offsets)
    row_of = np.repeat(np.arange(n), lengths)
    pos_in_row = np.arange(len(flat)) - offsets[row_of]
    width = max(1, int(lengths.max(initial=0)))

    kept = flat[present]
    codes = np.zeros((n, width), dtype=np.int64)
    if len(kept) == 0:
        return Field(name, codes, np.array([_placeholder(flat)], dtype=flat.dtype))
    uniq, first, inverse = np.unique(kept, return_index=True, return_inverse=True)
    # np.unique sorts by value; re-rank by first occurrence so codes follow time.
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[order] = np.arange(1, len(uniq) + 1)
    codes[row_of[present], pos_in_row[present]] = rank[inverse.ravel()]
    # Bags may have had missing entries in the middle; pack the codes to the left so that
    # padding is always trailing (a sort that sends zeros last keeps the codes' order).
    if width > 1:
        codes = np.take_along_axis(codes, np.argsort(codes == 0, axis=1, kind="stable"), axis=1)
        width = max(1, int((codes != 0).sum(axis=1).max(initial=0)))
        codes = np.ascontiguousarray(codes[:, :width])
    vocab = np.concatenate([np.array([_placeholder(uniq)], dtype=uniq.dtype), uniq[order]])
    return Field(name, codes, vocab)


def segment_bounds(n_rows: int, segments: int) -> npt.NDArray[np.int64]:
    """int64 ``(segments + 1,)``: equal-count segment bounds over ``n_rows`` time-ordered rows."""
    if segments < 2 or segments > n_rows:
        raise DataError(f"expected 2 <= segments <= {n_rows} rows, found segments={segments}")
    return np.linspace(0, n_rows, segments + 1).round().astype(np.int64)


def make_click_log(
    name: str,
    fields: Sequence[Field],
    labels: npt.ArrayLike,
    segments: int,
    notes: str = "",
) -> ClickLog:
    """Assemble a :class:`ClickLog` from encoded fields (rows already in time order)."""
    y = np.asarray(labels, dtype=np.float32)
    if y.ndim != 1 or len(y) == 0:
        raise DataError(f"expected a non-empty 1-d label array, found shape {y.shape}")
    if not np.all((y == 0) | (y == 1)):
        raise DataError(f"labels must be 0 or 1, found values {np.unique(y)[:10].tolist()}")
    if len(fields) == 0:
        raise DataError("expected at least one categorical field, found none")
    return ClickLog(name, tuple(fields), y, segment_bounds(len(y), segments), notes)


def _normalise(name: str, arr: npt.NDArray) -> tuple[npt.NDArray, npt.NDArray[np.bool_]]:
    """Raw ids as int64 or str, and which of them are present (not missing)."""
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64), np.ones(len(arr), dtype=bool)
    if arr.dtype.kind == "f":
        # Float ids come from readers that promoted an integer column holding blanks.
        present = ~np.isnan(arr)
        if not np.all(arr[present] == np.round(arr[present])):
            raise DataError(f"field {name!r}: expected integer or string ids, found fractional values")
        return np.where(present, arr, 0).astype(np.int64), present
    if arr.dtype.kind == "U":
        return arr, arr != ""
    if arr.dtype.kind in "SO":
        as_str = np.array(["" if v is None else _text(v) for v in arr.tolist()], dtype=str)
        return as_str, as_str != ""
    raise DataError(f"field {name!r}: expected integer or string ids, found dtype {arr.dtype}")


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _placeholder(arr: npt.NDArray) -> object:
    return "" if arr.dtype.kind == "U" else 0
