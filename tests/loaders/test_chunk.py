"""FieldChunk and FieldInfo."""

from __future__ import annotations

import numpy as np
import pytest

from saec.loaders import FieldChunk, FieldInfo, LengthMismatchError, ShapeError, UnsupportedDtypeError


def test_a_chunk_of_consistent_arrays() -> None:
    chunk = FieldChunk("user", np.arange(3), np.zeros((3, 2), np.float32), np.ones(3, np.int64))
    assert len(chunk) == 3 and chunk.dim == 2
    part = chunk.rows(1, 3)
    np.testing.assert_array_equal(part.ids, [1, 2])
    assert part.vectors.shape == (2, 2) and part.counts is not None and len(part.counts) == 2


@pytest.mark.parametrize(
    ("ids", "vectors", "counts", "error", "expected"),
    [
        (
            np.arange(3),
            np.zeros((2, 2), np.float32),
            None,
            LengthMismatchError,
            "3 ids and 2 vectors",
        ),
        (
            np.arange(3),
            np.zeros((3, 2), np.float64),
            None,
            UnsupportedDtypeError,
            "C-contiguous float32, found float64",
        ),
        (
            np.arange(3),
            np.zeros((2, 3), np.float32).T,
            None,
            UnsupportedDtypeError,
            "found non-contiguous float32",
        ),
        (np.arange(3), np.zeros(3, np.float32), None, ShapeError, r"expected shape \(n, dim\)"),
        (
            np.zeros((3, 1)),
            np.zeros((3, 2), np.float32),
            None,
            ShapeError,
            r"ids: expected shape \(n,\)",
        ),
        (
            np.arange(3),
            np.zeros((3, 2), np.float32),
            np.ones(3, np.int32),
            UnsupportedDtypeError,
            "counts: expected int64",
        ),
        (
            np.arange(3),
            np.zeros((3, 2), np.float32),
            np.ones(4, np.int64),
            LengthMismatchError,
            r"found \(4,\)",
        ),
    ],
)
def test_inconsistent_arrays_are_refused(
    ids: np.ndarray,
    vectors: np.ndarray,
    counts: np.ndarray | None,
    error: type[Exception],
    expected: str,
) -> None:
    with pytest.raises(error, match=f"field 'user': .*{expected}"):
        FieldChunk("user", ids, vectors, counts)


def test_field_info_compares_by_value() -> None:
    assert FieldInfo("user", 8, 10, True) == FieldInfo("user", 8, 10, True)
    assert FieldInfo("user", 8, None).has_counts is False
