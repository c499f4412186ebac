"""/docs works offline: the page loads its assets from the app itself."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from saec.server.app import create_app
from saec.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_reference_no_external_host_and_assets_load(small_store: tuple[Path, dict], page: str) -> None:
    root, _ = small_store
    app = create_app(Settings.from_mapping({"store": str(root), "reload_interval": 0}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://saec") as c:
        html = (await c.get(page)).text
        refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html) + re.findall(r"""url:\s*'([^']+)'""", html)
        refs += re.findall(r"""spec-url=["']([^"']+)["']""", html)
        assert refs, html
        assert not [r for r in refs if "//" in r], refs  # no scheme-relative or absolute URL
        sizes = {}
        for ref in refs:
            r = await c.get(ref)
            assert r.status_code == 200, ref
            sizes[ref] = len(r.content)
    scripts = [ref for ref in refs if ref.endswith(".js")]
    assert scripts and all(sizes[s] > 100_000 for s in scripts), sizes  # the real bundle, not a stub
