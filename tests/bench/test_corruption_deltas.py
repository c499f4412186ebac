"""bench.corruption_deltas in small: seeded damage to delta logs, 0 crashes, 0 hangs, no intact
frame lost (``SAEC_DELTA_FUZZ_SEEDS`` seeds, 30 by default; the bench runs 1,000)."""

from __future__ import annotations

import os

import pytest

from bench import corruption_deltas

SEEDS = int(os.environ.get("SAEC_DELTA_FUZZ_SEEDS", "30"))


@pytest.mark.slow
def test_damaged_delta_logs_never_crash_hang_or_lose_an_intact_frame() -> None:
    records = corruption_deltas.run(SEEDS, batch=SEEDS, first=1000, progress=False)
    bad = [r for r in records if r["outcome"] != "ok"]
    assert len(records) == SEEDS and bad == [], bad[:3]
    met = {r["met"] for r in records}
    assert {"damage", "refused"} <= met  # the seeds reach both kinds of trouble
