"""Reporters: what watches a run, fed by :class:`abm.simulation.Simulation` (the OpenMM protocol).

Each reporter says when it next wants a report and what that report needs; it receives the run's description at
the start (:meth:`Reporter.begin`), :class:`~abm.simulation.Frame` objects holding only what it asked for, and the
end of the run (:meth:`Reporter.close`, exactly once, also after a failure or an interrupt). None touches the model.

- :class:`TrajectoryReporter` adapts a run to the HDF5 format of :mod:`abm.io` (:class:`~abm.io.TrajectoryWriter`);
- :class:`RecorderReporter` keeps every observable of every step in memory (the source of the run summary);
- :class:`ProgressReporter` shows progress on stderr: a bar on a terminal, plain lines in a batch job.
"""

from __future__ import annotations

import json
import sys
import time
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
    "total_deaths_ctl_drug": ("cells", "cycling CTL killed by the cytotoxic drug"),
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
        "sensitisation": cells["sensitisation"],
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


def kernels_need_compiling() -> bool:
    """Whether the first steps of a run will compile Numba kernels: a kernel that every step calls has not been
    compiled in this process and has no valid entry in Numba's on-disk cache (a fresh clone, or a kernel source
    edited since the cache was written). Loading cached kernels takes about a second; compiling them, tens of
    seconds."""
    from abm.kernels import cells, coupled, exchange, fields, observe

    # each entry: kernels of which a step calls one (the split sweeps have serial twins chosen by work size)
    groups = [
        *((getattr(cells, n, None),) for n in ("step_cells", "recruit", "compact", "count_of")),
        (getattr(exchange, "fill_exchange", None),),
        (getattr(fields, "react_sweep_x", None), getattr(fields, "react_sweep_x_serial", None)),
        (getattr(fields, "sweep_strided", None), getattr(fields, "sweep_strided_serial", None)),
        (getattr(coupled, "solve", None),),
        (getattr(observe, "tumour_geometry", None),),
        (getattr(observe, "field_stats", None),),
    ]
    for group in groups:
        kernels = [d for d in group if d is not None and hasattr(d, "signatures")]
        if not kernels or any(d.signatures for d in kernels):
            continue  # renamed, or one of them already compiled here
        try:
            # Numba's cache index: {} when absent or stale
            if not any(d._cache._cache_file._load_index() for d in kernels):
                return True
        except Exception:  # noqa: BLE001 - Numba internals moved: say it may compile rather than nothing
            return True
    return False


def _hms(seconds: float) -> str:
    s = int(round(max(0.0, seconds)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


COMPILING = "compiling kernels (first run only)\u2026"


class ProgressReporter:
    """Progress of a run on stderr (or ``stream``), reported every ``every`` steps.

    On a terminal, a tqdm bar (day, tumour and CTL counts, ETA); elsewhere (a batch job, a log file, a pipe), a plain
    line each time the run has advanced another ``plain_every_pct`` percent or ``plain_every_s`` seconds have passed:
    day, tumour cells, CTL, elapsed time and ETA. While the first steps compile the Numba kernels (a cold cache,
    :func:`kernels_need_compiling`), both say ``compiling kernels (first run only)…``, and the ETA counts from the
    end of compilation. ``enabled=False`` shows nothing (``abm run --quiet``).

    ``plain`` forces the plain lines (True) or the bar (False); ``compiling`` overrides the cache check; ``clock``
    is the time source (seconds), for tests.
    """

    def __init__(
        self,
        every: int = 36,
        enabled: bool | None = None,
        label: str = "",
        stream: Any = None,
        plain: bool | None = None,
        plain_every_pct: float = 10.0,
        plain_every_s: float = 60.0,
        compiling: bool | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.every = max(1, int(every))
        self.enabled = True if enabled is None else bool(enabled)
        self.label = label
        self.stream = stream
        self.plain = plain
        self.plain_every_pct = float(plain_every_pct)
        self.plain_every_s = float(plain_every_s)
        self._compiling_arg = compiling
        self.clock = clock
        self.bar = None
        self.compiling = False
        self._last = 0
        self._n_steps = 0
        self._dt_min = 1.0
        self._t_ready = 0.0  # clock time and step from which the ETA is measured
        self._step_ready = 0
        self._t_begin = 0.0
        self._printed_at = (0.0, 0.0)  # (percent, clock) of the last plain line
        self._counts: dict[str, int] = {}

    def describe_next_report(self, last_step: int) -> tuple[int, frozenset[str]]:
        return every(self.every, last_step), frozenset({"counts"})

    # ------------------------------------------------------------------------------------------------ output
    def _out(self) -> Any:
        return self.stream if self.stream is not None else sys.stderr

    def _prefix(self) -> str:
        return f"{self.label}: " if self.label else ""

    def _line(self, text: str) -> None:
        out = self._out()
        print(self._prefix() + text, file=out, flush=True)

    def _new_bar(self, initial: int) -> None:
        self.bar = tqdm(
            total=self._n_steps,
            initial=initial,
            unit="step",
            desc=self.label or None,
            file=self._out(),
            dynamic_ncols=True,
        )

    def _status(self, step: int) -> str:
        day = step * self._dt_min / 1440.0
        total = self._n_steps * self._dt_min / 1440.0
        pct = 100.0 * step / self._n_steps if self._n_steps else 100.0
        now = self.clock()
        done = step - self._step_ready
        left = self._n_steps - step
        eta = _hms(left * (now - self._t_ready) / done) if done > 0 and not self.compiling else "?"
        c = self._counts
        return (
            f"day {day:.1f} of {total:g} ({pct:.0f}%), tumour {c.get('tumour', 0)}, CTL {c.get('ctl', 0)}, "
            f"elapsed {_hms(now - self._t_begin)}, ETA {eta}"
        )

    # ---------------------------------------------------------------------------------------------- protocol
    def begin(self, info: Any) -> None:
        self._n_steps = int(info.n_steps)
        self._dt_min = float(info.dt_min)
        self._t_begin = self._t_ready = self.clock()
        self._printed_at = (0.0, self._t_begin)
        if not self.enabled:
            return
        if self.plain is None:
            isatty = getattr(self._out(), "isatty", None)
            self.plain = not (callable(isatty) and isatty())
        self.compiling = kernels_need_compiling() if self._compiling_arg is None else bool(self._compiling_arg)
        if self.plain:
            days = self._n_steps * self._dt_min / 1440.0
            self._line(f"{days:g} days ({self._n_steps} steps of {self._dt_min:g} min)")
            if self.compiling:
                self._line(COMPILING)
        elif self.compiling:  # a status line in place of the bar, which would show 0 and a wild ETA meanwhile
            self.bar = tqdm(
                total=self._n_steps,
                desc=self._prefix() + COMPILING,
                bar_format="{desc}",
                file=self._out(),
                leave=False,
            )
            self.bar.refresh()
        else:
            self._new_bar(0)

    def _ready(self, step: int) -> None:
        """The first steps are done: the kernels are compiled; the ETA counts from here."""
        self.compiling = False
        now = self.clock()
        self._t_ready, self._step_ready = now, step
        if self.plain:
            self._line(f"kernels compiled in {now - self._t_begin:.0f} s")
            self._printed_at = (self._printed_at[0], now)
        else:
            if self.bar is not None:
                self.bar.close()
            self._new_bar(step)

    def report(self, frame: Any) -> None:
        if not self.enabled:
            return
        self._counts = dict(frame.counts or {})
        if self.compiling and frame.step > 0:
            self._ready(frame.step)
        if self.plain:
            pct = 100.0 * frame.step / self._n_steps if self._n_steps else 100.0
            last_pct, last_t = self._printed_at
            now = self.clock()
            due = pct >= last_pct + self.plain_every_pct or now - last_t >= self.plain_every_s
            if 0 < frame.step < self._n_steps and due:  # the last step is close()'s line
                self._line(self._status(frame.step))
                self._printed_at = (pct, now)
        elif self.bar is not None and not self.compiling:
            self.bar.update(frame.step - self.bar.n)
            c = self._counts
            self.bar.set_postfix(
                day=f"{frame.time_day:.1f}", tumour=c.get("tumour", 0), ctl=c.get("ctl", 0), refresh=False
            )
        self._last = frame.step

    def close(self, end: Any) -> None:
        if not self.enabled:
            return
        if self.plain:
            what = "done" if end.complete else f"stopped ({end.status})"
            self._line(f"{what}: {self._status(end.last_step)}")
        elif self.bar is not None:
            if not self.compiling:
                self.bar.update(end.last_step - self.bar.n)
            self.bar.close()
