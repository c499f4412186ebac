"""compress_field's count weighting and product quantisation (subvectors)."""

from __future__ import annotations

import numpy as np
import pytest

from saec.compress import CompressedField, InvalidParameterError, ProductField, ResidualField, compress_field
from saec.compress.init import kmeans_plusplus_rows
from saec.compress.kmeans import fit
from tests.compress._data import blobs, brute_sqdist, zipf_counts


def test_one_weighted_centroid_is_the_count_weighted_mean() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 6)).astype(np.float32)
    counts = rng.integers(0, 50, size=200)
    counts[:3] = 10_000  # three heavy rows pull the centroid to themselves
    plain = compress_field(x, counts, k=1, min_factor=0, top_n=None)
    weighted = compress_field(x, counts, k=1, min_factor=0, top_n=None, weight_by_count=True)
    assert isinstance(plain, CompressedField) and isinstance(weighted, CompressedField)
    expected = (x.astype(np.float64) * counts[:, None]).sum(axis=0) / counts.sum()
    np.testing.assert_allclose(weighted.codebook[0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(plain.codebook[0], x.mean(axis=0, dtype=np.float64), rtol=1e-5, atol=1e-6)
    heavy = x[:3].mean(axis=0)
    assert np.linalg.norm(weighted.codebook[0] - heavy) < np.linalg.norm(plain.codebook[0] - heavy)


def test_weighted_centroids_are_weighted_means_of_their_members() -> None:
    x, _, _ = blobs(3000, 8, 12, seed=3, spread=0.3)
    counts = zipf_counts(len(x), seed=3)
    out = compress_field(x, counts, k=12, min_factor=0, top_n=None, weight_by_count=True, max_iter=200, tol=0.0)
    assert isinstance(out, CompressedField)
    labels = out.masks.astype(np.intp)
    # Converged: every row sits with its nearest centroid ...
    np.testing.assert_array_equal(labels, brute_sqdist(x, out.codebook).argmin(axis=1))
    # ... and every centroid is the count-weighted mean of its rows.
    for j in range(12):
        rows = labels == j
        mean = (x[rows].astype(np.float64) * counts[rows, None]).sum(axis=0) / counts[rows].sum()
        np.testing.assert_allclose(out.codebook[j], mean, rtol=1e-4, atol=1e-5)


def test_weighting_lowers_the_traffic_weighted_error() -> None:
    x, _, _ = blobs(4000, 8, 40, seed=5, spread=0.4)
    counts = zipf_counts(len(x), seed=5, a=1.5)
    errors = {}
    for weighted in (False, True):
        out = compress_field(x, counts, k=16, min_factor=0, top_n=None, weight_by_count=weighted, seed=1)
        assert isinstance(out, CompressedField)
        sq = brute_sqdist(x, out.codebook)[np.arange(len(x)), out.masks]
        errors[weighted] = float((sq * counts).sum())
    assert errors[True] < errors[False]


def test_fit_without_weights_is_unchanged_by_the_option() -> None:
    x, _, _ = blobs(1000, 5, 6, seed=2)
    start = x[:6].copy()
    a = fit(x, 6, init=start, counts=None, seed=0, max_iter=50, tol=1e-4, chunk_rows=None, threads=1)
    b = fit(x, 6, init=start, counts=None, seed=0, max_iter=50, tol=1e-4, chunk_rows=None, threads=1,
            weights=np.ones(len(x)))
    # Unit weights are the plain mean: the same centroids up to float64 rounding.
    np.testing.assert_allclose(a.centroids, b.centroids, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_weighted_kmeans_plusplus_draws_only_rows_that_carry_weight() -> None:
    x, _, _ = blobs(2000, 6, 30, seed=8, spread=0.3)
    w = np.zeros(len(x), dtype=np.float32)
    w[::2] = 1.0
    w[10] = 1e6  # drawn first, almost surely
    for seed in range(5):
        rows = kmeans_plusplus_rows(x, 20, np.random.default_rng(seed), row_weights=w)
        assert len(set(rows.tolist())) == 20
        assert np.all(w[rows] > 0)
        assert rows[0] == 10
    plain = np.concatenate([kmeans_plusplus_rows(x, 20, np.random.default_rng(s)) for s in range(5)])
    assert np.any(w[plain] == 0)  # without weights the odd rows are drawn too


def test_weighting_needs_counts() -> None:
    x, _, _ = blobs(500, 4, 3, seed=0)
    with pytest.raises(InvalidParameterError, match="expected counts"):
        compress_field(x, None, k=4, min_factor=0, weight_by_count=True, field="user")


@pytest.mark.parametrize(("subvectors", "k", "top_n"), [(2, 16, None), (4, 8, 300), (3, 300, None)])
def test_product_field_matches_a_numpy_reference(subvectors: int, k: int, top_n: int | None) -> None:
    x, _, _ = blobs(3000, 12, 30, seed=4, spread=0.3)
    counts = zipf_counts(len(x), seed=4)
    out = compress_field(x, counts, k=k, min_factor=0, top_n=top_n, subvectors=subvectors, seed=7)
    assert isinstance(out, ProductField)
    width = 12 // subvectors
    assert out.codebooks.shape == (subvectors, k, width) and out.codebooks.dtype == np.float32
    assert out.masks.shape == (3000, subvectors)
    assert out.masks.dtype == (np.uint8 if k <= 256 else np.uint16)
    assert out.subvectors == subvectors
    reference = np.concatenate([out.codebooks[m][out.masks[:, m]] for m in range(subvectors)], axis=1)
    np.testing.assert_array_equal(out.vectors(), reference)
    for m in range(subvectors):
        # Each slice's mask is its nearest sub-centroid (ties aside: compare distances).
        d = brute_sqdist(np.ascontiguousarray(x[:, m * width : (m + 1) * width]), out.codebooks[m])
        np.testing.assert_allclose(d[np.arange(len(x)), out.masks[:, m]], d.min(axis=1), rtol=1e-4, atol=1e-5)
    exact = np.square(x.astype(np.float64) - reference).sum()
    assert out.inertia == pytest.approx(exact, rel=1e-3)


def test_product_quantisation_beats_one_codebook_of_the_same_k() -> None:
    x, _, _ = blobs(4000, 8, 200, seed=6, spread=0.2)
    one = compress_field(x, None, k=16, min_factor=0, top_n=None)
    two = compress_field(x, None, k=16, min_factor=0, top_n=None, subvectors=2)
    assert isinstance(one, CompressedField) and isinstance(two, ProductField)
    # 16 x 16 combinations against 16 centroids.
    assert two.inertia < one.inertia


def test_product_quantisation_refuses_bad_parameters() -> None:
    x, _, _ = blobs(500, 6, 3, seed=0)
    with pytest.raises(InvalidParameterError, match="subvectors dividing dim=6"):
        compress_field(x, None, k=4, min_factor=0, subvectors=4)
    with pytest.raises(InvalidParameterError, match="k \\+ private_rows <= 65536"):
        compress_field(x, None, k=4, min_factor=0, subvectors=2, private_rows=65533)
    with pytest.raises(InvalidParameterError, match="subvectors"):
        compress_field(x, None, k=4, min_factor=0, subvectors=0)


def test_a_field_that_stays_dense_needs_neither_counts_nor_a_dividing_dim() -> None:
    x, _, _ = blobs(50, 5, 3, seed=0)
    out = compress_field(x, None, k=8, min_factor=100, subvectors=2, weight_by_count=True)
    assert out.__class__.__name__ == "DenseField"


@pytest.mark.parametrize(("k", "head"), [(20, 12), (250, 10)])
def test_product_head_keeps_the_most_frequent_vectors_whole(k: int, head: int) -> None:
    x, _, _ = blobs(3000, 12, 30, seed=9, spread=0.3)
    counts = zipf_counts(len(x), seed=9)
    out = compress_field(x, counts, k=k, min_factor=0, top_n=500, subvectors=3, private_rows=head,
                         weight_by_count=True, seed=2)
    assert isinstance(out, ProductField)
    assert out.private_rows == head
    assert out.codebooks.shape == (3, k + head, 4)
    assert out.masks.dtype == (np.uint8 if k + head <= 256 else np.uint16)
    top = np.argsort(-counts, kind="stable")[:head]
    # The head: the same private row in every slice, and its own vector read back bit for bit.
    own = out.masks[top].astype(np.int64)
    assert np.all(own == own[:, :1])
    assert sorted(own[:, 0].tolist()) == list(range(k, k + head))
    np.testing.assert_array_equal(out.vectors()[top], x[top])
    rest = np.setdiff1d(np.arange(len(x)), top)
    assert out.masks[rest].max() < k  # no other feature shares a private row
    for m in range(3):
        # Every other feature's slice is its nearest shared sub-centroid.
        d = brute_sqdist(np.ascontiguousarray(x[rest, 4 * m : 4 * m + 4]), out.codebooks[m, :k])
        np.testing.assert_allclose(d[np.arange(len(rest)), out.masks[rest, m]], d.min(axis=1), rtol=1e-4, atol=1e-5)
    exact = np.square(x.astype(np.float64) - out.vectors()).sum()
    assert out.inertia == pytest.approx(exact, rel=1e-3)


def test_product_head_is_capped_by_the_rows_left_over() -> None:
    x, _, _ = blobs(40, 4, 3, seed=1)
    out = compress_field(x, None, k=30, min_factor=0, top_n=None, subvectors=2, private_rows=25)
    assert isinstance(out, ProductField)
    assert out.private_rows == 10 and out.codebooks.shape == (2, 40, 2)
    np.testing.assert_array_equal(out.vectors()[:10], x[:10])  # no counts: the first rows


@pytest.mark.parametrize(("stages", "k", "top_n"), [(2, 16, None), (3, 8, 400), (2, 300, None)])
def test_residual_field_matches_a_numpy_reference(stages: int, k: int, top_n: int | None) -> None:
    x, _, _ = blobs(3000, 6, 30, seed=11, spread=0.3)
    counts = zipf_counts(len(x), seed=11)
    out = compress_field(x, counts, k=k, min_factor=0, top_n=top_n, stages=stages, weight_by_count=True, seed=3)
    assert isinstance(out, ResidualField)
    assert out.stages == stages and out.codebooks.shape == (stages, k, 6) and out.codebooks.dtype == np.float32
    assert out.masks.shape == (3000, stages) and out.masks.dtype == (np.uint8 if k <= 256 else np.uint16)
    built = np.zeros_like(x)
    for s in range(stages):
        left = x - built
        # Each stage's mask is the nearest row of its codebook to what the stages before left.
        d = brute_sqdist(left, out.codebooks[s])
        np.testing.assert_allclose(d[np.arange(len(x)), out.masks[:, s]], d.min(axis=1), rtol=1e-4, atol=1e-5)
        built = built + out.codebooks[s][out.masks[:, s]]
    # The reconstruction is the float32 stage sum in stage order, bit for bit.
    np.testing.assert_array_equal(out.vectors(), built)
    assert out.inertia == pytest.approx(np.square(x.astype(np.float64) - built).sum(), rel=1e-3)


def test_each_residual_stage_lowers_the_error() -> None:
    x, _, _ = blobs(4000, 8, 200, seed=12, spread=0.3)
    errors = [compress_field(x, None, k=16, min_factor=0, top_n=None, stages=s).inertia for s in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2]


def test_residual_quantisation_refuses_slices_and_a_head() -> None:
    x, _, _ = blobs(500, 6, 3, seed=0)
    with pytest.raises(InvalidParameterError, match="stages > 1.*subvectors=2"):
        compress_field(x, None, k=4, min_factor=0, stages=2, subvectors=2)
    with pytest.raises(InvalidParameterError, match="private_rows=3"):
        compress_field(x, None, k=4, min_factor=0, stages=2, private_rows=3)
    with pytest.raises(InvalidParameterError, match="stages"):
        compress_field(x, None, k=4, min_factor=0, stages=0)
