"""A command that fails prints no success line ("done, in 0.0 s") before its error."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from saec.cli import main
from saec.progress import Progress
from tests.conftest import write_small_store


def test_a_stage_ended_by_an_error_says_so() -> None:
    out = io.StringIO()
    with pytest.raises(ValueError), Progress(out=out, tty=False) as p:
        p.stage("reading", total=3)
        p.step()
        raise ValueError("bad row")
    lines = out.getvalue().splitlines()
    assert lines[-1].endswith("reading: stopped by an error after 1 steps 0.0 s"), lines
    assert not any("done" in line for line in lines)


def _no_done_then_error(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert not any(": done," in line for line in lines), lines
    assert lines[-1].startswith(f"saec {command}: "), lines
    return lines[-1]


def test_update_with_an_unknown_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "store"
    write_small_store(root, np.random.default_rng(3), n=2000)
    rng = np.random.default_rng(4)
    np.savez(tmp_path / "upd.npz", **{"nosuch.ids": np.arange(5), "nosuch.vectors": rng.normal(size=(5, 9)).astype(np.float32)})
    assert main(["update", "--store", str(root), str(tmp_path / "upd.npz")]) == 2
    captured = capsys.readouterr()
    assert "nosuch" in _no_done_then_error(captured.err, "update")
    assert captured.out == ""


def test_compress_with_a_nan_vector(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vectors = np.random.default_rng(5).normal(size=(300, 4)).astype(np.float32)
    vectors[17, 2] = np.nan
    np.savez(tmp_path / "emb.npz", **{"user.ids": np.arange(300), "user.vectors": vectors})
    assert main(["compress", str(tmp_path / "emb.npz"), "--out", str(tmp_path / "store"), "--k", "2"]) == 2
    captured = capsys.readouterr()
    assert "user" in _no_done_then_error(captured.err, "compress")
    assert captured.out == "" and not (tmp_path / "store" / "CURRENT").exists()
