"""docs/grpc.md, run as written against `saec demo` + `saec serve --grpc-port`: its
grpcurl calls made from Python (reflection, then the JSON request through the proto3
JSON mapping, as grpcurl does) answer what the page shows, and its Python examples run."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from saec.v1 import saec_pb2, saec_pb2_grpc
from tests.e2e.test_uvicorn import Server

pytestmark = pytest.mark.slow
DOC = Path(__file__).resolve().parents[2] / "docs" / "grpc.md"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = tmp_path_factory.mktemp("grpcdoc") / "saec-store"
    subprocess.run([sys.executable, "-m", "saec.cli", "demo", "--store", str(store)], check=True, capture_output=True)
    port = _free_port()
    server = Server(store, SAEC_GRPC_PORT=str(port))
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


def _section(heading: str) -> str:
    text = DOC.read_text()
    start = text.index(f"## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def test_the_grpcurl_calls_answer_what_the_page_shows(demo: str) -> None:
    section = _section("grpcurl")
    commands = re.findall(r"^grpcurl .*?(?<!\\)$", section.replace("\\\n", " "), flags=re.M)
    listed = [line[2:] for line in section.splitlines() if line.startswith("# ") and "." in line]
    request = json.loads(re.search(r"-d '(\{.*?\})'", commands[1]).group(1))  # type: ignore[union-attr]
    shown = json.loads(re.search(r"```json\n(.*?)```", section, flags=re.S).group(1))  # type: ignore[union-attr]
    with grpc.insecure_channel(demo) as channel:
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        (answer,) = reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        services = sorted(s.name for s in answer.list_services_response.service)
        lookup = saec_pb2_grpc.EmbeddingServiceStub(channel).Lookup(
            json_format.Parse(json.dumps(request), saec_pb2.LookupRequest()), timeout=10
        )
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="saec.v1.EmbeddingService"), timeout=10
        )
    assert services == listed
    got = json_format.MessageToDict(lookup)
    got["version"] = shown["version"]  # the demo's version is the time it was built
    assert got == shown
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_the_python_examples_run(demo: str) -> None:
    for block in re.findall(r"```python\n(.*?)```", _section("Python"), flags=re.S):
        code = block.replace("127.0.0.1:50051", demo)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
