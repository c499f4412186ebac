"""Publishing under faults, with real processes: two publishers at once, kill -9 at every
step of a publish and of its pruning, and leftovers of interrupted work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest

from saec import cli
from saec.store.errors import StaleSnapshotError
from saec.store.hashing import hash_ids
from saec.store.layout import StoreLayout
from saec.store.snapshot import open_snapshot
from saec.store.writer import SnapshotWriter

REPO = Path(__file__).resolve().parents[2]


class Publisher:
    """``python -m tests.store._publisher MODE STORE SEED``, spoken to one line at a time."""

    def __init__(self, mode: str, store: Path, seed: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.store._publisher", mode, str(store), str(seed)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"publisher exited with {self.proc.wait()}"
        return orjson.loads(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def publishers(tmp_path: Path) -> Iterator[tuple[Path, Publisher, Publisher]]:
    store = tmp_path / "store"
    a, b = Publisher("race", store, 1), Publisher("race", store, 2)
    try:
        yield store, a, b
    finally:
        a.close()
        b.close()


def _assert_sound(store: Path) -> str:
    """CURRENT names a snapshot that opens and verifies; no command trips on the store."""
    layout = StoreLayout(store)
    live = layout.current()
    open_snapshot(layout.snapshot_dir(live)).verify()
    for v in layout.versions():
        open_snapshot(layout.snapshot_dir(v))  # nothing half-deleted inside snapshots/
    return live


def _leftovers(store: Path) -> list[str]:
    found = [p.name for p in store.glob(".CURRENT.*")]
    for folder in (store / ".partial", store / ".trash"):
        if folder.is_dir():
            found += [f"{folder.name}/{p.name}" for p in folder.iterdir()]
    return found


def test_two_publishers_at_once_leave_the_newer_live(publishers: tuple[Path, Publisher, Publisher]) -> None:
    store, a, b = publishers
    rng = np.random.default_rng(0)
    stale = 0
    for _ in range(20):
        da, db = rng.integers(0, 30, 2)
        a.send(f"go {da}")
        b.send(f"go {db}")
        ra, rb = a.receive(), b.receive()
        assert {ra["outcome"], rb["outcome"]} <= {"live", "stale"}, (ra, rb)
        newer, older = sorted([ra, rb], key=lambda r: r["version"], reverse=True)
        # The newer version is always live: either it published last, or it published
        # first and the older one was refused (and said so).
        assert _assert_sound(store) == newer["version"]
        assert newer["outcome"] == "live"
        if older["outcome"] == "stale":
            stale += 1
            assert "saec rollback" in older["detail"] and newer["version"] in older["detail"]
        assert not _leftovers(store)
    # Both orders happened; otherwise this test proved nothing about the race.
    assert 0 < stale < 20


def test_stale_publish_is_kept_but_not_made_live(tmp_path: Path, rng: np.random.Generator) -> None:
    keys = hash_ids(np.arange(10), "d")
    early = SnapshotWriter(tmp_path)
    early.add_dense_field("d", keys, rng.normal(size=(10, 3)).astype(np.float32))
    with SnapshotWriter(tmp_path) as late:
        late.add_dense_field("d", keys, rng.normal(size=(10, 3)).astype(np.float32))
        newer = late.publish()
    with pytest.raises(StaleSnapshotError, match="older than the live"):
        early.publish()
    layout = StoreLayout(tmp_path)
    assert layout.current() == newer
    assert early.version in layout.versions()
    # Going back is a rollback's job, and it can.
    assert layout.rollback(early.version) == early.version


@pytest.mark.long
def test_kill_9_at_every_step_of_publish_and_prune(tmp_path: Path) -> None:
    store = (tmp_path / "store").resolve()
    zygote = Publisher("kill", store, 3)
    try:
        for _ in range(3):  # enough snapshots that every publish prunes one (keep=2)
            zygote.send("0")
            assert os.WIFEXITED(zygote.receive()["status"])
        zygote.send("0")
        steps = zygote.receive()["steps"]
        kinds = Counter(steps)
        # Every kind of step a publish takes is among those killed at.
        assert {"os.rename", "fcntl.flock", "shutil.rmtree", "os.remove", "os.rmdir", "open"} <= set(kinds), kinds
        # Every step that changes what others see, and every fifth of the opens and
        # deletions that repeat per file (all of them cost ~0.2 s each of fsyncs).
        points = [i + 1 for i, kind in enumerate(steps) if kind not in ("open", "os.remove", "os.rmdir") or i % 5 == 0]
        killed = 0
        for at in points:
            zygote.send(str(at))
            status = zygote.receive()["status"]
            if os.WIFSIGNALED(status):
                assert os.WTERMSIG(status) == signal.SIGKILL
                killed += 1
            else:  # clean-up of earlier leftovers shifted the steps; it completed
                assert os.WEXITSTATUS(status) == 0
            _assert_sound(store)
            assert cli.main(["snapshots", "--store", str(store)]) == 0
        assert killed > len(points) * 0.9
        assert _leftovers(store), "kills left nothing behind: the test did not interrupt anything"
        zygote.send("0")
        assert zygote.receive()["status"] == 0
        _assert_sound(store)
        assert not _leftovers(store)
        assert len(StoreLayout(store).versions()) == 2
    finally:
        zygote.close()


def test_leftovers_are_ignored_and_removed_by_the_next_publish(
    small_store: tuple[Path, dict], rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    root, data = small_store
    layout = StoreLayout(root)
    (root / ".partial" / "20200101T000000.000000Z-dead").mkdir(parents=True)
    (root / ".CURRENT.1234abcd").write_text("garbage")
    (root / ".trash" / "20200101T000000.000000Z-beef.0000").mkdir(parents=True)
    # A writer that is alive: its partial folder must survive everyone's clean-up.
    alive = SnapshotWriter(root)
    assert cli.main(["snapshots", "--store", str(root)]) == 0
    assert data["version"] in capsys.readouterr().out
    with SnapshotWriter(root) as w:
        w.add_dense_field("d", hash_ids(np.arange(5), "d"), rng.normal(size=(5, 2)).astype(np.float32))
        w.publish()
    assert sorted(_leftovers(root)) == [f".partial/{alive.version}", f".partial/{alive.version}.lock"]
    alive.discard()
    assert layout.clean() == [] and not _leftovers(root)


def test_damaged_snapshot_is_listed_and_never_rolled_back_to(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    versions = []
    for _ in range(3):
        with SnapshotWriter(tmp_path) as w:
            w.add_dense_field("d", hash_ids(np.arange(10), "d"), rng.normal(size=(10, 3)).astype(np.float32))
            versions.append(w.publish())
    # What an interrupted deletion by an older saec left: a folder missing its files.
    (tmp_path / "snapshots" / versions[1] / "d" / "vectors" / "c" / "0" / "0").unlink()
    assert cli.main(["snapshots", "--store", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{versions[1]}  DAMAGED" in out and f"* {versions[2]}" in out
    assert cli.main(["rollback", "--store", str(tmp_path)]) == 0
    assert f"CURRENT -> {versions[0]}" in capsys.readouterr().out
    assert cli.main(["rollback", "--store", str(tmp_path), "--to", versions[1]]) == 2
    assert "missing" in capsys.readouterr().err
    assert StoreLayout(tmp_path).current() == versions[0]
