"""One replica's view of a store: a share of the fields, and a store that may be remote.

A deployment grows past one machine by running replicas. Each serves either every field
of the snapshot or a share of them (``saec serve --fields a,b``), from a local store
folder or from a local cache of a store in object storage (``saec serve --store
s3://...``, see :mod:`store.remote`). Clients route each field to a replica that serves
it (``clients.sharded``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from saec.store.engine import DefaultVector
from saec.store.live import LiveEngine, ReloadOutcome
from saec.store.snapshot import Snapshot, open_snapshot


def parse_fields(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"a,b"`` (or a sequence) as distinct field names in the given order; empty: all fields."""
    if value is None:
        return ()
    names = value.split(",") if isinstance(value, str) else list(value)
    return tuple(dict.fromkeys(n.strip() for n in names if n.strip()))


def shard_of(snapshot: Snapshot) -> dict[str, Any]:
    """What share of the snapshot's fields a replica serves, for /snapshot and /memory."""
    every = snapshot.manifest.get("fields", {})
    return {"fields": list(snapshot.fields), "snapshot_fields": len(every), "all": len(snapshot.fields) == len(every)}


class ReplicaEngine(LiveEngine):
    """A :class:`LiveEngine` over a share of the fields, and over a mirrored store if given.

    Args:
        store: the local store folder (for a remote store: the mirror's cache folder).
        fields: the fields served; empty for all. A snapshot lacking one is refused.
        mirror: a :class:`store.remote.StoreMirror` brought up to date before every reload.
    """

    def __init__(self, store: str | Path, *, fields: Sequence[str] = (), mirror: Any = None,
                 default: DefaultVector = "zeros", max_ids: int = 0, verify: bool = True,
                 interval: float = 0.0) -> None:
        self.fields = tuple(fields)
        self.mirror = mirror
        # The base class's first reload() is ours: it brings the mirror up to date before
        # looking for CURRENT. A bucket with nothing published yet is no reason to fail: as
        # with an empty local store, the server answers 503 until a snapshot appears.
        super().__init__(store, default=default, max_ids=max_ids, verify=verify, interval=interval)

    def _open_snapshot(self, version: str) -> Snapshot:
        return open_snapshot(self.layout.snapshot_dir(version), fields=self.fields or None)

    def reload(self, *, force: bool = False) -> ReloadOutcome:
        if self.mirror is not None:
            try:
                self.mirror.sync()
            except Exception as exc:
                # Anything at all (object storage speaks many exception trees): the copy
                # already in the cache keeps serving; the error shows in /snapshot and
                # /metrics, and counts towards unreadiness like a refused snapshot.
                with self._lock:
                    self._refuse(None, exc)
                serving = self.engine.version if self.engine is not None else ""
                return ReloadOutcome(version=serving, changed=False, error=self.last_error)
        return super().reload(force=force)


def default_cache(url: str) -> Path:
    """Where a replica keeps its copy of a remote store unless told: one folder per URL."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    base = os.environ.get("XDG_CACHE_HOME") or tempfile.gettempdir()
    return Path(base) / "saec-cache" / digest


def open_live(store: str, *, fields: str | Sequence[str] | None = None, cache: str = "",
              default: DefaultVector = "zeros", max_ids: int = 0, verify: bool = True,
              interval: float = 0.0) -> LiveEngine:
    """The live engine a server runs on: a plain :class:`LiveEngine` for a local store
    serving every field, else a :class:`ReplicaEngine`.

    Args:
        store: a local folder, or an fsspec URL (``s3://bucket/store``) mirrored into ``cache``.
        fields: the share to serve (``"a,b"``); empty for all.
        cache: local folder for a remote store's copy (default: :func:`default_cache`).
    """
    from saec.store import remote

    names = parse_fields(fields)
    if remote.is_url(store):
        folder = Path(cache) if cache else default_cache(store + "#" + ",".join(names))
        mirror = remote.StoreMirror(store, folder, fields=names or None)
        return ReplicaEngine(folder, fields=names, mirror=mirror, default=default, max_ids=max_ids, verify=verify,
                             interval=interval)
    store = remote.local_path(store)
    if names:
        return ReplicaEngine(store, fields=names, default=default, max_ids=max_ids, verify=verify, interval=interval)
    return LiveEngine(store, default=default, max_ids=max_ids, verify=verify, interval=interval)
