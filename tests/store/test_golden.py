"""Every released format version's golden snapshot must keep opening, with the same answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from saec.store.engine import LookupEngine
from saec.store.hashing import hash_ids
from saec.store.snapshot import open_current

GOLDEN = Path(__file__).parent.parent / "golden"
VERSIONS = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir() and p.name.startswith("v"))


def test_there_is_a_golden_snapshot_per_format() -> None:
    from saec.store.snapshot import READABLE_FORMATS

    assert [f"v{v}" for v in sorted(READABLE_FORMATS)] == VERSIONS


@pytest.mark.parametrize("version", VERSIONS)
def test_golden_snapshot_still_answers_the_same(version: str) -> None:
    root = GOLDEN / version
    expected = orjson.loads((root / "expected.json").read_bytes())
    snap = open_current(root)
    snap.verify()
    assert snap.format_version == int(version[1:])
    engine = LookupEngine(snap)
    result = engine.lookup({name: hash_ids(ids, name) for name, ids in expected["queries"].items()})
    for name, want in expected["answers"].items():
        got = result.fields[name]
        assert got.found.tolist() == want["found"]
        assert np.array_equal(got.vectors, np.array(want["vectors"], dtype=np.float32))
