"""Reporters: what watches a run, fed by :class:`abm.simulation.Simulation` (the OpenMM protocol).

Each reporter says when it next wants a report and what that report needs; it receives the run's description at
the start (:meth:`Reporter.begin`), :class:`~abm.simulation.Frame` objects holding only what it asked for, and the
end of the run (:meth:`Reporter.close`, exactly once, also after a failure or an interrupt). None touches the model.

- :class:`TrajectoryReporter` adapts a run to the HDF5 format of :mod:`abm.io` (:class:`~abm.io.TrajectoryWriter`);
- :class:`RecorderReporter` keeps every observable of every step in memory (the source of the run summary);
- :class:`ProgressReporter` draws a progress bar on stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from abm.io import TrajectoryWriter
from abm.observables import run_summary
from abm.params import ResponseParams


def every(interval: int, last: int) -> int:
    """Steps from ``last`` to the next multiple of ``interval`` after it (>= 1; step 0 is a multiple)."""
    return interval - last % interval  # Python's % is non-negative: from -1 the next report is step 0


class Reporter(Protocol):
    def describe_next_report(self, last_step: int) -> tuple[int, frozenset[str]]:
        """(steps from ``last_step`` to the next report, >= 1; what it needs: a subset of
        :data:`abm.simulation.NEEDS`). The run starts as if step -1 had been reported."""

    def begin(self, info: Any) -> None:
        """The run is about to start (:class:`abm.simulation.RunInfo`)."""

    def report(self, frame: Any) -> None:
        """A frame at a step this reporter asked for (or the last step of the run)."""

    def close(self, end: Any) -> Any:
        """The run ended (:class:`abm.simulation.RunEnd`); release resources, return a result if any."""


class RecorderReporter:
    """Every observable at every step, in memory, in preallocated (growing) arrays."""

    NEEDS = frozenset({"observables"})

    def __init__(self) -> None:
        self.names: list[str] = []
        self._rows = np.zeros((0, 0))
        self._steps = np.zeros(0, dtype=np.int64)
        self._time = np.zeros(0)
        self.n_rows = 0

    def describe_next_report(self, last_step: int) -> tuple[int, frozenset[str]]:
        return 1, self.NEEDS

    def begin(self, info: Any) -> None:
        self.names = [o.name for o in info.observables]
        cap = info.n_steps + 1
        self._rows = np.zeros((cap, len(self.names)))
        self._steps = np.zeros(cap, dtype=np.int64)
        self._time = np.zeros(cap)

    @property
    def last_step(self) -> int | None:
        return int(self._steps[self.n_rows - 1]) if self.n_rows else None

    def report(self, frame: Any) -> None:
        if self.n_rows and self._steps[self.n_rows - 1] == frame.step:
            return
        if not self.names:
            self.names = list(frame.observables)
        if self.n_rows == self._rows.shape[0]:  # more rows than declared (a run driven by hand): grow
            grow = max(16, self.n_rows)
            self._rows = np.concatenate([self._rows, np.zeros((grow, len(self.names)))])
            self._steps = np.concatenate([self._steps, np.zeros(grow, dtype=np.int64)])
            self._time = np.concatenate([self._time, np.zeros(grow)])
        obs = frame.observables
        self._rows[self.n_rows] = [obs[k] for k in self.names]
        self._steps[self.n_rows] = frame.step
        self._time[self.n_rows] = frame.time_min
        self.n_rows += 1

    def close(self, end: Any) -> None:
        return None

    def arrays(self) -> dict[str, np.ndarray]:
        """Each observable's series (copies), plus ``step`` and ``time_min``."""
        if not self.n_rows:
            return {}
        n = self.n_rows
        out = {k: self._rows[:n, j].copy() for j, k in enumerate(self.names)}
        out["step"] = self._steps[:n].copy()
        out["time_min"] = self._time[:n].copy()
        return out

    def summary(self, response: ResponseParams, seed: int, events: list[dict[str, Any]]) -> dict[str, Any]:
        return run_summary(self.arrays(), list(events), response, seed)


class TrajectoryReporter:
    """Writes the run to HDF5 (:mod:`abm.io`): observables every ``observe_every`` steps, snapshots of the cell-type
    map and the fields every ``snapshot_every`` steps, events as they happen, and the summary at the end."""

    def __init__(self, path: str | Path, snapshot_every: int, observe_every: int = 1, overwrite: bool = False) -> None:
        self._path = Path(path)
        self.snapshot_every = max(1, int(snapshot_every))
        self.observe_every = max(1, int(observe_every))
        self.overwrite = overwrite
        self.writer: TrajectoryWriter | None = None
        self._events_done = 0

    @property
    def started(self) -> bool:
        return self.writer is not None

    def describe_next_report(self, last_step: int) -> tuple[int, frozenset[str]]:
        n_obs = every(self.observe_every, last_step)
        n_snap = every(self.snapshot_every, last_step)
        n = min(n_obs, n_snap)
        needs = {"events"}
        if n == n_obs:
            needs.add("observables")
        if n == n_snap:
            needs.add("snapshot")
        return n, frozenset(needs)

    def begin(self, info: Any) -> None:
        sc = info.scenario
        prov = info.provenance
        self.writer = TrajectoryWriter(
            self._path,
            shape_xyz=info.shape_xyz,
            spacing_um=info.spacing_um,
            dt_min=info.dt_min,
            observables=info.observables,
            species=info.species,
            cell_type_codes=info.cell_type_codes,
            vessel_sites=info.vessel_sites,
            attrs={
                "abm_version": prov["abm_version"],
                "git_hash": prov["git_hash"],
                "seed": str(info.seed),
                "scenario_name": sc.name,
                "scenario_description": sc.meta.description,
                "scenario_source": sc.source,
                "days": float(sc.run.days),
            },
            parameters_json=json.dumps(info.resolved, indent=1, allow_nan=True),
            scenario_toml=sc.text,
            creator="abm",
            creator_version=prov["abm_version"],
            overwrite=self.overwrite,
        )

    def report(self, frame: Any) -> None:
        w = self.writer
        k = frame.step
        if frame.events is not None:
            for e in frame.events[self._events_done :]:
                fields = {f: e[f] for f in ("drug", "route", "dose", "unit", "amount", "note") if f in e}
                w.add_event(int(e.get("step", k)), float(e.get("time_min", frame.time_min)), e["kind"], **fields)
            self._events_done = len(frame.events)
        if k % self.observe_every == 0 and frame.observables is not None:
            w.append_observables(k, frame.time_min, frame.observables)
        if k % self.snapshot_every == 0 and frame.snapshot is not None:
            w.append_snapshot(k, frame.time_min, frame.snapshot.cell_type, frame.snapshot.fields)

    def close(self, end: Any) -> Path | None:
        if self.writer is None:
            return None
        if end.summary is not None:
            self.writer.write_summary({**end.summary, "complete": end.complete})
        return self.writer.close(complete=end.complete, status=end.status)

    @property
    def path(self) -> Path:
        return self.writer.path if self.writer is not None else self._path


class ProgressReporter:
    """A tqdm bar on stderr, updated every ``every`` steps; silent when stderr is not a terminal."""

    def __init__(self, every: int = 36, enabled: bool | None = None, label: str = "") -> None:
        self.every = every
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.label = label
        self.bar = None
        self._last = 0

    def describe_next_report(self, last_step: int) -> tuple[int, frozenset[str]]:
        return every(self.every, last_step), frozenset({"counts"})

    def begin(self, info: Any) -> None:
        self.bar = tqdm(
            total=info.n_steps,
            disable=not self.enabled,
            unit="step",
            desc=self.label or None,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def report(self, frame: Any) -> None:
        self.bar.update(frame.step - self._last)
        self._last = frame.step
        c = frame.counts or {}
        self.bar.set_postfix(day=f"{frame.time_day:.1f}", tumour=c.get("tumour", 0), ctl=c.get("ctl", 0), refresh=False)

    def close(self, end: Any) -> None:
        if self.bar is not None:
            self.bar.update(end.last_step - self._last)
            self.bar.close()
