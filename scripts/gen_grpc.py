"""Regenerate the Python stubs of ``proto/saec/v1/saec.proto`` with grpcio-tools.

    python scripts/gen_grpc.py          # rewrite saec/v1/saec_pb2*.py(i)
    python scripts/gen_grpc.py --check  # exit 1 if the checked-in stubs differ from a fresh build

The proto's package path (saec/v1) is the stubs' import path (``saec.v1``), so the
generated imports work unchanged. The output depends on the grpcio-tools release: the
test extra pins the one the checked-in stubs were built with (tests/grpc/test_stubs.py
runs the check).
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTOS = ["saec/v1/saec.proto"]
OUTPUTS = ["saec/v1/saec_pb2.py", "saec/v1/saec_pb2.pyi", "saec/v1/saec_pb2_grpc.py"]


def generate(out: Path) -> None:
    """Write the stubs of every proto under ``out`` (as ``out/saec/v1/...``)."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *PROTOS,
    ]
    # protoc resolves the proto paths against -I; run from the proto root.
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed: {' '.join(args)}")


def stale() -> list[str]:
    """The checked-in stubs that differ from (or are missing against) a fresh build."""
    with tempfile.TemporaryDirectory(prefix="saec-stubs-") as tmp:
        generate(Path(tmp))
        return [
            name for name in OUTPUTS
            if not (ROOT / name).exists() or not filecmp.cmp(Path(tmp) / name, ROOT / name, shallow=False)
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if a stub is stale")
    args = parser.parse_args(argv)
    if args.check:
        bad = stale()
        if bad:
            print(f"stale stubs: {', '.join(bad)}; run: python scripts/gen_grpc.py", file=sys.stderr)
            return 1
        print("stubs are up to date")
        return 0
    generate(ROOT)
    print("wrote " + ", ".join(OUTPUTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
