"""The request examples in /openapi.json hit on `saec demo`: "Try it out" answers 200."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from saec.demo import build_demo
from saec.server.app import create_app
from saec.settings import Settings

pytestmark = pytest.mark.anyio

TOKEN = "example-token"


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("demo") / "store"
    build_demo(store, scale=0.05, k=16, quiet=True)  # ids 0..n-1 in every field, as at full size
    return store


def _examples(schema: dict) -> list[tuple[str, str, dict]]:
    found = []
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            content = op.get("requestBody", {}).get("content", {})
            for media, body in content.items():
                if "example" in body:
                    found.append((method, path, body["example"]))
                    assert media == "application/json", (path, media)
    return found


async def test_every_request_example_is_answered_200_on_the_demo(demo_store: Path) -> None:
    settings = Settings.from_mapping({"store": str(demo_store), "reload_interval": 0, "admin_token": TOKEN})
    app = create_app(settings)
    async with app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://saec") as c:
        examples = _examples((await c.get("/openapi.json")).json())
        assert {path for _, path, _ in examples} >= {"/lookup", "/admin/updates"}, examples
        for method, path, example in examples:
            r = await c.request(method, path, json=example, headers={"authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200, (path, r.text)
            if path == "/lookup":
                fields = r.json()["fields"]
                assert set(fields) == set(example["fields"])
                for name, ids in example["fields"].items():
                    assert fields[name]["found"] == [True] * len(ids), name
