"""Opening store files so that no file can hang or mislead the reader.

A store is written by saec but lives on a file system anyone may touch. Before a file
is read it must be a regular file (a FIFO would block ``open`` or ``read`` forever, a
device could stream without end, a folder raises ``IsADirectoryError``) and it must
resolve inside the folder it belongs to (a symlink or a ``..`` must not make the
server read, or serve, a file from elsewhere).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from saec.store.errors import CorruptSnapshotError, UnsafeFileError

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symlink"),
)


def kind_of(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def real_path(path: str | os.PathLike[str]) -> str:
    return os.path.realpath(path)


def is_inside(path: str, root: str) -> bool:
    """Whether real path ``path`` is ``root`` or lies under it (both already resolved)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def open_regular(path: Path, within: str | None = None) -> int:
    """A read-only descriptor of ``path``, which must be a regular file under ``within``.

    ``within`` is a resolved folder (``real_path``); None skips that check.

    Raises:
        FileNotFoundError: no such file (callers say what was expected there).
        UnsafeFileError: not a regular file, or its real path is outside ``within``.
        CorruptSnapshotError: any other reason it cannot be opened (permissions, loops).
    """
    # stat first, so that a device or FIFO is never even opened (opening some devices
    # has effects); O_NONBLOCK keeps a FIFO swapped in between stat and open from
    # blocking, and the fstat after the open judges the file actually opened.
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(f"{path}: expected a regular file, found {kind_of(st.st_mode)}")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CorruptSnapshotError(f"{path}: expected a readable regular file, cannot open it: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(f"{path}: expected a regular file, found {kind_of(st.st_mode)}")
        if within is not None:
            where = _fd_path(fd, path)
            if not is_inside(where, within):
                raise UnsafeFileError(f"{path}: expected a file inside {within}, it resolves to {where}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path, within: str | None = None, limit: int = 1 << 30) -> bytes:
    """The whole content of a regular file (see :func:`open_regular`), at most ``limit`` bytes."""
    fd = open_regular(path, within)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise CorruptSnapshotError(f"{path}: expected at most {limit} bytes, found {size}")
        chunks = []
        while True:
            # Sized by fstat (a 1 MiB buffer per small JSON adds up over thousands).
            chunk = os.read(fd, max(size, 4096))
            if not chunk:
                break
            chunks.append(chunk)
            if sum(map(len, chunks)) > limit:
                raise CorruptSnapshotError(f"{path}: expected at most {limit} bytes, found more")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _fd_path(fd: int, path: Path) -> str:
    """The real path of an open file: one readlink on Linux, realpath elsewhere."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return real_path(path)
