"""The checked-in stubs are what grpcio-tools makes of the .proto, and the proto's field
numbers are the published ones (docs/grpc.md): renumbering one breaks every client built
from an older copy."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from saec.v1 import saec_pb2

ROOT = Path(__file__).resolve().parents[2]


def _gen_grpc():  # scripts/ is not a package
    spec = importlib.util.spec_from_file_location("gen_grpc", ROOT / "scripts" / "gen_grpc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_grpc"] = module
    spec.loader.exec_module(module)
    return module


def test_checked_in_stubs_match_a_fresh_build() -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the test extra) generates the stubs")
    assert _gen_grpc().stale() == [], "stale stubs: run python scripts/gen_grpc.py"


def test_a_changed_proto_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("grpc_tools")
    gen = _gen_grpc()
    proto = tmp_path / "saec" / "v1" / "saec.proto"
    proto.parent.mkdir(parents=True)
    text = (ROOT / "proto" / "saec" / "v1" / "saec.proto").read_text()
    proto.write_text(text.replace("string version = 1;\n  // One entry per requested field", "string snapshot = 1;\n  // One entry per requested field"))
    monkeypatch.setattr(gen, "PROTO_ROOT", tmp_path)
    assert "saec/v1/saec_pb2.py" in gen.stale()


# (message, field) -> (number, type, label): published in docs/grpc.md; never change one.
PUBLISHED = {
    ("FieldIds", "field"): (1, "string", "optional"),
    ("FieldIds", "ids"): (2, "int64", "repeated"),
    ("FieldIds", "keys"): (3, "string", "repeated"),
    ("FieldIds", "hashed_ids"): (4, "fixed64", "repeated"),
    ("LookupRequest", "fields"): (1, "FieldIds", "repeated"),
    ("FieldVectors", "field"): (1, "string", "optional"),
    ("FieldVectors", "count"): (2, "uint32", "optional"),
    ("FieldVectors", "dim"): (3, "uint32", "optional"),
    ("FieldVectors", "vectors"): (4, "bytes", "optional"),
    ("FieldVectors", "found"): (5, "bytes", "optional"),
    ("LookupResponse", "version"): (1, "string", "optional"),
    ("LookupResponse", "fields"): (2, "FieldVectors", "repeated"),
    ("FieldUpdate", "field"): (1, "string", "optional"),
    ("FieldUpdate", "ids"): (2, "int64", "repeated"),
    ("FieldUpdate", "keys"): (3, "string", "repeated"),
    ("FieldUpdate", "hashed_ids"): (4, "fixed64", "repeated"),
    ("FieldUpdate", "dim"): (5, "uint32", "optional"),
    ("FieldUpdate", "vectors"): (6, "bytes", "optional"),
    ("UpdateRequest", "fields"): (1, "FieldUpdate", "repeated"),
    ("UpdateDistance", "mean"): (1, "double", "optional"),
    ("UpdateDistance", "p99"): (2, "double", "optional"),
    ("FieldUpdateReport", "field"): (1, "string", "optional"),
    ("FieldUpdateReport", "accepted"): (2, "uint64", "optional"),
    ("FieldUpdateReport", "added"): (3, "uint64", "optional"),
    ("FieldUpdateReport", "reassigned"): (4, "uint64", "optional"),
    ("FieldUpdateReport", "distance"): (5, "UpdateDistance", "optional"),
    ("FieldUpdateReport", "search"): (6, "string", "optional"),
    ("UpdateResponse", "base"): (1, "string", "optional"),
    ("UpdateResponse", "sequence"): (2, "uint64", "optional"),
    ("UpdateResponse", "fields"): (3, "FieldUpdateReport", "repeated"),
    ("FieldInfo", "name"): (1, "string", "optional"),
    ("FieldInfo", "kind"): (2, "string", "optional"),
    ("FieldInfo", "dim"): (3, "uint32", "optional"),
    ("FieldInfo", "k"): (4, "uint32", "optional"),
    ("FieldInfo", "features"): (5, "uint64", "optional"),
    ("FieldInfo", "rows"): (6, "uint64", "optional"),
    ("Limits", "max_ids"): (1, "uint64", "optional"),
    ("Limits", "max_body_bytes"): (2, "uint64", "optional"),
    ("SnapshotStatus", "version"): (1, "string", "optional"),
    ("SnapshotStatus", "created"): (2, "string", "optional"),
    ("SnapshotStatus", "source"): (3, "string", "optional"),
    ("SnapshotStatus", "format_version"): (4, "uint32", "optional"),
    ("SnapshotStatus", "hash"): (5, "string", "optional"),
    ("SnapshotStatus", "fields"): (6, "FieldInfo", "repeated"),
    ("SnapshotStatus", "limits"): (7, "Limits", "optional"),
    ("SnapshotStatus", "document"): (15, "Struct", "optional"),
    ("MemoryStatus", "version"): (1, "string", "optional"),
    ("MemoryStatus", "document"): (15, "Struct", "optional"),
}
TYPES = {
    1: "double", 3: "int64", 4: "uint64", 6: "fixed64", 9: "string", 12: "bytes", 13: "uint32",
}


def test_field_numbers_are_the_published_ones() -> None:
    seen = {}
    for name, message in saec_pb2.DESCRIPTOR.message_types_by_name.items():
        for f in message.fields:
            kind = f.message_type.name if f.message_type is not None else TYPES[f.type]
            seen[(name, f.name)] = (f.number, kind, "repeated" if f.is_repeated else "optional")
    # Every published field is still there as published; new fields must be added above.
    assert seen == PUBLISHED
    assert saec_pb2.DESCRIPTOR.package == "saec.v1"
    methods = {m.name: (m.input_type.name, m.output_type.name) for m in saec_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].methods}
    assert methods == {
        "Lookup": ("LookupRequest", "LookupResponse"),
        "Update": ("UpdateRequest", "UpdateResponse"),
        "GetSnapshot": ("GetSnapshotRequest", "SnapshotStatus"),
        "GetMemory": ("GetMemoryRequest", "MemoryStatus"),
    }
