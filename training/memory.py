"""Bytes an embedding field takes under each way of storing it, in two accountings.

- ``keyed``: what serving holds. Uncompressed is a key-value table, ``n * (4 * dim + 8)``
  (a float32 row plus a uint64 key per feature). A field in saec's store pays its key
  index instead of raw keys (``index`` bytes, measured by building ``store.keyindex`` over
  the field's hashed ids, about 2.4 bytes a feature), so Saec is
  ``index + n * mask_bytes + k * 4 * dim``; the same index serves a frequency threshold's
  kept features and an int8 table. A hashed table needs no keys at all.
- ``paper`` (section 3.2, its 27.7x): keys excluded on every side, so uncompressed is
  ``n * 4 * dim`` and Saec ``n * mask_bytes + k * 4 * dim``.

Fields a method leaves alone are counted as uncompressed on both sides, so a ratio shows
what the method changed and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

KEY_BYTES = 8
FLOAT_BYTES = 4


@dataclass(frozen=True)
class Bytes:
    """Bytes of one field (or a sum of fields) in both accountings."""

    paper: int
    keyed: int

    def __add__(self, other: Bytes) -> Bytes:
        return Bytes(self.paper + other.paper, self.keyed + other.keyed)


ZERO = Bytes(0, 0)


def mask_bytes(k: int) -> int:
    """Bytes per mask: uint8 up to 256 centroids, uint16 beyond."""
    return 1 if k <= 256 else 2


def uncompressed(n: int, dim: int) -> Bytes:
    """A float32 table of ``n`` features in a key-value store (8-byte keys)."""
    return Bytes(n * FLOAT_BYTES * dim, n * (FLOAT_BYTES * dim + KEY_BYTES))


def codebook(n: int, k: int, dim: int, index: int) -> Bytes:
    """Saec: ``k`` float32 centroids, one mask per feature, and the key index (``index`` bytes)."""
    body = n * mask_bytes(k) + k * FLOAT_BYTES * dim
    return Bytes(body, index + body)


def product(n: int, subvectors: int, k: int, dim: int, index: int) -> Bytes:
    """Product quantisation: ``subvectors`` masks per feature, ``subvectors`` codebooks of
    ``k`` rows of ``dim / subvectors`` floats (``k * 4 * dim`` bytes in all), and the key index."""
    body = n * subvectors * mask_bytes(k) + k * FLOAT_BYTES * dim
    return Bytes(body, index + body)


def residual(n: int, stages: int, k: int, dim: int, index: int, value_bytes: int = FLOAT_BYTES) -> Bytes:
    """Residual quantisation: ``stages`` masks per feature, ``stages`` full-length codebooks
    of ``k`` rows (``stages * k * value_bytes * dim`` bytes: 4 in float32, 2 in float16),
    and the key index."""
    body = n * stages * mask_bytes(k) + stages * k * value_bytes * dim
    return Bytes(body, index + body)


def hashed(rows: int, dim: int) -> Bytes:
    """The hashing trick: ``rows`` float32 buckets, no keys, no masks."""
    return Bytes(rows * FLOAT_BYTES * dim, rows * FLOAT_BYTES * dim)


def threshold(rows: int, dim: int, index: int) -> Bytes:
    """A frequency threshold: the ``rows`` kept features' vectors and their key index."""
    body = rows * FLOAT_BYTES * dim
    return Bytes(body, index + body)


def int8(n: int, dim: int, index: int) -> Bytes:
    """The store's 8-bit row-wise form: ``dim`` bytes plus a float32 scale and bias per feature, and the key index."""
    body = n * (dim + 2 * FLOAT_BYTES)
    return Bytes(body, index + body)


def float16(n: int, dim: int, index: int) -> Bytes:
    """float16 rows: ``2 * dim`` bytes per feature, and the key index."""
    body = n * 2 * dim
    return Bytes(body, index + body)


def hashed_rows_for(budget: int, dim: int) -> int:
    """Most hashed buckets (float32 rows, no keys) that fit ``budget`` bytes (at least 1)."""
    return max(1, budget // (FLOAT_BYTES * dim))

