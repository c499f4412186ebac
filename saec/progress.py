"""Progress display for every long-running command: tqdm bars on a terminal, one line per
stage elsewhere (CI logs, files), so a log keeps what happened without a line per step.

Every command and benchmark that runs longer than a few seconds goes through here, so the
project depends on one progress library (tqdm) and shows one style.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m:02d}:{s:02d}"


class Progress:
    """Stages of known or unknown length.

    On a terminal each stage is a tqdm bar; otherwise each stage prints one line when it
    starts and one when it ends (with its duration), and steps print nothing.

    Usage::

        p = Progress()
        p.stage("ml-100k: tuning", total=18)
        for cfg in grid:
            ...
            p.step(f"config {cfg}: AUC 0.78")
        p.close()
    """

    def __init__(self, out: TextIO | None = None, quiet: bool = False, tty: bool | None = None) -> None:
        self.out = out or sys.stderr
        self.quiet = quiet
        self.tty = (self.out.isatty() if tty is None else tty) and not quiet
        self.started = time.perf_counter()
        self._bar: tqdm[Any] | None = None
        self._stage = ""
        self._stage_started = self.started
        self._done = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def stage(self, name: str, total: int = 0) -> None:
        """Start a stage of ``total`` steps (0: unknown); ends the previous one."""
        self._end_stage()
        self._stage, self._done = name, 0
        self._stage_started = time.perf_counter()
        if self.tty:
            self._bar = tqdm(total=total or None, desc=name, file=self.out, leave=True, dynamic_ncols=True)
        else:
            self._line(name + (f" ({total} steps)" if total else ""))

    def step(self, message: str = "", n: int = 1) -> None:
        """Report ``n`` finished steps of the current stage."""
        self._done += n
        if self._bar is not None:
            if message:
                self._bar.set_postfix_str(message, refresh=False)
            self._bar.update(n)

    __call__ = step

    def note(self, message: str) -> None:
        """A line outside any bar, shown everywhere."""
        if self._bar is not None:
            self._bar.write(f"[{_clock(self.elapsed())}] {message}", file=self.out)
        else:
            self._line(message)

    def close(self, failed: bool = False) -> None:
        """End the current stage: "done" after it, or "stopped" when an error ended it."""
        self._end_stage(failed)

    def _end_stage(self, failed: bool = False) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._stage and not self.tty:
            took = time.perf_counter() - self._stage_started
            steps = f"{self._done} steps " if self._done else ""
            if failed:
                self._line(f"{self._stage}: stopped by an error after {steps}{took:.1f} s")
            else:
                self._line(f"{self._stage}: done, {steps}in {took:.1f} s")
        self._stage = ""

    def _line(self, text: str) -> None:
        if not self.quiet:
            print(f"[{_clock(self.elapsed())}] {text}", file=self.out, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        # An error leaving the block is reported by the caller; no "done" line before it.
        self.close(failed=exc_type is not None)


def track(items: Iterable[T], desc: str, total: int | None = None, out: TextIO | None = None) -> Iterator[T]:
    """Iterate with a bar on a terminal; one start and one end line elsewhere."""
    seq = list(items) if total is None and not hasattr(items, "__len__") else items
    n = total if total is not None else len(seq)  # type: ignore[arg-type]
    with Progress(out=out) as p:
        p.stage(desc, n)
        for item in seq:
            yield item
            p.step()
