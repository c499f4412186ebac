"""MovieLens-100k read from the real recbole==1.2.1 wheel (fetched with pip at test time)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from saec.training.errors import DataError
from saec.training.movielens import read_atomic_file


def test_wheel_parses_into_the_known_shape(movielens) -> None:
    log = movielens
    assert log.n_rows == 100_000
    sizes = log.summary()["fields"]
    assert sizes == {
        "user": 943, "item": 1682, "age": 61, "gender": 2, "occupation": 21,
        "zip_code": 795, "release_year": 73, "genre": 19,
    }
    # rating >= 4 holds for 55,375 of the 100,000 ratings.
    assert int(log.labels.sum()) == 55_375
    genre = log.fields[-1]
    assert genre.codes.shape == (100_000, 6)
    assert (genre.codes[:, 0] > 0).all()


def test_rows_are_in_time_order(movielens) -> None:
    # The earliest rating in ml-100k (timestamp 874724710) is user 259 on item 255.
    user, item = movielens.fields[0], movielens.fields[1]
    assert user.vocab[user.codes[0, 0]] == 259
    assert item.vocab[item.codes[0, 0]] == 255
    # 20 equal segments; far fewer users have appeared by the first bound than overall.
    assert movielens.n_segments == 20
    assert movielens.live(0)[1] < 943 // 4


def test_atomic_file_header_and_token_seq() -> None:
    cols = read_atomic_file("item_id:token\tclass:token_seq\n1\tAnimation Comedy\n2\t\n")
    assert cols == {"item_id": ["1", "2"], "class": [["Animation", "Comedy"], []]}
    with pytest.raises(DataError, match="name:token"):
        read_atomic_file("item_id\tclass:token_seq\n")
    with pytest.raises(DataError, match="expected 2 tab-separated"):
        read_atomic_file("a:token\tb:float\n1\n")
