"""``saec fold`` and ``saec update`` refuse a damaged delta log, and ``--repair`` keeps every
intact frame: one flipped bit never costs the acknowledged batches after it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saec.cli import main
from saec.store import deltas
from saec.store.deltas import DeltaWriter, FieldDelta
from saec.store.hashing import hash_ids
from saec.store.layout import StoreLayout
from saec.store.live import LiveEngine

FRAMES = 30


def _frames(root: Path, version: str) -> tuple[Path, list[int]]:
    w = DeltaWriter(root, version)
    seg = deltas.deltas_dir(root, version) / deltas.segment_name(0)
    offsets = []
    for i in range(FRAMES):
        offsets.append(seg.stat().st_size if seg.exists() else 0)
        w.append({"country": FieldDelta(hash_ids(np.array([f"n{i}"]), "country"), np.full((1, 17), i, np.float32), None)})
    return seg, offsets + [seg.stat().st_size]


def _found(root: Path) -> list[bool]:
    engine = LiveEngine(root, updates=True).engine
    assert engine is not None
    return engine.lookup({"country": hash_ids(np.array([f"n{i}" for i in range(FRAMES)]), "country")}).fields[
        "country"].found.tolist()


def test_a_flipped_bit_is_refused_then_repaired_keeping_every_intact_frame(
    small_store: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, data = small_store
    seg, offsets = _frames(root, data["version"])
    raw = bytearray(seg.read_bytes())
    raw[offsets[10] + 50] ^= 0x04  # frame 11 of 30
    seg.write_bytes(bytes(raw))
    assert _found(root) == [i != 10 for i in range(FRAMES)]  # served around the damage
    np.savez(tmp_path / "u.npz", **{"country.ids": np.array(["later"]), "country.vectors": np.ones((1, 17), np.float32)})
    capsys.readouterr()
    assert main(["fold", "--store", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"offset {offsets[10]}" in err and "--repair" in err and "1 sequences missing" in err
    assert main(["update", "--store", str(root), str(tmp_path / "u.npz")]) == 2
    assert "--repair" in capsys.readouterr().err
    assert StoreLayout(root).current() == data["version"] and seg.read_bytes() == bytes(raw)  # nothing touched
    assert main(["update", "--store", str(root), str(tmp_path / "u.npz"), "--repair"]) == 0
    assert "appended frames 31..31" in capsys.readouterr().out  # sequence 11 is never given out again
    assert deltas.check_log(seg.parent) is None
    assert main(["fold", "--store", str(root)]) == 0
    folded = StoreLayout(root).current()
    assert folded != data["version"]
    assert _found(root) == [i != 10 for i in range(FRAMES)]


def test_fold_repair_publishes_every_intact_frame(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    seg, offsets = _frames(root, data["version"])
    raw = bytearray(seg.read_bytes())
    raw[offsets[10] : offsets[11]] = bytes(offsets[11] - offsets[10])  # frame 11 zeroed
    raw[offsets[20] + 4] ^= 0xFF  # frame 21's length field
    seg.write_bytes(bytes(raw))
    assert main(["fold", "--store", str(root), "--repair"]) == 0
    assert _found(root) == [i not in (10, 20) for i in range(FRAMES)]


def test_compress_refuses_a_damaged_log_it_would_carry_then_repairs_it(
    small_store: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, data = small_store
    seg, offsets = _frames(root, data["version"])
    raw = bytearray(seg.read_bytes())
    raw[offsets[10] + 50] ^= 0x04  # frame 11 of 30
    seg.write_bytes(bytes(raw))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "c.npz", **{"country.ids": np.arange(50), "country.vectors": rng.normal(size=(50, 17)).astype(np.float32)})
    capsys.readouterr()
    assert main(["compress", str(tmp_path / "c.npz"), "--out", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"offset {offsets[10]}" in err and "--repair" in err
    assert StoreLayout(root).current() == data["version"] and seg.read_bytes() == bytes(raw)  # nothing touched
    assert main(["compress", str(tmp_path / "c.npz"), "--out", str(root), "--repair"]) == 0
    assert StoreLayout(root).current() != data["version"]
    assert _found(root) == [i != 10 for i in range(FRAMES)]  # every intact frame carried
