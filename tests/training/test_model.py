"""The reference model learns the planted click model; the protocol runs end to end."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from saec.training.model import ModelConfig
from saec.training.protocol import LOGREG, RunPlan, run, select
from saec.training.trainer import Trainer, live_at
from saec.training.variants import CompressSettings, Variant

CONFIG = ModelConfig(dim=8, hidden=(32, 16), lr=0.1, batch=256)


def test_baseline_learns_the_planted_model(stream) -> None:
    trainer = Trainer.new([f.size + 1 for f in stream.fields], CONFIG, seed=0)
    for s in range(8):
        trainer.train_segment(stream, s)
    m = trainer.evaluate(stream, 8, live_at(stream, 8))
    # The planted model's own probabilities reach about 0.8; 0.5 is chance.
    assert m.auc > 0.65
    assert m.logloss < 0.56  # a constant at the base rate scores about 0.56


def test_protocol_compresses_large_fields_and_keeps_signal(stream) -> None:
    plan = RunPlan(
        CONFIG,
        CompressSettings(k=16, min_factor=10, top_n=200),
        checkpoints=(7, 9),
        variants=(Variant("saec", "saec"), Variant("int8", "int8")),
        logreg_c=1.0,
    )
    outcomes = run(stream, plan, seed=0)
    saec = select(outcomes, "saec")
    base = select(outcomes, "baseline")
    assert [o.checkpoint for o in saec] == [7, 9]
    for s, b in zip(saec, base, strict=True):
        assert s.vectors < b.vectors / 5  # user, item, query_token, publisher -> 16 rows each
        assert s.bytes_after.paper < b.bytes_after.paper / 3
        assert s.metrics.auc > 0.62
        assert s.clustering_seconds > 0
    lr = select(outcomes, LOGREG)
    assert len(lr) == 2 and all(0.6 < o.metrics.auc < 0.9 for o in lr)
    # int8 stores every row, at a quarter of the float bytes plus a scale and a bias (the store's form).
    int8 = select(outcomes, "int8")[0]
    assert int8.vectors == base[0].vectors
    np.testing.assert_allclose(int8.bytes_after.paper / base[0].bytes_after.paper, (8 + 8) / 32, rtol=0.01)


def test_wide_term_adds_each_fields_last_value_to_the_logit() -> None:
    import torch

    from saec.training.model import CTRModel

    model = CTRModel([5, 7], ModelConfig(dim=4, hidden=(3,)))
    with torch.no_grad():
        for p in model.mlp.parameters():
            p.zero_()
        model.fields[0].weight[2] = torch.tensor([9.0, 9.0, 9.0, 0.25])
        model.fields[1].weight[3] = torch.tensor([-9.0, 9.0, 9.0, -1.5])
    codes = [torch.tensor([[2], [0]]), torch.tensor([[3], [3]])]
    # The fully connected layers give 0, so the logit is the sum of the first-order weights.
    assert model(codes).tolist() == [0.25 - 1.5, -1.5]
    # The layers read dim - 1 values a field.
    assert model.mlp[0].in_features == 2 * 3
    narrow = CTRModel([5, 7], ModelConfig(dim=4, hidden=(3,), wide=False))
    assert narrow.mlp[0].in_features == 2 * 4
