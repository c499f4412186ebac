"""Gradient averaging of the compressed field (paper 2.3) against hand computation."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from saec.training.embedding import CompressedEmbedding, dense_embedding, field_table  # noqa: E402

# Codes 1..5 -> centroids; code 0 (no feature) and code 6 (not held) read as zero.
MASKS = np.array([-1, 0, 0, 1, 2, 0, -1])
CODEBOOK = np.arange(6, dtype=np.float32).reshape(3, 2)
CODES = torch.tensor([[1, 1], [2, 0], [3, 5], [6, 4]])
# Upstream gradient of every output vector: weight[b, j] multiplies codebook[masks[CODES[b, j]]].
WEIGHT = torch.arange(16, dtype=torch.float32).reshape(4, 2, 2)


def _grad(mode: str) -> np.ndarray:
    emb = CompressedEmbedding(CODEBOOK, MASKS, grad_mode=mode)
    (emb(CODES) * WEIGHT).sum().backward()
    return emb.codebook.grad.numpy()


def test_forward_reads_centroids_and_zero_for_unheld_codes() -> None:
    out = CompressedEmbedding(CODEBOOK, MASKS)(CODES).detach().numpy()
    np.testing.assert_array_equal(out[0, 0], CODEBOOK[0])
    np.testing.assert_array_equal(out[2, 0], CODEBOOK[1])
    np.testing.assert_array_equal(out[3, 1], CODEBOOK[2])
    np.testing.assert_array_equal(out[1, 1], [0, 0])  # code 0
    np.testing.assert_array_equal(out[3, 0], [0, 0])  # mask -1


def test_feature_mode_averages_per_feature_gradients_by_hand() -> None:
    # Centroid 0 holds codes 1, 2, 5. In the batch: code 1 twice (weights [0,1] and [2,3],
    # its own gradient is their sum [2,4]), code 2 once ([4,5]), code 5 once ([10,11]).
    # Average over the 3 features: ([2,4] + [4,5] + [10,11]) / 3.
    expected0 = (np.array([2, 4]) + np.array([4, 5]) + np.array([10, 11])) / 3
    # Centroid 1: code 3 only ([8,9]); centroid 2: code 4 only ([14,15]); code 6 gives nothing.
    np.testing.assert_allclose(_grad("feature"), [expected0, [8, 9], [14, 15]], rtol=1e-6)


def test_occurrence_mode_averages_over_occurrences_by_hand() -> None:
    # Centroid 0 has 4 occurrences: [0,1], [2,3], [4,5], [10,11].
    expected0 = (np.array([0, 1]) + [2, 3] + [4, 5] + [10, 11]) / 4
    np.testing.assert_allclose(_grad("occurrence"), [expected0, [8, 9], [14, 15]], rtol=1e-6)


def test_sum_mode_is_the_tied_weight_gradient() -> None:
    np.testing.assert_allclose(_grad("sum"), [[16, 20], [8, 9], [14, 15]], rtol=1e-6)


def test_feature_mode_equals_mean_of_uncompressed_row_gradients() -> None:
    # The same loss through an uncompressed table holding each feature's centroid: its row
    # gradients are "each feature's own gradient"; a centroid's gradient is their mean.
    rng = np.random.default_rng(0)
    k, dim, v = 4, 3, 30
    masks = np.concatenate([[-1], rng.integers(0, k, size=v)])
    codebook = rng.normal(size=(k, dim)).astype(np.float32)
    codes = torch.from_numpy(rng.integers(0, v + 1, size=(64, 3)))
    weight = torch.from_numpy(rng.normal(size=(64, 3, dim)).astype(np.float32))

    emb = CompressedEmbedding(codebook, masks)
    (emb(codes) * weight).sum().backward()

    table = torch.nn.Embedding.from_pretrained(torch.from_numpy(emb.table()), freeze=False, padding_idx=0)
    (table(codes) * weight).sum().backward()
    rows = table.weight.grad.numpy()
    present = np.unique(codes.numpy())
    present = present[present > 0]
    expected = np.zeros((k, dim), dtype=np.float64)
    for c in range(k):
        members = present[masks[present] == c]
        if len(members):
            expected[c] = rows[members].mean(axis=0)
    np.testing.assert_allclose(emb.codebook.grad.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_masks_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="masks must lie in"):
        CompressedEmbedding(CODEBOOK, np.array([-1, 3]))


def test_dense_embedding_row_zero_is_fixed_zero() -> None:
    emb = dense_embedding(np.ones((4, 2), dtype=np.float32))
    emb(torch.tensor([0, 1, 1])).sum().backward()
    assert np.all(field_table(emb)[0] == 0)
    assert emb.weight.grad.to_dense()[0].abs().sum() == 0
