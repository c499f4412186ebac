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

All integers little-endian. Sequences are 1, 2, 3, ... over all segments of a base:
an append takes the lock, reads any frames other writers added since it last looked,
and writes the next sequence, so every reader applies frames in one order and the
last write of a key wins. A frame is acknowledged only after ``fsync``.

A reader stops at the first frame that is incomplete or fails its checksum: after a
crash that is the torn tail of an interrupted append; it is never applied, and the next
writer truncates it (both log it). Any writer (the HTTP service, ``saec update``, a
consumer of a message queue) produces the same frames through :class:`DeltaWriter`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson

from saec.store.errors import CorruptDeltaError, SupersededError
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


def scan_frames(data: bytes | memoryview) -> tuple[list[tuple[int, memoryview]], int, str | None]:
    """Complete, intact frames at the start of ``data``.

    Returns:
        [(sequence, payload view)], the bytes they span, and why scanning stopped early
        (None when every byte belonged to a good frame).
    """
    buf = memoryview(data)
    frames = []
    pos = 0
    why = None
    while pos < len(buf):
        if len(buf) - pos < _FRAME.size:
            why = f"{len(buf) - pos} bytes, less than a frame header"
            break
        magic, length, seq, crc = _FRAME.unpack_from(buf, pos)
        if magic != MAGIC or length > MAX_FRAME_BYTES:
            why = f"no frame header at offset {pos} (magic {bytes(magic)!r}, length {length})"
            break
        end = pos + _FRAME.size + length
        if end > len(buf):
            why = f"frame {seq} announces {length} bytes, {len(buf) - pos - _FRAME.size} present"
            break
        payload = buf[pos + _FRAME.size : end]
        if zlib.crc32(payload, zlib.crc32(_LENSEQ.pack(length, seq))) != crc:
            why = f"frame {seq} at offset {pos} fails its checksum"
            break
        frames.append((seq, payload))
        pos = end
    return frames, pos, why


class DeltaReader:
    """Follows the segments of one base, returning each new frame once.

    :meth:`poll` costs one ``os.stat`` when nothing was appended, so a server calls it
    before every lookup; that is what makes an update visible on every worker as soon as
    its writer has answered.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.segment = 0
        self.offset = 0  # end of the last good frame in the current segment
        self.sequence = 0  # last sequence applied
        self.bytes = 0  # good bytes over all segments
        self._path = str(self.directory / segment_name(0))
        self._seen_size = 0  # size at the last read that found nothing more to apply
        self._warned_at: tuple[int, int] | None = None
        self._opened = False

    def poll(self) -> list[DeltaRecord]:
        """Frames appended since the last call, in sequence order."""
        out: list[DeltaRecord] = []
        while True:
            try:
                size = os.stat(self._path).st_size
            except FileNotFoundError:
                return out
            if size != self._seen_size:
                out.extend(self._read(size))
            if self.offset >= SEGMENT_BYTES and os.path.exists(self.directory / segment_name(self.segment + 1)):
                self.segment += 1
                self.offset = self._seen_size = 0
                self._path = str(self.directory / segment_name(self.segment))
                continue
            return out

    def _read(self, size: int) -> list[DeltaRecord]:
        with open(self._path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read(size - self.offset)
        frames, used, why = scan_frames(data)
        records = []
        for seq, payload in frames:
            if seq <= self.sequence:
                raise CorruptDeltaError(
                    f"{self._path}: expected sequences after {self.sequence}, got {seq} at offset {self.offset}"
                )
            records.append(decode_record(seq, payload))
            self.sequence = seq
        self.offset += used
        self.bytes += used
        self._seen_size = self.offset + len(data) - used
        if why is not None and self._warned_at != (self.segment, self.offset):
            # Either an append in progress (the next poll completes it) or the torn tail
            # of a crashed one (the next append truncates it); neither is applied.
            self._warned_at = (self.segment, self.offset)
            # At open nobody may be writing: a bad tail then is torn. Later it is usually
            # an append in progress, so it is noted quietly.
            level = logging.DEBUG if self._opened else logging.WARNING
            log.log(level, "%s: not applying %d bytes at offset %d: %s", self._path, len(data) - used, self.offset, why)
        self._opened = True
        return records


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
        seq = self._tail.sequence + 1
        frame = encode_frame(seq, payload)
        if self._tail.offset >= SEGMENT_BYTES:
            self._tail.segment += 1
            self._tail.offset = self._tail._seen_size = 0
            self._tail._path = str(self.directory / segment_name(self._tail.segment))
        path = self._tail._path
        created = not os.path.exists(path)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(frame)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_path(self.directory)
        self._tail.sequence = seq
        self._tail.offset += len(frame)
        self._tail.bytes += len(frame)
        self._tail._seen_size = self._tail.offset
        return seq

    def _catch_up(self) -> None:
        """Skip frames other writers appended; truncate a torn tail (we hold the lock,
        so nobody is still writing it)."""
        tail = self._tail
        tail.poll()
        try:
            size = os.stat(tail._path).st_size
        except FileNotFoundError:
            return
        if size > tail.offset:
            log.warning("%s: truncating a torn tail of %d bytes at offset %d", tail._path, size - tail.offset, tail.offset)
            fd = os.open(tail._path, os.O_WRONLY)
            try:
                os.ftruncate(fd, tail.offset)
                os.fsync(fd)
            finally:
                os.close(fd)
            tail._seen_size = tail.offset

    @property
    def sequence(self) -> int:
        return self._tail.sequence


class _Lock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> _Lock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def read_all(directory: str | os.PathLike[str]) -> list[DeltaRecord]:
    """Every good frame of a base, in order (what a fold applies)."""
    return DeltaReader(directory).poll()


def segment_bytes(directory: str | os.PathLike[str]) -> int:
    """Bytes on disk of a base's segments."""
    d = Path(directory)
    if not d.is_dir():
        return 0
    return sum(p.stat().st_size for p in d.glob("segment-*.log"))
