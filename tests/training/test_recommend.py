"""The recommendation rule and the command it prints: the knapsack, the charge, and a command that runs."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from saec.cli import main
from saec.store.snapshot import open_current
from saec.synthetic import generate_field
from saec.training.recommend import Candidate, Tried, bound, candidates, choose, command

F32, INT8, F16 = Candidate("float32"), Candidate("int8"), Candidate("float16")
CB32 = Candidate("codebook", 32)
PQ = Candidate("product", 256, subvectors=2)
RQ = Candidate("residual", 256, stages=2)


def _tried() -> list[Tried]:
    # a: float32 100 B; codebook charged 0.0006 for 10 B; int8 0.0001 for 30 B.
    # b: float32 200 B; product 0.0005 for 20 B; residual 0.0002 for 50 B.
    return [Tried("a", F32, 0.0, 0.0, 6, 100), Tried("a", CB32, -0.0006, 0.0, 6, 10), Tried("a", INT8, -0.0001, 0.0, 6, 30),
            Tried("b", F32, 0.0, 0.0, 6, 200), Tried("b", PQ, -0.0005, 0.0, 6, 20), Tried("b", RQ, -0.0002, 0.0, 6, 50)]


def test_choose_takes_the_fewest_bytes_within_the_budget() -> None:
    # Within 0.001: codebook + product (0.0011) is over; int8 + product (0.0006, 50 B) beats codebook + residual (60 B).
    assert choose(_tried(), ["a", "b"], 0.001) == {"a": INT8, "b": PQ}
    # Within 0.0005: int8 + residual (0.0003, 80 B) beats float32 + product (0.0005, 120 B).
    assert choose(_tried(), ["a", "b"], 0.0005) == {"a": INT8, "b": RQ}
    # Nothing is free: a budget of 0 keeps every field as trained.
    assert choose(_tried(), ["a", "b"], 0.0) == {"a": F32, "b": F32}
    # A field with no try at all stays float32.
    assert choose(_tried(), ["a", "b", "c"], 0.001)["c"] == F32


def test_a_try_is_charged_its_standard_error() -> None:
    lucky = Tried("a", CB32, 0.0002, 0.0003, 6, 10)  # looks free, but only within its noise
    assert lucky.loss == pytest.approx(0.0001)
    assert Tried("a", CB32, 0.0009, 0.0003, 6, 10).loss == 0.0
    tried = [Tried("a", F32, 0.0, 0.0, 6, 100), Tried("a", CB32, -0.0008, 0.0003, 6, 10)]
    # -0.0008 alone would fit 0.001; with its standard error it does not.
    assert choose(tried, ["a"], 0.001) == {"a": F32}
    assert choose(tried, ["a"], 0.0011) == {"a": CB32}


def test_candidates_offer_every_method_where_it_fits() -> None:
    small = candidates(100, 8)
    assert {c.method for c in small} == {"float32", "float16", "int8"}
    large = candidates(5000, 8)
    assert {c.method for c in large} == {"float32", "float16", "int8", "codebook", "product", "residual"}
    assert any(c.private_rows for c in large if c.method == "codebook") and any(c.private_rows for c in large if c.method == "product")
    assert {c.stages for c in large if c.method == "residual"} == {2, 3, 4}
    # A codebook is at most half the field; slices must divide the row.
    assert all(2 * (c.k + c.private_rows) <= 600 for c in candidates(600, 8))
    assert not [c for c in candidates(5000, 6) if c.subvectors == 4]


def test_bound_names_the_field_holding_most_bytes() -> None:
    assert bound({"user": 300, "item": 100}, {"user": RQ}) == "user (residual 2 x 256 (float16)) holds 75% of the compressed model's bytes"


def test_the_printed_command_stores_every_field_as_the_recipe_says(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    sizes = {"user": 3000, "item": 1500, "zip": 700, "age": 600, "tag": 80}
    data = {name: generate_field(name, n, 8, rng) for name, n in sizes.items()}
    tables = tmp_path / "emb.npz"
    np.savez(tables, **{f"{name}.{what}": getattr(d, what) for name, d in data.items() for what in ("ids", "vectors", "counts")})
    rq64 = Candidate("residual", 64, stages=2)
    recipe = {"user": rq64, "item": rq64, "zip": Candidate("product", 128, private_rows=32, subvectors=2), "age": F32, "tag": INT8}
    line = command(recipe, str(tables), str(tmp_path / "store"))
    argv = shlex.split(line)
    assert argv[:2] == ["saec", "compress"]
    # The way two fields share is in the global flags; every other field has a --per-field setting.
    assert "--stages" in argv and argv.count("--per-field") == 3 and "age:dense-dtype=float32" in argv
    assert main(argv[1:]) == 0
    snap = open_current(tmp_path / "store")
    for name in ("user", "item"):
        f = snap.fields[name]
        assert f.kind == "residual" and f.k == 64 and f.stages == 2 and f.codebook is not None and f.codebook.dtype == np.float16
        assert f.attrs["weight_by_count"] is True
    zipf = snap.fields["zip"]
    assert zipf.kind == "product" and zipf.k == 128 + 32 and zipf.attrs["private_rows"] == 32
    # age (600 features) would be clustered by the global flags (min_factor 2 * k 64 = 128): it stays float32.
    assert snap.fields["age"].kind == "dense"
    tag = snap.fields["tag"]
    assert tag.kind == "quantised" and tag.vectors is not None and tag.vectors.dtype == np.uint8


def test_a_recipe_without_clustering_names_every_field(tmp_path: Path) -> None:
    line = command({"a": F16, "b": F32})
    assert line == "saec compress TABLES.npz --out STORE --per-field a:dense-dtype=float16 --per-field b:dense-dtype=float32"
