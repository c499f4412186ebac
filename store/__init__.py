"""The snapshot store: format, key index, hashing, atomic publishing, the lookup engine.

``from saec.store import SnapshotWriter, open_snapshot`` are the entry points; they are
resolved lazily so that importing a light module (``saec.store.hashing``) does not load
zarr or the compiled kernels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from saec.store.engine import LookupEngine
    from saec.store.snapshot import Snapshot, open_current, open_snapshot
    from saec.store.writer import SnapshotWriter

__all__ = ["LookupEngine", "Snapshot", "SnapshotWriter", "open_current", "open_snapshot"]

_HOME = {
    "LookupEngine": "saec.store.engine",
    "Snapshot": "saec.store.snapshot",
    "open_current": "saec.store.snapshot",
    "open_snapshot": "saec.store.snapshot",
    "SnapshotWriter": "saec.store.writer",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'saec.store' has no attribute {name!r}")
