"""What the ``saec`` command needs besides its subcommands: argument checks that turn a
mistake into one clear line, extras named by the ``pip install`` that adds them, and
subcommands registered without importing their (heavy) modules.

``saec --help`` must stay fast: numba, torch and the compression code load only when
the command that needs them runs.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import socket
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


def positive_int(text: str) -> int:
    """A whole number >= 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def missing_extra(exc: ModuleNotFoundError) -> str:
    """The one line that tells how to install what ``exc`` found missing."""
    module = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(module)
    if extra:
        return f"this command needs {module}, from the {extra} extra: pip install 'saec[{extra}]'"
    return f"this command needs the Python module {module!r}, which is not installed: pip install {module}"


def check_store(
    path: str | os.PathLike[str], *, create: bool = False, wait: bool | None = None, origin: str = "--store"
) -> None:
    """Refuse a store path that cannot work, before anything is started.

    Args:
        path: the store folder.
        origin: how the user gave it (``--store`` or ``SAEC_STORE``), as the refusal names it.
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
        raise UsageError(f"{origin} {path}: expected a store folder, got a file")
    if create or wait:
        return
    hint = " (or pass --wait to wait for a first snapshot)" if wait is not None else ""
    if not p.exists():
        raise UsageError(
            f"{origin} {path}: no such folder; expected a store made by `saec demo` or `saec compress`{hint}"
        )
    if not (p / "CURRENT").is_file():
        raise UsageError(
            f"{origin} {path}: expected a store with a published snapshot (a CURRENT file), found none{hint}"
        )


def check_listen(
    host: str, port: int, *, host_from: str = "--host", port_from: str = "--port", zero: str = "any free port"
) -> None:
    """Refuse an address ``saec serve`` cannot listen on, before anything is started.

    Binds a socket the way uvicorn does (IPv6 when ``host`` has a colon, SO_REUSEADDR) and
    closes it: a port in use is one line naming it, where uvicorn would fail after start-up.
    Port 0 (any free port) is not checked.

    Raises:
        UsageError: the port is in use or needs privileges, or ``host`` is no local address.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except socket.gaierror as exc:
            raise UsageError(f"{host_from} {host}: expected an address of this machine, got a name that does not resolve ({exc.strerror})") from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(
                    f"{port_from} {port}: {host}:{port} is already in use by another process; "
                    f"stop it or choose another port ({port_from} N, or 0 for {zero})"
                ) from None
            if exc.errno == errno.EACCES:
                raise UsageError(f"{port_from} {port}: not allowed to listen on {host}:{port} ({exc.strerror}); ports below 1024 need privileges") from None
            raise UsageError(f"{host_from} {host}: cannot listen on {host}:{port}: {exc.strerror}") from None


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
        # No option prefix: whatever follows is taken as is, so the reason is what is shown;
        # --help still prints the command's line and that reason.
        p = sub.add_parser(name, help=help, description=f"{help}\n\n{reason}", add_help=False, prefix_chars="\0",
                           formatter_class=HelpFormatter)
        p.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
        p.set_defaults(run=_refuse(reason, p))
        return
    mod.add_parser(sub)


def _refuse(reason: str, parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        if {"-h", "--help"} & set(args.rest):
            parser.print_help()
            return 0
        raise UsageError(reason)

    return run
