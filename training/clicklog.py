"""Reading a user's own click log from CSV or Parquet.

One row per impression: a label column, categorical feature columns and, optionally, a
time column. Rows are put in time order (a stable sort, so equal times keep the file's
order; without a time column the file's order is taken as time order) and cut into
equal-count segments. CSV feature columns are read as text, so ids such as zip codes keep
their leading zeros; Parquet columns keep their integer or string type. A multi-valued
column is a list column (Parquet) or a text column with a separator (``tags="a|b|c"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from saec.training.data import ClickLog, Field, encode_bags, encode_values, make_click_log
from saec.training.errors import DataError

PARQUET_SUFFIXES = (".parquet", ".pq")


def read_click_log(
    path: str | Path,
    *,
    label: str,
    categorical: Sequence[str],
    time: str | None = None,
    label_threshold: float | None = None,
    multi_valued: Mapping[str, str] | None = None,
    segments: int = 20,
    name: str | None = None,
) -> ClickLog:
    """A :class:`ClickLog` from a CSV or Parquet file.

    Args:
        path: ``.csv`` (optionally compressed, e.g. ``.csv.gz``) or ``.parquet``/``.pq``.
        label: the label column: 0/1 or boolean, or numeric with ``label_threshold``.
        categorical: feature columns, in the order the model concatenates them.
        time: column giving the time order (any sortable type); None keeps file order.
        label_threshold: label is ``value >= label_threshold`` (e.g. 4 for star ratings).
        multi_valued: column -> separator for text columns holding several ids per row
            (Parquet list columns need no entry).
        segments: equal-count segments ("hours").
        name: data set name for reports; default the file name.
    """
    path = Path(path)
    multi_valued = dict(multi_valued or {})
    wanted = [label, *categorical, *([time] if time else [])]
    if len(set(categorical)) != len(categorical) or label in categorical or (time and time in categorical):
        raise DataError(f"expected distinct label, time and categorical columns, found label={label!r} time={time!r} categorical={list(categorical)}")
    table = _read_table(path, wanted, categorical)
    missing = [c for c in wanted if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: expected columns {missing}, found {table.column_names}")
    if table.num_rows == 0:
        raise DataError(f"{path}: expected at least one row, found none")
    if time:
        if table.column(time).null_count:
            raise DataError(f"{path}: time column {time!r} has {table.column(time).null_count} empty values")
        table = table.take(pc.sort_indices(table, sort_keys=[(time, "ascending")]))
    y = _labels(table.column(label), label, label_threshold)
    fields = [_field(table.column(c), c, multi_valued.get(c)) for c in categorical]
    return make_click_log(
        name or path.name,
        fields,
        y,
        segments,
        notes=f"{path.name}: label {label!r}{f' >= {label_threshold:g}' if label_threshold is not None else ''}, "
        f"{'ordered by ' + repr(time) if time else 'file order'}",
    )


def _read_table(path: Path, wanted: Sequence[str], categorical: Sequence[str]) -> pa.Table:
    if not path.exists():
        raise DataError(f"expected a click log at {path}, found no file")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        schema = pq.read_schema(path)
        return pq.read_table(path, columns=[c for c in wanted if c in schema.names])
    try:
        header = pacsv.open_csv(path).schema.names
        convert = pacsv.ConvertOptions(
            column_types={c: pa.string() for c in categorical},
            include_columns=[c for c in wanted if c in header],
            strings_can_be_null=True,
        )
        return pacsv.read_csv(path, convert_options=convert)
    except pa.ArrowInvalid as exc:
        raise DataError(f"{path}: could not parse as CSV: {exc}") from exc


def _labels(col: pa.ChunkedArray, name: str, threshold: float | None) -> np.ndarray:
    if col.null_count:
        raise DataError(f"label column {name!r}: expected no empty values, found {col.null_count}")
    if pa.types.is_boolean(col.type):
        return col.to_numpy(zero_copy_only=False).astype(np.float32)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        raise DataError(f"label column {name!r}: expected numbers or booleans, found {col.type}")
    v = col.to_numpy(zero_copy_only=False).astype(np.float64)
    if threshold is not None:
        return (v >= threshold).astype(np.float32)
    if not np.all((v == 0) | (v == 1)):
        raise DataError(f"label column {name!r}: expected 0/1 (or pass a label threshold), found values {np.unique(v)[:10].tolist()}")
    return v.astype(np.float32)


def _field(col: pa.ChunkedArray, name: str, separator: str | None) -> Field:
    arr = col.combine_chunks()
    if separator is not None:
        if not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
            raise DataError(f"column {name!r}: a separator needs a text column, found {arr.type}")
        arr = pc.split_pattern(arr, pattern=separator)
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        # Empty or null bags become rows of no feature; offsets index the flat values.
        arr = arr.fill_null(pa.scalar([], type=arr.type))
        offsets = arr.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
        flat = arr.flatten().to_numpy(zero_copy_only=False)
        return encode_bags(name, flat, offsets - offsets[0])
    return encode_values(name, arr.to_numpy(zero_copy_only=False))
