"""``saec evaluate`` end to end on small data: the report, its plots and its numbers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from saec.store.snapshot import open_current
from saec.training.cli import add_parser, run
from saec.training.evaluate import main
from saec.training.methods import (
    HASH_K,
    HASH_RECOMMENDED,
    HASH_RESIDUAL,
    INT8,
    RECOMMENDED,
    RESIDUAL,
    SAEC,
    THRESHOLD,
    THRESHOLD_RECOMMENDED,
    THRESHOLD_RESIDUAL,
)
from saec.training.protocol import LOGREG
from saec.training.stream import small_stream


def test_add_parser_registers_the_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="saec")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["evaluate", "--data", "stream", "--quick", "--out", "x", "--k", "8"])
    assert args.run is run
    assert args.data == ["stream"] and args.quick and args.k == 8 and args.threads == 1


def test_jobs_default_to_none_and_refuse_less_than_one(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="saec")
    add_parser(parser.add_subparsers(dest="command"))
    # None: as many data sets at once as the CPUs this process may use (training.evaluate).
    assert parser.parse_args(["evaluate"]).jobs is None
    assert parser.parse_args(["evaluate", "--jobs", "3"]).jobs == 3
    for bad in ("0", "-2", "two"):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["evaluate", "--jobs", bad])
        assert exit_info.value.code == 2
        assert f"expected a whole number >= 1, got {bad!r}" in capsys.readouterr().err


@pytest.mark.long
def test_quick_stream_evaluation_writes_report_plots_and_json(tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert main(["--data", "stream", "--quick", "--out", str(out), "--publish", str(tmp_path / "store")]) == 0
    report = (out / "report.md").read_text()
    for heading in ("### Findings", "### Comparison at equal memory", "### Table 1", "### Table 2", "### Table 3", "### Tuning", "### Serving"):
        assert heading in report
    assert len(list(out.glob("*.png"))) == 6
    [result] = json.loads((out / "results.json").read_text())
    # The recommendation: chosen on the validation checkpoints only, reported on the test ones, printed as a command.
    rec = result["recommendation"]
    val, test = result["plan"]["val"], result["plan"]["test"]
    assert all(t["pairs"] == len(val) for t in rec["tried"]) and rec["rounds"]
    assert {o["checkpoint"] for o in result["outcomes"] if o["method"] == RECOMMENDED} == set(test)
    assert "### Which `saec compress` command" in report and rec["command"].startswith("saec compress TABLES.npz --out STORE")
    assert rec["command"] in report and (out / "generated-stream-quick-recommendation-curve.png").exists()
    assert {HASH_RECOMMENDED, THRESHOLD_RECOMMENDED} <= {o["method"] for o in result["outcomes"]}
    methods = {o["method"] for o in result["outcomes"]}
    assert {"baseline", LOGREG, SAEC, HASH_K, THRESHOLD, INT8, RESIDUAL, HASH_RESIDUAL, THRESHOLD_RESIDUAL} <= methods
    # Residual quantisation is reported with its rivals at its bytes, which are its own.
    residual = {o["method"]: o for o in result["outcomes"] if o["method"] in (RESIDUAL, THRESHOLD_RESIDUAL) and o["checkpoint"] == 9}
    assert residual[THRESHOLD_RESIDUAL]["bytes_after"]["keyed"] <= residual[RESIDUAL]["bytes_after"]["keyed"]
    assert "Residual quantisation (2 stages of 16 rows, count-weighted, float16 codebooks) against baseline + retraining pass" in report
    saec = [o for o in result["outcomes"] if o["method"] == SAEC]
    assert all(o["vectors"] < o["features"] / 10 for o in saec)
    published = result["publish"]
    assert open_current(tmp_path / "store" / "generated-stream-quick").version == published["version"]
    assert published["own_vector"] + published["aliased"] >= published["features"]
    # The retrained residual quantiser, served from format version 4, reads back what the model used.
    residual = result["publish_residual"]
    assert set(residual["fields"].values()) >= {"residual"}
    assert residual["own_vector"] + residual["aliased"] >= residual["features"]


@pytest.mark.slow
def test_own_csv_click_log_through_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = small_stream(rows=12_000, segments=6, seed=1)
    path = tmp_path / "clicks.csv"
    cols = {f.name: f.vocab[f.codes[:, 0]] for f in log.fields[:4]}
    lines = ["t,clicked," + ",".join(cols)]
    for i in range(log.n_rows):
        lines.append(f"{i},{int(log.labels[i])}," + ",".join(str(v[i]) for v in cols.values()))
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "report"
    argv = ["--data", str(path), "--label", "clicked", "--categorical", ",".join(cols), "--time", "t", "--segments", "6",
            "--batch", "256", "--quick", "--out", str(out)]
    assert main(argv) == 0
    [result] = json.loads((out / "results.json").read_text())
    # No --k or --min-factor: chosen from the field sizes, printed, and every field of at
    # least 256 features is compressed by the end.
    k, min_rows = result["settings"]["k"], result["settings"]["k"] * result["settings"]["min_factor"]
    assert f"k={k}, min_factor {result['settings']['min_factor']}: chosen from the field sizes" in capsys.readouterr().err
    large = [n for n in result["summary"]["fields"].values() if n >= 256]
    assert large and min(large) >= min_rows
    last = max(o["checkpoint"] for o in result["outcomes"])
    [saec] = [o for o in result["outcomes"] if o["method"] == SAEC and o["checkpoint"] == last]
    assert saec["vectors"] < saec["features"] / 2
    assert result["summary"]["rows"] == 12_000
    assert sorted(result["summary"]["fields"]) == sorted(cols)
    aucs = [o["metrics"]["auc"] for o in result["outcomes"] if o["method"] == "baseline"]
    assert np.mean(aucs) > 0.55


def test_bad_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(tmp_path / "missing.csv"), "--label", "y", "--categorical", "a", "--out", str(tmp_path)]) == 2
    assert "expected a click log at" in capsys.readouterr().err
