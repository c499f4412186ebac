"""compress_field: threshold, mask dtypes, fast clustering, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from saec.compress import (
    CompressedField,
    CompressError,
    DenseField,
    compress_field,
    kmeans,
    min_rows_to_compress,
)
from saec.compress._rank import top_rows
from tests.compress._data import blobs, brute_sqdist, zipf_counts


def test_threshold_is_min_factor_times_k() -> None:
    x, _, _ = blobs(500, 9, 5, seed=0)
    assert min_rows_to_compress(5) == 500

    dense = compress_field(x[:499], None, k=5)
    assert isinstance(dense, DenseField)
    assert dense.vectors is not None and dense.vectors.shape == (499, 9)
    assert "499" in dense.reason and "500" in dense.reason

    compressed = compress_field(x, None, k=5)
    assert isinstance(compressed, CompressedField)
    assert compressed.codebook.shape == (5, 9)


def test_dense_field_hands_back_the_input_array() -> None:
    x, _, _ = blobs(100, 17, 3, seed=0)
    dense = compress_field(x, None, k=100, field="tiny")
    assert isinstance(dense, DenseField)
    assert dense.vectors is x


def test_compressed_field_contents() -> None:
    x, _, _ = blobs(5000, 17, 20, seed=1)
    counts = zipf_counts(len(x), seed=1)
    out = compress_field(x, counts, k=16, min_factor=10, init="topk", field="user")
    assert isinstance(out, CompressedField)
    assert out.codebook.dtype == np.float32 and out.codebook.shape == (16, 17)
    assert out.masks.dtype == np.uint8 and out.masks.shape == (5000,)
    assert out.init == "topk" and out.clustered == 5000
    assert 1 <= out.n_iter <= 50 and out.seconds > 0
    exact = brute_sqdist(x, out.codebook)[np.arange(len(x)), out.masks].sum()
    assert out.inertia == pytest.approx(exact, rel=1e-4)


def test_k_over_256_gives_uint16_masks() -> None:
    x, _, _ = blobs(30_000, 9, 400, seed=2, spread=0.05)
    out = compress_field(x, None, k=300, min_factor=10, top_n=None, max_iter=5)
    assert isinstance(out, CompressedField)
    assert out.masks.dtype == np.uint16
    assert out.codebook.shape == (300, 9)
    assert int(out.masks.max()) > 255


def test_fast_clustering_clusters_the_top_rows_and_assigns_all() -> None:
    x, _, _ = blobs(20_000, 9, 50, seed=3, spread=0.1)
    counts = zipf_counts(len(x), seed=3)
    out = compress_field(x, counts, k=20, top_n=2000, min_factor=10, seed=4)
    assert isinstance(out, CompressedField)
    assert out.clustered == 2000 and out.masks.shape == (20_000,)

    # Only the top rows shape the codebook: scrambling every other row changes nothing.
    top = np.zeros(len(x), dtype=bool)
    top[top_rows(counts, 2000)] = True
    scrambled = x.copy()
    scrambled[~top] = np.random.default_rng(0).uniform(-5, 5, size=(int((~top).sum()), 9))
    again = compress_field(scrambled, counts, k=20, top_n=2000, min_factor=10, seed=4)
    np.testing.assert_array_equal(again.codebook, out.codebook)
    np.testing.assert_array_equal(again.masks[top], out.masks[top])

    # Yet every row, clustered or not, gets its nearest centroid, and counts in inertia.
    d = brute_sqdist(x, out.codebook)
    chosen = d[np.arange(len(x)), out.masks]
    np.testing.assert_allclose(chosen, d.min(axis=1), rtol=1e-5, atol=1e-7)
    assert out.inertia == pytest.approx(chosen.sum(), rel=1e-4)
    assert (out.masks[~top] != out.masks[~top][0]).any()


def test_fast_clustering_without_counts_takes_the_first_rows() -> None:
    x, _, _ = blobs(10_000, 17, 30, seed=5)
    out = compress_field(x, None, k=10, top_n=1500, min_factor=10)
    changed = x.copy()
    changed[1500:] *= -3.0
    again = compress_field(changed, None, k=10, top_n=1500, min_factor=10)
    assert out.clustered == again.clustered == 1500
    np.testing.assert_array_equal(again.codebook, out.codebook)
    np.testing.assert_array_equal(again.masks[:1500], out.masks[:1500])
    assert not np.array_equal(again.masks, out.masks)


def test_full_clustering_is_kmeans_on_every_row() -> None:
    x, _, _ = blobs(6000, 9, 30, seed=6, spread=0.2)
    out = compress_field(x, None, k=12, top_n=None, min_factor=10, seed=2)
    ref = kmeans(x, 12, seed=2)
    assert out.clustered == 6000
    np.testing.assert_array_equal(out.codebook, ref.centroids)
    np.testing.assert_array_equal(out.masks, ref.labels)
    assert out.inertia == ref.inertia
    # top_n at or above n is full clustering too.
    same = compress_field(x, None, k=12, top_n=6000, min_factor=10, seed=2)
    np.testing.assert_array_equal(same.codebook, ref.centroids)


def test_topk_start_is_the_most_frequent_rows() -> None:
    # With top_n == k, each clustered row is its own cluster: the codebook is the start.
    x, _, _ = blobs(3000, 9, 30, seed=7, spread=0.3)
    counts = zipf_counts(len(x), seed=7)
    out = compress_field(x, counts, k=10, init="topk", top_n=10, min_factor=10)
    np.testing.assert_allclose(out.codebook, x[top_rows(counts, 10)], atol=1e-6)


@pytest.mark.parametrize("init", ["kmeans++", "random", "topk"])
def test_same_seed_same_arrays_other_seed_other_arrays(init: str) -> None:
    x, _, _ = blobs(12_000, 9, 60, seed=8, spread=0.3)
    counts = zipf_counts(len(x), seed=8)
    kw = {"k": 20, "init": init, "top_n": 5000, "min_factor": 10}
    a = compress_field(x, counts, seed=1, **kw)
    b = compress_field(x, counts, seed=1, **kw)
    np.testing.assert_array_equal(a.codebook, b.codebook)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert a.inertia == b.inertia and a.n_iter == b.n_iter
    if init != "topk":  # top-k draws nothing at random
        c = compress_field(x, counts, seed=2, **kw)
        assert not np.array_equal(a.codebook, c.codebook)


def test_fast_clustering_objective_close_to_full() -> None:
    """On a field whose frequent rows look like the rest, clustering a tenth costs little."""
    x, _, _ = blobs(30_000, 9, 40, seed=9, spread=0.15)
    counts = zipf_counts(len(x), seed=9)
    full = compress_field(x, counts, k=20, top_n=None, min_factor=10)
    fast = compress_field(x, counts, k=20, top_n=3000, min_factor=10)
    assert fast.clustered == 3000 and full.clustered == 30_000
    assert fast.inertia <= 1.1 * full.inertia


def test_topk_without_counts_is_fine_for_a_field_that_stays_dense() -> None:
    vectors = np.ones((50, 3), dtype=np.float32)
    result = compress_field(vectors, None, k=10, init="topk", field="small")
    assert isinstance(result, DenseField)
    with pytest.raises(CompressError, match="expected counts"):
        compress_field(np.random.default_rng(0).normal(size=(2000, 3)).astype(np.float32), None,
                       k=10, init="topk", min_factor=100, field="big")


def test_private_rows_keep_the_most_frequent_features_own_vectors() -> None:
    x, _, _ = blobs(4000, 9, 20, seed=3)
    counts = zipf_counts(len(x), seed=3)
    result = compress_field(x, counts, k=16, private_rows=50, min_factor=10, field="item")
    assert isinstance(result, CompressedField)
    assert result.private_rows == 50 and result.codebook.shape == (66, 9)
    head = top_rows(counts, 50)
    # Each head feature reads back its own vector, bit for bit, from a row of its own.
    np.testing.assert_array_equal(result.codebook[result.masks[head]], x[head])
    assert sorted(result.masks[head].tolist()) == list(range(16, 66))
    # Every other feature shares one of the k centroids, its nearest.
    rest = np.setdiff1d(np.arange(len(x)), head)
    assert result.masks[rest].max() < 16
    d = brute_sqdist(x[rest], result.codebook[:16])
    np.testing.assert_allclose(d[np.arange(len(rest)), result.masks[rest]], d.min(axis=1), rtol=1e-4, atol=1e-5)
    # The head's rows sit on their own vectors: inertia is the rest's alone.
    exact = brute_sqdist(x, result.codebook)[np.arange(len(x)), result.masks].sum()
    assert result.inertia == pytest.approx(exact, rel=1e-4)


def test_private_rows_widen_masks_past_256_rows_and_are_capped() -> None:
    x, _, _ = blobs(3000, 9, 20, seed=4)
    counts = zipf_counts(len(x), seed=4)
    wide = compress_field(x, counts, k=200, private_rows=100, min_factor=1)
    assert isinstance(wide, CompressedField)
    assert wide.masks.dtype == np.uint16 and wide.codebook.shape == (300, 9)
    # At most n - k features can be private: k rows must remain to cluster.
    capped = compress_field(x[:300], counts[:300], k=200, private_rows=1000, min_factor=1)
    assert isinstance(capped, CompressedField) and capped.private_rows == 100
    with pytest.raises(CompressError, match="k \\+ private_rows <= 65536"):
        compress_field(x, counts, k=100, private_rows=65_500, min_factor=1)
