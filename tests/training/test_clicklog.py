"""The CSV / Parquet adapter on small files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from saec.training.clicklog import read_click_log  # noqa: E402
from saec.training.errors import DataError  # noqa: E402

CSV = "ts,clicked,user,zip,tags\n3,1,u1,02134,a|b\n1,0,u2,,b\n2,1,u1,90210,\n4,0,u3,02134,c|a|b\n"


def test_csv_sorted_by_time_with_text_ids_and_bags(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text(CSV)
    log = read_click_log(path, label="clicked", categorical=["user", "zip", "tags"], time="ts", multi_valued={"tags": "|"}, segments=2)
    assert log.labels.tolist() == [0, 1, 1, 0]  # ts order 1, 2, 3, 4
    user, zip_code, tags = log.fields
    assert user.vocab[user.codes.ravel()].tolist() == ["", "u2", "u1", "u1", "u3"][1:]
    # Zip codes stay text (leading zero kept); the blank one is "no feature".
    assert zip_code.codes.ravel().tolist() == [0, 1, 2, 2]
    assert zip_code.vocab[2] == "02134"
    assert tags.vocab[tags.codes].tolist() == [["b", "", ""], ["", "", ""], ["a", "b", ""], ["c", "a", "b"]]


def test_parquet_with_threshold_label_and_list_column(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    table = pa.table({"ts": [3, 1, 2, 4], "rating": [5, 2, 4, 1], "user": [10, 20, 10, None], "tags": [["a", "b"], ["b"], None, ["c"]]})
    pq.write_table(table, path)
    log = read_click_log(path, label="rating", label_threshold=4, categorical=["user", "tags"], time="ts", segments=2)
    assert log.labels.tolist() == [0, 1, 1, 0]
    user, tags = log.fields
    assert user.vocab.dtype == np.int64
    assert user.codes.ravel().tolist() == [1, 2, 2, 0]
    assert tags.codes.tolist() == [[1, 0], [0, 0], [2, 1], [3, 0]]


def test_file_order_without_time_column(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text(CSV)
    log = read_click_log(path, label="clicked", categorical=["user"], segments=2)
    assert log.labels.tolist() == [1, 0, 1, 0]


def test_missing_column_and_bad_labels_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text(CSV)
    with pytest.raises(DataError, match=r"expected columns \['nope'\]"):
        read_click_log(path, label="clicked", categorical=["nope"], segments=2)
    with pytest.raises(DataError, match="expected 0/1"):
        read_click_log(path, label="ts", categorical=["user"], segments=2)


def test_null_like_text_is_a_category_unless_named_missing(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("clicked,zip\n1,NA\n0,nan\n1,null\n0,N/A\n1,\n0,NA\n")
    log = read_click_log(path, label="clicked", categorical=["zip"], segments=2)
    (zip_code,) = log.fields
    # Four distinct category values; only the empty cell is "no feature".
    assert zip_code.codes.ravel().tolist() == [1, 2, 3, 4, 0, 1]
    assert sorted(zip_code.vocab[1:].tolist()) == ["N/A", "NA", "nan", "null"]
    log = read_click_log(path, label="clicked", categorical=["zip"], segments=2, null_values=["", "NA", "N/A"])
    assert log.fields[0].codes.ravel().tolist() == [0, 1, 2, 0, 0, 0]


def test_errors_list_every_column_and_supported_types(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text(CSV)
    with pytest.raises(DataError, match=r"found the file's columns \['ts', 'clicked', 'user', 'zip', 'tags'\]"):
        read_click_log(path, label="clicked", categorical=["nope"], segments=2)
    other = tmp_path / "log.json"
    other.write_text("{}")
    with pytest.raises(DataError, match=r"unsupported file type; supported: \.csv, \.csv\.gz, .*\.parquet, \.pq"):
        read_click_log(other, label="clicked", categorical=["user"], segments=2)
