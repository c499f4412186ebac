"""gRPC beside HTTP: ``saec.v1.EmbeddingService`` (``proto/saec/v1/saec.proto``), the
standard health service and server reflection, in every worker of ``saec serve``.

Each worker process starts a gRPC server as its app starts (``server.app``'s lifespan),
bound to ``SAEC_HOST:SAEC_GRPC_PORT`` with ``SO_REUSEPORT`` (gRPC's default on Linux): every
worker listens on the same port and the kernel spreads new connections over them, as it
does for HTTP. It is gRPC's threaded server (calls answered on :data:`THREADS` threads of
the worker, beside its event loop), not ``grpc.aio`` on the event loop: with a 4096-id
lookup's 150 KB answer and nothing else done, the threaded server spent 0.31-0.35 ms of
CPU a call against 0.39-0.43 ms for ``grpc.aio`` on uvloop (8 connections, 2000 calls
each, load average 10-11 on 2 cores).

A worker's gRPC and HTTP share one :class:`Core`: the same live engine (so a hot reload
or an update shows in both at once), the same checks and limits
(``server.codec.hashed_fields``, ``SAEC_MAX_IDS``, ``SAEC_MAX_BODY_BYTES`` as the largest
message), the same update path (``server.admin.UpdatePath``), the same metrics
(``saec_requests_total{protocol="grpc"}``), and errors mapped to status codes in one place,
``server.problems``, beside their HTTP statuses.

An error's status carries, as trailing metadata, ``saec-problem-type`` (the problem's type
URI, as in problem+json) and ``grpc-status-details-bin`` (a ``google.rpc.Status`` holding a
``google.rpc.ErrorInfo``: reason the problem kind in capitals, domain ``saec.dev``).

Deadlines: a call whose deadline has passed when a thread takes it up does no work and
answers DEADLINE_EXCEEDED (it counts as such in the metrics); one that expires while it is
being answered is answered DEADLINE_EXCEEDED by gRPC itself, its answer dropped. An update
that expires after its commit began is still applied (acknowledged or not, an update
sent again writes the same vectors).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import orjson
from google.protobuf import any_pb2, struct_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from saec.server import problems
from saec.server.codec import hashed_fields
from saec.server.errors import MalformedRequestError
from saec.server.metrics import Metrics
from saec.settings import Settings
from saec.store.engine import LookupEngine, LookupResult
from saec.store.errors import InvalidUpdateError
from saec.store.hashing import hash_ids
from saec.v1 import packed, saec_pb2

log = logging.getLogger("saec.server")

SERVICE = "saec.v1.EmbeddingService"
LOOKUP = f"/{SERVICE}/Lookup"
UPDATE = f"/{SERVICE}/Update"
GET_SNAPSHOT = f"/{SERVICE}/GetSnapshot"
GET_MEMORY = f"/{SERVICE}/GetMemory"
PROBLEM_KEY = "saec-problem-type"
# How often the health service's status follows the engine's readiness (for Watch).
HEALTH_INTERVAL_S = 1.0
# Seconds a stopping worker gives calls in flight.
STOP_GRACE_S = 2.0
# Threads answering calls in one worker: the work holds the GIL most of the time, so more
# would only queue behind it; calls beyond them wait in gRPC's queue.
THREADS = 8

Keys = dict[str, npt.NDArray[np.uint64]]


@dataclass(frozen=True)
class Core:
    """What a worker's HTTP routes and gRPC methods share (built by ``server.app``).

    Attributes:
        engine: the engine serving now (raises NotReadyError without one).
        lookup: answers hashed keys per field with one engine, counting ids in the metrics.
        snapshot_document, memory_document: the GET /snapshot and GET /memory documents.
        unready: why the worker is not ready (None: ready), as /readyz says.
        updates: the update path, None without SAEC_ADMIN_TOKEN.
        redact: rewrites error details before they leave (no absolute paths).
    """

    settings: Settings
    metrics: Metrics
    engine: Callable[[], LookupEngine]
    lookup: Callable[[LookupEngine, Keys], LookupResult]
    snapshot_document: Callable[[], dict[str, Any]]
    memory_document: Callable[[], dict[str, Any]]
    unready: Callable[[], str | None]
    updates: Any  # server.admin.UpdatePath | None (imported lazily there)
    redact: Callable[[str], str | None]


class Refused(Exception):
    """A call refused before any work, with its own status code (deadline, updates off)."""

    def __init__(self, code: grpc.StatusCode, detail: str, kind: str) -> None:
        super().__init__(detail)
        self.code = code
        self.kind = kind


# -- requests ------------------------------------------------------------------------------


def _ids_of(entry: saec_pb2.FieldIds | saec_pb2.FieldUpdate) -> tuple[Any, bool]:
    """The ids of one field (raw integers, strings, or hashed keys) and whether hashed."""
    given = [name for name in ("ids", "keys", "hashed_ids") if len(getattr(entry, name))]
    if len(given) > 1:
        raise MalformedRequestError(
            f"field {entry.field!r}: expected ids in one of ids, keys and hashed_ids, got {' and '.join(given)}"
        )
    if not given or given[0] == "hashed_ids":
        # Packed fixed64 parsed by upb: one copy into numpy, no Python int per id.
        return np.array(entry.hashed_ids, dtype=np.uint64), True
    if given[0] == "ids":
        return np.array(entry.ids, dtype=np.int64), False
    return list(entry.keys), False


def lookup_keys(request: saec_pb2.LookupRequest, engine: LookupEngine) -> Keys:
    """Hashed keys per field of a LookupRequest, under the checks every lookup gets."""
    fields: dict[str, tuple[Any, bool]] = {}
    for entry in request.fields:
        if entry.field in fields:
            raise MalformedRequestError(f"expected each field once, got {entry.field!r} twice")
        fields[entry.field] = _ids_of(entry)
    return hashed_fields(fields, engine)


def update_fields(request: saec_pb2.UpdateRequest) -> dict[str, tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]]:
    """Hashed ids and float32 (n, dim) vectors per field of an UpdateRequest (what
    ``server.admin.parse_updates`` makes of an HTTP body)."""
    out: dict[str, tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]] = {}
    for entry in request.fields:
        name = entry.field
        if name in out:
            raise MalformedRequestError(f"expected each field once, got {name!r} twice")
        ids, hashed = _ids_of(entry)
        keys = hash_ids(ids, name, hashed=hashed)
        n, dim = keys.shape[0], entry.dim
        if len(entry.vectors) != 4 * n * dim:
            raise InvalidUpdateError(
                f"field {name!r}: expected {n} vectors of dim {dim} ({4 * n * dim} bytes of float32), "
                f"got {len(entry.vectors)} bytes"
            )
        out[name] = (keys, np.frombuffer(entry.vectors, dtype="<f4").reshape(n, dim).astype(np.float32, copy=False))
    return out


# -- answers -------------------------------------------------------------------------------


def lookup_response(result: LookupResult) -> bytes:
    """The serialized LookupResponse of a lookup: per field the same float32 rows and found
    bytes as the binary HTTP answer (``saec.wire``), written straight to protobuf bytes
    (``saec.v1.packed``: each field's vectors copied once, where the generated message
    would copy them three times)."""
    return packed.lookup_response(result.version, {n: (r.vectors, r.found) for n, r in result.fields.items()})


def update_response(doc: dict[str, Any]) -> saec_pb2.UpdateResponse:
    """The UpdateResponse of the same answer POST /admin/updates gives as JSON."""
    return saec_pb2.UpdateResponse(
        base=doc["base"],
        sequence=doc["sequence"],
        fields=[
            saec_pb2.FieldUpdateReport(
                field=name,
                accepted=f["accepted"],
                added=f["new"],
                reassigned=f["reassigned"],
                distance=saec_pb2.UpdateDistance(mean=f["distance"]["mean"], p99=f["distance"]["p99"]),
                search=f.get("search", ""),
            )
            for name, f in doc["fields"].items()
        ],
    )


def as_struct(doc: dict[str, Any]) -> struct_pb2.Struct:
    """A JSON document (numpy values and all, as the HTTP routes write it) as a Struct."""
    out = struct_pb2.Struct()
    out.update(orjson.loads(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)))
    return out


def snapshot_status(doc: dict[str, Any]) -> saec_pb2.SnapshotStatus:
    return saec_pb2.SnapshotStatus(
        version=doc["version"],
        created=str(doc.get("created") or ""),
        source=str(doc.get("source") or ""),
        format_version=int(doc.get("format_version") or 0),
        hash=str(doc.get("hash") or ""),
        fields=[
            saec_pb2.FieldInfo(
                name=name, kind=f["kind"], dim=int(f["dim"]), k=int(f["k"] or 0), features=int(f["features"]),
                rows=int(f["rows"]),
            )
            for name, f in doc["fields"].items()
        ],
        limits=saec_pb2.Limits(**doc["limits"]),
        document=as_struct(doc),
    )


# -- the service ---------------------------------------------------------------------------


class EmbeddingService:
    """The methods of saec.v1.EmbeddingService over a worker's :class:`Core`."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def _call(self, route: str, context: grpc.ServicerContext, work: Callable[[], Any]) -> Any:
        """``work()``, counted in ``saec_requests_total{protocol="grpc"}``; its errors become
        statuses through ``server.problems``."""
        start = time.perf_counter()
        code = "OK"
        try:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                raise Refused(grpc.StatusCode.DEADLINE_EXCEEDED, "the call's deadline passed before it was begun", "deadline")
            return work()
        except Exception as exc:
            status, detail, trailing = self._status(route, exc)
            code = status.name
            context.set_trailing_metadata(trailing)
            context.abort(status, detail)
            raise AssertionError("unreachable: abort raises") from exc
        finally:
            self.core.metrics.observe_request(route, code, time.perf_counter() - start, protocol="grpc")

    def _status(self, route: str, exc: Exception) -> tuple[grpc.StatusCode, str, tuple[tuple[str, Any], ...]]:
        """The status code, detail and trailing metadata of an error (``server.problems`` maps)."""
        if isinstance(exc, Refused):
            code, status, kind, detail = exc.code, 0, exc.kind, str(exc)
        else:
            name, status, kind = problems.grpc_status_of(exc)
            code = grpc.StatusCode[name]
            if status == 500:
                log.error("unexpected error on %s", route, exc_info=exc)
                detail = "the server failed; see its log"
            else:
                detail = self.core.redact(str(exc)) or ""
        info = error_details_pb2.ErrorInfo(
            reason=kind.upper().replace("-", "_"),
            domain="saec.dev",
            metadata={"type": problems.problem_type(kind), **({"http_status": str(status)} if status else {})},
        )
        details = any_pb2.Any()
        details.Pack(info)
        rich = status_pb2.Status(code=code.value[0], message=detail, details=[details])
        return code, detail, ((PROBLEM_KEY, problems.problem_type(kind)), ("grpc-status-details-bin", rich.SerializeToString()))

    def Lookup(self, request: saec_pb2.LookupRequest, context: grpc.ServicerContext) -> bytes:
        def work() -> bytes:
            serving = self.core.engine()  # one engine for the whole request, even across a reload
            return lookup_response(self.core.lookup(serving, lookup_keys(request, serving)))

        return self._call(LOOKUP, context, work)

    def Update(self, request: saec_pb2.UpdateRequest, context: grpc.ServicerContext) -> saec_pb2.UpdateResponse:
        def work() -> saec_pb2.UpdateResponse:
            path = self.core.updates
            if path is None:
                raise Refused(
                    grpc.StatusCode.UNIMPLEMENTED, "updates are off: the server has no SAEC_ADMIN_TOKEN", "updates-off"
                )
            path.authorize(dict(context.invocation_metadata() or ()).get("authorization"))
            up = path.updater()
            return update_response(path.apply_blocking(up, update_fields(request)).as_dict())

        return self._call(UPDATE, context, work)

    def GetSnapshot(self, request: saec_pb2.GetSnapshotRequest, context: grpc.ServicerContext) -> saec_pb2.SnapshotStatus:
        return self._call(GET_SNAPSHOT, context, lambda: snapshot_status(self.core.snapshot_document()))

    def GetMemory(self, request: saec_pb2.GetMemoryRequest, context: grpc.ServicerContext) -> saec_pb2.MemoryStatus:
        def work() -> saec_pb2.MemoryStatus:
            serving = self.core.engine()
            return saec_pb2.MemoryStatus(version=serving.version, document=as_struct(self.core.memory_document()))

        return self._call(GET_MEMORY, context, work)


def _handlers(service: EmbeddingService) -> grpc.GenericRpcHandler:
    methods: dict[str, tuple[Callable[..., Any], Any]] = {
        "Lookup": (service.Lookup, saec_pb2.LookupRequest),
        "Update": (service.Update, saec_pb2.UpdateRequest),
        "GetSnapshot": (service.GetSnapshot, saec_pb2.GetSnapshotRequest),
        "GetMemory": (service.GetMemory, saec_pb2.GetMemoryRequest),
    }
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            name: grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=cls.FromString, response_serializer=_serialize
            )
            for name, (fn, cls) in methods.items()
        },
    )


def _serialize(message: Any) -> bytes:
    """A message's bytes; a lookup's answer comes already serialized (:func:`lookup_response`)."""
    return message if isinstance(message, bytes) else message.SerializeToString()


class GrpcServer:
    """A worker's gRPC server: :meth:`start` as the app starts, :meth:`stop` at shutdown."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.health = health.HealthServicer()
        self.server: grpc.Server | None = None
        self.port = 0
        self._stopping = threading.Event()

    def start(self) -> int:
        """Bind ``host:grpc_port`` (shared with the other workers) and serve; returns the port."""
        settings = self.core.settings
        server = grpc.server(
            ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="saec-grpc"),
            options=[
                ("grpc.so_reuseport", 1),
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                ("grpc.max_send_message_length", -1),
            ],
        )
        server.add_generic_rpc_handlers((_handlers(EmbeddingService(self.core)),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
        )
        address = f"{settings.host}:{settings.grpc_port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot serve gRPC on {address}: {exc}") from exc
        if not port:
            raise OSError(f"cannot serve gRPC on {address}: the port is taken")
        server.start()
        self.server, self.port = server, port
        self._follow_readiness()
        threading.Thread(target=self._watch_readiness, name="saec-grpc-health", daemon=True).start()
        log.info("gRPC (saec.v1) on %s", address)
        return port

    def _follow_readiness(self) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self.core.unready() is None
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE):
            self.health.set(name, status)

    def _watch_readiness(self) -> None:
        while not self._stopping.wait(HEALTH_INTERVAL_S):
            try:
                self._follow_readiness()
            except Exception:  # never let the health thread die silently
                log.exception("gRPC health update failed")

    def stop(self) -> None:
        """Refuse new calls, give those in flight :data:`STOP_GRACE_S`, then stop."""
        self._stopping.set()
        if self.server is not None:
            self.health.enter_graceful_shutdown()
            self.server.stop(STOP_GRACE_S).wait()
