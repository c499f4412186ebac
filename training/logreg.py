"""The one-hot logistic-regression baseline (scikit-learn) on the same time split.

It sees every row of the segments before a checkpoint (all past data, fitted to
convergence), one indicator column per feature code, and the same "features not seen yet
read as nothing" rule as the neural models. A multi-valued field gets one indicator per
feature in the bag, each weighted ``1 / len(bag)`` so the bag counts like one feature, as
the neural model's bag mean does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from saec.training.data import ClickLog
from saec.training.trainer import Metrics, live_at, metrics


def one_hot(log: ClickLog, rows: npt.NDArray[np.int64], live: Sequence[int]) -> sp.csr_matrix:
    """float64 CSR ``(len(rows), sum(live))``: indicators of the features seen so far.

    Codes above ``live[f]`` and the "no feature" code 0 produce no column.
    """
    blocks = []
    for f, fld in enumerate(log.fields):
        c = fld.codes[rows]
        keep = (c > 0) & (c <= live[f])
        per_row = keep.sum(axis=1, keepdims=True)
        weight = np.where(keep, 1.0 / np.maximum(per_row, 1), 0.0)
        r, j = np.nonzero(keep)
        blocks.append(sp.csr_matrix((weight[r, j], (r, c[r, j] - 1)), shape=(len(rows), live[f])))
    return sp.hstack(blocks, format="csr")


def fit_predict(log: ClickLog, train_rows: npt.NDArray[np.int64], test_rows: npt.NDArray[np.int64], live: Sequence[int], C: float, tol: float = 1e-6) -> npt.NDArray[np.float64]:
    """Fit on ``train_rows`` and return float64 ``(len(test_rows),)`` probabilities.

    Args:
        C: inverse L2 strength (scikit-learn's ``C``).
        tol: L-BFGS stopping tolerance. On ml-100k segment 15, 1e-6 and 1e-4 differ by
            0.0006 AUC at 3x the time; on millions of rows the time is what matters.
    """
    model = LogisticRegression(C=C, max_iter=2000, tol=tol)
    model.fit(one_hot(log, train_rows, live), log.labels[train_rows])
    return model.predict_proba(one_hot(log, test_rows, live))[:, 1]


def evaluate_at(log: ClickLog, c: int, C: float, tol: float = 1e-6) -> Metrics:
    """Fit on every row of the segments before ``c`` and score segment ``c``."""
    train_rows = np.arange(int(log.bounds[c]), dtype=np.int64)
    sl = log.segment(c)
    test_rows = np.arange(sl.start, sl.stop, dtype=np.int64)
    return metrics(log.labels[test_rows], fit_predict(log, train_rows, test_rows, live_at(log, c), C, tol))
