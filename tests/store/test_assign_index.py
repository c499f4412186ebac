"""The HNSW index over a compressed field's codebook: built at publish, stored, checked, loaded, chosen."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from saec.settings import Settings, SettingsError
from saec.store import assign_index
from saec.store.assign_index import (
    AUTO_MAX_EF,
    AUTO_MIN_K,
    DEFAULT_HNSW,
    PROBE_RECALL,
    HnswParams,
    SnapshotIndexes,
    exact_nearest,
    probe_vectors,
    recall_at_1,
    resolve,
)
from saec.store.errors import CorruptSnapshotError
from saec.store.fold import fold
from saec.store.footprint import snapshot_footprint
from saec.store.hashing import hash_ids
from saec.store.live import LiveEngine
from saec.store.snapshot import chunk_path, open_current
from saec.store.updates import Updater
from saec.store.writer import SnapshotWriter
from saec.synthetic import clustered_vectors
from tests.conftest import write_small_store

GOLDEN = Path(__file__).parent.parent / "golden"


def _clustered_store(root: Path, k: int = 512, dim: int = 16, hnsw: HnswParams | None = DEFAULT_HNSW) -> np.ndarray:
    """A compressed field whose codebook is k-means-like: rows drawn from clustered data."""
    rng = np.random.default_rng(5)
    codebook = clustered_vectors(k, dim, rng, centers=20)
    n = 3000
    with SnapshotWriter(root, source="tests", hnsw=hnsw) as w:
        w.add_compressed_field("item", hash_ids(np.arange(n), "item"), codebook, rng.integers(0, k, n).astype(np.uint16))
        w.add_dense_field("tag", hash_ids(np.arange(10), "tag"), rng.normal(size=(10, 3)).astype(np.float32))
        w.publish()
    return codebook


def test_publish_stores_a_checksummed_index_that_loads_and_answers_like_exact(tmp_path: Path) -> None:
    root = tmp_path / "s"
    codebook = _clustered_store(root)
    snap = open_current(root)
    f = snap.fields["item"]
    assert f.hnsw is not None and f.hnsw["m"] in f.hnsw["m_tried"] and f.hnsw["ef_construction"] == 200
    assert f.hnsw["ef"] in assign_index.EF_LADDER and f.hnsw["probe_recall"] >= PROBE_RECALL
    info = f.arrays["hnsw"]
    assert info.dtype == "uint8" and info.nbytes > codebook.nbytes  # the graph holds the vectors and the links
    assert snap.fields["tag"].hnsw is None and "hnsw" not in snap.fields["tag"].arrays
    snap.verify()
    # Counted in /memory's footprint, apart from the bytes a lookup reads.
    fp = snapshot_footprint(snap, measure_resident=False)["fields"]["item"]
    lookup_reads = sum(a.nbytes for rel, a in f.arrays.items() if rel not in ("hnsw", "counts", "fold_bits"))
    assert fp["assign_index_bytes"] == info.nbytes and fp["serving_bytes"] == lookup_reads
    loaded = SnapshotIndexes(snap)
    index = loaded.get("item", f.codebook, "hnsw")
    assert index.method == "hnsw" and index.ef == f.hnsw["ef"]
    # Vectors the build never saw, in and out of the codebook's distribution.
    rng = np.random.default_rng(99)
    queries = np.concatenate([
        codebook[rng.integers(0, 512, 2000)] + rng.normal(scale=0.05, size=(2000, 16)).astype(np.float32),
        rng.normal(scale=3.0, size=(1000, 16)).astype(np.float32),
    ])
    assert recall_at_1(codebook, queries, index.nearest(queries)) >= 0.995
    # Two loads of one snapshot (two workers, two replicas) answer the same.
    again = SnapshotIndexes(open_current(root)).get("item", f.codebook, "hnsw")
    assert np.array_equal(again.nearest(queries), index.nearest(queries))


def test_a_damaged_index_is_refused_even_without_verify_on_open(tmp_path: Path) -> None:
    root = tmp_path / "s"
    _clustered_store(root, k=64)
    snap = open_current(root)
    path = chunk_path(snap.path / snap.fields["item"].arrays["hnsw"].path, 1)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptSnapshotError, match="item/hnsw"):
        snap.verify()
    with pytest.raises(CorruptSnapshotError, match="sha256"):
        SnapshotIndexes(open_current(root))
    live = LiveEngine(root, verify=False)  # serves lookups; whoever assigns updates refuses the index
    assert live.engine is not None
    with pytest.raises(CorruptSnapshotError):
        Updater(root, live.engine)


def test_snapshots_without_an_index_open_and_assign_exactly(tmp_path: Path) -> None:
    # Written without one (--hnsw-m 0), and a golden snapshot of every earlier release.
    root = tmp_path / "s"
    codebook = _clustered_store(root, hnsw=None)
    snap = open_current(root)
    assert snap.fields["item"].hnsw is None and "hnsw" not in snap.fields["item"].arrays
    live = LiveEngine(root)
    vectors = np.random.default_rng(1).normal(size=(300, 16)).astype(np.float32)
    rep = Updater(root, live.engine, search="hnsw").apply({"item": (hash_ids(np.arange(10**6, 10**6 + 300), "item"), vectors)})
    assert rep.fields["item"].search == "exact"
    got = live.engine.lookup({"item": hash_ids(np.arange(10**6, 10**6 + 300), "item")}).fields["item"].vectors
    assert np.array_equal(got, codebook[exact_nearest(codebook, vectors)])
    for version in ("v1", "v4"):
        copy = tmp_path / version
        shutil.copytree(GOLDEN / version, copy)
        golden = LiveEngine(copy)
        assert golden.engine is not None
        loaded = SnapshotIndexes(golden.engine.snapshot)
        assert loaded.loaded == {}
        compressed = [f for f in golden.engine.snapshot if f.kind == "compressed"]
        for f in compressed:
            assert loaded.get(f.name, f.codebook, "hnsw").method == "exact"


def test_every_answer_names_the_search_and_the_setting_is_obeyed(small_store: tuple[Path, dict]) -> None:
    root, data = small_store
    live = LiveEngine(root)
    vectors = np.random.default_rng(2).normal(size=(50, 9)).astype(np.float32)
    keys = hash_ids(np.arange(10**7, 10**7 + 50), "user")
    for search, want in (("exact", "exact"), ("hnsw", "hnsw"), ("auto", "exact")):  # k=16 < AUTO_MIN_K
        rep = Updater(root, live.engine, search=search).apply({"user": (keys, vectors)})  # type: ignore[arg-type]
        assert rep.fields["user"].search == want
        assert rep.as_dict()["fields"]["user"]["search"] == want
    # With 16 rows every search finds the exact nearest.
    got = live.engine.lookup({"user": keys}).fields["user"].vectors
    assert np.array_equal(got, data["codebook"][exact_nearest(data["codebook"], vectors)])


def test_auto_takes_hnsw_only_at_large_k_and_when_the_probe_met_its_target() -> None:
    good = {"ef": 64, "probe_recall": PROBE_RECALL}
    short = {"ef": 512, "probe_recall": PROBE_RECALL - 0.01}
    assert resolve("auto", AUTO_MIN_K, good) == "hnsw"
    assert resolve("auto", AUTO_MIN_K - 1, good) == "exact"
    assert resolve("auto", AUTO_MIN_K, short) == "exact"
    assert resolve("auto", AUTO_MIN_K, {"ef": AUTO_MAX_EF * 2, "probe_recall": 1.0}) == "exact"  # slower than exact
    assert resolve("auto", AUTO_MIN_K, None) == "exact"
    assert resolve("hnsw", 16, short) == "hnsw"
    assert resolve("hnsw", AUTO_MIN_K, None) == "exact"
    assert resolve("exact", AUTO_MIN_K, good) == "exact"
    with pytest.raises(ValueError, match="expected search"):
        resolve("fast", 10, good)  # type: ignore[arg-type]


def test_the_probe_holds_four_kinds_and_is_made_from_the_codebook_alone() -> None:
    cb = clustered_vectors(256, 8, np.random.default_rng(0))
    a, b = probe_vectors(cb, 100), probe_vectors(cb, 100)
    assert sorted(a) == ["elsewhere", "far", "near", "uniform"]
    assert all(np.array_equal(a[kind], b[kind]) and a[kind].shape == (100, 8) for kind in a)
    norm = np.linalg.norm(cb, axis=1).mean()
    assert np.linalg.norm(a["far"], axis=1).mean() > 5 * norm


def test_fold_stores_an_index_and_ef_setting_overrides_it(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "s"
    write_small_store(root, rng)
    folded = fold(root)
    snap = open_current(root)
    assert snap.version == folded.version and snap.fields["user"].hnsw is not None
    live = LiveEngine(root)
    up = Updater(root, live.engine, search="hnsw", ef=40)
    up.apply({"user": (hash_ids(np.arange(5), "user"), rng.normal(size=(5, 9)).astype(np.float32))})
    assert up.indexes.get("user", snap.fields["user"].codebook, "hnsw", 40).ef == 40
    fold(root, hnsw=None)
    assert open_current(root).fields["user"].hnsw is None


def test_settings_of_the_search() -> None:
    s = Settings.from_mapping({"SAEC_ASSIGN_SEARCH": "hnsw", "SAEC_HNSW_EF": "96"})
    assert (s.assign_search, s.hnsw_ef) == ("hnsw", 96)
    assert Settings().assign_search == "auto" and Settings().hnsw_ef == 0
    with pytest.raises(SettingsError, match="SAEC_ASSIGN_SEARCH"):
        Settings.from_mapping({"SAEC_ASSIGN_SEARCH": "fastest"})
    with pytest.raises(SettingsError, match="SAEC_HNSW_EF"):
        Settings.from_mapping({"SAEC_HNSW_EF": "-1"})


def test_compress_and_fold_flags_of_the_index() -> None:
    import argparse

    from saec.compress_cmd import add_hnsw_flags, hnsw_params
    from saec.loaders.errors import SpecError

    p = argparse.ArgumentParser()
    add_hnsw_flags(p)
    assert hnsw_params(p.parse_args([])) == HnswParams(m=None, ef_construction=200)
    assert hnsw_params(p.parse_args(["--hnsw-m", "AUTO"])) == HnswParams(m=None, ef_construction=200)
    assert hnsw_params(p.parse_args(["--hnsw-m", "32", "--hnsw-ef-construction", "400"])) == HnswParams(32, 400)
    assert hnsw_params(p.parse_args(["--hnsw-m", "0"])) is None
    with pytest.raises(SpecError, match="HNSW M >= 2"):
        hnsw_params(p.parse_args(["--hnsw-m", "1"]))


def test_auto_m_tries_a_wider_graph_only_where_m_needs_a_large_ef(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default M rule builds M_RETRY's graph too only where M's rule chose an ef above
    RETRY_ABOVE_EF, and keeps it only where its rule chose a smaller ef."""
    codebook = clustered_vectors(2048, 16, np.random.default_rng(3), centers=20)
    plain = assign_index.build_hnsw(codebook, HnswParams(m=None))
    assert plain.meta["m"] == assign_index.M
    assert plain.meta["m_tried"] == ([assign_index.M] if plain.meta["ef"] <= assign_index.RETRY_ABOVE_EF
                                     else [assign_index.M, assign_index.M_RETRY])
    # Every ef counts as large: the wider graph is built, and kept only for a smaller ef.
    monkeypatch.setattr(assign_index, "RETRY_ABOVE_EF", 0)
    narrow = assign_index.build_hnsw(codebook, HnswParams(m=assign_index.M))
    wider = assign_index.build_hnsw(codebook, HnswParams(m=assign_index.M_RETRY))
    both = assign_index.build_hnsw(codebook, HnswParams(m=None))
    assert narrow.meta["m_tried"] == [assign_index.M] and wider.meta["m_tried"] == [assign_index.M_RETRY]
    assert both.meta["m_tried"] == [assign_index.M, assign_index.M_RETRY]
    keep = wider if wider.meta["ef"] < narrow.meta["ef"] else narrow
    assert (both.meta["m"], both.meta["ef"]) == (keep.meta["m"], keep.meta["ef"])
    assert np.array_equal(both.data[:64], keep.data[:64])  # the header: same graph kind kept


def test_the_same_codebook_gives_the_same_graph() -> None:
    # Not the same file bytes: chroma-hnswlib's file holds a few words of memory addresses
    # after the graph. The graph (level 0: links, vectors, labels) and so every answer are.
    cb = clustered_vectors(2000, 16, np.random.default_rng(9))
    a, b = assign_index.build_hnsw(cb), assign_index.build_hnsw(cb)
    level0 = 96 + 2000 * (4 + 2 * 16 * 4 + 16 * 4 + 8)  # header, then k rows of links, vector and label
    assert a.data.size == b.data.size and np.array_equal(a.data[:level0], b.data[:level0])
    assert a.meta["ef"] == b.meta["ef"] and a.meta["exact_beyond"] == b.meta["exact_beyond"]


def test_a_codebook_of_huge_values_gets_no_index_and_assigns_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    codebook = (rng.normal(size=(64, 4)) * 1e30).astype(np.float32)
    with SnapshotWriter(tmp_path / "s", source="tests") as w:
        w.add_compressed_field("big", hash_ids(np.arange(500), "big"), codebook, rng.integers(0, 64, 500))
        w.publish()
    f = open_current(tmp_path / "s").fields["big"]
    assert f.hnsw is None and "hnsw" not in f.arrays
    live = LiveEngine(tmp_path / "s")
    vectors = rng.normal(size=(5, 4)).astype(np.float32)  # updates themselves stay within +-1e15
    rep = Updater(tmp_path / "s", live.engine, search="hnsw").apply({"big": (hash_ids(np.arange(10**6, 10**6 + 5), "big"), vectors)})
    assert rep.fields["big"].search == "exact"


def test_blas_is_held_to_one_thread_whichever_thread_assigns() -> None:
    """Batches are assigned on whatever thread the server's pool gives them. threadpoolctl
    lets only one thread set OpenBLAS's thread count and silently ignores the others, so a
    limit taken on a second thread once did nothing: OpenBLAS's own threads ran beside
    the search's. Each batch, on a fresh thread, must find BLAS on one thread."""
    from threadpoolctl import threadpool_info, threadpool_limits

    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    if not blas:
        pytest.skip("numpy without a BLAS threadpoolctl knows")
    with threadpool_limits(2, "blas"):  # two threads outside batches, on any machine
        seen: list[int] = []

        def batch() -> None:
            with assign_index._one_blas_thread():
                seen.append(min(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"))

        for _ in range(3):
            t = threading.Thread(target=batch)
            t.start()
            t.join()
        assert seen == [1, 1, 1]
        assert min(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas") == 2  # restored
