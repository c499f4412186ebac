"""A second language: Node.js looks up through saec.v1 with @grpc/grpc-js and
@grpc/proto-loader (from the npm registry, installed into a cache folder), loading the
service from proto/saec/v1/saec.proto; its answer must be byte for byte the HTTP binary
answer. Skipped, saying why, where node or npm or the registry is missing."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import anyio
import numpy as np
import pytest

from saec.store.hashing import hash_ids
from saec.wire import IDS_MEDIA_TYPE, VECTORS_MEDIA_TYPE, decode_vectors, encode_ids
from tests.grpc.test_service import served

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
# The npm packages, by major version: what docs/grpc.md's Node example uses.
PACKAGES = ["@grpc/grpc-js@1", "@grpc/proto-loader@0.8"]


def node_modules() -> Path:
    """A folder holding the packages, installed once into SAEC_NODE_CACHE (or ~/.cache)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed")
    cache = Path(os.environ.get("SAEC_NODE_CACHE", Path.home() / ".cache" / "saec-node"))
    installed = cache / "node_modules"
    if not all((installed / "@grpc" / name / "package.json").exists() for name in ("grpc-js", "proto-loader")):
        cache.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--prefix", str(cache), *PACKAGES],
                capture_output=True, text=True, timeout=300,
            )
        except subprocess.TimeoutExpired:
            pytest.skip("npm install did not finish in 300 s (is the npm registry reachable?)")
        if done.returncode != 0:
            pytest.skip(f"npm install failed (is the npm registry reachable?): {done.stderr.strip()[-300:]}")
    return installed


async def test_node_lookup_is_byte_for_byte_the_http_binary_answer(small_store: tuple[Path, dict]) -> None:
    modules = node_modules()
    root, data = small_store
    users = [int(x) for x in data["user_ids"][[0, 1, 2, 4999]]] + [-7, 2**62]
    countries = ["c0", "c42", "absent"]
    request = {"fields": [{"field": "user", "ids": [str(x) for x in users]}, {"field": "country", "keys": countries}]}
    async with served(root) as (http, _, channel):
        target = channel.saec_target
        r = await http.post(
            "/lookup",
            content=encode_ids({"user": hash_ids(np.array(users), "user"), "country": hash_ids(countries, "country")}, hashed=True),
            headers={"content-type": IDS_MEDIA_TYPE, "accept": VECTORS_MEDIA_TYPE},
        )
        done = await anyio.run_process(
            ["node", str(ROOT / "tests" / "grpc" / "node_lookup.js"), str(ROOT / "proto"), target, json.dumps(request)],
            env={**os.environ, "NODE_PATH": str(modules)}, check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    answer = json.loads(done.stdout)
    want = decode_vectors(r.content)
    assert answer["version"] == want.version == data["version"]
    assert [f["field"] for f in answer["fields"]] == ["user", "country"]
    for f in answer["fields"]:
        vectors, found = want.fields[f["field"]]
        assert (f["count"], f["dim"]) == vectors.shape
        assert base64.b64decode(f["vectors"]) == vectors.tobytes()
        assert base64.b64decode(f["found"]) == found.view(np.uint8).tobytes()
    assert base64.b64decode(answer["fields"][0]["found"]) == bytes([1, 1, 1, 1, 0, 0])
