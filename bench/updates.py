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
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._report import Report, markdown_table
from saec.progress import Progress

KS = (256, 1024, 4096, 16_384, 65_536)
DIMS = (9, 16, 64)
EFS = (16, 32, 64, 128, 256)
QUERIES = 10_000
RECALL_TARGET = 0.995


def _rate(n: int, fn, *args, repeat: int = 2) -> float:
    """Best items per second over ``repeat`` runs of ``fn(*args)`` handling ``n`` items."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t0)
    return n / best


def part_assign(report: Report, ks: tuple[int, ...], dims: tuple[int, ...], progress: Progress) -> None:
    import hnswlib

    from saec.store.assign_index import EF_CONSTRUCTION, M, exact_nearest, squared_distances, uses_hnsw

    rng = np.random.default_rng(0)
    rows = []
    sweep = []
    progress.stage("assign: exact search against HNSW", len(ks) * len(dims))
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
                    break  # larger ef only costs more
            if chosen is None:
                chosen = (EFS[-1], recall, extra, rate)
            ef, recall, extra, rate = chosen
            if recall < RECALL_TARGET:
                winner = "exact (HNSW short of 0.995)"
            else:
                winner = "HNSW" if rate > exact_rate else "exact"
            used = "HNSW" if uses_hnsw(k, dim) else "exact"
            rows.append((
                k, dim, f"{build * 1000:,.0f}", f"{exact_recall:.4f}", f"{exact_rate:,.0f}", ef, f"{recall:.4f}",
                f"{extra:.4f}", f"{rate:,.0f}", f"{rate / exact_rate:.2f}x", winner, used,
            ))
            progress.step(f"k={k} dim {dim}: {winner}")
    progress.close()
    report.section(
        "Nearest centroid: exact BLAS search against HNSW at the smallest ef with recall@1 >= 0.995",
        markdown_table(
            ["k", "dim", "HNSW build ms", "exact recall@1", "exact assign/s", "ef", "HNSW recall@1",
             "extra error %", "HNSW assign/s", "HNSW / exact", "faster", "saec uses"],
            rows,
        ),
    )
    report.section(
        "HNSW ef sweep (M=16, ef_construction=200, one thread; stops at the first ef reaching 0.995)",
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


def _pid(client, metrics_dir: str) -> int:
    """The pid of the worker at the other end of this keep-alive connection: the one whose
    own count of /healthz requests (its file in the shared metrics directory) goes up."""
    from saec.server.metrics_dir import counts_by_pid

    before = counts_by_pid(metrics_dir, "saec_requests_total", '"/healthz"')
    client.get("/healthz")
    after = counts_by_pid(metrics_dir, "saec_requests_total", '"/healthz"')
    return max(after, key=lambda pid: after[pid] - before.get(pid, 0.0))


def part_http(report: Report, progress: Progress) -> None:
    import httpx

    from bench.http import serve
    from saec.clients import SaecClient
    from saec.store.hashing import hash_ids

    token = "bench-token"
    fields = {"user": (256, 16), "item": (16_384, 16)}
    rng = np.random.default_rng(2)
    rows = []
    with tempfile.TemporaryDirectory(prefix="saec-bench-http-") as tmp:
        root = Path(tmp) / "store"
        progress.stage("http: writing the store")
        _bench_store(root, 1_000_000, fields)
        progress.stage("http: first updates and the HNSW index")
        metrics_dir = str(Path(tmp) / "metrics")
        env = {"SAEC_ADMIN_TOKEN": token, "SAEC_RELOAD_INTERVAL": "0", "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
        with serve(root, 2, Path(tmp), env) as server, SaecClient(server.url, timeout=120) as client:
            next_id = 10**12
            first = {}
            for name, (_, dim) in fields.items():
                t0 = time.perf_counter()
                client.update({name: (np.array([next_id]), rng.standard_normal((1, dim), dtype=np.float32))}, token=token)
                first[name] = time.perf_counter() - t0
                next_id += 1
            # The HNSW index of the large codebook builds in the background (exact search
            # meanwhile); time until this connection's worker answers with it.
            t0 = time.perf_counter()
            while True:
                ans = client.update({"item": (np.array([next_id]), rng.standard_normal((1, 16), dtype=np.float32))}, token=token)
                next_id += 1
                if ans["fields"]["item"]["search"] == "hnsw":
                    break
                time.sleep(0.2)
            first["item HNSW ready after"] = time.perf_counter() - t0
            progress.stage("http: update batches", 2 * len(fields))
            for batch in (1_000, 10_000):
                for name, (k, dim) in fields.items():
                    lat = []
                    started = time.perf_counter()
                    while time.perf_counter() - started < 8 or len(lat) < 5:
                        ids = np.arange(next_id, next_id + batch)
                        next_id += batch
                        vec = rng.standard_normal((batch, dim), dtype=np.float32)
                        t0 = time.perf_counter()
                        ans = client.update({name: (ids, vec)}, token=token)
                        lat.append(time.perf_counter() - t0)
                    total = time.perf_counter() - started
                    rows.append((batch, name, k, dim, ans["fields"][name]["search"], len(lat),
                                 f"{batch * len(lat) / total:,.0f}", f"{np.median(lat) * 1e3:.1f}"))
                    progress.step(f"{batch:,} ids of {name}")
            progress.stage("http: delay until the other worker finds an update", 50)
            # Delay from the 200 to the vector being found on the *other* worker.
            delays, first_try = [], 0
            with httpx.Client(base_url=server.url, timeout=30) as writer:
                writer_pid = _pid(writer, metrics_dir)
                headers = {"authorization": f"Bearer {token}", "content-type": "application/x-saec-updates"}
                from saec.wire import encode_updates

                trials = 0
                while len(delays) < 50 and trials < 500:
                    trials += 1
                    key = hash_ids(np.array([next_id]), "user")
                    next_id += 1
                    body = encode_updates({"user": (key, rng.standard_normal((1, 16), dtype=np.float32))}, hashed=True)
                    # Open the reader's connection first, so the 200 -> lookup time holds no connect.
                    reader = httpx.Client(base_url=server.url, timeout=30)
                    if _pid(reader, metrics_dir) == writer_pid:
                        reader.close()
                        continue
                    r = writer.post("/admin/updates", content=body, headers=headers)
                    acked = time.perf_counter()
                    assert r.status_code == 200, r.text
                    tries = 0
                    while True:
                        tries += 1
                        doc = reader.post("/lookup", json={"fields": {"user": [int(key[0])]}, "hashed": True}).json()
                        if doc["fields"]["user"]["found"][0]:
                            break
                    delays.append(time.perf_counter() - acked)
                    first_try += tries == 1
                    reader.close()
                    progress.step()
    progress.close()
    report.section(
        "HTTP updates: saec serve, 2 workers, 1e6 features per field, binary POST /admin/updates, one client",
        markdown_table(["batch", "field", "k", "dim", "search", "requests", "updates/s", "p50 ms"], rows)
        + "\n\n- first update of a field after start in one worker, and the wait for its HNSW index: "
        + ", ".join(f"{n} {s * 1e3:,.0f} ms" for n, s in first.items())
        + f"\n- from the 200 of an update to the vector found by a lookup on the other worker ({len(delays)} trials): "
        f"median {np.median(delays) * 1e3:.2f} ms, max {np.max(delays) * 1e3:.2f} ms (that is one lookup round trip); "
        f"found by the first lookup in {first_try} of {len(delays)}",
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
    parser.add_argument("--ks", default=",".join(map(str, KS)))
    parser.add_argument("--dims", default=",".join(map(str, DIMS)))
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
        part_http(report, progress)
    if "assign" in parts:
        part_assign(report, tuple(int(x) for x in args.ks.split(",")), tuple(int(x) for x in args.dims.split(",")),
                    progress)
    if not args.no_write:
        report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
