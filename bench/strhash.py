"""String-id hashing and hostile-body parsing: what one request costs the server.

    python -m bench.strhash

Compares ``store.hashing.hash_ids`` on string ids with the fixed-width numpy approach
it replaced (ids padded to the longest, FNV-1a one byte column at a time), on ordinary
ids and on a body whose one long id pads every other; and times each step of parsing
large lookup bodies in ``server.codec.parse_lookup`` (the GIL-free structure count, then
orjson, then hashing), which is what other requests wait on. Best of 5 runs; the load
average is printed beside the table.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from saec.server._jsonscan import count_structure
from saec.store.hashing import STRING_TAG, field_salt, hash_ids, splitmix64

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def padded_hash(ids: list[str], field: str) -> np.ndarray:
    """The replaced approach: a ``U<longest>`` array, encoded, hashed column by column."""
    raw = np.char.encode(np.array(ids, dtype=np.str_), "utf-8")
    n, width = raw.shape[0], raw.dtype.itemsize
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    cols = np.ascontiguousarray(raw).view(np.uint8).reshape(n, width)
    lengths = np.char.str_len(raw)
    for j in range(width):
        np.copyto(h, (h ^ cols[:, j].astype(np.uint64)) * _FNV_PRIME, where=lengths > j)
    return splitmix64(h ^ field_salt(field) ^ STRING_TAG)


def best(fn: Callable[[], Any], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    cases = {
        "4096 ids like 'query-00000042'": [f"query-{i:08d}" for i in range(4096)],
        "262,144 ids like 'query-00000042'": [f"query-{i:08d}" for i in range(262_144)],
        "4096 non-ASCII ids like 'é-00000042'": [f"é-{i:08d}" for i in range(4096)],
        "one 1000-char id and 20,000 empty ones": ["x" * 1000] + [""] * 20_000,
    }
    hash_ids(["warm", "é"], "q")
    print("| string ids | saec ns/id | padded numpy ns/id | ratio |\n|---|---|---|---|")
    for name, ids in cases.items():
        assert np.array_equal(hash_ids(ids, "q"), padded_hash(ids, "q"))
        new = best(lambda ids=ids: hash_ids(ids, "q")) / len(ids) * 1e9
        old = best(lambda ids=ids: padded_hash(ids, "q")) / len(ids) * 1e9
        print(f"| {name} | {new:,.0f} | {old:,.0f} | {old / new:.1f}x |")

    bodies = {
        "1.1M unknown field names, 15 MB": orjson.dumps({"fields": {f"f{i:07d}": [] for i in range(1_100_000)}}),
        "120k non-ASCII string ids, 5 MB": orjson.dumps({"fields": {"q": [f"{'é' * 20}{i:010d}" for i in range(120_000)]}}),
        "262,144 integer ids, 4 MB": orjson.dumps({"fields": {"q": list(range(10**12, 10**12 + 262_144))}}),
    }
    count_structure(np.frombuffer(b'{"a": [1]}', dtype=np.uint8))
    print("\n| body | structure count ms (GIL released) | orjson.loads ms (GIL held) | per MB |\n|---|---|---|---|")
    for name, body in bodies.items():
        buf = np.frombuffer(body, dtype=np.uint8)
        scan = best(lambda buf=buf: count_structure(buf)) * 1e3
        parse = best(lambda body=body: orjson.loads(body), repeat=3) * 1e3
        mb = len(body) / 1e6
        print(f"| {name} | {scan:.1f} | {parse:.1f} | {scan / mb:.1f} / {parse / mb:.1f} ms |")
    print(f"\nload average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}, nproc {os.cpu_count()}")


if __name__ == "__main__":
    main()
