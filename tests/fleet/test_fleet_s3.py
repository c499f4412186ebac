"""A fleet on a store in object storage (moto's S3 server): two replicas each with their
own cache folder, one serving every field and one a share, sharing an update log; a
snapshot published to the bucket mid-stream replays the log's newer entries on both."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from bench._redis import RedisServer
from saec.cli import main
from saec.clients import SaecClient
from saec.store import remote
from saec.store.assign_index import exact_nearest
from tests.conftest import moto_s3, write_small_store
from tests.fleet.conftest import TOKEN, Replica, fold_copy, log_url

pytest.importorskip("moto")
pytest.importorskip("s3fs")

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """moto's standalone S3 server on loopback, with one bucket."""
    import s3fs

    with moto_s3(tmp_path) as options:
        s3fs.S3FileSystem(**options, skip_instance_cache=True).mkdir("fleet")
        yield options


def test_replicas_of_a_bucket_apply_the_log_onto_each_snapshot_published(
    s3: dict[str, Any], redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = "s3://fleet/store"
    local = tmp_path / "local"
    data = write_small_store(local, np.random.default_rng(11), n=3000, k=32)
    remote.publish_snapshot(local, data["version"], bucket, storage_options=s3)
    env = {"FSSPEC_S3_ENDPOINT_URL": s3["endpoint_url"], "FSSPEC_S3_KEY": "testing", "FSSPEC_S3_SECRET": "testing"}
    url = log_url(redis_server)
    caches = [tmp_path / "cache-a", tmp_path / "cache-b"]
    replicas = [
        Replica(caches[0], url, "--store-cache", str(caches[0]), store_arg=bucket, **env),
        Replica(caches[1], url, "--store-cache", str(caches[1]), "--fields", "user", store_arg=bucket, **env),
    ]
    rng = np.random.default_rng(12)
    sent: list[tuple[np.ndarray, np.ndarray]] = []

    def post(n: int) -> None:
        for i in range(n):
            ids = np.arange(10**12 + 1000 * len(sent), 10**12 + 1000 * len(sent) + 50)
            vectors = rng.normal(size=(50, 9)).astype(np.float32)
            with SaecClient(replicas[i % 2].url) as c:
                answer = c.update({"user": (ids, vectors)}, token=TOKEN)
            assert answer["applied"], answer  # read-your-writes on the replica that took it
            sent.append((ids, vectors))

    try:
        for r in replicas:
            r.wait_ready()
        post(10)
        # The next snapshot: a fold of what replica A applied, covering it, published to the bucket.
        version, covered = fold_copy(caches[0], tmp_path / "staging")
        assert covered is not None
        post(6)  # not in the fold: replayed from the log onto it
        remote.publish_snapshot(tmp_path / "staging", version, bucket, storage_options=s3)
        deadline = time.monotonic() + 60
        for r in replicas:
            while httpx.get(r.url + "/snapshot", timeout=30).json()["version"] != version:
                assert time.monotonic() < deadline, f"{r.store.name} did not swap to {version}"
                time.sleep(0.1)
        post(4)
        ids = np.concatenate([s[0] for s in sent])
        expected = np.concatenate([data["codebook"][exact_nearest(data["codebook"], s[1])] for s in sent])
        answers = []
        for r in replicas:
            with SaecClient(r.url) as c:
                got = c.lookup({"user": ids})["user"]
            assert got.found.all(), f"{r.store.name}: {(~got.found).sum()} ids not served"
            answers.append(got.vectors)
        assert answers[0].tobytes() == answers[1].tobytes()
        assert (answers[0] == expected).all(axis=1).mean() > 0.995  # aliases of stored rows aside
        # Each cache holds the new base's frames: exactly the log's entries after the watermark
        # (the 10 posted after the fold, and any replica A had not applied when it was copied).
        from saec.store.deltas import read_all
        from saec.store.updatelog import open_update_log

        ulog = open_update_log(url)
        newer = [e.position for e in ulog.read_after(ulog.position_at_time(covered), count=1000)]
        frames = [[f.source for f in read_all(c / "deltas" / version)] for c in caches]
        assert frames[0] == frames[1] == newer and len(newer) >= 10
        # Retention reads the bucket's kept snapshots: the first records no watermark, so
        # nothing may go yet.
        import fsspec.config

        monkeypatch.setitem(fsspec.config.conf, "s3", dict(s3))
        assert main(["trim-log", "--store", bucket, "--update-log", url]) == 0
        out = capsys.readouterr().out
        assert f"{version}  covers updates until {covered}" in out and "nothing trimmed" in out
        assert ulog.lag(None).entries == len(sent)
    finally:
        for r in replicas:
            r.close()
        shutil.rmtree(tmp_path / "staging", ignore_errors=True)
