"""``saec evaluate``: the retraining and evaluation report as a subcommand.

``saec/cli.py`` registers it with ``add_parser(subparsers)``; the subcommand runs
:func:`run`. This module itself stays light (no torch import: loading torch and
scikit-learn takes seconds, which every ``saec`` invocation would pay), but it refuses to
import when torch is missing, so the subcommand only appears with the ``training`` extra.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

if importlib.util.find_spec("torch") is None:
    raise ImportError("saec evaluate needs the training extra: pip install 'saec[training]'")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``evaluate`` subcommand to a ``saec`` parser's subparsers."""
    parser = subparsers.add_parser(
        "evaluate",
        help="reproduce the paper's AUC / log-loss tables (needs the training extra)",
        description="Tune a baseline CTR model, compress it with Saec and its competitors at checkpoints of a "
        "time-ordered click log, retrain, and write a Markdown report with PNG plots.",
    )
    add_arguments(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the evaluation and write the report; returns 0. Errors derive from ``SaecError``."""
    import sys

    from saec.training.evaluate import run_evaluation

    run_evaluation(args, " ".join(["saec", *sys.argv[1:]]))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``saec evaluate`` / ``python -m saec.training.evaluate``."""
    parser.add_argument("--data", action="append", metavar="NAME|PATH",
                        help="'ml-100k', 'stream', or a CSV/Parquet click log; repeat for several (default: ml-100k and stream)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/evaluate"), help="report directory (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a small run (one seed, two checkpoints, small stream) to try the command")
    parser.add_argument("--seeds", type=int, help="seeds of the reported runs (default: 3 for ml-100k, 1 otherwise)")
    parser.add_argument("--k", type=int, help="centroids per compressed field (default: 32 for ml-100k, 100 otherwise)")
    parser.add_argument("--min-factor", type=int, help="compress a field once it holds min_factor * k features")
    parser.add_argument("--top-n", type=int, help="fast clustering runs k-means on the top_n most frequent features")
    parser.add_argument("--stream-rows", type=int, help="events in the generated stream (default: 2,400,000)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default: %(default)s; batches are small, and on a busy machine a second "
                             "thread spinning in OpenMP made training several times slower)")
    parser.add_argument("--publish", type=Path, metavar="DIR", help="store directory for the published Saec models (default: a temporary one)")
    group = parser.add_argument_group("your own click log (with --data PATH)")
    group.add_argument("--label", help="label column (0/1, boolean, or numeric with --label-threshold)")
    group.add_argument("--label-threshold", type=float, help="label is value >= threshold, e.g. 4 for star ratings")
    group.add_argument("--categorical", help="comma-separated feature columns")
    group.add_argument("--time", help="column giving the time order (default: file order)")
    group.add_argument("--multi-valued", action="append", metavar="COL=SEP", help="a text column holding several ids split by SEP")
    group.add_argument("--segments", type=int, help="equal-count segments (default: 20)")
    group.add_argument("--batch", type=int, help="rows per training step (default: 1024)")
