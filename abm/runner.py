"""Running a scenario end to end (:func:`run`) and reading a run back (:func:`load`)."""

from __future__ import annotations

import functools
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from abm.params import Params
from abm.reporters import ProgressReporter, RecorderReporter, TrajectoryReporter, run_summary
from abm.scenario import Scenario


class RunInterrupted(Exception):
    """The run was stopped by SIGINT or SIGTERM; the output file was closed, marked incomplete."""

    def __init__(self, signame: str, path: Path | None) -> None:
        super().__init__(f"interrupted by {signame}" + (f"; partial results in {path}" if path else ""))
        self.signame = signame
        self.path = path


@dataclass
class RunResult:
    """What :func:`run` returns: the final model, every observable per step, the summary and the file."""

    model: Any
    observables: dict[str, np.ndarray]
    summary: dict[str, Any]
    path: Path | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


@functools.cache
def git_hash() -> str:
    """The git commit of the abm source tree, or '' when it is not a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


class _Signals:
    """Turn SIGTERM into KeyboardInterrupt for the duration of a run (main thread only), remembering which."""

    def __init__(self) -> None:
        self.name = "SIGINT"
        self._old = None

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():

            def handler(signum, frame):
                self.name = signal.Signals(signum).name
                raise KeyboardInterrupt

            self._old = signal.signal(signal.SIGTERM, handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def run(
    scenario: Scenario | str | Path | None = None,
    *,
    out: str | Path | None = None,
    seed: int | None = None,
    days: float | None = None,
    sets: list[str] | None = None,
    params: Params | None = None,
    snapshot_every_min: float | None = None,
    progress: bool | None = False,
    overwrite: bool = False,
    reporters: list[Any] | None = None,
) -> RunResult:
    """Run a scenario for its ``run.days`` (or ``days``) and return the observables and the summary.

    With ``out``, the trajectory goes to that HDF5 file (written as ``out.partial`` and renamed at the end; on
    SIGINT/SIGTERM the file is closed, marked incomplete, and :class:`RunInterrupted` is raised). ``seed`` falls
    back to the scenario's ``run.seed``, then to a fresh one that is recorded.
    """
    from abm.model import Model

    if not isinstance(scenario, Scenario):
        scenario = Scenario.default() if scenario is None else Scenario.load(scenario)
    extra = list(sets or [])
    if days is not None:
        extra.append(f"run.days={float(days)!r}")
    if snapshot_every_min is not None:
        extra.append(f"run.snapshot_every_min={float(snapshot_every_min)!r}")
    if extra:
        scenario = scenario.with_overrides(extra)
    if params is not None:
        scenario = scenario.with_params(params)
    seed = seed if seed is not None else scenario.run.seed
    model = Model(scenario, seed=seed)
    n_steps = model.steps_for_days(scenario.run.days)
    rec = RecorderReporter()
    all_reporters: list[Any] = [rec]
    traj = None
    if out is not None:
        snap = max(1, int(round(scenario.run.snapshot_every_min / model.dt_min)))
        traj = TrajectoryReporter(out, model, snapshot_every=snap, overwrite=overwrite, recorder=rec)
        all_reporters.append(traj)
    if progress is not False:
        all_reporters.append(ProgressReporter(n_steps, enabled=progress, label=scenario.name))
    all_reporters += list(reporters or [])

    complete, status = False, "failed"
    with _Signals() as sig:
        try:
            for r in all_reporters:
                r.report(model)
            while model.step_index < n_steps:
                # run the fast engine up to the nearest due report
                gap = min(
                    [r.steps_until_next(model) or _every(r) for r in all_reporters] + [n_steps - model.step_index]
                )
                for _ in range(max(1, gap)):
                    model.step()
                for r in all_reporters:
                    if r.steps_until_next(model) == 0 or model.step_index == n_steps:
                        r.report(model)
            complete, status = True, "completed"
        except KeyboardInterrupt:
            status = f"interrupted by {sig.name} at step {model.step_index}"
            for r in all_reporters:
                if model.step_index and r is rec:
                    r.report(model)
            path = _close_all(all_reporters, model, False, status)
            raise RunInterrupted(sig.name, path) from None
        except BaseException as e:
            status = f"failed at step {model.step_index}: {type(e).__name__}: {e}"
            _close_all(all_reporters, model, False, status)
            raise
    path = _close_all(all_reporters, model, complete, status)
    return RunResult(
        model=model, observables=rec.arrays(), summary=run_summary(model, rec), path=path, events=list(model.events)
    )


def _every(r: Any) -> int:
    """A reporter that reports now has just been served; its next report is a full interval away."""
    for attr in ("snapshot_every", "every"):
        if hasattr(r, attr):
            return int(getattr(r, attr))
    return 1


def _close_all(reporters: list[Any], model: Any, complete: bool, status: str) -> Path | None:
    path = None
    for r in reporters:
        try:
            res = r.close(model, complete, status)
        except Exception:  # closing one reporter must not stop the others from saving what they have
            if complete:
                raise
            continue
        if isinstance(r, TrajectoryReporter):
            path = res
    return path


def load(path: str | Path):
    """Read a run written by :func:`run` (see :class:`abm.io.Trajectory`); ``.params`` gives the parameter tree
    and ``.scenario`` the resolved scenario dictionary."""
    import json

    from abm.io import load as io_load

    traj = io_load(path)
    resolved = json.loads(traj.parameters_json)
    traj.resolved = resolved
    traj.params = Params.model_validate(resolved["params"])
    return traj
