"""Seeded corruption of every array kind with verification off: no file may crash the process.

    python -m bench.corruption                  # 1,000 seeds, writes bench/results/corruption.md
    python -m bench.corruption --seeds 60 --no-write

Each seed copies a pristine snapshot (compressed fields with uint8 and uint16 masks and
counts, a dense field, one with uint32 bucket offsets), picks one file, damages it and
then serves lookups of stored and unseen ids from it without checking checksums:

- array kinds: every array of every field (codebook, masks, vectors, mean, counts,
  fingerprints, bucket_offsets, block_bases), damaged by flipped bits, random bytes over
  a range, all bytes set to 0x00 or 0xFF;
- ``manifest``: one value of the manifest (a shape, dtype, bucket_bits, rows, dim, k, a
  field or array name) replaced by a hostile one (negative, huge, ``../x``, wrong type);
- half the array seeds damage the file *after* the snapshot was opened (bytes changed
  in place under a live map), where no check at open can help.

Outcomes: ``refused`` (a clear ``SaecError`` at open or lookup), ``served`` (answers,
possibly wrong vectors: allowed only with verification off), ``crash`` (the process
died: a signal such as SIGSEGV, or any exception that is not a ``SaecError``). Seeds
run in batches in child processes, so a segfault is seen as the crash of its seed; the
target is zero crashes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson

REPO = Path(__file__).resolve().parent.parent
HOSTILE: list[Any] = [-1, 0, 1, 3, 2**31, 2**63, 2**64, 1.5, "x", None, [], {}, "../../x", "a/b", "\x07"]
MODES = ("flip", "random", "zeros", "ones")


def build_pristine(root: Path) -> Path:
    """A store with one of each field kind and index dtype; returns its snapshot folder."""
    from saec.store.hashing import hash_ids
    from saec.store.layout import StoreLayout
    from saec.store.writer import SnapshotWriter

    rng = np.random.default_rng(0)
    n = 3000
    with SnapshotWriter(root, source="corruption bench") as w:
        w.add_compressed_field(
            "c8", hash_ids(np.arange(n), "c8"), rng.normal(size=(16, 5)).astype(np.float32),
            rng.integers(0, 16, n).astype(np.uint8), rng.integers(1, 100, n),
        )
        w.add_compressed_field(
            "c16", hash_ids(np.arange(n), "c16"), rng.normal(size=(300, 3)).astype(np.float32),
            rng.integers(0, 300, n).astype(np.uint16),
        )
        w.add_dense_field("d", hash_ids(np.arange(200), "d"), rng.normal(size=(200, 7)).astype(np.float32))
        # Keys crowded into one block of buckets: offsets stored as uint32.
        crowded = np.unique(rng.integers(0, 1 << 62, 140_000, dtype=np.uint64))[:70_000]
        w.add_dense_field("wide", crowded, rng.normal(size=(70_000, 2)).astype(np.float32))
        w.publish()
    layout = StoreLayout(root)
    return layout.snapshot_dir(layout.current())


def targets(snapshot: Path) -> list[str]:
    """Every array of the snapshot (``<field>/<array>``), then ``manifest``."""
    manifest = orjson.loads((snapshot / "zarr.json").read_bytes())["attributes"]["saec"]
    return sorted(manifest["arrays"]) + ["manifest"]


def _damage_bytes(path: Path, rng: np.random.Generator, mode: str) -> None:
    """Change bytes of ``path`` in place (same inode, same size): a live map sees it."""
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "r+b") as fh:
        if mode == "flip":
            for _ in range(int(rng.integers(1, 9))):
                pos = int(rng.integers(0, size))
                fh.seek(pos)
                byte = fh.read(1)[0]
                fh.seek(pos)
                fh.write(bytes([byte ^ (1 << int(rng.integers(0, 8)))]))
        else:
            start = int(rng.integers(0, size))
            length = int(rng.integers(1, size - start + 1))
            fill = {
                "random": rng.integers(0, 256, length, dtype=np.uint8).tobytes(),
                "zeros": b"\x00" * length,
                "ones": b"\xff" * length,
            }[mode]
            fh.seek(start)
            fh.write(fill)


def _damage_manifest(snapshot: Path, rng: np.random.Generator) -> str:
    path = snapshot / "zarr.json"
    doc = orjson.loads(path.read_bytes())
    manifest = doc["attributes"]["saec"]
    value = HOSTILE[int(rng.integers(0, len(HOSTILE)))]
    choice = int(rng.integers(0, 4))
    fields = sorted(manifest["fields"])
    name = fields[int(rng.integers(0, len(fields)))]
    if choice == 0:
        key = ["rows", "dim", "k", "bucket_bits", "features", "kind", "block_bits"][int(rng.integers(0, 7))]
        manifest["fields"][name][key] = value
        what = f"fields.{name}.{key} = {value!r}"
    elif choice == 1:
        arr = sorted(manifest["arrays"])[int(rng.integers(0, len(manifest["arrays"])))]
        key = ["shape", "dtype"][int(rng.integers(0, 2))]
        manifest["arrays"][arr][key] = value if key == "dtype" or not isinstance(value, int) else [value]
        what = f"arrays.{arr}.{key} = {value!r}"
    elif choice == 2:
        new = str(value)
        manifest["fields"][new] = manifest["fields"].pop(name)
        for p in [p for p in manifest["arrays"] if p.startswith(name + "/")]:
            manifest["arrays"][new + p[len(name) :]] = manifest["arrays"].pop(p)
        what = f"field {name} renamed {new!r}"
    else:
        manifest["format_version"] = value
        what = f"format_version = {value!r}"
    # The standard library writes integers past 64 bits, which orjson refuses to.
    path.write_text(json.dumps(doc))
    return what


def run_seed(pristine: Path, work: Path, seed: int) -> tuple[str, str, str]:
    """Damage one copy and serve from it; returns (target, how, outcome)."""
    from saec.errors import SaecError
    from saec.store.engine import LookupEngine
    from saec.store.hashing import hash_ids
    from saec.store.snapshot import chunk_path, open_snapshot

    rng = np.random.default_rng(seed)
    snap = work / f"s{seed}"
    shutil.copytree(pristine, snap)
    try:
        names = targets(snap)
        target = names[seed % len(names)]
        after_open = target != "manifest" and bool(rng.integers(0, 2))
        mode = MODES[int(rng.integers(0, len(MODES)))]
        how = "manifest" if target == "manifest" else f"{mode}{' after open' if after_open else ''}"
        engine = None
        try:
            if target == "manifest":
                how = _damage_manifest(snap, rng)
            elif not after_open:
                _damage_bytes(_chunk(snap, target, chunk_path), rng, mode)
            engine = LookupEngine(open_snapshot(snap))
            if after_open:
                _damage_bytes(_chunk(snap, target, chunk_path), rng, mode)
            for name in engine.snapshot.fields:
                stored = hash_ids(np.arange(0, 4000, 3), name)
                unseen = rng.integers(0, 2**64 - 1, 2000, dtype=np.uint64, endpoint=True)
                edges = np.array([0, 1, 2**63, 2**64 - 1, 2**48, (2**64 - 1) >> 16], dtype=np.uint64)
                engine.lookup({name: np.concatenate([stored, unseen, edges])})
        except SaecError:
            return target, how, "refused"
        return target, how, "served"
    finally:
        shutil.rmtree(snap, ignore_errors=True)


def _chunk(snap: Path, target: str, chunk_path: Any) -> Path:
    manifest = orjson.loads((snap / "zarr.json").read_bytes())["attributes"]["saec"]
    return chunk_path(snap / target, len(manifest["arrays"][target]["shape"]))


def worker(pristine: Path, seeds: list[int]) -> None:
    """Child process: one JSON line per seed, written before the next seed starts."""
    with tempfile.TemporaryDirectory(prefix="saec-corrupt-") as tmp:
        for seed in seeds:
            # Announce the seed first: if it crashes the process, the parent knows which.
            sys.stdout.write(orjson.dumps({"start": seed}).decode() + "\n")
            sys.stdout.flush()
            target, how, outcome = run_seed(pristine, Path(tmp), seed)
            sys.stdout.write(orjson.dumps({"seed": seed, "target": target, "how": how, "outcome": outcome}).decode() + "\n")
            sys.stdout.flush()


def run(seeds: int, batch: int = 100, first: int = 0, progress: bool = True) -> list[dict[str, Any]]:
    """Run ``seeds`` seeds in child processes of ``batch`` seeds; one record per seed."""
    from saec.progress import Progress

    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="saec-pristine-") as tmp, Progress(quiet=not progress) as p:
        pristine = build_pristine(Path(tmp) / "store")
        names = targets(pristine)
        p.stage("corruption seeds", seeds)
        todo = list(range(first, first + seeds))
        while todo:
            chunk, todo = todo[:batch], todo[batch:]
            proc = subprocess.run(
                [sys.executable, "-m", "bench.corruption", "--worker", str(pristine), ",".join(map(str, chunk))],
                cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
            )
            done = {}
            started = None
            for line in proc.stdout.splitlines():
                doc = orjson.loads(line)
                if "start" in doc:
                    started = doc["start"]
                else:
                    done[doc["seed"]] = doc
            records.extend(done[s] for s in chunk if s in done)
            p.step(n=len(done))
            if proc.returncode != 0:
                crashed = started if started is not None and started not in done else None
                records.append(
                    {"seed": crashed, "target": "?" if crashed is None else names[crashed % len(names)],
                     "how": "?", "outcome": "crash",
                     "detail": f"exit {proc.returncode}: {proc.stderr[-2000:]}"}
                )
                p.step()
                rest = [s for s in chunk if s not in done and s != crashed]
                todo = rest + todo
    return records


def summarise(records: list[dict[str, Any]]) -> tuple[str, Counter[str]]:
    from bench._report import markdown_table

    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    for r in records:
        kind = r["target"].split("/", 1)[-1] if r["target"] != "manifest" else "manifest"
        by_kind[kind][r["outcome"]] += 1
    total: Counter[str] = Counter(r["outcome"] for r in records)
    rows = [(k, sum(c.values()), c["served"], c["refused"], c["crash"]) for k, c in sorted(by_kind.items())]
    rows.append(("all", len(records), total["served"], total["refused"], total["crash"]))
    return markdown_table(["damaged", "seeds", "served", "refused", "crashed"], rows), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--no-write", action="store_true", help="print only; keep bench/results as it is")
    parser.add_argument("--worker", nargs=2, metavar=("PRISTINE", "SEEDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(Path(args.worker[0]), [int(s) for s in args.worker[1].split(",")])
        return
    from bench._report import Report

    report = Report("corruption", "Damaged snapshot files served with verification off", modules=("numpy", "numba"))
    records = run(args.seeds, args.batch)
    table, total = summarise(records)
    report.section(f"{len(records)} seeds (array kind by seed modulo the {len(targets_of_pristine())} targets)", table)
    crashes = [r for r in records if r["outcome"] == "crash"]
    report.section("Crashes", "none" if not crashes else "\n".join(f"- seed {r['seed']}: {r['detail']}" for r in crashes))
    if not args.no_write:
        report.write()
    sys.exit(1 if total["crash"] else 0)


def targets_of_pristine() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        return targets(build_pristine(Path(tmp) / "store"))


if __name__ == "__main__":
    main()
