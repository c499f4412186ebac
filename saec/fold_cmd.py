"""``saec fold``: publish the live snapshot plus its pending updates as the next snapshot.

    saec fold --store STORE [--keep 5] [--repair] [--hnsw-m auto] [--hnsw-ef-construction 200]
    saec fold --store s3://bucket/store --deltas MIRROR [--keep 5]

No re-clustering (codebooks stay); keys, masks, vectors and the key index are rebuilt
(``store.fold``). Servers swap the new snapshot in at their next reload check, and the
old snapshot's deltas stop applying: they are inside the new one, which covers every
update it folded (its watermark, ``store.carry``).

A store at an fsspec URL keeps no deltas (objects cannot be appended to or fsynced):
they are in the local folder MIRROR (``MIRROR/deltas/<base>/``), the cache folder of
the replica that takes the updates or the folder ``saec update --store URL --deltas
MIRROR`` writes to. The fold brings MIRROR up to the store's live snapshot, folds it
with MIRROR's deltas and publishes to the URL as ``saec compress --out URL`` does.

A delta log with damaged frames (``store.deltas``) is refused, naming every damaged range;
``--repair`` first rewrites the damaged segments with every intact frame and logs what
it dropped.
"""

from __future__ import annotations

import argparse

from saec.store.writer import DEFAULT_KEEP


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fold",
        help="publish the live snapshot plus its deltas as a new snapshot",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--store", required=True, help="a store folder or an fsspec URL (s3://...)")
    p.add_argument("--deltas", default="", metavar="MIRROR",
                   help="for a store at a URL: the local folder holding its deltas (required there)")
    p.add_argument("--keep", type=int, default=DEFAULT_KEEP, help="snapshots to keep in the store")
    p.add_argument("--source", default="", help="free text recorded in the snapshot")
    p.add_argument("--repair", action="store_true",
                   help="rewrite damaged delta segments keeping every intact frame (dropped bytes are logged); "
                        "without it a damaged log is refused")
    from saec.compress_cmd import add_hnsw_flags

    add_hnsw_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from saec.compress_cmd import hnsw_params
    from saec.progress import Progress
    from saec.store import carry, remote
    from saec.store.errors import StoreError
    from saec.store.fold import fold, fold_remote
    from saec.store.layout import StoreLayout

    if remote.is_url(args.store):
        if not args.deltas:
            raise StoreError(f"{args.store}: expected --deltas MIRROR, the local folder that holds this store's deltas "
                             "(object storage keeps none), got none")
        with Progress() as progress:
            progress.stage(f"folding {args.store} with the deltas in {args.deltas}")
            result = fold_remote(args.store, args.deltas, keep=args.keep, source=args.source, repair=args.repair,
                                 hnsw=hnsw_params(args))
    else:
        if args.deltas:
            raise StoreError(f"expected --deltas only with a store at a URL; {args.store} keeps its own deltas")
        with Progress() as progress:
            progress.stage(f"folding {args.store} and its deltas")
            result = fold(remote.local_path(args.store), keep=args.keep, source=args.source, repair=args.repair,
                          hnsw=hnsw_params(args))
    print(f"{'field':<24} {'rows before':>12} {'updated ids':>12} {'reassigned':>12} {'rows after':>12}")
    for name, r in result.fields.items():
        print(f"{name:<24} {r['rows_before']:>12,} {r['updates']:>12,} {r['reassigned']:>12,} {r['rows_after']:>12,}")
    print(f"published {result.version} = {result.base} + {result.frames} delta frames ({result.seconds:.1f} s)")
    layout = StoreLayout(args.deltas if remote.is_url(args.store) else remote.local_path(args.store))
    manifest = carry.read_manifest(layout, result.version) or {}
    print(f"covers the updates written until {carry.iso(manifest.get(carry.WATERMARK))} "
          f"(its checkpoint's: until {carry.iso(manifest.get(carry.CHECKPOINT_WATERMARK))})")
    return 0
