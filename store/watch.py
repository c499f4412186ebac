"""Notice a new CURRENT within milliseconds, through file-system events.

Each worker of a server polls CURRENT on its own clock, so polling alone lets the
workers serve different versions for up to one interval (clients on new connections
then see versions go back and forth). ``watchfiles`` (inotify on Linux; it polls by
itself where the file system has no events, or with ``WATCHFILES_FORCE_POLLING``)
wakes every worker as soon as CURRENT is replaced.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from saec.store.layout import CURRENT

log = logging.getLogger("saec.live")

# Milliseconds without a further event before a change is reported: publishing
# replaces CURRENT by one rename, so there is nothing to wait for.
STEP_MS = 5


def _is_current(change: object, path: str) -> bool:
    return os.path.basename(path) == CURRENT


def watch_current(root: Path, on_change: Callable[[], None], stop: threading.Event) -> None:
    """Call ``on_change`` whenever ``root/CURRENT`` is replaced, until ``stop`` is set.

    Never raises: a failing watch (the store folder missing, too many inotify watches)
    is logged and retried after 1 s, then 2, 4, ... up to a minute, while the caller's
    polling goes on.
    """
    import watchfiles

    delay = 1.0
    while not stop.is_set():
        if not root.is_dir():
            stop.wait(1.0)
            continue
        try:
            for _ in watchfiles.watch(
                root,
                watch_filter=_is_current,
                step=STEP_MS,
                debounce=100,
                stop_event=stop,
                recursive=False,
                rust_timeout=1000,
                raise_interrupt=False,
            ):
                try:
                    on_change()
                except Exception:
                    log.exception("reload after a change of %s failed", root / CURRENT)
        except Exception:
            log.exception("watching %s failed; polling only, retrying in %.0f s", root / CURRENT, delay)
            stop.wait(delay)
            delay = min(delay * 2, 60.0)
