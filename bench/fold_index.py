"""The key index after folds: bucket bits, false matches and lookup cost against a fresh snapshot.

    python -m bench.fold_index                        # 4e6 updates into a 2e5-row base
    python -m bench.fold_index --base 200000 --updates 400000 --no-write

A compressed field (k=100, dim 9) of ``--base`` hashed ids is published, ``--updates`` new
ids are appended to its delta log in frames of 100,000 and ``saec fold`` publishes them.
Three key indexes over the same rows are then compared in one run:

- ``fold``: the folded snapshot, whose bucket bits grew with its rows (``store.fold``);
- ``fold, base bits kept``: the same rows written with the base's bucket bits, what a
  fold did before (``SnapshotWriter`` with ``bucket_bits=`` over the fold's own keys);
- ``fresh``: a snapshot written from scratch with every id's full key (the peer).

For each: rows per bucket, unseen ids falsely found per 1e6 (FORMAT.md promises under
160), and ns per id of ``LookupEngine.lookup_field`` over 4096-id batches of stored ids
and of unseen ids (median of interleaved passes, ``bench.keyindex.ns_per_id``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._report import Report, markdown_table
from bench.keyindex import BATCH, ns_per_id
from saec.store.deltas import DeltaWriter, FieldDelta
from saec.store.engine import LookupEngine
from saec.store.fold import fold, prefix_keys
from saec.store.hashing import hash_ids
from saec.store.layout import StoreLayout
from saec.store.snapshot import open_snapshot
from saec.store.writer import SnapshotWriter

FIELD, K, DIM = "bench", 100, 9
FRAME_ROWS = 100_000
UNSEEN = 1_000_000


def run(base: int, updates: int) -> tuple[str, dict[str, float]]:
    rng = np.random.default_rng(0)
    codebook = rng.normal(size=(K, DIM)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="saec-foldindex-") as tmp:
        root = Path(tmp) / "store"
        with SnapshotWriter(root, source="bench.fold_index") as w:
            w.add_compressed_field(FIELD, hash_ids(np.arange(base), FIELD), codebook,
                                   rng.integers(0, K, base).astype(np.uint8))
            version = w.publish()
        appends = DeltaWriter(root, version)
        new_ids = np.arange(10**12, 10**12 + updates)
        for start in range(0, updates, FRAME_ROWS):
            ids = new_ids[start : start + FRAME_ROWS]
            appends.append({FIELD: FieldDelta(hash_ids(ids, FIELD), np.zeros((ids.shape[0], DIM), np.float32),
                                              rng.integers(0, K, ids.shape[0]).astype(np.uint8))})
        t = time.perf_counter()
        folded = open_snapshot(StoreLayout(root).snapshot_dir(fold(root).version))
        fold_s = time.perf_counter() - t
        f = folded.fields[FIELD]
        all_ids = np.concatenate([np.arange(base), new_ids])
        with SnapshotWriter(Path(tmp) / "fresh", source="bench.fold_index fresh") as w:
            w.add_compressed_field(FIELD, hash_ids(all_ids, FIELD), codebook, rng.integers(0, K, all_ids.shape[0]).astype(np.uint8))
            fresh_version = w.publish()
        fresh = open_snapshot(StoreLayout(Path(tmp) / "fresh").snapshot_dir(fresh_version))
        kept_bits = open_snapshot(StoreLayout(root).snapshot_dir(version)).fields[FIELD].index.bucket_bits
        # The fold's own rows, written with the base's bits: what a fold did before.
        with SnapshotWriter(Path(tmp) / "kept", source="bench.fold_index base bits kept") as w:
            w.add_compressed_field(FIELD, prefix_keys(f.index), codebook, np.asarray(f.masks), bucket_bits=kept_bits)
            kept_version = w.publish()
        kept = open_snapshot(StoreLayout(Path(tmp) / "kept").snapshot_dir(kept_version))
        engines = {"fold": LookupEngine(folded), "fold, base bits kept": LookupEngine(kept), "fresh": LookupEngine(fresh)}
        stored = hash_ids(rng.choice(all_ids, 64 * BATCH), FIELD).reshape(64, BATCH)
        unseen = rng.integers(0, 2**64 - 1, (64, BATCH), dtype=np.uint64, endpoint=True)

        methods = {}
        for mix, q in (("stored", stored), ("unseen", unseen)):
            for name, e in engines.items():
                methods[(name, mix)] = (lambda b, e=e: e.lookup_field(FIELD, b), q)
        times = ns_per_id({f"{a} | {b}": m for (a, b), m in methods.items()}, repeats=9, budget=60)
        probe = rng.integers(0, 2**64 - 1, UNSEEN, dtype=np.uint64, endpoint=True)
        rows = []
        figures: dict[str, float] = {"fold_seconds": fold_s}
        for name, e in engines.items():
            index = e.snapshot.fields[FIELD].index
            false = int((index.lookup(probe) >= 0).sum()) * 1_000_000 // UNSEEN
            figures[f"{name} false"] = false
            rows.append((
                name, index.bucket_bits, f"{index.rows / 2**index.bucket_bits:.1f}", f"{false:,}",
                f"{times[f'{name} | stored'][0]:.1f}", f"{times[f'{name} | unseen'][0]:.1f}",
            ))
        table = markdown_table(
            ["index", "bucket bits", "rows per bucket", "unseen found per 1e6", "ns/id stored", "ns/id unseen"], rows
        )
        note = (f"\n\n{base:,} base rows, {updates:,} updates folded in {fold_s:.1f} s; {f.rows:,} rows after "
                f"(aliased {f.aliased}); fresh: {fresh.fields[FIELD].rows:,} rows (aliased {fresh.fields[FIELD].aliased}). "
                "ns/id: LookupEngine.lookup_field, median of interleaved passes.")
        return table + note, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--base", type=int, default=200_000)
    parser.add_argument("--updates", type=int, default=4_000_000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    report = Report("fold_index", "The key index after folding updates, against a fresh snapshot", modules=("numpy", "numba"))
    table, _ = run(args.base, args.updates)
    report.section(f"{args.updates:,} updates folded into {args.base:,} rows", table)
    if not args.no_write:
        report.write()


if __name__ == "__main__":
    main()
