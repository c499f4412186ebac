"""Reading a user's own click log from CSV or Parquet.

One row per impression: a label column, categorical feature columns and, optionally, a
time column. Rows are put in time order (a stable sort, so equal times keep the file's
order; without a time column the file's order is taken as time order) and cut into
equal-count segments. CSV feature columns are read as text, so ids such as zip codes keep
their leading zeros; Parquet columns keep their integer or string type. A multi-valued
column is a list column (Parquet) or a text column with a separator (``tags="a|b|c"``).

In a CSV only an empty cell is a missing value by default: text such as ``NA``, ``nan``,
``null`` or ``N/A`` is a category value like any other (a zip code field may well hold
"NA"), unlike pyarrow's and pandas' defaults. ``null_values`` names the texts to read as
missing instead.
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
# pyarrow decompresses these by their extension.
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".csv.lz4")
DEFAULT_NULL_VALUES = ("",)


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
    null_values: Sequence[str] = DEFAULT_NULL_VALUES,
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
        null_values: CSV texts read as missing ("no feature"); default only the empty
            cell, so ``NA``, ``nan``, ``null`` and ``N/A`` are category values.
    """
    path = Path(path)
    multi_valued = dict(multi_valued or {})
    wanted = [label, *categorical, *([time] if time else [])]
    if len(set(categorical)) != len(categorical) or label in categorical or (time and time in categorical):
        raise DataError(f"expected distinct label, time and categorical columns, found label={label!r} time={time!r} categorical={list(categorical)}")
    table, columns = _read_table(path, wanted, categorical, null_values)
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DataError(f"{path}: expected columns {missing}, found the file's columns {columns}")
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


def _read_table(path: Path, wanted: Sequence[str], categorical: Sequence[str], null_values: Sequence[str]) -> tuple[pa.Table, list[str]]:
    """The wanted columns present in the file, and every column the file has."""
    if not path.exists():
        raise DataError(f"expected a click log at {path}, found no file")
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        schema = pq.read_schema(path)
        return pq.read_table(path, columns=[c for c in wanted if c in schema.names]), list(schema.names)
    if not name.endswith(CSV_SUFFIXES):
        raise DataError(f"{path}: unsupported file type; supported: {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}")
    try:
        header = pacsv.open_csv(path).schema.names
        convert = pacsv.ConvertOptions(
            column_types={c: pa.string() for c in categorical if c in header},
            include_columns=[c for c in wanted if c in header],
            null_values=list(null_values),
            strings_can_be_null=True,
        )
        return pacsv.read_csv(path, convert_options=convert), list(header)
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
