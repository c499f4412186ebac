from __future__ import annotations

import numpy as np
import pytest

from saec.store import keyindex
from saec.store.errors import InvalidTableError
from saec.store.hashing import hash_ids


def _dict_reference(keys: np.ndarray, order: np.ndarray) -> dict[int, int]:
    """key -> stored row, the obvious way."""
    return {int(keys[src]): row for row, src in enumerate(order.tolist())}


@pytest.mark.parametrize("n", [1, 7, 1000, 50_000, 300_000])
@pytest.mark.parametrize("kernel", ["numba", "numpy"])
def test_lookup_matches_a_dict(n: int, kernel: str, rng: np.random.Generator) -> None:
    keys = hash_ids(rng.choice(2**50, size=n, replace=False), "f")
    built = keyindex.build(keys)
    ref = _dict_reference(keys, built.order)
    unseen = hash_ids(rng.integers(2**51, 2**52, size=20_000), "f")
    query = np.concatenate([keys, unseen])
    rng.shuffle(query)
    rows = built.index.lookup(query, kernel=kernel)  # type: ignore[arg-type]
    expect = np.array([ref.get(int(q), -1) for q in query])
    stored = np.isin(query, keys)
    # Every stored key that was not dropped as an alias finds exactly its row.
    kept = np.array([int(q) in ref for q in query])
    assert np.array_equal(rows[kept], expect[kept])
    # An aliased key finds the row of the key it aliases: same bucket and fingerprint.
    aliased = stored & ~kept
    assert aliased.sum() <= built.aliased
    assert (rows[aliased] >= 0).all()
    # Unseen keys: at most a tiny fraction falsely matched.
    false_rate = (rows[~stored] >= 0).mean()
    assert false_rate < 0.001


def test_kernels_agree_on_random_queries(rng: np.random.Generator) -> None:
    keys = hash_ids(np.arange(200_000), "f")
    idx = keyindex.build(keys).index
    q = np.concatenate([keys[rng.integers(0, keys.size, 5000)], rng.integers(0, 2**63, 5000, dtype=np.uint64)])
    assert np.array_equal(idx.lookup(q, "numba"), idx.lookup(q, "numpy"))


def test_memory_per_row_is_small() -> None:
    for n in (10_000, 1_000_000):
        idx = keyindex.build(hash_ids(np.arange(n), "f")).index
        assert 5 <= n / (1 << idx.bucket_bits) < 10
        assert idx.nbytes / n < 2.45


def test_aliases_keep_the_most_frequent() -> None:
    # Two keys agreeing on their top bucket+16 bits alias; the more frequent is kept.
    base = np.uint64(0xABCD_0000_0000_0000)
    keys = np.array([base + np.uint64(1), base + np.uint64(2), np.uint64(0x1234_5678_0000_0000)], dtype=np.uint64)
    built = keyindex.build(keys, counts=np.array([5, 9, 1]))
    assert built.aliased == 1
    assert set(built.order.tolist()) == {1, 2}
    rows = built.index.lookup(keys)
    assert rows[0] == rows[1] == int(np.flatnonzero(built.order == 1)[0])


def test_each_run_of_aliases_keeps_its_most_frequent_key_the_first_of_equals(rng: np.random.Generator) -> None:
    # Keys drawn from a narrow range alias in runs of up to a dozen; counts with many ties.
    keys = np.unique(rng.integers(0, 1 << 50, 20_000, dtype=np.uint64))
    counts = rng.integers(0, 4, keys.size)
    bits = keyindex.bucket_bits_for(keys.size)
    prefix = keys >> np.uint64(64 - bits - keyindex.FINGERPRINT_BITS)
    first, best = [], []
    start = 0
    for i in range(1, keys.size + 1):
        if i == keys.size or prefix[i] != prefix[start]:
            first.append(start)
            best.append(start + int(np.argmax(counts[start:i])))  # argmax: the first of equals
            start = i
    # Given in another order: "first" means first in key order, not in input order.
    shuffle = rng.permutation(keys.size)
    with_counts = keyindex.build(keys[shuffle], counts=counts[shuffle])
    without = keyindex.build(keys[shuffle])
    assert with_counts.aliased == without.aliased == keys.size - len(first) > 1000
    assert keys[shuffle][with_counts.order].tolist() == keys[best].tolist()
    assert keys[shuffle][without.order].tolist() == keys[first].tolist()


def test_crowded_buckets_widen_offsets() -> None:
    # Keys that are not uniform crowd a few buckets (1024 keys each here): a block then
    # holds more rows than uint16 offsets can count, and the index must widen them.
    keys = np.arange(100_000, dtype=np.uint64) << np.uint64(40)
    built = keyindex.build(keys)
    assert built.index.bucket_offsets.dtype == np.uint32
    assert built.aliased == 0
    rows = built.index.lookup(keys)
    assert np.array_equal(built.order[rows], np.arange(keys.size))


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(InvalidTableError, match="distinct keys"):
        keyindex.build(np.array([5, 9, 5], dtype=np.uint64))


def test_wrong_dtype_is_refused() -> None:
    with pytest.raises(InvalidTableError, match="uint64"):
        keyindex.build(np.array([5, 9], dtype=np.int64))


def test_empty_index_finds_nothing() -> None:
    idx = keyindex.build(np.zeros(0, dtype=np.uint64)).index
    assert (idx.lookup(np.array([1, 2], dtype=np.uint64)) == -1).all()
