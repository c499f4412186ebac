"""``saec demo``: a store holding one snapshot built from generated fields."""

from __future__ import annotations

import os
import time

import numpy as np

from saec.compress import CompressedField, compress_field
from saec.progress import Progress
from saec.store.hashing import hash_ids
from saec.store.writer import SnapshotWriter
from saec.synthetic import DEMO_FIELDS, generate_field


def build_demo(store: str | os.PathLike[str], *, seed: int = 0, k: int = 100, scale: float = 1.0, quiet: bool = False) -> str:
    """Generate the demo fields, compress those with at least 100*k features, publish.

    Every field's raw ids are the integers 0 .. n-1 (``saec.synthetic.DEMO_FIELDS``
    gives n), so small ids such as the README's examples are found in every field.

    Args:
        store: the store folder (created if missing).
        seed: seeds data and k-means.
        k: codebook size per compressed field.
        scale: multiplies every field's feature count (tests use small scales).
    Returns:
        The published version.
    """
    rng = np.random.default_rng(seed)
    with Progress(quiet=quiet) as progress, \
            SnapshotWriter(store, source=f"saec demo (seed {seed}, k {k}, scale {scale})") as writer:
        progress.stage(f"generating and compressing {len(DEMO_FIELDS)} fields", len(DEMO_FIELDS))
        for name, n, dim in DEMO_FIELDS:
            n = max(2, int(n * scale))
            started = time.perf_counter()
            g = generate_field(name, n, dim, rng)  # ids 0 .. n-1: the README's examples hit
            keys = hash_ids(g.ids, name)
            result = compress_field(g.vectors, g.counts, k=k, seed=seed, field=name)
            if isinstance(result, CompressedField):
                writer.add_compressed_field(
                    name, keys, result.codebook, result.masks, g.counts,
                    attrs={"init": result.init, "inertia": result.inertia, "clustered": result.clustered},
                )
                what = f"compressed to k={result.codebook.shape[0]}"
            else:
                writer.add_dense_field(name, keys, result.vectors, g.counts, attrs={"reason": result.reason})
                what = "dense"
            progress.note(f"{name:<12} ids 0..{n - 1:<9,} dim {dim:<3} {what:<20} {time.perf_counter() - started:6.2f} s")
            progress.step(name)
        progress.stage("publishing")
        return writer.publish()
