"""`saec compress --dask`: the snapshot is the single-process one, array for array."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

from saec import dask_compress
from saec.cli import main
from saec.compress import CompressedField, compress_field
from saec.loaders import open_table
from saec.store.hashing import hash_ids
from saec.store.snapshot import open_current
from saec.synthetic import generate_field

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three fields: one split over the cluster, one compressed whole, one dense."""
    rng = np.random.default_rng(11)
    big = generate_field("big", 60_000, 9, rng)
    mid = generate_field("mid", 9_000, 17, rng, id_offset=1 << 40)
    small = generate_field("small", 300, 9, rng, id_offset=2 << 40)
    path = tmp_path_factory.mktemp("dask") / "emb.npz"
    np.savez(
        path,
        **{"big.ids": big.ids, "big.vectors": big.vectors, "big.counts": big.counts,
           "mid.ids": mid.ids, "mid.vectors": mid.vectors, "mid.counts": mid.counts,
           "small.ids": small.ids, "small.vectors": small.vectors},
    )
    return path


def _arrays(store: Path) -> dict[str, str]:
    """Every array's checksum; a field's HNSW index by its size (its file holds a few words
    of memory addresses besides the graph, which tests/store/test_assign_index.py compares)."""
    snap = open_current(store)
    return {path: a["sha256"] if not path.endswith("/hnsw") else str(a["shape"])
            for path, a in snap.manifest["arrays"].items()}


def test_dask_snapshot_equals_single_process(tables: Path, tmp_path: Path) -> None:
    common = [str(tables), "--k", "50", "--top-n", "8000", "--min-factor", "100", "--seed", "7"]
    assert main(["compress", *common, "--out", str(tmp_path / "single")]) == 0
    # 60,000 rows over a 20,000-row limit: the big field's assignment runs as blocks.
    assert main(["compress", *common, "--out", str(tmp_path / "dask"), "--dask", "local:2",
                 "--dask-split-rows", "20000"]) == 0
    single, dask = _arrays(tmp_path / "single"), _arrays(tmp_path / "dask")
    assert set(single) == set(dask)
    assert "big/masks" in single and "mid/masks" in single and "small/vectors" in single
    assert {p for p in single if single[p] != dask[p]} == set()
    a, b = open_current(tmp_path / "single"), open_current(tmp_path / "dask")
    for name in ("big", "mid"):
        assert a.fields[name].attrs["inertia"] == b.fields[name].attrs["inertia"]
        assert a.fields[name].attrs["n_iter"] == b.fields[name].attrs["n_iter"]


@pytest.fixture(scope="module")
def cluster_client() -> Iterator[object]:
    with dask_compress.connect("local:2") as client:
        yield client


@pytest.mark.parametrize("extra", [
    ["--weight-by-count"],
    ["--private-rows", "40"],
    ["--subvectors", "3", "--weight-by-count", "--field", "big", "--field", "small"],  # 3 slices need dim 9
    ["--stages", "2", "--codebook-dtype", "float16"],
])
def test_dask_takes_the_accuracy_options_array_for_array(tables: Path, tmp_path: Path, extra: list[str]) -> None:
    common = [str(tables), "--k", "50", "--top-n", "8000", "--min-factor", "100", "--seed", "7", *extra]
    assert main(["compress", *common, "--out", str(tmp_path / "single")]) == 0
    # Count weighting also runs on the split field; the other options need whole fields,
    # so the split limit is above every field there.
    split = "20000" if extra == ["--weight-by-count"] else "100000"
    assert main(["compress", *common, "--out", str(tmp_path / "dask"), "--dask", "local:2", "--dask-split-rows", split]) == 0
    single, dask = _arrays(tmp_path / "single"), _arrays(tmp_path / "dask")
    assert set(single) == set(dask) and "big/masks" in single
    assert {p for p in single if single[p] != dask[p]} == set()
    kinds = {f.kind for f in open_current(tmp_path / "dask").fields.values()}
    want = "product" if "--subvectors" in extra else "residual" if "--stages" in extra else "compressed"
    assert want in kinds


def test_a_split_field_refuses_what_needs_the_whole_field(tables: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    for extra in (["--private-rows", "40"], ["--subvectors", "3"], ["--stages", "2"]):
        argv = [str(tables), "--k", "50", "--top-n", "8000", "--out", str(tmp_path / "s"), "--dask", "local:1",
                "--dask-split-rows", "20000", *extra]
        assert main(["compress", *argv]) != 0
        err = capsys.readouterr().err
        assert "field 'big': 60,000 rows is over the split limit of 20,000 rows" in err
        assert "--dask-split-rows of at least 60,000" in err
    assert not (tmp_path / "s" / "CURRENT").exists()


def test_split_field_equals_compress_field(tables: Path, cluster_client: object,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The split path (sample gathered, assignment in blocks) gives compress_field's arrays."""
    split_calls = []
    real = dask_compress._split_field
    monkeypatch.setattr(dask_compress, "_split_field", lambda *a: split_calls.append(a[2].name) or real(*a))
    params = dask_compress.Params(k=50, top_n=8000, seed=3)
    with open_table(tables) as table:
        plan = [(table, info) for info in table.fields()]
        done = {d.name: d for d in dask_compress.compress_plan(cluster_client, plan, params, split_rows=15_000)}
        whole = table.read_field("big")
    assert split_calls == ["big"]
    assert list(done) == ["big", "mid", "small"]  # plan order
    ref = compress_field(whole.vectors, whole.counts, k=50, top_n=8000, seed=3)
    got = done["big"].result
    assert isinstance(got, CompressedField) and isinstance(ref, CompressedField)
    assert np.array_equal(got.codebook, ref.codebook)
    assert np.array_equal(got.masks, ref.masks)
    assert got.inertia == ref.inertia and got.clustered == 8000
    assert np.array_equal(done["big"].keys, hash_ids(whole.ids, "big"))


def test_bad_row_outside_the_sample_fails_the_field(tmp_path: Path) -> None:
    """A NaN only the block-wise assignment sees still names the field and publishes nothing."""
    rng = np.random.default_rng(5)
    big = generate_field("big", 30_000, 9, rng)
    rare = int(np.argmin(big.counts))  # never in the top-n sample
    big.vectors[rare, 4] = np.nan
    path = tmp_path / "bad.npz"
    np.savez(path, **{"big.ids": big.ids, "big.vectors": big.vectors, "big.counts": big.counts})
    store = tmp_path / "store"
    assert main(["compress", str(path), "--out", str(store), "--k", "20", "--top-n", "3000",
                 "--dask", "local:2", "--dask-split-rows", "10000"]) == 2
    assert not (store / "CURRENT").exists()


def test_existing_scheduler_by_address(tables: Path, cluster_client: object, tmp_path: Path) -> None:
    """--dask tcp://HOST:PORT joins a running scheduler (here the module's local cluster)."""
    address = cluster_client.scheduler.address  # type: ignore[attr-defined]
    assert address.startswith("tcp://127.0.0.1:")
    common = [str(tables), "--k", "50", "--top-n", "8000", "--seed", "7"]
    assert main(["compress", *common, "--out", str(tmp_path / "single")]) == 0
    assert main(["compress", *common, "--out", str(tmp_path / "remote"), "--dask", address]) == 0
    assert _arrays(tmp_path / "single") == _arrays(tmp_path / "remote")


@pytest.mark.parametrize("address", ["local:0", "local:x", "127.0.0.1:8786", "localhost:8786"])
def test_bad_address_is_refused(address: str) -> None:
    with pytest.raises(dask_compress.DaskAddressError, match="expected --dask"):
        with dask_compress.connect(address):
            pass
