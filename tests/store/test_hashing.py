from __future__ import annotations

import numpy as np
import pytest

from saec.store.errors import InvalidIdsError
from saec.store.hashing import _fnv1a64_bytes, field_salt, hash_ids, splitmix64

_MASK = (1 << 64) - 1


def _mix(z: int) -> int:
    """splitmix64, written out in plain Python from the spec."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _fnv(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & _MASK
    return h


def _reference_int(x: int, field: str) -> int:
    return _mix((x & _MASK) ^ _mix(_fnv(b"saec:" + field.encode())))


def _reference_str(s: str, field: str) -> int:
    return _mix(_fnv(s.encode()) ^ _mix(_fnv(b"saec:" + field.encode())) ^ 0x9E3779B97F4A7C15)


def test_known_values_never_change() -> None:
    # Pinned outputs: a change here breaks every published snapshot.
    got = hash_ids(np.array([0, 1, 123456789, -1]), "user").tolist()
    assert got == [_reference_int(x, "user") for x in (0, 1, 123456789, -1)]
    assert hash_ids(["shoes", "", "é"], "query").tolist() == [_reference_str(s, "query") for s in ("shoes", "", "é")]
    # Literal pins as well, in case the reference above and the code drift together.
    assert hash_ids([0, 1], "user").tolist() == [2393626966069034028, 3373504643655815605]
    assert hash_ids(["shoes"], "query").tolist() == [10650708872558331451]


def test_salt_separates_fields_and_kinds() -> None:
    a = hash_ids([1, 2, 3], "user")
    b = hash_ids([1, 2, 3], "item")
    assert not np.intersect1d(a, b).size
    assert hash_ids(["7"], "user")[0] != hash_ids([7], "user")[0]
    assert field_salt("user") != field_salt("item")


def test_integer_kinds_agree() -> None:
    ids = [5, 10**12, 2**63 - 1]
    expect = hash_ids(np.array(ids, dtype=np.int64), "f")
    assert np.array_equal(hash_ids(ids, "f"), expect)
    assert np.array_equal(hash_ids(np.array(ids, dtype=np.uint64), "f"), expect)
    assert np.array_equal(hash_ids(np.array([5], dtype=np.int32), "f"), expect[:1])


def test_strings_bytes_and_numpy_agree() -> None:
    words = ["a", "bb", "ccc", "longer string with spaces", "ünï"]
    expect = hash_ids(words, "q")
    assert np.array_equal(hash_ids(np.array(words), "q"), expect)
    assert np.array_equal(hash_ids([w.encode() for w in words], "q"), expect)
    assert np.array_equal(hash_ids(np.array(words, dtype=object), "q"), expect)
    # A vectorised hash over a padded matrix must not let padding leak into short strings.
    assert len(set(hash_ids(["a", "a\x01", "ab"], "q").tolist())) == 3


def test_distinct_integers_never_collide(rng: np.random.Generator) -> None:
    ids = rng.choice(2**40, size=200_000, replace=False)
    assert np.unique(hash_ids(ids, "f")).size == ids.size


def test_hashed_passthrough() -> None:
    keys = np.array([1, 2**64 - 1], dtype=np.uint64)
    assert np.array_equal(hash_ids(keys, "f", hashed=True), keys)
    assert np.array_equal(hash_ids([1, 2**64 - 1], "f", hashed=True), keys)


@pytest.mark.parametrize(
    "ids, hashed, match",
    [
        ([1, "a"], False, "mix of int, str"),
        ([1.5], False, "got float"),
        ([[1]], False, "got list"),
        ([True], False, "got bool"),
        ([2**64], False, "within 64 bits"),
        (["a"], True, "unsigned 64-bit"),
        ([-1], True, "negative"),
        (["ok", "\ud800"], False, "UTF-8"),
    ],
)
def test_bad_ids(ids: list, hashed: bool, match: str) -> None:
    with pytest.raises(InvalidIdsError, match=match):
        hash_ids(ids, "f", hashed=hashed)


def test_splitmix_is_bijective_on_a_sample(rng: np.random.Generator) -> None:
    x = rng.integers(0, 2**63, size=100_000, dtype=np.uint64)
    assert np.unique(splitmix64(x)).size == np.unique(x).size
    assert int(_fnv1a64_bytes(b"")) == 0xCBF29CE484222325


def test_strings_of_very_different_lengths_match_the_reference() -> None:
    words = ["", "x" * 5000, "", "é" * 300, "a\x00b", "tail\x00\x00"]
    got = hash_ids(words, "q").tolist()
    # Trailing NULs are not significant (the spec); inner NULs are.
    want = [_reference_str(w.rstrip("\x00"), "q") for w in words]
    assert got == want
    assert got[4] != hash_ids(["ab"], "q")[0]


def test_mixed_sign_integers_beyond_int64_wrap_modulo_2_64() -> None:
    got = hash_ids([-1, 2**64 - 1, 2**63], "f")
    assert got[0] == got[1]
    assert got.tolist() == [_reference_int(x, "f") for x in (-1, 2**64 - 1, 2**63)]
    with pytest.raises(InvalidIdsError, match="within 64 bits"):
        hash_ids([-1, 2**64], "f")


def test_one_long_id_beside_many_short_ones_costs_their_bytes_not_a_padded_matrix() -> None:
    import tracemalloc

    ids = ["y" * 1_000_000] + [""] * 200_000
    hash_ids(ids[:2], "q")  # compile the kernel outside the measurement
    tracemalloc.start()
    try:
        hash_ids(ids, "q")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The ids' own bytes (1 MB) plus offsets and keys (16 B an id): a padded array
    # would need 200,001 x 1 MB.
    assert peak < 3 * (1_000_000 + 16 * len(ids)), peak
