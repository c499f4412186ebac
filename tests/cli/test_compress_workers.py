"""`saec compress --workers N`: fields prepared N at once, the same snapshot whatever N."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saec.cli import main
from saec.store.snapshot import open_current
from saec.synthetic import generate_field


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six fields, large and small, so that several are under way at once and finish out
    of order: compressed ones of different lengths, and dense ones."""
    rng = np.random.default_rng(5)
    arrays = {}
    for i, (n, dim) in enumerate([(30_000, 9), (400, 9), (12_000, 17), (9_000, 9), (250, 17), (20_000, 9)]):
        g = generate_field(f"f{i}", n, dim, rng, id_offset=i << 40)
        arrays.update({f"f{i}.ids": g.ids, f"f{i}.vectors": g.vectors, f"f{i}.counts": g.counts})
    path = tmp_path_factory.mktemp("workers") / "emb.npz"
    np.savez(path, **arrays)
    return path


def _arrays(store: Path) -> dict[str, str]:
    """Every array's checksum; an HNSW index by its shape (its file holds memory addresses)."""
    snap = open_current(store)
    return {path: a["sha256"] if not path.endswith("/hnsw") else str(a["shape"])
            for path, a in snap.manifest["arrays"].items()}


def test_the_snapshot_does_not_depend_on_workers(table: Path, tmp_path: Path) -> None:
    common = [str(table), "--k", "40", "--top-n", "5000", "--min-factor", "100", "--seed", "3"]
    for workers in ("1", "3"):
        assert main(["compress", *common, "--out", str(tmp_path / workers), "--workers", workers]) == 0
    one, three = _arrays(tmp_path / "1"), _arrays(tmp_path / "3")
    assert set(one) == set(three)
    assert {"f0/masks", "f2/masks", "f5/masks", "f1/vectors", "f4/vectors"} <= set(one)
    assert {p for p in one if one[p] != three[p]} == set()
    fields = [f for f in open_current(tmp_path / "3").manifest["fields"]]
    assert fields == [f for f in open_current(tmp_path / "1").manifest["fields"]]


@pytest.mark.parametrize("bad", ["0", "-2", "two"])
def test_workers_below_one_are_refused(table: Path, tmp_path: Path, bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["compress", str(table), "--out", str(tmp_path / "s"), "--workers", bad])
    assert f"expected a whole number >= 1, got '{bad}'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
