"""One overlay, one writer of it: refreshes under any number of concurrent lookups
(threads) while other threads and other processes append, never a failure, never half a
batch, and afterwards every acknowledged id answers as a fresh reader of the log does."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from saec.store.deltas import DeltaWriter, FieldDelta, deltas_dir
from saec.store.engine import LookupEngine
from saec.store.hashing import hash_ids
from saec.store.layout import StoreLayout
from saec.store.overlay import Overlay
from saec.store.snapshot import open_snapshot

BATCHES = int(os.environ.get("SAEC_STRESS_BATCHES", "40"))  # per writer
NEW = 300  # new ids a field per batch
MOVED = 8  # stored user rows each batch reassigns (disjoint between batches)

WRITER = r"""
import sys
import numpy as np
from saec.store.deltas import DeltaWriter
sys.path.insert(0, {tests!r})
from tests.store.test_overlay_concurrency import batch
w = DeltaWriter({root!r}, {version!r})
for i in range({batches}):
    b = {first} + i
    w.append(batch(b, {user_ids!r}))
    print(b, flush=True)
"""


def batch(b: int, stored: int) -> dict[str, FieldDelta]:
    """Batch ``b``: NEW new ids per field and MOVED stored user ids (of ``stored``), all
    given mask b % 16 (user) or the vector [b] * 17 (country)."""
    new_user = hash_ids(np.arange(NEW, dtype=np.int64) + 10**9 + b * NEW, "user")
    moved = hash_ids((np.arange(MOVED, dtype=np.int64) + b * MOVED) * 7 + 3, "user")  # rows b*MOVED...
    keys = np.concatenate([new_user, moved])
    country = hash_ids(np.arange(NEW, dtype=np.int64) + 10**9 + b * NEW, "country")
    return {
        "user": FieldDelta(keys, np.zeros((keys.shape[0], 9), np.float32), np.full(keys.shape[0], b % 16, np.uint8)),
        "country": FieldDelta(country, np.full((NEW, 17), float(b), np.float32), None),
    }


@pytest.mark.slow
def test_refresh_under_concurrent_lookups_threads_and_processes(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    version = data["version"]
    stored = int(data["user_ids"].shape[0])
    assert 4 * BATCHES * MOVED <= stored  # each batch reassigns rows of its own
    snapshot = open_snapshot(StoreLayout(root).snapshot_dir(version))
    engine = LookupEngine(snapshot, overlay=Overlay(snapshot, str(deltas_dir(root, version))))
    codebook = data["codebook"]
    acked: dict[int, float] = {}  # batch -> time its append returned
    failures: list[str] = []
    stop = threading.Event()

    def write(first: int) -> None:
        w = DeltaWriter(root, version)
        for b in range(first, first + BATCHES):
            w.append(batch(b, stored))
            acked[b] = time.monotonic()

    def look(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            known = list(acked.items())
            chosen = [int(x) for x in rng.choice(4 * BATCHES, size=12, replace=False)]
            started = time.monotonic()
            parts = [batch(b, stored) for b in chosen]
            request = {
                "user": np.concatenate([p["user"].keys for p in parts]),
                "country": np.concatenate([p["country"].keys for p in parts]),
            }
            try:
                result = engine.lookup(request)
            except Exception as exc:  # any failure at all is what this test looks for
                failures.append(f"lookup raised {type(exc).__name__}: {exc}")
                continue
            u, c = result.fields["user"], result.fields["country"]
            # Ids the snapshot's index matches falsely (its 16-bit fingerprints) are left out.
            fresh_u = snapshot.fields["user"].index.lookup(request["user"]) < 0
            fresh_c = snapshot.fields["country"].index.lookup(request["country"]) < 0
            for j, b in enumerate(chosen):
                us = slice(j * (NEW + MOVED), (j + 1) * (NEW + MOVED))
                cs = slice(j * NEW, (j + 1) * NEW)
                found = np.concatenate([u.found[us][:NEW][fresh_u[us][:NEW]], c.found[cs][fresh_c[cs]]])
                moved = np.all(u.vectors[us][NEW:] == codebook[b % 16], axis=1)
                seen = found.all() and (moved.all() or b % 16 == 0)
                if not (found.all() or not found.any()) or (found.all() and not moved.all()):
                    failures.append(f"batch {b}: half applied ({found.sum()} of {found.size} new ids found, "
                                    f"{moved.sum()} of {MOVED} moved)")
                if b in dict(known) and not seen:
                    failures.append(f"batch {b}: acknowledged before the lookup started, not served")
                if found.any() and not np.all(c.vectors[cs][c.found[cs] & fresh_c[cs]] == float(b)):
                    failures.append(f"batch {b}: wrong dense vectors")
            del started

    readers = [threading.Thread(target=look, args=(s,), daemon=True) for s in range(4)]
    for t in readers:
        t.start()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER.format(tests=str(Path(__file__).parents[2]), root=str(root), version=version,
                                                 batches=BATCHES, first=first, user_ids=stored)],
            stdout=subprocess.PIPE, text=True, env={**os.environ},
        )
        for first in (2 * BATCHES, 3 * BATCHES)
    ]
    writers = [threading.Thread(target=write, args=(first,)) for first in (0, BATCHES)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0
        for line in out.split():
            acked[int(line)] = time.monotonic()
    time.sleep(0.2)
    stop.set()
    for t in readers:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in readers), "a lookup never returned"
    assert failures == [], failures[:5]
    assert sorted(acked) == list(range(4 * BATCHES))
    # Every acknowledged id against a fresh reader of the log, and against what was sent.
    fresh = LookupEngine(snapshot, overlay=Overlay(snapshot, str(deltas_dir(root, version))))
    parts = [batch(b, stored) for b in range(4 * BATCHES)]
    request = {name: np.concatenate([p[name].keys for p in parts]) for name in ("user", "country")}
    mine, theirs = engine.lookup(request), fresh.lookup(request)
    for name in request:
        assert np.array_equal(mine.fields[name].vectors, theirs.fields[name].vectors)
        assert mine.fields[name].found.all() and theirs.fields[name].found.all()
    expected_user = np.concatenate([np.repeat(codebook[b % 16][None], NEW + MOVED, 0) for b in range(4 * BATCHES)])
    assert np.array_equal(mine.fields["user"].vectors, expected_user)
    assert np.array_equal(mine.fields["country"].vectors[:, 0], np.repeat(np.arange(4 * BATCHES, dtype=np.float32), NEW))
