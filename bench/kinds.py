"""What each way of storing a field costs a lookup: ns per id and bytes per feature.

    python -m bench.kinds                   # 1e6 and 1e7 features, dim 16
    python -m bench.kinds --sizes 1000000   # one size

One snapshot per size holds the same ids six times, as the fields a user would choose
between: the float32 table itself (dense, the peer), the table in float16, Saec's one
codebook (k = 256, one mask byte), product quantisation (2 slices of 256 rows, 2 mask
bytes) and residual quantisation (2 stages of 256 rows over the whole vector, 2 mask
bytes), with float32 and with float16 codebooks. Masks and codebooks are random: a lookup's cost
does not depend on what the vectors hold. Every field is looked up through
``LookupEngine.lookup_field`` on the memory-mapped snapshot, as the server does, in
4096-id batches drawn before any timing (all ids stored, then half of them unseen);
the methods take turns pass by pass, and the figure is the median pass (best in
brackets). Bytes per feature are ``/memory``'s (``store.footprint``), key index
included.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from bench._report import Report, markdown_table
from bench.keyindex import BATCH, generate_keys, ns_per_id, query_batches
from saec.progress import Progress
from saec.store.engine import LookupEngine
from saec.store.footprint import field_footprint
from saec.store.hashing import hash_ids
from saec.store.snapshot import open_snapshot
from saec.store.writer import SnapshotWriter

DIM = 16
K = 256
SIZES = (1_000_000, 10_000_000)
BATCHES = 128
# name, what it is
KINDS = (
    ("dense", "float32 table (the peer)"),
    ("dense_f16", "float16 table"),
    ("compressed", "Saec, one codebook of 256 rows"),
    ("product", "product quantisation, 2 x 256"),
    ("residual", "residual quantisation, 2 stages of 256"),
    ("residual_f16", "residual quantisation, 2 stages of 256, float16 codebooks"),
)


def write(store: Path, n: int, rng: np.random.Generator) -> Path:
    """A snapshot with the five fields over the same n keys (each field hashes its own name)."""
    vectors = rng.standard_normal((n, DIM), dtype=np.float32)
    masks = rng.integers(0, K, size=(n, 2), dtype=np.uint8)
    with SnapshotWriter(store, source="bench.kinds") as w:
        for name, _ in KINDS:
            keys = generate_keys(0, n, field=name)
            if name == "dense":
                w.add_dense_field(name, keys, vectors)
            elif name == "dense_f16":
                w.add_quantised_field(name, keys, vectors, "float16")
            elif name == "compressed":
                w.add_compressed_field(name, keys, rng.standard_normal((K, DIM), dtype=np.float32), masks[:, 0])
            elif name == "product":
                w.add_product_field(name, keys, rng.standard_normal((2, K, DIM // 2), dtype=np.float32), masks)
            else:
                w.add_residual_field(name, keys, rng.standard_normal((2, K, DIM), dtype=np.float32), masks,
                                     codebook_dtype="float16" if name == "residual_f16" else "float32")
        version = w.publish()
    return w.layout.snapshot_path(version)


def measure(n: int, tmp: Path, progress: Progress) -> list[list[str]]:
    rng = np.random.default_rng(0)
    progress.stage(f"n = {n:,}: writing the snapshot")
    snap = open_snapshot(write(tmp / f"s{n}", n, rng))
    engine = LookupEngine(snap)
    rows = []
    for unseen in (0.0, 0.5):
        methods = {}
        for name, _ in KINDS:
            # The same ids for every field; each field hashes them under its own name.
            _, ids = query_batches(np.random.default_rng(1), n, unseen, BATCHES)
            batches = hash_ids(ids.reshape(-1), name).reshape(ids.shape)
            methods[name] = (lambda q, f=name: engine.lookup_field(f, q), batches)
        progress.stage(f"n = {n:,}, {unseen:.0%} unseen: timing")
        times = ns_per_id(methods, progress=progress)
        peer = times["dense"][0]
        for name, label in KINDS:
            fp = field_footprint(snap.fields[name])
            med, best = times[name]
            rows.append([f"{n:,}", f"{unseen:.0%}", label, f"{fp.serving_bytes / n:.2f}", f"{med:.1f} ({best:.1f})",
                         f"{med / peer:.2f}x"])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    ap.add_argument("--results", default="kinds", help="bench/results/<name>.md")
    a = ap.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",")]
    report = Report(a.results, "Lookup cost of each field kind", modules=("numpy", "numba", "zarr"))
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmp, Progress() as progress:
        for n in sizes:
            rows += measure(n, Path(tmp), progress)
    report.section(f"engine lookup_field, {BATCH}-id batches, mapped snapshot", markdown_table(
        ["features", "unseen ids", "field kind", "bytes a feature (with key index)", "ns/id median (best)", "vs float32 table"],
        rows))
    report.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
