"""Snapshots through object storage, against moto's S3 server in a process of its own."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto")

from saec.cli import main  # noqa: E402
from saec.clients import SaecClient  # noqa: E402
from saec.store import remote  # noqa: E402
from saec.store.errors import CorruptSnapshotError  # noqa: E402
from saec.store.layout import StoreLayout  # noqa: E402
from saec.store.snapshot import open_current  # noqa: E402
from saec.synthetic import generate_field  # noqa: E402
from tests.conftest import moto_s3, write_small_store  # noqa: E402
from tests.e2e.test_uvicorn import Server  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """moto's standalone S3 server on loopback; storage options that reach it."""
    with moto_s3(tmp_path_factory.mktemp("moto")) as options:
        yield options


@pytest.fixture
def bucket(s3: dict[str, Any], request: pytest.FixtureRequest) -> str:
    fs = s3fs.S3FileSystem(**s3, skip_instance_cache=True)
    name = "saec-" + request.node.name.replace("_", "-")[:40].lower()
    fs.mkdir(name)
    return f"s3://{name}/store"


def _remote_fs(s3: dict[str, Any]) -> Any:
    return s3fs.S3FileSystem(**s3, skip_instance_cache=True)


def test_publish_then_mirror_gives_the_same_arrays(s3: dict, bucket: str, tmp_path: Path) -> None:
    local = tmp_path / "local"
    data = write_small_store(local, np.random.default_rng(2))
    remote.publish_snapshot(local, data["version"], bucket, storage_options=s3)
    fs = _remote_fs(s3)
    assert fs.cat_file(f"{bucket}/CURRENT").decode().strip() == data["version"]
    mirror = remote.StoreMirror(bucket, tmp_path / "cache", storage_options=s3)
    assert mirror.sync() == data["version"]
    copy, original = open_current(tmp_path / "cache"), open_current(local)
    copy.verify()
    assert copy.manifest == original.manifest
    assert np.array_equal(copy.fields["user"].masks, original.fields["user"].masks)
    assert not list((tmp_path / "cache" / ".partial").iterdir())


def test_a_corrupted_upload_leaves_current_alone(s3: dict, bucket: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    local = tmp_path / "local"
    first = write_small_store(local, np.random.default_rng(2))["version"]
    remote.publish_snapshot(local, first, bucket, storage_options=s3)
    second = write_small_store(local, np.random.default_rng(3))["version"]
    real_filesystem = remote._filesystem

    class FlipOneByte:
        """The real file system, except that one array goes up with a bit flipped."""

        def __init__(self, fs: Any) -> None:
            self.fs = fs

        def __getattr__(self, name: str) -> Any:
            return getattr(self.fs, name)

        def put_file(self, lpath: str, rpath: str) -> None:
            if rpath.endswith("user/masks/c/0"):
                raw = bytearray(Path(lpath).read_bytes())
                raw[0] ^= 1
                self.fs.pipe_file(rpath, bytes(raw))
            else:
                self.fs.put_file(lpath, rpath)

    def flipping(url: str, options: Any) -> tuple[Any, str]:
        fs, root = real_filesystem(url, options)
        return FlipOneByte(fs), root

    monkeypatch.setattr(remote, "_filesystem", flipping)
    with pytest.raises(CorruptSnapshotError, match="user/masks/c/0: expected sha256"):
        remote.publish_snapshot(local, second, bucket, storage_options=s3)
    assert _remote_fs(s3).cat_file(f"{bucket}/CURRENT").decode().strip() == first


def test_mirror_refuses_a_tampered_snapshot_and_keeps_the_old(s3: dict, bucket: str, tmp_path: Path) -> None:
    local = tmp_path / "local"
    first = write_small_store(local, np.random.default_rng(2))["version"]
    remote.publish_snapshot(local, first, bucket, storage_options=s3)
    mirror = remote.StoreMirror(bucket, tmp_path / "cache", storage_options=s3)
    assert mirror.sync() == first
    second = write_small_store(local, np.random.default_rng(3))["version"]
    remote.publish_snapshot(local, second, bucket, storage_options=s3)
    fs = _remote_fs(s3)
    obj = f"{bucket}/snapshots/{second}/country/vectors/c/0/0"
    raw = bytearray(fs.cat_file(obj))
    raw[-1] ^= 0xFF
    fs.pipe_file(obj, bytes(raw))
    with pytest.raises(CorruptSnapshotError, match="country/vectors: expected sha256"):
        mirror.sync()
    assert StoreLayout(tmp_path / "cache").current() == first
    assert not (tmp_path / "cache" / "snapshots" / second).exists()
    assert not list((tmp_path / "cache" / ".partial").iterdir())


def test_a_shard_copies_only_its_fields(s3: dict, bucket: str, tmp_path: Path) -> None:
    local = tmp_path / "local"
    version = write_small_store(local, np.random.default_rng(2))["version"]
    remote.publish_snapshot(local, version, bucket, storage_options=s3)
    mirror = remote.StoreMirror(bucket, tmp_path / "cache", fields=["country"], storage_options=s3)
    mirror.sync()
    folder = tmp_path / "cache" / "snapshots" / version
    assert (folder / "country").is_dir() and not (folder / "user").exists()


def test_a_replica_on_an_empty_bucket_waits_for_the_first_snapshot(s3: dict, bucket: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec.config

    from saec.store.replica import ReplicaEngine, open_live

    monkeypatch.setitem(fsspec.config.conf, "s3", dict(s3))
    live = open_live(bucket, fields="user", cache=str(tmp_path / "cache"))
    assert isinstance(live, ReplicaEngine) and live.engine is None
    assert "expected an object CURRENT" in (live.last_error or "")
    local = tmp_path / "local"
    version = write_small_store(local, np.random.default_rng(2))["version"]
    remote.publish_snapshot(local, version, bucket, storage_options=s3)
    outcome = live.reload()
    assert outcome.changed and outcome.version == version and live.last_error is None
    assert live.engine is not None and list(live.engine.snapshot.fields) == ["user"]


def test_compress_out_url_and_serve_store_url(s3: dict, bucket: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """saec compress --out s3://... publishes what a local --out would; saec serve --store
    s3://... serves it and picks up the next snapshot published there."""
    import fsspec.config

    rng = np.random.default_rng(4)
    user = generate_field("user", 6000, 9, rng)
    path = tmp_path / "emb.npz"
    np.savez(path, **{"user.ids": user.ids, "user.vectors": user.vectors, "user.counts": user.counts})
    args = ["compress", str(path), "--k", "20", "--top-n", "2000", "--seed", "1"]
    # The command finds the endpoint the fsspec way: its configuration (FSSPEC_S3_* variables).
    monkeypatch.setitem(fsspec.config.conf, "s3", dict(s3))
    assert main([*args, "--out", bucket]) == 0
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    first = remote.StoreMirror(bucket, tmp_path / "check", storage_options=s3).sync()
    published = open_current(tmp_path / "check").manifest["arrays"]
    assert _stable(published) == _stable(open_current(tmp_path / "local").manifest["arrays"])

    env = {"FSSPEC_S3_ENDPOINT_URL": s3["endpoint_url"], "FSSPEC_S3_KEY": "testing", "FSSPEC_S3_SECRET": "testing",
           "SAEC_STORE_CACHE": str(tmp_path / "serve-cache"), "SAEC_RELOAD_INTERVAL": "0.3"}
    server = _serve_url(bucket, tmp_path, env)
    try:
        with SaecClient(server.url) as c:
            assert c.snapshot()["version"] == first
            got = c.lookup({"user": user.ids[:50]})
            local = open_current(tmp_path / "local").fields["user"]
            assert got["user"].found.all()
            assert np.isin(got["user"].vectors.view([("", np.float32)] * 9),
                           np.asarray(local.codebook).view([("", np.float32)] * 9)).all()
            assert main([*args, "--seed", "2", "--out", bucket]) == 0
            deadline = time.monotonic() + 30
            while c.snapshot()["version"] == first:
                assert time.monotonic() < deadline, "the server did not pick up the new snapshot"
                time.sleep(0.2)
        # Served from the local copy, which now holds both versions.
        assert StoreLayout(tmp_path / "serve-cache").versions()[0] == first
        assert StoreLayout(tmp_path / "serve-cache").current() != first
    finally:
        server.stop()


def _serve_url(url: str, tmp_path: Path, env: dict[str, str]) -> Server:
    """tests.e2e's Server, pointed at a URL rather than a folder."""
    return Server(_UrlPath(url, tmp_path), **env)


class _UrlPath(os.PathLike[str]):
    """A URL where Server expects a store folder: str() gives the URL, .parent a folder for its log."""

    def __init__(self, url: str, folder: Path) -> None:
        self.url, self.parent = url, folder

    def __fspath__(self) -> str:
        return self.url

    def __str__(self) -> str:
        return self.url


def test_file_urls_are_local_folders(tmp_path: Path) -> None:
    assert not remote.is_url(tmp_path) and not remote.is_url(f"file://{tmp_path}")
    assert remote.is_url("s3://b/store") and remote.is_url("gs://b/store") and remote.is_url("simplecache::s3://b/x")
    assert remote.local_path(f"file://{tmp_path}/store") == f"{tmp_path}/store"
    with remote.staged(f"file://{tmp_path}/store") as folder:
        assert folder == f"{tmp_path}/store"


def _update_file(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """New and existing ids for both fields of write_small_store, as an .npz for saec update."""
    rows = {"user": (np.concatenate([np.arange(10**9, 10**9 + 300), [3, 10]]),
                     rng.normal(size=(302, 9)).astype(np.float32)),
            "country": (np.array(["c1", "new-country"]), rng.normal(size=(2, 17)).astype(np.float32))}
    path = tmp_path / "updates.npz"
    np.savez(path, **{f"{n}.{part}": a for n, (ids, v) in rows.items() for part, a in (("ids", ids), ("vectors", v))})
    return path, rows


def test_fold_store_url_folds_the_mirror_deltas_and_publishes_as_compress_does(
        s3: dict, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """saec update --store URL --deltas MIRROR, then saec fold --store URL --deltas MIRROR:
    the store at the URL serves the updates, array for array what a local fold of the same
    base and deltas publishes."""
    import shutil

    import fsspec.config

    from saec.store.fold import fold
    from saec.store.live import LiveEngine

    local = tmp_path / "local"
    base = write_small_store(local, np.random.default_rng(6))["version"]
    remote.publish_snapshot(local, base, bucket, storage_options=s3)
    monkeypatch.setitem(fsspec.config.conf, "s3", dict(s3))
    mirror = tmp_path / "mirror"
    path, rows = _update_file(tmp_path, np.random.default_rng(7))
    assert main(["update", "--store", bucket, "--deltas", str(mirror), str(path)]) == 0
    assert StoreLayout(mirror).current() == base and (mirror / "deltas" / base).is_dir()
    shutil.copytree(mirror, tmp_path / "twin")  # the same base and deltas, folded locally below

    assert main(["fold", "--store", bucket, "--deltas", str(mirror)]) == 0
    folded = _remote_fs(s3).cat_file(f"{bucket}/CURRENT").decode().strip()
    assert folded != base and StoreLayout(mirror).current() == folded
    assert fold(tmp_path / "twin").base == base
    remote.StoreMirror(bucket, tmp_path / "check", storage_options=s3).sync()
    published = open_current(tmp_path / "check")
    assert published.version == folded
    published.verify()
    assert _stable(published.manifest["arrays"]) == _stable(open_current(tmp_path / "twin").manifest["arrays"])

    # Served from the bucket's copy with no deltas at all: the fold holds the updates.
    assert not (tmp_path / "check" / "deltas").exists()
    engine = LiveEngine(tmp_path / "check").engine
    assert engine is not None
    from saec.store.hashing import hash_ids

    country = engine.lookup_field("country", hash_ids(rows["country"][0], "country"))
    assert country.found.all() and country.vectors.tobytes() == rows["country"][1].tobytes()
    user = engine.lookup_field("user", hash_ids(rows["user"][0], "user"))
    assert user.found.all()
    assert published.fields["user"].rows == open_current(local).fields["user"].rows + 300


def test_fold_store_url_that_fails_its_upload_changes_nothing(s3: dict, bucket: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec.config

    from saec.store.fold import fold_remote

    local = tmp_path / "local"
    base = write_small_store(local, np.random.default_rng(6))["version"]
    remote.publish_snapshot(local, base, bucket, storage_options=s3)
    monkeypatch.setitem(fsspec.config.conf, "s3", dict(s3))
    mirror = tmp_path / "mirror"
    path, _ = _update_file(tmp_path, np.random.default_rng(7))
    assert main(["update", "--store", bucket, "--deltas", str(mirror), str(path)]) == 0
    frames = sorted(p.name for p in (mirror / "deltas" / base).iterdir())

    real_filesystem = remote._filesystem

    class Truncating:
        """The real file system, except that the user masks go up cut short."""

        def __init__(self, fs: Any) -> None:
            self.fs = fs

        def __getattr__(self, name: str) -> Any:
            return getattr(self.fs, name)

        def put_file(self, lpath: str, rpath: str) -> None:
            if rpath.endswith("user/masks/c/0"):
                self.fs.pipe_file(rpath, Path(lpath).read_bytes()[:-1])
            else:
                self.fs.put_file(lpath, rpath)

    monkeypatch.setattr(remote, "_filesystem", lambda url, options: (Truncating(real_filesystem(url, options)[0]),
                                                                      real_filesystem(url, options)[1]))
    with pytest.raises(CorruptSnapshotError, match="user/masks/c/0: expected"):
        fold_remote(bucket, mirror)
    # Neither CURRENT moved; the deltas are all still there for the next fold.
    assert _remote_fs(s3).cat_file(f"{bucket}/CURRENT").decode().strip() == base
    assert StoreLayout(mirror).current() == base
    assert sorted(p.name for p in (mirror / "deltas" / base).iterdir()) == frames
    monkeypatch.setattr(remote, "_filesystem", real_filesystem)
    assert fold_remote(bucket, mirror).base == base


def test_fold_and_update_on_a_url_need_a_local_deltas_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["fold", "--store", "s3://nowhere/store"]) != 0
    assert "expected --deltas MIRROR" in capsys.readouterr().err
    assert main(["fold", "--store", str(tmp_path), "--deltas", str(tmp_path / "m")]) != 0
    assert "expected --deltas only with a store at a URL" in capsys.readouterr().err
    path, _ = _update_file(tmp_path, np.random.default_rng(1))
    assert main(["update", "--store", "s3://nowhere/store", str(path)]) != 0
    assert "expected --deltas MIRROR" in capsys.readouterr().err


def test_a_replica_on_a_bucket_keeps_http_updates_in_its_cache_and_fold_publishes_them(
        s3: dict, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """POST /admin/updates on a replica serving s3://... lands in its cache folder; `saec fold
    --store s3://... --deltas CACHE` publishes them to the bucket and the replica swaps in the
    fold, still serving them, with no deltas pending."""
    import fsspec.config

    local = tmp_path / "local"
    base = write_small_store(local, np.random.default_rng(6))["version"]
    remote.publish_snapshot(local, base, bucket, storage_options=s3)
    cache = tmp_path / "serve-cache"
    env = {"FSSPEC_S3_ENDPOINT_URL": s3["endpoint_url"], "FSSPEC_S3_KEY": "testing", "FSSPEC_S3_SECRET": "testing",
           "SAEC_STORE_CACHE": str(cache), "SAEC_RELOAD_INTERVAL": "0.3", "SAEC_ADMIN_TOKEN": "bucket-token"}
    vectors = np.random.default_rng(8).normal(size=(3, 17)).astype(np.float32)
    ids = ["fresh-1", "fresh-2", "c3"]
    server = _serve_url(bucket, tmp_path, env)
    try:
        with SaecClient(server.url) as c:
            assert c.update({"country": (ids, vectors)}, token="bucket-token")["base"] == base
            assert (cache / "deltas" / base).is_dir()
            monkeypatch.setitem(fsspec.config.conf, "s3", dict(s3))
            assert main(["fold", "--store", bucket, "--deltas", str(cache)]) == 0
            folded = _remote_fs(s3).cat_file(f"{bucket}/CURRENT").decode().strip()
            assert folded != base
            deadline = time.monotonic() + 30
            while (snap := c.snapshot())["version"] != folded:
                assert time.monotonic() < deadline, "the replica did not pick up the fold"
                time.sleep(0.2)
            got = c.lookup({"country": ids})["country"]
        assert got.found.all() and got.vectors.tobytes() == vectors.tobytes()
        assert not snap["deltas"]["fields"]
    finally:
        server.stop()


def _stable(arrays: dict) -> dict:
    """The manifest's arrays without the HNSW index's checksum: its file holds a few words of
    memory addresses besides the graph (docs/FORMAT.md), so two writes differ there."""
    return {p: {k: v for k, v in a.items() if not (p.endswith("/hnsw") and k == "sha256")} for p, a in arrays.items()}
