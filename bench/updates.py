"""Incremental updates: nearest-centroid search, lookup cost with pending updates, HTTP.

    python -m bench.updates                      # every part, 1e7 features for the lookup part
    python -m bench.updates --parts assign       # only the HNSW / exact table
    python -m bench.updates --lookup-rows 100000000   # the lookup part at 1e8 (~8 GiB RAM)

Parts:

- ``assign``: for k = 256 ... 65,536 and dim 9, 16, 64, a random normal codebook and
  10,000 queries from the same distribution; the exact search (``assign_index.exact_nearest``,
  one BLAS product) against hnswlib (M=16, ef_construction=200) at several ef. Recall@1 is
  against a float64 argmin; "extra error" is what HNSW's misses add to the summed squared
  distance (quantisation error) of the batch, in percent. The chosen ef is the smallest
  reaching recall@1 >= 0.995.
- ``lookup``: a compressed field of N features (k=100, dim 9, as ``bench.keyindex``);
  engine lookups of 4096 stored ids without an overlay and with 1e6 pending updates of
  other keys (half new, half reassignments), alternating passes; and the cost of the
  per-lookup check for new frames when nothing changed.
- ``http``: ``saec serve`` with 2 workers and an admin token; POST /admin/updates in
  batches of 1,000 and 10,000 (binary), updates per second; then the delay from a 200 to
  the vector being found through lookups that the other worker answers.
- ``fold``: ``saec fold``'s time for 1e6 pending updates on a 1e7-feature field.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from bench._report import Report, markdown_table

KS = (256, 1024, 4096, 16_384, 65_536)
DIMS = (9, 16, 64)
EFS = (16, 32, 64, 128, 256)
QUERIES = 10_000
RECALL_TARGET = 0.995


def _rate(n: int, fn, *args, repeat: int = 3) -> float:
    """Best items per second over ``repeat`` runs of ``fn(*args)`` handling ``n`` items."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t0)
    return n / best


def part_assign(report: Report, ks: tuple[int, ...], dims: tuple[int, ...]) -> None:
    import hnswlib

    from saec.store.assign_index import EF_CONSTRUCTION, M, exact_nearest, squared_distances

    rng = np.random.default_rng(0)
    rows = []
    sweep = []
    for k in ks:
        for dim in dims:
            codebook = rng.normal(size=(k, dim)).astype(np.float32)
            queries = rng.normal(size=(QUERIES, dim)).astype(np.float32)
            truth = _argmin64(codebook, queries)
            best_d = squared_distances(codebook, queries, truth).astype(np.float64)
            exact = exact_nearest(codebook, queries)
            exact_recall = float((exact == truth).mean())
            exact_rate = _rate(QUERIES, exact_nearest, codebook, queries)
            t0 = time.perf_counter()
            index = hnswlib.Index(space="l2", dim=dim)
            index.init_index(max_elements=k, ef_construction=EF_CONSTRUCTION, M=M, random_seed=0)
            index.add_items(codebook, np.arange(k), num_threads=1)
            build = time.perf_counter() - t0
            chosen = None
            for ef in EFS:
                index.set_ef(ef)
                labels = index.knn_query(queries, k=1, num_threads=1)[0][:, 0].astype(np.int64)
                recall = float((labels == truth).mean())
                d = squared_distances(codebook, queries, labels).astype(np.float64)
                extra = 100 * (d.sum() - best_d.sum()) / best_d.sum()
                rate = _rate(QUERIES, _hnsw_query, index, queries)
                sweep.append((k, dim, ef, f"{recall:.4f}", f"{extra:.4f}", f"{rate:,.0f}"))
                if chosen is None and recall >= RECALL_TARGET:
                    chosen = (ef, recall, extra, rate)
            if chosen is None:
                chosen = (EFS[-1], recall, extra, rate)
            ef, recall, extra, rate = chosen
            winner = "HNSW" if rate > exact_rate else "exact"
            rows.append((
                k, dim, f"{build * 1000:,.0f}", f"{exact_recall:.4f}", f"{exact_rate:,.0f}", ef, f"{recall:.4f}",
                f"{extra:.4f}", f"{rate:,.0f}", f"{rate / exact_rate:.2f}x", winner,
            ))
            print(rows[-1], flush=True)
    report.section(
        "Nearest centroid: exact BLAS search against HNSW at the smallest ef with recall@1 >= 0.995",
        markdown_table(
            ["k", "dim", "HNSW build ms", "exact recall@1", "exact assign/s", "ef", "HNSW recall@1",
             "extra error %", "HNSW assign/s", "HNSW / exact", "faster"],
            rows,
        ),
    )
    report.section(
        "HNSW ef sweep (M=16, ef_construction=200, one thread)",
        markdown_table(["k", "dim", "ef", "recall@1", "extra error %", "assign/s"], sweep),
    )


def _hnsw_query(index, queries: np.ndarray) -> None:
    index.knn_query(queries, k=1, num_threads=1)


def _argmin64(codebook: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """float64 argmin in blocks (the reference the recall is measured against)."""
    c = codebook.astype(np.float64)
    norms = (c * c).sum(1)
    out = np.empty(queries.shape[0], np.int64)
    step = max(1, (1 << 22) // c.shape[0])
    for s in range(0, queries.shape[0], step):
        q = queries[s : s + step].astype(np.float64)
        out[s : s + step] = (norms - 2 * q @ c.T).argmin(1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.updates", description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="assign,lookup,http,fold")
    parser.add_argument("--ks", default=",".join(map(str, KS)))
    parser.add_argument("--dims", default=",".join(map(str, DIMS)))
    parser.add_argument("--lookup-rows", type=int, default=10_000_000)
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--no-write", action="store_true", help="print only; keep bench/results as it is")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    report = Report("updates", "Incremental updates", modules=("numpy", "hnswlib", "numba"))
    if "assign" in parts:
        part_assign(report, tuple(int(x) for x in args.ks.split(",")), tuple(int(x) for x in args.dims.split(",")))
    if not args.no_write:
        report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
