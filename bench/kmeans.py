"""k-means: saec against scikit-learn and faiss on the same data, and assignment speed.

    python -m bench.kmeans            # 1e5 and 1e6 vectors, lengths 9 and 17, k=100
    python -m bench.kmeans --quick    # 2e4 and 1e5 vectors, fewer repeats

Data: ``saec.synthetic.clustered_vectors``, rows around 200 centres with heavy-tailed
cluster sizes. Every method gets the same rows, k, iteration cap and tolerance, and its
objective is computed the same way (inertia of its centroids over all rows). Times are
the best of ``--repeat`` runs: other work on the machine only ever adds time.

Peers, skipped when not importable:
- scikit-learn ``KMeans`` (Lloyd, greedy k-means++, n_init=1);
- faiss ``Kmeans`` with its own start (random rows) and, to compare Lloyd alone at an
  equal start, from saec's k-means++ centroids (init time excluded there). faiss is told
  to train on every row (it subsamples to 256 rows a centroid by default).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from bench._report import Report, markdown_table
from saec.compress import default_chunk_rows, kmeans, nearest_centroid
from saec.compress.assign import default_threads
from saec.compress.init import kmeans_plusplus_rows
from saec.progress import Progress
from saec.synthetic import clustered_vectors


def table(n: int, dim: int, seed: int) -> npt.NDArray[np.float32]:
    """float32 (n, dim) clustered rows, the same for every method."""
    return clustered_vectors(n, dim, np.random.default_rng([seed, n, dim]))


def best_of(repeat: int, run: Callable[[], Any]) -> tuple[float, Any]:
    """Fastest wall time of ``repeat`` runs, and the last run's result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - started)
    return best, out


def objective(x: npt.NDArray[np.float32], centroids: npt.NDArray[np.float32]) -> float:
    """Sum of squared distances of every row to its nearest centroid, in float64."""
    _, sqdist = nearest_centroid(x, np.ascontiguousarray(centroids, dtype=np.float32))
    return float(sqdist.sum(dtype=np.float64))


def peers() -> dict[str, Any]:
    found: dict[str, Any] = {}
    try:
        import sklearn.cluster

        found["sklearn"] = sklearn.cluster
    except ImportError:
        pass
    try:
        import faiss

        found["faiss"] = faiss
    except ImportError:
        pass
    return found


def kmeans_rows(
    x: npt.NDArray[np.float32], k: int, args: argparse.Namespace, repeat: int, found: dict[str, Any]
) -> list[list[str]]:
    """One row a method: seconds, iterations, inertia, ratios against saec."""
    n, dim = x.shape
    results: list[tuple[str, float, int | str, float]] = []

    t, r = best_of(repeat, lambda: kmeans(x, k, seed=args.seed, max_iter=args.max_iter, tol=args.tol))
    results.append(("saec kmeans (k-means++)", t, r.n_iter, r.inertia))
    t1, r1 = best_of(
        repeat,
        lambda: kmeans(x, k, seed=args.seed, max_iter=args.max_iter, tol=args.tol, threads=1),
    )
    results.append(("saec kmeans, threads=1", t1, r1.n_iter, r1.inertia))

    if "sklearn" in found:
        km = found["sklearn"].KMeans
        t, fitted = best_of(
            repeat,
            lambda: km(
                n_clusters=k, init="k-means++", n_init=1, max_iter=args.max_iter, tol=args.tol,
                random_state=args.seed,
            ).fit(x),
        )
        results.append(("scikit-learn KMeans", t, int(fitted.n_iter_), objective(x, fitted.cluster_centers_)))
    if "faiss" in found:
        faiss = found["faiss"]

        def train(start: npt.NDArray[np.float32] | None) -> Any:
            model = faiss.Kmeans(
                dim, k, niter=args.max_iter, seed=args.seed, max_points_per_centroid=n // k + 1,
                verbose=False,
            )
            model.train(x, init_centroids=start)
            return model

        t, model = best_of(repeat, lambda: train(None))
        results.append(("faiss Kmeans (random start)", t, args.max_iter, objective(x, model.centroids)))
        rng = np.random.default_rng(args.seed)
        start = x[kmeans_plusplus_rows(x - x.mean(axis=0), k, rng)]
        t, model = best_of(repeat, lambda: train(start))
        results.append(
            ("faiss Kmeans from saec's k-means++ start (init not timed)", t, args.max_iter,
             objective(x, model.centroids))
        )

    base_t, base_inertia = results[0][1], results[0][3]
    return [
        [f"{n:,}", dim, name, f"{t:.2f}", iters, f"{inertia:,.0f}", f"{t / base_t:.2f}x",
         f"{inertia / base_inertia:.4f}"]
        for name, t, iters, inertia in results
    ]


def init_rows(
    x: npt.NDArray[np.float32], k: int, seed: int, repeat: int, found: dict[str, Any]
) -> list[list[str]]:
    """k-means++ seeding alone: saec's numpy version against scikit-learn's."""
    n, dim = x.shape
    shifted = x - x.mean(axis=0)
    t, rows = best_of(repeat, lambda: kmeans_plusplus_rows(shifted, k, np.random.default_rng(seed)))
    out = [[f"{n:,}", dim, "saec kmeans_plusplus_rows", f"{t:.3f}", f"{objective(x, x[rows]):,.0f}"]]
    if "sklearn" in found:
        t, (centres, _) = best_of(
            repeat, lambda: found["sklearn"].kmeans_plusplus(x, k, random_state=seed)
        )
        out.append([f"{n:,}", dim, "scikit-learn kmeans_plusplus", f"{t:.3f}", f"{objective(x, centres):,.0f}"])
    return out


def assignment_rows(
    n: int, dims: list[int], k: int, seed: int, repeat: int, chunks: list[int | None],
    progress: Progress | None = None,
) -> list[list[str]]:
    """ns/row of nearest_centroid over n rows, by dim, threads and chunk size (a progress step a dim)."""
    out = []
    for dim in dims:
        x = table(n, dim, seed)
        centroids = x[np.random.default_rng(seed).choice(n, k, replace=False)]
        for threads in (default_threads(), 1):
            for chunk in chunks:
                t, _ = best_of(
                    repeat,
                    lambda x=x, c=centroids, chunk=chunk, threads=threads: nearest_centroid(
                        x, c, chunk_rows=chunk, threads=threads
                    ),
                )
                rows = f"{chunk:,}" if chunk else f"default ({default_chunk_rows(k):,})"
                out.append([dim, k, threads, rows, f"{t / n * 1e9:.1f}"])
        if progress is not None:
            progress.step(f"dim {dim}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=float, nargs="+", default=[1e5, 1e6])
    ap.add_argument("--dims", type=int, nargs="+", default=[9, 17])
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--max-iter", type=int, default=50)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best counts")
    ap.add_argument("--assign-rows", type=float, default=4e6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="2e4 and 1e5 vectors, 1 repeat")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.repeat, args.assign_rows = [2e4, 1e5], 1, 1e6
    found = peers()
    report = Report(
        "kmeans" + ("_quick" if args.quick else ""),
        "k-means: saec against scikit-learn and faiss",
        modules=("numpy", "sklearn", "faiss"),
    )

    progress = Progress()
    progress.stage("k-means and k-means++ seeding", len(args.sizes) * len(args.dims))
    rows: list[list[str]] = []
    seeding: list[list[str]] = []
    for size in args.sizes:
        n = int(size)
        for dim in args.dims:
            x = table(n, dim, args.seed)
            # Fewer repeats at the largest size: a scikit-learn fit there takes seconds.
            repeat = args.repeat if n <= 200_000 else max(1, args.repeat - 1)
            seeding += init_rows(x, args.k, args.seed, repeat, found)
            rows += kmeans_rows(x, args.k, args, repeat, found)
            progress.step(f"{n:,} x {dim}")
    n = int(args.assign_rows)
    progress.stage(f"nearest-centroid assignment, {n:,} rows", len(args.dims))
    assignment = assignment_rows(n, args.dims, args.k, args.seed, args.repeat, [None, 4096, 16384, 65536], progress)
    progress.close()
    report.section(
        f"k-means, k={args.k}, max_iter={args.max_iter}, tol={args.tol}",
        markdown_table(
            ["vectors", "dim", "method", "seconds", "iterations", "inertia (all rows)",
             "time vs saec", "inertia vs saec"],
            rows,
        )
        + "\n\nfaiss runs every iteration (no tolerance); scikit-learn and saec stop at "
        "the same tolerance. Lower inertia is better.",
    )
    report.section(
        f"k-means++ seeding alone, k={args.k}",
        markdown_table(["vectors", "dim", "method", "seconds", "inertia of the seeds"], seeding),
    )
    report.section(
        f"Nearest-centroid assignment, {n:,} rows, k={args.k}",
        markdown_table(
            ["dim", "k", "threads", "chunk rows", "ns/row"],
            assignment,
        )
        + f"\n\nthreads={default_threads()} is the default (every usable CPU); threads=1 "
        "leaves the cores to OpenBLAS's own threads.",
    )
    report.write()


if __name__ == "__main__":
    main()
