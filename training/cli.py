"""``saec evaluate``: the retraining and evaluation report as a subcommand.

``saec/cli.py`` registers it with ``add_parser(subparsers)``; the subcommand runs
:func:`run`. This module itself stays light (no torch import: loading torch and
scikit-learn takes seconds, which every ``saec`` invocation would pay), so ``saec evaluate
--help`` works without the ``training`` extra; running it without torch is refused in one
line that names the ``pip install`` to add.
"""

from __future__ import annotations

import argparse
import importlib.util

from saec.errors import SaecError
from saec.training.options import add_arguments


class MissingExtraError(SaecError, ModuleNotFoundError):
    """The training extra (PyTorch) is not installed."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``evaluate`` subcommand to a ``saec`` parser's subparsers."""
    parser = subparsers.add_parser(
        "evaluate",
        help="reproduce the paper's AUC / log-loss tables (needs the training extra)",
        description="Tune a baseline CTR model, compress it with Saec and its competitors at checkpoints of a "
        "time-ordered click log, retrain, and write a Markdown report with PNG plots. "
        "Needs the training extra: pip install 'saec[training]'.",
    )
    add_arguments(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the evaluation and write the report; returns 0. Errors derive from ``SaecError``."""
    import sys

    if importlib.util.find_spec("torch") is None:
        raise MissingExtraError("needs PyTorch, from the training extra: pip install 'saec[training]'")

    from saec.training.evaluate import run_evaluation

    run_evaluation(args, " ".join(["saec", *sys.argv[1:]]))
    return 0
