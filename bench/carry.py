"""What carrying pending updates across a publish costs (``store.carry``).

A store with one compressed field (``--rows`` features, dim 16) and ``--pending`` updates
on its live snapshot, in frames of ``--frame-rows`` rows; then the next snapshot (another
codebook of the same k) is published three ways, each on a fresh copy:

- ``carry``: ``store.carry.publish``: every pending update re-assigned to the new codebook
  and appended to the new snapshot's deltas; the figures are its first pass (no lock) and
  the time it holds the live snapshot's append lock (updates wait that long);
- ``plain publish`` (the peer): ``SnapshotWriter.publish`` of the same snapshot, which
  drops the updates (what ``saec compress`` did before);
- ``fold`` (the other peer): ``saec fold`` of the same deltas, which holds the append lock
  from reading the deltas to the switch.

The ``drift`` part measures what ``store.drift`` reports (the updates' mean squared
distance to their centroid over the snapshot's own) for updates drawn like the table
(held-out rows of the same clustered distribution) and for the same scaled 2x and 10x:
where ``SAEC_DRIFT_WARN_RATIO`` should sit.

    python -m bench.carry [--parts carry,drift] [--rows 1000000] [--pending 1000000] [--frame-rows 10000]
                          [--ks 256,4096]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._report import Report, markdown_table
from saec.progress import Progress

DIM = 16


def _store(root: Path, rows: int, k: int, pending: int, frame_rows: int, rng: np.random.Generator) -> None:
    from bench.keyindex import generate_keys
    from saec.store.deltas import DeltaWriter, FieldDelta, encode_payload
    from saec.store.writer import SnapshotWriter

    dtype = np.uint8 if k <= 256 else np.uint16
    with SnapshotWriter(root, source="bench.carry") as w:
        w.add_compressed_field("user", generate_keys(0, rows, "user"), rng.standard_normal((k, DIM), dtype=np.float32),
                               rng.integers(0, k, rows).astype(dtype))
        base = w.publish()
    half = pending // 2  # half new ids, half reassigned
    keys = np.concatenate([generate_keys(rows, rows + half, "user"), generate_keys(0, pending - half, "user")])
    writer = DeltaWriter(root, base)
    with writer.lock():
        for s in range(0, pending, frame_rows):
            part = keys[s : s + frame_rows]
            vectors = rng.standard_normal((part.shape[0], DIM), dtype=np.float32)
            writer.append_locked(encode_payload({"user": FieldDelta(part, vectors, rng.integers(0, k, part.shape[0]).astype(dtype))}))


def _next(root: Path, rows: int, k: int, seed: int):
    from bench.keyindex import generate_keys
    from saec.store.writer import SnapshotWriter

    rng = np.random.default_rng(seed)
    w = SnapshotWriter(root, source="bench.carry next")
    w.add_compressed_field("user", generate_keys(0, rows, "user"), rng.standard_normal((k, DIM), dtype=np.float32),
                           rng.integers(0, k, rows).astype(np.uint8 if k <= 256 else np.uint16))
    return w


def run(rows: int, pending: int, frame_rows: int, k: int, progress: Progress) -> list[str]:
    from saec.store import carry
    from saec.store.fold import fold

    with tempfile.TemporaryDirectory(prefix="saec-bench-carry-") as tmp:
        template = Path(tmp) / "template"
        progress.stage(f"k={k}: a store of {rows:,} rows and {pending:,} pending updates")
        _store(template, rows, k, pending, frame_rows, np.random.default_rng(1))
        copies = {name: Path(tmp) / name for name in ("carry", "plain", "fold")}
        for path in copies.values():
            shutil.copytree(template, path)
        progress.stage(f"k={k}: publishing")
        with _next(copies["carry"], rows, k, 2) as w:
            t0 = time.perf_counter()
            _, report = carry.publish(w)
            carry_total = time.perf_counter() - t0
        with _next(copies["plain"], rows, k, 2) as w:
            t0 = time.perf_counter()
            w.publish()
            plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        fold(copies["fold"])
        folded = time.perf_counter() - t0
        progress.close()
    return [f"{k:,}", f"{pending:,}", f"{report.frames_carried:,}", f"{report.carried.get('user', 0):,}",
            f"{report.seconds:.2f}", f"{report.locked_seconds * 1000:.0f}", f"{carry_total:.2f}", f"{plain:.2f}",
            f"{folded:.2f}"]


def drift(progress: Progress) -> list[list[str]]:
    """The drift ratio of held-out and scaled updates on clustered tables of 100,000 rows."""
    import subprocess

    from saec.store.hashing import hash_ids
    from saec.store.live import LiveEngine
    from saec.store.updates import Updater

    rng = np.random.default_rng(1)
    out = []
    for dim, k in ((16, 256), (64, 1024)):
        centres = rng.normal(size=(200, dim)) * 3

        def draw(n: int, centres: np.ndarray = centres, dim: int = dim) -> np.ndarray:
            return (centres[rng.integers(0, 200, n)] + rng.normal(size=(n, dim))).astype(np.float32)

        with tempfile.TemporaryDirectory(prefix="saec-bench-drift-") as tmp:
            progress.stage(f"drift: compressing 100,000 x {dim}, k={k}")
            np.savez(Path(tmp) / "ckpt.npz", **{"user.ids": np.arange(100_000), "user.vectors": draw(100_000)})
            root = Path(tmp) / "store"
            subprocess.run([sys.executable, "-m", "saec.cli", "compress", str(Path(tmp) / "ckpt.npz"), "--out", str(root),
                            "--k", str(k), "--min-factor", "10", "--top-n", "0"], check=True, capture_output=True)
            row = [f"{dim}", f"{k:,}"]
            for scale in (1, 2, 10):
                engine = LiveEngine(root).engine
                assert engine is not None and engine.overlay is not None
                Updater(root, engine).apply({"user": (hash_ids(np.arange(10**9, 10**9 + 20_000), "user"), draw(20_000) * scale)})
                engine.overlay.refresh()
                row.append(f"{engine.overlay.drift.report()['user']['ratio']:.2f}")
                shutil.rmtree(root / "deltas")
            out.append(row)
    progress.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.carry", description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="carry,drift")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--frame-rows", dest="frame_rows", type=int, default=10_000)
    parser.add_argument("--ks", default="256,4096")
    parser.add_argument("--no-write", action="store_true", help="print only; keep bench/results as it is")
    parser.add_argument("--results", default="carry", help="results file name: bench/results/<NAME>.md")
    args = parser.parse_args(argv)
    report = Report(args.results, "Carrying pending updates across a publish", modules=("numpy", "hnswlib"))
    progress = Progress()
    parts = set(args.parts.split(","))
    if "drift" in parts:
        report.section(
            "Drift ratio (updates' mean squared distance to their centroid / the snapshot's own): 20,000 updates on a "
            "clustered table of 100,000 rows",
            markdown_table(["dim", "k", "held-out rows", "the same x2", "the same x10"], drift(progress)),
        )
    if "carry" not in parts:
        if not args.no_write:
            report.write()
        return 0
    table = [run(args.rows, args.pending, args.frame_rows, int(k), progress) for k in args.ks.split(",")]
    report.section(
        f"Publishing the next snapshot of a {args.rows:,}-row field (dim {DIM}) over {args.pending:,} pending updates "
        f"in frames of {args.frame_rows:,} rows",
        markdown_table(
            ["k", "pending", "frames carried", "rows carried", "carry, no lock (s)", "carry, lock held (ms)",
             "carry publish, total (s)", "plain publish, drops them (s)", "fold (s, lock held throughout)"],
            table,
        )
        + "\n\nThe lock held covers the second pass (frames appended during the first: none here), writing the "
        "manifest, and the switch of CURRENT; updates arriving then wait that long.",
    )
    if not args.no_write:
        report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
