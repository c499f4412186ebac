"""gRPC against a real `saec serve --workers 2` on loopback: every worker serves it, and
updates and hot reloads show through gRPC exactly as through HTTP."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from saec.clients import SaecClient, UnknownFieldError
from saec.clients.client import FieldVectors, Lookup
from saec.clients.errors import InvalidRequestError, RequestTooLargeError
from saec.clients.grpc_client import SaecGrpcClient
from saec.server.metrics_dir import counts_by_pid
from saec.store.assign_index import CentroidIndex
from saec.v1 import saec_pb2, saec_pb2_grpc
from tests.conftest import write_small_store
from tests.e2e.test_uvicorn import Server

pytestmark = pytest.mark.slow
TOKEN = "grpc-e2e-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, root: Path, data: dict) -> None:
        self.root = root
        self.data = data
        self.metrics = root.parent / "metrics"
        self.grpc_port = _free_port()
        self.target = f"127.0.0.1:{self.grpc_port}"
        self.server = Server(
            root, SAEC_WORKERS="2", SAEC_ADMIN_TOKEN=TOKEN, SAEC_RELOAD_INTERVAL="0.5", SAEC_MAX_IDS="5000",
            SAEC_GRPC_PORT=str(self.grpc_port), PROMETHEUS_MULTIPROC_DIR=str(self.metrics),
        )

    def fresh_lookup(self, fields: list[saec_pb2.FieldIds]) -> saec_pb2.LookupResponse:
        """One lookup on a new connection (no shared subchannel), so either worker may take it."""
        with grpc.insecure_channel(self.target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            return saec_pb2_grpc.EmbeddingServiceStub(channel).Lookup(
                saec_pb2.LookupRequest(fields=fields), timeout=10
            )

    def grpc_lookups_by_worker(self) -> dict[int, float]:
        return counts_by_pid(str(self.metrics), "saec_requests_total", '"grpc"', "Lookup")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("grpc2") / "store"
    data = write_small_store(root, np.random.default_rng(11), n=20_000, k=64)
    s = Served(root, data)
    try:
        # Each worker binds the gRPC port as its app starts: wait until both answer.
        deadline = time.monotonic() + 60
        while sum(1 for n in s.grpc_lookups_by_worker().values() if n) < 2:
            assert time.monotonic() < deadline, f"gRPC not served by 2 workers: {s.grpc_lookups_by_worker()}"
            try:
                s.fresh_lookup([saec_pb2.FieldIds(field="user", ids=[3])])
            except grpc.RpcError:
                time.sleep(0.2)
        yield s
    finally:
        s.server.stop()


def _vectors(answer: saec_pb2.LookupResponse, field: str) -> tuple[np.ndarray, np.ndarray]:
    (f,) = [f for f in answer.fields if f.field == field]
    return np.frombuffer(f.vectors, "<f4").reshape(f.count, f.dim), np.frombuffer(f.found, np.bool_)


def test_the_grpc_client_returns_what_the_http_client_returns(served: Served) -> None:
    ids = np.concatenate([served.data["user_ids"][:7000:3], [-5, 10**14]])  # > max_ids: split in two calls
    with SaecClient(served.server.url) as http, SaecGrpcClient(served.target) as rpc:
        want, got = http.lookup({"user": ids, "country": ["c3", "zz"]}), rpc.lookup({"user": ids, "country": ["c3", "zz"]})
        assert rpc.snapshot()["limits"] == http.snapshot()["limits"] == {"max_ids": 5000, "max_body_bytes": 16 * 1024 * 1024}
        assert rpc.memory()["total"] == http.memory()["total"]
        for client in (http, rpc):
            with pytest.raises(UnknownFieldError) as unknown:
                client.lookup({"nope": [1]})
            assert unknown.value.status == 404 and unknown.value.problem["type"].endswith("/unknown-field")
        with pytest.raises(InvalidRequestError) as unauthorized:
            rpc.update({"user": ([1], np.zeros((1, 9)))}, token="wrong")
        assert unauthorized.value.status == 401
        with pytest.raises(RequestTooLargeError):
            SaecGrpcClient(served.target, max_ids=10**6).lookup({"user": np.arange(6000)})
    assert type(got) is Lookup and type(got["user"]) is FieldVectors
    assert got.versions == want.versions == (served.data["version"],)
    for field in ("user", "country"):
        assert np.array_equal(got[field].vectors, want[field].vectors)
        assert np.array_equal(got[field].found, want[field].found)
    assert got["user"].found.sum() == len(ids) - 2


def test_updates_through_grpc_and_http_show_on_every_worker_in_both(served: Served) -> None:
    rng = np.random.default_rng(2)
    ids = np.arange(9 * 10**11, 9 * 10**11 + 300)
    vectors = rng.normal(size=(300, 9)).astype(np.float32)
    nearest = CentroidIndex(served.data["codebook"]).nearest(vectors)
    with SaecGrpcClient(served.target) as rpc:
        answer = rpc.update({"user": (ids, vectors)}, token=TOKEN)
    assert answer["base"] == served.data["version"] and answer["fields"]["user"]["new"] == 300
    before = served.grpc_lookups_by_worker()
    for _ in range(30):  # right after the acknowledgement, on new connections
        got, found = _vectors(served.fresh_lookup([saec_pb2.FieldIds(field="user", ids=ids[::30].tolist())]), "user")
        assert found.all() and np.array_equal(got, served.data["codebook"][nearest[::30]])
        with httpx.Client(base_url=served.server.url, timeout=10) as c:
            doc = c.post("/lookup", json={"fields": {"user": ids[::30].tolist()}}, headers={"connection": "close"}).json()
        assert np.array_equal(np.array(doc["fields"]["user"]["vectors"], np.float32), got)
    after = served.grpc_lookups_by_worker()
    assert sum(1 for pid in after if after[pid] > before.get(pid, 0)) == 2, (before, after)  # both workers answered
    # Through HTTP now; gRPC on every worker sees it at once.
    with httpx.Client(base_url=served.server.url) as c:
        r = c.post("/admin/updates", headers={"authorization": f"Bearer {TOKEN}"},
                   json={"fields": {"country": {"ids": ["c7"], "vectors": [[2.5] * 17]}}})
    assert r.status_code == 200 and r.json()["fields"]["country"]["reassigned"] == 1
    for _ in range(20):
        got, found = _vectors(served.fresh_lookup([saec_pb2.FieldIds(field="country", keys=["c7"])]), "country")
        assert found.all() and got.tolist() == [[2.5] * 17]


def test_a_hot_reload_shows_through_grpc_on_every_worker(served: Served) -> None:
    new = write_small_store(served.root, np.random.default_rng(12), n=20_000, k=64)
    assert new["version"] != served.data["version"]
    want = new["codebook"][new["masks"][:5]]
    deadline = time.monotonic() + 30
    streak = 0
    while streak < 20:  # 20 new connections in a row answered by the new snapshot
        assert time.monotonic() < deadline, "the new snapshot did not reach every worker's gRPC"
        answer = served.fresh_lookup([saec_pb2.FieldIds(field="user", ids=new["user_ids"][:5].tolist())])
        if answer.version == new["version"]:
            assert np.array_equal(_vectors(answer, "user")[0], want)
            streak += 1
        else:
            assert answer.version == served.data["version"]  # the old one, whole, until the swap
            streak = 0
            time.sleep(0.1)
    with grpc.insecure_channel(served.target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        status = saec_pb2_grpc.EmbeddingServiceStub(channel).GetSnapshot(saec_pb2.GetSnapshotRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING and status.version == new["version"]
    with SaecClient(served.server.url) as http:
        assert http.snapshot()["version"] == new["version"]
