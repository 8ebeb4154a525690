"""Reporters: what watches a run. The step loop (:func:`abm.runner.run`) asks each reporter how many steps until
it next wants to report, runs the model to the nearest such step, and hands the model to the reporters due
(the OpenMM protocol). Each has an explicit ``close()``; none reaches back into the model.

- :class:`TrajectoryReporter` writes the HDF5 trajectory (format in :mod:`abm.io`);
- :class:`RecorderReporter` keeps the observables in memory;
- :class:`ProgressReporter` draws a progress bar on stderr.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from abm.io import ObservableSpec, SpeciesSpec, TrajectoryWriter
from abm.observables import run_outcome
from abm.state import CELL_TYPES


class Reporter(Protocol):
    def steps_until_next(self, model: Any) -> int:
        """Steps from ``model.step_index`` to the next report (0: report now)."""

    def report(self, model: Any) -> None: ...

    def close(self, model: Any, complete: bool, status: str) -> None: ...


class RecorderReporter:
    """Every observable at every step, in memory (also the source of the run summary)."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.time_min: list[float] = []
        self.rows: list[dict[str, float]] = []

    def steps_until_next(self, model: Any) -> int:
        return 0

    def report(self, model: Any) -> None:
        if self.steps and self.steps[-1] == model.step_index:
            return
        self.steps.append(model.step_index)
        self.time_min.append(model.time_min)
        self.rows.append(dict(model.latest))

    def close(self, model: Any, complete: bool, status: str) -> None:
        pass

    def arrays(self) -> dict[str, np.ndarray]:
        if not self.rows:
            return {}
        out = {k: np.array([r[k] for r in self.rows]) for k in self.rows[0]}
        out["step"] = np.array(self.steps)
        out["time_min"] = np.array(self.time_min)
        return out


def run_summary(model: Any, rec: RecorderReporter) -> dict[str, Any]:
    """The per-run outcome (RECIST-like) plus totals of doses, toxicity events, kills and recruitment."""
    a = rec.arrays()
    out: dict[str, Any] = dict(
        run_outcome(a["time_min"], a["tumour_lesion_diameter_mm"], a["n_tumour"], model.params.response)
    )
    kinds = Counter(e["kind"] for e in model.events)
    dlt = [e for e in model.events if e["kind"] == "toxicity_dlt"]
    out.update(
        doses_given=int(kinds.get("dose_given", 0)),
        doses_held=int(kinds.get("dose_held", 0)),
        doses_cancelled=int(kinds.get("dose_cancelled", 0)),
        dose_limiting_toxicity=bool(dlt),
        dlt_day=float(dlt[0]["time_min"]) / 1440.0 if dlt else math.nan,
        toxicity_max=float(np.max(a["toxicity"])) if len(a["toxicity"]) else 0.0,
        seed=int(model.seed),
    )
    for name in (
        "kills_ctl",
        "kills_nk",
        "kills_lak",
        "kills_drug",
        "divisions_tumour",
        "recruited_ctl",
        "recruited_nk",
        "lak_conversions",
        "transferred_lak",
        "deaths_ctl_aicd",
    ):
        out[f"total_{name}"] = int(np.sum(a[name]))
    for kind in ("ctl", "nk", "lak"):
        out[f"max_n_{kind}"] = float(np.max(a[f"n_{kind}"]))
    return out


class TrajectoryReporter:
    """Writes the run to HDF5: observables every ``observe_every`` steps, snapshots of the cell-type map and the
    fields every ``snapshot_every`` steps, events as they happen, and the summary at the end."""

    def __init__(
        self,
        path: str | Path,
        model: Any,
        snapshot_every: int,
        observe_every: int = 1,
        overwrite: bool = False,
        recorder: RecorderReporter | None = None,
    ) -> None:
        from abm import __version__
        from abm.runner import git_hash

        self.snapshot_every = max(1, int(snapshot_every))
        self.observe_every = max(1, int(observe_every))
        self.recorder = recorder
        self._events_done = 0
        p = model.params
        lat = model.state.lattice
        sc = model.scenario
        self.writer = TrajectoryWriter(
            path,
            shape_xyz=lat.shape_xyz,
            spacing_um=lat.spacing_um,
            dt_min=model.dt_min,
            observables=[ObservableSpec(o.name, o.units, description=o.description) for o in model.observable_specs],
            species=[SpeciesSpec(s, p.species[s].units) for s in model.species],
            cell_type_codes=CELL_TYPES,
            vessel_sites=model.state.vessels,
            attrs={
                "abm_version": __version__,
                "git_hash": git_hash(),
                "seed": str(model.seed),
                "scenario_name": sc.name,
                "scenario_description": sc.meta.description,
                "scenario_source": sc.source,
                "days": float(sc.run.days),
            },
            parameters_json=_json(sc.resolved()),
            scenario_toml=sc.text,
            creator="abm",
            creator_version=__version__,
            overwrite=overwrite,
        )

    def steps_until_next(self, model: Any) -> int:
        k = model.step_index
        return min(-k % self.observe_every, -k % self.snapshot_every)

    def report(self, model: Any) -> None:
        k = model.step_index
        w = self.writer
        for e in model.events[self._events_done :]:
            fields = {f: e[f] for f in ("drug", "route", "dose", "unit", "amount", "note") if f in e}
            w.add_event(int(e.get("step", k)), float(e.get("time_min", model.time_min)), e["kind"], **fields)
        self._events_done = len(model.events)
        if k % self.observe_every == 0:
            w.append_observables(k, model.time_min, model.latest)
        if k % self.snapshot_every == 0:
            fields = {sp: model.state.conc[i] for i, sp in enumerate(model.species)}
            w.append_snapshot(k, model.time_min, model.state.cell_type_map(), fields)

    def close(self, model: Any, complete: bool, status: str) -> Path:
        if self.recorder is not None and self.recorder.rows:
            summary = run_summary(model, self.recorder)
            summary["complete"] = complete
            self.writer.write_summary(summary)
        return self.writer.close(complete=complete, status=status)

    @property
    def path(self) -> Path:
        return self.writer.path


class ProgressReporter:
    """A tqdm bar on stderr, updated every ``every`` steps; silent when stderr is not a terminal."""

    def __init__(self, total_steps: int, every: int = 36, enabled: bool | None = None, label: str = "") -> None:
        from tqdm import tqdm

        self.every = every
        enabled = sys.stderr.isatty() if enabled is None else enabled
        self.bar = tqdm(
            total=total_steps, disable=not enabled, unit="step", desc=label or None, file=sys.stderr, dynamic_ncols=True
        )
        self._last = 0

    def steps_until_next(self, model: Any) -> int:
        return -model.step_index % self.every

    def report(self, model: Any) -> None:
        self.bar.update(model.step_index - self._last)
        self._last = model.step_index
        lat = model.latest
        self.bar.set_postfix(
            day=f"{model.time_day:.1f}", tumour=int(lat["n_tumour"]), ctl=int(lat["n_ctl"]), refresh=False
        )

    def close(self, model: Any, complete: bool, status: str) -> None:
        self.report(model)
        self.bar.close()


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=1, allow_nan=True)
