"""Seeded damage to delta segments: no file may crash or hang a reader, or lose an intact frame.

    python -m bench.corruption_deltas                 # 1,000 seeds, writes bench/results/corruption_deltas.md
    python -m bench.corruption_deltas --seeds 40 --no-write

Each seed writes a delta log of 5-40 frames (one to three segments: some seeds shrink
``SEGMENT_BYTES``), damages it one way, then:

1. reads it with a fresh reader: every *intact* frame (one whose bytes are still in the
   file, unchanged) must be served, with its keys, in strictly increasing sequence;
2. appends one frame with a writer: its sequence must exceed every sequence served, and
   a fresh reader must then serve every intact frame and it; nothing intact is truncated;
3. repairs the log (``check_log(repair_it=True)``): afterwards it reads as undamaged and
   still serves every intact frame and the new one;
4. half the seeds also keep a reader that had read the whole log before the damage and
   poll it after: it must return or ask to start over (``DeltaLogChangedError``).

Damage: flipped bits, random bytes, zeros or 0xFF over a range, a truncation, a damaged
length or sequence field, garbage inserted or appended, a range deleted, a frame
duplicated, and odd files in place of a segment (FIFO, folder, symlink, /dev/zero).

Outcomes per seed: ``ok`` (all checks hold; the table counts what the reader met:
damage skipped, a torn tail, a refused file), ``lost`` (an intact frame not served, or
a sequence given out twice), ``crash`` (any exception that is not a ``SaecError``, or the
process died), ``hang`` (a seed over ``SEED_SECONDS``). The target is zero of the last three.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import traceback
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson

REPO = Path(__file__).resolve().parent.parent
BASE = "20260101T000000.000000Z-f022"
SEED_SECONDS = 30
MODES = (
    "flip", "random", "zeros", "ones", "truncate", "length", "sequence", "insert", "append", "delete",
    "duplicate", "fifo", "folder", "symlink", "device",
)


def _write_log(root: Path, rng: np.random.Generator) -> tuple[Path, list[tuple[int, bytes, Any]]]:
    """A delta log of random frames; returns its folder and (sequence, frame bytes, keys) of each."""
    from saec.store import deltas
    from saec.store.deltas import DeltaWriter, FieldDelta, encode_frame, encode_payload

    w = DeltaWriter(root, BASE, check_current=False)
    frames = []
    for _ in range(int(rng.integers(5, 41))):
        n = int(rng.integers(1, 60))
        fields = {"user": FieldDelta(rng.integers(0, 2**63, n).astype(np.uint64),
                                     rng.normal(size=(n, 5)).astype(np.float32),
                                     rng.integers(0, 16, n).astype(np.uint8))}
        if rng.random() < 0.3:
            m = int(rng.integers(1, 9))
            fields["item"] = FieldDelta(rng.integers(0, 2**63, m).astype(np.uint64),
                                        rng.normal(size=(m, 3)).astype(np.float32), None)
        payload = encode_payload(fields, time_ms=1_700_000_000_000 + len(frames))
        with w.lock():
            seq = w.append_locked(payload)
        frames.append((seq, encode_frame(seq, payload), fields["user"].keys))
    return deltas.deltas_dir(root, BASE), frames


def _damage(folder: Path, rng: np.random.Generator, mode: str, frames: list) -> str:
    """Damage one segment of ``folder``; returns what was done."""
    from saec.store.deltas import segment_name

    segs = sorted(p for p in folder.glob("segment-*.log"))
    path = segs[int(rng.integers(0, len(segs)))]
    raw = bytearray(path.read_bytes())
    size = len(raw)
    at = int(rng.integers(0, max(size, 1)))
    if mode == "flip":
        for _ in range(int(rng.integers(1, 9))):
            p = int(rng.integers(0, size))
            raw[p] ^= 1 << int(rng.integers(0, 8))
    elif mode in ("random", "zeros", "ones"):
        n = int(rng.integers(1, max(2, min(size - at, 5000))))
        fill = {"random": rng.integers(0, 256, n, dtype=np.uint8).tobytes(), "zeros": bytes(n), "ones": b"\xff" * n}
        raw[at : at + n] = fill[mode][: len(raw[at : at + n])]
    elif mode == "truncate":
        del raw[at:]
    elif mode in ("length", "sequence"):
        starts = _frame_starts(bytes(raw))
        s = starts[int(rng.integers(0, len(starts)))] if starts else at
        lo, hi = (s + 4, s + 8) if mode == "length" else (s + 8, s + 16)
        value = [0, 1, 2**31, 2**32 - 1, int(rng.integers(0, 2**32))][int(rng.integers(0, 5))]
        raw[lo:hi] = value.to_bytes(hi - lo, "little", signed=False)[: hi - lo].ljust(hi - lo, b"\0")
    elif mode == "insert":
        raw[at:at] = rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes()
    elif mode == "append":
        raw += rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes()
    elif mode == "delete":
        del raw[at : at + int(rng.integers(1, 2000))]
    elif mode == "duplicate":
        _, frame, _ = frames[int(rng.integers(0, len(frames)))]
        raw[at:at] = frame if rng.random() < 0.5 else b""
        raw += frame
    else:
        path.unlink()
        if mode == "fifo":
            os.mkfifo(path)
        elif mode == "folder":
            path.mkdir()
        elif mode == "symlink":
            path.symlink_to(folder / segment_name(999))
        else:
            path.symlink_to("/dev/zero")
        return f"{mode} as {path.name}"
    path.write_bytes(bytes(raw))
    return f"{mode} of {path.name} at {at} of {size}"


def _frame_starts(raw: bytes) -> list[int]:
    out, pos = [], raw.find(b"SAED")
    while pos >= 0:
        out.append(pos)
        pos = raw.find(b"SAED", pos + 1)
    return out


def run_seed(work: Path, seed: int) -> dict[str, Any]:
    """One seed; returns its record (outcome and what the reader met)."""
    from saec.errors import SaecError
    from saec.store import deltas
    from saec.store.deltas import DeltaReader, DeltaWriter, FieldDelta, check_log, inspect
    from saec.store.errors import DeltaLogChangedError, DeltaLogError

    rng = np.random.default_rng(seed)
    root = work / f"s{seed}"
    mode = MODES[seed % len(MODES)]
    deltas.SEGMENT_BYTES = [1 << 30, 3000, 9000][seed % 3]
    record: dict[str, Any] = {"seed": seed, "mode": mode, "outcome": "ok", "met": "nothing"}
    try:
        folder, frames = _write_log(root, rng)
        following = DeltaReader(folder)
        following.poll()
        record["how"] = _damage(folder, rng, mode, frames)
        on_disk = b"".join(p.read_bytes() for p in sorted(folder.glob("segment-*.log")) if p.is_file()
                           and not p.is_symlink())
        intact = {seq: keys for seq, frame, keys in frames if frame in on_disk}
        if seed % 2:
            try:
                following.poll()
            except DeltaLogChangedError:
                pass
        odd = mode in ("fifo", "folder", "symlink", "device")
        reader = DeltaReader(folder)
        served = reader.poll()
        report = inspect(folder)
        record["met"] = ("refused" if report.refused else "damage" if report.damage else
                         "torn tail" if report.torn else "nothing")
        seqs = [r.sequence for r in served]
        if seqs != sorted(set(seqs)):
            return {**record, "outcome": "lost", "detail": f"sequences not increasing: {seqs}"}
        got = {r.sequence: r.fields["user"].keys for r in served}
        if odd:
            # Frames of the odd segment cannot be read; every other segment's must be.
            intact = {s: k for s, k in intact.items() if s in got or s > max(got, default=0)}
            missing = [s for s in intact if s not in got and s < max(got, default=0)]
        else:
            missing = [s for s in intact if s not in got or not np.array_equal(got[s], intact[s])]
        if missing:
            return {**record, "outcome": "lost", "detail": f"intact frames not served: {missing[:10]}"}
        if odd:
            try:
                DeltaWriter(root, BASE, check_current=False).append({"user": _one(rng, FieldDelta)})
                return {**record, "outcome": "lost", "detail": "a writer appended to a log with an odd segment"}
            except DeltaLogError:
                return record
        new = DeltaWriter(root, BASE, check_current=False).append({"user": _one(rng, FieldDelta)})
        if new <= max([*seqs, reader.claimed]):
            return {**record, "outcome": "lost", "detail": f"sequence {new} given out after {max(seqs, default=0)}"}
        after = {r.sequence for r in DeltaReader(folder).poll()}
        if not set(got) | {new} <= after:
            return {**record, "outcome": "lost", "detail": f"after an append, lost {sorted(set(got) - after)[:10]}"}
        check_log(folder, repair_it=True)
        repaired = {r.sequence for r in DeltaReader(folder).poll()}
        if not set(got) | {new} <= repaired or check_log(folder) is not None:
            return {**record, "outcome": "lost", "detail": f"repair lost {sorted(set(got) - repaired)[:10]}"}
        return record
    except SaecError as exc:
        return {**record, "outcome": "lost", "detail": f"refused: {type(exc).__name__}: {exc}"[:500]}
    except _Hang:
        return {**record, "outcome": "hang"}
    except Exception:
        return {**record, "outcome": "crash", "detail": traceback.format_exc()[-1500:]}


def _one(rng: np.random.Generator, field_delta: Any) -> Any:
    return field_delta(rng.integers(0, 2**63, 3).astype(np.uint64), np.zeros((3, 5), np.float32),
                       np.zeros(3, np.uint8))


class _Hang(Exception):
    pass


def _alarm(*_: object) -> None:
    raise _Hang


def worker(seeds: list[int]) -> None:
    """Child process: one JSON line per seed, the seed announced first (a crash names it)."""
    signal.signal(signal.SIGALRM, _alarm)
    with tempfile.TemporaryDirectory(prefix="saec-deltafuzz-") as tmp:
        for seed in seeds:
            sys.stdout.write(orjson.dumps({"start": seed}).decode() + "\n")
            sys.stdout.flush()
            signal.alarm(SEED_SECONDS)
            rec = run_seed(Path(tmp), seed)
            signal.alarm(0)
            sys.stdout.write(orjson.dumps(rec).decode() + "\n")
            sys.stdout.flush()


def run(seeds: int, batch: int = 50, first: int = 0, progress: bool = True) -> list[dict[str, Any]]:
    """``seeds`` seeds in child processes of ``batch`` seeds each; one record per seed."""
    from saec.progress import Progress

    records: list[dict[str, Any]] = []
    todo = list(range(first, first + seeds))
    with Progress(quiet=not progress) as p:
        p.stage("delta corruption seeds", seeds)
        while todo:
            chunk, todo = todo[:batch], todo[batch:]
            try:
                proc = subprocess.run(
                    [sys.executable, "-m", "bench.corruption_deltas", "--worker", ",".join(map(str, chunk))],
                    cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                    timeout=SEED_SECONDS * len(chunk) + 60,
                )
                out, code, err = proc.stdout, proc.returncode, proc.stderr
            except subprocess.TimeoutExpired as exc:
                out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
                code, err = -9, "timed out"
            done: dict[int, dict[str, Any]] = {}
            started = None
            for line in out.splitlines():
                doc = orjson.loads(line)
                if "start" in doc:
                    started = doc["start"]
                else:
                    done[doc["seed"]] = doc
            records.extend(done[s] for s in chunk if s in done)
            p.step(n=len(done))
            if code != 0:
                bad = started if started is not None and started not in done else None
                records.append({"seed": bad, "mode": "?" if bad is None else MODES[bad % len(MODES)],
                                "outcome": "hang" if code == -9 else "crash", "met": "?",
                                "detail": f"exit {code}: {err[-1500:]}"})
                p.step()
                todo = [s for s in chunk if s not in done and s != bad] + todo
    return records


def summarise(records: list[dict[str, Any]]) -> tuple[str, Counter[str]]:
    from bench._report import markdown_table

    by_mode: dict[str, Counter[str]] = defaultdict(Counter)
    for r in records:
        by_mode[r["mode"]][r["outcome"]] += 1
        by_mode[r["mode"]]["met " + r["met"]] += 1
    total: Counter[str] = Counter(r["outcome"] for r in records)
    total.update("met " + r["met"] for r in records)
    cols = ["ok", "met damage", "met torn tail", "met refused", "lost", "crash", "hang"]
    rows = [(m, sum(c[o] for o in ("ok", "lost", "crash", "hang")), *(c[k] for k in cols)) for m, c in sorted(by_mode.items())]
    rows.append(("all", len(records), *(total[k] for k in cols)))
    header = ["damage", "seeds", "ok", "damage skipped", "torn tail", "odd file refused", "lost", "crashed", "hung"]
    return markdown_table(header, rows), total


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--no-write", action="store_true", help="print only; keep bench/results as it is")
    parser.add_argument("--worker", metavar="SEEDS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker([int(s) for s in args.worker.split(",")])
        return
    from bench._report import Report

    report = Report("corruption_deltas", "Damaged delta segments read, appended to and repaired", modules=("numpy",))
    records = run(args.seeds, args.batch)
    table, total = summarise(records)
    report.section(f"{len(records)} seeds (damage by seed modulo the {len(MODES)} kinds)", table)
    bad = [r for r in records if r["outcome"] != "ok"]
    report.section("Failures", "none" if not bad else "\n".join(
        f"- seed {r['seed']} ({r['mode']}, {r.get('how', '?')}): {r['outcome']}: {r.get('detail', '')}" for r in bad))
    if not args.no_write:
        report.write()
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
