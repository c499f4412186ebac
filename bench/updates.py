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
- ``http``: ``saec serve`` (2 workers, ``--http-workers``) with an admin token; binary
  POST /admin/updates in batches of 10,000 from 1, 2 and 4 concurrent clients
  (``--http-clients``), each cell on a fresh copy of the store and a fresh server;
  updates per second and the server's CPU an update; and where one batch's time goes.
- ``fold``: ``saec fold``'s time for 1e6 pending updates on a 1e7-feature field.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._report import Report, markdown_table
from saec.progress import Progress
from saec.store.assign_index import PROBE_RECALL

# (k, dim) of the assign table; k-means at k = 65,536, dim 64 is beyond this machine's budget.
GRID = "256:16,256:64,1024:16,1024:64,4096:16,4096:64,16384:16,16384:64,65536:16"
QUERIES = 5_000
RECALL_PROMISE = 0.995
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "saec-bench" / "codebooks"


def _rate(n: int, fn, *args, repeat: int = 2) -> float:
    """Best items per second over ``repeat`` runs of ``fn(*args)`` handling ``n`` items."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t0)
    return n / best


def clustered_codebook(k: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A codebook of real shape and vectors held out from its training: k-means (``compress``,
    two Lloyd iterations from random rows, as far as this machine affords at k = 65,536) of
    ``2k`` rows of ``saec.synthetic.clustered_vectors``, and QUERIES more rows of the same
    distribution it never saw. Cached under ~/.cache/saec-bench/codebooks (minutes at k = 65,536)."""
    from saec.compress import compress_field
    from saec.synthetic import clustered_vectors

    path = CACHE / f"clustered-k{k}-d{dim}-s{seed}.npz"
    if path.exists():
        with np.load(path) as z:
            return z["codebook"], z["held_out"]
    # Two draws from one generator seed: the same cluster centres, different rows.
    train = clustered_vectors(2 * k, dim, np.random.default_rng(seed))
    held_out = clustered_vectors(QUERIES, dim, np.random.default_rng(seed))
    result = compress_field(train, None, k=k, top_n=None, min_factor=1, max_iter=2, init="random", seed=seed)
    codebook = result.codebook  # type: ignore[union-attr]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, codebook=codebook, held_out=held_out)
    return codebook, held_out


def test_queries(codebook: np.ndarray, held_out: np.ndarray, seed: int = 1) -> dict[str, np.ndarray]:
    """Vectors no choice looked at: the trainer's distribution (held out), 10x its norm,
    clusters the codebook never saw, uniform noise over a box around it."""
    from saec.synthetic import clustered_vectors

    rng = np.random.default_rng(1000 + seed)
    dim = codebook.shape[1]
    lo, hi = held_out.min(), held_out.max()
    return {
        "held out": held_out,
        "10x norm": held_out * np.float32(10),
        "other clusters": clustered_vectors(QUERIES, dim, rng, centers=50),
        "uniform": rng.uniform(lo, hi, size=(QUERIES, dim)).astype(np.float32),
    }


def part_assign(report: Report, grid: list[tuple[int, int]], progress: Progress) -> None:
    from saec.store.assign_index import (
        AUTO_MAX_EF,
        AUTO_MIN_K,
        M_RETRY,
        RETRY_ABOVE_EF,
        CentroidIndex,
        ExactSearch,
        M,
        build_hnsw,
        recall_at_1,
        resolve,
    )

    rows = []
    progress.stage("assign: k-means codebooks, stored HNSW index against the exact search", len(grid))
    for k, dim in grid:
        codebook, held_out = clustered_codebook(k, dim)
        built = build_hnsw(codebook)
        with tempfile.TemporaryDirectory() as tmp:
            import hashlib

            from saec.store.assign_index import load_hnsw

            path = Path(tmp) / "i.bin"
            built.data.tofile(path)
            loaded = load_hnsw(path, hashlib.sha256(built.data.tobytes()).hexdigest(), k, dim)
        hnsw = CentroidIndex(codebook, search="hnsw", hnsw=loaded, meta=built.meta)
        exact = ExactSearch(codebook)
        used = resolve("auto", k, built.meta)
        for kind, queries in test_queries(codebook, held_out).items():
            recall = recall_at_1(codebook, queries, hnsw.nearest(queries))
            again = float(np.mean(loaded.knn_query(queries, k=1)[1][:, 0] > hnsw.exact_beyond))
            exact_rate = _rate(queries.shape[0], exact.nearest, queries)
            hnsw_rate = _rate(queries.shape[0], hnsw.nearest, queries)
            rows.append((
                k, dim, f"{built.meta['seconds']:,.1f}", f"{built.data.nbytes / 2**20:.1f}",
                f"{built.meta['m']} (tried {', '.join(map(str, built.meta['m_tried']))})", built.meta["ef"],
                f"{built.meta['probe_recall']:.4f}", kind, f"{recall:.4f}", f"{100 * again:.1f}", f"{hnsw_rate:,.0f}", f"{exact_rate:,.0f}",
                "yes" if recall >= RECALL_PROMISE else "NO", used,
            ))
        progress.step(f"k={k} dim {dim}: ef {built.meta['ef']}, auto {used}")
    progress.close()
    report.section(
        "Nearest centroid: the snapshot's HNSW index (M and ef chosen at build, ef_construction=200) against the "
        "exact search, k-means codebooks of clustered data, vectors the build never saw",
        markdown_table(
            ["k", "dim", "build s", "index MiB", "M (rule)", "ef (rule)", "probe recall (worst kind)", "queries", "HNSW recall@1",
             "searched again exactly %", "HNSW assign/s", "exact assign/s", f">= {RECALL_PROMISE}", "auto uses"],
            rows,
        )
        + f"\n\n- both searches on every core ({os.cpu_count()}); {QUERIES:,} queries a kind; recall@1 counts a tie"
        " at the exact nearest distance as a hit"
        + f"\n- the M rule: M {M}, and M {M_RETRY} as well where M {M}'s ef was above {RETRY_ABOVE_EF}, kept if its ef"
        " was smaller (store.assign_index.build_hnsw)"
        + f"\n- the ef rule: the smallest ef reaching recall@1 {PROBE_RECALL} on each kind of a probe set made from the"
        " codebook alone (store.assign_index.probe_vectors), else the smallest reaching it on the probe's near kind"
        + "\n- HNSW answers farther from their centroid than the build's exact_beyond are searched again exactly"
        " (their share in 'searched again exactly'); recall and assign/s include that"
        + f"\n- auto: HNSW where k >= {AUTO_MIN_K:,} and the probe reached its target at an ef <= {AUTO_MAX_EF}, else exact",
    )


def part_lookup(report: Report, n: int, pending: int, progress: Progress) -> None:
    """Engine lookups of ids without updates, with no overlay and with ``pending`` updates."""
    from bench import keyindex as ki
    from saec.store.deltas import DeltaWriter, FieldDelta
    from saec.store.engine import LookupEngine
    from saec.store.overlay import Overlay
    from saec.store.snapshot import open_snapshot

    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="saec-bench-updates-") as tmp:
        progress.stage(f"lookup: writing the snapshot of {n:,} features")
        keys = ki.generate_keys(0, n)
        masks = rng.integers(0, ki.K, n, dtype=np.uint8)
        codebook = rng.standard_normal((ki.K, ki.DIM), dtype=np.float32)
        path = ki.write_snapshot(Path(tmp) / "store", keys, masks, codebook)
        del keys
        snap = open_snapshot(path)
        store = path.parent.parent
        progress.stage(f"lookup: appending {pending:,} updates (half new ids, half reassigned) as frames of 100,000")
        half = pending // 2
        upd_keys = np.concatenate([ki.generate_keys(n, n + half), ki.generate_keys(0, pending - half)])
        rng.shuffle(upd_keys)
        writer = DeltaWriter(store, snap.version)
        t0 = time.perf_counter()
        for s in range(0, pending, 100_000):
            k = upd_keys[s : s + 100_000]
            writer.append({ki.FIELD: FieldDelta(
                keys=k, vectors=rng.standard_normal((k.shape[0], ki.DIM), dtype=np.float32),
                masks=rng.integers(0, ki.K, k.shape[0], dtype=np.uint8))})
        append_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        overlay = Overlay(snap, str(writer.directory))
        open_s = time.perf_counter() - t0
        plain = LookupEngine(snap)
        over = LookupEngine(snap, overlay=overlay)
        # Ids without updates: stored ids above those reassigned, and unseen ids.
        stored = ki.hash_ids(rng.integers(pending, n, size=(ki.BATCHES, ki.BATCH)).reshape(-1), ki.FIELD).reshape(ki.BATCHES, ki.BATCH)
        unseen = ki.hash_ids(rng.integers(2 * n, 3 * n, size=(ki.BATCHES, ki.BATCH)).reshape(-1), ki.FIELD).reshape(ki.BATCHES, ki.BATCH)
        updated = upd_keys[rng.integers(0, pending, size=(ki.BATCHES, ki.BATCH))]
        methods = {}
        for label, q in (("stored, not updated", stored), ("unseen", unseen), ("updated (1/2 new, 1/2 reassigned)", updated)):
            methods[f"{label} | lookup_field, no updates"] = (lambda b: plain.lookup_field(ki.FIELD, b), q)
            methods[f"{label} | lookup_field, {pending:,} pending"] = (lambda b: over.lookup_field(ki.FIELD, b), q)
            methods[f"{label} | lookup(), no updates"] = (lambda b: plain.lookup({ki.FIELD: b}), q)
            methods[f"{label} | lookup(), {pending:,} pending"] = (lambda b: over.lookup({ki.FIELD: b}), q)
        progress.stage(f"lookup: timing {len(methods)} methods", total=ki.ROUNDS)
        times = ki.ns_per_id(methods, progress=progress)
        t0 = time.perf_counter()
        for _ in range(10_000):
            overlay.refresh()
        refresh_us = (time.perf_counter() - t0) / 10_000 * 1e6
        progress.close()
        rows = []
        for label in ("stored, not updated", "unseen", "updated (1/2 new, 1/2 reassigned)"):
            for call in ("lookup_field", "lookup()"):
                base = times[f"{label} | {call}, no updates"]
                for suffix in ("no updates", f"{pending:,} pending"):
                    med, best = times[f"{label} | {call}, {suffix}"]
                    rows.append((label, f"{call}, {suffix}", f"{med:.1f} ({best:.1f})",
                                 f"{med - base[0]:+.1f} ({best - base[1]:+.1f})"))
        fo = overlay.fields[ki.FIELD]
        report.section(
            f"Lookup cost with pending updates: {n:,} features (k={ki.K}, dim {ki.DIM}), batches of {ki.BATCH}",
            markdown_table(["ids", "engine call", "ns/id median (best)", "vs no updates: median (best)"], rows)
            + f"\n\n- appending {pending:,} updates in frames of 100,000 (fsync each): {append_s:.2f} s"
            + f"\n- opening the overlay (reading every frame): {open_s:.2f} s; overlay memory {fo.nbytes / 2**20:.1f} MiB"
            f" for {fo.n:,} new ids and {fo.reassigned:,} reassigned rows (copied pages included)"
            + f"\n- the per-lookup check for new frames when nothing changed (one stat): {refresh_us:.2f} us"
            + "\n- 'no updates' is the engine with no overlay: lookup_field is the figure bench.keyindex reports as"
            " 'engine lookup_field, mapped'; lookup() adds the request check and, with an overlay, the stat of"
            " the segment. All rows take turns in each pass.",
        )


def _bench_store(root: Path, n: int, fields: dict[str, tuple[int, int]], seed: int = 0) -> str:
    """A store of compressed fields name -> (k, dim), n features each, random masks."""
    from bench.keyindex import generate_keys
    from saec.store.writer import SnapshotWriter

    rng = np.random.default_rng(seed)
    with SnapshotWriter(root, source="bench.updates") as w:
        for name, (k, dim) in fields.items():
            masks = rng.integers(0, k, n).astype(np.uint8 if k <= 256 else np.uint16)
            w.add_compressed_field(name, generate_keys(0, n, name), rng.standard_normal((k, dim), dtype=np.float32), masks)
        return w.publish()


HTTP_FIELDS = {"user": (256, 16), "small": (4096, 64), "item": (65_536, 16)}
HTTP_ROWS = 200_000
BATCH = 10_000
# Concurrent clients of the HTTP cells, each on a fresh server.
CLIENTS = (1, 2, 4)


def _http_store(root: Path, progress: Progress) -> dict[str, np.ndarray]:
    """A store of the HTTP_FIELDS, k-means codebooks of clustered data (their stored HNSW
    indexes built at publish, as by saec compress); returns each field's held-out vectors."""
    from bench.keyindex import generate_keys
    from saec.store.writer import SnapshotWriter

    rng = np.random.default_rng(4)
    held = {}
    with SnapshotWriter(root, source="bench.updates http") as w:
        for name, (k, dim) in HTTP_FIELDS.items():
            progress.stage(f"http: field {name} (k={k:,}, dim {dim}): codebook and its HNSW index")
            codebook, held[name] = clustered_codebook(k, dim)
            masks = rng.integers(0, k, HTTP_ROWS).astype(np.uint8 if k <= 256 else np.uint16)
            w.add_compressed_field(name, generate_keys(0, HTTP_ROWS, name), codebook, masks)
        w.publish()
    return held


def _profile(root: Path, name: str, vectors: np.ndarray, search: str, next_id: int) -> dict[str, float]:
    """Where one batch's time goes, in one process: parse, check, assign, frame, append + fsync."""
    from saec.server.admin import parse_updates
    from saec.store.deltas import FieldDelta, encode_payload
    from saec.store.live import LiveEngine
    from saec.store.updates import Updater
    from saec.wire import UPDATES_MEDIA_TYPE, encode_updates

    live = LiveEngine(root, verify=False)
    assert live.engine is not None
    up = Updater(root, live.engine, search=search)  # type: ignore[arg-type]
    from saec.store.hashing import hash_ids

    # One batch first, so that nothing below is a first call (numba compiles, pools start).
    up.apply({name: (hash_ids(np.arange(next_id, next_id + vectors.shape[0]), name), vectors)})
    next_id += vectors.shape[0]
    assert live.engine.overlay is not None
    live.engine.overlay.refresh()
    ids = np.arange(next_id, next_id + vectors.shape[0])

    body = encode_updates({name: (hash_ids(ids, name), vectors)}, hashed=True)
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    fields = parse_updates(body, UPDATES_MEDIA_TYPE)
    out["parse"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    prepared = up.prepare(fields)
    out["check"] = time.perf_counter() - t0
    f = live.engine.field(name)
    index = up.indexes.get(name, f.codebook, up.search, up.ef)
    keys, vecs = prepared.fields[name]
    t0 = time.perf_counter()
    assignment = index.assign(vecs)
    out[f"assign ({index.method})"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    payload = encode_payload({name: FieldDelta(keys=keys, vectors=vecs, masks=assignment.masks.astype(f.masks.dtype))})
    out["frame"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with up.writer.lock():
        up.writer.append_locked(payload)
    out["append + fsync"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert live.engine.overlay is not None
    live.engine.overlay.refresh()
    out["overlay refresh"] = time.perf_counter() - t0
    return out


def part_http(report: Report, progress: Progress, seconds: float = 6.0, fields: tuple[str, ...] = tuple(HTTP_FIELDS),
              clients_grid: tuple[int, ...] = CLIENTS, workers: int = 2) -> None:
    import threading

    from bench.http import serve
    from saec.clients import SaecClient

    token = "bench-token"
    rows, profile_rows = [], []
    next_id = [10**12]
    id_lock = threading.Lock()

    def ids_for(n: int) -> np.ndarray:
        with id_lock:
            start = next_id[0]
            next_id[0] += n
        return np.arange(start, start + n)

    with tempfile.TemporaryDirectory(prefix="saec-bench-http-") as tmp:
        root = Path(tmp) / "store"
        held = _http_store(root, progress)
        plans = [(search, tuple(n for n in names if n in fields))
                 for search, names in (("auto", ("user", "small")), ("hnsw", ("item",)))]
        plans = [(search, names) for search, names in plans if names]
        for search, names in plans:
            for name in names:
                batch = held[name][np.arange(BATCH) % held[name].shape[0]]  # BATCH rows, cycling the held-out ones
                prof = _profile(root, name, batch, search, ids_for(2 * BATCH)[0])
                total = sum(prof.values())
                profile_rows.append((name, *HTTP_FIELDS[name], search,
                                     ", ".join(f"{step} {sec * 1e3:,.1f} ms" for step, sec in prof.items()),
                                     f"{batch.shape[0] / total:,.0f}"))
            progress.stage(f"http: saec serve, {workers} worker(s), SAEC_ASSIGN_SEARCH={search}")
            for name in names:
                k, dim = HTTP_FIELDS[name]
                pool = held[name]
                # Each cell on a fresh copy of the store and a fresh server: every cell starts
                # with nothing pending, so clients are compared with clients, not with how
                # many updates the cells before them left in the overlay.
                for clients in clients_grid:
                    cell_root = Path(tmp) / f"cell-{name}-{clients}"
                    shutil.copytree(root, cell_root / "store", symlinks=True)
                    env = {"SAEC_ADMIN_TOKEN": token, "SAEC_RELOAD_INTERVAL": "0",
                           "PROMETHEUS_MULTIPROC_DIR": str(cell_root / "metrics"), "SAEC_ASSIGN_SEARCH": search}
                    with serve(cell_root / "store", workers, cell_root, env) as server:
                        # Warm both workers (first-call compiles, thread pools) before timing:
                        # a batch on each of eight fresh connections.
                        for _ in range(8):
                            with SaecClient(server.url, timeout=300) as warm:
                                warm.update({name: (ids_for(BATCH), pool[np.arange(BATCH) % pool.shape[0]])}, token=token)
                        counts = [0] * clients
                        searches: set[str] = set()
                        stop_at = time.perf_counter() + seconds

                        def run(slot: int, name: str = name, pool: np.ndarray = pool, stop_at: float = stop_at,
                                counts: list[int] = counts, searches: set[str] = searches) -> None:
                            rng = np.random.default_rng(slot)
                            with SaecClient(server.url, timeout=300) as client:
                                while time.perf_counter() < stop_at:
                                    vec = pool[rng.integers(0, pool.shape[0], BATCH)]
                                    ans = client.update({name: (ids_for(BATCH), vec)}, token=token)
                                    searches.add(ans["fields"][name]["search"])
                                    counts[slot] += BATCH

                        cpu0, client0 = server.cpu_seconds(), time.process_time()
                        started = time.perf_counter()
                        threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
                        for t in threads:
                            t.start()
                        for t in threads:
                            t.join()
                        elapsed = time.perf_counter() - started
                        cpu, client_cpu = server.cpu_seconds() - cpu0, time.process_time() - client0
                    shutil.rmtree(cell_root, ignore_errors=True)
                    rows.append((name, k, dim, search, "/".join(sorted(searches)), clients, f"{sum(counts):,}",
                                 f"{sum(counts) / elapsed:,.0f}", f"{100 * cpu / elapsed:.0f}%",
                                 f"{1e6 * cpu / max(1, sum(counts)):.1f}", f"{100 * client_cpu / elapsed:.0f}%"))
                    progress.note(f"{name}: {clients} client(s) {sum(counts) / elapsed:,.0f} updates/s")
    progress.close()
    report.section(
        f"HTTP updates: saec serve, {workers} worker(s), {HTTP_ROWS:,} features a field, binary POST /admin/updates, "
        f"batches of {BATCH:,}",
        markdown_table(["field", "k", "dim", "SAEC_ASSIGN_SEARCH", "search answered", "clients", "updates", "updates/s",
                        "server CPU", "server CPU µs/update", "client CPU"],
                       rows)
        + "\n\n- vectors drawn from the field's held-out rows (the distribution its codebook was trained on);"
        " each client sends batch after batch for the same time; each row on a fresh copy of the store and a fresh"
        " server (nothing pending at its start); the load is printed at the top; CPU columns are user + system"
        " time over wall time (100% = one core of the two): the clients (one process, a thread each) run on the"
        " same cores as the server"
        + "\n\nWhere one batch's time goes (one process, the second batch, before the server runs):\n\n"
        + markdown_table(["field", "k", "dim", "search", "steps", "updates/s"], profile_rows),
    )


def part_fold(report: Report, n: int, pending: int, progress: Progress) -> None:
    from bench.keyindex import generate_keys
    from saec.store.deltas import DeltaWriter, FieldDelta
    from saec.store.fold import fold
    from saec.store.layout import StoreLayout

    rng = np.random.default_rng(3)
    with tempfile.TemporaryDirectory(prefix="saec-bench-fold-") as tmp:
        root = Path(tmp) / "store"
        progress.stage(f"fold: writing {n:,} features and {pending:,} updates")
        base = _bench_store(root, n, {"user": (256, 16)})
        half = pending // 2
        keys = np.concatenate([generate_keys(n, n + half, "user"), generate_keys(0, pending - half, "user")])
        w = DeltaWriter(root, base)
        for s in range(0, pending, 100_000):
            k = keys[s : s + 100_000]
            w.append({"user": FieldDelta(k, rng.standard_normal((k.shape[0], 16), dtype=np.float32),
                                         rng.integers(0, 256, k.shape[0]).astype(np.uint8))})
        progress.stage("fold: folding")
        result = fold(root)
        assert StoreLayout(root).current() == result.version
        progress.close()
    r = result.fields["user"]
    report.section(
        f"saec fold: {n:,} features (k=256, dim 16) + {pending:,} pending updates (half new ids, half reassigned)",
        markdown_table(
            ["rows before", "updated ids", "reassigned", "rows after", "frames", "seconds"],
            [(f"{r['rows_before']:,}", f"{r['updates']:,}", f"{r['reassigned']:,}", f"{r['rows_after']:,}",
              result.frames, f"{result.seconds:.2f}")],
        ),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.updates", description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="assign,lookup,http,fold")
    parser.add_argument("--grid", default=GRID, help="k:dim pairs of the assign part")
    parser.add_argument("--http-seconds", dest="http_seconds", type=float, default=6.0)
    parser.add_argument("--http-fields", dest="http_fields", default=",".join(HTTP_FIELDS),
                        help=f"fields of the http part, of {','.join(HTTP_FIELDS)}")
    parser.add_argument("--http-clients", dest="http_clients", default=",".join(map(str, CLIENTS)),
                        help="concurrent clients of the http part's cells, e.g. 1,4")
    parser.add_argument("--http-workers", dest="http_workers", type=int, default=2, help="saec serve --workers")
    parser.add_argument("--lookup-rows", type=int, default=10_000_000)
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--fold-rows", type=int, default=10_000_000)
    parser.add_argument("--no-write", action="store_true", help="print only; keep bench/results as it is")
    parser.add_argument("--results", default="updates", help="results file name: bench/results/<NAME>.md")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    report = Report(args.results, "Incremental updates", modules=("numpy", "hnswlib", "numba"))
    progress = Progress()
    if "lookup" in parts:
        part_lookup(report, args.lookup_rows, args.pending, progress)
    if "fold" in parts:
        part_fold(report, args.fold_rows, args.pending, progress)
    if "http" in parts:
        unknown = sorted(set(args.http_fields.split(",")) - set(HTTP_FIELDS))
        if unknown:
            parser.error(f"--http-fields: expected fields of {','.join(HTTP_FIELDS)}, got {','.join(unknown)}")
        part_http(report, progress, args.http_seconds, tuple(args.http_fields.split(",")),
                  tuple(int(c) for c in args.http_clients.split(",")), args.http_workers)
    if "assign" in parts:
        grid = [(int(k), int(d)) for k, d in (pair.split(":") for pair in args.grid.split(","))]
        part_assign(report, grid, progress)
    if not args.no_write:
        report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
