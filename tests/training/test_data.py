"""Encoding by first appearance, bags, segments and the features seen so far."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from saec.training.data import encode_bags, encode_values, make_click_log, segment_bounds
from saec.training.errors import DataError


def test_codes_follow_first_appearance_and_missing_is_zero() -> None:
    f = encode_values("zip", np.array(["b", "a", "b", "", "c"]))
    assert f.codes.ravel().tolist() == [1, 2, 1, 0, 3]
    assert f.vocab.tolist() == ["", "b", "a", "c"]


def test_float_ids_with_blanks_become_integers() -> None:
    f = encode_values("user", np.array([5.0, np.nan, 3.0, 5.0]))
    assert f.codes.ravel().tolist() == [1, 0, 2, 1]
    assert f.vocab.dtype == np.int64 and f.vocab[1:].tolist() == [5, 3]


def test_bags_are_packed_left_and_padded_with_zero() -> None:
    f = encode_bags("genre", np.array(["x", "", "y", "x", "z"]), np.array([0, 3, 3, 5]))
    assert f.codes.tolist() == [[1, 2], [0, 0], [1, 3]]
    assert f.vocab.tolist() == ["", "x", "y", "z"]


def test_live_and_counts_per_segment() -> None:
    users = encode_values("user", np.array([7, 8, 7, 9, 7, 10]))
    log = make_click_log("t", [users], np.array([0, 1, 0, 1, 1, 0]), segments=3)
    assert log.bounds.tolist() == [0, 2, 4, 6]
    assert log.live(0).tolist() == [0, 2, 3, 4]
    assert log.counts(0, 2).tolist() == [0, 2, 1, 1, 0]


def test_bad_labels_and_segments_are_refused() -> None:
    users = encode_values("user", np.arange(4))
    with pytest.raises(DataError, match="labels must be 0 or 1"):
        make_click_log("t", [users], np.array([0, 2, 1, 0]), segments=2)
    with pytest.raises(DataError, match="segments"):
        segment_bounds(3, 5)
