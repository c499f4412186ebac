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
    index_bytes,
)


@pytest.fixture(scope="module")
def base(stream) -> Trainer:
    """The baseline every variant here shrinks: 4 segments of the small stream. Shared:
    ``build`` deep-copies the model and optimiser state it starts from."""
    cfg = ModelConfig(dim=8, hidden=(16,), lr=0.1, batch=512)
    trainer = Trainer.new([f.size + 1 for f in stream.fields], cfg, seed=0)
    for s in range(4):
        trainer.train_segment(stream, s)
    return trainer


def test_int8_and_float16_rows_read_what_the_store_serves(stream, base: Trainer) -> None:
    from saec.store.writer import dequantise_rowwise_8bit, quantise_rowwise_8bit
    from saec.training.embedding import field_table

    settings = CompressSettings(k=16, min_factor=10, top_n=200)
    user = 0
    n = int(stream.live(user)[4])
    table = base.model.fields[user].weight.detach().numpy()[1 : n + 1]
    index = index_bytes("user", stream.fields[user].vocab[1 : n + 1])
    int8 = build(Variant("i", "int8"), base, stream, 4, settings)
    # The rows train on in float32 ...
    int8.trainer.train_segment(stream, 3)
    trained = field_table(int8.trainer.model.fields[user])[1 : n + 1]
    assert not np.array_equal(trained, table)
    # ... and are then, bit for bit, the rows `saec compress --dense-dtype int8` stores and the engine decodes.
    int8.as_stored()
    np.testing.assert_array_equal(field_table(int8.trainer.model.fields[user])[1 : n + 1],
                                  dequantise_rowwise_8bit(*quantise_rowwise_8bit(np.ascontiguousarray(trained))))
    assert int8.footprint.fields[user].after == memory.Bytes(n * (8 + 8), index + n * (8 + 8))
    half = build(Variant("h", "float16"), base, stream, 4, settings)
    half.as_stored()
    np.testing.assert_array_equal(field_table(half.trainer.model.fields[user])[1 : n + 1], table.astype(np.float16).astype(np.float32))
    assert half.footprint.fields[user].after == memory.Bytes(n * 16, index + n * 16)


def test_per_field_variants_shrink_each_field_their_own_way(stream, base: Trainer) -> None:
    from saec.training.embedding import CompressedEmbedding, ResidualEmbedding

    settings = CompressSettings(k=16, min_factor=10, top_n=200)
    recipe = {"user": Variant("u", "saec", stages=2, k=8, min_factor=2, top_n=128, weighted=True, codebook_dtype="float16"),
              "item": Variant("i", "saec", k=32, min_factor=2, top_n=512), "region": Variant("r", "int8", min_factor=0)}
    built = build(Variant("recipe", "saec", lr_scale=0.3), base, stream, 4, settings, per_field=recipe)
    fields = {f.name: m for f, m in zip(stream.fields, built.trainer.model.fields, strict=True)}
    assert isinstance(fields["user"], ResidualEmbedding) and fields["user"].stages()[0].codebook.shape[0] == 8
    assert isinstance(fields["item"], CompressedEmbedding) and fields["item"].codebook.shape[0] == 32
    outcome = {f.name: f for f in built.footprint.fields}
    assert outcome["region"].compressed and outcome["region"].after.paper == outcome["region"].features * (8 + 8)
    # Fields the recipe does not name stay as they were.
    assert not outcome["publisher"].compressed and not outcome["query_token"].compressed
    assert built.trainer.optimizer.param_groups[0]["lr"] == pytest.approx(base.model.config.lr * 0.3)


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


def test_threshold_hash_and_saec_fill_the_same_field(stream, base: Trainer) -> None:
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


def test_product_variant_serves_its_slices_and_counts_its_bytes(stream, base: Trainer) -> None:
    settings = CompressSettings(k=16, min_factor=10, top_n=200)
    user = 0
    n = int(stream.live(user)[4])
    pq = build(Variant("pq", "saec", subvectors=4, k=8, weighted=True), base, stream, 4, settings)
    module = pq.trainer.model.fields[user]
    from saec.compress import ProductField, compress_field
    from saec.training.embedding import ProductEmbedding, field_table

    assert isinstance(module, ProductEmbedding)
    table = base.model.fields[user].weight.detach().numpy()[1 : n + 1]
    counts = stream.counts(user, 4)[1 : n + 1]
    ref = compress_field(np.ascontiguousarray(table), counts, k=8, top_n=200, min_factor=0, seed=0, subvectors=4,
                         weight_by_count=True)
    assert isinstance(ref, ProductField)
    # Before retraining, the field reads exactly the product quantiser's reconstruction.
    np.testing.assert_array_equal(field_table(module)[1 : n + 1], ref.vectors())
    index = index_bytes("user", stream.fields[user].vocab[1 : n + 1])
    assert pq.footprint.fields[user].after == memory.product(n, 4, 8, 8, index)
    assert memory.product(n, 4, 8, 8, index).paper == n * 4 + 8 * 4 * 8
    # The same fields are compressed as the data set's Saec (from min_factor * k = 160 on),
    # though the variant's own k is 8.
    saec = build(Variant("s", "saec"), base, stream, 4, settings)
    assert [f.compressed for f in pq.footprint.fields] == [f.compressed for f in saec.footprint.fields]
    # Retraining moves every slice's codebook (each has its own optimiser entry).
    before = [p.codebook.detach().clone() for p in module.slices()]
    pq.trainer.train_segment(stream, 3)
    assert all(not np.array_equal(b.numpy(), p.codebook.detach().numpy()) for b, p in zip(before, module.slices(), strict=True))
    # A threshold sized to the product quantiser fits within its bytes.
    thr = build(Variant("t", "threshold", subvectors=4, k=8), base, stream, 4, settings)
    assert thr.footprint.fields[user].after.keyed <= pq.footprint.fields[user].after.keyed


def test_product_variant_with_a_frequency_head(stream, base: Trainer) -> None:
    # The data set's own head (30 rows) is a one-codebook setting: the product quantiser
    # takes only the head it names.
    settings = CompressSettings(k=16, min_factor=10, top_n=200, private_rows=30)
    user = 0
    n = int(stream.live(user)[4])
    from saec.training.embedding import ProductEmbedding, field_table

    plain = build(Variant("pq", "saec", subvectors=2, k=8, weighted=True), base, stream, 4, settings)
    headed = build(Variant("pq+h", "saec", subvectors=2, k=8, private_rows=12, weighted=True), base, stream, 4, settings)
    assert isinstance(plain.trainer.model.fields[user], ProductEmbedding)
    module = headed.trainer.model.fields[user]
    assert isinstance(module, ProductEmbedding)
    assert [p.codebook.shape[0] for p in module.slices()] == [20, 20]
    assert [p.codebook.shape[0] for p in plain.trainer.model.fields[user].slices()] == [8, 8]
    table = base.model.fields[user].weight.detach().numpy()[1 : n + 1]
    top = np.argsort(-stream.counts(user, 4)[1 : n + 1], kind="stable")[:12]
    # Before retraining the 12 most frequent features read their trained vectors exactly.
    np.testing.assert_array_equal(field_table(module)[1 : n + 1][top], table[top])
    index = index_bytes("user", stream.fields[user].vocab[1 : n + 1])
    assert headed.footprint.fields[user].after == memory.product(n, 2, 20, 8, index)
    thr = build(Variant("t", "threshold", subvectors=2, k=8, private_rows=12), base, stream, 4, settings)
    assert thr.footprint.fields[user].after.keyed <= headed.footprint.fields[user].after.keyed


def test_residual_variant_reads_the_stage_sum_and_retrains_every_stage(stream, base: Trainer) -> None:
    settings = CompressSettings(k=16, min_factor=10, top_n=200, private_rows=30)
    user = 0
    n = int(stream.live(user)[4])
    from saec.compress import ResidualField, compress_field
    from saec.training.embedding import ResidualEmbedding, field_table

    rq = build(Variant("rq", "saec", stages=2, k=8, weighted=True), base, stream, 4, settings)
    module = rq.trainer.model.fields[user]
    assert isinstance(module, ResidualEmbedding)
    table = np.ascontiguousarray(base.model.fields[user].weight.detach().numpy()[1 : n + 1])
    counts = stream.counts(user, 4)[1 : n + 1]
    ref = compress_field(table, counts, k=8, top_n=200, min_factor=0, seed=0, stages=2, weight_by_count=True)
    assert isinstance(ref, ResidualField)
    # Before retraining the field reads the residual quantiser's reconstruction, bit for bit
    # (the data set's head of 30 rows is a one-codebook setting and does not apply).
    np.testing.assert_array_equal(field_table(module)[1 : n + 1], ref.vectors())
    index = index_bytes("user", stream.fields[user].vocab[1 : n + 1])
    assert rq.footprint.fields[user].after == memory.residual(n, 2, 8, 8, index)
    assert memory.residual(n, 2, 8, 8, index).paper == n * 2 + 2 * 8 * 4 * 8
    saec = build(Variant("s", "saec"), base, stream, 4, settings)
    assert [f.compressed for f in rq.footprint.fields] == [f.compressed for f in saec.footprint.fields]
    before = [p.codebook.detach().clone() for p in module.stages()]
    rq.trainer.train_segment(stream, 3)
    assert all(not np.array_equal(b.numpy(), p.codebook.detach().numpy()) for b, p in zip(before, module.stages(), strict=True))
    thr = build(Variant("t", "threshold", stages=2, k=8), base, stream, 4, settings)
    assert thr.footprint.fields[user].after.keyed <= rq.footprint.fields[user].after.keyed
    # Float16 codebooks: counted at 2 bytes a value, rounded to float16 once retrained.
    half = build(Variant("rq16", "saec", stages=2, k=8, weighted=True, codebook_dtype="float16"), base, stream, 4, settings)
    assert half.footprint.fields[user].after == memory.residual(n, 2, 8, 8, index, 2)
    assert half.footprint.fields[user].after.paper == n * 2 + 2 * 8 * 2 * 8
    half.trainer.train_segment(stream, 3)
    hmodule = half.trainer.model.fields[user]
    assert isinstance(hmodule, ResidualEmbedding)
    trained = [p.codebook.detach().clone() for p in hmodule.stages()]
    assert any(not np.array_equal(t.numpy(), t.numpy().astype(np.float16).astype(np.float32)) for t in trained)
    half.as_stored()
    for t, p in zip(trained, hmodule.stages(), strict=True):
        np.testing.assert_array_equal(p.codebook.detach().numpy(), t.numpy().astype(np.float16).astype(np.float32))
    thr16 = build(Variant("t16", "threshold", stages=2, k=8, codebook_dtype="float16"), base, stream, 4, settings)
    assert thr16.footprint.fields[user].after.keyed <= half.footprint.fields[user].after.keyed
    assert thr16.footprint.fields[user].rows <= thr.footprint.fields[user].rows


def test_weighted_variant_has_count_weighted_centroids(stream, base: Trainer) -> None:
    settings = CompressSettings(k=16, min_factor=10, top_n=200)
    user = 0
    n = int(stream.live(user)[4])
    built = build(Variant("w", "saec", weighted=True), base, stream, 4, settings)
    module = built.trainer.model.fields[user]
    table = base.model.fields[user].weight.detach().numpy()[1 : n + 1].astype(np.float64)
    counts = stream.counts(user, 4)[1 : n + 1]
    order = np.argsort(-counts, kind="stable")[:200]  # the rows fast clustering ran on
    masks = module.masks.numpy()[1 : n + 1]
    cb = module.codebook.detach().numpy()
    # After k-means' last assignment a centroid may have gained or lost rows, so compare
    # against the weighted means of the clustered rows it held at the end, loosely.
    closer = 0
    for j in np.unique(masks[order]):
        rows = order[masks[order] == j]
        weighted = (table[rows] * counts[rows, None]).sum(0) / counts[rows].sum()
        plain = table[rows].mean(0)
        closer += np.linalg.norm(cb[j] - weighted) <= np.linalg.norm(cb[j] - plain) + 1e-6
    assert closer >= 0.8 * len(np.unique(masks[order]))
