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


@pytest.mark.parametrize(("name", "stages", "dtype"), [("shop", 3, np.float32), ("shop16", 2, np.float16)])
def test_golden_residual_answers_are_the_stage_sums_of_the_stored_rows(name: str, stages: int, dtype: type) -> None:
    """expected.json of v4 was written by the engine; check it against numpy on the stored
    arrays (float16 ones widened by numpy), so a kernel wrong when the golden was made would
    not have set it in stone."""
    root = GOLDEN / "v4"
    expected = orjson.loads((root / "expected.json").read_bytes())
    f = open_current(root).fields[name]
    assert f.kind == "residual" and f.stages == stages and f.codebook is not None and f.masks is not None
    assert f.codebook.dtype == dtype
    codebook = f.codebook.astype(np.float32)
    ids = expected["queries"][name]
    rows = f.index.lookup(hash_ids(ids, name))
    want = np.array(expected["answers"][name]["vectors"], dtype=np.float32)
    for i, r in enumerate(rows):
        if r < 0:
            continue
        total = codebook[0, f.masks[r, 0]].copy()
        for s in range(1, stages):
            total += codebook[s, f.masks[r, s]]
        assert total.tobytes() == want[i].tobytes()
    assert (rows >= 0).tolist() == expected["answers"][name]["found"]
