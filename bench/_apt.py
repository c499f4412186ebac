"""Binaries the benchmarks run (redis-server, wrk, redis-benchmark), installed from the
distribution's packages when missing.

:func:`ensure_binary` looks for the binary on ``PATH`` and in the usual folders; when it
is missing and we run as root with ``apt-get``, it installs the Debian package that holds
it, otherwise it stops and says how to get it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

_FOLDERS = ("/usr/bin", "/usr/local/bin", "/usr/sbin")


class BinaryUnavailableError(RuntimeError):
    """A binary is missing and could not be installed."""


def find_binary(name: str, explicit: str | None = None) -> str | None:
    """The path of ``name`` on PATH or in /usr/bin, /usr/local/bin, /usr/sbin, or None.

    Args:
        explicit: a path given by the user; it must be executable.
    """
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which(name)
    if found:
        return found
    return next((p for p in (os.path.join(d, name) for d in _FOLDERS) if os.access(p, os.X_OK)), None)


def ensure_binary(
    name: str,
    package: str,
    *,
    explicit: str | None = None,
    install: bool = True,
    log: Callable[[str], None] = print,
    error: type[Exception] = BinaryUnavailableError,
) -> str:
    """The path of ``name``, installing Debian's ``package`` with apt-get if needed and allowed.

    Raises:
        ``error``: not found, and not root or no apt-get (or installing was refused or failed).
    """
    found = find_binary(name, explicit)
    if found:
        return found
    if explicit:
        raise error(f"expected an executable {name} at {explicit!r}, found none")
    apt = shutil.which("apt-get")
    if not install or os.geteuid() != 0 or apt is None:
        why = (
            "installing was not allowed"
            if not install
            else ("not running as root" if os.geteuid() != 0 else "apt-get is not available")
        )
        raise error(
            f"expected a {name} binary on PATH or in {', '.join(_FOLDERS)}, found none ({why}); "
            f"install it (Debian/Ubuntu: `sudo apt-get install -y {package}`)"
        )
    log(f"{name} not found: installing Debian's {package} with apt-get ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", package]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise error(f"`{' '.join(cmd)}` failed with exit code {done.returncode}: {done.stderr.strip()[-500:]}")
    found = find_binary(name)
    if not found:
        raise error(f"apt-get installed {package}, yet no {name} binary was found")
    return found
