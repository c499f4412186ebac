"""Initial centroids: top-k, random rows, k-means++."""

from __future__ import annotations

import numpy as np
import pytest

from saec.compress._kernels import GROUP_ROWS, _draw
from saec.compress._rank import largest_rows, top_rows
from saec.compress.init import initial_rows, kmeans_plusplus_rows, random_rows
from tests.compress._data import blobs, brute_sqdist


def test_topk_takes_the_k_most_frequent_rows_ties_to_the_lower_row() -> None:
    counts = np.array([3, 9, 1, 9, 5, 3, 0, 5, 3], dtype=np.int64)
    x = np.arange(9 * 2, dtype=np.float32).reshape(9, 2)
    rows = initial_rows(x, 5, "topk", counts, np.random.default_rng(0))
    # 9, 9, 5, 5, then the first of the three 3s.
    assert rows.tolist() == [1, 3, 4, 7, 0]


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint32, np.uint64])
def test_top_rows_on_every_integer_dtype(dtype: type) -> None:
    counts = np.array([7, 2, 7, 2**31 - 1, 0, 7], dtype=dtype)
    assert top_rows(counts, 3).tolist() == [3, 0, 2]
    assert largest_rows(counts, 3).tolist() == [0, 2, 3]


def test_top_rows_of_huge_uint64_counts() -> None:
    counts = np.array([2**64 - 1, 1, 2**63 + 5, 2**63 + 5], dtype=np.uint64)
    assert top_rows(counts, 3).tolist() == [0, 2, 3]


def test_largest_rows_matches_a_stable_sort() -> None:
    counts = np.random.default_rng(0).integers(0, 50, size=10_000)
    expected = np.argsort(-counts, kind="stable")[:1234]
    np.testing.assert_array_equal(largest_rows(counts, 1234), np.sort(expected))
    np.testing.assert_array_equal(top_rows(counts, 1234), expected)


def test_random_rows_are_distinct_and_seeded() -> None:
    a = random_rows(1000, 100, np.random.default_rng(5))
    b = random_rows(1000, 100, np.random.default_rng(5))
    c = random_rows(1000, 100, np.random.default_rng(6))
    assert len(np.unique(a)) == 100 and a.max() < 1000
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_kmeans_plusplus_finds_every_blob_even_the_rare_ones() -> None:
    # Cluster sizes fall off as 1/rank^2: uniform draws miss the small blobs.
    x, truth, _ = blobs(20_000, 9, 12, seed=3, spread=0.01, zipf=2.0)
    assert np.bincount(truth).min() < 0.01 * len(x)
    uniform = random_rows(len(x), 12, np.random.default_rng(0))
    assert len(set(truth[uniform])) < 12
    rows = kmeans_plusplus_rows(x, 12, np.random.default_rng(0))
    assert sorted(truth[rows]) == list(range(12))


def test_kmeans_plusplus_is_seeded() -> None:
    x, _, _ = blobs(3000, 17, 10, seed=4)
    a = kmeans_plusplus_rows(x, 10, np.random.default_rng(1))
    b = kmeans_plusplus_rows(x, 10, np.random.default_rng(1))
    c = kmeans_plusplus_rows(x, 10, np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(np.unique(a)) == 10


def test_kmeans_plusplus_on_identical_rows_still_returns_k_rows() -> None:
    x = np.ones((50, 9), dtype=np.float32)
    rows = kmeans_plusplus_rows(x, 5, np.random.default_rng(0))
    assert rows.shape == (5,) and rows.max() < 50


def test_kmeans_plusplus_potential_matches_sklearn() -> None:
    """Greedy k-means++: the potential it leaves is scikit-learn's, on average over seeds.

    Drawing one candidate a step instead of 2 + ln k leaves about 25% more on this data.
    """
    cluster = pytest.importorskip("sklearn.cluster")
    x, _, _ = blobs(5000, 9, 40, seed=0, spread=0.2)

    def potential(rows: np.ndarray) -> float:
        return float(brute_sqdist(x, x[rows]).min(axis=1).sum())

    ours = np.mean([potential(kmeans_plusplus_rows(x, 30, np.random.default_rng(s))) for s in range(10)])
    theirs = np.mean([potential(cluster.kmeans_plusplus(x, 30, random_state=s)[1]) for s in range(10)])
    assert ours <= 1.05 * theirs


def test_kmeans_plusplus_does_not_depend_on_threads() -> None:
    x, _, _ = blobs(70_000, 9, 50, seed=5, spread=0.3)  # three blocks of work a step
    one = kmeans_plusplus_rows(x, 40, np.random.default_rng(3), threads=1)
    two = kmeans_plusplus_rows(x, 40, np.random.default_rng(3), threads=2)
    np.testing.assert_array_equal(one, two)


def _reference_kmeans_plusplus(x: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """Greedy k-means++ written plainly, in float64, drawing in the same order."""
    x = x.astype(np.float64)
    n, trials = len(x), 2 + int(np.log(k))
    chosen = [int(rng.integers(n))]
    closest = ((x - x[chosen[0]]) ** 2).sum(axis=1)
    for _ in range(1, k):
        cumulative = np.cumsum(closest)
        draws = rng.random(trials) * cumulative[-1]
        candidates = np.minimum(np.searchsorted(cumulative, draws, side="right"), n - 1)
        d = np.minimum(((x[None, :, :] - x[candidates][:, None, :]) ** 2).sum(axis=2), closest)
        best = int(np.argmin(d.sum(axis=1)))
        chosen.append(int(candidates[best]))
        closest = d[best]
    return chosen


def test_kmeans_plusplus_matches_a_plain_float64_version() -> None:
    x, truth, _ = blobs(70_000, 9, 50, seed=6, spread=0.3)  # three blocks of work a step
    # Sorted by blob, each block of work sees different blobs: all blocks must count.
    x = x[np.argsort(truth, kind="stable")]
    x -= x.mean(axis=0)
    ours = kmeans_plusplus_rows(x, 15, np.random.default_rng(11), threads=2)
    assert ours.tolist() == _reference_kmeans_plusplus(x, 15, np.random.default_rng(11))


def test_weighted_draw_follows_the_weights_and_skips_zero_weights() -> None:
    n = 5000  # five groups of rows, the last one partial
    weights = np.zeros(n, dtype=np.float32)
    hot = np.array([0, 1, 1023, 1024, 3000, 4999])
    weights[hot] = [1.0, 2.0, 3.0, 4.0, 5.0, 5.0]
    group_sums = np.add.reduceat(weights.astype(np.float64), np.arange(0, n, GROUP_ROWS))
    draws = np.array([_draw(weights, group_sums, u, n) for u in np.random.default_rng(0).random(30_000)])
    assert set(np.unique(draws)) == set(hot.tolist())
    freq = np.bincount(draws, minlength=n)[hot] / len(draws)
    np.testing.assert_allclose(freq, weights[hot] / weights.sum(), atol=0.01)
    # The very top of the range, past what rounding may leave in the last group's rows.
    assert _draw(weights, group_sums, np.nextafter(1.0, 0.0), n) == 4999
    assert _draw(np.zeros(n, dtype=np.float32), np.zeros(5), 0.5, n) == n // 2
