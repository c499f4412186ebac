"""Picking the rows of largest value, deterministically.

Used for the most frequent features (fast clustering, top-k initialisation) and the
rows farthest from their centroids (re-seeding empty clusters). Ties always go to the
lower row, so the choice depends on the data alone.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def largest_rows(values: npt.NDArray[np.generic], m: int) -> npt.NDArray[np.intp]:
    """Rows of the m largest values, ties to the lower row, in ascending row order.

    O(n) by a partition rather than a sort, since fields run to tens of millions of rows.

    Args:
        values: (n,) of any integer or float dtype, no NaN.
        m: how many rows to keep, >= 0.

    Returns:
        intp (min(m, n),), sorted ascending.
    """
    n = values.shape[0]
    if m >= n:
        return np.arange(n)
    if m <= 0:
        return np.empty(0, dtype=np.intp)
    threshold = np.partition(values, n - m)[n - m]
    keep = values > threshold
    ties = np.flatnonzero(values == threshold)[: m - int(np.count_nonzero(keep))]
    keep[ties] = True
    return np.flatnonzero(keep)


def by_value_descending(
    rows: npt.NDArray[np.intp], values: npt.NDArray[np.generic]
) -> npt.NDArray[np.intp]:
    """``rows`` reordered by descending value, ties by ascending row.

    Args:
        rows: intp (m,), indices into values.
        values: (n,) of any integer or float dtype, no NaN.

    Returns:
        intp (m,).
    """
    rows = np.sort(rows)
    # A stable ascending sort of the reversed list, read backwards, is descending with
    # ties in ascending row order; negating the values instead would overflow uint64.
    backwards = np.argsort(values[rows][::-1], kind="stable")[::-1]
    return rows[rows.shape[0] - 1 - backwards]


def top_rows(values: npt.NDArray[np.generic], m: int) -> npt.NDArray[np.intp]:
    """The m rows of largest value, largest first, ties by ascending row: intp (min(m, n),)."""
    return by_value_descending(largest_rows(values, m), values)
