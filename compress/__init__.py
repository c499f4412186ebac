"""saec's compression algorithm: per-field k-means into a codebook plus masks.

Arrays in, arrays out: this package reads no files and speaks no HTTP.
"""

from saec.compress.assign import default_chunk_rows, label_dtype, nearest_centroid
from saec.compress.errors import (
    CompressError,
    InputDtypeError,
    InputShapeError,
    InvalidCountsError,
    InvalidParameterError,
    NonFiniteError,
)
from saec.compress.field import (
    DEFAULT_MIN_FACTOR,
    DEFAULT_TOP_N,
    MAX_K,
    CompressedField,
    DenseField,
    ProductField,
    ResidualField,
    compress_field,
    min_rows_to_compress,
)
from saec.compress.init import INIT_METHODS
from saec.compress.kmeans import KMeansResult, kmeans

__all__ = [
    "DEFAULT_MIN_FACTOR",
    "DEFAULT_TOP_N",
    "INIT_METHODS",
    "MAX_K",
    "CompressError",
    "CompressedField",
    "DenseField",
    "InputDtypeError",
    "InputShapeError",
    "InvalidCountsError",
    "InvalidParameterError",
    "KMeansResult",
    "NonFiniteError",
    "ProductField",
    "ResidualField",
    "compress_field",
    "default_chunk_rows",
    "kmeans",
    "label_dtype",
    "min_rows_to_compress",
    "nearest_centroid",
]
