"""The delta log as a write-ahead log: damage in the middle is skipped and reported, never
truncated; sequences are never given out twice; odd files are refused, never waited on."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from saec.store import deltas
from saec.store.deltas import DeltaReader, DeltaWriter, FieldDelta, check_log, inspect, repair
from saec.store.errors import DamagedDeltaLogError, DeltaLogChangedError, DeltaLogError

FRAMES = 30


def _delta(rng: np.random.Generator, n: int) -> FieldDelta:
    return FieldDelta(
        keys=rng.integers(0, 2**63, n).astype(np.uint64),
        vectors=rng.normal(size=(n, 9)).astype(np.float32),
        masks=rng.integers(0, 16, n).astype(np.uint8),
    )


def _log(root: Path, version: str, rng: np.random.Generator, frames: int = FRAMES) -> tuple[Path, list[int], list]:
    """A segment of ``frames`` frames; returns its path, each frame's offset and the deltas."""
    w = DeltaWriter(root, version)
    sent = [_delta(rng, int(rng.integers(1, 40))) for _ in range(frames)]
    seg = deltas.deltas_dir(root, version) / deltas.segment_name(0)
    offsets = []
    for d in sent:
        offsets.append(seg.stat().st_size if seg.exists() else 0)
        w.append({"user": d})
    return seg, offsets + [seg.stat().st_size], sent


def _damage(raw: bytearray, start: int, end: int, how: str, rng: np.random.Generator) -> None:
    if how == "bit":
        pos = int(rng.integers(start, end))
        raw[pos] ^= 1 << int(rng.integers(0, 8))
    elif how == "length-up":
        raw[start + 4 : start + 8] = (int.from_bytes(raw[start + 4 : start + 8], "little") + 1000).to_bytes(4, "little")
    elif how == "length-down":
        raw[start + 4 : start + 8] = (int.from_bytes(raw[start + 4 : start + 8], "little") - 9).to_bytes(4, "little")
    elif how == "length-huge":
        raw[start + 4 : start + 8] = (2**32 - 1).to_bytes(4, "little")
    elif how == "zeros":
        raw[start:end] = bytes(end - start)
    elif how == "magic":
        raw[start : start + 4] = b"XXXX"
    elif how == "crc":
        raw[start + 16] ^= 0xFF


HOW = ["bit", "length-up", "length-down", "length-huge", "zeros", "magic", "crc"]


@pytest.mark.parametrize("how", HOW)
def test_damage_in_the_middle_is_skipped_reported_and_never_truncated(
    small_store: tuple[Path, dict], how: str, caplog: pytest.LogCaptureFixture
) -> None:
    root, data = small_store
    rng = np.random.default_rng(HOW.index(how))
    seg, offsets, sent = _log(root, data["version"], rng)
    raw = bytearray(seg.read_bytes())
    _damage(raw, offsets[10], offsets[11], how, rng)  # frame 11 of 30
    seg.write_bytes(bytes(raw))
    with caplog.at_level(logging.ERROR, logger="saec.deltas"):
        reader = DeltaReader(seg.parent)
        records = reader.poll()
    assert [r.sequence for r in records] == [s for s in range(1, FRAMES + 1) if s != 11]
    for r in records:
        assert np.array_equal(r.fields["user"].keys, sent[r.sequence - 1].keys)
    [d] = reader.damage
    assert (d.segment, d.offset, d.bytes, d.after, d.next, d.gap) == (
        seg.name, offsets[10], offsets[11] - offsets[10], 10, 12, 1
    )
    assert caplog.text.count("damaged bytes at offset") == 1 and str(offsets[10]) in caplog.text
    # The next writer keeps every byte and never reuses a sequence.
    size = seg.stat().st_size
    assert DeltaWriter(root, data["version"]).append({"user": sent[0]}) == FRAMES + 1
    assert seg.stat().st_size > size and seg.read_bytes()[:size] == bytes(raw)
    assert [r.sequence for r in DeltaReader(seg.parent).poll()][-2:] == [FRAMES, FRAMES + 1]
    # A live reader that already applied everything sees only the new frame.
    with pytest.raises(DamagedDeltaLogError, match=f"offset {offsets[10]}"):
        check_log(seg.parent)


def test_a_damaged_last_frame_is_damage_not_a_torn_tail(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    rng = np.random.default_rng(1)
    seg, offsets, sent = _log(root, data["version"], rng, frames=5)
    raw = bytearray(seg.read_bytes())
    raw[offsets[4] + 30] ^= 4  # the acknowledged frame 5, complete, fails its CRC
    seg.write_bytes(bytes(raw))
    reader = DeltaReader(seg.parent)
    assert [r.sequence for r in reader.poll()] == [1, 2, 3, 4]
    assert reader.torn is None and reader.damage[0].next is None and reader.claimed == 5
    # Not truncated; its sequence is not given out again.
    assert DeltaWriter(root, data["version"]).append({"user": sent[0]}) == 6
    assert seg.read_bytes()[: len(raw)] == bytes(raw)
    assert [r.sequence for r in DeltaReader(seg.parent).poll()] == [1, 2, 3, 4, 6]


def test_a_last_frame_with_a_damaged_length_is_not_truncated(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    rng = np.random.default_rng(2)
    seg, offsets, sent = _log(root, data["version"], rng, frames=4)
    raw = bytearray(seg.read_bytes())
    _damage(raw, offsets[3], offsets[4], "length-up", rng)  # runs past the end, but it was complete
    seg.write_bytes(bytes(raw))
    reader = DeltaReader(seg.parent)
    assert [r.sequence for r in reader.poll()] == [1, 2, 3]
    assert reader.torn is None and len(reader.damage) == 1
    assert DeltaWriter(root, data["version"]).append({"user": sent[0]}) == 5
    assert seg.read_bytes()[: len(raw)] == bytes(raw)


def test_garbage_at_the_end_is_kept_and_reported(small_store: tuple[Path, dict], rng: np.random.Generator) -> None:
    root, data = small_store
    seg, offsets, sent = _log(root, data["version"], rng, frames=3)
    garbage = bytes(rng.integers(0, 256, 40, np.uint8))
    with open(seg, "ab") as fh:
        fh.write(garbage)
    assert DeltaWriter(root, data["version"]).append({"user": sent[0]}) == 4
    reader = DeltaReader(seg.parent)
    assert [r.sequence for r in reader.poll()] == [1, 2, 3, 4]
    assert [(d.offset, d.bytes, d.next) for d in reader.damage] == [(offsets[3], 40, 4)]


def test_a_frame_whose_sequence_does_not_increase_is_skipped(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    rng = np.random.default_rng(3)
    seg, offsets, sent = _log(root, data["version"], rng, frames=10)
    raw = seg.read_bytes()
    seg.write_bytes(raw + raw[offsets[4] : offsets[5]])  # frame 5 again after frame 10
    reader = DeltaReader(seg.parent)
    assert [r.sequence for r in reader.poll()] == list(range(1, 11))
    assert "does not follow" in reader.damage[0].reason
    assert DeltaWriter(root, data["version"]).append({"user": sent[0]}) == 11


def test_repair_keeps_every_intact_frame_and_drops_only_the_damage(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    rng = np.random.default_rng(4)
    seg, offsets, sent = _log(root, data["version"], rng)
    raw = bytearray(seg.read_bytes())
    _damage(raw, offsets[10], offsets[11], "bit", rng)
    _damage(raw, offsets[20], offsets[21], "zeros", rng)
    seg.write_bytes(bytes(raw) + deltas.encode_frame(99, b"x" * 7)[:20])  # and a torn tail
    before = [r.sequence for r in DeltaReader(seg.parent).poll()]
    with pytest.raises(DamagedDeltaLogError, match="--repair"):
        check_log(seg.parent)
    report = check_log(seg.parent, repair_it=True)
    assert report is not None and report.kept == {seg.name: FRAMES - 2}
    assert [(d.offset, d.after, d.next) for d in report.dropped] == [(offsets[10], 10, 12), (offsets[20], 20, 22)]
    assert report.truncated is not None
    after = inspect(seg.parent)
    assert after.damage == [] and after.torn is None and after.frames == FRAMES - 2
    assert [r.sequence for r in DeltaReader(seg.parent).poll()] == before
    assert check_log(seg.parent) is None
    assert DeltaWriter(root, data["version"]).append({"user": sent[0]}) == FRAMES + 1


def test_a_reader_following_a_segment_notices_it_shrink_be_replaced_or_vanish(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    rng = np.random.default_rng(5)
    seg, offsets, _ = _log(root, data["version"], rng, frames=6)
    raw = seg.read_bytes()
    for change in ("shrink", "replace", "delete"):
        seg.write_bytes(raw)
        reader = DeltaReader(seg.parent)
        assert len(reader.poll()) == 6
        if change == "shrink":
            os.truncate(seg, offsets[3])
        elif change == "replace":
            tmp = seg.with_name("x")
            tmp.write_bytes(raw)
            os.rename(tmp, seg)  # same size, same bytes, another file
        else:
            seg.unlink()
        assert not reader.unchanged()
        with pytest.raises(DeltaLogChangedError):
            reader.poll()


def test_a_new_frame_the_size_of_a_truncated_tail_is_seen(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    rng = np.random.default_rng(6)
    seg, offsets, sent = _log(root, data["version"], rng, frames=2)
    small = deltas.encode_payload({"user": _delta(rng, 3)})
    big = deltas.encode_frame(3, deltas.encode_payload({"user": _delta(rng, 30)}))
    size_of_new = deltas._FRAME.size + len(small)
    with open(seg, "ab") as fh:
        fh.write(big[:size_of_new])  # a crashed append, exactly as long as the next frame
    reader = DeltaReader(seg.parent)
    assert [r.sequence for r in reader.poll()] == [1, 2]
    size = seg.stat().st_size
    w = DeltaWriter(root, data["version"])
    with w.lock():
        assert w.append_locked(small) == 3  # truncates the torn tail, appends as many bytes
    assert seg.stat().st_size == size
    [rec] = reader.poll()
    assert rec.sequence == 3 and rec.fields["user"].keys.shape == (3,)


def _odd(path: Path, kind: str, target: Path) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "symlink":
        path.symlink_to(target)
    elif kind == "device":
        path.symlink_to("/dev/zero")


@pytest.mark.parametrize("kind", ["fifo", "folder", "symlink", "device"])
def test_odd_files_in_place_of_a_segment_are_refused_never_waited_on(
    small_store: tuple[Path, dict], kind: str, tmp_path: Path
) -> None:
    root, data = small_store
    rng = np.random.default_rng(7)
    seg, _, sent = _log(root, data["version"], rng, frames=3)
    keep = tmp_path / "kept.log"
    shutil.copy(seg, keep)
    seg.unlink()
    _odd(seg, kind, keep)
    done: list[object] = []

    def attempt() -> None:
        reader = DeltaReader(seg.parent)
        done.append(reader.poll())
        done.append(reader.refused)
        try:
            DeltaWriter(root, data["version"]).append({"user": sent[0]})
        except DeltaLogError as exc:
            done.append(str(exc))

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "a reader or writer waited on an odd file"
    records, refused, refusal = done
    assert records == [] and refused and "expected a regular file" in refused
    assert "expected a regular file" in str(refusal) and "nothing was written" in str(refusal)
    with pytest.raises(DeltaLogError):
        check_log(seg.parent)
    # Put back: the same reader goes on.
    if seg.is_dir() and not seg.is_symlink():
        seg.rmdir()
    else:
        seg.unlink()
    shutil.copy(keep, seg)
    assert [r.sequence for r in deltas.read_all(seg.parent)] == [1, 2, 3]


def test_an_odd_lock_file_is_refused(small_store: tuple[Path, dict], rng: np.random.Generator) -> None:
    root, data = small_store
    folder = deltas.deltas_dir(root, data["version"])
    folder.mkdir(parents=True)
    os.mkfifo(folder / deltas.LOCK_NAME)
    start = time.monotonic()
    with pytest.raises(DeltaLogError, match="FIFO"):
        DeltaWriter(root, data["version"]).append({"user": _delta(rng, 2)})
    assert time.monotonic() - start < 5


def test_resync_over_a_file_full_of_magic_is_linear(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    folder = deltas.deltas_dir(root, data["version"])
    folder.mkdir(parents=True)
    # 4 MB of frame headers announcing large lengths: a quadratic scan would take minutes.
    header = deltas._FRAME.pack(deltas.MAGIC, 3_000_000, 1, 0) + b"\0\0\0\0" + b'{"fields":'
    (folder / deltas.segment_name(0)).write_bytes(header * (4_000_000 // len(header)))
    start = time.monotonic()
    reader = DeltaReader(folder)
    assert reader.poll() == []
    assert time.monotonic() - start < 10
    assert reader.damage or reader.torn
    assert repair(folder).changed or reader.torn


def test_a_misplaced_copy_of_a_later_frame_costs_only_itself(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    rng = np.random.default_rng(8)
    seg, offsets, _ = _log(root, data["version"], rng, frames=12)
    raw = seg.read_bytes()
    copy = raw[offsets[9] : offsets[10]]  # frame 10, again after frame 3
    seg.write_bytes(raw[: offsets[3]] + copy + raw[offsets[3] :])
    reader = DeltaReader(seg.parent)
    assert [r.sequence for r in reader.poll()] == list(range(1, 13))
    [d] = reader.damage
    assert d.offset == offsets[3] and "frame 10 does not follow" in d.reason


def test_a_copy_at_the_end_of_a_finished_segment_does_not_hide_the_next(
    small_store: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, data = small_store
    monkeypatch.setattr(deltas, "SEGMENT_BYTES", 2000)
    rng = np.random.default_rng(9)
    w = DeltaWriter(root, data["version"])
    folder = deltas.deltas_dir(root, data["version"])
    for _ in range(12):
        w.append({"user": _delta(rng, 20)})
    segs = sorted(folder.glob("segment-*.log"))
    assert len(segs) >= 3
    last = segs[-1].read_bytes()
    with open(segs[0], "ab") as fh:
        fh.write(last)  # the newest frames, copied to the end of the first segment
    reader = DeltaReader(folder)
    assert [r.sequence for r in reader.poll()] == list(range(1, 13))
    assert reader.damage and all("does not follow" in d.reason for d in reader.damage)
