"""Where things live in a store folder, and the pointer to the live snapshot.

::

    STORE/
      CURRENT                    the live snapshot's version, one line; replaced atomically
      snapshots/<version>/       one Zarr v3 group per published snapshot (immutable)
      .partial/<version>/        snapshots being written; never read by a server
      .partial/<version>.lock    held by the process writing <version> (store.lock)
      .trash/<name>/             pruned snapshots being deleted
      .lock                      the store lock: publish, prune, rollback, clean-up
      deltas/<version>/          incremental updates on top of <version> (store.deltas);
                                 pruned with its snapshot

Versions are ``YYYYMMDDTHHMMSS.ffffffZ-<4 hex>``: they sort in creation order, and a
publish never makes a version live that sorts before the live one (only a rollback
goes back). Every command ignores what is not a version-named folder of
``snapshots/``; :meth:`StoreLayout.clean` removes what interrupted work left behind.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from saec.store._files import is_inside, read_regular, real_path
from saec.store.errors import BadCurrentError, SnapshotNotFoundError, StoreError, UnsafeFileError
from saec.store.lock import FileLock, store_lock

log = logging.getLogger("saec.store")

CURRENT = "CURRENT"
SNAPSHOTS = "snapshots"
PARTIAL = ".partial"
TRASH = ".trash"
DELTAS = "deltas"
DELTAS_LOCK = ".lock"  # deltas/<version>/.lock: the append lock of store.deltas
LOCK_SUFFIX = ".lock"

_VERSION_RE = re.compile(r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{4}")
# Also every component of an array path in a manifest: no '/', no leading '.', so no
# '..', and no control characters.
FIELD_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")


def new_version(now: datetime | None = None) -> str:
    """A fresh version name that sorts after every earlier one from this clock."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S.%fZ") + "-" + secrets.token_hex(2)


def is_version(name: str) -> bool:
    return isinstance(name, str) and _VERSION_RE.fullmatch(name) is not None


def is_plain_name(name: object) -> bool:
    """A field name or path component: letters, digits, '_', '.', '-', not starting with '.' or '-'."""
    return isinstance(name, str) and FIELD_NAME_RE.fullmatch(name) is not None


def fsync_path(path: Path) -> None:
    """fsync a file, or a folder to make a rename or a new entry in it durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StoreLayout:
    """A store folder: its snapshots, its CURRENT pointer, retention, rollback, clean-up.

    Every method that changes the store takes the store lock (``store.lock``), so
    publishing, pruning, rollback and clean-up of one store never interleave, whichever
    processes run them.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._lock: FileLock | None = None

    @property
    def snapshots_dir(self) -> Path:
        return self.root / SNAPSHOTS

    @property
    def partial_dir(self) -> Path:
        return self.root / PARTIAL

    @property
    def trash_dir(self) -> Path:
        return self.root / TRASH

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store lock (re-entrant within this object)."""
        if self._lock is not None:
            yield
            return
        lock = store_lock(self.root)
        lock.acquire()
        self._lock = lock
        try:
            yield
        finally:
            self._lock = None
            lock.release()

    def snapshot_path(self, version: str) -> Path:
        if not is_version(version):
            raise SnapshotNotFoundError(f"expected a version like 20260101T000000.000000Z-abcd, got {version!r}")
        return self.snapshots_dir / version

    def snapshot_dir(self, version: str) -> Path:
        """The folder of a published snapshot, checked to be a folder inside ``snapshots/``.

        Raises:
            SnapshotNotFoundError: no such snapshot.
            UnsafeFileError: it is not a folder, or a symlink leading out of ``snapshots/``.
        """
        path = self.snapshot_path(version)
        if not path.exists():
            raise SnapshotNotFoundError(f"snapshot {version} is not in {self.snapshots_dir}")
        real = real_path(path)
        inside = real_path(self.snapshots_dir)
        if not is_inside(real, inside) or real == inside:
            raise UnsafeFileError(f"{path}: expected a snapshot folder inside {inside}, it resolves to {real}")
        if not os.path.isdir(real):
            raise UnsafeFileError(f"{path}: expected a snapshot folder, found a file")
        return path

    def versions(self) -> list[str]:
        """Published versions, oldest first: version-named real folders of ``snapshots/``."""
        if not self.snapshots_dir.is_dir():
            return []
        return sorted(
            p.name for p in self.snapshots_dir.iterdir() if is_version(p.name) and p.is_dir() and not p.is_symlink()
        )

    def read_current(self) -> str | None:
        """The version CURRENT names, None if there is no CURRENT; the snapshot may be missing.

        Raises:
            BadCurrentError: CURRENT is not a small regular text file naming a version.
        """
        path = self.root / CURRENT
        try:
            raw = read_regular(path, limit=4096)
        except FileNotFoundError:
            return None
        except StoreError as exc:
            raise BadCurrentError(f"{CURRENT}: expected a one-line file naming the live version: {exc}") from None
        try:
            text = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            text = None
        if text is None or not is_version(text):
            raise BadCurrentError(
                f"{path}: expected one line naming a version like 20260101T000000.000000Z-abcd, found {raw[:60]!r}"
            )
        return text

    def current(self) -> str:
        """The live version named by CURRENT, checked to be a snapshot folder of this store."""
        version = self.read_current()
        if version is None:
            raise SnapshotNotFoundError(
                f"no published snapshot in {self.root}: expected a file {CURRENT} naming one "
                f"(build one with `saec demo --store {self.root}` or `saec compress`)"
            )
        try:
            self.snapshot_dir(version)
        except SnapshotNotFoundError:
            raise SnapshotNotFoundError(f"{CURRENT} names {version!r}, which is not in {self.snapshots_dir}") from None
        return version

    def current_or_none(self) -> str | None:
        try:
            return self.current()
        except SnapshotNotFoundError:
            return None

    def set_current(self, version: str) -> None:
        """Point CURRENT at ``version`` by one atomic rename, under the store lock.

        Goes back as readily as forward: publishing uses the monotonic path in
        ``store.writer``, and ``rollback`` is the command that goes back.
        """
        with self.locked():
            self.write_current(version)

    def write_current(self, version: str) -> None:
        """Replace CURRENT by one atomic rename; the caller holds the store lock (:meth:`locked`)."""
        if not (self.snapshot_dir(version) / "zarr.json").is_file():
            raise SnapshotNotFoundError(f"cannot make {version!r} current: it has no zarr.json in {self.snapshots_dir}")
        tmp = self.root / f".{CURRENT}.{secrets.token_hex(4)}"
        with open(tmp, "w") as fh:
            fh.write(version + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / CURRENT)
        fsync_path(self.root)

    def rollback(self, to: str | None = None, check: bool = True) -> str:
        """Make ``to`` (default: the newest snapshot older than the live one that opens
        and verifies) current. The only way a store goes back to an older version.

        Args:
            to: the version to serve; refused if it does not open and verify.
            check: open and verify the target's checksums first.
        Raises:
            SnapshotNotFoundError: no such version, or none older that is intact.
            CorruptSnapshotError: ``to`` is damaged.
        """
        from saec.store.snapshot import open_snapshot

        def intact(version: str) -> None:
            if check:
                open_snapshot(self.snapshot_dir(version)).verify()

        with self.locked():
            if to is not None:
                intact(to)
            else:
                try:
                    live: str | None = self.read_current()
                except BadCurrentError:
                    live = None  # unreadable CURRENT: go to the newest intact snapshot
                skipped = []
                for v in reversed([v for v in self.versions() if live is None or v < live]):
                    try:
                        intact(v)
                    except StoreError as exc:
                        skipped.append(f"{v} ({exc})")
                        continue
                    to = v
                    break
                if to is None:
                    why = "; skipped damaged " + ", ".join(skipped) if skipped else ""
                    raise SnapshotNotFoundError(f"no intact snapshot older than the live {live} to roll back to{why}")
                for s in skipped:
                    log.warning("rollback skipped damaged snapshot %s", s)
            self.write_current(to)
        return to

    def prune(self, keep: int) -> list[str]:
        """Delete all but the newest ``keep`` snapshots, never the live one.

        Each is first renamed out of ``snapshots/`` into ``.trash/`` (one atomic step), so
        a crash mid-deletion leaves a half-deleted folder only where no command looks;
        the next :meth:`clean` finishes it.
        """
        if keep < 1:
            raise StoreError(f"expected keep >= 1, got {keep}")
        with self.locked():
            live = self.current_or_none()
            versions = self.versions()
            doomed = [v for v in versions[:-keep] if v != live]
            if doomed:
                self.trash_dir.mkdir(exist_ok=True)
                for v in doomed:
                    os.rename(self.snapshots_dir / v, self.trash_dir / f"{v}.{secrets.token_hex(4)}")
                fsync_path(self.snapshots_dir)
            # Also any left by an earlier prune whose folder a writer held then.
            dropped = self._trash_deltas(set(self.versions()))
            # A server that still maps the old files keeps its pages: unlink is safe on POSIX.
            if doomed or dropped:
                for entry in list(self.trash_dir.iterdir()):
                    _remove(entry)
            return doomed

    def _trash_deltas(self, kept: set[str]) -> list[str]:
        """Move ``deltas/<version>/`` of every snapshot not in ``kept`` into ``.trash/``;
        the caller holds the store lock.

        Those updates can never apply again (their snapshot is gone). A folder whose append
        lock (``store.deltas``) a writer holds is left for the next prune: removing it under
        an append would acknowledge a frame into a deleted file.
        """
        root = self.root / DELTAS
        if not root.is_dir():
            return []
        dropped = []
        for entry in sorted(root.iterdir()):
            if entry.name in kept or not is_version(entry.name) or entry.is_symlink() or not entry.is_dir():
                continue
            lock = FileLock(entry / DELTAS_LOCK)
            if not lock.acquire(blocking=False):
                log.info("deltas of pruned snapshot %s are being appended to; left for the next prune", entry.name)
                continue
            try:
                self.trash_dir.mkdir(exist_ok=True)
                os.rename(entry, self.trash_dir / f"{DELTAS}-{entry.name}.{secrets.token_hex(4)}")
            finally:
                lock.release()
            dropped.append(entry.name)
        if dropped:
            fsync_path(root)
        return dropped

    def clean(self) -> list[str]:
        """Remove what interrupted work left behind and no live process holds.

        Temporary CURRENT files and ``.trash/`` are only written under the store lock, so
        while we hold it they are leftovers; a ``.partial/<version>/`` folder is a
        leftover when nobody holds its ``.partial/<version>.lock``.

        Returns:
            The paths removed, relative to the store.
        """
        removed: list[str] = []
        with self.locked():
            for entry in self.root.glob(f".{CURRENT}.*"):
                _remove(entry)
                removed.append(entry.name)
            if self.trash_dir.is_dir():
                for entry in list(self.trash_dir.iterdir()):
                    _remove(entry)
                    removed.append(f"{TRASH}/{entry.name}")
            if self.partial_dir.is_dir():
                for entry in sorted(self.partial_dir.iterdir()):
                    if entry.name.endswith(LOCK_SUFFIX):
                        continue
                    lock = FileLock(self.partial_dir / (entry.name + LOCK_SUFFIX))
                    if not lock.acquire(blocking=False):
                        continue  # its writer is alive
                    try:
                        _remove(entry)
                    finally:
                        lock.release(unlink=True)
                    removed.append(f"{PARTIAL}/{entry.name}")
                for entry in list(self.partial_dir.glob("*" + LOCK_SUFFIX)):
                    if (self.partial_dir / entry.name[: -len(LOCK_SUFFIX)]).exists():
                        continue
                    lock = FileLock(entry)
                    if lock.acquire(blocking=False):
                        lock.release(unlink=True)
                        removed.append(f"{PARTIAL}/{entry.name}")
        if removed:
            log.info("removed leftovers of interrupted work in %s: %s", self.root, ", ".join(removed))
        return removed


def _remove(path: Path) -> None:
    """Delete a file or a folder tree; never follows a symlink out of it."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
