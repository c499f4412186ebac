"""Key index and engine lookup: ns per id, bytes per feature, false matches.

    python -m bench.keyindex            # 1e6 and 1e7 features
    python -m bench.keyindex --large    # and 1e8 (about 7 GiB of RAM at the peak)

For each size it hashes ids 0..n-1 with saec-hash-v1, builds the key index, writes a
compressed field (k=100, dim 9, random masks and codebook, no counts) with
SnapshotWriter into a temporary store and opens it by memory map, as the server does.
Then it times lookups of 4096-id batches: the numba and numpy probes of
``KeyIndex.lookup``, the full ``LookupEngine.lookup_field`` (probe and codebook
gather), and peers doing the same job (np.searchsorted over the sorted uint64 keys,
a Python dict at 1e6 only) in the same run. Query batches are drawn before any
timing; each timing pass walks all of them once, so a batch's cache lines are cold
again when it comes round; the figure is the median pass over several, the methods
taking turns.

The page cache is warm throughout: the snapshot was just written. Cold-open figures
are those of a process opening a snapshot whose files are cached, not of a cold disk.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import resource
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench._report import Report, markdown_table
from saec.progress import Progress
from saec.store import keyindex
from saec.store.engine import LookupEngine
from saec.store.footprint import field_footprint
from saec.store.hashing import hash_ids
from saec.store.snapshot import Snapshot, open_snapshot
from saec.store.writer import SnapshotWriter

FIELD = "bench"
BATCH = 4096
K, DIM = 100, 9
SIZES = (1_000_000, 10_000_000)
LARGE = 100_000_000
DICT_MAX = 1_000_000
# 256 batches of 4096 ids touch ~1M random cache lines: several times the 32 MiB L3.
BATCHES = 256
ROUNDS = 9  # timing passes of every method, at most
UNSEEN_PROBES = 1 << 22
TARGET_NS = 100.0
TARGET_BYTES = 3.5
TARGET_FALSE = 0.001
# Peak RSS (build(), then the writer's own build while the first index is held) measured
# 0.86 GiB at 1e7 and 6.8 GiB at 1e8, ~73 bytes a feature; a size runs only if
# MemAvailable leaves a margin over that.
BYTES_NEEDED_PER_FEATURE = 110

Lookup = Callable[[npt.NDArray[np.uint64]], object]


def generate_keys(start: int, stop: int, field: str = FIELD, chunk: int = 1 << 22) -> npt.NDArray[np.uint64]:
    """saec-hash-v1 keys of the integer ids start..stop-1, hashed a chunk at a time.

    Returns:
        uint64 (stop - start,).
    """
    out = np.empty(stop - start, dtype=np.uint64)
    for s in range(start, stop, chunk):
        e = min(stop, s + chunk)
        out[s - start : e - start] = hash_ids(np.arange(s, e, dtype=np.int64), field)
    return out


def query_batches(
    rng: np.random.Generator, n: int, unseen: float, batches: int = BATCHES
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
    """Random ids, a fraction ``unseen`` of them from n..2n-1 (never stored).

    Returns:
        uint64 (batches, BATCH) keys and int64 (batches, BATCH) raw ids.
    """
    ids = rng.integers(0, n, size=(batches, BATCH), dtype=np.int64)
    ids[rng.random(ids.shape) < unseen] += n
    keys = hash_ids(ids.reshape(-1), FIELD).reshape(ids.shape)
    return keys, ids


def ns_per_id(
    methods: dict[str, tuple[Lookup, npt.NDArray[np.uint64]]], repeats: int = ROUNDS, budget: float = 30.0,
    progress: Progress | None = None,
) -> dict[str, tuple[float, float]]:
    """Median and best over passes of the time to look up every batch once, per id.

    Rounds interleave the methods (one pass of each, in turn), so that load from other
    work on the machine falls on all of them alike. At least 3 rounds, at most
    ``repeats``; no round starts after ``budget`` seconds.

    Args:
        methods: name -> (lookup of one batch, uint64 (batches, BATCH) keys).
        progress: gets a step a round.
    Returns:
        name -> (median, best) ns per id.
    """
    for fn, batches in methods.values():
        fn(batches[0])
    samples: dict[str, list[float]] = {name: [] for name in methods}
    started = time.perf_counter()
    for r in range(repeats):
        for name, (fn, batches) in methods.items():
            t = time.perf_counter()
            for b in batches:
                fn(b)
            samples[name].append((time.perf_counter() - t) / batches.size * 1e9)
        if progress is not None:
            progress.step(f"round {r + 1}")
        if r >= 2 and time.perf_counter() - started > budget:
            break
    return {name: (float(np.median(v)), float(np.min(v))) for name, v in samples.items()}


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


def write_snapshot(
    store: Path, keys: npt.NDArray[np.uint64], masks: npt.NDArray[np.uint8], codebook: npt.NDArray[np.float32]
) -> Path:
    with SnapshotWriter(store, source="bench.keyindex") as w:
        w.add_compressed_field(FIELD, keys, codebook, masks)
        version = w.publish()
    return w.layout.snapshot_path(version)


def in_ram(snapshot: Snapshot) -> Snapshot:
    """The same snapshot with every array copied out of the map into process memory."""
    fields = {}
    for name, f in snapshot.fields.items():
        idx = f.index
        index = dataclasses.replace(
            idx,
            fingerprints=np.array(idx.fingerprints),
            bucket_offsets=np.array(idx.bucket_offsets),
            block_bases=np.array(idx.block_bases),
        )
        fields[name] = dataclasses.replace(f, index=index, masks=np.array(f.masks), codebook=np.array(f.codebook))
    return dataclasses.replace(snapshot, fields=fields)


def warm_up(tmp: Path) -> None:
    """Compile (or load from cache) every kernel specialisation the timings use:
    writable in-memory arrays and read-only mapped ones differ to numba."""
    rng = np.random.default_rng(1)
    keys = generate_keys(0, 20_000)
    built = keyindex.build(keys)
    snap = open_snapshot(
        write_snapshot(
            tmp / "warm", keys, rng.integers(0, K, keys.size, dtype=np.uint8), np.zeros((K, DIM), np.float32)
        )
    )
    for index in (built.index, snap.fields[FIELD].index):
        index.lookup(keys[:BATCH], kernel="numba")
    for s in (snap, in_ram(snap)):
        LookupEngine(s).lookup_field(FIELD, keys[:BATCH])


class Peers:
    """The same job done by structures other than the key index (sorted keys, dict)."""

    def __init__(self, keys: npt.NDArray[np.uint64], masks: npt.NDArray[np.uint8], codebook: npt.NDArray[np.float32]):
        order = np.argsort(keys)
        self.sorted_keys = keys[order]
        self.sorted_masks = masks[order]
        del order
        self.masks = masks
        self.codebook = codebook
        self.table: dict[int, int] | None = None
        self.dict_bytes = 0

    def searchsorted(self, q: npt.NDArray[np.uint64]) -> npt.NDArray[np.float32]:
        pos = np.searchsorted(self.sorted_keys, q)
        np.minimum(pos, self.sorted_keys.shape[0] - 1, out=pos)
        hit = self.sorted_keys[pos] == q
        out = np.take(self.codebook, self.sorted_masks[pos], axis=0)
        out[~hit] = 0
        return out

    def build_dict(self, keys: npt.NDArray[np.uint64]) -> None:
        tracemalloc.start()
        as_ints = keys.tolist()
        self.table = dict(zip(as_ints, range(len(as_ints)), strict=True))
        del as_ints
        self.dict_bytes = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()

    def dict_lookup(self, q: npt.NDArray[np.uint64]) -> npt.NDArray[np.float32]:
        assert self.table is not None
        get = self.table.get
        rows = np.fromiter((get(k, -1) for k in q.tolist()), dtype=np.int64, count=q.shape[0])
        hit = rows >= 0
        out = np.take(self.codebook, self.masks[np.where(hit, rows, 0)], axis=0)
        out[~hit] = 0
        return out


def measure(n: int, tmp: Path, rng: np.random.Generator, progress: Progress) -> dict:
    res: dict = {"n": n}
    progress.stage(f"n = {n:,}: hashing ids")
    t = time.perf_counter()
    keys = generate_keys(0, n)
    res["hash_s"] = time.perf_counter() - t

    progress.stage(f"n = {n:,}: building the key index")
    t = time.perf_counter()
    built = keyindex.build(keys)
    res["build_s"] = time.perf_counter() - t
    res["aliased"] = built.aliased
    res["bucket_bits"] = built.index.bucket_bits
    ram_index, order = built.index, built.order
    del built

    masks = rng.integers(0, K, n, dtype=np.uint8)
    codebook = rng.standard_normal((K, DIM), dtype=np.float32)
    progress.stage(f"n = {n:,}: writing the snapshot")
    t = time.perf_counter()
    path = write_snapshot(tmp / f"store-{n}", keys, masks, codebook)
    res["write_s"] = time.perf_counter() - t
    res["peak_rss_gib"] = peak_rss_gib()

    progress.stage(f"n = {n:,}: opening it")
    opens, firsts, seconds = [], [], []
    for _ in range(5):
        probe, _ids = query_batches(rng, n, 0.0, batches=2)
        t = time.perf_counter()
        snap = open_snapshot(path)
        opens.append(time.perf_counter() - t)
        engine = LookupEngine(snap)
        t = time.perf_counter()
        engine.lookup_field(FIELD, probe[0])
        firsts.append(time.perf_counter() - t)
        t = time.perf_counter()
        engine.lookup_field(FIELD, probe[1])
        seconds.append(time.perf_counter() - t)
    res["open_ms"] = float(np.median(opens)) * 1e3
    res["first_batch_ms"] = float(np.median(firsts)) * 1e3
    res["second_batch_ms"] = float(np.median(seconds)) * 1e3
    t = time.perf_counter()
    snap.verify()
    res["verify_s"] = time.perf_counter() - t
    field = snap.fields[FIELD]
    res["footprint"] = field_footprint(field)
    mapped = field.index
    engine = LookupEngine(snap)
    ram_engine = LookupEngine(in_ram(snap))

    progress.stage(f"n = {n:,}: checking answers")
    stored_q, stored_ids = query_batches(rng, n, 0.0, batches=16)
    rows = mapped.lookup(stored_q.reshape(-1))
    res["stored_found"] = float((rows >= 0).mean())
    res["stored_right"] = float((order[np.maximum(rows, 0)] == stored_ids.reshape(-1)).mean())
    assert np.array_equal(rows, ram_index.lookup(stored_q.reshape(-1))), "mapped and built index disagree"
    assert np.array_equal(rows, mapped.lookup(stored_q.reshape(-1), kernel="numpy")), "numba and numpy disagree"
    unseen = generate_keys(n, n + UNSEEN_PROBES)
    res["false_found"] = int((mapped.lookup(unseen) >= 0).sum())
    res["false_rate"] = res["false_found"] / UNSEEN_PROBES
    del unseen, order

    progress.stage(f"n = {n:,}: building the peers")
    peers = Peers(keys, masks, codebook)
    if n <= DICT_MAX:
        peers.build_dict(keys)
    del keys
    gc.collect()

    methods: list[tuple[str, Lookup, float | str, int]] = [
        ("KeyIndex.lookup, numba, mapped", lambda q: mapped.lookup(q, kernel="numba"), "index", BATCHES),
        ("KeyIndex.lookup, numpy, mapped", lambda q: mapped.lookup(q, kernel="numpy"), "index", BATCHES),
        ("KeyIndex.lookup, numba, in RAM", lambda q: ram_index.lookup(q, kernel="numba"), "index", BATCHES),
        ("engine lookup_field, mapped", lambda q: engine.lookup_field(FIELD, q), "engine", BATCHES),
        ("engine lookup_field, arrays in RAM", lambda q: ram_engine.lookup_field(FIELD, q), "engine", BATCHES),
        ("np.searchsorted + gather", peers.searchsorted, 9.0, BATCHES),
    ]
    if peers.table is not None:
        methods.append(("Python dict + gather", peers.dict_lookup, peers.dict_bytes / n + 1, 16))
    res["times"] = {}
    for mix, unseen_frac in (("stored", 0.0), ("half unseen", 0.5)):
        batches, _ = query_batches(rng, n, unseen_frac)
        progress.stage(f"n = {n:,}: timing {len(methods)} methods, {mix} ids", total=ROUNDS)
        times = ns_per_id({name: (fn, batches[:count]) for name, fn, _, count in methods}, progress=progress)
        res["times"].update({(name, mix): t for name, t in times.items()})
    res["methods"] = [(name, structure) for name, _, structure, _ in methods]
    return res


def size_label(n: int) -> str:
    return f"1e{len(str(n)) - 1}" if str(n).strip("0") == "1" else f"{n:,}"


def report_size(report: Report, r: dict) -> None:
    n = r["n"]
    fp = r["footprint"]
    index_bpf = fp.key_index_bytes / n
    engine = {mix: r["times"][("engine lookup_field, mapped", mix)][0] for mix in ("stored", "half unseen")}
    rows = []
    for name, structure in r["methods"]:
        if structure == "index":
            bpf = f"{index_bpf:.2f} (index)"
        elif structure == "engine":
            bpf = f"{fp.bytes_per_feature:.2f}"
        else:
            bpf = f"{structure:.1f}"
        cells = [name]
        for mix in ("stored", "half unseen"):
            ns, best = r["times"][(name, mix)]
            cells += [f"{ns:,.1f} ({best:,.1f})", f"{ns / engine[mix]:.2f}x"]
        rows.append(cells + [bpf])
    header = ["method", "ns/id stored (best)", "vs engine", "ns/id 50% unseen (best)", "vs engine", "bytes/feature"]
    body = markdown_table(header, rows)
    facts = [
        ("features", f"{n:,}"),
        ("bucket bits / mean bucket", f"{r['bucket_bits']} / {n / 2 ** r['bucket_bits']:.2f} rows"),
        (
            "hash ids / build index / write snapshot",
            f"{r['hash_s']:.2f} s / {r['build_s']:.2f} s / {r['write_s']:.2f} s",
        ),
        ("peak RSS of the run so far", f"{r['peak_rss_gib']:.2f} GiB"),
        (
            "bytes/feature served (index + masks + codebook + mean)",
            (
                f"{fp.bytes_per_feature:.3f} = {fp.key_index_bytes / n:.3f} + {fp.masks_bytes / n:.3f} + "
                f"{fp.codebook_bytes / n:.5f} + {fp.other_bytes / n:.6f}"
            ),
        ),
        ("aliased (stored keys sharing a fingerprint)", f"{r['aliased']:,} ({r['aliased'] / n:.5%})"),
        ("stored ids found / given their own row", f"{r['stored_found']:.4%} / {r['stored_right']:.4%}"),
        (
            "false matches of unseen ids",
            f"{r['false_found']:,} of {UNSEEN_PROBES:,} ({r['false_rate']:.4%})",
        ),
        ("open_snapshot (page cache warm)", f"{r['open_ms']:.2f} ms"),
        (
            "first 4096-id batch after open / the next one",
            f"{r['first_batch_ms']:.2f} ms / {r['second_batch_ms']:.2f} ms",
        ),
        ("verify (SHA-256 of every array; the server does it on open)", f"{r['verify_s']:.2f} s"),
    ]
    body += "\n\n" + markdown_table(["fact", "value"], facts)
    report.section(f"{size_label(n)} features", body)


def report_targets(report: Report, results: list[dict], large_run: bool) -> None:
    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    rows = []
    big = [r for r in results if r["n"] == LARGE]
    for name in ("engine lookup_field, mapped", "KeyIndex.lookup, numba, mapped"):
        for mix in ("stored", "half unseen"):
            label = f"{name}, 4096 ids, {mix}, 1e8 features"
            if big:
                ns, best = big[0]["times"][(name, mix)]
                rows.append(
                    [label, f"<= {TARGET_NS:.0f} ns/id", f"{ns:.1f} (best {best:.1f})", verdict(ns <= TARGET_NS)]
                )
            else:
                why = "not run: needs --large" if not large_run else "not run: not enough memory"
                rows.append([label, f"<= {TARGET_NS:.0f} ns/id", "-", why])
    for r in results:
        bpf = r["footprint"].bytes_per_feature
        rows.append(
            [f"bytes/feature, {size_label(r['n'])}", f"<= {TARGET_BYTES}", f"{bpf:.3f}", verdict(bpf <= TARGET_BYTES)]
        )
    for r in results:
        rate = r["false_rate"]
        rows.append(
            [
                f"false matches of unseen ids, {size_label(r['n'])}",
                f"<= {TARGET_FALSE:.1%}",
                f"{rate:.4%}",
                verdict(rate <= TARGET_FALSE),
            ]
        )
    report.section("Targets", markdown_table(["target", "bound", "measured", "verdict"], rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.keyindex", description=__doc__.split("\n\n")[0])
    parser.add_argument("--large", action="store_true", help=f"also {LARGE:.0e} features (~7 GiB RAM)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sizes", type=lambda s: [int(float(x)) for x in s.split(",")], help="features to measure, e.g. 1e5,1e6"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; keep bench/results as it is")
    args = parser.parse_args(argv)

    report = Report("keyindex", "Key index and engine lookup", modules=("numpy", "numba", "zarr"))
    rng = np.random.default_rng(args.seed)
    sizes = args.sizes or list(SIZES) + ([LARGE] if args.large else [])
    results = []
    with tempfile.TemporaryDirectory(prefix="saec-bench-") as tmp, Progress() as progress:
        progress.stage("compiling the kernels")
        warm_up(Path(tmp))
        progress.close()
        for n in sizes:
            need = n * BYTES_NEEDED_PER_FEATURE / 2**30
            if available_gib() < need:
                report.section(
                    f"{size_label(n)} features",
                    f"Skipped: needs about {need:.1f} GiB free, {available_gib():.1f} GiB available.",
                )
                continue
            results.append(measure(n, Path(tmp), rng, progress))
            progress.close()  # the stage ends before its table prints
            report_size(report, results[-1])
    report_targets(report, results, args.large)
    report.section(
        "How to read this",
        "ns/id is the median (in brackets: the best) over passes of the wall time to look up 256 "
        "pre-drawn batches of 4096 random ids one after the other, divided by the ids (the dict: 16 "
        "batches); passes of all methods take turns, so background load falls on each alike. 'mapped' "
        "reads the snapshot files through mmap as the server does; 'in RAM' is the same arrays copied into "
        "process memory, where numpy asks for transparent huge pages and the TLB misses less. 'vs engine' "
        "divides by the mapped engine's time for the same mix. 'stored' draws every id from the stored "
        "ones; '50% unseen' replaces each with probability 1/2 by an id never stored. Bytes per feature of "
        "the peers: 8-byte key + 1-byte mask (searchsorted), traced Python allocations + 1-byte mask "
        "(dict). The page cache is warm: the snapshot was just written. Verdicts use the median. Other "
        "work on the machine (see the load average) inflates medians; compare runs by the best pass when "
        "the load was high.",
    )
    if not args.no_write:
        report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
