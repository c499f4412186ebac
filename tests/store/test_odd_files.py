"""Odd files in a store: the reload refuses them, keeps serving, says what is wrong,
and ``saec verify`` finds the unsafe ones."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from saec import cli
from saec.store.errors import BadCurrentError, UnsafeFileError
from saec.store.hashing import hash_ids
from saec.store.layout import StoreLayout
from saec.store.live import UNREADY_AFTER, LiveEngine
from saec.store.snapshot import open_snapshot
from saec.store.writer import SnapshotWriter


def _unpublished(root: Path, rng: np.random.Generator) -> Path:
    """A new snapshot in ``snapshots/``, not yet live."""
    with SnapshotWriter(root, source="odd") as w:
        w.add_dense_field("country", hash_ids([f"c{i}" for i in range(50)], "country"),
                          rng.normal(size=(50, 17)).astype(np.float32))
        version = w.publish(make_current=False)
    return root / "snapshots" / version


def _point_current(root: Path, version: str) -> None:
    """Write CURRENT as a foreign process might: no checks."""
    (root / ".CURRENT.tmp").write_text(version + "\n")
    os.replace(root / ".CURRENT.tmp", root / "CURRENT")


def _current_bytes(root: Path, _: Path) -> None:
    (root / "CURRENT").write_bytes(b"\xff\xfe\x00garbage\x80")


def _current_dir(root: Path, _: Path) -> None:
    (root / "CURRENT").unlink()
    (root / "CURRENT").mkdir()


def _current_fifo(root: Path, _: Path) -> None:
    (root / "CURRENT").unlink()
    os.mkfifo(root / "CURRENT")


def _zarr_json_dir(root: Path, snap: Path) -> None:
    meta = snap / "country" / "vectors" / "zarr.json"
    meta.unlink()
    meta.mkdir()
    _point_current(root, snap.name)


def _chunk_fifo(root: Path, snap: Path) -> None:
    chunk = snap / "country" / "vectors" / "c" / "0" / "0"
    chunk.unlink()
    os.mkfifo(chunk)
    _point_current(root, snap.name)


def _field_escapes(root: Path, snap: Path) -> None:
    # A field named ../../x: its arrays would be read from two folders above the snapshot.
    outside = snap.parent.parent.parent / "x"
    shutil.copytree(snap / "country", outside)
    doc = orjson.loads((snap / "zarr.json").read_bytes())
    m = doc["attributes"]["saec"]
    m["fields"]["../../x"] = m["fields"].pop("country")
    m["arrays"] = {p.replace("country/", "../../x/"): a for p, a in m["arrays"].items()}
    (snap / "zarr.json").write_bytes(orjson.dumps(doc))
    _point_current(root, snap.name)


def _symlinked_snapshot(root: Path, snap: Path) -> None:
    elsewhere = root.parent / "elsewhere" / snap.name
    elsewhere.parent.mkdir()
    shutil.move(snap, elsewhere)
    snap.symlink_to(elsewhere, target_is_directory=True)
    _point_current(root, snap.name)


def _symlinked_chunk(root: Path, snap: Path) -> None:
    chunk = snap / "country" / "vectors" / "c" / "0" / "0"
    outside = root.parent / "outside-chunk"
    shutil.move(chunk, outside)
    chunk.symlink_to(outside)
    _point_current(root, snap.name)


CASES: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "current-not-utf8": (_current_bytes, "BadCurrentError"),
    "current-directory": (_current_dir, "a folder"),
    "current-fifo": (_current_fifo, "a FIFO"),
    "zarr-json-directory": (_zarr_json_dir, "a folder"),
    "chunk-fifo": (_chunk_fifo, "a FIFO"),
    "field-name-escapes": (_field_escapes, "../../x"),
    "symlinked-snapshot": (_symlinked_snapshot, "resolves to"),
    "symlinked-chunk": (_symlinked_chunk, "resolves to"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_reload_refuses_odd_files_and_keeps_serving(
    case: str, small_store: tuple[Path, dict], rng: np.random.Generator
) -> None:
    root, data = small_store
    damage, says = CASES[case]
    live = LiveEngine(root, interval=0.05)
    serving = live.engine
    assert serving is not None and serving.version == data["version"]
    snap = _unpublished(root, rng)
    damage(root, snap)
    started = time.monotonic()
    outcome = live.reload()  # must return, not raise and not block
    assert time.monotonic() - started < 5
    assert outcome.error is not None and says in outcome.error, outcome
    assert live.engine is serving and live.errors == 1
    assert live.last_error_at is not None and says in (live.last_error or "")
    # Served all along: the old engine still answers.
    assert live.engine.lookup({"country": hash_ids(["c1"], "country")}).version == data["version"]
    assert live.unready_reason() is None
    time.sleep(UNREADY_AFTER * 0.05 + 0.05)
    live.reload()
    reason = live.unready_reason()
    assert reason is not None and f"still serving {data['version']}" in reason
    # The operator repairs the store; the next reload serves again and is ready.
    for leftover in (root / "CURRENT",):
        if leftover.is_dir() and not leftover.is_symlink():
            leftover.rmdir()
        elif leftover.exists() or leftover.is_symlink():
            leftover.unlink()
    fixed = _unpublished(root, rng)
    StoreLayout(root).set_current(fixed.name)
    assert live.reload(force=True).changed
    assert live.engine.version == fixed.name and live.unready_reason() is None


@pytest.mark.parametrize("case", ["field-name-escapes", "symlinked-snapshot", "symlinked-chunk"])
def test_verify_refuses_paths_that_leave_the_store(
    case: str, small_store: tuple[Path, dict], rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    root, data = small_store
    snap = _unpublished(root, rng)
    CASES[case][0](root, snap)
    assert cli.main(["verify", "--store", str(root), "--version", snap.name]) == 2
    assert "verify" in capsys.readouterr().err
    assert cli.main(["verify", "--store", str(root), "--version", data["version"]]) == 0


def test_verify_refuses_a_symlink_out_of_a_snapshot_even_unread(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    snap = root / "snapshots" / data["version"]
    (snap / "country" / "notes").symlink_to("/etc/hostname")
    open_snapshot(snap)  # the reader never opens it
    with pytest.raises(UnsafeFileError, match="leading outside"):
        open_snapshot(snap).verify()


def test_current_must_name_a_version(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "CURRENT").write_text("../../etc\n")
    with pytest.raises(BadCurrentError, match="expected one line naming a version"):
        StoreLayout(tmp_path).current()


def test_manifest_names_must_be_plain(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    snap = root / "snapshots" / data["version"]
    doc = orjson.loads((snap / "zarr.json").read_bytes())
    doc["attributes"]["saec"]["arrays"]["user/../../../x"] = doc["attributes"]["saec"]["arrays"]["user/masks"]
    (snap / "zarr.json").write_bytes(orjson.dumps(doc))
    with pytest.raises(UnsafeFileError, match="plain names"):
        open_snapshot(snap)


def test_reload_survives_any_exception(small_store: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    root, data = small_store
    live = LiveEngine(root, interval=1)

    def boom(version: str) -> None:
        raise MemoryError("no room")

    with SnapshotWriter(root) as w:
        w.add_dense_field("d", hash_ids(np.arange(3), "d"), np.ones((3, 2), np.float32))
        w.publish()
    monkeypatch.setattr(live, "_open", boom)
    outcome = live.reload()
    assert outcome.error == f"{StoreLayout(root).current()}: MemoryError: no room"
    assert live.engine is not None and live.engine.version == data["version"]
