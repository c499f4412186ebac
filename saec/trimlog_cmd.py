"""``saec trim-log``: drop the update log's entries that no kept snapshot needs.

    saec trim-log --store STORE --update-log redis://host:6379/0?stream=NAME [--dry-run]

Every snapshot records the newest update its checkpoint covers
(``updates_covered_until_ms``); a replica that swaps to a snapshot replays the log's
entries after that time. So an entry is needed as long as some snapshot kept in the store
(``snapshots/``, local folder or ``s3://...``; any of them may be rolled back to) does not
cover it: the entries kept are those after the *oldest* kept snapshot's watermark. A
kept snapshot that records no watermark covers nothing, and then nothing is trimmed.
Run it after each publish (the hourly job), against the store the fleet serves.

A replica whose position is older than the trim point, on a snapshot no longer kept,
would miss entries: it says so (``saec_update_log_gap_total``, an error in its log) and
serves them again once it swaps to a kept snapshot that covers them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

import orjson

from saec.cli_support import UsageError
from saec.store.replicate import WATERMARK_KEY
from saec.store.updatelog import open_update_log


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trim-log", help="drop the update log's entries that no kept snapshot needs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True, help="the store the fleet serves (folder or URL)")
    p.add_argument("--update-log", dest="update_log", default=os.environ.get("SAEC_UPDATE_LOG", ""),
                   help="the store's update log (SAEC_UPDATE_LOG)")
    p.add_argument("--dry-run", action="store_true", help="say what would be trimmed; trim nothing")
    p.set_defaults(run=run)


def kept_watermarks(store: str) -> dict[str, int | None]:
    """Each kept snapshot's ``updates_covered_until_ms`` (None: it records none)."""
    from saec.store import remote
    from saec.store.layout import StoreLayout
    from saec.store.snapshot import MANIFEST_KEY

    if remote.is_url(store):
        fs, root = remote._filesystem(store, None)
        versions = remote.remote_versions(store)
        manifests = {v: orjson.loads(fs.cat_file(f"{root}/snapshots/{v}/zarr.json")) for v in versions}
    else:
        layout = StoreLayout(remote.local_path(store))
        manifests = {v: orjson.loads((layout.snapshots_dir / v / "zarr.json").read_bytes()) for v in layout.versions()}
    out: dict[str, int | None] = {}
    for v, doc in manifests.items():
        value = doc.get("attributes", {}).get(MANIFEST_KEY, {}).get(WATERMARK_KEY)
        out[v] = value if type(value) is int and value >= 0 else None
    return out


def retention_point(watermarks: Mapping[str, int | None]) -> int | None:
    """The time (Unix ms) up to which no kept snapshot needs the log's entries; None: keep all."""
    if not watermarks or any(w is None for w in watermarks.values()):
        return None
    return min(w for w in watermarks.values() if w is not None)


def run(args: argparse.Namespace) -> int:
    if not args.update_log:
        raise UsageError("expected --update-log URL (or SAEC_UPDATE_LOG), got none")
    marks = kept_watermarks(args.store)
    point = retention_point(marks)
    for v, w in sorted(marks.items()):
        print(f"{v}  covers updates until {w if w is not None else 'nothing (no watermark)'}")
    if point is None:
        print("nothing trimmed: a kept snapshot covers no update (or the store keeps none)")
        return 0
    log = open_update_log(args.update_log)
    try:
        position = log.position_at_time(point)
        if args.dry_run:
            lag = log.lag(None)
            kept = log.lag(position)
            print(f"would trim {lag.entries - kept.entries} of {lag.entries} entries (up to {point} ms)")
            return 0
        removed = log.trim_before(position)
    finally:
        log.close()
    print(f"trimmed {removed} entries of {log.name} covered by every kept snapshot (up to {point} ms)")
    return 0

