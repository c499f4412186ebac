"""Locks that serialise writers of a store and tell live work from leftovers.

Two kinds, both ``fcntl.flock`` locks, which the kernel releases when their holder
dies (kill -9 included), so a lock is never left behind by a crash:

- the *store lock*, ``STORE/.lock``, held exclusively while a snapshot is renamed into
  ``snapshots/``, CURRENT is switched, old snapshots are pruned, a rollback is made or
  leftovers are removed; so none of these ever interleave;
- one *partial lock* per snapshot being written, ``STORE/.partial/<version>.lock``, held
  by its writer from creation to publication. A ``.partial/<version>/`` folder whose lock
  nobody holds was left by a writer that died, and the next publish removes it.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from types import TracebackType

log = logging.getLogger("saec.store")

STORE_LOCK = ".lock"


class FileLock:
    """An exclusive ``flock`` on one file, created if missing.

    The lock file is opened, locked and then checked to still be the file at ``path``
    (same inode): someone may have removed a stale lock file between our open and our
    lock, and a lock on an unlinked inode would protect nothing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, *, blocking: bool = True) -> bool:
        """Take the lock; with ``blocking=False`` return False at once if someone holds it."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if not blocking:
                        os.close(fd)
                        return False
                    log.info("waiting for %s: another process holds it", self.path)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path, follow_symlinks=False).st_ino
                except FileNotFoundError:
                    same = False
            except BaseException:
                os.close(fd)
                raise
            if same:
                self._fd = fd
                return True
            os.close(fd)

    def release(self, *, unlink: bool = False) -> None:
        """Let go; with ``unlink`` also remove the lock file (done while still holding it)."""
        if self._fd is None:
            return
        try:
            if unlink:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
        finally:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def store_lock(root: Path) -> FileLock:
    """The lock that serialises publishing, pruning, rollback and clean-up in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    return FileLock(root / STORE_LOCK)
