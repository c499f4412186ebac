"""``saec update``: files of new or changed vectors in, frames on the live snapshot's deltas out.

    saec update --store STORE new.npz more.parquet [--spec fields.toml | --field ... --column ...]
                [--batch-rows 100000]
    saec update --store s3://bucket/store --deltas MIRROR new.npz ...
    saec update --store STORE --update-log redis://host:6379/0?stream=NAME new.npz ...

Reads through ``loaders/`` with the same field spec as ``saec compress``, and appends every
chunk of ``--batch-rows`` rows as one frame (``store.updates``), durable before the next
is read; no server is involved, and a running server serves them at its next lookup. A
chunk with a bad row (unknown field, wrong dimension, NaN, an id twice) stops the command
with the field and row named; chunks before it stay applied. A delta log with damaged
frames is refused (``--repair`` rewrites it with every intact frame first).

A store at an fsspec URL keeps no deltas: they go to the local folder MIRROR, first
brought up to the store's live snapshot (copied and verified), where ``saec fold --store
URL --deltas MIRROR`` finds them.

With ``--update-log`` (or ``SAEC_UPDATE_LOG``), the store of a fleet: each chunk is
checked against the live snapshot of STORE (or MIRROR) and appended to the shared log,
durable there before the next is read; every replica applies it (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from saec.loaders import open_table, spec_from_flags
from saec.loaders.errors import SpecError
from saec.progress import Progress
from saec.store.deltas import check_log
from saec.store.hashing import hash_ids
from saec.store.live import LiveEngine
from saec.store.updates import Updater


@dataclass
class _Tally:
    accepted: int = 0
    new: int = 0
    reassigned: int = 0
    distances: list[np.ndarray] = field(default_factory=list)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "update",
        help="append new or changed vectors to the live snapshot's deltas",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="FILE", help=".npz, .npy folder, .parquet, or torch state dict")
    p.add_argument("--store", required=True, help="the store whose live snapshot the updates apply to (folder or URL)")
    p.add_argument("--deltas", default="", metavar="MIRROR",
                   help="for a store at a URL: the local folder that keeps its deltas (required there)")
    p.add_argument("--update-log", dest="update_log", default=os.environ.get("SAEC_UPDATE_LOG", ""),
                   help="append to the fleet's shared update log instead of the local deltas (SAEC_UPDATE_LOG)")
    p.add_argument("--batch-rows", dest="batch_rows", type=int, default=100_000, help="rows per frame (default 100000)")
    p.add_argument("--spec", help="field spec file (.json or .toml); see docs/loaders.md")
    p.add_argument("--field", action="append", default=[], help="NAME or NAME:ids=..,vectors=..,counts=..")
    p.add_argument("--column", action="append", default=[], help="parquet column names: id=.., vector=..")
    p.add_argument("--format", choices=["npz", "npy", "parquet", "torch"])
    p.add_argument("--repair", action="store_true",
                   help="rewrite damaged delta segments keeping every intact frame before appending; "
                        "without it a damaged log is refused")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.spec and (args.field or args.column):
        raise SpecError("give either --spec or --field/--column flags, not both")
    spec = args.spec or spec_from_flags(args.field, args.column, args.format)
    started = time.perf_counter()
    store = _deltas_folder(args.store, args.deltas)
    live = LiveEngine(store, verify=False)
    engine = live.engine
    if engine is None:
        live.layout.current()  # raises the store's "no published snapshot" error
        return 2
    updater = Updater(store, engine)
    log = None
    if args.update_log:
        from saec.store.updatelog import open_update_log

        log = open_update_log(args.update_log)
    else:
        with updater.writer.lock():
            # Appending to a damaged log would bury the damage: refused unless repaired first.
            check_log(updater.writer.directory, repair_it=args.repair)
    tallies: dict[str, _Tally] = {}
    first = last = 0
    with Progress() as progress:
        for path in args.inputs:
            with open_table(path, spec, format=args.format) as table:
                for info in table.fields():
                    progress.stage(f"{path}: {info.name}", total=info.rows or 0)
                    for chunk in table.iter_chunks(info.name, chunk_rows=args.batch_rows):
                        fields = {info.name: (hash_ids(chunk.ids, info.name), chunk.vectors)}
                        if log is None:
                            result = updater.apply(fields)
                            first, last = first or result.sequence, result.sequence
                            rep = result.fields[info.name]
                        else:
                            rep, entry = _to_log(log, updater, fields, info.name)
                            first, last = first or entry.ordinal, entry.ordinal
                        t = tallies.setdefault(info.name, _Tally())
                        t.accepted += rep.accepted
                        t.new += rep.new
                        t.reassigned += rep.reassigned
                        t.distances.append(rep.distances)
                        progress.step(n=rep.accepted)
    _print(tallies, engine.version, first, last, time.perf_counter() - started,
           what="frames" if log is None else f"entries of the update log {log.name}")
    return 0


def _to_log(log: Any, updater: Updater, fields: dict[str, Any], name: str) -> tuple[Any, Any]:
    """Check one chunk and append it to the shared update log: (its field report, the log entry)."""
    from saec.store.replicate import field_reports, log_payload

    prepared = updater.prepare(fields)
    entry = log.append(log_payload(prepared))
    return field_reports(updater, prepared)[name], entry


def _deltas_folder(store: str, deltas: str) -> str:
    """The local store folder the deltas go to: the store itself, or for a URL its mirror
    folder, brought up to the URL's live snapshot first."""
    from saec.store import remote

    if not remote.is_url(store):
        if deltas:
            raise SpecError(f"expected --deltas only with a store at a URL; {store} keeps its own deltas")
        return remote.local_path(store)
    if not deltas:
        raise SpecError(f"{store}: expected --deltas MIRROR, the local folder that keeps this store's deltas "
                        "(object storage keeps none), got none")
    remote.StoreMirror(store, deltas).sync()
    return deltas


def _print(tallies: dict[str, _Tally], base: str, first: int, last: int, seconds: float, what: str = "frames") -> None:
    out = sys.stdout
    print(f"{'field':<24} {'accepted':>10} {'new':>10} {'reassigned':>10} {'dist mean':>10} {'dist p99':>10}", file=out)
    for name, t in tallies.items():
        d = np.concatenate(t.distances) if t.distances else np.zeros(1, np.float32)
        print(f"{name:<24} {t.accepted:>10,} {t.new:>10,} {t.reassigned:>10,} {d.mean():>10.4g} "
              f"{np.quantile(d, 0.99):>10.4g}", file=out)
    print(f"appended {what} {first}..{last} on top of {base} ({seconds:.1f} s)", file=out)
