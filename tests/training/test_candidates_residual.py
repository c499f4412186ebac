"""bench.candidates' residual quantiser: what it reads, what it trains, what it counts."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from bench.candidates import ResidualEmbedding, residual_build
from saec.compress import CompressedField, compress_field
from saec.training import memory
from saec.training.model import ModelConfig
from saec.training.trainer import Trainer
from saec.training.variants import CompressSettings, index_bytes


def test_residual_stages_sum_to_the_reconstruction_and_retrain(stream) -> None:
    cfg = ModelConfig(dim=8, hidden=(16,), lr=0.1, batch=512)
    base = Trainer.new([f.size + 1 for f in stream.fields], cfg, seed=0)
    for s in range(4):
        base.train_segment(stream, s)
    settings = CompressSettings(k=16, min_factor=10, top_n=200)
    user = 0
    n = int(stream.live(user)[4])
    built = residual_build(2, 8, base, stream, 4, settings, 1.0, None)
    module = built.trainer.model.fields[user]
    assert isinstance(module, ResidualEmbedding)
    table = np.ascontiguousarray(base.model.fields[user].weight.detach().numpy()[1 : n + 1])
    counts = stream.counts(user, 4)[1 : n + 1]
    # Stage 1 is count-weighted k-means of the table, stage 2 of what stage 1 left.
    first = compress_field(table, counts, k=8, top_n=200, min_factor=0, seed=0, weight_by_count=True)
    assert isinstance(first, CompressedField)
    left = np.ascontiguousarray(table - first.codebook[first.masks])
    second = compress_field(left, counts, k=8, top_n=200, min_factor=0, seed=101, weight_by_count=True)
    assert isinstance(second, CompressedField)
    import torch

    with torch.no_grad():
        got = module(torch.arange(1, n + 1)).numpy()
    np.testing.assert_allclose(got, first.codebook[first.masks] + second.codebook[second.masks], rtol=1e-6, atol=1e-7)
    # Two stages fit the table better than the first alone.
    assert np.square(table - got).sum() < np.square(left).sum()
    index = index_bytes("user", stream.fields[user].vocab[1 : n + 1])
    assert built.footprint.fields[user].after == memory.Bytes(n * 2 + 2 * 8 * 4 * 8, index + n * 2 + 2 * 8 * 4 * 8)
    # Retraining moves both stages' codebooks.
    before = [stage.codebook.detach().clone() for stage in module.stages]
    built.trainer.train_segment(stream, 3)
    assert all(not np.array_equal(b.numpy(), stage.codebook.detach().numpy()) for b, stage in zip(before, module.stages, strict=True))
