"""The simulation loop: runs a model to the nearest report any reporter asks for, and hands the due reporters a
:class:`Frame` holding only what they asked for (OpenMM's reporter protocol).

A reporter (see :class:`abm.reporters.Reporter`) says, given the last step reported, how many steps until its
next report (always >= 1) and what that report needs (:data:`NEEDS`). The loop advances the engine
(:meth:`abm.Model.advance`, no observation) to the nearest such step, copies what the due reporters need into one
frame, and calls them. Step 0 is reported to whoever asks for it (the loop starts as if step -1 had been reported);
the last step is reported to every reporter. Nothing downstream touches the model: reporters see the
:class:`RunInfo` at the start, frames during the run and a :class:`RunEnd` (with the run summary) at the end.

:func:`run` is the one-call entry point (``abm.run``); :func:`abm.io.load_run` reads a run back (``abm.load``).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from abm.io.schema import ObservableSpec, SpeciesSpec
from abm.model import Model
from abm.params import Params
from abm.provenance import provenance
from abm.reporters import ProgressReporter, RecorderReporter, TrajectoryReporter
from abm.scenario import Scenario
from abm.state import CELL_TYPES

NEEDS = frozenset({"observables", "snapshot", "events", "counts", "cells"})
"""What a frame can carry: every observable, a lattice + fields snapshot, the events so far, the cell counts, the
cells (copies of the live part of every per-cell array: ``id``, ``ctype``, ``site``, ``mhc``, ...)."""


@dataclass(frozen=True)
class RunInfo:
    """What a run is, for reporters that need it before the first frame (file headers, progress totals)."""

    scenario: Scenario
    seed: int
    n_steps: int
    dt_min: float
    shape_xyz: tuple[int, int, int]
    spacing_um: float
    vessel_sites: np.ndarray
    species: list[SpeciesSpec]
    observables: list[ObservableSpec]
    cell_type_codes: dict[str, int]
    provenance: dict[str, Any]

    @property
    def resolved(self) -> dict[str, Any]:
        return self.scenario.resolved()


@dataclass(frozen=True)
class Snapshot:
    """The lattice at one step: cell type per site (uint8, flat) and each species' field (float64, flat)."""

    cell_type: np.ndarray
    fields: dict[str, np.ndarray]


@dataclass(frozen=True)
class Frame:
    """One report: the step and time, and whatever the due reporters asked for (None otherwise)."""

    step: int
    time_min: float
    observables: Mapping[str, float] | None = None
    snapshot: Snapshot | None = None
    events: tuple[dict[str, Any], ...] | None = None
    counts: Mapping[str, int] | None = None
    #: every per-cell array of :data:`abm.kernels.records.CellArrays` (live cells only, copies), by field name
    cells: Mapping[str, np.ndarray] | None = None

    @property
    def time_day(self) -> float:
        return self.time_min / 1440.0


@dataclass(frozen=True)
class RunEnd:
    """How a run ended: complete or not, a status line, the summary (None without observations), the events."""

    complete: bool
    status: str
    summary: dict[str, Any] | None
    events: tuple[dict[str, Any], ...]
    last_step: int


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


def run_info(model: Any, n_steps: int) -> RunInfo:
    lat = model.state.lattice
    p = model.params
    return RunInfo(
        scenario=model.scenario,
        seed=int(model.seed),
        n_steps=int(n_steps),
        dt_min=float(model.dt_min),
        shape_xyz=lat.shape_xyz,
        spacing_um=float(lat.spacing_um),
        vessel_sites=model.state.vessels.copy(),
        species=[SpeciesSpec(s, p.species[s].units) for s in model.species],
        observables=[ObservableSpec(o.name, o.units, description=o.description) for o in model.observable_specs],
        cell_type_codes=dict(CELL_TYPES),
        provenance=provenance(model.scenario),
    )


def make_frame(model: Any, needs: Iterable[str]) -> Frame:
    """A frame of the model's current step holding copies of what ``needs`` names."""
    needs = frozenset(needs)
    unknown = needs - NEEDS
    if unknown:
        raise ValueError(f"unknown frame needs {sorted(unknown)}; allowed: {sorted(NEEDS)}")
    obs = dict(model.observe()) if "observables" in needs else None
    snap = None
    if "snapshot" in needs:
        snap = Snapshot(
            model.state.cell_type_map(), {sp: model.state.conc[i].copy() for i, sp in enumerate(model.species)}
        )
    events = tuple(model.events) if "events" in needs else None
    counts = model.counts() if "counts" in needs else None
    cells = None
    if "cells" in needs:
        c = model.state.cells
        n = int(c.n[0])
        cells = {name: np.array(getattr(c, name)[:n]) for name in c._fields if name not in ("n", "next_id")}
    return Frame(model.step_index, model.time_min, obs, snap, events, counts, cells)


class Simulation:
    """A model and its reporters: :meth:`run` advances to ``n_steps``, reporting as asked.

    The reporters are a plain list; each is started with :class:`RunInfo`, fed frames, and closed exactly once
    with a :class:`RunEnd` (also when the run fails or is interrupted).
    """

    def __init__(self, model: Any, reporters: Iterable[Any], n_steps: int) -> None:
        self.model = model
        self.reporters = list(reporters)
        self.n_steps = int(n_steps)
        self.info = run_info(model, self.n_steps)
        self.check_stop: Any = lambda: None  # raises KeyboardInterrupt when a stop was asked for (see Interrupt)

    def _next(self, i: int, last: int) -> tuple[int, frozenset[str]]:
        """(the step of reporter ``i``'s next report after step ``last``, what it needs)."""
        r = self.reporters[i]
        n, needs = r.describe_next_report(last)
        if int(n) < 1:
            raise ValueError(f"{type(r).__name__}.describe_next_report returned {n}; it must be >= 1")
        return last + int(n), frozenset(needs)

    def run(self) -> None:
        """Advance to ``n_steps``, reporting as asked. Reporters must have been started (:meth:`begin`)."""
        m = self.model
        plan = {i: self._next(i, m.step_index - 1) for i in range(len(self.reporters))}
        while True:
            target = min([when for when, _ in plan.values()] + [self.n_steps])
            while m.step_index < target:  # one step at a time, so a stop request is seen within a step
                m.advance(1)
                self.check_stop()
            final = target >= self.n_steps
            due = [i for i, (when, _) in plan.items() if when == target or final]
            frame = make_frame(m, frozenset().union(*(plan[i][1] for i in due)))
            for i in due:
                self.reporters[i].report(frame)
            if final:
                return
            for i in due:
                plan[i] = self._next(i, target)

    def begin(self) -> None:
        for r in self.reporters:
            r.begin(self.info)

    def close(self, end: RunEnd) -> list[Any]:
        """Close every reporter; one that fails to close does not stop the others saving what they have."""
        results, first_error = [], None
        for r in self.reporters:
            try:
                results.append(r.close(end))
            except Exception as e:
                results.append(None)
                first_error = first_error or e
        if first_error is not None and end.complete:
            raise first_error
        return results


class Interrupt:
    """SIGINT and SIGTERM during a run (main thread only) ask the loop to stop at the next step boundary.

    The handler only sets a flag, which :class:`Simulation` checks after every engine chunk: raising from inside a
    signal handler can land in a weakref callback or a finaliser, where Python swallows it and the run goes on. A
    second signal while a stop is pending raises at once (a user pressing Ctrl-C twice)."""

    def __init__(self) -> None:
        self.name: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():

            def handler(signum, frame):
                if self.name is not None:
                    raise KeyboardInterrupt
                self.name = signal.Signals(signum).name

            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, handler)
        return self

    def check(self) -> None:
        if self.name is not None:
            raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def run(
    scenario: Scenario | str | Path | None = None,
    *,
    out: str | Path | None = None,
    seed: int | None = None,
    days: float | None = None,
    sets: list[str] | None = None,
    values: Mapping[str, Any] | None = None,
    params: Params | None = None,
    snapshot_every_min: float | None = None,
    progress: bool | None = False,
    overwrite: bool = False,
    reporters: list[Any] | None = None,
) -> RunResult:
    """Run a scenario for its ``run.days`` (or ``days``) and return the observables and the summary.

    With ``out``, the trajectory goes to that HDF5 file: written as a private ``OUT.<pid>-<hex>.partial`` next to
    it and renamed to ``OUT`` only when the run completes (an earlier ``OUT`` is replaced only then, and only with
    ``overwrite``); on SIGINT/SIGTERM or a failure the partial file is closed, marked incomplete, kept under its
    partial name, and :class:`RunInterrupted` (or the error) is raised. ``seed`` falls
    back to the scenario's ``run.seed``, then to a fresh one that is recorded. ``sets`` are ``key=value`` strings,
    ``values`` typed overrides (``{"ctl.kill_prob": 0.1}``).
    """
    if not isinstance(scenario, Scenario):
        scenario = Scenario.default() if scenario is None else Scenario.load(scenario)
    extra = dict(values or {})
    if days is not None:
        extra["run.days"] = float(days)
    if snapshot_every_min is not None:
        extra["run.snapshot_every_min"] = float(snapshot_every_min)
    scenario = scenario.with_overrides(list(sets or []), values=extra)
    if params is not None:
        scenario = scenario.with_params(params)
    seed = seed if seed is not None else scenario.run.seed
    # signals are taken over before the model is built (compiling or loading kernels takes seconds), so a Ctrl-C
    # or SIGTERM at any moment of a run ends in RunInterrupted, never in the default action
    with Interrupt() as sig:
        try:
            model = Model(scenario, seed=seed)
        except KeyboardInterrupt:
            raise RunInterrupted(sig.name or "SIGINT", None) from None
        n_steps = model.steps_for_days(scenario.run.days)
        rec = RecorderReporter()
        all_reporters: list[Any] = [rec]
        traj = None
        if out is not None:
            snap = max(1, int(round(scenario.run.snapshot_every_min / model.dt_min)))
            traj = TrajectoryReporter(out, snapshot_every=snap, overwrite=overwrite)
            all_reporters.append(traj)
        if progress is not False:
            all_reporters.append(ProgressReporter(enabled=progress, label=scenario.name))
        all_reporters += list(reporters or [])
        sim = Simulation(model, all_reporters, n_steps)
        sim.check_stop = sig.check

        def end(complete: bool, status: str) -> RunEnd:
            summary = rec.summary(model.params.response, model.seed, model.events) if rec.n_rows else None
            return RunEnd(complete, status, summary, tuple(model.events), model.step_index)

        def written(results: list[Any]) -> Path | None:
            """Where the trajectory ended up (its partial file when the run did not complete)."""
            return results[all_reporters.index(traj)] if traj is not None and traj.started else None

        try:
            sig.check()
            sim.begin()
            sim.run()
        except KeyboardInterrupt:
            name = sig.name or "SIGINT"
            status = f"interrupted by {name} at step {model.step_index}"
            if model.step_index and rec.last_step != model.step_index:
                rec.report(make_frame(model, ("observables",)))
            raise RunInterrupted(name, written(sim.close(end(False, status)))) from None
        except BaseException as e:
            sim.close(end(False, f"failed at step {model.step_index}: {type(e).__name__}: {e}"))
            raise
        summary_end = end(True, "completed")
        path = written(sim.close(summary_end))
    return RunResult(
        model=model,
        observables=rec.arrays(),
        summary=summary_end.summary or {},
        path=path,
        events=list(model.events),
    )
