"""The Open Bandit Dataset's small sample, read from inside the ``obp==0.4.1`` wheel.

ZOZOTOWN's fashion e-commerce recommendation log (Saito et al., "Open Bandit Dataset and
Pipeline", NeurIPS 2021 datasets track), CC BY 4.0: the Open Bandit Pipeline ships 10,000
impressions from each of its two logging policies (uniform random and Bernoulli Thompson
sampling). The data never enter this repository: the wheel is fetched at run time with
``pip download --no-deps --only-binary=:all: obp==0.4.1`` into the cache, as ml-100k is.

The two ``all/all.csv`` files are joined, put in timestamp order and written once to the
cache as one CSV, which is then read by :func:`training.clicklog.read_click_log`, the
reader a user's own log goes through. Label: ``click``. Fields: item_id (80 items),
position (3 slots) and user_feature_0..3 (hashed user attributes).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from saec.training.clicklog import read_click_log
from saec.training.data import ClickLog
from saec.training.errors import DatasetFetchError
from saec.training.movielens import cache_dir, fetch_wheel

OBP_REQUIREMENT = "obp==0.4.1"
_WHEEL_GLOB = "obp-0.4.1-*.whl"
_MEMBERS = ("obp/dataset/obd/random/all/all.csv", "obp/dataset/obd/bts/all/all.csv")
CATEGORICAL = ("item_id", "position", "user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3")
CSV_NAME = "open-bandit-sample.csv"


def fetch_obp_wheel(cache: Path | None = None) -> Path:
    """Path of the ``obp==0.4.1`` wheel, downloading it with pip on first use."""
    return fetch_wheel(OBP_REQUIREMENT, _WHEEL_GLOB, "the Open Bandit Dataset sample", cache, ("--only-binary=:all:",))


def open_bandit_csv(wheel: Path, out: Path) -> Path:
    """Join the wheel's two logs in timestamp order into one CSV at ``out``; returns ``out``.

    A ``policy`` column says which log a row came from; the unnamed index and the
    affinity columns are dropped.
    """
    parts = []
    # Feature values stay text, and only an empty cell is missing (as in read_click_log).
    convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in CATEGORICAL}, null_values=[""], strings_can_be_null=True)
    try:
        with zipfile.ZipFile(wheel) as zf:
            for member in _MEMBERS:
                t = pacsv.read_csv(io.BytesIO(zf.read(member)), convert_options=convert)
                t = t.select(["timestamp", "click", *CATEGORICAL])
                parts.append(t.append_column("policy", pa.array([member.split("/")[3]] * t.num_rows)))
    except (KeyError, zipfile.BadZipFile, pa.ArrowInvalid) as exc:
        raise DatasetFetchError(f"expected the Open Bandit sample CSVs inside {wheel}, found: {exc}") from exc
    table = pa.concat_tables(parts)
    table = table.take(pc.sort_indices(table, sort_keys=[("timestamp", "ascending")]))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    pacsv.write_csv(table, tmp)
    tmp.replace(out)
    return out


def load_open_bandit(segments: int = 10, cache: Path | None = None) -> ClickLog:
    """The Open Bandit sample as a time-ordered click log (20,000 impressions).

    Args:
        segments: equal-count segments the impressions are cut into.
        cache: download cache; default :func:`training.movielens.cache_dir`.
    """
    cache = cache or cache_dir()
    path = cache / CSV_NAME
    if not path.exists():
        open_bandit_csv(fetch_obp_wheel(cache), path)
    return read_click_log(path, label="click", categorical=list(CATEGORICAL), time="timestamp", segments=segments,
                          name="Open Bandit sample (obp 0.4.1)")
