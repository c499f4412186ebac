"""The value checks shared by every reader."""

from __future__ import annotations

import numpy as np
import pytest

from saec.loaders import (
    DuplicateIdError,
    InvalidCountError,
    NonFiniteVectorError,
    UnsupportedDtypeError,
    check_counts,
    check_finite,
    check_unique,
)


@pytest.mark.parametrize(
    "ids",
    [
        np.array([5, 3, 9, 1], dtype=np.int64),
        np.array([2**64 - 1, 0, 2**63], dtype=np.uint64),
        np.array(["a", "b", "ab"]),
        np.array(["a", "b", "ab"], dtype=object),
        np.array([b"a", b"b"]),
        np.array([], dtype=np.int64),
        np.array([7]),
    ],
)
def test_unique_ids_pass(ids: np.ndarray) -> None:
    check_unique(ids, "user")


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        (np.array([5, 3, 9, 3, 5]), r"id 3 at rows 1 and 3 \(2 of 5 rows repeat an earlier id\)"),
        (np.array(["x", "y", "x"], dtype=object), "id 'x' at rows 0 and 2"),
        (np.array(["x", "y", "y", "y"]), r"id 'y' at rows 1 and 2 \(2 of 4 rows"),
        (np.array([2**64 - 1, 1, 2**64 - 1], dtype=np.uint64), f"id {2**64 - 1} at rows 0 and 2"),
    ],
)
def test_duplicate_ids_name_the_first_repeat(ids: np.ndarray, expected: str) -> None:
    with pytest.raises(DuplicateIdError, match=expected) as caught:
        check_unique(ids, "user", path="t.npz")
    assert str(caught.value).startswith("t.npz: field 'user': expected unique ids, found id")


def test_duplicates_among_a_million_ids() -> None:
    ids = np.random.default_rng(0).permutation(1_000_000).astype(np.int64)
    ids[999_999] = ids[500_000]
    with pytest.raises(DuplicateIdError, match="at rows 500000 and 999999"):
        check_unique(ids, "user")


def test_ids_mixing_types() -> None:
    with pytest.raises(UnsupportedDtypeError, match="expected all integers or all strings"):
        check_unique(np.array(["a", 1, "1"], dtype=object), "user")


def test_finite_vectors_pass_even_when_their_sum_is_huge() -> None:
    vectors = np.full((1_000, 8), np.finfo(np.float32).max, dtype=np.float32)
    check_finite(vectors, "user")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_vectors_name_row_and_column(bad: float) -> None:
    vectors = np.zeros((100, 4), np.float32)
    vectors[37, 2] = bad
    vectors[80, 0] = bad
    with pytest.raises(
        NonFiniteVectorError,
        match=f"row 1037 holds {bad} \\(column 2\\).*2 non-finite vectors in rows 1000..1099",
    ):
        check_finite(vectors, "user", row_offset=1_000)


def test_counts() -> None:
    check_counts(np.array([0, 5, 2**40]), "user")
    check_counts(np.array([], np.int64), "user")
    with pytest.raises(InvalidCountError, match="count at row 12 is -1; expected a frequency >= 0"):
        check_counts(np.array([3, -1, -5]), "user", row_offset=11)


def test_string_hash_collisions_are_settled_by_comparing_strings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from saec.loaders import checks

    def all_equal(ids: np.ndarray) -> np.ndarray:
        return np.zeros(len(ids), dtype=np.uint64)

    monkeypatch.setattr(checks, "_string_hashes", all_equal)
    check_unique(np.array(["a", "b", "c"], dtype=object), "user")
    with pytest.raises(DuplicateIdError, match="id 'b' at rows 1 and 3"):
        check_unique(np.array(["a", "b", "c", "b"]), "user")


def test_string_ids_hash_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    from saec.loaders import checks

    monkeypatch.setattr(checks, "_HASH_BLOCK", 1_000)
    ids = np.char.add("feature-", np.arange(2_500).astype(str)).astype(object)
    check_unique(ids, "user")
    ids[2_499] = "feature-2000"  # the first row of the third block
    with pytest.raises(DuplicateIdError, match="at rows 2000 and 2499"):
        check_unique(ids, "user")
    check_unique(np.array([b"x", b"x\x01", b"y"], dtype=object), "user")
    with pytest.raises(DuplicateIdError, match="id b'x' at rows 0 and 2"):
        check_unique(np.array([b"x", b"y", b"x"], dtype=object), "user")


def test_float_ids_are_refused() -> None:
    with pytest.raises(UnsupportedDtypeError, match="expected integers or strings, found float64"):
        check_unique(np.array([1.0, 2.0]), "user")
