"""Where things live in a store folder, and the pointer to the live snapshot.

::

    STORE/
      CURRENT                    the live snapshot's version, one line; replaced atomically
      snapshots/<version>/       one Zarr v3 group per published snapshot (immutable)
      .partial/<version>/        snapshots being written; never read by a server
      deltas/<version>/          reserved: incremental updates on top of <version>

Versions are ``YYYYMMDDTHHMMSS.ffffffZ-<4 hex>``: they sort in publication order.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

from saec.store.errors import SnapshotNotFoundError, StoreError

CURRENT = "CURRENT"
SNAPSHOTS = "snapshots"
PARTIAL = ".partial"
DELTAS = "deltas"

_VERSION_RE = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{4}$")
FIELD_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")


def new_version(now: datetime | None = None) -> str:
    """A fresh version name that sorts after every earlier one from this clock."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S.%fZ") + "-" + secrets.token_hex(2)


def is_version(name: str) -> bool:
    return bool(_VERSION_RE.match(name))


def fsync_path(path: Path) -> None:
    """fsync a file, or a folder to make a rename or a new entry in it durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StoreLayout:
    """A store folder: its snapshots, its CURRENT pointer, retention and roll-back."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def snapshots_dir(self) -> Path:
        return self.root / SNAPSHOTS

    @property
    def partial_dir(self) -> Path:
        return self.root / PARTIAL

    def snapshot_path(self, version: str) -> Path:
        if not is_version(version):
            raise SnapshotNotFoundError(f"expected a version like 20260101T000000.000000Z-abcd, got {version!r}")
        return self.snapshots_dir / version

    def versions(self) -> list[str]:
        """Published versions, oldest first."""
        if not self.snapshots_dir.is_dir():
            return []
        return sorted(p.name for p in self.snapshots_dir.iterdir() if is_version(p.name) and p.is_dir())

    def current(self) -> str:
        """The live version named by CURRENT."""
        try:
            version = (self.root / CURRENT).read_text().strip()
        except FileNotFoundError:
            raise SnapshotNotFoundError(
                f"no published snapshot in {self.root}: expected a file {CURRENT} naming one "
                f"(build one with `saec demo --store {self.root}` or `saec compress`)"
            ) from None
        if not (self.snapshots_dir / version).is_dir():
            raise SnapshotNotFoundError(f"{CURRENT} names {version!r}, which is not in {self.snapshots_dir}")
        return version

    def current_or_none(self) -> str | None:
        try:
            return self.current()
        except SnapshotNotFoundError:
            return None

    def set_current(self, version: str) -> None:
        """Point CURRENT at ``version`` by one atomic rename."""
        if not self.snapshot_path(version).is_dir():
            raise SnapshotNotFoundError(f"cannot make {version!r} current: it is not in {self.snapshots_dir}")
        tmp = self.root / f".{CURRENT}.{secrets.token_hex(4)}"
        with open(tmp, "w") as fh:
            fh.write(version + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / CURRENT)
        fsync_path(self.root)

    def rollback(self, to: str | None = None) -> str:
        """Make ``to`` (default: the version published before the live one) current."""
        versions = self.versions()
        if to is None:
            live = self.current()
            older = [v for v in versions if v < live]
            if not older:
                raise SnapshotNotFoundError(f"no snapshot older than the live {live} to roll back to")
            to = older[-1]
        self.set_current(to)
        return to

    def prune(self, keep: int) -> list[str]:
        """Delete all but the newest ``keep`` snapshots, never the live one."""
        if keep < 1:
            raise StoreError(f"expected keep >= 1, got {keep}")
        live = self.current_or_none()
        versions = self.versions()
        doomed = [v for v in versions[:-keep] if v != live]
        for v in doomed:
            # A server that still maps the old files keeps its pages: unlink is safe on POSIX.
            shutil.rmtree(self.snapshots_dir / v, ignore_errors=True)
        return doomed
