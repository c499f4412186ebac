"""`saec compress` from files to a published snapshot the server serves."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from saec.cli import main
from saec.server.app import create_app
from saec.settings import Settings
from saec.store.layout import StoreLayout
from saec.store.snapshot import open_current
from saec.synthetic import generate_field

pytestmark = pytest.mark.anyio


@pytest.fixture
def npz(tmp_path: Path) -> tuple[Path, dict]:
    rng = np.random.default_rng(3)
    user = generate_field("user", 12_000, 9, rng)
    tag = generate_field("tag", 80, 17, rng)
    path = tmp_path / "emb.npz"
    np.savez(
        path,
        **{"user.ids": user.ids, "user.vectors": user.vectors, "user.counts": user.counts,
           "tag.ids": tag.ids, "tag.vectors": tag.vectors},
    )
    return path, {"user": user, "tag": tag}


async def test_compress_publishes_what_the_server_serves(tmp_path: Path, npz: tuple[Path, dict],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path, data = npz
    store = tmp_path / "store"
    assert main(["compress", str(path), "--out", str(store), "--k", "100", "--top-n", "5000"]) == 0
    table = capsys.readouterr().out
    assert "user" in table and "k=100" in table and "dense" in table and "published" in table
    assert "tag stayed dense: 80 rows, fewer than min_factor * k = 100 * 100 = 10000" in table
    snap = open_current(store)
    user = snap.fields["user"]
    assert user.kind == "compressed" and user.k == 100 and user.features == 12_000
    assert user.attrs["clustered"] == 5000 and user.attrs["init"] == "kmeans++"
    assert snap.fields["tag"].kind == "dense"  # 80 < 100 * 100
    app = create_app(Settings.from_mapping({"store": str(store), "reload_interval": 0}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://saec") as c:
        r = await c.post("/lookup", json={"fields": {"user": data["user"].ids[:500].tolist(), "tag": [0, 1]}})
    got = np.array(r.json()["fields"]["user"]["vectors"], np.float32)
    # Every answer is a row of the codebook, and the row nearest the original vector.
    cb = np.asarray(user.codebook)
    dist = ((data["user"].vectors[:500, None, :] - cb[None]) ** 2).sum(-1)
    close = np.isclose(dist.min(axis=1), ((data["user"].vectors[:500] - got) ** 2).sum(-1), rtol=1e-4, atol=1e-5)
    assert close.mean() > 0.99  # aliased ids (about 1 in 10,000) may differ
    assert np.isin(got.view([("", got.dtype)] * 9), cb.view([("", cb.dtype)] * 9)).all()
    tag = np.array(r.json()["fields"]["tag"]["vectors"], np.float32)
    assert np.array_equal(tag, data["tag"].vectors[:2])


@pytest.mark.parametrize("damage, message", [
    ("nan", "field 'user'"),
    ("duplicate", "field 'user'"),
    ("short_ids", "field 'user'"),
])
def test_bad_input_publishes_nothing(tmp_path: Path, npz: tuple[Path, dict], damage: str, message: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    path, data = npz
    store = tmp_path / "store"
    assert main(["compress", str(path), "--out", str(store), "--top-n", "5000"]) == 0
    before = StoreLayout(store).versions()
    arrays = dict(np.load(path))
    if damage == "nan":
        arrays["user.vectors"][123, 4] = np.nan
    elif damage == "duplicate":
        arrays["user.ids"][10] = arrays["user.ids"][11]
    else:
        arrays["user.ids"] = arrays["user.ids"][:-1]
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    assert main(["compress", str(bad), "--out", str(store)]) == 2
    err = capsys.readouterr().err
    assert message in err
    layout = StoreLayout(store)
    assert layout.versions() == before and layout.current() == before[-1]
    assert not any(layout.partial_dir.iterdir())


def test_unreadable_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert main(["compress", str(tmp_path / "junk.npz"), "--out", str(tmp_path / "s")]) == 2
    assert "junk.npz" in capsys.readouterr().err
    assert main(["compress", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "s")]) == 2
    assert "missing.npz" in capsys.readouterr().err
    assert StoreLayout(tmp_path / "s").current_or_none() is None


def test_full_clustering_flag(tmp_path: Path, npz: tuple[Path, dict]) -> None:
    path, _ = npz
    assert main(["compress", str(path), "--out", str(tmp_path / "s"), "--top-n", "0", "--init", "topk"]) == 0
    user = open_current(tmp_path / "s").fields["user"]
    assert user.attrs["clustered"] == 12_000 and user.attrs["init"] == "topk"


async def test_private_rows_are_served_as_their_own_vectors(tmp_path: Path, npz: tuple[Path, dict]) -> None:
    path, data = npz
    store = tmp_path / "store"
    assert main(["compress", str(path), "--out", str(store), "--k", "100", "--private-rows", "300"]) == 0
    user = open_current(store).fields["user"]
    assert user.k == 400 and user.attrs["private_rows"] == 300
    head = np.argsort(-data["user"].counts, kind="stable")[:300]
    app = create_app(Settings.from_mapping({"store": str(store), "reload_interval": 0}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://saec") as c:
        r = await c.post("/lookup", json={"fields": {"user": data["user"].ids[head].tolist()}})
    got = np.array(r.json()["fields"]["user"]["vectors"], np.float32)
    # The 300 most frequent users read back their own trained vectors (aliased ids aside).
    assert np.mean((got == data["user"].vectors[head]).all(axis=1)) > 0.99


async def test_dense_fields_in_fewer_bytes_are_served_dequantised(tmp_path: Path, npz: tuple[Path, dict]) -> None:
    path, data = npz
    store = tmp_path / "store"
    assert main(["compress", str(path), "--out", str(store), "--k", "100", "--dense-dtype", "tag=int8"]) == 0
    snap = open_current(store)
    tag = snap.fields["tag"]
    assert snap.format_version == 2 and tag.kind == "quantised" and tag.vectors is not None and tag.vectors.dtype == np.uint8
    app = create_app(Settings.from_mapping({"store": str(store), "reload_interval": 0}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://saec") as c:
        r = await c.post("/lookup", json={"fields": {"tag": data["tag"].ids[:10].tolist()}})
        memory = (await c.get("/memory")).json()
    got = np.array(r.json()["fields"]["tag"]["vectors"], np.float32)
    want = data["tag"].vectors[:10]
    step = (want.max(axis=1) - want.min(axis=1)) / 255
    assert (np.abs(got - want).max(axis=1) <= step / 2 * 1.001 + 1e-7).all()
    assert memory["fields"]["tag"]["vectors_bytes"] == 80 * (17 + 8)


def test_dense_dtype_refuses_unknown_types(tmp_path: Path, npz: tuple[Path, dict], capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = npz
    assert main(["compress", str(path), "--out", str(tmp_path / "s"), "--dense-dtype", "bf16"]) != 0
    assert "expected float32, float16 or int8" in capsys.readouterr().err


async def test_product_quantisation_is_served_as_its_reconstruction(tmp_path: Path, npz: tuple[Path, dict],
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from saec.compress import ProductField, compress_field

    path, data = npz
    store = tmp_path / "store"
    assert main(["compress", str(path), "--out", str(store), "--k", "64", "--subvectors", "3", "--weight-by-count"]) == 0
    assert "3 x k=64" in capsys.readouterr().out
    snap = open_current(store)
    user = snap.fields["user"]
    assert snap.format_version == 3 and user.kind == "product" and user.k == 64
    assert user.attrs["weight_by_count"] is True
    u = data["user"]
    ref = compress_field(u.vectors, u.counts, k=64, min_factor=100, subvectors=3, weight_by_count=True)
    assert isinstance(ref, ProductField)
    app = create_app(Settings.from_mapping({"store": str(store), "reload_interval": 0}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://saec") as c:
        r = await c.post("/lookup", json={"fields": {"user": u.ids[:2000].tolist()}})
        memory = (await c.get("/memory")).json()
    got = np.array(r.json()["fields"]["user"]["vectors"], np.float32)
    # What compress_field reconstructs, served (aliased ids aside).
    assert np.mean((got == ref.vectors()[:2000]).all(axis=1)) > 0.99
    assert memory["fields"]["user"]["masks_bytes"] == user.rows * 3
    assert memory["fields"]["user"]["codebook_bytes"] == 64 * 4 * 9


async def test_product_quantisation_with_a_frequency_head_serves_the_head_whole(tmp_path: Path, npz: tuple[Path, dict],
                                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path, data = npz
    store = tmp_path / "store"
    assert main(["compress", str(path), "--out", str(store), "--k", "100", "--subvectors", "3", "--private-rows", "60",
                 "--weight-by-count"]) == 0
    assert "3 x k=160" in capsys.readouterr().out
    user = open_current(store).fields["user"]
    assert user.kind == "product" and user.k == 160 and user.attrs["private_rows"] == 60
    u = data["user"]
    head = np.argsort(-u.counts, kind="stable")[:60]
    app = create_app(Settings.from_mapping({"store": str(store), "reload_interval": 0}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://saec") as c:
        r = await c.post("/lookup", json={"fields": {"user": u.ids[head].tolist()}})
        memory = (await c.get("/memory")).json()
    # The 60 most frequent features read back their own vectors, bit for bit.
    np.testing.assert_array_equal(np.array(r.json()["fields"]["user"]["vectors"], np.float32), u.vectors[head])
    assert memory["fields"]["user"]["masks_bytes"] == user.rows * 3  # still one byte a slice
    assert memory["fields"]["user"]["codebook_bytes"] == 160 * 4 * 9


async def test_residual_quantisation_is_served_as_its_reconstruction(tmp_path: Path, npz: tuple[Path, dict],
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from saec.compress import ResidualField, compress_field

    path, data = npz
    store = tmp_path / "store"
    assert main(["compress", str(path), "--out", str(store), "--k", "64", "--stages", "2", "--weight-by-count"]) == 0
    assert "2 stages x k=64" in capsys.readouterr().out
    snap = open_current(store)
    user = snap.fields["user"]
    assert snap.format_version == 4 and user.kind == "residual" and user.k == 64 and user.stages == 2
    assert user.attrs["weight_by_count"] is True and user.attrs["seed"] == 0
    assert {"init", "inertia", "clustered", "n_iter"} <= set(user.attrs)
    u = data["user"]
    ref = compress_field(u.vectors, u.counts, k=64, min_factor=100, stages=2, weight_by_count=True)
    assert isinstance(ref, ResidualField)
    app = create_app(Settings.from_mapping({"store": str(store), "reload_interval": 0}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://saec") as c:
        r = await c.post("/lookup", json={"fields": {"user": u.ids[:2000].tolist()}})
        memory = (await c.get("/memory")).json()
        described = (await c.get("/snapshot")).json()
    got = np.array(r.json()["fields"]["user"]["vectors"], np.float32)
    # What compress_field reconstructs, served (aliased ids aside).
    assert np.mean((got == ref.vectors()[:2000]).all(axis=1)) > 0.99
    assert memory["fields"]["user"]["masks_bytes"] == user.rows * 2
    assert memory["fields"]["user"]["codebook_bytes"] == 2 * 64 * 4 * 9
    assert described["format_version"] == 4 and described["fields"]["user"]["kind"] == "residual"


async def test_residual_quantisation_with_float16_codebooks_serves_the_widened_stage_sum(
    tmp_path: Path, npz: tuple[Path, dict], capsys: pytest.CaptureFixture[str]
) -> None:
    from saec.compress import ResidualField, compress_field

    path, data = npz
    store = tmp_path / "store"
    assert main(["compress", str(path), "--out", str(store), "--k", "64", "--stages", "2", "--weight-by-count",
                 "--codebook-dtype", "float16"]) == 0
    out = capsys.readouterr().out
    assert "2 stages x k=64 float16" in out
    snap = open_current(store)
    user = snap.fields["user"]
    assert snap.format_version == 4 and user.kind == "residual" and user.stages == 2
    assert user.codebook is not None and user.codebook.dtype == np.float16
    # The ratio line counts the codebooks at 2 bytes a value (masks: one byte a stage).
    assert f"{12_000 * 4 * 9 / (12_000 * 2 + 2 * 64 * 2 * 9):.1f}x" in out
    u = data["user"]
    ref = compress_field(u.vectors, u.counts, k=64, min_factor=100, stages=2, weight_by_count=True)
    assert isinstance(ref, ResidualField)
    wide = ref.codebooks.astype(np.float16).astype(np.float32)
    want = wide[0][ref.masks[:2000, 0]] + wide[1][ref.masks[:2000, 1]]
    app = create_app(Settings.from_mapping({"store": str(store), "reload_interval": 0}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://saec") as c:
        r = await c.post("/lookup", json={"fields": {"user": u.ids[:2000].tolist()}})
        memory = (await c.get("/memory")).json()
    got = np.array(r.json()["fields"]["user"]["vectors"], np.float32)
    # The float16-widened stage sum of what compress_field fitted, served (aliased ids aside).
    assert np.mean((got == want).all(axis=1)) > 0.99
    assert memory["fields"]["user"]["codebook_bytes"] == 2 * 64 * 9 * 2
    assert memory["fields"]["user"]["masks_bytes"] == user.rows * 2


def test_codebook_dtype_float16_needs_stages(tmp_path: Path, npz: tuple[Path, dict],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = npz
    for extra in ([], ["--stages", "1"], ["--subvectors", "3"]):
        assert main(["compress", str(path), "--out", str(tmp_path / "s"), "--k", "64", "--codebook-dtype", "float16",
                     *extra]) != 0
        assert "--codebook-dtype float16 applies to residual fields (--stages > 1)" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        main(["compress", str(path), "--out", str(tmp_path / "s"), "--stages", "2", "--codebook-dtype", "bfloat16"])
    assert "--codebook-dtype: invalid choice: 'bfloat16'" in capsys.readouterr().err
    assert not (tmp_path / "s" / "CURRENT").exists()


def test_residual_quantisation_refuses_subvectors(tmp_path: Path, npz: tuple[Path, dict],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = npz
    assert main(["compress", str(path), "--out", str(tmp_path / "s"), "--stages", "2", "--subvectors", "3"]) != 0
    assert "stages > 1" in capsys.readouterr().err
    assert not (tmp_path / "s" / "CURRENT").exists()


def test_product_quantisation_needs_subvectors_dividing_dim(tmp_path: Path, npz: tuple[Path, dict],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = npz
    assert main(["compress", str(path), "--out", str(tmp_path / "s"), "--k", "64", "--subvectors", "2"]) != 0
    assert "subvectors dividing dim=9" in capsys.readouterr().err


def test_per_field_settings_override_the_flags_for_one_field(tmp_path: Path, npz: tuple[Path, dict]) -> None:
    path, _ = npz
    store = tmp_path / "store"
    # user: residual 2 x 64 with float16 codebooks; tag (80 features): int8 rows; the global --k 32 applies to neither.
    assert main(["compress", str(path), "--out", str(store), "--k", "32", "--min-factor", "1", "--top-n", "2000",
                 "--per-field", "user:k=64,stages=2,codebook-dtype=float16,weight-by-count=1",
                 "--per-field", "tag:dense-dtype=int8"]) == 0
    snap = open_current(store)
    user, tag = snap.fields["user"], snap.fields["tag"]
    assert user.kind == "residual" and user.k == 64 and user.attrs["weight_by_count"] is True
    assert tag.kind == "quantised" and tag.vectors is not None and tag.vectors.dtype == np.uint8


@pytest.mark.parametrize("flag, message", [
    ("nobody:k=8", "which no input holds"),
    ("user:kk=8", "KEY one of"),
    ("user:k=eight", "expects an integer"),
    ("user:codebook-dtype=float16", "add stages=S"),
    ("user", "NAME:KEY=VALUE"),
])
def test_per_field_refuses_bad_settings(tmp_path: Path, npz: tuple[Path, dict], capsys: pytest.CaptureFixture[str],
                                        flag: str, message: str) -> None:
    path, _ = npz
    assert main(["compress", str(path), "--out", str(tmp_path / "s"), "--per-field", flag]) != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s" / "CURRENT").exists()
