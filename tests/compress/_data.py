"""Synthetic embedding tables for the compression tests: clustered, heavy-tailed."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def blobs(
    n: int,
    dim: int,
    clusters: int,
    *,
    seed: int = 0,
    spread: float = 0.1,
    zipf: float = 1.1,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """Gaussian blobs with Zipf-like cluster sizes, as embedding tables tend to have.

    Returns:
        vectors: float32 (n, dim).
        truth: intp (n,), the blob each row was drawn from.
        centres: float32 (clusters, dim), the blob centres, spread over the unit cube.
    """
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-1.0, 1.0, size=(clusters, dim)).astype(np.float32)
    weights = 1.0 / np.arange(1, clusters + 1) ** zipf
    truth = rng.choice(clusters, size=n, p=weights / weights.sum())
    noise = rng.standard_normal((n, dim)) * spread
    return (centres[truth] + noise).astype(np.float32), truth, centres


def zipf_counts(n: int, *, seed: int = 0, a: float = 1.3) -> npt.NDArray[np.int64]:
    """Heavy-tailed feature frequencies, int64 (n,), in random row order."""
    rng = np.random.default_rng(seed)
    return rng.zipf(a, size=n).astype(np.int64)


def brute_sqdist(
    vectors: npt.NDArray[np.float32], centroids: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64]:
    """Exact squared distances, float64 (n, k), by broadcasting (small inputs only)."""
    diff = vectors.astype(np.float64)[:, None, :] - centroids.astype(np.float64)[None, :, :]
    return np.einsum("ijk,ijk->ij", diff, diff)
