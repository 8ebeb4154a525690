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
from abm.io.schema import CELL_COLUMNS
from abm.observables import run_summary
from abm.params import ResponseParams
from abm.therapy.pk import plasma_amount_unit

#: Units and meaning of every value of the run summary (:func:`abm.observables.run_summary`, plus ``complete``),
#: written as the ``units`` and ``description`` attributes of ``/summary/<key>``. Dimensionless values, categories
#: and flags are ``"1"``.
SUMMARY_UNITS: dict[str, tuple[str, str]] = {
    "response": ("1", "RECIST-like response at the end of the run: CR, PR, SD or PD (NA without observations)"),
    "best_response": ("1", "RECIST 1.1 best overall response: CR, PR, SD or PD (NA without observations)"),
    "time_to_regression_day": ("day", "first time the lesion shrank by the partial-response fraction (nan: never)"),
    "time_to_eradication_day": ("day", "first time no tumour cell was left (nan: never)"),
    "tumour_auc_cell_days": ("cell day", "area under the tumour-cell count over the run"),
    "tumour_auc_relative": ("1", "tumour AUC over (initial tumour cells x run length)"),
    "tumour_cells_initial": ("cells", "tumour cells at the start"),
    "tumour_cells_final": ("cells", "tumour cells at the end"),
    "tumour_cells_min": ("cells", "fewest tumour cells at any observation"),
    "longest_diameter_initial_mm": ("mm", "lesion diameter (the RECIST measure) at the start"),
    "longest_diameter_final_mm": ("mm", "lesion diameter at the end"),
    "longest_diameter_nadir_mm": ("mm", "smallest lesion diameter"),
    "max_shrinkage": ("1", "largest fractional shrinkage of the lesion diameter from baseline"),
    "days": ("day", "simulated time covered by the observations"),
    "doses_given": ("doses", "doses given"),
    "doses_held": ("doses", "scheduled doses held for toxicity"),
    "doses_cancelled": ("doses", "scheduled doses cancelled after a dose-limiting toxicity"),
    "dose_limiting_toxicity": ("1", "whether a dose-limiting toxicity stopped the course"),
    "dlt_day": ("day", "time of the dose-limiting toxicity (nan: none)"),
    "toxicity_max": ("1", "highest systemic toxicity score"),
    "seed": ("1", "the run's random seed"),
    "total_kills_ctl": ("cells", "tumour cells killed by CTL"),
    "total_kills_nk": ("cells", "tumour cells killed by NK cells"),
    "total_kills_lak": ("cells", "tumour cells killed by LAK cells"),
    "total_kills_drug": ("cells", "tumour cells killed by the cytotoxic drug"),
    "total_divisions_tumour": ("cells", "tumour cell divisions (daughters born)"),
    "total_recruited_ctl": ("cells", "CTL that entered from vessels"),
    "total_recruited_nk": ("cells", "NK cells that entered from vessels"),
    "total_lak_conversions": ("cells", "NK cells that became LAK cells"),
    "total_transferred_lak": ("cells", "LAK cells placed by adoptive transfer"),
    "total_deaths_ctl_aicd": ("cells", "CTL lost to activation-induced cell death"),
    "max_n_ctl": ("cells", "most CTL at any observation"),
    "max_n_nk": ("cells", "most NK cells at any observation"),
    "max_n_lak": ("cells", "most LAK cells at any observation"),
    "complete": ("1", "whether the run reached its end"),
}


def cell_table(cells: Any, shape_xyz: tuple[int, int, int], spacing_um: float) -> dict[str, np.ndarray]:
    """The per-cell table of a frame's ``cells`` (live part of every :data:`~abm.kernels.records.CellArrays`
    field): the columns of :data:`abm.io.schema.CELL_COLUMNS`, positions of the cell's site in um."""
    nx, ny, _ = shape_xyz
    site = np.asarray(cells["site"], dtype=np.int64)
    return {
        "id": cells["id"],
        "type": cells["ctype"],
        "site": site,
        "x": (site % nx) * float(spacing_um),
        "y": ((site // nx) % ny) * float(spacing_um),
        "z": (site // (nx * ny)) * float(spacing_um),
        "mhc": cells["mhc"],
        "age_min": cells["age_min"],
        "kills": cells["kills"],
        "timer_min": cells["timer_min"],
        "exposure_min": cells["exposure_min"],
    }


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
    map, the fields and the per-cell table every ``snapshot_every`` steps, events as they happen, and the summary
    (with units) at the end. Root attributes record the seed (unsigned 64-bit), the abm version and git hash, the
    versions of the libraries that shape results (``versions``, JSON) and the overrides (``overrides``)."""

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
            needs.update(("snapshot", "cells"))
        return n, frozenset(needs)

    def begin(self, info: Any) -> None:
        sc = info.scenario
        prov = info.provenance
        self._shape_xyz = tuple(info.shape_xyz)
        self._spacing_um = float(info.spacing_um)
        self._amount_units = {s.name: plasma_amount_unit(s.units) for s in info.species}
        overrides = prov.get("overrides", list(sc.overrides))
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
                "versions": json.dumps(prov.get("versions", {}), sort_keys=True),
                "seed": np.uint64(info.seed),
                "scenario_name": sc.name,
                "scenario_description": sc.meta.description,
                "scenario_source": sc.source,
                "overrides": np.array([str(o) for o in overrides], dtype=str),
                "days": float(sc.run.days),
            },
            cell_columns=CELL_COLUMNS,
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
                fields = {f: e[f] for f in ("drug", "route", "dose", "unit", "amount", "amount_unit", "note") if f in e}
                fields.setdefault("amount_unit", self._amount_unit(e))
                w.add_event(int(e.get("step", k)), float(e.get("time_min", frame.time_min)), e["kind"], **fields)
            self._events_done = len(frame.events)
        if k % self.observe_every == 0 and frame.observables is not None:
            w.append_observables(k, frame.time_min, frame.observables)
        if k % self.snapshot_every == 0 and frame.snapshot is not None:
            w.append_snapshot(k, frame.time_min, frame.snapshot.cell_type, frame.snapshot.fields)
            if frame.cells is not None:
                w.append_cells(k, frame.time_min, cell_table(frame.cells, self._shape_xyz, self._spacing_um))

    def _amount_unit(self, e: dict[str, Any]) -> str:
        """What an event's ``amount`` is counted in: cells for a transfer, the plasma species' moles for a dose
        (pmol for a pM species, umol for uM), nothing for an event without an amount."""
        if e.get("kind") == "transfer":
            return "cells"
        if e.get("drug") in self._amount_units and e.get("kind", "").startswith("dose"):
            return self._amount_units[e["drug"]]
        return ""

    def close(self, end: Any) -> Path | None:
        if self.writer is None:
            return None
        if end.summary is not None:
            summary = {**end.summary, "complete": end.complete}
            units = {k: SUMMARY_UNITS[k][0] for k in summary if k in SUMMARY_UNITS}
            descriptions = {k: SUMMARY_UNITS[k][1] for k in summary if k in SUMMARY_UNITS}
            try:
                self.writer.write_summary(summary, units=units, descriptions=descriptions)
            except Exception as e:  # the file is closed (incomplete) all the same: an open HDF5 file crashes at exit
                if not self.writer.closed:
                    self.writer.close(complete=False, status=f"failed writing the summary: {type(e).__name__}: {e}")
                raise
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
