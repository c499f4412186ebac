"""CPU accounting from /proc: cores used over a window by groups of processes and by the rest."""

from __future__ import annotations

import os
import time

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_ticks(pid: int) -> int:
    """utime + stime of one process, clock ticks (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (uvicorn's workers), from /proc."""
    parents: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return [pid]
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def _busy_ticks() -> int:
    """Ticks all CPUs spent not idle, from /proc/stat."""
    with open("/proc/stat", "rb") as fh:
        parts = [int(x) for x in fh.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    # guest time is already counted in user.
    return sum(parts[:8]) - idle


class CpuSampler:
    """Cores used over a window by named groups of processes, and by everything else.

    ``groups`` maps a name to the pids whose CPU time it sums (children included when
    listed, see :func:`descendants`). ``other`` is the machine's busy time minus every
    group and this process: load from outside the benchmark.
    """

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = {k: list(v) for k, v in groups.items()}
        self.groups.setdefault("bench", []).append(os.getpid())

    def sample(self) -> tuple[float, int, dict[str, int]]:
        """(monotonic time, busy ticks of the machine, ticks of each group)."""
        return time.monotonic(), _busy_ticks(), {k: sum(_proc_ticks(p) for p in v) for k, v in self.groups.items()}

    def window(self, w0: float, w1: float) -> dict[str, float]:
        """Sleep until ``w0``, sample, sleep until ``w1``, sample: cores per group."""
        time.sleep(max(0.0, w0 - time.monotonic()))
        t0, busy0, g0 = self.sample()
        time.sleep(max(0.0, w1 - time.monotonic()))
        t1, busy1, g1 = self.sample()
        span = max(t1 - t0, 1e-9) * TICK
        out = {k: (g1[k] - g0[k]) / span for k in g0}
        out["other"] = max(0.0, (busy1 - busy0) / span - sum(out.values()))
        out["busy"] = (busy1 - busy0) / span
        return out
