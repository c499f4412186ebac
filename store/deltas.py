"""Delta segments: the durable, append-only log of updates on top of one snapshot.

::

    STORE/deltas/<base version>/
      .lock                      flock'ed by a writer for the length of one append
      segment-000000.log         frames, appended; the next segment starts once one
      segment-000001.log         passes SEGMENT_BYTES

A segment is a sequence of frames, each one batch of updates (one HTTP request, one
chunk of a file, one message of a queue)::

    "SAED"  u32 payload length L  u64 sequence  u32 crc32(length, sequence, payload)
    L bytes of payload:
        u32 header length H, H bytes of JSON
            {"fields": [["user", n, dim, "uint8"], ["country", n, dim, ""]],
             "t": 1764633600123, "src": "1764633600120-0"}
            (a field's last item: dtype of the assigned masks, "" for a dense field;
            "t": when the batch was written, Unix milliseconds, which a publish compares
            with the watermark its checkpoint covers; "src": the batch's position in a
            shared update log, when it came through one; frames of earlier releases lack
            both and count as not covered by any watermark)
        zero padding to a multiple of 8 bytes
        per field in header order: keys uint64 (n,), vectors float32 (n, dim),
        masks (n,) when the field is compressed, then zero padding to 8 bytes

All integers little-endian.

The contract, as of a database's write-ahead log:

- **Acknowledged** means fsynced: a writer takes the base's lock, appends one frame with
  the next sequence and fsyncs it before it returns (and a server answers 200). Such a
  frame survives kill -9 of any process and is served by every reader from then on.
- **Sequences** strictly increase over all segments of a base; gaps are allowed (a gap
  is frames lost to damage or dropped by a repair). A writer uses one more than every
  sequence it can read, the headers of damaged frames included where their magic is
  intact and their sequence plausible, so a sequence is never given out twice. A frame
  whose sequence does not increase is skipped and reported, never applied.
- **Checksums** are verified on every read. A frame that fails (bad magic, length or
  CRC) *followed by an intact frame* is damage: the reader re-synchronises on the next
  intact frame (the next ``MAGIC`` whose header and CRC verify), serves every later
  intact frame, and records the damage (:class:`Damage`: segment, offset, bytes, the
  sequence gap it implies), logged once at ERROR by each reader that meets it.
  ``saec fold`` and ``saec update`` refuse a damaged log (:func:`check_log`) unless given
  ``--repair`` (:func:`repair`): the segment is rewritten with every intact frame, in
  order, fsynced and renamed into place, and what was dropped is logged and returned.
- Only a **torn tail**, an incomplete last frame with nothing intact after it (fewer
  bytes than a header, all of them the start of ``MAGIC``; or a header announcing more
  bytes than the file holds, whose CRC does not verify over the bytes that are there), is
  left unapplied: after a crash that is an interrupted append, never acknowledged; while
  a writer works it is its append in progress. The next writer truncates it, under the
  lock, and logs it. Any other bytes at the end are damage and stay on disk.
- **Odd files**: segments are opened with ``O_NOFOLLOW | O_NONBLOCK`` and ``fstat``'ed; a
  FIFO, folder, symlink or device where a segment should be is refused (the reader
  keeps what it read and says why in :attr:`DeltaReader.refused`; a writer raises
  :class:`DeltaLogError`), never waited on. A reader notices change by (inode, size,
  mtime), not size alone; a segment that shrank below what was read, was replaced or was
  deleted raises :class:`DeltaLogChangedError`, and the reader's owner starts over.
- **Concurrency**: any number of writers in any processes (the lock orders them) and any
  number of readers, which take no lock. Any writer (the HTTP service, ``saec update``, a
  consumer of a message queue) produces the same frames through :class:`DeltaWriter`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import struct
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson

from saec.store._files import kind_of
from saec.store.errors import (
    CorruptDeltaError,
    DamagedDeltaLogError,
    DeltaLogChangedError,
    DeltaLogError,
    SupersededError,
)
from saec.store.layout import DELTAS, DELTAS_LOCK, StoreLayout, fsync_path

log = logging.getLogger("saec.deltas")

MAGIC = b"SAED"
_FRAME = struct.Struct("<4sIQI")
_LENSEQ = struct.Struct("<IQ")
_HLEN = struct.Struct("<I")
SEGMENT_BYTES = 1 << 30
LOCK_NAME = DELTAS_LOCK
# One frame may not claim more than this: a damaged length field must not make a
# reader allocate gigabytes.
MAX_FRAME_BYTES = 1 << 31


def _pad(n: int) -> int:
    return -n % 8


def segment_name(index: int) -> str:
    return f"segment-{index:06d}.log"


def deltas_dir(store: str | os.PathLike[str], base: str) -> Path:
    """``STORE/deltas/<base>``; the base must be a version name."""
    layout = StoreLayout(store)
    layout.snapshot_path(base)  # refuses anything that is not a version name
    return layout.root / DELTAS / base


@dataclass(frozen=True)
class FieldDelta:
    """One field's rows of a frame.

    Attributes:
        keys: uint64 (n,), hashed ids.
        vectors: float32 (n, dim), as received.
        masks: uint8 or uint16 (n,), the assigned centroids; None for a dense field.
    """

    keys: npt.NDArray[np.uint64]
    vectors: npt.NDArray[np.float32]
    masks: npt.NDArray[np.unsignedinteger] | None


@dataclass(frozen=True)
class DeltaRecord:
    """One decoded frame.

    Attributes:
        time_ms: when the batch was written (Unix ms); None for frames that predate it.
        source: its position in a shared update log, None when written directly.
    """

    sequence: int
    fields: dict[str, FieldDelta]
    time_ms: int | None = None
    source: str | None = None


def encode_payload(fields: Mapping[str, FieldDelta], *, time_ms: int | None = None, source: str | None = None) -> bytes:
    """The payload of one frame (see the module docstring).

    Args:
        time_ms: the batch's time (Unix ms); now when None. A carried-forward batch keeps
            the time it was first written.
        source: its position in a shared update log, if it came through one.
    """
    meta: dict[str, object] = {
        "fields": [
            [name, int(d.keys.shape[0]), int(d.vectors.shape[1]), "" if d.masks is None else str(d.masks.dtype)]
            for name, d in fields.items()
        ],
        "t": int(time.time() * 1000) if time_ms is None else int(time_ms),
    }
    if source is not None:
        meta["src"] = str(source)
    header = orjson.dumps(meta)
    parts = [_HLEN.pack(len(header)), header, b"\0" * _pad(_HLEN.size + len(header))]
    for d in fields.values():
        arrays = [d.keys.astype("<u8", copy=False), np.ascontiguousarray(d.vectors, dtype="<f4")]
        if d.masks is not None:
            arrays.append(d.masks.astype(d.masks.dtype.newbyteorder("<"), copy=False))
        size = 0
        for a in arrays:
            parts.append(np.ascontiguousarray(a).tobytes())
            size += a.nbytes
        parts.append(b"\0" * _pad(size))
    return b"".join(parts)


def decode_payload(payload: bytes | memoryview) -> dict[str, FieldDelta]:
    """Inverse of :func:`encode_payload`; arrays are read-only views into ``payload``.

    Raises:
        CorruptDeltaError: the payload does not describe its own bytes.
    """
    return decode_record(0, payload).fields


def decode_record(sequence: int, payload: bytes | memoryview) -> DeltaRecord:
    """The frame ``sequence`` whose payload is ``payload``: fields, time and source.

    Raises:
        CorruptDeltaError: the payload does not describe its own bytes.
    """
    buf = memoryview(payload)
    try:
        (hlen,) = _HLEN.unpack_from(buf)
        header = orjson.loads(bytes(buf[_HLEN.size : _HLEN.size + hlen]))
        t = header.get("t")
        src = header.get("src")
        if (t is not None and (type(t) is not int or t < 0)) or (src is not None and type(src) is not str):
            raise ValueError(f"frame time {t!r} / source {src!r}")
        offset = _HLEN.size + hlen
        offset += _pad(offset)
        out: dict[str, FieldDelta] = {}
        for name, n, dim, mask_dtype in header["fields"]:
            keys = np.frombuffer(buf, dtype="<u8", count=n, offset=offset).astype(np.uint64, copy=False)
            start = offset
            offset += 8 * n
            vectors = np.frombuffer(buf, dtype="<f4", count=n * dim, offset=offset).reshape(n, dim)
            offset += 4 * n * dim
            masks = None
            if mask_dtype:
                dt = np.dtype(mask_dtype)
                masks = np.frombuffer(buf, dtype=dt.newbyteorder("<"), count=n, offset=offset)
                offset += dt.itemsize * n
            offset += _pad(offset - start)
            out[name] = FieldDelta(keys=keys, vectors=vectors.astype(np.float32, copy=False), masks=masks)
    except (ValueError, TypeError, KeyError, AttributeError, struct.error, orjson.JSONDecodeError) as exc:
        raise CorruptDeltaError(f"expected a delta payload that describes its own bytes, got: {exc}") from None
    if offset != len(buf):
        raise CorruptDeltaError(f"expected {offset} bytes of delta payload, got {len(buf)}")
    return DeltaRecord(sequence=sequence, fields=out, time_ms=t, source=src)


def encode_frame(sequence: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(_LENSEQ.pack(len(payload), sequence)))
    return _FRAME.pack(MAGIC, len(payload), sequence, crc) + payload


def _intact(buf: memoryview, pos: int) -> tuple[int, int] | str:
    """(sequence, end) of the frame at ``pos`` if its header and CRC verify, else why not."""
    if len(buf) - pos < _FRAME.size:
        return f"{len(buf) - pos} bytes, less than a frame header"
    magic, length, seq, crc = _FRAME.unpack_from(buf, pos)
    if magic != MAGIC:
        return f"no frame header (magic {bytes(magic)!r})"
    end = pos + _FRAME.size + length
    if length > MAX_FRAME_BYTES or end > len(buf):
        return f"frame {seq} announces {length} bytes, {len(buf) - pos - _FRAME.size} present"
    if zlib.crc32(buf[pos + _FRAME.size : end], zlib.crc32(_LENSEQ.pack(length, seq))) != crc:
        return f"frame {seq} fails its checksum"
    return seq, end


def _plausible_payload(buf: memoryview, pos: int) -> bool:
    """Whether the frame header at ``pos`` announces a length its own JSON header agrees
    with: a cheap test before a CRC over the announced length, so that re-synchronising
    over bytes that merely contain ``MAGIC`` costs no CRC at all."""
    _, length, _, _ = _FRAME.unpack_from(buf, pos)
    start = pos + _FRAME.size
    if length < _HLEN.size or start + length > len(buf):
        return False
    (hlen,) = _HLEN.unpack_from(buf, start)
    if hlen > min(length - _HLEN.size, 1 << 20) or bytes(buf[start + 4 : start + 14]) != b'{"fields":':
        return False
    try:
        header = orjson.loads(bytes(buf[start + _HLEN.size : start + _HLEN.size + hlen]))
        offset = _HLEN.size + hlen
        offset += _pad(offset)
        for _, n, dim, mask_dtype in header["fields"]:
            begin = offset
            offset += 8 * n + 4 * n * dim + (np.dtype(mask_dtype).itemsize * n if mask_dtype else 0)
            offset += _pad(offset - begin)
    except (ValueError, TypeError, KeyError, orjson.JSONDecodeError):
        return False
    return bool(offset == length)


# Bytes of CRC a re-synchronisation may spend per byte it scans (plus a fixed allowance):
# only a file crafted to hold many frame headers that agree with their own lengths gets
# near it; past it, the rest of the segment counts as damage rather than hang a reader.
RESYNC_CRC_PER_BYTE = 8
RESYNC_CRC_ALLOWANCE = 64 << 20


def _next_intact(buf: bytes, start: int) -> int | None:
    """Offset of the first intact frame at or after ``start``, or None."""
    view = memoryview(buf)
    budget = RESYNC_CRC_PER_BYTE * (len(buf) - start) + RESYNC_CRC_ALLOWANCE
    pos = buf.find(MAGIC, start)
    while pos >= 0:
        if len(buf) - pos >= _FRAME.size and _plausible_payload(view, pos):
            budget -= _FRAME.unpack_from(view, pos)[1]
            if budget < 0:
                log.error("re-synchronising on %d bytes costs more CRC than %d bytes allow; the rest counts as damage",
                          len(buf) - start, RESYNC_CRC_PER_BYTE)
                return None
            if not isinstance(_intact(view, pos), str):
                return pos
        pos = buf.find(MAGIC, pos + 1)
    return None


def _torn(buf: memoryview, pos: int) -> bool:
    """Whether the bytes from ``pos`` to the end are an incomplete last frame: what an
    interrupted (or running) append leaves, as opposed to damage."""
    rest = bytes(buf[pos : pos + _FRAME.size])
    if len(buf) - pos < _FRAME.size:
        return MAGIC.startswith(rest[: len(MAGIC)])
    magic, length, seq, crc = _FRAME.unpack_from(buf, pos)
    if magic != MAGIC or pos + _FRAME.size + length <= len(buf):
        return False
    # A complete frame whose length field was damaged verifies over the bytes present:
    # acknowledged, so not torn.
    present = len(buf) - pos - _FRAME.size
    return zlib.crc32(buf[pos + _FRAME.size :], zlib.crc32(_LENSEQ.pack(present, seq))) != crc


def _header_sequence(buf: memoryview, pos: int) -> int | None:
    if len(buf) - pos >= _FRAME.size and bytes(buf[pos : pos + 4]) == MAGIC:
        return int(_FRAME.unpack_from(buf, pos)[2])
    return None


@dataclass(frozen=True)
class Damage:
    """Bytes of a segment that are not intact frames, or an intact frame not applied.

    Attributes:
        segment: the segment's file name.
        offset: where the damage starts in it; bytes: how many bytes it spans.
        after: the last sequence applied before it (0: none).
        next: the first sequence applied after it; None when nothing intact follows.
        reason: what failed (checksum, magic, length, a sequence that does not increase).
        claimed: the sequence a damaged header with intact magic announces, if any.
    """

    segment: str
    offset: int
    bytes: int
    after: int
    next: int | None
    reason: str
    claimed: int | None = None

    @property
    def gap(self) -> int:
        """Sequences between the frames around it: frames lost (0 when the damage was
        itself a frame whose sequence did not increase; unknown at the tail: 0)."""
        return 0 if self.next is None else max(self.next - self.after - 1, 0)

    def as_dict(self) -> dict[str, object]:
        return {
            "segment": self.segment, "offset": self.offset, "bytes": self.bytes, "after_sequence": self.after,
            "next_sequence": self.next, "missing_sequences": self.gap, "reason": self.reason,
        }

    def __str__(self) -> str:
        follows = f"frame {self.next} follows" if self.next is not None else "nothing intact follows"
        return (f"{self.segment}: {self.bytes} damaged bytes at offset {self.offset} after frame {self.after} "
                f"({self.reason}); {follows}, {self.gap} sequences missing")


@dataclass
class _Scan:
    """What :func:`_scan` found in a run of bytes (offsets relative to its start)."""

    frames: list[tuple[int, int, memoryview]] = field(default_factory=list)  # (offset, sequence, payload)
    damage: list[tuple[int, int, str, int | None, int | None]] = field(default_factory=list)  # off, n, why, next, claimed
    used: int = 0  # bytes consumed: frames and damage; what follows is a torn tail
    torn: str | None = None  # why the tail is not applied, if there is one
    last: int = 0


def _scan(data: bytes, after: int, below: int | None = None) -> _Scan:
    """Intact frames of ``data`` with sequences above ``after``, damage skipped, and
    where a torn tail (if any) starts; with ``below``, frames at or above it are skipped
    (the sequence the next segment starts at).

    Frames whose sequences do not increase (a frame copied elsewhere in the file, or
    written twice under one sequence) are skipped: of all intact frames, the longest run
    of increasing sequences in file order is served, so one misplaced copy costs itself,
    not the frames it lands before.
    """
    buf = memoryview(data)
    out = _Scan(last=after)
    found: list[tuple[int, int, int]] = []  # (offset, sequence, end) of every intact frame
    pos = 0
    while pos < len(buf):
        got = _intact(buf, pos)
        if not isinstance(got, str):
            found.append((pos, got[0], got[1]))
            pos = got[1]
            continue
        nxt = _next_intact(data, pos + 1)
        if nxt is None:
            if _torn(buf, pos):
                out.torn = got
            else:
                out.damage.append((pos, len(buf) - pos, got, None, _header_sequence(buf, pos)))
                pos = len(buf)
            break
        nseq = _intact(buf, nxt)
        assert not isinstance(nseq, str)
        out.damage.append((pos, nxt - pos, got, nseq[0], _header_sequence(buf, pos)))
        pos = nxt
    out.used = pos
    keep = _increasing(found, after, below)
    last = after
    for i, (off, seq, end) in enumerate(found):
        if i in keep:
            out.frames.append((off, seq, buf[off + _FRAME.size : end]))
            last = seq
        else:
            out.damage.append((off, end - off, f"frame {seq} does not follow frame {last}; skipped", None, None))
    out.last = last
    return out


def _increasing(found: list[tuple[int, int, int]], after: int, below: int | None = None) -> set[int]:
    """Indices of the longest subsequence of ``found`` whose sequences increase from
    ``after`` (and stay under ``below``)."""
    tails: list[int] = []  # tails[k]: index of the smallest last sequence of a run of length k + 1
    prev = [-1] * len(found)
    for i, (_, seq, _) in enumerate(found):
        if seq <= after or (below is not None and seq >= below):
            continue
        lo, hi = 0, len(tails)
        while lo < hi:
            mid = (lo + hi) // 2
            if found[tails[mid]][1] < seq:
                lo = mid + 1
            else:
                hi = mid
        prev[i] = tails[lo - 1] if lo else -1
        if lo == len(tails):
            tails.append(i)
        else:
            tails[lo] = i
    keep = set()
    i = tails[-1] if tails else -1
    while i >= 0:
        keep.add(i)
        i = prev[i]
    return keep


def scan_frames(data: bytes | memoryview) -> tuple[list[tuple[int, memoryview]], int, str | None]:
    """Complete, intact frames at the start of ``data``, up to the first that is not.

    Returns:
        [(sequence, payload view)], the bytes they span, and why scanning stopped early
        (None when every byte belonged to a good frame).
    """
    buf = memoryview(data)
    frames = []
    pos = 0
    why = None
    while pos < len(buf):
        got = _intact(buf, pos)
        if isinstance(got, str):
            why = f"{got} at offset {pos}"
            break
        frames.append((got[0], buf[pos + _FRAME.size : got[1]]))
        pos = got[1]
    return frames, pos, why


def _first_sequence(path: str) -> int | None:
    """The sequence of a segment's first frame if it is intact, else None."""
    try:
        fd = _open_segment(path)
    except (OSError, DeltaLogError):
        return None
    try:
        head = os.pread(fd, _FRAME.size, 0)
        if len(head) < _FRAME.size or head[:4] != MAGIC:
            return None
        length = _FRAME.unpack_from(head)[1]
        if length > min(MAX_FRAME_BYTES, os.fstat(fd).st_size):
            return None
        got = _intact(memoryview(head + _read_from(fd, _FRAME.size, _FRAME.size + length)), 0)
        return None if isinstance(got, str) else got[0]
    except OSError:
        return None
    finally:
        os.close(fd)


def _open_segment(path: str, flags: int = os.O_RDONLY) -> int:
    """A descriptor of the regular file ``path``: never follows a symlink, never blocks
    on a FIFO.

    Raises:
        FileNotFoundError: no such file.
        DeltaLogError: not a regular file, or it cannot be opened.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:
        raise
    except OSError as exc:
        try:
            what = kind_of(os.lstat(path).st_mode)
        except OSError:
            what = exc.strerror
        raise DeltaLogError(f"{path}: expected a regular file as a delta segment, found {what}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise DeltaLogError(f"{path}: expected a regular file as a delta segment, found {kind_of(st.st_mode)}")
    return fd


def _read_from(fd: int, offset: int, size: int) -> bytes:
    parts = []
    while offset < size:
        chunk = os.pread(fd, min(size - offset, 1 << 30), offset)
        if not chunk:
            break
        parts.append(chunk)
        offset += len(chunk)
    return b"".join(parts)


Key = tuple[int, int, int, int, int]  # (dev, inode, size, mtime_ns, type bits) of a segment


def _key(st: os.stat_result) -> Key:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, stat.S_IFMT(st.st_mode)


class DeltaReader:
    """Follows the segments of one base, returning each new intact frame once.

    :meth:`poll` costs one ``lstat`` when nothing was appended (:meth:`unchanged`), so a
    server calls it before every lookup; that is what makes an update visible on every
    worker as soon as its writer has answered.

    Attributes:
        sequence: the last sequence applied; ``claimed``: the highest sequence seen at
            all (damaged headers included), which a writer must not give out again.
        damage: every :class:`Damage` met so far, in order.
        missing: sequences absent between two intact frames with nothing damaged between.
        refused: why the current segment cannot be read (an odd file), or None.
        torn: (offset, bytes) of an incomplete last frame not applied, or None.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.segment = 0
        self.offset = 0  # end of what was consumed (frames and damage) in the current segment
        self.sequence = 0
        self.claimed = 0
        self.bytes = 0  # consumed bytes over all segments
        self.damage: list[Damage] = []
        self.missing = 0  # sequences skipped between intact frames with no damaged bytes between
        self.refused: str | None = None
        self.torn: tuple[int, int] | None = None
        self._path = str(self.directory / segment_name(0))
        self._key: Key | None = None  # the segment as last read
        self._identity: tuple[int, int] | None = None  # (dev, inode) of the segment being followed
        self._warned_at: tuple[int, int] | None = None
        self._opened = False
        self._caught_up = False  # reached the last segment at least once

    @property
    def path(self) -> str:
        """The segment being followed."""
        return self._path

    def unchanged(self) -> bool:
        """True when nothing can have been appended since the last poll: one ``lstat``."""
        if self.torn is not None or self.offset >= SEGMENT_BYTES or not self._caught_up:
            return False
        try:
            return _key(os.lstat(self._path)) == self._key
        except OSError:
            return self._key is None and self.refused is None

    def poll(self) -> list[DeltaRecord]:
        """Intact frames appended since the last call, in sequence order.

        Raises:
            DeltaLogChangedError: the segment shrank below what was read, was replaced
                or was deleted; start over with a new reader.
        """
        out: list[DeltaRecord] = []
        while True:
            try:
                st = os.lstat(self._path)
            except FileNotFoundError:
                if self._identity is not None:
                    raise DeltaLogChangedError(f"{self._path}: the segment being read was deleted") from None
                self._key = None
                self._caught_up = True
                self.refused = None
                return out
            except OSError as exc:
                self._refuse(f"{self._path}: cannot read the delta segment: {exc.strerror}")
                return out
            if not stat.S_ISREG(st.st_mode):
                self._refuse(f"{self._path}: expected a regular file as a delta segment, found {kind_of(st.st_mode)}")
                self._key = _key(st)  # the next poll looks again only once it changes
                self._caught_up = True
                return out
            following = None
            if self.offset >= SEGMENT_BYTES or not self._caught_up:
                candidate = str(self.directory / segment_name(self.segment + 1))
                following = candidate if os.path.lexists(candidate) else None
            if _key(st) != self._key or self.torn is not None or following is not None:
                # A finished segment (its writer rolled over after its last frame) is read
                # to its end, and none of its frames may claim a sequence the next one starts at.
                out.extend(self._read(None if following is None else _first_sequence(following)))
            if self.refused is not None:
                return out
            if following is not None:
                if self.torn is not None:
                    off, n = self.torn
                    self._record(Damage(Path(self._path).name, off, n, self.sequence, None, "an incomplete frame "
                                        "at the end of a finished segment"))
                    self.offset += n
                    self.bytes += n
                    self.torn = None
                self.segment += 1
                self.offset = 0
                self._path = following
                self._key = self._identity = None
                continue
            if (self.offset >= SEGMENT_BYTES or not self._caught_up) and os.path.lexists(
                self.directory / segment_name(self.segment + 1)
            ):
                continue  # rolled over meanwhile: read this one to its end
            self._caught_up = True
            return out

    def _refuse(self, why: str) -> None:
        if why != self.refused:
            log.error("%s; the updates after frame %d are not served until it is a segment again", why, self.sequence)
        self.refused = why

    def _read(self, below: int | None = None) -> list[DeltaRecord]:
        try:
            fd = _open_segment(self._path)
        except FileNotFoundError:
            raise DeltaLogChangedError(f"{self._path}: the segment being read was deleted") from None
        except DeltaLogError as exc:
            self._refuse(str(exc))
            return []
        try:
            st = os.fstat(fd)
            if self._identity is not None and (st.st_dev, st.st_ino) != self._identity:
                raise DeltaLogChangedError(f"{self._path}: the segment being read was replaced by another file")
            if st.st_size < self.offset:
                raise DeltaLogChangedError(
                    f"{self._path}: the segment shrank to {st.st_size} bytes, below the {self.offset} already read"
                )
            try:
                data = _read_from(fd, self.offset, st.st_size)
            except OSError as exc:
                self._refuse(f"{self._path}: cannot read the delta segment: {exc.strerror}")
                return []
        finally:
            os.close(fd)
        self.refused = None
        self._identity = (st.st_dev, st.st_ino)
        self._key = _key(st)
        return self._consume(data, below)

    def _consume(self, data: bytes, below: int | None = None) -> list[DeltaRecord]:
        scan = _scan(data, self.sequence, below)
        name = Path(self._path).name
        records = []
        # Damage and frames in file order, so each damage knows the sequence before it.
        events = sorted([(d[0], d) for d in scan.damage] + [(f[0], f) for f in scan.frames], key=lambda e: e[0])
        for off, what in events:
            if len(what) == 5:  # damage: (offset, bytes, why, next sequence, claimed sequence)
                _, n, why, nxt, claimed = what
                if claimed is not None and self.sequence < claimed < self.sequence + (1 << 32) and (
                    nxt is None or claimed < nxt
                ):
                    self.claimed = max(self.claimed, claimed)
                else:
                    claimed = None
                self._record(Damage(name, self.offset + off, n, self.sequence, nxt, why, claimed))
                continue
            _, seq, payload = what
            try:
                records.append(decode_record(seq, payload))
            except CorruptDeltaError as exc:
                # Its CRC verifies, so its writer wrote it so: skipped, reported, never served.
                self._record(Damage(name, self.offset + off, _FRAME.size + len(payload), self.sequence, None,
                                    f"frame {seq}: {exc}"))
                continue
            if seq > self.sequence + 1 and not (self.damage and self.damage[-1].next == seq):
                # No damaged bytes between: a repair dropped them, or an interrupted
                # append's sequence was not given out again.
                self.missing += seq - self.sequence - 1
                log.warning("%s: sequences %d..%d are missing before frame %d at offset %d",
                            self._path, self.sequence + 1, seq - 1, seq, self.offset + off)
            self.sequence = seq
            self.claimed = max(self.claimed, seq)
        self.offset += scan.used
        self.bytes += scan.used
        if scan.torn is None:
            self.torn = None
        else:
            self.torn = (self.offset, len(data) - scan.used)
            if self._warned_at != (self.segment, self.offset):
                # Either an append in progress (the next poll completes it) or the torn tail
                # of a crashed one (the next append truncates it); neither is applied.
                self._warned_at = (self.segment, self.offset)
                # At open nobody may be writing: a bad tail then is torn. Later it is usually
                # an append in progress, so it is noted quietly.
                level = logging.DEBUG if self._opened else logging.WARNING
                log.log(level, "%s: not applying %d bytes at offset %d: %s (a torn tail, or an append in progress)",
                        self._path, len(data) - scan.used, self.offset, scan.torn)
        self._opened = True
        return records

    def _record(self, damage: Damage) -> None:
        self.damage.append(damage)
        log.error("delta log %s: %s", self.directory, damage)

    def damaged_bytes(self) -> int:
        return sum(d.bytes for d in self.damage)


class DeltaWriter:
    """Appends frames to the segments of one base, durably.

    Args:
        store: the store folder.
        base: the version the updates apply to.
        check_current: refuse to append once CURRENT names another version (the
            updates would never be served); a server passes True.
    """

    def __init__(self, store: str | os.PathLike[str], base: str, *, check_current: bool = True) -> None:
        self.layout = StoreLayout(store)
        self.base = base
        self.directory = deltas_dir(store, base)
        self.check_current = check_current
        self._tail = DeltaReader(self.directory)

    def _ensure_dir(self) -> None:
        if self.directory.is_dir():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        fsync_path(self.directory.parent)
        fsync_path(self.directory.parent.parent)

    def lock(self) -> _Lock:
        """The exclusive append lock of this base (a context manager)."""
        self._ensure_dir()
        return _Lock(self.directory / LOCK_NAME)

    def append(self, fields: Mapping[str, FieldDelta]) -> int:
        """Write one frame and fsync it.

        Returns:
            Its sequence number.
        Raises:
            SupersededError: CURRENT names another version than this writer's base.
            DeltaLogError: a segment is not a regular file.
        """
        payload = encode_payload(fields)
        with self.lock():
            return self.append_locked(payload)

    def append_locked(self, payload: bytes) -> int:
        """:meth:`append` for a caller that holds :meth:`lock` (and encoded the payload)."""
        if self.check_current:
            live = self.layout.current_or_none()
            if live != self.base:
                raise SupersededError(
                    f"expected updates on top of the live snapshot {self.base}, but CURRENT now names {live}; "
                    "retry against the new snapshot"
                )
        self._catch_up()
        tail = self._tail
        seq = max(tail.sequence, tail.claimed) + 1
        frame = encode_frame(seq, payload)
        if tail.offset >= SEGMENT_BYTES:
            tail.segment += 1
            tail.offset = 0
            tail._path = str(self.directory / segment_name(tail.segment))
            tail._key = tail._identity = None
        path = tail._path
        created = not os.path.lexists(path)
        fd = _open_segment(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            view = memoryview(frame)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if created:
            fsync_path(self.directory)
        tail.sequence = tail.claimed = seq
        tail.offset += len(frame)
        tail.bytes += len(frame)
        tail._identity = (st.st_dev, st.st_ino)
        tail._key = _key(st) if st.st_size == tail.offset else None
        return seq

    def _catch_up(self) -> None:
        """Read what other writers appended; truncate a torn tail (we hold the lock, so
        nobody is still writing it). Nothing else is ever truncated."""
        try:
            self._tail.poll()
        except DeltaLogChangedError as exc:
            log.warning("%s; reading the delta log again from the start", exc)
            self._tail = DeltaReader(self.directory)
            self._tail.poll()
        tail = self._tail
        if tail.refused is not None:
            raise DeltaLogError(f"{tail.refused}; expected to append to it, nothing was written")
        if tail.torn is not None:
            off, n = tail.torn
            log.warning("%s: truncating a torn tail of %d bytes at offset %d (an interrupted append, never "
                        "acknowledged)", tail._path, n, off)
            fd = _open_segment(tail._path, os.O_WRONLY)
            try:
                os.ftruncate(fd, off)
                os.fsync(fd)
            finally:
                os.close(fd)
            tail.torn = None
            tail._key = None

    @property
    def sequence(self) -> int:
        return self._tail.sequence


class _Lock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> _Lock:
        self.fd = _open_segment(str(self.path), os.O_RDWR | os.O_CREAT)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def read_all(directory: str | os.PathLike[str]) -> list[DeltaRecord]:
    """Every intact frame of a base, in order (what a fold applies)."""
    return DeltaReader(directory).poll()


def segment_bytes(directory: str | os.PathLike[str]) -> int:
    """Bytes on disk of a base's segments (regular files only)."""
    d = Path(directory)
    total = 0
    try:
        for p in d.glob("segment-*.log"):
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    except OSError:
        return total
    return total


@dataclass(frozen=True)
class LogReport:
    """What one full read of a base's delta log found (:func:`inspect`).

    Attributes:
        frames: intact frames applied; sequence: the last of them.
        damage: damaged ranges and skipped frames.
        refused: why a segment cannot be read at all, or None.
        torn: (segment, offset, bytes) of an incomplete last frame, or None.
    """

    frames: int
    sequence: int
    damage: list[Damage]
    refused: str | None
    torn: tuple[str, int, int] | None

    @property
    def damaged(self) -> bool:
        return bool(self.damage) or self.refused is not None


def inspect(directory: str | os.PathLike[str]) -> LogReport:
    """Read a base's whole delta log from the start and report what it holds."""
    reader = DeltaReader(directory)
    frames = len(reader.poll())
    torn = None if reader.torn is None else (Path(reader.path).name, *reader.torn)
    return LogReport(frames, reader.sequence, list(reader.damage), reader.refused, torn)


@dataclass(frozen=True)
class RepairReport:
    """What :func:`repair` did: per rewritten segment, the frames kept and the ranges dropped."""

    kept: dict[str, int]
    dropped: list[Damage]
    truncated: tuple[str, int, int] | None

    @property
    def changed(self) -> bool:
        return bool(self.kept) or self.truncated is not None


def repair(directory: str | os.PathLike[str]) -> RepairReport:
    """Rewrite every damaged segment of a base with its intact frames only; the caller
    holds the base's append lock (:meth:`DeltaWriter.lock`).

    Each intact frame is kept as it is (bytes and sequence), in order; damaged bytes,
    frames whose sequence does not increase and a torn tail are dropped, each logged at
    WARNING and returned. A segment is written under a temporary name, fsynced, renamed
    over the old one and the folder fsynced: a crash leaves the old or the new segment.

    Raises:
        DeltaLogError: a segment is not a regular file (remove or move it first).
    """
    directory = Path(directory)
    kept: dict[str, int] = {}
    dropped: list[Damage] = []
    truncated = None
    after = 0
    index = 0
    while True:
        path = directory / segment_name(index)
        try:
            fd = _open_segment(str(path))
        except FileNotFoundError:
            break
        try:
            data = _read_from(fd, 0, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        frames = []
        scan = _scan(data, after, _first_sequence(str(directory / segment_name(index + 1))))
        for off, seq, payload in scan.frames:
            try:
                decode_record(seq, payload)
            except CorruptDeltaError as exc:
                scan.damage.append((off, _FRAME.size + len(payload), f"frame {seq}: {exc}", None, None))
                continue
            frames.append((off, seq, _FRAME.size + len(payload)))
        bad = [
            Damage(path.name, off, n, max((q for o, q, _ in frames if o < off), default=after), nxt, why, claimed)
            for off, n, why, nxt, claimed in sorted(scan.damage)
        ]
        tail = None if scan.torn is None else (path.name, scan.used, len(data) - scan.used)
        if bad or tail is not None:
            body = b"".join(data[off : off + n] for off, _, n in frames)
            tmp = directory / f".{path.name}.repair"
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(body)
                while view:
                    view = view[os.write(out, view) :]
                os.fsync(out)
            finally:
                os.close(out)
            os.rename(tmp, path)
            fsync_path(directory)
            kept[path.name] = len(frames)
            for d in bad:
                log.warning("repair of %s: dropped %d bytes at offset %d (%s)", path, d.bytes, d.offset, d.reason)
            if tail is not None:
                log.warning("repair of %s: dropped a torn tail of %d bytes at offset %d", path, tail[2], tail[1])
            dropped += bad
            truncated = tail or truncated
        if frames:
            after = frames[-1][1]
        index += 1
    return RepairReport(kept=kept, dropped=dropped, truncated=truncated)


def check_log(directory: str | os.PathLike[str], *, repair_it: bool = False) -> RepairReport | None:
    """Refuse a damaged log, or repair it; for commands that publish or extend a log.

    The caller holds the base's append lock.

    Returns:
        None when the log had no damage; what :func:`repair` did when ``repair_it``.
    Raises:
        DamagedDeltaLogError: the log has damage and ``repair_it`` is False; the message
            names every damaged range and how to repair.
        DeltaLogError: a segment is not a regular file.
    """
    report = inspect(directory)
    if report.refused is not None:
        raise DeltaLogError(f"{report.refused}; expected every segment of {directory} to be a regular file")
    if not report.damage:
        return None
    if not repair_it:
        listed = "; ".join(str(d) for d in report.damage[:10])
        more = f" (and {len(report.damage) - 10} more)" if len(report.damage) > 10 else ""
        raise DamagedDeltaLogError(
            f"expected an intact delta log in {directory}, found {len(report.damage)} damaged ranges: {listed}{more}. "
            "The intact frames after each are served; run again with --repair to rewrite the damaged segments "
            "with every intact frame and drop the damaged bytes (logged), or restore the segments from a backup"
        )
    return repair(directory)
