"""Workers die with their supervisor.

``saec serve --workers N`` runs uvicorn's supervisor, which spawns N worker processes
sharing one listening socket. If the supervisor is killed without warning (kill -9, the
OOM killer), nothing would stop its workers: they keep the port and keep serving,
unsupervised, and a restarted server fails with "Address already in use". Each worker
therefore asks the kernel (``prctl(PR_SET_PDEATHSIG, SIGKILL)``, Linux) to kill it the
moment its parent dies, and checks its parent is still the supervisor right after, since
the supervisor may have died before the request was made.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import sys
from typing import Any

log = logging.getLogger("saec.server")

PR_SET_PDEATHSIG = 1


def die_with_supervisor() -> bool:
    """In a worker process, arrange to be killed when the supervisor dies.

    A process that was not started by a supervisor (``--workers 1`` runs in the main
    process) is left alone: its parent is a shell or an init system it must outlive.

    Returns:
        Whether the death signal was set.
    """
    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:
        log.warning("cannot tie worker %d to its supervisor (prctl failed: %s)", os.getpid(), exc)
        return False
    if os.getppid() != parent.pid:
        # The supervisor died before the death signal was set: follow it now.
        log.error("supervisor %d is gone; worker %d exits", parent.pid, os.getpid())
        os._exit(1)
    return True


def create_worker_app() -> Any:
    """The app factory ``saec serve`` hands uvicorn: ties the worker to its supervisor
    before the slow imports (FastAPI, numpy, numba: seconds on a busy machine) rather
    than after them, then builds the app from ``SAEC_*``."""
    die_with_supervisor()
    from saec.server.app import create_app_from_env

    return create_app_from_env()
