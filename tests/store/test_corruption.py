"""No file can crash the process: seeded corruptions served with verification off.

Each batch of seeds runs in a child process (``bench.corruption``), so a segfault is
observed as a crash of the seed that caused it. ``python -m bench.corruption`` runs
1,000 seeds; CI runs two per target.
"""

from __future__ import annotations

from collections import Counter

import pytest

from bench.corruption import run, summarise, targets_of_pristine


@pytest.mark.long
def test_seeded_corruptions_of_every_array_kind_never_crash() -> None:
    names = targets_of_pristine()
    records = run(2 * len(names), batch=2 * len(names), progress=False)
    table, total = summarise(records)
    assert total["crash"] == 0, table + "\n" + "\n".join(str(r) for r in records if r["outcome"] == "crash")
    assert len(records) == 2 * len(names)
    # Every target was damaged, and with verification off most damage is served (wrong
    # vectors allowed), so the kernels really ran over damaged arrays.
    assert Counter(r["target"] for r in records) == Counter({n: 2 for n in names})
    assert {n.split("/", 1)[1] for n in names if n != "manifest"} >= {
        "codebook", "masks", "vectors", "mean", "counts",
        "index/fingerprints", "index/bucket_offsets", "index/block_bases",
    }
    assert total["served"] > len(records) / 2
    assert any("after open" in r["how"] for r in records)
