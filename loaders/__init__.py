"""Read the embedding tables a training system writes, one bounded chunk at a time.

    from saec.loaders import open_table

    with open_table("emb.npz", spec="fields.toml") as table:
        for info in table.fields():                       # FieldInfo(name, dim, rows, has_counts)
            for chunk in table.iter_chunks(info.name, chunk_rows=1_000_000):
                ...                                       # FieldChunk(field, ids, vectors, counts)

Formats: ``.npz``, a directory of ``.npy`` files, Parquet (needs pyarrow), PyTorch and
TorchRec state dicts (need PyTorch). See ``docs/loaders.md``.
"""

from saec.loaders.checks import check_counts, check_finite, check_unique
from saec.loaders.chunk import DEFAULT_CHUNK_ROWS, FieldChunk, FieldInfo
from saec.loaders.errors import (
    DuplicateIdError,
    InputNotFoundError,
    InvalidCountError,
    LengthMismatchError,
    LoaderError,
    MissingArrayError,
    MissingDependencyError,
    MissingFieldError,
    MissingValueError,
    NonFiniteVectorError,
    RaggedVectorError,
    ShapeError,
    SpecError,
    UnknownFormatError,
    UnreadableInputError,
    UnsupportedDtypeError,
)
from saec.loaders.formats import detect_format, open_table
from saec.loaders.source import TableSource
from saec.loaders.spec import FORMATS, FieldSpec, TableSpec, load_spec, parse_field_flag, spec_from_flags

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "FORMATS",
    "DuplicateIdError",
    "FieldChunk",
    "FieldInfo",
    "FieldSpec",
    "InputNotFoundError",
    "InvalidCountError",
    "LengthMismatchError",
    "LoaderError",
    "MissingArrayError",
    "MissingDependencyError",
    "MissingFieldError",
    "MissingValueError",
    "NonFiniteVectorError",
    "RaggedVectorError",
    "ShapeError",
    "SpecError",
    "TableSource",
    "TableSpec",
    "UnknownFormatError",
    "UnreadableInputError",
    "UnsupportedDtypeError",
    "check_counts",
    "check_finite",
    "check_unique",
    "detect_format",
    "load_spec",
    "open_table",
    "parse_field_flag",
    "spec_from_flags",
]
