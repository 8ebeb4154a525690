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

import dataclasses
import signal
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from abm import checkpoint as _ckpt
from abm import limits
from abm.errors import UsageError
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

    def __init__(self, signame: str, path: Path | None, checkpoint: Path | None = None) -> None:
        super().__init__(
            f"interrupted by {signame}"
            + (f"; partial results in {path}" if path else "")
            + (f"; continue it with: abm run --resume {checkpoint}" if checkpoint else "")
        )
        self.signame = signame
        self.path = path
        self.checkpoint = checkpoint


@dataclass
class RunResult:
    """What :func:`run` returns: the final model, every observable per step, the summary and the file."""

    model: Any
    observables: dict[str, np.ndarray]
    summary: dict[str, Any]
    path: Path | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None


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
        provenance={
            **provenance(model.scenario),
            **({"origin": model.scenario.origin} if getattr(model.scenario, "origin", None) else {}),
        },
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
        self.checkpointer: Any = None  # abm.checkpoint.Checkpointer: saves the state at its steps
        self.stopped_at: int | None = None  # the step boundary at which check_stop stopped the run

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
        ck = self.checkpointer
        plan = {i: self._next(i, m.step_index - 1) for i in range(len(self.reporters))}
        while True:
            nxt = ck.next_step(m.step_index, self.n_steps) if ck is not None else None
            target = min([when for when, _ in plan.values()] + [self.n_steps] + ([nxt] if nxt is not None else []))
            while m.step_index < target:  # one step at a time, so a stop request is seen within a step
                m.advance(1)
                try:
                    self.check_stop()
                except KeyboardInterrupt:
                    self.stopped_at = m.step_index  # a step boundary: the state can be checkpointed
                    raise
            if ck is not None and ck.due(target, self.n_steps):  # before the reports of this step
                ck.try_save(self, f"at step {target}")
            final = target >= self.n_steps
            due = [i for i, (when, _) in plan.items() if when == target or final]
            if not due:
                continue
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
    checkpoint_every_min: float | None = None,
    checkpoint: str | Path | None = None,
    from_checkpoint: str | Path | None = None,
    _resume: Any = None,
) -> RunResult:
    """Run a scenario for its ``run.days`` (or ``days``) and return the observables and the summary.

    With ``out``, the trajectory goes to that HDF5 file: written as a private ``OUT.<pid>-<hex>.partial`` next to
    it and renamed to ``OUT`` only when the run completes (an earlier ``OUT`` is replaced only then, and only with
    ``overwrite``); on SIGINT/SIGTERM or a failure the partial file is closed, marked incomplete, kept under its
    partial name, and :class:`RunInterrupted` (or the error) is raised. ``seed`` falls
    back to the scenario's ``run.seed``, then to a fresh one that is recorded. ``sets`` are ``key=value`` strings,
    ``values`` typed overrides (``{"ctl.kill_prob": 0.1}``).

    Checkpoints (:mod:`abm.checkpoint`): with ``checkpoint`` (a path; default ``OUT.ckpt.h5`` when
    ``checkpoint_every_min`` is given), the whole state is written there every ``checkpoint_every_min`` simulated
    minutes, at the last step and at an interruption (:class:`RunInterrupted` names it); :func:`resume` continues
    it. ``from_checkpoint``: a new run of ``scenario`` (a new regimen and run settings; every other parameter must
    equal the checkpoint's) whose t = 0 state is the tissue of that checkpoint; its seed is ``seed`` or, without
    one, spawned from the checkpoint's seed and step; ``parameters/resolved_json`` records the origin.
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
    source = None
    if from_checkpoint is not None:
        source = _ckpt.read(from_checkpoint)
        _ckpt.check_compatible(source, scenario)
        seed = seed if seed is not None else _ckpt.derived_seed(source)
        dt = scenario.params.time.dt_min
        origin = {
            "checkpoint": str(Path(source.path).resolve()),
            "step": source.step,
            "day": source.step * dt / 1440.0,
            "seed": str(source.seed),
            "scenario": source.attrs["scenario_name"],
            "regimen": (source.resolved.get("regimen") or {}).get("description", ""),
            "origin": source.origin,
        }
        scenario = dataclasses.replace(scenario, origin=origin)
    seed = seed if seed is not None else scenario.run.seed
    limits.check_run(scenario)  # memory and initial placement, before anything is allocated
    if checkpoint is None and checkpoint_every_min is not None and out is not None:
        checkpoint = _ckpt.checkpoint_path(out)
    # signals are taken over before the model is built (compiling or loading kernels takes seconds), so a Ctrl-C
    # or SIGTERM at any moment of a run ends in RunInterrupted, never in the default action
    with Interrupt() as sig:
        try:
            model = Model(scenario, seed=seed)
            if _resume is not None:
                _resume.restore_model(model)
            elif source is not None:
                source.restore_model(model, clock=False)
        except KeyboardInterrupt:
            raise RunInterrupted(sig.name or "SIGINT", None) from None
        n_steps = model.steps_for_days(scenario.run.days)
        if _resume is not None and n_steps != _resume.n_steps:
            raise UsageError(f"{_resume.path}: the run has {n_steps} steps, the checkpoint {_resume.n_steps}")
        ckpt = None
        if checkpoint is not None:
            every = 0
            if checkpoint_every_min is not None:
                every = max(1, int(round(float(checkpoint_every_min) / model.dt_min)))
            ckpt = _ckpt.Checkpointer(checkpoint, every, final=checkpoint_every_min is not None, start=model.step_index)
            ckpt.out = Path(out) if out is not None else None
            ckpt.overwrite = overwrite if _resume is None else _resume.overwrite
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
        sim.checkpointer = ckpt

        def end(complete: bool, status: str) -> RunEnd:
            summary = rec.summary(model.params.response, model.seed, model.events) if rec.n_rows else None
            return RunEnd(complete, status, summary, tuple(model.events), model.step_index)

        def written(results: list[Any]) -> Path | None:
            """Where the trajectory ended up (its partial file when the run did not complete)."""
            return results[all_reporters.index(traj)] if traj is not None and traj.started else None

        try:
            sig.check()
            sim.begin()
            if _resume is not None:  # the first run's reports, then on from its step
                _resume.restore_recorder(rec)
                if traj is not None:
                    _resume.replay(traj, list(model.species))
            sim.run()
        except KeyboardInterrupt:
            name = sig.name or "SIGINT"
            status = f"interrupted by {name} at step {model.step_index}"
            saved = None
            if ckpt is not None and sim.stopped_at == model.step_index and model.step_index > ckpt.start:
                saved = ckpt.try_save(sim, "at the interruption")
            if model.step_index and rec.last_step != model.step_index:
                rec.report(make_frame(model, ("observables",)))
            saved = saved or (ckpt.written if ckpt is not None else None) or (_resume.path if _resume else None)
            raise RunInterrupted(name, written(sim.close(end(False, status))), saved) from None
        except BaseException as e:
            sim.close(end(False, f"failed at step {model.step_index}: {type(e).__name__}: {e}"))
            raise
        status = "completed"
        if _resume is not None:
            status = f"completed; resumed at step {_resume.step} from {_resume.path.name}"
        summary_end = end(True, status)
        path = written(sim.close(summary_end))
    kept = None
    if ckpt is not None:
        if ckpt.final:
            kept = ckpt.written
        elif ckpt.path.exists():  # an interruption's checkpoint, superseded by the complete run
            ckpt.path.unlink(missing_ok=True)
    return RunResult(
        model=model,
        observables=rec.arrays(),
        summary=summary_end.summary or {},
        path=path,
        events=list(model.events),
        checkpoint=kept,
    )


def resume(
    path: str | Path,
    *,
    progress: bool | None = False,
    reporters: list[Any] | None = None,
    checkpoint_every_min: float | None = None,
) -> RunResult:
    """Continue the run whose checkpoint is ``path`` (or the checkpoint of an output or partial file) to its end.

    The scenario, seed and output come from the checkpoint; the output equals the uninterrupted run's bit for bit
    (its ``status`` attribute says it was resumed). Checkpoints go on at the checkpoint's interval (or
    ``checkpoint_every_min``) into the same file, which is removed when the run completes unless it was asked for.
    """
    ck = _ckpt.read(path)
    out = ck.out
    if out is not None and out.exists() and not ck.overwrite:
        if ck.complete:  # the checkpoint of the last step, kept: the run completed (a signal may have come after)
            raise UsageError(f"{ck.path}: the run is complete (this checkpoint is its last step): {out}")
        raise UsageError(f"{out}: exists; the run of {ck.path} would replace it (it was started without overwrite)")
    every = checkpoint_every_min
    if every is None and ck.checkpoint_every:
        every = ck.checkpoint_every * ck.resolved["params"]["time"]["dt_min"]
    return run(
        ck.scenario(),
        out=out,
        seed=ck.seed,
        progress=progress,
        overwrite=out is not None,
        reporters=reporters,
        checkpoint_every_min=every,
        checkpoint=ck.path,
        _resume=ck,
    )
