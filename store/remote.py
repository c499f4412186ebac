"""Snapshots through object storage: publish to an fsspec URL, mirror one back to a cache.

A store can live at any fsspec URL (``s3://bucket/store`` through s3fs, ``gs://...``,
``file:///...``) with the layout of a local store (``CURRENT``, ``snapshots/<version>/``).
Credentials and endpoints come the fsspec way: its configuration (environment variables
``FSSPEC_S3_ENDPOINT_URL``, ``FSSPEC_S3_KEY``, ... or ``~/.config/fsspec``), the
provider's own variables (``AWS_ACCESS_KEY_ID``, ...), or ``storage_options``.

Publishing keeps the local guarantees (docs/FORMAT.md): the snapshot is written and
checked in a local folder first; then every object is uploaded, read back and compared
(size and SHA-256) with what was written, and only then is ``CURRENT`` replaced, by one
PUT, which object stores make atomic. A reader follows ``CURRENT``, so it never sees a
snapshot that is not whole.

A replica serving a remote store (:class:`StoreMirror`) copies the live snapshot (only
the fields it serves) into a local cache folder, verifies every array against the
manifest, renames it into place and points the cache's ``CURRENT`` at it; the local
reader then memory-maps it as any local store.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from saec.store.errors import CorruptSnapshotError, SnapshotNotFoundError, StoreError, UnknownFieldError
from saec.store.layout import CURRENT, PARTIAL, SNAPSHOTS, StoreLayout, is_version
from saec.store.snapshot import MANIFEST_KEY, chunk_path, open_snapshot

LOCAL_PROTOCOLS = frozenset({"file", "local"})
_READ_BYTES = 1 << 22


class RemoteStoreError(StoreError, OSError):
    """Object storage could not be reached, or holds something other than a store."""


def is_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names a remote store (``s3://...``), not a local folder."""
    text = os.fspath(location)
    if "://" not in text:
        return False
    return text.split("://", 1)[0].split("::")[-1] not in LOCAL_PROTOCOLS


def local_path(location: str | os.PathLike[str]) -> str:
    """A local location as a plain path: ``file:///srv/store`` -> ``/srv/store``."""
    text = os.fspath(location)
    if "://" in text and not is_url(text):
        return text.split("://", 1)[1]
    return text


def _filesystem(url: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError as exc:
        raise RemoteStoreError(f"{url}: expected the 's3' extra (fsspec, s3fs) to be installed, got {exc}") from None
    try:
        fs, root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise RemoteStoreError(f"{url}: expected an fsspec URL whose file system is installed, got {exc}") from None
    return fs, root.rstrip("/")


def _sha256_of_object(fs: Any, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as fh:
        while block := fh.read(_READ_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _sha256_of_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def publish_snapshot(
    local_store: str | os.PathLike[str],
    version: str,
    url: str,
    *,
    keep: int = 5,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Copy ``snapshots/<version>/`` of a local store to the store at ``url`` and make it live.

    Every object is uploaded, then read back and compared with the local file (arrays
    also against the manifest's SHA-256) before ``CURRENT`` is replaced; then all but the
    newest ``keep`` remote snapshots are deleted, never the live one.

    Raises:
        CorruptSnapshotError: an object read back differs; CURRENT is left as it was.
        RemoteStoreError: the object store failed.
    """
    folder = StoreLayout(local_store).snapshot_path(version)
    snapshot = open_snapshot(folder)
    expected = {}  # object path relative to the snapshot -> sha256
    for info in snapshot.arrays():
        expected[chunk_path(Path(info.path), len(info.shape)).as_posix()] = info.sha256
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for path in files:
        rel = path.relative_to(folder).as_posix()
        expected.setdefault(rel, _sha256_of_file(path))
    fs, root = _filesystem(url, storage_options)
    target = f"{root}/{SNAPSHOTS}/{version}"
    try:
        # The manifest goes up last: a listing shows a snapshot only once all its arrays are there.
        for path in sorted(files, key=lambda p: p == folder / "zarr.json"):
            rel = path.relative_to(folder).as_posix()
            fs.put_file(str(path), f"{target}/{rel}")
        for path in files:
            rel = path.relative_to(folder).as_posix()
            remote = f"{target}/{rel}"
            size = fs.size(remote)
            if size != path.stat().st_size:
                raise CorruptSnapshotError(f"{remote}: expected {path.stat().st_size} bytes, found {size}")
            found = _sha256_of_object(fs, remote)
            if found != expected[rel]:
                raise CorruptSnapshotError(f"{remote}: expected sha256 {expected[rel]}, found {found}")
        fs.pipe_file(f"{root}/{CURRENT}", (version + "\n").encode())
        _prune(fs, root, keep, version)
    except OSError as exc:
        raise RemoteStoreError(f"publishing {version} to {url}: {exc}") from exc


def remote_versions(url: str, *, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Published versions at ``url``, oldest first."""
    fs, root = _filesystem(url, storage_options)
    return _versions(fs, root)


def _versions(fs: Any, root: str) -> list[str]:
    try:
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(f"{root}/{SNAPSHOTS}", detail=False)]
    except FileNotFoundError:
        return []
    return sorted(n for n in names if is_version(n))


def _prune(fs: Any, root: str, keep: int, live: str) -> None:
    fs.invalidate_cache()
    for version in _versions(fs, root)[:-keep]:
        if version != live:
            fs.rm(f"{root}/{SNAPSHOTS}/{version}", recursive=True)


@contextmanager
def staged(out: str, *, keep: int = 5, storage_options: Mapping[str, Any] | None = None) -> Iterator[str]:
    """A local store folder to write into; for a URL, a temporary one whose newly
    published snapshot is copied to ``out`` when the block ends without error.

    ``out`` given as a local folder is yielded as it is.
    """
    if not is_url(out):
        yield local_path(out)
        return
    with tempfile.TemporaryDirectory(prefix="saec-stage-") as tmp:
        yield tmp
        version = StoreLayout(tmp).current_or_none()
        if version is not None:
            publish_snapshot(tmp, version, out, keep=keep, storage_options=storage_options)


class StoreMirror:
    """Keeps a local cache folder's CURRENT equal to a remote store's.

    Args:
        url: the remote store.
        cache: local folder; it becomes an ordinary store (``CURRENT``, ``snapshots/``).
        fields: copy only these fields' arrays (a replica serving a share); None: all.
        keep: snapshots kept in the cache.
    """

    def __init__(self, url: str, cache: str | os.PathLike[str], *, fields: Collection[str] | None = None,
                 keep: int = 2, storage_options: Mapping[str, Any] | None = None) -> None:
        self.url = url
        self.layout = StoreLayout(cache)
        self.fields = None if fields is None else tuple(fields)
        self.keep = keep
        self._fs, self._root = _filesystem(url, storage_options)

    def remote_current(self) -> str:
        try:
            version = self._fs.cat_file(f"{self._root}/{CURRENT}").decode().strip()
        except FileNotFoundError:
            raise SnapshotNotFoundError(f"no published snapshot at {self.url}: expected an object {CURRENT}") from None
        except OSError as exc:
            raise RemoteStoreError(f"reading {self.url}/{CURRENT}: {exc}") from exc
        if not is_version(version):
            raise CorruptSnapshotError(f"{self.url}/{CURRENT}: expected a version, found {version!r}")
        return version

    def sync(self) -> str:
        """Copy the remote live snapshot if the cache lacks it, verify it, make it current.

        Returns:
            The version now current in the cache.
        Raises:
            SnapshotNotFoundError, CorruptSnapshotError, RemoteStoreError: the cache is
            left as it was.
        """
        version = self.remote_current()
        if self.layout.current_or_none() == version:
            return version
        final = self.layout.snapshots_dir / version
        if not final.is_dir():
            self._fetch(version, final)
        self.layout.set_current(version)
        self.layout.prune(self.keep)
        return version

    def _fetch(self, version: str, final: Path) -> None:
        source = f"{self._root}/{SNAPSHOTS}/{version}"
        tmp = self.layout.root / PARTIAL / f"{version}.{secrets.token_hex(4)}"
        tmp.mkdir(parents=True)
        try:
            self._fs.get_file(f"{source}/zarr.json", str(tmp / "zarr.json"))
            if self.fields is None:
                self._fs.get(f"{source}/", str(tmp) + "/", recursive=True)
            else:
                for name in _served_fields(tmp, self.fields):
                    self._fs.get(f"{source}/{name}/", str(tmp / name) + "/", recursive=True)
            open_snapshot(tmp, fields=self.fields).verify()
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():  # another worker process renamed its copy first: fine
                    raise
        except FileNotFoundError as exc:
            raise CorruptSnapshotError(f"{source}: an object is missing: {exc}") from None
        except OSError as exc:
            raise RemoteStoreError(f"copying {source}: {exc}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _served_fields(folder: Path, fields: Collection[str]) -> list[str]:
    """The requested fields, checked against the manifest in ``folder/zarr.json``."""
    try:
        held = orjson.loads((folder / "zarr.json").read_bytes())["attributes"][MANIFEST_KEY]["fields"]
    except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise CorruptSnapshotError(f"{folder}/zarr.json: expected a saec manifest, found {exc!r}") from None
    missing = sorted(set(fields) - set(held))
    if missing:
        raise UnknownFieldError(f"expected fields {missing} to serve, the snapshot holds {', '.join(sorted(held))}")
    return list(fields)
