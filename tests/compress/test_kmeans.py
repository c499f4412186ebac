"""Lloyd's k-means: objective against scikit-learn, consistency, determinism, edge cases."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from saec.compress import KMeansResult, kmeans
from saec.compress.init import initial_rows
from saec.compress.kmeans import BOUNDED_MAX_K, m_step
from tests.compress._data import blobs, brute_sqdist, zipf_counts

# saec.compress re-exports the function kmeans under the module's name.
kmeans_module = importlib.import_module("saec.compress.kmeans")


@pytest.mark.parametrize("dim", [9, 17])
@pytest.mark.parametrize("init", ["kmeans++", "random", "topk"])
def test_lloyd_matches_sklearn_from_the_same_start(init: str, dim: int) -> None:
    cluster = pytest.importorskip("sklearn.cluster")
    x, _, _ = blobs(8000, dim, 40, seed=dim, spread=0.15)
    counts = zipf_counts(len(x), seed=dim)
    rows = initial_rows(x - x.mean(axis=0), 30, init, counts, np.random.default_rng(3))
    start = x[rows]

    ours = kmeans(x, 30, init=start, max_iter=300, tol=0.0)
    theirs = cluster.KMeans(30, init=start, n_init=1, max_iter=300, tol=0.0).fit(x)

    assert ours.inertia == pytest.approx(theirs.inertia_, rel=0.01)
    assert np.mean(ours.labels == theirs.labels_) > 0.9


@pytest.mark.parametrize("dim", [9, 17])
def test_kmeans_plusplus_objective_within_1pc_of_sklearn(dim: int) -> None:
    cluster = pytest.importorskip("sklearn.cluster")
    x, _, _ = blobs(5000, dim, 10, seed=dim, spread=0.1, zipf=0.5)

    ours = min(kmeans(x, 10, init="kmeans++", seed=seed).inertia for seed in range(5))
    theirs = cluster.KMeans(10, init="k-means++", n_init=5, random_state=0).fit(x).inertia_

    assert ours <= 1.01 * theirs


@pytest.mark.parametrize("init", ["kmeans++", "random", "topk"])
def test_labels_are_nearest_centroids_and_inertia_their_sum(init: str) -> None:
    x, _, _ = blobs(6000, 9, 25, seed=1, spread=0.2)
    result = kmeans(x, 20, init=init, counts=zipf_counts(len(x)), seed=1)

    sample = np.random.default_rng(0).choice(len(x), 1000, replace=False)
    d = brute_sqdist(x[sample], result.centroids)
    chosen = d[np.arange(len(sample)), result.labels[sample]]
    np.testing.assert_allclose(chosen, d.min(axis=1), rtol=1e-5, atol=1e-6)
    exact = brute_sqdist(x, result.centroids)[np.arange(len(x)), result.labels].sum()
    assert result.inertia == pytest.approx(exact, rel=1e-5)


def test_data_far_from_the_origin() -> None:
    """Distances expanded about the origin would drown in float32 rounding here."""
    x, _, _ = blobs(6000, 9, 25, seed=1, spread=0.02)
    x += np.float32(300.0)
    result = kmeans(x, 20, seed=1)
    d = brute_sqdist(x, result.centroids)
    chosen = d[np.arange(len(x)), result.labels]
    np.testing.assert_allclose(chosen, d.min(axis=1), rtol=1e-3, atol=1e-6)
    assert result.inertia == pytest.approx(chosen.sum(), rel=1e-3)


def test_result_types() -> None:
    x, _, _ = blobs(2000, 17, 5, seed=2)
    result = kmeans(x, 7)
    assert isinstance(result, KMeansResult)
    assert result.centroids.dtype == np.float32 and result.centroids.shape == (7, 17)
    assert result.labels.dtype == np.uint8 and result.labels.shape == (2000,)
    assert isinstance(result.inertia, float) and isinstance(result.n_iter, int)


def test_recovers_well_separated_blobs() -> None:
    x, truth, centres = blobs(5000, 9, 8, seed=4, spread=0.02, zipf=0.0)
    result = kmeans(x, 8, seed=0)
    assert result.converged and result.n_iter < 50
    # Each found centroid sits on its own true centre.
    nearest = brute_sqdist(result.centroids, centres).argmin(axis=1)
    assert sorted(nearest) == list(range(8))
    # Same partition up to renaming of the clusters.
    assert len(set(zip(truth, result.labels, strict=True))) == 8


def test_same_seed_same_result_other_seed_other_result() -> None:
    x, _, _ = blobs(8000, 17, 30, seed=5, spread=0.3)
    a = kmeans(x, 20, seed=7)
    b = kmeans(x, 20, seed=7)
    c = kmeans(x, 20, seed=8)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.inertia == b.inertia
    assert not np.array_equal(a.centroids, c.centroids)


@pytest.mark.parametrize("k", [25, BOUNDED_MAX_K + 1])
def test_threads_do_not_change_the_result(k: int) -> None:
    x, _, _ = blobs(40_000, 9, 30, seed=6, spread=0.3)
    # Same chunking on both sides: for k past BOUNDED_MAX_K a different chunk shape changes
    # BLAS's summation order, and over 50 unconverged iterations that moves a few labels
    # (seen with numpy 2.4). The bounded E-step decides each row on its own.
    one = kmeans(x, k, seed=1, threads=1, chunk_rows=3000, max_iter=20)
    two = kmeans(x, k, seed=1, threads=2, chunk_rows=3000, max_iter=20)
    np.testing.assert_array_equal(one.labels, two.labels)
    np.testing.assert_allclose(one.centroids, two.centroids, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dim", [9, 17])
def test_bounded_e_step_leaves_every_row_on_its_nearest_centroid(dim: int) -> None:
    """Rows the bounds skip must still be on their nearest centroid, in every iteration's
    outcome: checked on all rows, in float64, after a run long enough to skip most."""
    x, _, _ = blobs(30_000, dim, 60, seed=dim, spread=0.4)
    result = kmeans(x, 50, seed=2, tol=0.0, max_iter=40)
    d = brute_sqdist(x, result.centroids)
    chosen = d[np.arange(len(x)), result.labels]
    # Only float32 rounding of a true tie may pick a centroid that is not the nearest.
    np.testing.assert_allclose(chosen, d.min(axis=1), rtol=1e-5, atol=1e-6)
    assert result.inertia == pytest.approx(chosen.sum(), rel=1e-5)


def test_bounded_and_sgemm_e_steps_reach_the_same_clustering(monkeypatch: pytest.MonkeyPatch) -> None:
    x, _, _ = blobs(20_000, 9, 40, seed=3, spread=0.3)
    counts = zipf_counts(len(x), seed=3)
    bounded = kmeans(x, 30, seed=4, counts=counts, init="topk")
    monkeypatch.setattr(kmeans_module, "BOUNDED_MAX_K", 0)
    sgemm = kmeans(x, 30, seed=4, counts=counts, init="topk")
    # The two differ only in float32 rounding of distances, which may flip a near-tie.
    assert np.mean(bounded.labels == sgemm.labels) > 0.999
    assert bounded.inertia == pytest.approx(sgemm.inertia, rel=1e-5)
    np.testing.assert_allclose(bounded.centroids, sgemm.centroids, atol=1e-3)


def test_max_iter_caps_updates_and_tol_stops_early() -> None:
    x, _, _ = blobs(6000, 9, 40, seed=7, spread=0.3)
    capped = kmeans(x, 30, init="random", max_iter=2, tol=0.0)
    assert capped.n_iter == 2 and not capped.converged
    loose = kmeans(x, 30, init="random", tol=1e-1)
    strict = kmeans(x, 30, init="random", tol=0.0, max_iter=500)
    assert loose.converged and strict.converged
    assert loose.n_iter < strict.n_iter
    assert strict.inertia <= loose.inertia


def test_a_better_start_never_ends_worse() -> None:
    """Lloyd iterations only ever lower the objective of their starting centroids."""
    x, _, _ = blobs(6000, 9, 40, seed=8, spread=0.3)
    start = x[:30]
    before = brute_sqdist(x, start).min(axis=1).sum()
    after = kmeans(x, 30, init=start, max_iter=5)
    assert after.inertia < before


def test_empty_clusters_are_reseeded_from_the_farthest_rows() -> None:
    # 20 distinct points, each repeated 50 times: random rows are bound to repeat a point,
    # and every repeated centroid but the first goes empty at once.
    points = np.random.default_rng(0).uniform(-1, 1, size=(20, 9)).astype(np.float32)
    x = np.repeat(points, 50, axis=0)
    rows = np.random.default_rng(0).choice(len(x), 20, replace=False)
    assert len(np.unique(rows // 50)) < 20
    result = kmeans(x, 20, init=x[rows])

    assert np.isfinite(result.centroids).all()
    assert len(np.unique(result.centroids, axis=0)) == 20
    # Every row ends on a centroid of its own point, none merged with another.
    np.testing.assert_allclose(result.centroids[result.labels], x, atol=1e-6)


def test_fewer_distinct_rows_than_k_keeps_k_finite_centroids() -> None:
    points = np.random.default_rng(1).uniform(-1, 1, size=(5, 17)).astype(np.float32)
    x = np.repeat(points, 40, axis=0)
    for init in ("kmeans++", "random"):
        result = kmeans(x, 10, init=init)
        assert result.centroids.shape == (10, 17)
        assert np.isfinite(result.centroids).all()
        np.testing.assert_allclose(result.centroids[result.labels], x, atol=1e-6)
        assert result.labels.max() < 10


def test_m_step_moves_the_farthest_row_into_an_empty_cluster() -> None:
    rows = np.array([[0.0], [1.0], [10.0], [11.0], [30.0]], dtype=np.float32)
    centres = np.array([[0.5], [12.0], [100.0]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1, 1], dtype=np.intp)
    sqdist = brute_sqdist(rows, centres)[np.arange(5), labels].astype(np.float32)

    updated = m_step(rows, labels, sqdist, centres)

    assert labels.tolist() == [0, 0, 1, 1, 2]  # row 4 (distance 18) moved to cluster 2
    np.testing.assert_allclose(updated[:, 0], [0.5, 10.5, 30.0])


def test_single_cluster_is_the_mean() -> None:
    x, _, _ = blobs(1000, 9, 3, seed=9)
    result = kmeans(x, 1)
    np.testing.assert_allclose(result.centroids[0], x.mean(axis=0), atol=1e-5)
    assert result.labels.max() == 0


def test_m_step_reseeds_with_distinct_rows_off_the_centroids() -> None:
    # Clusters 1 and 2 share one centroid; cluster 3 is empty. The two farthest rows are
    # copies of one point (30), so the second re-seed must take the next distinct one (20).
    rows = np.array([[0.0], [1.0], [10.0], [10.0], [20.0], [30.0], [30.0]], dtype=np.float32)
    centres = np.array([[0.5], [10.0], [10.0], [100.0]], dtype=np.float32)
    labels = np.array([0, 0, 1, 2, 1, 1, 1], dtype=np.intp)
    sqdist = brute_sqdist(rows, centres)[np.arange(7), labels].astype(np.float32)

    updated = m_step(rows, labels, sqdist, centres)

    assert labels.tolist() == [0, 0, 1, 1, 3, 2, 1]
    assert len(np.unique(updated, axis=0)) == 4


def test_m_step_merges_centroids_equal_up_to_the_sign_of_zero() -> None:
    rows = np.array([[0.0, 1.0], [0.0, 1.0], [5.0, 5.0]], dtype=np.float32)
    centres = np.array([[0.0, 1.0], [-0.0, 1.0], [5.0, 5.0]], dtype=np.float32)
    labels = np.array([0, 1, 2], dtype=np.intp)
    sqdist = np.zeros(3, dtype=np.float32)
    m_step(rows, labels, sqdist, centres)
    # The copy's rows went to the first centroid; the copy, now empty, found no row off
    # the centroids to re-seed from.
    assert labels.tolist() == [0, 0, 2]
