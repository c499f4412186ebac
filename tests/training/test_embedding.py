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


def test_residual_field_adds_its_stages_and_averages_each_stage_by_hand() -> None:
    from saec.training.embedding import ResidualEmbedding

    # Stage 0 is the module-level field; stage 1 puts codes 1 and 3 on row 0, codes 2, 4
    # and 5 on row 1 of a second codebook.
    second = np.array([[100, 200], [300, 400]], dtype=np.float32)
    masks = np.stack([MASKS, np.array([-1, 0, 1, 0, 1, 1, -1])], axis=1)
    codebooks = np.stack([CODEBOOK, np.concatenate([second, np.zeros((1, 2), np.float32)])])  # row 2 unused
    emb = ResidualEmbedding(codebooks, masks)
    out = emb(CODES)
    np.testing.assert_array_equal(out[0, 0].detach().numpy(), CODEBOOK[0] + second[0])
    np.testing.assert_array_equal(out[3, 1].detach().numpy(), CODEBOOK[2] + second[1])
    np.testing.assert_array_equal(out[3, 0].detach().numpy(), [0, 0])  # not held in either stage
    np.testing.assert_array_equal(field_table(emb)[1:6], (CODEBOOK[MASKS[1:6]] + codebooks[1][masks[1:6, 1]]))
    (out * WEIGHT).sum().backward()
    stage0, stage1 = emb.stages()
    # Every stage gets the gradient of the sum: stage 0 exactly as the one-codebook field.
    np.testing.assert_allclose(stage0.codebook.grad.numpy(), _grad("feature"), rtol=1e-6)
    # Stage 1, row 0 holds codes 1 ([2,4] over its two occurrences) and 3 ([8,9]); row 1
    # codes 2 ([4,5]), 4 ([14,15]) and 5 ([10,11]); each averaged over its features.
    expected = [(np.array([2, 4]) + [8, 9]) / 2, (np.array([4, 5]) + [14, 15] + [10, 11]) / 3, [0, 0]]
    np.testing.assert_allclose(stage1.codebook.grad.numpy(), expected, rtol=1e-6)
