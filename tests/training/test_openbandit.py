"""The Open Bandit sample reader, on a small wheel-shaped zip made here (no download)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

pytest.importorskip("torch")

from saec.training.errors import DatasetFetchError
from saec.training.openbandit import load_open_bandit

HEADER = ",timestamp,item_id,position,click,propensity_score,user_feature_0,user_feature_1,user_feature_2,user_feature_3,user-item_affinity_0\n"


def _rows(times: list[str], items: list[int], clicks: list[int]) -> str:
    return HEADER + "".join(
        f"{i},{t},{item},1,{c},0.0125,NA,f1,f2,f3,0.0\n" for i, (t, item, c) in enumerate(zip(times, items, clicks, strict=True))
    )


def test_two_policies_joined_in_time_order(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "obp-0.4.1-py3-none-any.whl", "w") as zf:
        zf.writestr("obp/dataset/obd/random/all/all.csv",
                    _rows(["2019-11-24 00:00:03+00:00", "2019-11-24 00:00:01+00:00"], [5, 6], [0, 1]))
        zf.writestr("obp/dataset/obd/bts/all/all.csv",
                    _rows(["2019-11-24 00:00:02+00:00", "2019-11-24 00:00:04+00:00"], [7, 5], [1, 0]))
    log = load_open_bandit(segments=2, cache=tmp_path)
    assert log.labels.tolist() == [1, 1, 0, 0]  # times 1 (random), 2 (bts), 3 (random), 4 (bts)
    item = log.fields[0]
    assert item.name == "item_id" and item.vocab[item.codes.ravel()].tolist() == ["6", "7", "5", "5"]
    # "NA" is a user feature value here, not a missing one.
    assert log.fields[2].vocab[1] == "NA" and (log.fields[2].codes > 0).all()
    assert (tmp_path / "open-bandit-sample.csv").exists()


def test_a_wheel_without_the_sample_is_a_clear_error(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "obp-0.4.1-py3-none-any.whl", "w") as zf:
        zf.writestr("obp/__init__.py", "")
    with pytest.raises(DatasetFetchError, match="expected the Open Bandit sample CSVs inside"):
        load_open_bandit(cache=tmp_path)
