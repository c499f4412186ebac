"""Open ``.npy`` arrays, on their own or inside an ``.npz``, without reading their rows.

A ``.npy`` file, and an ``.npz`` member stored uncompressed (``np.savez``), are memory-mapped.
``np.load(npz, mmap_mode="r")`` would not do that: it ignores ``mmap_mode`` for archives and
reads a member whole on first access, so this module finds the member's bytes in the zip
itself. A compressed member (``np.savez_compressed``) cannot be mapped; it is decompressed
as a stream, one row range at a time, which suits reading in order.
"""

from __future__ import annotations

import math
import struct
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
from numpy.lib import format as npformat

from saec.loaders._rows import ArrayRows, RowReader
from saec.loaders.errors import LoaderError, UnreadableInputError, UnsupportedDtypeError

#: What reading a damaged file or archive raises: I/O and zip errors, zip features Python
#: lacks (NotImplementedError), and numpy's header parser choking on garbage.
DAMAGED = (
    OSError,
    EOFError,
    ValueError,
    zipfile.BadZipFile,
    zlib.error,
    NotImplementedError,
    tokenize.TokenError,
    SyntaxError,
)

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length
_LOCAL_SIGNATURE = b"PK\x03\x04"


def open_npy(path: Path, name: str) -> RowReader:
    """Memory-map the ``.npy`` file ``path`` (read-only); ``name`` is its key, for messages."""
    try:
        with path.open("rb") as fp:
            shape, fortran, dtype = _read_header(fp, path=path, name=name)
            offset = fp.tell()
        size = path.stat().st_size
    except LoaderError:
        raise
    except DAMAGED as exc:
        raise UnreadableInputError(f"cannot read array {name!r}: {exc}", path=path) from exc
    return _mapped(path, name, offset, size - offset, shape, fortran, dtype)


def open_npz_member(archive: zipfile.ZipFile, path: Path, name: str) -> RowReader:
    """The array ``name`` (``name.npy`` in the archive at ``path``), mapped or streamed."""
    member = archive.getinfo(f"{name}.npy")
    if member.flag_bits & 0x1:
        raise UnreadableInputError(
            f"array {name!r} is encrypted; expected a plain .npz member", path=path
        )
    try:
        with archive.open(member) as fp:
            shape, fortran, dtype = _read_header(fp, path=path, name=name)
            header_size = fp.tell()
            fp.seek(0)
            header = fp.read(header_size)
    except LoaderError:
        raise
    except DAMAGED as exc:
        raise UnreadableInputError(f"cannot read array {name!r}: {exc}", path=path) from exc
    data_size = member.file_size - header_size
    if member.compress_type == zipfile.ZIP_STORED:
        start = _member_data_offset(path, member, name)
        mapped = _mapped(path, name, start + header_size, data_size, shape, fortran, dtype)
        if fortran or data_size != math.prod(shape) * dtype.itemsize or data_size == 0:
            return mapped
        return _CrcCheckedRows(name, mapped.array, path, zlib.crc32(header), member.CRC)
    return _ZipStreamRows(name, archive, member, path, header_size, shape, fortran, dtype)


def _read_header(
    fp: IO[bytes], *, path: Path, name: str
) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    try:
        version = npformat.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(fp)
        elif version in ((2, 0), (3, 0)):
            # Version 3.0 differs from 2.0 only in allowing utf-8 field names in
            # structured dtypes, which no embedding table has.
            shape, fortran, dtype = npformat.read_array_header_2_0(fp)
        else:
            raise ValueError(f"expected format version 1.0, 2.0 or 3.0, found {version}")
    except (ValueError, TypeError, tokenize.TokenError, SyntaxError) as exc:
        # numpy's header parser raises TypeError for a dtype it does not know.
        raise UnreadableInputError(
            f"array {name!r} is not a valid .npy array: {exc}", path=path
        ) from exc
    if dtype.hasobject:
        raise UnsupportedDtypeError(
            f"array {name!r} holds Python objects (a pickle), which are neither memory-mapped "
            "nor loaded, being unsafe; save string ids as a fixed-width string array, "
            "e.g. np.asarray(ids, dtype=str)",
            path=path,
        )
    return tuple(shape), bool(fortran), dtype


def _mapped(
    path: Path,
    name: str,
    offset: int,
    available: int,
    shape: tuple[int, ...],
    fortran: bool,
    dtype: np.dtype[Any],
) -> ArrayRows:
    needed = math.prod(shape) * dtype.itemsize
    if available < needed:
        raise UnreadableInputError(
            f"array {name!r} is truncated: its header declares {shape} {dtype} "
            f"({needed} bytes), the file holds {available}",
            path=path,
        )
    if needed == 0:
        return ArrayRows(name, np.empty(shape, dtype=dtype))
    try:
        array = np.memmap(
            path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
        )
    except (OSError, ValueError) as exc:
        raise UnreadableInputError(f"cannot map array {name!r}: {exc}", path=path) from exc
    # A plain ndarray view of the map: numpy's memmap subclass is slower to index.
    return ArrayRows(name, np.asarray(array))


def _member_data_offset(path: Path, member: zipfile.ZipInfo, name: str) -> int:
    """Where a stored member's bytes start: after its local header, whose name and extra
    field lengths may differ from the central directory's."""
    try:
        with open(path, "rb") as fp:
            fp.seek(member.header_offset)
            raw = fp.read(_LOCAL_HEADER.size)
    except OSError as exc:
        raise UnreadableInputError(f"cannot read array {name!r}: {exc}", path=path) from exc
    if len(raw) != _LOCAL_HEADER.size:
        raise UnreadableInputError(f"array {name!r}: the archive is truncated", path=path)
    signature, name_size, extra_size = _LOCAL_HEADER.unpack(raw)
    if signature != _LOCAL_SIGNATURE:
        raise UnreadableInputError(
            f"array {name!r}: expected a zip local header at byte {member.header_offset}, "
            f"found {signature!r}",
            path=path,
        )
    start: int = member.header_offset + _LOCAL_HEADER.size + name_size + extra_size
    return start


class _CrcCheckedRows:
    """A memory-mapped stored ``.npz`` member whose zip CRC-32 is checked as it is read.

    Decompression checks a compressed member's CRC for free; a mapped member bypasses
    zipfile, so this computes the CRC over rows read in order and compares it once the
    last row is read. Rows read out of order are returned unchecked.
    """

    def __init__(
        self, name: str, array: npt.NDArray[Any], path: Path, header_crc: int, expected: int
    ) -> None:
        self.name = name
        self.array = array
        self._path = path
        self._header_crc = header_crc
        self._expected = expected
        self._crc = header_crc
        self._next_row: int | None = 0

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.array.dtype

    def read(self, start: int, stop: int) -> npt.NDArray[Any]:
        rows = self.array[start:stop]
        if start == 0:
            self._crc, self._next_row = self._header_crc, 0
        if start != self._next_row:
            self._next_row = None
            return rows
        self._crc = zlib.crc32(rows.data, self._crc)
        self._next_row = start + len(rows)
        if self._next_row == self.array.shape[0] and self._crc != self._expected:
            raise UnreadableInputError(
                f"array {self.name!r} is corrupt: its bytes give CRC-32 {self._crc:#010x}, "
                f"the archive records {self._expected:#010x}",
                path=self._path,
            )
        return rows


class _ZipStreamRows:
    """A compressed ``.npz`` member, decompressed as rows are asked for.

    Reading in row order costs one pass; going back restarts the decompression.
    """

    def __init__(
        self,
        name: str,
        archive: zipfile.ZipFile,
        member: zipfile.ZipInfo,
        path: Path,
        header_size: int,
        shape: tuple[int, ...],
        fortran: bool,
        dtype: np.dtype[Any],
    ) -> None:
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self._archive = archive
        self._member = member
        self._path = path
        self._header_size = header_size
        self._fortran = fortran
        self._row_bytes = math.prod(shape[1:]) * dtype.itemsize
        self._stream: IO[bytes] | None = None
        self._position = 0
        self._whole: npt.NDArray[Any] | None = None

    def read(self, start: int, stop: int) -> npt.NDArray[Any]:
        stop = min(stop, self.shape[0]) if self.shape else stop
        try:
            if self._fortran:
                # Rows of a Fortran-ordered array are not contiguous in the stream.
                if self._whole is None:
                    with self._archive.open(self._member) as fp:
                        self._whole = npformat.read_array(fp, allow_pickle=False)
                return self._whole[start:stop]
            return self._read_rows(start, stop)
        except DAMAGED as exc:
            raise UnreadableInputError(
                f"cannot read rows {start}..{stop - 1} of array {self.name!r}: {exc}",
                path=self._path,
            ) from exc

    def _read_rows(self, start: int, stop: int) -> npt.NDArray[Any]:
        offset = self._header_size + start * self._row_bytes
        if self._stream is None or offset < self._position:
            self.close()
            self._stream = self._archive.open(self._member)
            self._position = 0
        if offset > self._position:
            self._stream.seek(offset)
        wanted = (stop - start) * self._row_bytes
        data = self._stream.read(wanted)
        self._position = offset + len(data)
        if len(data) != wanted:
            raise EOFError(f"expected {wanted} bytes, the member holds {len(data)}")
        return np.frombuffer(data, dtype=self.dtype).reshape((stop - start, *self.shape[1:]))

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def npy_files(directory: Path) -> dict[str, Path]:
    """The ``.npy`` files of ``directory`` by key (file name without ``.npy``)."""
    return {p.name[: -len(".npy")]: p for p in sorted(directory.glob("*.npy")) if p.is_file()}
