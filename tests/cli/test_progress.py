"""saec.progress: bars only on a terminal, one line per stage in logs."""

from __future__ import annotations

import io

from saec.progress import Progress, track


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_one_line_at_each_stage_start_and_end_and_none_per_step() -> None:
    out = io.StringIO()
    with Progress(out=out) as p:
        p.stage("clustering", 100)
        for i in range(100):
            p.step(f"row {i}")
        p.stage("writing")
    lines = out.getvalue().splitlines()
    assert len(lines) == 4, lines
    assert lines[0].endswith("clustering (100 steps)")
    assert lines[1].endswith("clustering: done, 100 steps in 0.0 s")
    assert lines[2].endswith("writing")
    assert "writing: done" in lines[3]


def test_a_terminal_gets_a_bar_that_counts_the_steps() -> None:
    out = _Tty()
    with Progress(out=out) as p:
        p.stage("clustering", 10)
        for _ in range(10):
            p.step()
    text = out.getvalue()
    assert "clustering" in text and "10/10" in text
    assert "steps in" not in text  # the bar replaces the log lines


def test_quiet_prints_nothing_and_track_yields_every_item() -> None:
    out = io.StringIO()
    p = Progress(out=out, quiet=True)
    p.stage("x", 2)
    p.note("hidden")
    p.close()
    assert out.getvalue() == ""
    log = io.StringIO()
    assert list(track(iter(range(5)), "items", out=log)) == [0, 1, 2, 3, 4]
    assert "items (5 steps)" in log.getvalue() and "5 steps in" in log.getvalue()
