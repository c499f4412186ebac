"""The fast reader of integer-id JSON requests answers exactly as orjson + hash_ids would.

Differential: every body goes through ``parse_lookup`` twice, with the fast reader and
with it switched off; both must give the same keys and encoding, or the same error.
Bodies are valid requests written many ways, hand-picked edge cases, and seeded random
mutations of valid bodies (a fuzz loop), so that the fast reader never accepts what the
general path refuses nor reads a number differently.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import orjson
import pytest

from saec.server import codec
from saec.server.jsonids import read_int_request


def _both(body: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[object, object]:
    def outcome() -> object:
        try:
            req = codec.parse_lookup(body, "application/json")
        except Exception as exc:  # the error is part of the answer compared
            return (type(exc), str(exc))
        return ({n: k.tolist() for n, k in req.fields.items()}, req.encoding)

    fast = outcome()
    with monkeypatch.context() as m:
        m.setattr(codec, "_int_request", lambda b: None)
        slow = outcome()
    return fast, slow


def _valid_bodies(rng: np.random.Generator) -> Iterator[bytes]:
    names = ["user", "item", "ü-field", "a b", "x"]
    for i in range(150):
        fields = {}
        for name in rng.choice(names, size=int(rng.integers(0, 4)), replace=False):
            n = int(rng.integers(0, 40))
            kind = i % 4
            if kind == 0:
                ids = rng.integers(0, 2**64, size=n, dtype=np.uint64).tolist()
            elif kind == 1:
                ids = rng.integers(-(2**63), 2**63, size=n, dtype=np.int64).tolist()
            elif kind == 2:
                ids = rng.integers(0, 1000, size=n).tolist()
            else:
                ids = [0, 1, 2**63 - 1, 2**63, 2**64 - 1, -1, -(2**63)][: int(rng.integers(1, 8))]
            fields[str(name)] = ids
        doc: dict[str, object] = {"fields": fields}
        if i % 3:
            doc["hashed"] = bool(i % 2)
        if i % 5 == 0:
            doc["encoding"] = "base64" if i % 10 else "float"
        items = list(doc.items())
        rng.shuffle(items)  # type: ignore[arg-type]
        text = orjson.dumps(dict(items), option=orjson.OPT_INDENT_2 if i % 7 == 0 else 0)
        yield text


EDGE_CASES = [
    b'{"fields": {"a": [1, 2,]}}',
    b'{"fields": {"a": [01]}}',
    b'{"fields": {"a": [1.0]}}',
    b'{"fields": {"a": [1e3]}}',
    b'{"fields": {"a": [-0]}, "hashed": true}',
    b'{"fields": {"a": [-0]}}',
    b'{"fields": {"a": [-1]}, "hashed": true}',
    b'{"fields": {"a": [18446744073709551616]}}',
    b'{"fields": {"a": [18446744073709551615]}, "hashed": true}',
    b'{"fields": {"a": [-9223372036854775809]}}',
    b'{"fields": {"a": [-9223372036854775808, 18446744073709551615]}}',
    b'{"fields": {"a": [1]}, "fields": {"a": [2]}}',
    b'{"fields": {"a": [1], "a": [2]}}',
    b'{"fields": {"a": [1]}, "hashed": 1}',
    b'{"fields": {"a": [1]}, "extra": 1}',
    b'{"fields": {"a": [1]},}',
    b'{"fields": {"a": [1]}} x',
    b'{"fields": {"a": [1]}, "encoding": "hex"}',
    b'{"fields": {"a\\u0062": [1]}}',
    b'{"fields": {"a": ["1"]}}',
    b'{"fields": {"a": [true]}}',
    b'{"fields": {"a": [[1]]}}',
    b'{"fields": {"a": [1 2]}}',
    b'{"fields": {"a": [- 1]}}',
    b'{"fields": {}}',
    b'{"fields": []}',
    b'{"hashed": true}',
    b"{}",
    b"",
    b"[]",
    b'{"fields": {"a": [1]',
    b'{"fields": {"a": [\t1 ,\n2\r]}}',
    b'\xef\xbb\xbf{"fields": {"a": [1]}}',
    b'{"fields": {"\xff": [1]}}',
]


def test_valid_bodies_read_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    taken = 0
    for body in _valid_bodies(rng):
        fast, slow = _both(body, monkeypatch)
        assert fast == slow, body[:200]
        taken += read_int_request(body) is not None
    assert taken > 100  # the fast reader did take most of them


@pytest.mark.parametrize("body", EDGE_CASES)
def test_edge_cases_read_the_same(body: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, slow = _both(body, monkeypatch)
    assert fast == slow


def test_mutated_bodies_read_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(11)
    alphabet = b' ,[]{}":-.eE0123456789atrufls\\\n'
    bodies = list(_valid_bodies(np.random.default_rng(3)))
    for _ in range(3000):
        body = bytearray(bodies[int(rng.integers(len(bodies)))])
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(0, len(body) + 1))
            op = int(rng.integers(3))
            c = alphabet[int(rng.integers(len(alphabet)))]
            if op == 0 and at < len(body):
                del body[at]
            elif op == 1:
                body.insert(at, c)
            elif at < len(body):
                body[at] = c
        fast, slow = _both(bytes(body), monkeypatch)
        assert fast == slow, bytes(body)[:300]
