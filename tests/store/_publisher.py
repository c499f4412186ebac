"""A publishing process driven by the tests over stdin, so that faults hit real processes.

    python -m tests.store._publisher race STORE SEED
        For every line "go DELAY_MS": create a writer, wait DELAY_MS, publish (keep=1) and
        print one JSON line {"version", "outcome": "live" | "stale" | "error", "detail"}.

    python -m tests.store._publisher kill STORE SEED
        For every line "N": fork a child that publishes (keep=2) and kills itself with
        SIGKILL at its N-th file-system step (N = 0: never) and print one JSON line
        {"status": wait status, "steps": [kinds of the steps it took]}. Steps are counted
        by an audit hook (open, rename, replace, remove, rmdir, mkdir, rmtree, flock) on
        paths inside STORE, so no saec code knows it is being tested.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np
import orjson

from saec.store.errors import StaleSnapshotError
from saec.store.hashing import hash_ids
from saec.store.writer import SnapshotWriter

STEP_EVENTS = {"open", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "fcntl.flock"}


def _fill(w: SnapshotWriter, rng: np.random.Generator) -> None:
    n = 300
    w.add_compressed_field(
        "user", hash_ids(np.arange(n), "user"), rng.normal(size=(8, 4)).astype(np.float32),
        rng.integers(0, 8, n).astype(np.uint8),
    )
    w.add_dense_field("item", hash_ids(np.arange(20), "item"), rng.normal(size=(20, 3)).astype(np.float32))


def _say(doc: dict) -> None:
    sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    sys.stdout.flush()


def _inside(path: object, real: str, store: str) -> bool:
    if not isinstance(path, (str, bytes, os.PathLike)):
        return False
    p = os.fsdecode(path)
    # Relative names are shutil.rmtree's, relative to a folder of the store it holds open.
    return not os.path.isabs(p) or p.startswith(real) or p.startswith(store)


def race(store: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for line in sys.stdin:
        delay = float(line.split()[1]) / 1000
        w = SnapshotWriter(store, source=f"race {seed}", keep=1)
        try:
            _fill(w, rng)
            time.sleep(delay)
            try:
                w.publish()
                _say({"version": w.version, "outcome": "live", "detail": ""})
            except StaleSnapshotError as exc:
                _say({"version": w.version, "outcome": "stale", "detail": str(exc)})
            except Exception as exc:
                _say({"version": w.version, "outcome": "error", "detail": repr(exc)})
        finally:
            if not w._published:
                w.discard()


def _publish_and_die(store: str, real: str, kill_at: int, wfd: int, rng: np.random.Generator) -> None:
    """The forked child: publish, with SIGKILL at the ``kill_at``-th step (0: never)."""
    steps: list[str] = []

    def hook(event: str, args: tuple) -> None:
        if event not in STEP_EVENTS:
            return
        if event != "fcntl.flock" and not _inside(args[0] if args else None, real, store):
            return
        steps.append(event)
        os.write(wfd, (event + "\n").encode())
        if len(steps) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    w = SnapshotWriter(store, source=f"kill {kill_at}", keep=2)
    _fill(w, rng)
    sys.addaudithook(hook)
    try:
        w.publish()
    except BaseException:
        os._exit(3)
    os._exit(0)


def kill(store: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    real = os.path.realpath(store)
    for line in sys.stdin:
        kill_at = int(line)
        r, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _publish_and_die(store, real, kill_at, wfd, rng)
        os.close(wfd)
        with os.fdopen(r) as fh:
            seen = fh.read().split()
        _, status = os.waitpid(pid, 0)
        _say({"status": status, "steps": seen})


if __name__ == "__main__":
    mode, store_arg, seed_arg = sys.argv[1:4]
    {"race": race, "kill": kill}[mode](store_arg, int(seed_arg))
