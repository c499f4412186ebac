"""Generated embedding tables shaped like a recommender's: heavy-tailed feature
frequencies, vectors clustered around a few hundred directions, lengths 9 and 17.

Used by ``saec demo``, the benchmarks and the tests; never a stand-in for real data
in a quality claim.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class GeneratedField:
    """A generated field.

    Attributes:
        ids: int64 (n,), distinct raw ids.
        vectors: float32 (n, dim).
        counts: int64 (n,) >= 1, Zipf-like.
    """

    name: str
    ids: npt.NDArray[np.int64]
    vectors: npt.NDArray[np.float32]
    counts: npt.NDArray[np.int64]


def zipf_counts(n: int, rng: np.random.Generator, exponent: float = 1.05, top: float = 1e6) -> npt.NDArray[np.int64]:
    """Frequencies ``top / rank**exponent`` (at least 1), shuffled over the rows.

    Returns:
        int64 (n,).
    """
    counts = np.maximum(1, (top / np.arange(1, n + 1, dtype=np.float64) ** exponent)).astype(np.int64)
    rng.shuffle(counts)
    return counts


def clustered_vectors(
    n: int, dim: int, rng: np.random.Generator, centers: int = 200, spread: float = 0.15
) -> npt.NDArray[np.float32]:
    """Rows drawn around ``centers`` random directions, with heavy-tailed cluster sizes.

    Returns:
        float32 (n, dim).
    """
    mus = rng.normal(scale=1.0, size=(centers, dim)).astype(np.float32)
    weights = 1.0 / np.arange(1, centers + 1) ** 0.8
    which = rng.choice(centers, size=n, p=weights / weights.sum())
    out = rng.standard_normal(size=(n, dim), dtype=np.float32)
    out *= np.float32(spread)
    out += mus[which]
    return out


def generate_field(
    name: str, n: int, dim: int, rng: np.random.Generator, *, id_offset: int = 0, centers: int = 200
) -> GeneratedField:
    return GeneratedField(
        name=name,
        ids=np.arange(id_offset, id_offset + n, dtype=np.int64),
        vectors=clustered_vectors(n, dim, rng, centers=centers),
        counts=zipf_counts(n, rng),
    )


# name, features, dim: three fields large enough to compress at k=100, two kept dense.
DEMO_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("user_id", 200_000, 9),
    ("item_id", 100_000, 17),
    ("query_token", 50_000, 9),
    ("country", 200, 9),
    ("device", 40, 17),
)
