"""JSON answers (float text and base64) equal the binary answer bit for bit.

Compressed fields answer from per-snapshot texts of their codebook rows, dense fields
from per-request formatting; both must give back exactly the float32 the binary
protocol carries, found flags and default vectors included.
"""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from saec.base64rows import Base64Error, decode_rows, encode_rows, encoded_width
from saec.server import jsontext
from saec.server.app import create_app
from saec.server.jsontext import RowTexts, _field_json, float_texts, render_json
from saec.settings import Settings
from saec.store.engine import LookupEngine
from saec.store.hashing import hash_ids
from saec.store.snapshot import open_current
from saec.store.writer import SnapshotWriter
from saec.wire import IDS_MEDIA_TYPE, VECTORS_MEDIA_TYPE, decode_vectors, encode_ids
from tests.conftest import write_small_store

pytestmark = pytest.mark.anyio


def _hard_floats(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """float32 values whose shortest text is long: random bit patterns (finite), subnormals, extremes."""
    bits = rng.integers(0, 2**32, size=shape, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32).copy()
    x[~np.isfinite(x)] = np.float32(1.0)
    flat = x.reshape(-1)
    specials = np.array(
        [0.0, -0.0, 1e-45, -1e-45, 1.1754942e-38, 3.4028235e38, -3.4028235e38, 0.1, 1 / 3, 16777217.0], np.float32
    )
    flat[: specials.size] = specials
    return x


def _store(root: Path, rng: np.random.Generator) -> dict:
    """user: compressed, codebook of hard floats; country: dense, hard floats."""
    n, k, dim = 3000, 200, 16
    codebook = _hard_floats(rng, (k, dim))
    masks = rng.integers(0, k, size=n).astype(np.uint8)
    country = _hard_floats(rng, (300, 17))
    user_ids = np.arange(n, dtype=np.int64) * 7 + 3
    country_ids = np.array([f"c{i}" for i in range(300)])
    with SnapshotWriter(root, source="tests") as w:
        w.add_compressed_field("user", hash_ids(user_ids, "user"), codebook, masks)
        w.add_dense_field("country", hash_ids(country_ids, "country"), country)
        w.publish()
    return {"user_ids": user_ids, "country_ids": country_ids, "codebook": codebook, "masks": masks, "country": country}


def _client(root: Path, default: str) -> httpx.AsyncClient:
    app = create_app(Settings.from_mapping({"store": str(root), "reload_interval": 0, "default_vector": default}))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://saec")


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize("dense_cached", [True, False])
@pytest.mark.parametrize("default", ["zeros", "mean"])
async def test_json_and_base64_equal_binary_bit_for_bit(
    tmp_path: Path, rng: np.random.Generator, default: str, dense_cached: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The dense field (300 rows) answers from per-row texts, or (limit 0) per request.
    monkeypatch.setattr(jsontext, "DENSE_ROWS_CACHED", 65_536 if dense_cached else 0)
    data = _store(tmp_path / "store", rng)
    # Every codebook row at least once, stored and never-stored ids mixed, in random order.
    user = np.concatenate([data["user_ids"], np.arange(50, dtype=np.int64) * 7 + 5])  # +5: never stored
    rng.shuffle(user)
    country = np.concatenate([data["country_ids"], ["nowhere", "else"]]).tolist()
    keys = {"user": hash_ids(user, "user"), "country": hash_ids(country, "country")}
    async with _client(tmp_path / "store", default) as c:
        rb = await c.post(
            "/lookup",
            content=encode_ids(keys, hashed=True),
            headers={"content-type": IDS_MEDIA_TYPE, "accept": VECTORS_MEDIA_TYPE},
        )
        doc = {"fields": {n: k.tolist() for n, k in keys.items()}, "hashed": True}
        rf = await c.post("/lookup", json=doc)
        r64 = await c.post("/lookup", json={**doc, "encoding": "base64"})
    assert rb.status_code == rf.status_code == r64.status_code == 200
    binary = decode_vectors(rb.content).fields
    as_float, as_b64 = orjson.loads(rf.content), orjson.loads(r64.content)
    assert r64.json()["encoding"] == "base64" and "encoding" not in as_float
    for name in ("user", "country"):
        vectors, found = binary[name]
        assert (~found).sum() >= 2  # not-found rows (the default vector) are compared too
        f = as_float["fields"][name]
        assert f["found"] == found.tolist()
        # Read as float64 and rounded to float32, the way a JSON reader in any language would.
        from_text = np.asarray(f["vectors"], dtype=np.float64).astype(np.float32)
        assert np.array_equal(_bits(from_text), _bits(vectors))
        b = as_b64["fields"][name]
        assert b["found"] == found.tolist() and b["dim"] == vectors.shape[1]
        from_b64 = np.stack([np.frombuffer(base64.b64decode(s), dtype="<f4") for s in b["vectors"]])
        assert np.array_equal(_bits(from_b64), _bits(vectors))
    # Every codebook row was answered, so every cached row text was read back above.
    user_found = binary["user"][1]
    codes = set(data["masks"][np.flatnonzero(np.isin(data["user_ids"], user[user_found]))].tolist())
    assert codes == set(range(data["codebook"].shape[0]))


@pytest.mark.parametrize("default", ["zeros", "mean"])
async def test_json_of_product_and_residual_fields_equals_binary_bit_for_bit(
    tmp_path: Path, rng: np.random.Generator, default: str
) -> None:
    """Fields of several masks a row answer through the generic (per-request) path: their
    vectors are sums (residual) or concatenations (product) no cached row text holds."""
    n, k = 2000, 300  # uint16 masks
    stage_codebooks = _hard_floats(rng, (3, k, 16))
    stage_codebooks[np.abs(stage_codebooks) > 1e30] = np.float32(-0.0)  # so that every sum stays finite
    slice_codebooks = _hard_floats(rng, (2, k, 8))
    # float16 codebooks (widened in the kernel): random finite halves, subnormals and zeros among them.
    halves = rng.integers(0, 2**16, size=(3, k, 16), dtype=np.uint64).astype(np.uint16).view(np.float16)
    halves[~np.isfinite(halves)] = np.float16(-0.0)
    halves.reshape(-1)[:4] = np.array([0.0, -0.0, 6e-8, -65504.0], np.float16)
    ids = np.arange(n, dtype=np.int64) * 3
    with SnapshotWriter(tmp_path / "store", source="tests") as w:
        w.add_residual_field("shop", hash_ids(ids, "shop"), stage_codebooks, rng.integers(0, k, (n, 3)))
        w.add_residual_field(
            "shop16", hash_ids(ids, "shop16"), halves.astype(np.float32), rng.integers(0, k, (n, 3)),
            codebook_dtype="float16",
        )
        w.add_product_field("item", hash_ids(ids, "item"), slice_codebooks, rng.integers(0, k, (n, 2)))
        w.publish()
    asked = np.concatenate([ids, [1, 2, 4]])  # three never stored
    rng.shuffle(asked)
    keys = {name: hash_ids(asked, name) for name in ("shop", "shop16", "item")}
    async with _client(tmp_path / "store", default) as c:
        rb = await c.post(
            "/lookup",
            content=encode_ids(keys, hashed=True),
            headers={"content-type": IDS_MEDIA_TYPE, "accept": VECTORS_MEDIA_TYPE},
        )
        doc = {"fields": {name: k.tolist() for name, k in keys.items()}, "hashed": True}
        rf = await c.post("/lookup", json=doc)
        r64 = await c.post("/lookup", json={**doc, "encoding": "base64"})
    assert rb.status_code == rf.status_code == r64.status_code == 200
    binary = decode_vectors(rb.content).fields
    as_float, as_b64 = orjson.loads(rf.content), orjson.loads(r64.content)
    for name in ("shop", "shop16", "item"):
        vectors, found = binary[name]
        assert (~found).sum() == 3 and np.isfinite(vectors).all()
        f = as_float["fields"][name]
        assert f["found"] == found.tolist() and f["dim"] == 16
        from_text = np.asarray(f["vectors"], dtype=np.float64).astype(np.float32)
        assert np.array_equal(_bits(from_text), _bits(vectors))
        b = as_b64["fields"][name]
        assert b["found"] == found.tolist() and b["dim"] == 16
        from_b64 = np.stack([np.frombuffer(base64.b64decode(s), dtype="<f4") for s in b["vectors"]])
        assert np.array_equal(_bits(from_b64), _bits(vectors))
    # And the binary answer is the stage sum itself (signed zeros included).
    engine = LookupEngine(open_current(tmp_path / "store"))
    shop = engine.field("shop")
    assert shop.masks is not None
    rows = shop.index.lookup(keys["shop"])
    stored = rows >= 0
    want = stage_codebooks[0][shop.masks[rows[stored], 0]]
    for s in (1, 2):
        want += stage_codebooks[s][shop.masks[rows[stored], s]]
    assert np.array_equal(_bits(binary["shop"][0][stored]), _bits(want))
    # The float16 field: the float32 stage sum of the widened halves.
    shop16 = engine.field("shop16")
    assert shop16.masks is not None and shop16.codebook is not None and shop16.codebook.dtype == np.float16
    rows = shop16.index.lookup(keys["shop16"])
    stored = rows >= 0
    wide = halves.astype(np.float32)
    want = wide[0][shop16.masks[rows[stored], 0]]
    for s in (1, 2):
        want += wide[s][shop16.masks[rows[stored], s]]
    assert np.array_equal(_bits(binary["shop16"][0][stored]), _bits(want))


def test_float_text_reads_back_every_codebook_row_exactly(tmp_path: Path, rng: np.random.Generator) -> None:
    rows = _hard_floats(rng, (5000, 16))
    texts = float_texts(rows)
    back = np.array([orjson.loads(t) for t in texts], dtype=np.float64).astype(np.float32)
    assert np.array_equal(_bits(back), _bits(rows))
    # ... and as float32 directly (numpy parses the decimal text to the nearest float32).
    direct = np.array([t.decode().strip("[]").split(",") for t in texts], dtype=np.float32)
    assert np.array_equal(_bits(direct), _bits(rows))


def test_float_text_equals_orjson_of_the_whole_document(tmp_path: Path, rng: np.random.Generator) -> None:
    """Float encoding keeps the answer's bytes: what orjson.dumps of the document wrote before."""
    data = write_small_store(tmp_path / "store", rng)
    engine = LookupEngine(open_current(tmp_path / "store"), default="mean")
    ids = np.concatenate([data["user_ids"][:500], [1, 2]])
    result = engine.lookup({"user": hash_ids(ids, "user"), "country": hash_ids(["c1", "x"], "country")})
    doc = {
        "version": result.version,
        "fields": {
            n: {"dim": int(r.vectors.shape[1]), "vectors": r.vectors, "found": r.found}
            for n, r in result.fields.items()
        },
    }
    assert render_json(result, engine) == orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def test_field_json_writes_rows_found_flags_and_the_default_row() -> None:
    texts = RowTexts.of([b"[1]", b"[2.5,3]", b'"x"'])

    def field(rows: list[int], found: list[bool]) -> bytes:
        u8 = lambda b: np.frombuffer(b, np.uint8)  # noqa: E731
        out = _field_json(u8(b"<"), texts.blob, texts.offsets, np.array(rows, np.int64), 2, np.array(found), u8(b">"))
        return bytes(out)

    assert field([1, 0, -1, 0], [True, True, False, True]) == b'<[[2.5,3],[1],"x",[1]],"found":[true,true,false,true]>'
    assert field([], []) == b'<[],"found":[]>'
    # A row past the texts reads the last text, never outside the blob.
    assert field([7], [True]) == b'<["x"],"found":[true]>'


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 36, 64, 68])
def test_base64_rows_match_the_standard_library(length: int, rng: np.random.Generator) -> None:
    rows = rng.integers(0, 256, size=(40, length), dtype=np.uint8)
    text = encode_rows(rows)
    assert text.shape == (40, encoded_width(length))
    assert [bytes(t) for t in text] == [base64.b64encode(bytes(r)) for r in rows]
    assert np.array_equal(decode_rows(text, length), rows)


def test_base64_rows_refuse_bad_text() -> None:
    text = encode_rows(np.arange(64, dtype=np.uint8).reshape(1, 64))
    bad = text.copy()
    bad[0, 5] = ord("!")
    with pytest.raises(Base64Error, match="base64 characters"):
        decode_rows(bad, 64)
    with pytest.raises(Base64Error, match="88 characters"):
        decode_rows(text[:, :84], 64)


async def test_unknown_encoding_is_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    write_small_store(tmp_path / "store", rng)
    async with _client(tmp_path / "store", "zeros") as c:
        r = await c.post("/lookup", json={"fields": {"user": [3]}, "encoding": "hex"})
    assert r.status_code == 422 and "encoding" in r.json()["detail"]


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_json_equals_binary_with_pending_updates(tmp_path: Path, rng: np.random.Generator, encoding: str) -> None:
    """Updated ids (new and reassigned) answer from the overlay; the JSON text must still be theirs."""
    from saec.store.live import LiveEngine
    from saec.store.updates import Updater

    root = tmp_path / "store"
    data = write_small_store(root, rng)
    live = LiveEngine(root)
    stored = hash_ids(data["user_ids"][:20], "user")
    new = hash_ids(np.arange(10**9, 10**9 + 20), "user")
    Updater(root, live.engine).apply({
        "user": (np.concatenate([stored, new]), rng.normal(size=(40, 9)).astype(np.float32)),
        "country": (hash_ids(["c1", "new-country"], "country"), rng.normal(size=(2, 17)).astype(np.float32)),
    })
    keys = {
        "user": np.concatenate([stored, new, hash_ids(data["user_ids"][20:60], "user"), hash_ids([-5], "user")]),
        "country": hash_ids(["c1", "new-country", "c2", "nowhere"], "country"),
    }
    result = live.engine.lookup(keys)
    assert result.fields["user"].found[:80].all() and not result.fields["user"].found[80]
    doc = orjson.loads(bytes(render_json(result, live.engine, encoding)))  # type: ignore[arg-type]
    for name, r in result.fields.items():
        got = doc["fields"][name]
        if encoding == "float":
            vectors = np.array(got["vectors"], dtype=np.float32)
        else:
            vectors = np.stack([np.frombuffer(base64.b64decode(v), "<f4") for v in got["vectors"]])
        assert np.array_equal(_bits(vectors), _bits(r.vectors))
        assert got["found"] == r.found.tolist()
