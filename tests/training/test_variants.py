"""The compared methods: int8 error, threshold choice, hash buckets, byte accounting."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from saec.training import memory
from saec.training.model import ModelConfig
from saec.training.trainer import Trainer
from saec.training.variants import (
    CompressSettings,
    Variant,
    build,
    dequantise,
    index_bytes,
    quantise_int8,
)


def test_int8_rowwise_error_is_within_half_a_step() -> None:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(100, 16)).astype(np.float32) * rng.uniform(0.01, 3, size=(100, 1)).astype(np.float32)
    table[5] = 0
    q, scale = quantise_int8(table)
    assert q.dtype == np.int8 and scale.shape == (100,)
    err = np.abs(dequantise(q, scale) - table)
    assert np.all(err <= scale[:, None] / 2 + 1e-7)
    assert np.all(dequantise(q, scale)[5] == 0)


def test_paper_accounting_reproduces_27_7x() -> None:
    # Section 3.2: 1.24e8 features of length 9, 1.04e6 vectors after, 1-byte masks.
    before = memory.uncompressed(124_000_000, 9)
    after = memory.Bytes(124_000_000 * 1 + 1_040_000 * 36, 0)
    assert round(before.paper / after.paper, 1) == 27.7
    assert before.keyed == 124_000_000 * (36 + 8)
    assert memory.codebook(1000, 100, 9, index=2400) == memory.Bytes(1000 + 3600, 2400 + 1000 + 3600)
    assert memory.codebook(1000, 300, 9, index=0).paper == 2000 + 300 * 36  # uint16 masks


def test_index_bytes_are_the_stores_key_index() -> None:
    ids = np.arange(50_000)
    # store.keyindex: 2-byte fingerprints plus bucket offsets, between 2.2 and 2.4 bytes a key.
    assert 2.2 * 50_000 <= index_bytes("user", ids) <= 2.4 * 50_000


def test_threshold_hash_and_saec_fill_the_same_field(stream) -> None:
    cfg = ModelConfig(dim=8, hidden=(16,), lr=0.1, batch=512)
    base = Trainer.new([f.size + 1 for f in stream.fields], cfg, seed=0)
    for s in range(4):
        base.train_segment(stream, s)
    settings = CompressSettings(k=16, min_factor=10, top_n=200)
    user = 0
    n = int(stream.live(user)[4])
    counts = stream.counts(user, 4)[1 : n + 1]

    saec = build(Variant("s", "saec"), base, stream, 4, settings)
    thr = build(Variant("t", "threshold"), base, stream, 4, settings)
    hashed = build(Variant("h", "hash", budget="keyed"), base, stream, 4, settings)
    budget = saec.footprint.fields[user].after.keyed
    assert saec.footprint.fields[user].rows == 16
    assert budget == index_bytes("user", stream.fields[user].vocab[1 : n + 1]) + n + 16 * 4 * 8
    # Equal memory: each competitor fits within Saec's keyed bytes, and one more row would not.
    used = hashed.footprint.fields[user].after.keyed
    assert used <= budget < used + 4 * 8
    module = thr.trainer.model.fields[user]
    kept = np.flatnonzero(module.masks.numpy()[1 : n + 1] >= 0)
    rows = thr.footprint.fields[user].rows
    assert thr.footprint.fields[user].after.keyed <= budget
    by_count = stream.fields[user].vocab[1 : n + 1][np.argsort(-counts, kind="stable")]
    assert index_bytes("user", by_count[: rows + 1]) + (rows + 1) * 4 * 8 > budget
    # The threshold keeps exactly the most frequent features and zeroes the rest.
    assert len(kept) == rows
    assert counts[kept].min() >= np.sort(counts)[::-1][rows - 1]
    # The base model is untouched by building variants.
    assert base.model.fields[user].weight.shape[0] == stream.fields[user].size + 1
