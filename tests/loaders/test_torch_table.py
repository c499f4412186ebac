"""The PyTorch / TorchRec state-dict reader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from saec.loaders import (
    LengthMismatchError,
    MissingArrayError,
    MissingDependencyError,
    MissingFieldError,
    ShapeError,
    UnreadableInputError,
    UnsupportedDtypeError,
    open_table,
)
from saec.loaders.spec import SpecLike
from tests.loaders.conformance import TableConformance
from tests.loaders.tables import FieldData, make_field

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

TORCHREC_PREFIX = "sparse_arch.embedding_bag_collection.embedding_bags."


def embedding_state(table: dict[str, FieldData]) -> dict[str, Any]:
    """The state dict of a module holding one nn.Embedding ('user') and one
    nn.EmbeddingBag ('item') per field, weights set to the table's vectors."""
    modules = torch.nn.ModuleDict()
    for name, data in table.items():
        rows, dim = data.vectors.shape
        kind = torch.nn.EmbeddingBag if name == "item" else torch.nn.Embedding
        modules[f"{name}_emb"] = kind(rows, dim)
        with torch.no_grad():
            modules[f"{name}_emb"].weight.copy_(torch.from_numpy(data.vectors))
    return dict(modules.state_dict())


def save_with_ids_and_counts(
    path: Path, state: dict[str, Any], table: dict[str, FieldData]
) -> dict[str, Any]:
    """Add each field's ids and counts to ``state`` as tensors (string ids, which no tensor
    holds, go to a .npy beside the file), save it, and return the spec naming them."""
    fields: dict[str, Any] = {}
    for name, data in table.items():
        if data.ids.dtype.kind == "U":
            np.save(path.parent / f"{name}_ids.npy", data.ids)
            fields[name] = {"ids": f"{name}_ids.npy"}
        else:
            state[f"{name}_ids"] = torch.from_numpy(data.ids)
            fields[name] = {"ids": f"{name}_ids"}
        if data.counts is not None:
            state[f"{name}_counts"] = torch.from_numpy(data.counts)
            fields[name]["counts"] = f"{name}_counts"
    torch.save(state, path)
    return {"fields": fields}


class TestTorchConformance(TableConformance):
    format = "torch"

    def write(self, tmp_path: Path, table: dict[str, FieldData]) -> tuple[Path, SpecLike]:
        path = tmp_path / "model.pt"
        spec = save_with_ids_and_counts(path, embedding_state(table), table)
        for name, entry in spec["fields"].items():
            entry["vectors"] = f"{name}_emb.weight"
        return path, spec


class TestTorchRecConformance(TableConformance):
    """TorchRec key names; each field's weight is found by its table name."""

    format = "torch"

    def write(self, tmp_path: Path, table: dict[str, FieldData]) -> tuple[Path, SpecLike]:
        state = {
            f"{TORCHREC_PREFIX}{name}.weight": torch.from_numpy(data.vectors)
            for name, data in table.items()
        }
        path = tmp_path / "dlrm.pt"
        return path, save_with_ids_and_counts(path, state, table)


def test_embedding_rows_are_the_ids_by_default(tmp_path: Path) -> None:
    table = {"user": make_field(1_000, 8, seed=1), "item": make_field(300, 5, seed=2)}
    path = tmp_path / "model.pt"
    torch.save(embedding_state(table), path)
    with open_table(path) as source:
        assert [(f.name, f.dim, f.rows, f.has_counts) for f in source.fields()] == [
            ("user_emb", 8, 1_000, False),
            ("item_emb", 5, 300, False),
        ]
        chunk = source.read_field("item_emb")  # nn.EmbeddingBag
        np.testing.assert_array_equal(chunk.ids, np.arange(300))
        np.testing.assert_array_equal(chunk.vectors, table["item"].vectors)
        chunks = list(source.iter_chunks("user_emb", chunk_rows=300))
        assert [len(c) for c in chunks] == [300, 300, 300, 100]
        np.testing.assert_array_equal(chunks[-1].ids, np.arange(900, 1_000))
    with open_table(path, {"fields": {"user": {"source": "user_emb"}}}) as source:
        assert source.field_info("user").rows == 1_000


def test_a_lone_module_state_dict_is_named_by_the_file(tmp_path: Path) -> None:
    emb = torch.nn.Embedding(20, 3)
    torch.save(emb.state_dict(), tmp_path / "clicks.pt")
    with open_table(tmp_path / "clicks.pt") as source:
        assert [f.name for f in source.fields()] == ["clicks"]
        np.testing.assert_array_equal(
            source.read_field("clicks").vectors, emb.weight.detach().numpy()
        )


def test_torchrec_tables_without_spec_leave_dense_layers_out(tmp_path: Path) -> None:
    state = {
        "model.sparse_arch.embedding_bag_collection.embedding_bags.t_cat_0.weight": torch.randn(
            50, 4
        ),
        "model.sparse_arch.embedding_bag_collection.embedding_bags.t_cat_1.weight": torch.randn(
            70, 4
        ),
        "model.dense_arch.model._mlp.0._linear.weight": torch.randn(16, 13),
        "model.dense_arch.model._mlp.0._linear.bias": torch.randn(16),
    }
    path = tmp_path / "dlrm.pt"
    torch.save(state, path)
    with open_table(path) as source:
        assert [(f.name, f.rows) for f in source.fields()] == [("t_cat_0", 50), ("t_cat_1", 70)]
        np.testing.assert_array_equal(
            source.read_field("t_cat_1").vectors,
            state[
                "model.sparse_arch.embedding_bag_collection.embedding_bags.t_cat_1.weight"
            ].numpy(),
        )


def test_torchrec_embedding_collection_and_repeated_table_names(tmp_path: Path) -> None:
    state = {
        "ec.embeddings.video.weight": torch.randn(10, 4),
        "a.embedding_bags.shared.weight": torch.randn(11, 4),
        "b.embedding_bags.shared.weight": torch.randn(12, 4),
    }
    torch.save(state, tmp_path / "m.pt")
    with open_table(tmp_path / "m.pt") as source:
        # Two modules share a table name, so every field takes its module path.
        assert [f.name for f in source.fields()] == [
            "ec.embeddings.video",
            "a.embedding_bags.shared",
            "b.embedding_bags.shared",
        ]


def test_half_and_bfloat16_weights_become_float32(tmp_path: Path) -> None:
    weights = torch.randn(40, 6)
    state = {
        "a.weight": weights.half(),
        "b.weight": weights.bfloat16(),
        "c.weight": weights.double(),
    }
    torch.save(state, tmp_path / "m.pt")
    with open_table(tmp_path / "m.pt") as source:
        for name, expected in [
            ("a", weights.half().float()),
            ("b", weights.bfloat16().float()),
            ("c", weights),
        ]:
            chunk = source.read_field(name)
            assert chunk.vectors.dtype == np.float32
            np.testing.assert_array_equal(chunk.vectors, expected.numpy())


def test_a_training_checkpoint_is_unwrapped(tmp_path: Path) -> None:
    weights = torch.randn(30, 4)
    torch.save({"state_dict": {"user.weight": weights}, "epoch": 3}, tmp_path / "last.ckpt")
    np.testing.assert_array_equal(
        open_table(tmp_path / "last.ckpt").read_field("user").vectors, weights.numpy()
    )


def test_the_legacy_format_loads_without_memory_map(tmp_path: Path) -> None:
    weights = torch.randn(30, 4)
    path = tmp_path / "old.pt"
    torch.save({"user.weight": weights}, path, _use_new_zipfile_serialization=False)
    np.testing.assert_array_equal(open_table(path).read_field("user").vectors, weights.numpy())


def test_string_ids_from_a_npy_file_beside_the_state_dict(tmp_path: Path) -> None:
    data = make_field(50, 4, seed=1, string_ids=True)
    torch.save({"user.weight": torch.from_numpy(data.vectors)}, tmp_path / "m.pt")
    np.save(tmp_path / "user_ids.npy", data.ids)
    chunk = open_table(tmp_path / "m.pt", {"fields": {"user": {"ids": "user_ids.npy"}}}).read_field(
        "user"
    )
    assert chunk.ids.tolist() == data.ids.tolist()
    with pytest.raises(
        MissingArrayError, match="neither a key of the state dict nor a file beside it"
    ):
        open_table(tmp_path / "m.pt", {"fields": {"user": {"ids": "absent.npy"}}}).fields()


def test_spec_errors_name_what_the_file_holds(tmp_path: Path) -> None:
    state = {
        "user.weight": torch.randn(10, 4),
        "user_ids": torch.arange(9),
        "user_counts": torch.ones(10, 2),
        "float_ids": torch.rand(10),
        "user_bias": torch.randn(10),
    }
    path = tmp_path / "m.pt"
    torch.save(state, path)
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        (
            {"ids": "user_ids"},
            LengthMismatchError,
            "9 ids in 'user_ids' and 10 vectors in 'user.weight'",
        ),
        (
            {"ids": "nope"},
            MissingArrayError,
            "expected ids in tensor 'nope', found keys 'user.weight'",
        ),
        ({"counts": "user_counts"}, ShapeError, r"counts in 'user_counts': expected shape \(n,\)"),
        ({"ids": "float_ids"}, UnsupportedDtypeError, "ids in 'float_ids': expected integers"),
        (
            {"vectors": "user_bias"},
            ShapeError,
            r"vectors in 'user_bias': expected shape \(n, dim\)",
        ),
        ({"vectors": "user_ids"}, ShapeError, r"expected shape \(n, dim\)"),
    ]
    for entries, error, expected in cases:
        with pytest.raises(error, match=expected):
            open_table(path, {"fields": {"user": entries}}).fields()
    with pytest.raises(MissingFieldError, match=r"expected an embedding weight for 'item'.*'user'"):
        open_table(path, {"fields": ["item"]}).fields()


def test_objects_other_than_tensors_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.save({"user.weight": torch.randn(3, 2), "ids": np.arange(3)}, path)
    with pytest.raises(UnreadableInputError, match=r"weights_only=True.*refused"):
        open_table(path)


def test_not_a_state_dict(tmp_path: Path) -> None:
    torch.save(torch.randn(3, 2), tmp_path / "m.pt")
    with pytest.raises(UnsupportedDtypeError, match=r"expected a state dict.*found Tensor"):
        open_table(tmp_path / "m.pt")


@pytest.mark.parametrize("keep", [0.1, 0.6, 0.97])
def test_a_truncated_file_is_unreadable(tmp_path: Path, keep: float) -> None:
    path = tmp_path / "m.pt"
    torch.save({"user.weight": torch.randn(2_000, 8)}, path)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(UnreadableInputError):
        open_table(path, format="torch").fields()


def test_flipped_bytes_raise_only_loader_errors(tmp_path: Path) -> None:
    """Seeded fuzzing: damage anywhere gives a LoaderError or a readable table, never
    another exception. (torch.load checks no checksum, so flipped tensor bytes go unseen.)"""
    from saec.loaders import LoaderError

    clean = tmp_path / "clean.pt"
    state = {"user.weight": torch.randn(300, 4), "ids": torch.arange(300)}
    torch.save({**state, "item.weight": torch.randn(100, 3)}, clean)
    spec = {"fields": {"user": {"ids": "ids"}, "item": {}}}
    raw = clean.read_bytes()
    rng = np.random.default_rng(7)
    path = tmp_path / "fuzz.pt"
    for _ in range(300):
        broken = bytearray(raw)
        for position in rng.integers(0, len(raw), size=rng.integers(1, 4)):
            broken[position] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(broken))
        try:
            with open_table(path, spec) as source:
                for info in source.fields():
                    source.read_field(info.name)
        except LoaderError:
            pass


def test_without_torch_the_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.pt"
    torch.save({"user.weight": torch.randn(3, 2)}, path)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'saec\[training\]'") as caught:
        open_table(path)
    assert isinstance(caught.value, ImportError)


def test_importing_loaders_does_not_import_torch() -> None:
    code = "import sys, loaders, loaders.torch_table; print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
