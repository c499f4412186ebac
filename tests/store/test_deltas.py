"""Delta segments: frames round-trip, sequences order writers, torn tails are dropped."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest

from saec.store import deltas
from saec.store.deltas import DeltaReader, DeltaWriter, FieldDelta, decode_payload, encode_payload, scan_frames
from saec.store.errors import CorruptDeltaError, SupersededError
from saec.store.layout import StoreLayout
from tests.conftest import write_small_store


def _delta(rng: np.random.Generator, n: int, dim: int = 9, masks: bool = True) -> FieldDelta:
    return FieldDelta(
        keys=rng.integers(0, 2**63, n).astype(np.uint64),
        vectors=rng.normal(size=(n, dim)).astype(np.float32),
        masks=rng.integers(0, 16, n).astype(np.uint8) if masks else None,
    )


def test_payload_round_trip(rng: np.random.Generator) -> None:
    fields = {"user": _delta(rng, 7), "country": _delta(rng, 3, dim=17, masks=False)}
    back = decode_payload(encode_payload(fields))
    assert list(back) == ["user", "country"]
    for name, d in fields.items():
        assert np.array_equal(back[name].keys, d.keys)
        assert np.array_equal(back[name].vectors, d.vectors)
        assert (back[name].masks is None) == (d.masks is None)
    assert np.array_equal(back["user"].masks, fields["user"].masks)


def test_payload_that_lies_about_its_size_is_refused(rng: np.random.Generator) -> None:
    payload = encode_payload({"user": _delta(rng, 5)})
    with pytest.raises(CorruptDeltaError, match="expected"):
        decode_payload(payload[:-8])


def test_writers_share_one_sequence_and_readers_see_every_frame(
    small_store: tuple[Path, dict], rng: np.random.Generator
) -> None:
    root, data = small_store
    a = DeltaWriter(root, data["version"])
    b = DeltaWriter(root, data["version"])
    reader = DeltaReader(deltas.deltas_dir(root, data["version"]))
    assert reader.poll() == []  # no folder yet: nothing, no error
    sent = [_delta(rng, 10), _delta(rng, 20), _delta(rng, 5)]
    assert a.append({"user": sent[0]}) == 1
    assert b.append({"user": sent[1]}) == 2  # b read a's frame under the lock first
    first = reader.poll()
    assert a.append({"user": sent[2]}) == 3
    second = reader.poll()
    assert [r.sequence for r in first] == [1, 2] and [r.sequence for r in second] == [3]
    for rec, d in zip(first + second, sent, strict=True):
        assert np.array_equal(rec.fields["user"].keys, d.keys)
        assert np.array_equal(rec.fields["user"].masks, d.masks)
    assert reader.poll() == []


@pytest.mark.parametrize("seed", range(5))
def test_torn_tail_is_never_applied_and_the_next_append_truncates_it(
    small_store: tuple[Path, dict], seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    root, data = small_store
    rng = np.random.default_rng(seed)
    w = DeltaWriter(root, data["version"])
    good = [_delta(rng, int(rng.integers(1, 50))) for _ in range(3)]
    for d in good:
        w.append({"user": d})
    seg = deltas.deltas_dir(root, data["version"]) / deltas.segment_name(0)
    intact = seg.stat().st_size
    # An append killed part way: a prefix of a real frame.
    frame = deltas.encode_frame(4, encode_payload({"user": _delta(rng, 30)}))
    torn = frame[: int(rng.integers(1, len(frame)))]
    with open(seg, "ab") as fh:
        fh.write(torn)
    with caplog.at_level(logging.WARNING, logger="saec.deltas"):
        reader = DeltaReader(seg.parent)
        records = reader.poll()
    assert [r.sequence for r in records] == [1, 2, 3]
    assert "not applying" in caplog.text and reader.damage == [] and reader.torn == (intact, len(torn))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="saec.deltas"):
        assert DeltaWriter(root, data["version"]).append({"user": good[0]}) == 4
    assert "truncating a torn tail" in caplog.text
    assert seg.stat().st_size > intact
    assert [r.sequence for r in DeltaReader(seg.parent).poll()] == [1, 2, 3, 4]


def test_a_flipped_bit_stops_the_reader(small_store: tuple[Path, dict], rng: np.random.Generator) -> None:
    root, data = small_store
    w = DeltaWriter(root, data["version"])
    w.append({"user": _delta(rng, 10)})
    w.append({"user": _delta(rng, 10)})
    seg = deltas.deltas_dir(root, data["version"]) / deltas.segment_name(0)
    raw = bytearray(seg.read_bytes())
    raw[-5] ^= 1
    frames, used, why = scan_frames(bytes(raw))
    assert len(frames) == 1 and "checksum" in (why or "")
    assert used < len(raw)


def test_appends_to_a_superseded_base_are_refused(small_store: tuple[Path, dict], rng: np.random.Generator) -> None:
    root, data = small_store
    w = DeltaWriter(root, data["version"])
    w.append({"user": _delta(rng, 3)})
    newer = write_small_store(root, rng)["version"]
    assert StoreLayout(root).current() == newer
    with pytest.raises(SupersededError, match=newer):
        w.append({"user": _delta(rng, 3)})
    assert DeltaWriter(root, data["version"], check_current=False).append({"user": _delta(rng, 3)}) == 2


def test_segments_roll_over(small_store: tuple[Path, dict], rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    root, data = small_store
    monkeypatch.setattr(deltas, "SEGMENT_BYTES", 1000)
    w = DeltaWriter(root, data["version"])
    reader = DeltaReader(deltas.deltas_dir(root, data["version"]))
    seqs = []
    for _ in range(6):
        w.append({"user": _delta(rng, 10)})  # ~600 bytes a frame
        seqs += [r.sequence for r in reader.poll()]
    names = sorted(os.listdir(deltas.deltas_dir(root, data["version"])))
    assert deltas.segment_name(2) in names
    assert seqs == [1, 2, 3, 4, 5, 6]
    assert [r.sequence for r in deltas.read_all(deltas.deltas_dir(root, data["version"]))] == seqs


def test_pruning_a_snapshot_removes_its_deltas(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "store"
    first = write_small_store(root, rng)["version"]
    DeltaWriter(root, first).append({"user": _delta(rng, 5)})
    second = write_small_store(root, rng)["version"]
    DeltaWriter(root, second).append({"user": _delta(rng, 5)})
    (root / "deltas" / "notes").mkdir()  # not a version: not ours to remove
    layout = StoreLayout(root)
    assert (root / "deltas" / first / "segment-000000.log").is_file()
    assert layout.prune(1) == [first]
    assert sorted(p.name for p in (root / "deltas").iterdir()) == sorted([second, "notes"])
    assert DeltaReader(root / "deltas" / second).poll()[0].sequence == 1
    assert not (root / ".trash").exists() or not any((root / ".trash").iterdir())


def test_deltas_being_appended_to_are_left_for_the_next_prune(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "store"
    first = write_small_store(root, rng)["version"]
    appends = DeltaWriter(root, first)
    appends.append({"user": _delta(rng, 5)})
    write_small_store(root, rng)
    layout = StoreLayout(root)
    with appends.lock():  # a writer in the middle of an append to the old base
        assert layout.prune(1) == [first]
        assert (root / "deltas" / first / "segment-000000.log").is_file()
    assert layout.prune(1) == []  # no snapshot left to prune: the deltas go all the same
    assert not (root / "deltas" / first).exists()


def test_publishing_with_keep_removes_the_deltas_of_the_snapshots_it_prunes(
        tmp_path: Path, rng: np.random.Generator) -> None:
    from saec.store.writer import SnapshotWriter

    root = tmp_path / "store"
    versions = [write_small_store(root, rng)["version"]]
    DeltaWriter(root, versions[0]).append({"user": _delta(rng, 3)})
    for _ in range(2):
        with SnapshotWriter(root, source="tests", keep=2) as w:
            w.add_dense_field("country", np.arange(1, 4, dtype=np.uint64), np.ones((3, 17), np.float32))
            versions.append(w.publish())
        DeltaWriter(root, versions[-1]).append({"country": FieldDelta(np.array([9], np.uint64),
                                                                      np.ones((1, 17), np.float32), None)})
    assert StoreLayout(root).versions() == versions[1:]
    assert sorted(p.name for p in (root / "deltas").iterdir()) == versions[1:]


def test_frame_keeps_its_time_and_source(rng):
    payload = encode_payload({"user": _delta(rng, 3)}, time_ms=1_764_633_600_123, source="1764633600120-0")
    rec = deltas.decode_record(7, payload)
    assert (rec.sequence, rec.time_ms, rec.source) == (7, 1_764_633_600_123, "1764633600120-0")
    now = deltas.decode_record(1, encode_payload({"user": _delta(rng, 3)}))
    assert now.source is None and now.time_ms is not None and abs(now.time_ms / 1000 - time.time()) < 60
