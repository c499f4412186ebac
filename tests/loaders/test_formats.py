"""Choosing a reader by format argument, spec, suffix or content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saec.loaders import (
    InputNotFoundError,
    UnknownFormatError,
    detect_format,
    open_table,
)


def npz_bytes(tmp_path: Path) -> bytes:
    np.savez(
        tmp_path / "x.npz",
        **{"user.ids": np.arange(3), "user.vectors": np.ones((3, 2), np.float32)},
    )
    return (tmp_path / "x.npz").read_bytes()


def test_by_suffix(tmp_path: Path) -> None:
    for name, expected in [
        ("a.npz", "npz"),
        ("a.parquet", "parquet"),
        ("a.pq", "parquet"),
        ("a.pt", "torch"),
        ("a.PTH", "torch"),
        ("a.ckpt", "torch"),
        ("a.bin", "torch"),
    ]:
        (tmp_path / name).write_bytes(b"")
        assert detect_format(tmp_path / name) == expected


def test_by_content(tmp_path: Path) -> None:
    (tmp_path / "npz").write_bytes(npz_bytes(tmp_path))
    assert detect_format(tmp_path / "npz") == "npz"
    (tmp_path / "pq").write_bytes(b"PAR1" + bytes(20))
    assert detect_format(tmp_path / "pq") == "parquet"
    (tmp_path / "legacy").write_bytes(b"\x80\x02" + bytes(20))
    assert detect_format(tmp_path / "legacy") == "torch"
    (tmp_path / "text").write_bytes(b"id,vector\n")
    with pytest.raises(
        UnknownFormatError, match=r"expected an .npz, .parquet or PyTorch file.*format="
    ):
        detect_format(tmp_path / "text")


def test_a_torch_zip_is_told_from_an_npz(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.save({"user.weight": torch.ones(2, 2)}, tmp_path / "model")
    assert detect_format(tmp_path / "model") == "torch"


def test_a_directory(tmp_path: Path) -> None:
    np.save(tmp_path / "user.ids.npy", np.arange(3))
    assert detect_format(tmp_path) == "npy"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UnknownFormatError, match=r"expected a directory of .npy files"):
        detect_format(empty)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="absent: no such file or directory"):
        detect_format(tmp_path / "absent")


def test_format_argument_and_spec_override_the_suffix(tmp_path: Path) -> None:
    path = tmp_path / "table.data"
    path.write_bytes(npz_bytes(tmp_path))
    assert open_table(path, format="npz").format == "npz"
    assert open_table(path, {"format": "npz"}).format == "npz"
    with pytest.raises(UnknownFormatError, match="format: expected one of"):
        open_table(path, format="csv")
