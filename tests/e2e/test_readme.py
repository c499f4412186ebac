"""The README's lookup examples, run as written against `saec demo` + `saec serve`:
every id they show as found is found."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_uvicorn import Server

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"


def _lookup_section() -> str:
    text = README.read_text()
    return text[text.index("## Looking things up") : text.index("## Compressing your own tables")]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    store = tmp_path_factory.mktemp("readme") / "saec-store"
    # The README's own command, at full size: its ids are the demo's.
    subprocess.run([sys.executable, "-m", "saec.cli", "demo", "--store", str(store)], check=True, capture_output=True)
    server = Server(store)
    try:
        yield server
    finally:
        server.stop()


def test_readme_curl_lookup_finds_its_ids(demo: Server) -> None:
    section = _lookup_section()
    block = next(b for b in re.findall(r"```bash\n(.*?)```", section, flags=re.S) if "/lookup" in b)
    command = block.split("\n# ", 1)[0].split("\ncurl -s localhost:8000/memory", 1)[0]
    command = command.replace("localhost:8000", demo.url.removeprefix("http://"))
    out = subprocess.run(["bash", "-c", command], check=True, capture_output=True, text=True, timeout=60).stdout
    doc = json.loads(out)
    sent = json.loads(re.search(r"-d '(.*?)'", block).group(1))["fields"]
    assert set(doc["fields"]) == set(sent)
    for name, ids in sent.items():
        assert doc["fields"][name]["found"] == [True] * len(ids), (name, doc["fields"][name]["found"])


def test_readme_python_example_says_what_it_gets(demo: Server) -> None:
    block = next(b for b in re.findall(r"```python\n(.*?)```", _lookup_section(), flags=re.S) if "SaecClient" in b)
    # Each `expression  # literal` line claims the expression's value; check every claim.
    claims = []
    lines = []
    for line in block.replace("http://127.0.0.1:8000", demo.url).splitlines():
        code, _, comment = line.partition("#")
        claim = comment.strip()
        try:
            literal = ast.literal_eval(claim)
        except (ValueError, SyntaxError):
            # A repr the README shows as printed: array([ True, ...]), dtype('float32').
            literal = claim if re.fullmatch(r"(array|dtype)\(.*\)", claim) else None
        if literal is not None and not isinstance(literal, (int, float)):
            var = f"_claim{len(claims)}"
            claims.append((var, code.strip(), literal))
            lines.append(f"{code[: len(code) - len(code.lstrip())]}{var} = {code.strip()}")
        else:
            lines.append(code.rstrip())
    scope: dict = {}
    exec("\n".join(lines), scope)  # the README's own example
    assert claims, block
    for var, expr, literal in claims:
        value = scope[var]
        # What a user sees: the repr for arrays and dtypes, the value (and its type) otherwise.
        if isinstance(literal, str) and re.fullmatch(r"(array|dtype)\(.*\)", literal):
            assert repr(value) == literal, (expr, repr(value))
        else:
            assert type(value) is type(literal) and value == literal, (expr, value)
