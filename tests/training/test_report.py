"""The report's headline cannot flatter: fair control, nothing compressed, weak baseline."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytest.importorskip("torch")

from saec.training import memory
from saec.training.methods import BASELINE, CONTROL, LOGREG, SAEC
from saec.training.model import ModelConfig
from saec.training.plans import AUTO_MIN_FACTOR, MATTERS, EvalPlan, choose_settings, edge_axes, grow_grid
from saec.training.protocol import Outcome
from saec.training.report.findings import headline
from saec.training.report.summary import summarise
from saec.training.results import DatasetResult
from saec.training.trainer import Metrics
from saec.training.variants import CompressSettings, FieldOutcome

SETTINGS = CompressSettings(k=32, min_factor=8, top_n=512)


def _outcome(method: str, c: int, seed: int, auc: float, compressed: bool = True) -> Outcome:
    before = memory.uncompressed(2000, 8)
    after = memory.codebook(2000, 32, 8, 4800) if compressed and method == SAEC else before
    fields = [FieldOutcome("item", 2000, 32 if compressed and method == SAEC else 2000, before, after,
                           compressed and method == SAEC)]
    return Outcome(method, c, seed, Metrics(auc, 0.6, 100), 32, 2000, before, after, 0.0, fields)


def _result(outcomes: list[Outcome]) -> DatasetResult:
    plan = EvalPlan("log", lambda: None, SETTINGS, (), (0,), (0,), (1,), (2,))  # type: ignore[arg-type,return-value]
    return DatasetResult("log", "", {}, SETTINGS, ModelConfig(), 1.0, {}, [], [], [], outcomes, [], {}, plan)


def test_headline_is_against_the_baseline_with_the_same_extra_pass() -> None:
    outcomes = []
    for seed, (base, ctl, saec) in enumerate([(0.700, 0.703, 0.7005), (0.710, 0.712, 0.7105)]):
        for c in (2, 3):
            outcomes += [_outcome(BASELINE, c, seed, base), _outcome(CONTROL, c, seed, ctl), _outcome(SAEC, c, seed, saec)]
    s = summarise(outcomes, SAEC)
    assert s is not None
    # Against the plain baseline Saec gains; against the fair control it loses 0.0025 and 0.0015.
    assert s.d_auc_baseline == pytest.approx(0.0005)
    assert s.d_auc == pytest.approx(-0.002) and s.d_auc_std == pytest.approx(0.000707, abs=1e-6)
    text = "\n".join(headline(_result(outcomes)))
    assert "ΔAUC -0.0020 (± 0.0007 over 2 seeds), outside the 0.001 target" in text


def test_nothing_compressed_is_said_and_no_target_is_claimed() -> None:
    outcomes = []
    for c in (2, 3):
        outcomes += [_outcome(BASELINE, c, 0, 0.7), _outcome(CONTROL, c, 0, 0.7), _outcome(SAEC, c, 0, 0.7, compressed=False)]
    text = "\n".join(headline(_result(outcomes)))
    assert "Nothing was compressed" in text and "no claim about the 0.001 AUC target" in text
    assert "within the 0.001 target" not in text


def test_a_baseline_weaker_than_logistic_regression_is_said_at_the_same_checkpoints() -> None:
    outcomes = []
    for c, base in ((2, 0.69), (3, 0.75)):
        outcomes += [_outcome(BASELINE, c, 0, base), _outcome(CONTROL, c, 0, base), _outcome(SAEC, c, 0, base)]
    # Logistic regression at segment 2 only: 0.70 beats the baseline there (0.69), though
    # not the baseline's mean over both segments (0.72).
    outcomes.append(_outcome(LOGREG, 2, 0, 0.70))
    text = "\n".join(headline(_result(outcomes)))
    assert "weaker than one-hot logistic regression** at segment 2 (AUC 0.6900 against 0.7000)" in text


def test_grid_grows_past_a_best_value_on_its_edge_only() -> None:
    grid = [ModelConfig(dim=d, lr=lr, batch=256) for d in (8, 16) for lr in (0.03, 0.1)]
    grown = grow_grid(grid, ModelConfig(dim=8, lr=0.1, batch=256), grid)
    assert grown == [ModelConfig(dim=4, lr=0.1, batch=256), ModelConfig(dim=8, lr=0.3, batch=256)]
    # Inside on every axis with two values or more: nothing to grow; batch has one value.
    wide = [ModelConfig(dim=d, lr=lr, batch=256) for d in (4, 8, 16) for lr in (0.01, 0.03, 0.1)]
    assert grow_grid(wide, ModelConfig(dim=8, lr=0.03, batch=256), wide) == []
    # The documented bounds cap the growth.
    edge = [ModelConfig(dim=d, lr=1.0, batch=256) for d in (32, 64)]
    assert grow_grid(edge, ModelConfig(dim=64, lr=1.0, batch=256), edge) == []
    assert edge_axes(edge, ModelConfig(dim=64, lr=1.0, batch=256)) == ["dim"]


def test_chosen_settings_compress_every_field_that_matters() -> None:
    sizes = [943, 1682, 795, 61, 2]
    settings, why = choose_settings(sizes)
    assert all(s >= settings.min_rows for s in sizes if s >= MATTERS)
    assert settings.min_factor == AUTO_MIN_FACTOR and settings.k == 64
    assert "3 field(s)" in why and "795" in why
    _, none = choose_settings([10, 20])
    assert "nothing is worth compressing" in none


def test_training_modules_import_no_cycle() -> None:
    root = Path(__file__).resolve().parents[2] / "training"
    deps: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        name = "saec." + ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        deps[name] = {
            n.module for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("saec.training")
        }
    seen: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        seen[m] = 1
        for d in deps.get(m, set()):
            assert seen.get(d) != 1, f"import cycle: {' -> '.join([*path, d])}"
            if d not in seen:
                visit(d, [*path, d])
        seen[m] = 2

    for m in deps:
        if m not in seen:
            visit(m, [m])
    assert "saec.training.report" in deps and "saec.training.evaluate" not in deps["saec.training.report"]


def test_product_quantisation_gets_its_own_verdict_with_its_equal_bytes_rivals() -> None:
    import dataclasses

    from saec.training.methods import PRODUCT, THRESHOLD_PRODUCT

    outcomes = []
    for seed, (ctl, saec, pq, thr) in enumerate([(0.710, 0.707, 0.7094, 0.690), (0.720, 0.717, 0.7190, 0.721)]):
        for c in (2, 3):
            outcomes += [_outcome(BASELINE, c, seed, ctl), _outcome(CONTROL, c, seed, ctl), _outcome(SAEC, c, seed, saec),
                         _outcome(PRODUCT, c, seed, pq), _outcome(THRESHOLD_PRODUCT, c, seed, thr)]
    result = _result(outcomes)
    result.plan = dataclasses.replace(result.plan, product=(2, 64, False, 1024))
    text = "\n".join(headline(result))
    assert "Saec (k = 32) against baseline + retraining pass: ΔAUC -0.0030" in text
    assert ("Product quantisation (2 slices of 64 rows) against baseline + retraining pass: ΔAUC -0.0008 "
            "(± 0.0003 over 2 seeds), within the 0.001 target") in text
    # The threshold wins seed 1's two checkpoints: the count says so.
    assert "the frequency threshold -0.0095 (product quantisation higher in 2 of 4 pairs)" in text
    # Without product-quantisation runs, no such line.
    result.outcomes = [o for o in outcomes if o.method not in (PRODUCT, THRESHOLD_PRODUCT)]
    assert "Product quantisation" not in "\n".join(headline(result))


def test_verdict_says_whether_the_recommendation_held_on_test() -> None:
    from saec.training.methods import RECOMMENDED
    from saec.training.recommend import Candidate, Recommendation, Round
    from saec.training.report.recommendation import verdict

    recipe = {"item": Candidate("residual", 256, stages=2)}

    def result(test_loss: float) -> DatasetResult:
        outcomes = []
        for seed in (0, 1):
            for c in (2, 3):
                rec = _outcome(SAEC, c, seed, 0.7 - test_loss)
                outcomes += [_outcome(CONTROL, c, seed, 0.7), Outcome(RECOMMENDED, c, seed, rec.metrics, 32, 2000, rec.bytes_before,
                                                                      rec.bytes_after, 0.0, rec.fields)]
        r = _result(outcomes)
        r.recommendation = Recommendation(0.001, [], [Round(0.001, recipe, -0.0004, 0.0001, True)], recipe, True, "saec compress", RECOMMENDED)
        return r

    held = "\n".join(verdict(result(0.0006)))
    assert "the 0.001 target held on the test checkpoints**: ΔAUC -0.0006" in held and "validation -0.0004" in held
    assert "What bounds the ratio: item (residual 2 x 256 (float16)) holds 100%" in held
    missed = "\n".join(verdict(result(0.0015)))
    assert "the 0.001 target did not hold on the test checkpoints**: ΔAUC -0.0015" in missed
