"""Behaviour every table reader must share.

Each format's test module subclasses :class:`TableConformance` and says how to write a
table in its format; the tests here then open it with :func:`loaders.open_table`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from saec.loaders import (
    DuplicateIdError,
    FieldInfo,
    InvalidCountError,
    LoaderError,
    MissingFieldError,
    NonFiniteVectorError,
    TableSpec,
    load_spec,
    open_table,
)
from saec.loaders import source as source_module
from saec.loaders.spec import FieldSpec, SpecLike
from tests.loaders.tables import FieldData, make_table


class TableConformance:
    """Subclasses set ``format`` and implement :meth:`write`."""

    format: ClassVar[str]
    dims: ClassVar[dict[str, int]] = {"user": 9, "item": 17}
    rows: ClassVar[dict[str, int]] = {"user": 10_000, "item": 700}

    def write(self, tmp_path: Path, table: dict[str, FieldData]) -> tuple[Path, SpecLike]:
        """Write ``table`` in the format; return the path to open and the spec it needs
        (None when the format's defaults find everything)."""
        raise NotImplementedError

    # -- helpers ------------------------------------------------------------------

    def table(self, **kwargs: Any) -> dict[str, FieldData]:
        return make_table(self.dims, self.rows, **kwargs)

    def opened(self, tmp_path: Path, table: dict[str, FieldData]) -> Any:
        path, spec = self.write(tmp_path, table)
        return open_table(path, spec)

    # -- fields -------------------------------------------------------------------

    def test_opens_as_its_format(self, tmp_path: Path) -> None:
        with self.opened(tmp_path, self.table()) as source:
            assert source.format == self.format

    def test_lists_every_field_with_dim_rows_and_counts(self, tmp_path: Path) -> None:
        with self.opened(tmp_path, self.table()) as source:
            assert sorted(source.fields(), key=lambda f: f.name) == sorted(
                (FieldInfo(n, self.dims[n], self.rows[n], True) for n in self.dims),
                key=lambda f: f.name,
            )

    def test_spec_selects_fields(self, tmp_path: Path) -> None:
        path, spec = self.write(tmp_path, self.table())
        chosen = _only(spec, "item")
        with open_table(path, chosen) as source:
            assert [f.name for f in source.fields()] == ["item"]
            with pytest.raises(MissingFieldError, match=r"'user'.*the spec names \['item'\]"):
                source.field_info("user")

    # -- values -------------------------------------------------------------------

    def test_read_field_returns_the_written_values(self, tmp_path: Path) -> None:
        table = self.table()
        with self.opened(tmp_path, table) as source:
            for name, data in table.items():
                chunk = source.read_field(name)
                assert chunk.field == name
                np.testing.assert_array_equal(chunk.ids, data.ids)
                np.testing.assert_array_equal(chunk.vectors, data.vectors)
                np.testing.assert_array_equal(chunk.counts, data.counts)
                assert chunk.ids.dtype == np.int64
                assert chunk.vectors.dtype == np.float32 and chunk.vectors.flags.c_contiguous
                assert chunk.counts is not None and chunk.counts.dtype == np.int64

    def test_a_field_without_counts_has_none(self, tmp_path: Path) -> None:
        table = self.table(counts=False)
        with self.opened(tmp_path, table) as source:
            assert not source.field_info("user").has_counts
            chunk = source.read_field("user")
            assert chunk.counts is None
            np.testing.assert_array_equal(chunk.vectors, table["user"].vectors)
            assert all(c.counts is None for c in source.iter_chunks("user", 4_000))

    def test_string_ids_come_back_as_strings(self, tmp_path: Path) -> None:
        table = self.table(string_ids=True)
        with self.opened(tmp_path, table) as source:
            chunk = source.read_field("item")
            assert chunk.ids.dtype.kind in "UO"
            assert chunk.ids.tolist() == table["item"].ids.tolist()

    def test_chunks_are_bounded_and_join_to_the_whole_field(self, tmp_path: Path) -> None:
        with self.opened(tmp_path, self.table()) as source:
            whole = source.read_field("user")
            chunks = list(source.iter_chunks("user", chunk_rows=3_000))
            assert [len(c) for c in chunks] == [3_000, 3_000, 3_000, 1_000]
            for chunk in chunks:
                assert chunk.vectors.flags.c_contiguous and chunk.vectors.dtype == np.float32
            np.testing.assert_array_equal(np.concatenate([c.ids for c in chunks]), whole.ids)
            np.testing.assert_array_equal(
                np.concatenate([c.vectors for c in chunks]), whole.vectors
            )
            np.testing.assert_array_equal(np.concatenate([c.counts for c in chunks]), whole.counts)

    def test_chunks_joined_from_smaller_reads(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        table = self.table()
        # Readers read 700 rows of "user" at a time; each chunk joins several reads.
        monkeypatch.setattr(source_module, "PIECE_BYTES", 4 * self.dims["user"] * 700)
        with self.opened(tmp_path, table) as source:
            chunks = list(source.iter_chunks("user", chunk_rows=3_000))
            assert [len(c) for c in chunks] == [3_000, 3_000, 3_000, 1_000]
            np.testing.assert_array_equal(
                np.concatenate([c.vectors for c in chunks]), table["user"].vectors
            )
            np.testing.assert_array_equal(
                np.concatenate([c.ids for c in chunks]), table["user"].ids
            )
            np.testing.assert_array_equal(
                np.concatenate([c.counts for c in chunks]), table["user"].counts
            )
            np.testing.assert_array_equal(source.read_field("user").vectors, table["user"].vectors)

    def test_a_chunk_larger_than_the_field_holds_all_of_it(self, tmp_path: Path) -> None:
        with self.opened(tmp_path, self.table()) as source:
            assert [len(c) for c in source.iter_chunks("item", chunk_rows=10**7)] == [700]

    def test_read_ids_matches_read_field(self, tmp_path: Path) -> None:
        table = self.table()
        with self.opened(tmp_path, table) as source:
            np.testing.assert_array_equal(source.read_ids("user"), table["user"].ids)

    @pytest.mark.parametrize("chunk_rows", [0, -5, 2.5, True])
    def test_chunk_rows_must_be_a_positive_integer(self, tmp_path: Path, chunk_rows: Any) -> None:
        with self.opened(tmp_path, self.table()) as source:
            with pytest.raises(LoaderError, match="chunk_rows: expected an integer >= 1"):
                list(source.iter_chunks("user", chunk_rows))

    # -- errors -------------------------------------------------------------------

    @pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
    def test_non_finite_vectors_name_the_field_and_first_bad_row(
        self, tmp_path: Path, bad: float
    ) -> None:
        table = self.table()
        vectors = table["user"].vectors.copy()
        vectors[4_321, 5] = bad
        vectors[9_000, 0] = bad
        table["user"] = table["user"].with_(vectors=vectors)
        path, spec = self.write(tmp_path, table)
        with open_table(path, spec) as source:
            with pytest.raises(NonFiniteVectorError) as caught:
                list(source.iter_chunks("user", chunk_rows=1_000))
            message = str(caught.value)
            assert "field 'user'" in message and "row 4321 " in message and "column 5" in message
            assert str(path) in message
            assert caught.value.field == "user"
            source.read_field("item")  # other fields stay readable

    def test_negative_counts_name_the_row(self, tmp_path: Path) -> None:
        table = self.table()
        counts = np.array(table["user"].counts)
        counts[6_001] = -3
        table["user"] = table["user"].with_(counts=counts)
        with self.opened(tmp_path, table) as source:
            with pytest.raises(InvalidCountError, match="field 'user': count at row 6001 is -3"):
                source.read_field("user")

    def test_duplicate_ids_fail_read_field_with_both_rows(self, tmp_path: Path) -> None:
        table = self.table()
        ids = table["user"].ids.copy()
        ids[7_000] = ids[12]
        table["user"] = table["user"].with_(ids=ids)
        with self.opened(tmp_path, table) as source:
            with pytest.raises(DuplicateIdError, match=f"id {ids[12]} at rows 12 and 7000"):
                source.read_field("user")
            # Streaming does not hold the whole field, so it leaves the check to the caller.
            assert sum(len(c) for c in source.iter_chunks("user", 3_000)) == 10_000

    def test_a_field_the_spec_names_but_the_file_lacks(self, tmp_path: Path) -> None:
        path, spec = self.write(tmp_path, self.table())
        with_missing = _plus(spec, FieldSpec("clicks"))
        with open_table(path, with_missing) as source:
            with pytest.raises(MissingFieldError) as caught:
                source.fields()
            assert "'clicks'" in str(caught.value) and str(path) in str(caught.value)
            assert isinstance(caught.value, KeyError)

    def test_an_unknown_field_is_a_key_error(self, tmp_path: Path) -> None:
        with self.opened(tmp_path, self.table()) as source:
            with pytest.raises(KeyError, match="field 'nope': no such field"):
                source.iter_chunks("nope")


def _only(spec: SpecLike, name: str) -> TableSpec:
    """``spec`` narrowed to one field (a spec naming that field alone if it named none)."""
    full = load_spec(spec)
    return replace(full, fields=(full.field(name) or FieldSpec(name),))


def _plus(spec: SpecLike, extra: FieldSpec) -> TableSpec:
    """``spec`` (or a spec naming the conformance fields) with one more field."""
    full = load_spec(spec)
    fields = full.fields or tuple(FieldSpec(n) for n in TableConformance.dims)
    return replace(full, fields=(*fields, extra))
