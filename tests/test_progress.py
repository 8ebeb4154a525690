"""Progress of a run (abm.reporters.ProgressReporter): a bar on a terminal, plain lines in a batch job, a word about
compiling while the Numba kernels compile, nothing with ``abm run --quiet``."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

import abm.kernels.cells as K
from abm.cli import main
from abm.reporters import COMPILING, ProgressReporter, kernels_need_compiling
from tests.conftest import TINY_SETS

TINY_ARGS = [a for s in TINY_SETS for a in ("--set", s)]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def drive(
    rep: ProgressReporter,
    clock: Clock,
    n_steps: int = 1000,
    every: int = 20,
    per_report_s: float = 1.0,
    first_report_s: float = 1.0,
    complete: bool = True,
) -> None:
    """Feed ``rep`` what the loop would: begin, a frame every ``every`` steps (step 0 first), close."""
    rep.begin(SimpleNamespace(n_steps=n_steps, dt_min=10.0))
    for step in range(0, n_steps + 1, every):
        if step == every:
            clock.t += first_report_s
        elif step > 0:
            clock.t += per_report_s
        rep.report(SimpleNamespace(step=step, time_day=step * 10.0 / 1440.0, counts={"tumour": 500 + step, "ctl": 7}))
    end = n_steps
    rep.close(SimpleNamespace(last_step=end, complete=complete, status="completed" if complete else "interrupted"))


def test_plain_lines_every_ten_percent_with_day_counts_elapsed_and_eta():
    out, clock = io.StringIO(), Clock()
    rep = ProgressReporter(every=20, label="hd", stream=out, compiling=False, clock=clock)
    drive(rep, clock)
    lines = out.getvalue().splitlines()
    assert rep.plain and lines[0] == "hd: 6.94444 days (1000 steps of 10 min)"
    status = [ln for ln in lines if "%)" in ln]
    assert len(status) == 10  # 10%, 20%, ... 90%, then "done" at the end
    m = re.fullmatch(
        r"hd: day (\S+) of 6.94444 \((\d+)%\), tumour (\d+), CTL 7, elapsed (\d:\d\d:\d\d), ETA (\d:\d\d:\d\d)",
        status[0],
    )
    assert m, status[0]
    assert m.group(2) == "10" and m.group(1) == "0.7" and m.group(3) == "600"
    assert m.group(4) == "0:00:05" and m.group(5) == "0:00:45"  # 5 s for 100 steps: 45 s for the other 900
    assert lines[-1].startswith("hd: done: day 6.9 of 6.94444 (100%)")


def test_plain_lines_at_least_every_minute_on_a_slow_run():
    out, clock = io.StringIO(), Clock()
    rep = ProgressReporter(every=1, stream=out, plain=True, compiling=False, clock=clock, plain_every_s=60.0)
    drive(rep, clock, n_steps=1000, every=1, per_report_s=30.0)  # 30 s per step: 0.1% per report
    status = [ln for ln in out.getvalue().splitlines() if ln.startswith("day ")]
    assert 400 <= len(status) <= 600  # every other report (60 s), not every 10% (which would be 9 lines)


def test_plain_compiling_then_an_eta_from_the_compiled_rate():
    out, clock = io.StringIO(), Clock()
    rep = ProgressReporter(every=20, stream=out, plain=True, compiling=True, clock=clock)
    drive(rep, clock, first_report_s=50.0)  # the first 20 steps take 50 s: compiling
    lines = out.getvalue().splitlines()
    assert lines[1] == COMPILING == "compiling kernels (first run only)\u2026"
    assert lines[2] == "kernels compiled in 50 s"
    first = next(ln for ln in lines if ln.startswith("day "))
    # 100 steps in 50 + 4 s; the ETA counts the 4 s after compiling (80 steps): 900 steps left at 0.05 s a step
    assert first.endswith("elapsed 0:00:54, ETA 0:00:45"), first


def test_terminal_bar_says_compiling_then_counts_steps():
    out, clock = Terminal(), Clock()
    rep = ProgressReporter(every=20, label="hd", stream=out, compiling=True, clock=clock)
    rep.begin(SimpleNamespace(n_steps=100, dt_min=10.0))
    assert not rep.plain and "hd: compiling kernels (first run only)\u2026" in out.getvalue()
    assert "0/100" not in out.getvalue()  # no bar sitting at 0 meanwhile
    for step in range(0, 101, 20):
        rep.report(SimpleNamespace(step=step, time_day=step / 144.0, counts={"tumour": 3, "ctl": 2}))
    rep.close(SimpleNamespace(last_step=100, complete=True, status="completed"))
    text = out.getvalue()
    assert "100/100" in text and "tumour=3" in text and "step" in text


def test_disabled_shows_nothing():
    out, clock = io.StringIO(), Clock()
    drive(ProgressReporter(enabled=False, stream=out, compiling=True, clock=clock), clock)
    assert out.getvalue() == ""


def test_kernels_need_compiling(monkeypatch):
    import abm

    m = abm.Model("untreated", sets=TINY_SETS, seed=1)
    m.advance(1)
    m.observe()
    assert kernels_need_compiling() is False  # every step kernel is compiled in this process now
    cold = SimpleNamespace(signatures=[], _cache=SimpleNamespace(_cache_file=SimpleNamespace(_load_index=dict)))
    monkeypatch.setattr(K, "step_cells", cold)
    assert kernels_need_compiling() is True  # not compiled here, nothing valid on disk


def test_abm_run_in_a_batch_job_prints_plain_progress_and_quiet_silences_it(tmp_path, capsys):
    """capsys's stderr is not a terminal, as in a batch job."""
    args = ["run", "untreated", "--days", "0.5", *TINY_ARGS]
    assert main([*args, "--out", str(tmp_path / "a.h5")]) == 0
    err = capsys.readouterr().err
    assert "untreated: 0.5 days (72 steps of 10 min)" in err
    assert re.search(r"untreated: day 0\.\d of 0\.5 \(\d+%\), tumour \d+, CTL \d+, elapsed \S+, ETA \S+", err), err
    assert "untreated: done: day 0.5 of 0.5 (100%)" in err
    assert main([*args, "--out", str(tmp_path / "b.h5"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_a_cold_cache_says_compiling_once(tmp_path):
    """Two ``abm run`` processes with an empty Numba cache directory: the first compiles and says so, the second
    loads the cache and does not."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_NUM_THREADS": "1"}
    errs = []
    for k in range(2):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "abm.cli",
                "run",
                "untreated",
                "--days",
                "0.1",
                "--out",
                str(tmp_path / f"{k}.h5"),
                *TINY_ARGS,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        errs.append(out.stderr)
    assert COMPILING in errs[0] and "kernels compiled in" in errs[0]
    assert COMPILING not in errs[1]
