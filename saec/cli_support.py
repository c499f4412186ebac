"""What the ``saec`` command needs besides its subcommands: argument checks that turn a
mistake into one clear line, extras named by the ``pip install`` that adds them, and
subcommands registered without importing their (heavy) modules.

``saec --help`` must stay fast: numba, torch and the compression code load only when
the command that needs them runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from saec.errors import SaecError

# Which extra brings a module that a command imports on demand.
EXTRAS = {
    "torch": "training",
    "matplotlib": "training",
    "sklearn": "compress",
    "pyarrow": "compress",
    "redis": "fleet",
}


class UsageError(SaecError, ValueError):
    """A command-line argument that cannot work (exit status 2)."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help texts with each option's default, and the description's line breaks kept."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # Nothing to show for flags, unset options, or helps that already say it.
        default = action.default
        if default is None or default is False or default in ("", []) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


def missing_extra(exc: ModuleNotFoundError) -> str:
    """The one line that tells how to install what ``exc`` found missing."""
    module = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(module)
    if extra:
        return f"this command needs {module}, from the {extra} extra: pip install 'saec[{extra}]'"
    return f"this command needs the Python module {module!r}, which is not installed: pip install {module}"


def check_store(path: str | os.PathLike[str], *, create: bool = False, wait: bool | None = None) -> None:
    """Refuse a store path that cannot work, before anything is started.

    Args:
        path: the store folder.
        create: the command creates the store if it is missing (``saec demo``).
        wait: None if the command has no ``--wait``; else whether it was given
            (``saec serve --wait`` waits for a first snapshot).
    Raises:
        UsageError: the path is a file; or it holds no published snapshot (no folder,
            or no CURRENT in it) and neither ``create`` nor ``wait`` allows that.
    """
    if "://" in str(path):
        # An fsspec URL (s3://...): the replica checks it when it mirrors the store.
        return
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"--store {path}: expected a store folder, got a file")
    if create or wait:
        return
    hint = " (or pass --wait to wait for a first snapshot)" if wait is not None else ""
    if not p.exists():
        raise UsageError(
            f"--store {path}: no such folder; expected a store made by `saec demo` or `saec compress`{hint}"
        )
    if not (p / "CURRENT").is_file():
        raise UsageError(
            f"--store {path}: expected a store with a published snapshot (a CURRENT file), found none{hint}"
        )


def add_lazy(
    sub: argparse._SubParsersAction,
    name: str,
    module: str,
    help: str,
    argv: Sequence[str],
) -> None:
    """Register subcommand ``name`` from ``module.add_parser`` only when it is the one asked for.

    Otherwise a placeholder with the same help line keeps it listed in ``saec --help``
    without importing ``module``. When ``module`` cannot be imported (an extra is
    missing), the subcommand still exists and says which ``pip install`` adds it.
    """
    if name not in argv:
        sub.add_parser(name, help=help, add_help=False)
        return
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        reason = missing_extra(exc) if isinstance(exc, ModuleNotFoundError) and exc.name else str(exc)
        # No option prefix: whatever follows is taken as is, so the reason is what is shown.
        p = sub.add_parser(name, help=help, add_help=False, prefix_chars="\0")
        p.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
        p.set_defaults(run=_refuse(reason))
        return
    mod.add_parser(sub)


def _refuse(reason: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        raise UsageError(reason)

    return run
