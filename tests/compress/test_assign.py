"""Nearest-centroid assignment against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from saec.compress import label_dtype, nearest_centroid
from tests.compress._data import brute_sqdist


def _check_nearest(
    x: np.ndarray, centroids: np.ndarray, labels: np.ndarray, sqdist: np.ndarray
) -> None:
    d = brute_sqdist(x, centroids)
    chosen = d[np.arange(len(x)), labels.astype(np.intp)]
    scale = float(np.mean(d.min(axis=1)))
    # A float32 product may pick a near-tie; it must be no farther than rounding allows.
    np.testing.assert_allclose(chosen, d.min(axis=1), rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_allclose(sqdist, chosen, rtol=1e-4, atol=1e-6 * scale)


@pytest.mark.parametrize("dim", [9, 17])
@pytest.mark.parametrize("k", [1, 100, 300])
def test_every_label_is_the_nearest_centroid(dim: int, k: int) -> None:
    rng = np.random.default_rng(dim + k)
    x = rng.standard_normal((3000, dim)).astype(np.float32)
    centroids = rng.standard_normal((k, dim)).astype(np.float32)
    labels, sqdist = nearest_centroid(x, centroids)
    assert labels.dtype == label_dtype(k) and sqdist.dtype == np.float32
    assert labels.shape == sqdist.shape == (3000,)
    _check_nearest(x, centroids, labels, sqdist)
    assert (sqdist >= 0).all()


def test_far_from_the_origin() -> None:
    """Distances expanded about the origin would drown in float32 rounding here."""
    rng = np.random.default_rng(0)
    centroids = (1000.0 + rng.standard_normal((50, 9)) * 0.01).astype(np.float32)
    x = (centroids[rng.integers(0, 50, 5000)] + rng.standard_normal((5000, 9)) * 0.001).astype(
        np.float32
    )
    labels, sqdist = nearest_centroid(x, centroids)
    _check_nearest(x, centroids, labels, sqdist)


@pytest.mark.parametrize("chunk_rows", [1, 7, 1000, 1 << 20])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_chunks_and_threads_do_not_change_the_answer(chunk_rows: int, threads: int) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2500, 17)).astype(np.float32)
    centroids = rng.standard_normal((40, 17)).astype(np.float32)
    want_labels, want_sqdist = nearest_centroid(x, centroids)
    labels, sqdist = nearest_centroid(x, centroids, chunk_rows=chunk_rows, threads=threads)
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_allclose(sqdist, want_sqdist, rtol=1e-6, atol=1e-6)


def test_rows_on_a_centroid_are_at_distance_zero() -> None:
    rng = np.random.default_rng(2)
    centroids = rng.standard_normal((30, 9)).astype(np.float32)
    labels, sqdist = nearest_centroid(centroids.copy(), centroids)
    assert labels.tolist() == list(range(30))
    assert (sqdist >= 0).all() and sqdist.max() < 1e-5


def test_empty_input() -> None:
    labels, sqdist = nearest_centroid(np.empty((0, 9), np.float32), np.ones((3, 9), np.float32))
    assert labels.shape == sqdist.shape == (0,)


@pytest.mark.parametrize(
    ("k", "dtype"),
    [(1, np.uint8), (256, np.uint8), (257, np.uint16), (65536, np.uint16), (65537, np.uint32)],
)
def test_label_dtype(k: int, dtype: type) -> None:
    assert label_dtype(k) == np.dtype(dtype)
