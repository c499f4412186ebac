"""A gRPC Update on one replica of a fleet reaches the others through the shared log."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from bench._redis import RedisServer
from saec.clients import SaecClient
from saec.store.assign_index import exact_nearest
from tests.fleet.conftest import TOKEN, Replica, _free_port, log_url, replica_stores

pytest.importorskip("grpc")

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_a_grpc_update_is_served_by_every_replica(redis_server: RedisServer, tmp_path: Path) -> None:
    from saec.clients.grpc_client import SaecGrpcClient

    stores, data = replica_stores(tmp_path, 2)
    port = _free_port()
    url = log_url(redis_server)
    replicas = [Replica(stores[0], url, SAEC_GRPC_PORT=str(port)), Replica(stores[1], url)]
    try:
        for r in replicas:
            r.wait_ready()
        ids = np.arange(10**12, 10**12 + 200)
        vectors = np.random.default_rng(4).normal(size=(200, 9)).astype(np.float32)
        deadline = time.monotonic() + 60
        while True:  # the worker binds the gRPC port as its app starts
            try:
                with SaecGrpcClient(f"127.0.0.1:{port}") as rpc:
                    answer = rpc.update({"user": (ids, vectors)}, token=TOKEN)
                break
            except Exception:
                assert time.monotonic() < deadline, "gRPC did not answer"
                time.sleep(0.2)
        assert answer["base"] == data["version"] and answer["sequence"] == 1  # the first entry of the log
        expected = data["codebook"][exact_nearest(data["codebook"], vectors)]
        with SaecClient(replicas[1].url) as c:
            while not (got := c.lookup({"user": ids})["user"]).found.all():
                assert time.monotonic() < deadline, "the other replica did not apply the gRPC update"
                time.sleep(0.01)
        assert np.array_equal(got.vectors, expected)
    finally:
        for r in replicas:
            r.close()
