"""Compiled loops of k-means: k-means++ seeding, the bounded E-step, the M-step's sums.

- :func:`greedy_kmeans_plusplus`: all k seeding steps in one call;
- :func:`bounded_assign` and :func:`half_gaps`: Hamerly's E-step, which compares a row
  with every centroid only when a bound cannot prove its centroid stays;
- :func:`cluster_sums`: per-cluster sums and sizes in one pass, exactly as
  ``np.bincount`` per dimension.

k-means++ takes k steps, each a pass over every row for 2 + ln k candidates. In numpy each
step was a dozen whole-array passes (an sgemm of 2 + ln k rows, a minimum, a sum, the
draw's group sums) and thread hand-offs, which for the 1e4-1e5 rows a field clusters cost
more than the arithmetic: greedy k-means++ took 37% of compressing the paper's day-1
table. Here one compiled call runs all k steps, reading each block of rows once a step
while it sits in L1 (bench/kmeans.py times it beside scikit-learn's).

Results do not depend on the machine's vector width: every sum is taken in an order
the code fixes (eight lanes added pairwise within a block of rows, in row order across
blocks), never re-associated by the compiler (no fastmath).
"""

from __future__ import annotations

import numba
import numpy as np

# Rows a block: (dim, rows) float32 of rows and one float32 buffer stay in L1 at dim 17.
_BLOCK = 256
# Rows per group of the two-level weighted draw.
GROUP_ROWS = 1024


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _distances(xt, start, stop, centre, out):  # pragma: no cover - compiled
    """``out[:stop - start]`` = squared distances of rows start..stop-1 to ``centre``."""
    # One-dimensional slices: indexing xt[j, start + i] inside the loop measured 4x
    # slower (LLVM then keeps the loop on 512-bit lanes with gathers of its own making).
    m = stop - start
    row = xt[0, start:stop]
    c0 = centre[0]
    for i in range(m):
        diff = row[i] - c0
        out[i] = diff * diff
    for j in range(1, xt.shape[0]):
        row = xt[j, start:stop]
        cj = centre[j]
        for i in range(m):
            diff = row[i] - cj
            out[i] += diff * diff


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _pairwise_sum(buf, m):  # pragma: no cover - compiled
    """Sum of ``buf[:m]`` in float64, pairwise in float32 (destroys ``buf``)."""
    while m > 1:
        half = m >> 1
        odd = m & 1
        for i in range(half):
            buf[i] += buf[i + half + odd]
        m = half + odd
    return np.float64(buf[0]) if m == 1 else 0.0


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _potential(near, dist, m):  # pragma: no cover - compiled
    """Sum of ``min(near, dist)`` over the first m rows, in float64.

    Eight float32 running sums, one for each row modulo 8, added pairwise at the end: the
    compiler keeps them in one vector register, and the order does not depend on it
    (a single running sum measured 1.3x slower, a pairwise pass over a buffer too).
    """
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.float32(0.0)
    whole = m - m % 8
    for i in range(0, whole, 8):
        a0 += min(near[i], dist[i])
        a1 += min(near[i + 1], dist[i + 1])
        a2 += min(near[i + 2], dist[i + 2])
        a3 += min(near[i + 3], dist[i + 3])
        a4 += min(near[i + 4], dist[i + 4])
        a5 += min(near[i + 5], dist[i + 5])
        a6 += min(near[i + 6], dist[i + 6])
        a7 += min(near[i + 7], dist[i + 7])
    total = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
    for i in range(whole, m):
        total += min(near[i], dist[i])
    return np.float64(total)


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _potential_weighted(near, dist, w, m):  # pragma: no cover - compiled
    """Sum of ``min(near, dist) * w`` over the first m rows, as :func:`_potential`."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.float32(0.0)
    whole = m - m % 8
    for i in range(0, whole, 8):
        a0 += min(near[i], dist[i]) * w[i]
        a1 += min(near[i + 1], dist[i + 1]) * w[i + 1]
        a2 += min(near[i + 2], dist[i + 2]) * w[i + 2]
        a3 += min(near[i + 3], dist[i + 3]) * w[i + 3]
        a4 += min(near[i + 4], dist[i + 4]) * w[i + 4]
        a5 += min(near[i + 5], dist[i + 5]) * w[i + 5]
        a6 += min(near[i + 6], dist[i + 6]) * w[i + 6]
        a7 += min(near[i + 7], dist[i + 7]) * w[i + 7]
    total = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
    for i in range(whole, m):
        total += min(near[i], dist[i]) * w[i]
    return np.float64(total)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _update_closest(xt, centre, closest, row_weights, weighted, weights, group_sums, dist):  # pragma: no cover
    """closest = min(closest, d(row, centre)); weights and their group sums follow."""
    n = xt.shape[1]
    for g in range(group_sums.shape[0]):
        total = 0.0
        g_stop = min((g + 1) * GROUP_ROWS, n)
        for start in range(g * GROUP_ROWS, g_stop, _BLOCK):
            stop = min(start + _BLOCK, g_stop)
            m = stop - start
            _distances(xt, start, stop, centre, dist)
            near = closest[start:stop]
            drawn = weights[start:stop]
            for i in range(m):
                near[i] = min(near[i], dist[i])
            if weighted:
                w = row_weights[start:stop]
                for i in range(m):
                    drawn[i] = near[i] * w[i]
            else:
                drawn[:] = near
            dist[:m] = drawn
            total += _pairwise_sum(dist, m)
        group_sums[g] = total


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _draw(weights, group_sums, u, n):  # pragma: no cover - compiled
    """The row that uniform ``u`` in [0, 1) falls on, inverse CDF over groups then rows.

    Never a row of zero weight while any weight is positive; row ``int(u * n)`` when all
    weights are zero (every row sits on a chosen centre: any row will do).
    """
    total = 0.0
    for g in range(group_sums.shape[0]):
        total += group_sums[g]
    if not total > 0.0:
        return min(int(u * n), n - 1)
    target = u * total
    acc = 0.0
    last = group_sums.shape[0] - 1
    for g in range(group_sums.shape[0]):
        if group_sums[g] > 0.0:
            last = g
            if acc + group_sums[g] > target:
                break
            acc += group_sums[g]
    g = last
    rest = target - acc
    within = 0.0
    row = -1
    for i in range(g * GROUP_ROWS, min((g + 1) * GROUP_ROWS, n)):
        w = weights[i]
        if w > 0.0:
            row = i
            within += w
            if within > rest:
                break
    # Rounding between the group's sum and its running sum can leave the target past the
    # last row: the last row of positive weight then takes it.
    return row


@numba.njit(cache=True, nogil=True, boundscheck=False)
def greedy_kmeans_plusplus(xt, k, first, uniforms, row_weights, weighted):  # pragma: no cover
    """Greedy k-means++ rows (scikit-learn's variant), all k steps in one call.

    Args:
        xt: float32 (dim, n), the rows transposed, centred near the origin.
        k: centres to choose, 1 <= k <= n.
        first: the first centre's row.
        uniforms: float64 (k - 1, trials) in [0, 1): step s draws its trials candidates
            from row ``s``, in proportion to weight times squared distance to the nearest
            centre so far.
        row_weights: float32 (n,) >= 0 (read only when ``weighted``).
        weighted: whether draws and potentials are weighted by ``row_weights``.

    Returns:
        intp (k,): the rows chosen, in order. Each step keeps the candidate that leaves
        the lowest potential (sum of weight times squared distance to the nearest
        centre), the first of equals.
    """
    dim, n = xt.shape
    trials = uniforms.shape[1]
    groups = (n + GROUP_ROWS - 1) // GROUP_ROWS
    closest = np.full(n, np.inf, dtype=np.float32)
    weights = np.empty(n, dtype=np.float32)
    group_sums = np.empty(groups, dtype=np.float64)
    dist = np.empty(_BLOCK, dtype=np.float32)
    centres = np.empty((trials, dim), dtype=np.float32)
    candidates = np.empty(trials, dtype=np.intp)
    totals = np.empty(trials, dtype=np.float64)
    chosen = np.empty(k, dtype=np.intp)
    chosen[0] = first
    _update_closest(xt, xt[:, first].copy(), closest, row_weights, weighted, weights, group_sums, dist)
    for step in range(1, k):
        for t in range(trials):
            candidates[t] = _draw(weights, group_sums, uniforms[step - 1, t], n)
            for j in range(dim):
                centres[t, j] = xt[j, candidates[t]]
            totals[t] = 0.0
        for start in range(0, n, _BLOCK):
            stop = min(start + _BLOCK, n)
            m = stop - start
            near = closest[start:stop]
            for t in range(trials):
                _distances(xt, start, stop, centres[t], dist)
                if weighted:
                    totals[t] += _potential_weighted(near, dist, row_weights[start:stop], m)
                else:
                    totals[t] += _potential(near, dist, m)
        best = 0
        for t in range(1, trials):
            if totals[t] < totals[best]:
                best = t
        chosen[step] = candidates[best]
        if step + 1 < k:
            _update_closest(xt, centres[best].copy(), closest, row_weights, weighted, weights, group_sums, dist)
    return chosen


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _lanes_min(d, k):  # pragma: no cover - compiled
    """min(d[:k]) through eight running minima (vectorised; a single one measured 2x slower)."""
    inf = np.float32(np.inf)
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = inf
    whole = k - k % 8
    for c in range(0, whole, 8):
        m0 = min(m0, d[c])
        m1 = min(m1, d[c + 1])
        m2 = min(m2, d[c + 2])
        m3 = min(m3, d[c + 3])
        m4 = min(m4, d[c + 4])
        m5 = min(m5, d[c + 5])
        m6 = min(m6, d[c + 6])
        m7 = min(m7, d[c + 7])
    m = min(min(min(m0, m1), min(m2, m3)), min(min(m4, m5), min(m6, m7)))
    for c in range(whole, k):
        m = min(m, d[c])
    return m


@numba.njit(cache=True, nogil=True, boundscheck=False)
def bounded_assign(rows, centres_t, centres, labels, lower, sqdist, shift_max, half_gap, full, start, stop):  # pragma: no cover
    """One k-means E-step over rows start..stop-1, skipping rows whose centroid cannot change.

    Hamerly's bounds (Hamerly 2010): a row keeps its centroid ``a`` when its distance to
    it is at most the larger of ``lower`` (a lower bound on its distance to every other
    centroid) and ``half_gap[a]`` (half the distance from ``a`` to its nearest other
    centroid). Only the other rows are compared with all k centroids. The distance to the
    row's own centroid is computed exactly for every row, so ``sqdist`` is always exact.

    Args:
        rows: float32 (n, dim), centred.
        centres_t: float32 (dim, k), the centroids transposed.
        centres: float32 (k, dim).
        labels: intp (n,), each row's centroid; updated.
        lower: float64 (n,), Euclidean lower bound on each row's distance to every
            centroid but its own, as of the last step; updated.
        sqdist: float32 (n,), written: squared distance to the (new) own centroid.
        shift_max: how far the centroids moved since the last step, the largest move.
        half_gap: float64 (k,).
        full: compare every row with every centroid (first step, or after labels
            changed outside this function).

    Returns:
        Rows whose centroid changed. Ties go to the lowest centroid index.
    """
    dim, k = centres_t.shape
    # Two passes: the bound test of every row (a tight loop), then the full comparison of
    # the rows that failed it. One loop holding both measured 3x slower on the first.
    todo = np.empty(stop - start, dtype=np.intp)
    count = 0
    if full:
        for i in range(start, stop):
            todo[i - start] = i
        count = stop - start
    else:
        for i in range(start, stop):
            x = rows[i]
            a = labels[i]
            ca = centres[a]
            own = np.float32(0.0)
            for j in range(dim):
                diff = x[j] - ca[j]
                own += diff * diff
            sqdist[i] = own
            bound = lower[i] - shift_max
            lower[i] = bound
            limit = max(bound, half_gap[a])
            todo[count] = i
            count += 0 if limit > 0.0 and np.float64(own) <= limit * limit else 1
    dist = np.empty(k, dtype=np.float32)
    changed = 0
    for t in range(count):
        i = todo[t]
        x = rows[i]
        x0 = x[0]
        c0 = centres_t[0]
        for c in range(k):
            diff = x0 - c0[c]
            dist[c] = diff * diff
        for j in range(1, dim):
            xj = x[j]
            cj = centres_t[j]
            for c in range(k):
                diff = xj - cj[c]
                dist[c] += diff * diff
        first = _lanes_min(dist, k)
        best = 0
        while dist[best] != first:
            best += 1
        dist[best] = np.inf
        if best != labels[i]:
            changed += 1
            labels[i] = best
        sqdist[i] = first
        lower[i] = np.sqrt(np.float64(_lanes_min(dist, k)))
    return changed


@numba.njit(cache=True, nogil=True, boundscheck=False)
def cluster_sums(rows, labels, k, weights, weighted):  # pragma: no cover - compiled
    """Per-cluster sums of the rows, and per-cluster sizes or weights, in one pass.

    Sums are float64 and taken in row order, exactly as ``np.bincount(labels,
    weights=column)`` takes them for each column (with weighted rows, of ``column * w``),
    so the centroids come out bit for bit the same; one pass over the rows replaces
    dim + 1 passes and the float64 copy of the table they needed.

    Args:
        rows: float32 (n, dim).
        labels: intp (n,), in 0..k-1.
        k: clusters.
        weights: float64 (n,) (read only when ``weighted``).
        weighted: sum ``row * weight`` and the weights instead of rows and counts.

    Returns:
        sums: float64 (k, dim).
        mass: float64 (k,): rows a cluster (or their weights).
    """
    n, dim = rows.shape
    sums = np.zeros((k, dim), dtype=np.float64)
    mass = np.zeros(k, dtype=np.float64)
    for i in range(n):
        c = labels[i]
        x = rows[i]
        if weighted:
            w = weights[i]
            for j in range(dim):
                sums[c, j] += np.float64(x[j]) * w
            mass[c] += w
        else:
            for j in range(dim):
                sums[c, j] += np.float64(x[j])
            mass[c] += 1.0
    return sums, mass


@numba.njit(cache=True, nogil=True, boundscheck=False)
def half_gaps(centres):  # pragma: no cover - compiled
    """Half the distance from each centroid to its nearest other one.

    Args:
        centres: float32 (k, dim), k >= 2.

    Returns:
        float64 (k,). Differences, not the expansion ||a||^2 - 2 a.b + ||b||^2: two
        centroids a hair apart must not read as far apart by cancellation. Each pair
        once, in float64 (numpy's (k, k, dim) array of differences cost 0.3 ms a step).
    """
    k, dim = centres.shape
    nearest = np.full(k, np.inf)
    for a in range(k):
        for b in range(a + 1, k):
            d = 0.0
            for j in range(dim):
                diff = np.float64(centres[a, j]) - np.float64(centres[b, j])
                d += diff * diff
            if d < nearest[a]:
                nearest[a] = d
            if d < nearest[b]:
                nearest[b] = d
    return 0.5 * np.sqrt(nearest)
