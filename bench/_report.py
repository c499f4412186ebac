"""Printing a benchmark's tables and keeping them in ``bench/results/<name>.md``.

Every results file starts with what a reader needs to compare two runs: the date,
the machine (``nproc``, CPU model, memory, load average), the versions that matter,
the commit measured (and any uncommitted changes) and the exact command.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table; cells are ``str()``-ed, so format numbers before passing them."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def command_line() -> str:
    """This process's command as a person would type it (``python -m pkg.mod ...`` for -m runs)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    head = ["python", "-m", spec.name] if spec is not None else ["python", sys.argv[0]]
    return shlex.join(head + sys.argv[1:])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float | None:
    """Total RAM in GiB from /proc/meminfo, None where it does not exist."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def code_version() -> str:
    """The commit measured, and the files changed on top of it (they are measured too)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.rstrip("\n")

    try:
        head = git("rev-parse", "--short", "HEAD")
        changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"git {head}" + (f", uncommitted changes in {', '.join(changed)}" if changed else "")


def load_average() -> str:
    """1, 5 and 15 minute load averages: other work on the machine skews every timing."""
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def machine(modules: Sequence[str] = ("numpy",)) -> list[str]:
    """One line each: date, CPUs, memory, load, versions of Python and the given modules, commit."""
    versions = [f"Python {platform.python_version()}"]
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError:
            versions.append(f"{name} (not installed)")
            continue
        version = getattr(module, "__version__", None)
        if version is None:
            # A module installed by a distribution of another name (hnswlib by chroma-hnswlib).
            dists = importlib.metadata.packages_distributions().get(name, [])
            version = " / ".join(f"{d} {importlib.metadata.version(d)}" for d in dists) or "(version unknown)"
        versions.append(f"{name} {version}")
    mem = memory_gib()
    return [
        f"date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"nproc: {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()}",
        f"CPU: {cpu_model()}",
        f"memory: {mem:.1f} GiB" if mem is not None else "memory: unknown",
        f"load average (1/5/15 min) at start: {load_average()}",
        "versions: " + ", ".join(versions),
        f"code: {code_version()}",
    ]


class Report:
    """Sections printed as they are added, then written together.

    Args:
        name: the results file is ``bench/results/<name>.md``.
        title: its first heading.
        modules: modules whose versions the header lists.
    """

    def __init__(self, name: str, title: str, modules: Sequence[str] = ("numpy",)) -> None:
        self.name = name
        self.command = command_line()
        self._parts = [f"# {title}", "", *(f"- {line}" for line in machine(modules)), f"- command: `{self.command}`"]
        print("\n".join(self._parts[2:]), flush=True)

    def section(self, heading: str, body: str) -> None:
        """Add (and print) a section: a table from :func:`markdown_table`, or text."""
        text = f"\n## {heading}\n\n{body.rstrip()}\n"
        print(text, flush=True)
        self._parts.append(text)

    def write(self, directory: Path = RESULTS_DIR) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.name}.md"
        end = f"\n- load average (1/5/15 min) at end: {load_average()}\n"
        path.write_text("\n".join(self._parts).rstrip() + "\n" + end)
        print(f"wrote {path}", flush=True)
        return path
