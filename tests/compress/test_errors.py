"""Bad input raises the package's own errors, naming the field and what was expected."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from saec.compress import (
    CompressError,
    InputDtypeError,
    InputShapeError,
    InvalidCountsError,
    InvalidParameterError,
    NonFiniteError,
    compress_field,
    kmeans,
    nearest_centroid,
)
from saec.errors import SaecError

N, DIM = 600, 9


def _x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)


def _with(row: int, value: float) -> np.ndarray:
    x = _x()
    x[row, 3] = value
    return x


def _counts() -> np.ndarray:
    return np.arange(N, dtype=np.int64)


BAD: dict[str, tuple[Callable[[], dict[str, Any]], type[CompressError], tuple[str, ...]]] = {
    "nan": (lambda: {"vectors": _with(417, np.nan)}, NonFiniteError, ("row 417",)),
    "inf": (lambda: {"vectors": _with(5, np.inf)}, NonFiniteError, ("row 5",)),
    "-inf": (lambda: {"vectors": _with(0, -np.inf)}, NonFiniteError, ("row 0",)),
    "float64": (lambda: {"vectors": _x().astype(np.float64)}, InputDtypeError, ("float32", "float64")),
    "int vectors": (lambda: {"vectors": np.ones((N, DIM), np.int32)}, InputDtypeError, ("int32",)),
    "list": (lambda: {"vectors": _x().tolist()}, InputDtypeError, ("list",)),
    "1-d": (lambda: {"vectors": _x().ravel()}, InputShapeError, ("(5400,)",)),
    "3-d": (lambda: {"vectors": _x().reshape(N, 3, 3)}, InputShapeError, ("(600, 3, 3)",)),
    "dim 0": (lambda: {"vectors": np.empty((N, 0), np.float32)}, InputShapeError, ("(600, 0)",)),
    "short counts": (lambda: {"counts": _counts()[:-1]}, InputShapeError, ("(600,)", "(599,)")),
    "2-d counts": (lambda: {"counts": _counts().reshape(N, 1)}, InputShapeError, ("(600, 1)",)),
    "float counts": (lambda: {"counts": _counts().astype(np.float64)}, InputDtypeError, ("float64",)),
    "negative count": (lambda: {"counts": _counts() - 3}, InvalidCountsError, ("-3", "row 0")),
    "k 0": (lambda: {"k": 0}, InvalidParameterError, ("k >= 1", "0")),
    "k bool": (lambda: {"k": True}, InvalidParameterError, ("True",)),
    "k float": (lambda: {"k": 5.0}, InvalidParameterError, ("5.0",)),
    "k > rows": (lambda: {"k": 601, "min_factor": 0}, InvalidParameterError, ("601", "600")),
    "k > 65536": (lambda: {"k": 70_000, "min_factor": 0}, InvalidParameterError, ("65536", "70000")),
    "unknown init": (lambda: {"init": "kmeans||"}, InvalidParameterError, ("kmeans||", "topk")),
    "topk, no counts": (lambda: {"init": "topk", "counts": None}, InvalidParameterError, ("counts",)),
    "top_n < k": (lambda: {"top_n": 3}, InvalidParameterError, ("top_n", "3")),
    "max_iter 0": (lambda: {"max_iter": 0}, InvalidParameterError, ("max_iter",)),
    "tol nan": (lambda: {"tol": float("nan")}, InvalidParameterError, ("tol",)),
    "tol < 0": (lambda: {"tol": -1.0}, InvalidParameterError, ("tol",)),
    "seed < 0": (lambda: {"seed": -1}, InvalidParameterError, ("seed",)),
    "min_factor < 0": (lambda: {"min_factor": -1}, InvalidParameterError, ("min_factor",)),
}


@pytest.mark.parametrize("case", list(BAD))
def test_compress_field_rejects(case: str) -> None:
    make, error, fragments = BAD[case]
    kwargs: dict[str, Any] = {"vectors": _x(), "counts": _counts(), "k": 5, "min_factor": 100}
    kwargs.update(make())
    vectors, counts = kwargs.pop("vectors"), kwargs.pop("counts")
    with pytest.raises(error) as caught:
        compress_field(vectors, counts, field="user_city", **kwargs)
    message = str(caught.value)
    assert "user_city" in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    "case", [c for c in BAD if c not in ("top_n < k", "k > 65536", "min_factor < 0")]
)
def test_kmeans_rejects(case: str) -> None:
    make, error, fragments = BAD[case]
    kwargs: dict[str, Any] = {"vectors": _x(), "counts": _counts(), "k": 5}
    kwargs.update(make())
    kwargs.pop("min_factor", None)
    vectors = kwargs.pop("vectors")
    with pytest.raises(error) as caught:
        kmeans(vectors, field="item_tag", **kwargs)
    assert "item_tag" in str(caught.value)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_kmeans_rejects_initial_centroids_of_the_wrong_shape() -> None:
    with pytest.raises(InputShapeError, match=r"\(5, 9\).*\(4, 9\)"):
        kmeans(_x(), 5, init=_x()[:4], field="f")
    with pytest.raises(NonFiniteError, match="row 2"):
        kmeans(_x(), 5, init=_with(2, np.nan)[:5], field="f")


def test_nearest_centroid_rejects() -> None:
    centroids = _x()[:10]
    with pytest.raises(NonFiniteError, match="'q'.*row 9"):
        nearest_centroid(_with(9, np.nan), centroids, field="q")
    with pytest.raises(NonFiniteError, match="centroids.*row 1"):
        nearest_centroid(_x(), _with(1, np.inf)[:10], field="q")
    with pytest.raises(InputShapeError, match=r"\(k >= 1, 9\).*\(10, 8\)"):
        nearest_centroid(_x(), centroids[:, :8].copy(), field="q")
    with pytest.raises(InputShapeError):
        nearest_centroid(_x(), np.empty((0, DIM), np.float32), field="q")
    with pytest.raises(InputDtypeError, match="float64"):
        nearest_centroid(_x(), centroids.astype(np.float64), field="q")
    with pytest.raises(InvalidParameterError, match="threads"):
        nearest_centroid(_x(), centroids, threads=0, field="q")


def test_errors_are_saec_errors_and_builtins() -> None:
    for cls in (InputDtypeError, InputShapeError, NonFiniteError, InvalidCountsError,
                InvalidParameterError):
        assert issubclass(cls, CompressError)
        assert issubclass(cls, SaecError) and issubclass(cls, ValueError)
    assert issubclass(InputDtypeError, TypeError)


def test_unnamed_input_is_still_described() -> None:
    with pytest.raises(NonFiniteError, match="^input: .*row 3"):
        kmeans(_with(3, np.nan), 5)


def test_compress_field_takes_init_by_name_only() -> None:
    with pytest.raises(InvalidParameterError, match="'f'.*init as a string.*ndarray"):
        compress_field(_x(), None, k=5, init=_x()[:5], field="f")  # type: ignore[arg-type]
