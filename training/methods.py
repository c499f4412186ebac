"""The names of the evaluated methods, as the runner records them and the report reads them.

One place for both sides, so the report takes results without importing the runner.
"""

from __future__ import annotations

from saec.training.protocol import HASH_SCRATCH, LOGREG

BASELINE = "baseline"
CONTROL = "baseline + retraining pass"
SAEC = "Saec (k-means++, fast)"
NO_HEAD = "Saec, no frequency head"
NOT_RETRAINED = "Saec, not retrained"
OCCURRENCE = "Saec, per-occurrence mean"
SUMMED = "Saec, summed gradients"
HASH_K = "hash (k rows, re-hashed)"
HASH_BYTES = "hash (equal bytes, re-hashed)"
THRESHOLD = "frequency threshold (equal bytes)"
THRESHOLD_PAPER = "frequency threshold (equal bytes, keys excluded)"
INT8 = "int8 row-wise"
WEIGHTED = "Saec, count-weighted k-means"
PRODUCT = "Saec, product quantisation"
HASH_PRODUCT = "hash (product quantisation's bytes, re-hashed)"
THRESHOLD_PRODUCT = "frequency threshold (product quantisation's bytes)"
RESIDUAL = "Saec, residual quantisation"
HASH_RESIDUAL = "hash (residual quantisation's bytes, re-hashed)"
THRESHOLD_RESIDUAL = "frequency threshold (residual quantisation's bytes)"
RECOMMENDED = "saec evaluate's recommendation"
HASH_RECOMMENDED = "hash (the recommendation's bytes, re-hashed)"
THRESHOLD_RECOMMENDED = "frequency threshold (the recommendation's bytes)"
FULL = {"random": "Saec (random, full)", "kmeans++": "Saec (k-means++, full)", "topk": "Saec (top-k, full)"}

__all__ = [
    "BASELINE", "CONTROL", "FULL", "HASH_BYTES", "HASH_K", "HASH_SCRATCH", "INT8", "LOGREG", "NOT_RETRAINED",
    "ABLATIONS", "COMPARED", "HASH_PRODUCT", "HASH_RESIDUAL", "NO_HEAD", "PRODUCT", "RESIDUAL", "THRESHOLD_PRODUCT",
    "THRESHOLD_RESIDUAL", "WEIGHTED", "RECOMMENDED", "HASH_RECOMMENDED", "THRESHOLD_RECOMMENDED", "curve_names", "OCCURRENCE", "SAEC", "SUMMED", "THRESHOLD", "THRESHOLD_PAPER", "field_name", "head_name", "product_name", "sweep_name",
]


def curve_names(budget: float) -> tuple[str, str, str]:
    """The combination the rule chooses for a loss budget, and its hash and threshold rivals at its bytes."""
    return (f"recommendation for a loss of {budget:g}", f"hash at the bytes of the recommendation for {budget:g}",
            f"frequency threshold at the bytes of the recommendation for {budget:g}")


def sweep_name(k: int) -> str:
    """The k sweep's variant at ``k`` (Table 3)."""
    return f"Saec k={k}"


def product_name(slices: int, rows: int, weighted: bool, private_rows: int = 0) -> str:
    """An extra product quantiser's variant: ``slices`` slices of ``rows`` rows (plus a head)."""
    head = f" + {private_rows} private" if private_rows else ""
    return f"Saec, product quantisation {slices} x {rows}{head}{', count-weighted' if weighted else ''}"


def head_name(rows: int) -> str:
    """The frequency-head sweep's variant with ``rows`` private rows."""
    return f"Saec, frequency head of {rows}"


def field_name(f: str) -> str:
    """The ablation compressing field ``f`` alone."""
    return f"Saec on {f} only"


# The rows of the report's comparison at equal memory, and of its design-choice table.
COMPARED = (BASELINE, LOGREG, CONTROL, SAEC, NO_HEAD, HASH_K, HASH_BYTES, HASH_SCRATCH, THRESHOLD, THRESHOLD_PAPER, INT8,
            PRODUCT, HASH_PRODUCT, THRESHOLD_PRODUCT, RESIDUAL, HASH_RESIDUAL, THRESHOLD_RESIDUAL)
ABLATIONS = (SAEC, NO_HEAD, NOT_RETRAINED, OCCURRENCE, SUMMED, WEIGHTED)
