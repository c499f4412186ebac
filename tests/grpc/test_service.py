"""saec.v1 over gRPC in-process: the app's lifespan starts the gRPC server on the test's
loop, beside the same app answering HTTP over ASGI; answers, errors, updates, health,
reflection and metrics are compared with HTTP's."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import grpc
import httpx
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from saec.clients.grpc_client import encode_lookup, encode_update
from saec.server import problems
from saec.server.app import create_app
from saec.settings import Settings
from saec.store import deltas
from saec.store.hashing import hash_ids
from saec.v1 import saec_pb2, saec_pb2_grpc
from saec.wire import IDS_MEDIA_TYPE, VECTORS_MEDIA_TYPE, decode_vectors, encode_ids

pytestmark = pytest.mark.anyio
TOKEN = "grpc-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def served(
    root: Path, **settings: object
) -> AsyncIterator[tuple[httpx.AsyncClient, saec_pb2_grpc.EmbeddingServiceStub, grpc.aio.Channel]]:
    """The app over ``root`` with gRPC on a free port (``channel.saec_target``)."""
    port = _free_port()
    app = create_app(Settings.from_mapping({"store": str(root), "reload_interval": 0, "grpc_port": port, **settings}))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://saec") as http:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                channel.saec_target = f"127.0.0.1:{port}"  # type: ignore[attr-defined]
                yield http, saec_pb2_grpc.EmbeddingServiceStub(channel), channel


def _vectors(answer: saec_pb2.LookupResponse) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {
        f.field: (np.frombuffer(f.vectors, "<f4").reshape(f.count, f.dim), np.frombuffer(f.found, np.bool_))
        for f in answer.fields
    }


async def test_lookup_answers_the_same_bytes_as_http_binary(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    users = np.concatenate([data["user_ids"][[0, 5, 17]], [-1, 10**15]])
    countries = ["c1", "c49", "nowhere"]
    async with served(root) as (http, stub, _):
        r = await http.post(
            "/lookup",
            content=encode_ids({"user": hash_ids(users, "user"), "country": hash_ids(countries, "country")}, hashed=True),
            headers={"content-type": IDS_MEDIA_TYPE, "accept": VECTORS_MEDIA_TYPE},
        )
        want = decode_vectors(r.content)
        # The three id forms of the proto: raw integers, raw strings, hashed keys.
        answers = [
            await stub.Lookup(saec_pb2.LookupRequest(fields=[
                saec_pb2.FieldIds(field="user", ids=users.tolist()),
                saec_pb2.FieldIds(field="country", keys=countries),
            ])),
            await stub.Lookup(saec_pb2.LookupRequest(fields=[
                saec_pb2.FieldIds(field="user", hashed_ids=hash_ids(users, "user").tolist()),
                saec_pb2.FieldIds(field="country", hashed_ids=hash_ids(countries, "country").tolist()),
            ])),
        ]
    for answer in answers:
        assert answer.version == want.version == data["version"]
        assert [f.field for f in answer.fields] == ["user", "country"]
        for f in answer.fields:
            vectors, found = want.fields[f.field]
            assert f.vectors == vectors.tobytes() and f.found == found.view(np.uint8).tobytes()
    got = _vectors(answers[0])
    assert got["user"][1].tolist() == [True, True, True, False, False]
    assert np.array_equal(got["user"][0][:3], data["codebook"][data["masks"][[0, 5, 17]]])
    assert np.array_equal(got["country"][0][:2], data["country"][[1, 49]])


async def test_the_hand_written_lookup_encoding_is_the_generated_message(rng: np.random.Generator) -> None:
    keys = {"user": rng.integers(0, 2**64 - 1, 300, dtype=np.uint64), "empty": np.zeros(0, np.uint64), "é": np.array([7], np.uint64)}
    parsed = saec_pb2.LookupRequest.FromString(encode_lookup(keys))
    assert [f.field for f in parsed.fields] == list(keys)
    for f in parsed.fields:
        assert np.array_equal(np.array(f.hashed_ids, np.uint64), keys[f.field]) and not f.ids and not f.keys
    vectors = rng.normal(size=(300, 9)).astype(np.float32)
    update = saec_pb2.UpdateRequest.FromString(encode_update({"user": (keys["user"], vectors)}))
    (entry,) = update.fields
    assert entry.dim == 9 and entry.vectors == vectors.tobytes()
    assert np.array_equal(np.array(entry.hashed_ids, np.uint64), keys["user"])


async def test_the_hand_written_lookup_answer_is_the_generated_message(rng: np.random.Generator) -> None:
    from saec.server.grpc_service import lookup_response
    from saec.store.engine import FieldResult, LookupResult

    fields = {
        "user": FieldResult(rng.normal(size=(300, 9)).astype(np.float32), rng.random(300) < 0.7),
        "none": FieldResult(np.zeros((0, 17), np.float32), np.zeros(0, bool)),
        "é" * 200: FieldResult(rng.normal(size=(1, 3)).astype(np.float32), np.ones(1, bool)),
    }
    written = lookup_response(LookupResult(version="v-1", fields=fields))
    parsed = saec_pb2.LookupResponse.FromString(written)
    assert parsed.version == "v-1" and [f.field for f in parsed.fields] == list(fields)
    for f in parsed.fields:
        want = fields[f.field]
        assert (f.count, f.dim) == want.vectors.shape
        assert f.vectors == want.vectors.tobytes() and f.found == want.found.view(np.uint8).tobytes()
    assert written == parsed.SerializeToString()  # the bytes protobuf itself writes


def _problem(exc: grpc.aio.AioRpcError) -> tuple[str, error_details_pb2.ErrorInfo]:
    trailing = dict(exc.trailing_metadata() or ())
    rich = status_pb2.Status.FromString(trailing["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    assert rich.code == exc.code().value[0] and rich.details[0].Unpack(info)
    return trailing["saec-problem-type"], info


@pytest.mark.parametrize(
    ("fields", "code", "http", "kind"),
    [
        ([saec_pb2.FieldIds(field="nope", ids=[1])], grpc.StatusCode.NOT_FOUND, 404, "unknown-field"),
        ([saec_pb2.FieldIds(field="user", ids=list(range(101)))], grpc.StatusCode.RESOURCE_EXHAUSTED, 413, "batch-too-large"),
        ([saec_pb2.FieldIds(field="user", ids=[1], keys=["a"])], grpc.StatusCode.INVALID_ARGUMENT, 422, "malformed-request"),
        ([saec_pb2.FieldIds(field="user", ids=[1]), saec_pb2.FieldIds(field="user", ids=[2])], grpc.StatusCode.INVALID_ARGUMENT, 422, "malformed-request"),
        ([saec_pb2.FieldIds(field="country", keys=["x" * 1025])], grpc.StatusCode.INVALID_ARGUMENT, 422, "malformed-ids"),
    ],
)
async def test_errors_have_the_status_of_the_same_http_problem(
    small_store: tuple[Path, dict], fields: list, code: grpc.StatusCode, http: int, kind: str
) -> None:
    root, _ = small_store
    async with served(root, max_ids=100) as (client, stub, _):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Lookup(saec_pb2.LookupRequest(fields=fields))
        # The same request as JSON over HTTP (two entries of one field cannot be said in JSON).
        if len({f.field for f in fields}) == len(fields) and not (fields[0].ids and fields[0].keys):
            doc = {f.field: list(f.ids) or list(f.keys) for f in fields}
            r = await client.post("/lookup", json={"fields": doc})
            assert r.status_code == http and r.json()["type"] == problems.problem_type(kind)
    assert info.value.code() == code
    problem_type, error_info = _problem(info.value)
    assert problem_type == problems.problem_type(kind)
    assert error_info.domain == "saec.dev" and error_info.reason == kind.upper().replace("-", "_")
    assert error_info.metadata["http_status"] == str(http)
    assert str(root) not in info.value.details()


async def test_every_problem_status_has_a_grpc_code() -> None:
    for _, status, _ in problems.STATUS:
        assert status in problems.GRPC_CODES
        assert grpc.StatusCode[problems.GRPC_CODES[status]] is not grpc.StatusCode.UNKNOWN


async def test_a_message_over_the_body_limit_is_resource_exhausted(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    async with served(root, max_body_bytes=4096) as (_, stub, _):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Lookup(saec_pb2.LookupRequest(fields=[saec_pb2.FieldIds(field="user", ids=list(range(10**12, 10**12 + 1000)))]))  # 6 KB
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        ok = await stub.Lookup(saec_pb2.LookupRequest(fields=[saec_pb2.FieldIds(field="user", ids=[3])]))
    assert ok.fields[0].found == b"\x01"


async def test_updates_need_the_token_are_all_or_nothing_and_show_in_http(
    small_store: tuple[Path, dict], rng: np.random.Generator
) -> None:
    root, data = small_store
    good = rng.normal(size=(2, 9)).astype(np.float32)
    new_ids = [10**9, 10**9 + 1]

    def request(vectors: np.ndarray, ids: list[int]) -> saec_pb2.UpdateRequest:
        return saec_pb2.UpdateRequest(fields=[
            saec_pb2.FieldUpdate(field="user", ids=ids, dim=vectors.shape[1], vectors=vectors.tobytes())
        ])

    async with served(root, admin_token=TOKEN) as (http, stub, _):
        for metadata in [None, (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)]:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Update(request(good, new_ids), metadata=metadata)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        bad = good.copy()
        bad[1, 3] = np.nan
        refusals = [
            (request(bad, new_ids), "row 1"),  # one bad row refuses both
            (request(good, [new_ids[0], new_ids[0]]), "twice"),
            (request(good[:, :5], new_ids), "dim"),
            (saec_pb2.UpdateRequest(fields=[saec_pb2.FieldUpdate(field="user", ids=new_ids, dim=9, vectors=b"\0" * 10)]), "bytes"),
        ]
        for req, _ in refusals:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Update(req, metadata=AUTH)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert deltas.read_all(deltas.deltas_dir(root, data["version"])) == []
        answer = await stub.Update(request(good, new_ids), metadata=AUTH)
        seen = (await http.post("/lookup", json={"fields": {"user": new_ids}})).json()
        via_grpc = _vectors(await stub.Lookup(saec_pb2.LookupRequest(fields=[saec_pb2.FieldIds(field="user", ids=new_ids)])))
    assert answer.base == data["version"] and answer.sequence >= 1
    (report,) = answer.fields
    assert (report.field, report.accepted, report.added, report.reassigned) == ("user", 2, 2, 0)
    assert seen["fields"]["user"]["found"] == [True, True]
    assert np.array_equal(np.array(seen["fields"]["user"]["vectors"], np.float32), via_grpc["user"][0])
    assert via_grpc["user"][1].all()


async def test_updates_are_unimplemented_without_a_token(small_store: tuple[Path, dict]) -> None:
    root, _ = small_store
    async with served(root) as (_, stub, _):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Update(saec_pb2.UpdateRequest(), metadata=AUTH)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_status_health_reflection_and_metrics(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    async with served(root, max_ids=1234) as (http, stub, channel):
        status = await stub.GetSnapshot(saec_pb2.GetSnapshotRequest())
        memory = await stub.GetMemory(saec_pb2.GetMemoryRequest())
        http_memory = (await http.get("/memory")).json()
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="saec.v1.EmbeddingService")
        )
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        services = []
        files = []
        async for answer in reflect.ServerReflectionInfo(iter([
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="saec.v1.EmbeddingService"),
        ])):
            if answer.HasField("list_services_response"):
                services = [s.name for s in answer.list_services_response.service]
            else:
                files = list(answer.file_descriptor_response.file_descriptor_proto)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Lookup(saec_pb2.LookupRequest(fields=[saec_pb2.FieldIds(field="nope")]))
        metrics = (await http.get("/metrics")).text
    assert status.version == data["version"] and status.hash == "saec-hash-v1"
    assert {f.name: (f.kind, f.dim) for f in status.fields} == {"user": ("compressed", 9), "country": ("dense", 17)}
    assert status.limits.max_ids == 1234 and status.document["limits"]["max_ids"] == 1234
    assert memory.version == data["version"]
    assert memory.document["total"]["features"] == http_memory["total"]["features"]
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert {"saec.v1.EmbeddingService", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= set(services)
    assert files  # the descriptor of proto/saec/v1/saec.proto: what grpcurl reads
    assert 'saec_requests_total{protocol="grpc",route="/saec.v1.EmbeddingService/GetSnapshot",status="OK"} 1.0' in metrics
    assert 'saec_requests_total{protocol="grpc",route="/saec.v1.EmbeddingService/Lookup",status="NOT_FOUND"} 1.0' in metrics


async def test_a_call_past_its_deadline_does_no_work() -> None:
    from saec.server.grpc_service import EmbeddingService

    class Expired:
        trailing: tuple = ()

        def time_remaining(self) -> float:
            return -0.001

        def set_trailing_metadata(self, trailing: tuple) -> None:
            self.trailing = trailing

        def abort(self, code: grpc.StatusCode, detail: str) -> None:
            raise RuntimeError(code.name, detail)

    calls = []

    class Core:
        metrics = type("M", (), {"observe_request": lambda self, *a, **k: calls.append(a)})()

        def engine(self) -> None:
            raise AssertionError("no work past the deadline")

    service = EmbeddingService(Core())  # type: ignore[arg-type]
    context = Expired()
    with pytest.raises(RuntimeError, match="DEADLINE_EXCEEDED"):
        service.Lookup(saec_pb2.LookupRequest(), context)  # type: ignore[arg-type]
    assert calls[0][:2] == ("/saec.v1.EmbeddingService/Lookup", "DEADLINE_EXCEEDED")
    assert dict(context.trailing)["saec-problem-type"] == problems.problem_type("deadline")


async def test_a_deadline_shorter_than_the_answer_is_deadline_exceeded(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    async with served(root) as (_, stub, _):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Lookup(
                saec_pb2.LookupRequest(fields=[saec_pb2.FieldIds(field="user", ids=data["user_ids"].tolist())]),
                timeout=1e-6,
            )
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_a_taken_port_stops_the_worker_with_a_clear_error(small_store: tuple[Path, dict]) -> None:
    root, _ = small_store
    with socket.socket() as taken:  # held without SO_REUSEPORT: nobody may share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = create_app(Settings.from_mapping({"store": str(root), "reload_interval": 0, "grpc_port": port}))
        with pytest.raises(OSError, match=f"cannot serve gRPC on 127.0.0.1:{port}"):
            async with app.router.lifespan_context(app):
                pass


def test_the_grpc_port_setting() -> None:
    from saec.cli import build_parser
    from saec.settings import SettingsError

    assert Settings().grpc_port == 0  # off unless asked for
    assert Settings.from_env({"SAEC_GRPC_PORT": "50051"}).grpc_port == 50051
    with pytest.raises(SettingsError, match="SAEC_GRPC_PORT"):
        Settings.from_env({"SAEC_GRPC_PORT": "70000"})
    # Flags are parsed and checked by Settings, so that a refusal names the flag.
    args = build_parser(["serve"]).parse_args(["serve", "--grpc-port", "50052"])
    assert Settings.from_mapping({"--grpc-port": args.grpc_port}).grpc_port == 50052


async def test_not_serving_and_unavailable_until_a_snapshot_is_published(tmp_path: Path, rng: np.random.Generator) -> None:
    from saec.server import grpc_service
    from tests.conftest import write_small_store

    root = tmp_path / "empty"
    root.mkdir()
    async with served(root, reload_interval=0.2) as (http, stub, channel):
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest(service="saec.v1.EmbeddingService")
        assert (await health.Check(check)).status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Lookup(saec_pb2.LookupRequest(fields=[saec_pb2.FieldIds(field="user", ids=[1])]))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert dict(info.value.trailing_metadata())["saec-problem-type"] == problems.problem_type("not-ready")
        assert (await http.post("/lookup", json={"fields": {"user": [1]}})).status_code == 503
        data = write_small_store(root, rng)  # published: the reload thread picks it up
        deadline = anyio.current_time() + 20
        while (await health.Check(check)).status != health_pb2.HealthCheckResponse.SERVING:
            assert anyio.current_time() < deadline, "health never turned SERVING"
            await anyio.sleep(grpc_service.HEALTH_INTERVAL_S / 4)
        answer = await stub.Lookup(saec_pb2.LookupRequest(fields=[saec_pb2.FieldIds(field="user", ids=[3])]))
    assert answer.version == data["version"] and answer.fields[0].found == b"\x01"
