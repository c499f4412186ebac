"""Progress lines for long evaluations: elapsed time, stage, step count and an estimate."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m:02d}:{s:02d}"


class Progress:
    """Prints one line per step to ``out`` (stderr by default), so a run can be watched.

    Usage: ``p.stage("ml-100k: tuning", total=18)`` then ``p("config 3 ...")`` per step.
    """

    def __init__(self, out: TextIO | None = None, quiet: bool = False) -> None:
        self.out = out or sys.stderr
        self.quiet = quiet
        self.started = time.perf_counter()
        self._stage = ""
        self._total = 0
        self._done = 0
        self._stage_started = self.started

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def stage(self, name: str, total: int = 0) -> None:
        """Start a stage of ``total`` steps (0: unknown)."""
        self._stage, self._total, self._done = name, total, 0
        self._stage_started = time.perf_counter()
        self._print(f"{name}" + (f" ({total} steps)" if total else ""))

    def __call__(self, message: str) -> None:
        """Report one finished step of the current stage."""
        self._done += 1
        count = f"{self._done}/{self._total}" if self._total else f"{self._done}"
        eta = ""
        if self._total and self._done < self._total:
            per = (time.perf_counter() - self._stage_started) / self._done
            eta = f", ~{_clock(per * (self._total - self._done))} left"
        self._print(f"{self._stage} [{count}{eta}] {message}")

    def note(self, message: str) -> None:
        """A line outside the step count."""
        self._print(message)

    def _print(self, text: str) -> None:
        if not self.quiet:
            print(f"[{_clock(self.elapsed())}] {text}", file=self.out, flush=True)
