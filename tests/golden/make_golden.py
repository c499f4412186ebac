"""Writes the golden snapshot of the current format version (run once per version).

    python -m tests.golden.make_golden tests/golden/v1
    python -m tests.golden.make_golden tests/golden/v2   # adds quantised fields
    python -m tests.golden.make_golden tests/golden/v3   # adds a product-quantised field
    python -m tests.golden.make_golden tests/golden/v4   # adds residual-quantised fields (float32 and float16 codebooks)

The store it writes is checked in and must keep opening, with the same answers,
in every later release. Never regenerate an existing version's folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import orjson

from saec.store.engine import LookupEngine
from saec.store.hashing import hash_ids
from saec.store.snapshot import open_current
from saec.store.writer import SnapshotWriter


def main(out: str) -> None:
    root = Path(out)
    if root.exists():
        raise SystemExit(f"{root} exists: golden snapshots are never regenerated")
    rng = np.random.default_rng(7)
    user_ids = np.arange(60) * 11
    codebook = np.round(rng.normal(size=(4, 3)), 3).astype(np.float32)
    masks = rng.integers(0, 4, 60).astype(np.uint8)
    tags = np.array(["red", "green", "blue", "ünïcode", ""])
    tag_vectors = np.round(rng.normal(size=(5, 2)), 3).astype(np.float32)
    quantised = root.name != "v1"
    with SnapshotWriter(root, source=f"golden {root.name}") as w:
        w.add_compressed_field("user", hash_ids(user_ids, "user"), codebook, masks, counts=np.arange(60) + 1)
        w.add_dense_field("tag", hash_ids(tags, "tag"), tag_vectors)
        if quantised:
            site_ids = np.arange(40) * 3
            site_vectors = np.round(rng.normal(size=(40, 5)), 3).astype(np.float32)
            w.add_quantised_field("site16", hash_ids(site_ids, "site16"), site_vectors, "float16")
            w.add_quantised_field("site8", hash_ids(site_ids, "site8"), site_vectors, "int8")
        product = root.name not in ("v1", "v2")
        if product:
            item_ids = np.arange(50) * 5
            codebooks = np.round(rng.normal(size=(2, 4, 2)), 3).astype(np.float32)
            item_masks = rng.integers(0, 4, (50, 2)).astype(np.uint8)
            w.add_product_field("item", hash_ids(item_ids, "item"), codebooks, item_masks)
        residual = root.name not in ("v1", "v2", "v3")
        if residual:
            shop_ids = np.arange(45) * 7
            stage_codebooks = np.round(rng.normal(size=(3, 4, 3)), 3).astype(np.float32)
            shop_masks = rng.integers(0, 4, (45, 3)).astype(np.uint8)
            w.add_residual_field("shop", hash_ids(shop_ids, "shop"), stage_codebooks, shop_masks)
            # float16 codebooks: signed zeros, a subnormal and the largest half among them.
            half_codebooks = np.round(rng.normal(size=(2, 4, 3)), 3).astype(np.float32)
            half_codebooks.reshape(-1)[:4] = [-0.0, 6e-8, 65504.0, -65504.0]
            half_masks = rng.integers(0, 4, (45, 2)).astype(np.uint8)
            w.add_residual_field(
                "shop16", hash_ids(shop_ids, "shop16"), half_codebooks, half_masks, codebook_dtype="float16"
            )
        w.publish()
    queries = {"user": [0, 11, 649, 5, 12345], "tag": ["red", "", "ünïcode", "purple"]}
    if quantised:
        queries |= {"site16": [0, 3, 117, 4], "site8": [0, 3, 117, 4]}
    if product:
        queries |= {"item": [0, 5, 245, 7]}
    if residual:
        queries |= {"shop": [0, 7, 308, 9], "shop16": [0, 7, 308, 9, 14, 21, 28]}
    engine = LookupEngine(open_current(root))
    result = engine.lookup({name: hash_ids(ids, name) for name, ids in queries.items()})
    expected = {
        "queries": queries,
        "answers": {
            name: {"vectors": r.vectors.tolist(), "found": r.found.tolist()} for name, r in result.fields.items()
        },
    }
    (root / "expected.json").write_bytes(orjson.dumps(expected, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main(sys.argv[1])
