"""Bounds checked before any work: step counts, schedule sizes, transfers, initial placement and memory.

The parameter tree bounds each value alone; this module bounds what values make together, so that every scenario
the tree accepts either runs or is refused up front (exit 2 from the CLI), never hours later or at allocation:

- :func:`check_scenario` (called once by :meth:`abm.Scenario.from_layers`, with the function that names the file
  or ``--set`` of a key): the number of steps (``run.days / time.dt_min``), the size of the expanded dose schedule
  (counted before anything is expanded), the number of adoptive transfers and their cells against the cell
  capacity (the transfer kernel tries each cell 16 times, so this bounds its work by the lattice), the initial
  cells against the lattice and ``init.cell_capacity``. Cheap: no per-site array is made.
- :func:`estimate_memory` / :func:`check_memory`: the bytes a run needs, from the lattice, the number of species,
  the cell capacity and the number of steps (the in-memory recorder), refused when above what the machine has
  (:func:`available_memory`, which counts a cgroup limit too).
- :func:`check_placement`: the initial immune cells against the free sites that every seed leaves (the tumour and
  the vessels take theirs first), from the same geometry as :func:`abm.state.initial_state`. It makes a few
  per-site arrays, so it runs after :func:`check_memory`.
- :func:`check_run` runs both machine-side checks (``abm run``, ``abm check``, :func:`abm.run`).

Every problem is a :class:`~abm.errors.ParameterError` line naming the source and the key.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from abm.errors import ParameterError

MAX_STEPS = 10_000_000
"""Agent steps in one run (``run.days * 1440 / time.dt_min``): 19 years at dt = 1 min."""

MAX_SCHEDULED_DOSES = 100_000
"""Doses a regimen may enumerate (count x cycles, or weeks x weekdays x per_day x cycles, summed over blocks),
counted before expansion (an hourly dose for 11 years is 96,000)."""

MAX_TRANSFERS = 1_000
"""Adoptive transfers in one regimen."""

PER_CELL_BYTES = 1 + 4 + 4 + 4 + 2 + 4 + 4 + 8
"""Cell arrays (type, site, MHC, age, kills, timer, exposure: 23 B, abm/state.py) + the visiting order (8 B)."""

MARGIN = 1.1
"""The estimate is multiplied by this (allocator slack)."""

Where = Callable[[tuple[str, ...]], str]


def _line(where: Where, path: tuple[str, ...], msg: str) -> str:
    return f"{where(path)}: key '{'.'.join(path)}': {msg}"


def n_steps(days: float, dt_min: float) -> int:
    """Steps of a run, as :meth:`abm.Model.steps_for_days` counts them (``round(days * 1440 / dt)``)."""
    x = days * 1440.0 / dt_min
    if not math.isfinite(x):
        return MAX_STEPS + 1
    return int(round(x))


def n_sites(lattice: Any) -> int:
    return int(lattice.nx) * int(lattice.ny) * int(lattice.nz)


def capacity(params: Any) -> int:
    """The size of the cell arrays (``init.cell_capacity``, 0 = the number of sites)."""
    return int(params.init.cell_capacity) or n_sites(params.lattice)


def block_doses(block: Any) -> int:
    """Doses a dose block enumerates before the run's end cuts them (what :meth:`DoseBlock.times_min` makes)."""
    if block.weeks is not None:
        per_cycle = len(block.weeks) * len(block.weekdays or ()) * int(block.per_day)
    else:
        per_cycle = int(block.count or 1)
    return per_cycle * int(block.cycles)


# ---------------------------------------------------------------------------------------- scenario (no arrays)
def check_scenario(run: Any, params: Any, regimen: Any, where: Where) -> None:
    """Bounds on what the values make together; raises one ParameterError listing every problem."""
    lines: list[str] = []
    dt = float(params.time.dt_min)
    steps = n_steps(float(run.days), dt)
    if steps > MAX_STEPS:
        lines.append(
            _line(
                where,
                ("run", "days"),
                f"{run.days:g} days at time.dt_min = {dt:g} min (set in {where(('time', 'dt_min'))}) make "
                f"{_num(steps)} steps; at most {MAX_STEPS:,} steps are allowed (lengthen time.dt_min or shorten "
                "run.days)",
            )
        )
    n_doses = 0
    for i, block in enumerate(regimen.doses):
        k = block_doses(block)
        n_doses += k
        if k > MAX_SCHEDULED_DOSES:
            lines.append(
                _line(
                    where,
                    ("regimen", "doses", str(i)),
                    f"the block enumerates {k:,} doses (count or weeks x weekdays x per_day, times cycles); at most "
                    f"{MAX_SCHEDULED_DOSES:,} doses are allowed in a regimen",
                )
            )
    if n_doses > MAX_SCHEDULED_DOSES and not lines:
        lines.append(
            _line(
                where,
                ("regimen", "doses"),
                f"the dose blocks enumerate {n_doses:,} doses together; at most {MAX_SCHEDULED_DOSES:,} are allowed",
            )
        )
    if len(regimen.transfers) > MAX_TRANSFERS:
        lines.append(
            _line(
                where,
                ("regimen", "transfers"),
                f"{len(regimen.transfers):,} transfers; at most {MAX_TRANSFERS:,} are allowed",
            )
        )
    cap = capacity(params)
    sites = n_sites(params.lattice)
    # A transfer's lesion share is dose x homing fraction x (lesion tumour cells / body burden); the lesion never
    # holds more than the capacity, so this bounds the cells one infusion can place (docs/model.md 7.4).
    per_lesion_cell = params.lak.homing_fraction / params.patient.tumour_burden_cells
    max_dose = 1.0 / per_lesion_cell if per_lesion_cell > 0 else math.inf
    for i, tr in enumerate(regimen.transfers):
        worst = tr.cells_per_infusion * per_lesion_cell * cap
        if worst > cap:
            lines.append(
                _line(
                    where,
                    ("regimen", "transfers", str(i), "cells_per_infusion"),
                    f"{tr.cells_per_infusion:,.4g} cells per infusion could send up to {worst:,.4g} LAK cells to "
                    f"this lesion (x lak.homing_fraction {params.lak.homing_fraction:g} x lesion cells / "
                    f"patient.tumour_burden_cells {params.patient.tumour_burden_cells:g}), more than the tissue "
                    f"holds (init.cell_capacity = {cap:,}, the lattice has {sites:,} sites); at most "
                    f"{max_dose:,.4g} cells per infusion",
                )
            )
    init = params.init
    n_tumour = min(int(init.tumour_cells), sites) if init.tumour_cells > 0 else 0
    immune = int(init.ctl_cells) + int(init.nk_cells) + int(init.lak_cells)
    if n_tumour > cap:
        lines.append(
            _line(
                where,
                ("init", "tumour_cells"),
                f"{n_tumour:,} tumour cells exceed init.cell_capacity = {cap:,}",
            )
        )
    if immune and n_tumour + immune > min(cap, sites):
        key = max(("ctl_cells", "nk_cells", "lak_cells"), key=lambda k: getattr(init, k))
        lines.append(
            _line(
                where,
                ("init", key),
                f"{immune:,} initial immune cells (ctl + nk + lak) do not fit: the lattice has {sites:,} sites "
                f"and the cell arrays hold {cap:,} cells",
            )
        )
    if lines:
        raise ParameterError("\n".join(lines))


def _num(n: int) -> str:
    return f"{n:,}" if n <= 10**15 else f"{float(n):.3g}"


# --------------------------------------------------------------------------------------------------- memory
@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs, by part, and the total with :data:`MARGIN`."""

    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return int(MARGIN * sum(self.parts.values()))

    def describe(self) -> str:
        return ", ".join(f"{k} {fmt_bytes(v)}" for k, v in self.parts.items() if v)


def estimate_memory(scenario: Any) -> MemoryEstimate:
    """What a run of ``scenario`` allocates (abm/state.py gives the bytes per site), by part.

    Persistent: occupancy (4 B/site), cell arrays and visiting order (31 B per cell of capacity), per species a
    float64 field and float32 uptake and source (16 B/site), the solver's vessel mask (1 B/site), the recorder
    (every observable at every step, float64). Transient, the larger of: the initial placement's temporaries
    (coordinates and distances, 48 B/site) and a snapshot (cell types and the fields copied, converted to float32).
    Measured on 10^6 sites with 3 species: 119 B/site at the peak; this estimate gives 145 B/site.
    """
    from abm.observables import observable_specs  # the observables depend on the tree (2D/3D)

    p = scenario.params
    sites = n_sites(p.lattice)
    n_species = len(p.species_names)
    steps = n_steps(float(scenario.run.days), float(p.time.dt_min))
    n_obs = len(observable_specs(p)) + 2
    parts = {
        "lattice": sites * (4 + 1),
        "cells": capacity(p) * PER_CELL_BYTES,
        "fields": sites * n_species * 16,
        "recorder": (steps + 1) * n_obs * 8,
        "transient": sites * max(48, 1 + 12 * n_species),
        "schedule": sum(block_doses(b) for b in scenario.regimen.doses) * 400,
    }
    return MemoryEstimate(parts)


def available_memory() -> int | None:
    """Bytes this process may still allocate: MemAvailable (Linux), lowered by a cgroup v2 limit; None if unknown."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        avail = None
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = None
    try:
        root = Path("/sys/fs/cgroup")
        limit = (root / "memory.max").read_text().strip()
        if limit != "max":
            room = int(limit) - int((root / "memory.current").read_text().strip())
            avail = room if avail is None else min(avail, room)
    except (OSError, ValueError):
        pass
    return avail


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


def check_memory(scenario: Any, available: int | None = None) -> MemoryEstimate:
    """Refuse (ParameterError) a run whose estimate exceeds the memory available; return the estimate."""
    est = estimate_memory(scenario)
    avail = available_memory() if available is None else available
    if avail is not None and est.total > avail:
        p = scenario.params
        la = p.lattice
        shape = f"{la.nx} x {la.ny}" + (f" x {la.nz}" if la.nz > 1 else "")
        biggest = max(est.parts, key=lambda k: est.parts[k])
        if biggest == "cells" and p.init.cell_capacity:
            path = ("init", "cell_capacity")
        elif biggest == "recorder":
            path = ("run", "days")
        elif biggest == "schedule":
            path = ("regimen", "doses")
        else:
            path = ("lattice", max(("nx", "ny", "nz"), key=lambda k: getattr(la, k)))
        where = scenario.source_of(path)
        raise ParameterError(
            f"{where}: key '{'.'.join(path)}': the run needs about {fmt_bytes(est.total)} of memory "
            f"({est.describe()}; lattice {shape} = {n_sites(la):,} sites, {len(p.species_names)} species, "
            f"init.cell_capacity {capacity(p):,}, {n_steps(scenario.run.days, p.time.dt_min):,} steps) but this "
            f"machine has {fmt_bytes(avail)} available; use a smaller lattice, a smaller init.cell_capacity or "
            "fewer steps"
        )
    return est


# ------------------------------------------------------------------------------------------------ placement
def free_sites(params: Any) -> tuple[int, int]:
    """(tumour sites at t = 0, free sites every seed leaves where the initial immune cells may go).

    The geometry of :func:`abm.state.initial_state`: the tumour is a disc or ball (or the ``tumour_cells`` sites
    nearest the centre), vessels take ``round(vessel_fraction x outside)`` random sites beyond the tumour and the
    margin; immune cells go to free sites (within ``immune_within_um`` of the tumour edge when that is > 0). The
    guaranteed count assumes the vessels fall inside that zone as much as they can."""
    from abm.lattice import Lattice  # numpy geometry only

    lat = Lattice.from_params(params.lattice)
    n = lat.n_sites
    x, y, z = lat.coords(np.arange(n))
    centre = (np.array(lat.shape_xyz) - 1) / 2.0
    if lat.ndim == 2:
        centre[2] = 0.0
    dist_um = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) * lat.spacing_um
    del x, y, z
    init = params.init
    if init.tumour_cells > 0:
        n_t = min(int(init.tumour_cells), n)
        radius_um = float(np.partition(dist_um, n_t - 1)[n_t - 1]) if n_t else 0.0
    else:
        n_t = int(np.count_nonzero(dist_um <= init.tumour_radius_um))
        radius_um = init.tumour_radius_um
    outside = dist_um > radius_um + params.vessels.tumour_margin_um
    n_out = int(np.count_nonzero(outside))
    n_v = int(round(params.patient.vessel_fraction * n_out))
    if init.immune_within_um > 0:
        zone = dist_um <= radius_um + init.immune_within_um
    else:
        zone = np.ones(n, dtype=bool)
    zone_sites = int(np.count_nonzero(zone))
    zone_out = int(np.count_nonzero(zone & outside))
    # tumour sites lie in the zone (distance <= radius); the vessels may all fall in the zone's outside part
    guaranteed = zone_sites - n_t - min(n_v, zone_out)
    return n_t, max(0, guaranteed)


def check_placement(scenario: Any) -> None:
    """Refuse an initial tumour (a disc or ball of ``init.tumour_radius_um``) or initial immune cells that the cell
    arrays cannot hold, and initial immune cells that some seed could not place (ParameterError naming the key)."""
    params = scenario.params
    init = params.init
    immune = int(init.ctl_cells) + int(init.nk_cells) + int(init.lak_cells)
    cap = capacity(params)
    if not immune and cap >= n_sites(params.lattice):
        return
    n_t, free = free_sites(params)
    if n_t + immune > cap:
        # the key a layer above the scenario's own file set, so that a --set is named when it is the cause
        keys = [("init", "cell_capacity"), ("init", "tumour_radius_um"), ("init", "tumour_cells")]
        keys += [("init", k) for k in ("ctl_cells", "nk_cells", "lak_cells") if getattr(init, k)]
        path = next((k for k in keys if scenario.source_of(k) != scenario.source_of(())), keys[0])
        raise ParameterError(
            f"{scenario.source_of(path)}: key '{'.'.join(path)}': the cell arrays hold init.cell_capacity = {cap:,} "
            f"cells but {n_t:,} tumour cells (init.tumour_radius_um = {init.tumour_radius_um:g} um"
            + (f", init.tumour_cells = {int(init.tumour_cells):,}" if init.tumour_cells > 0 else "")
            + f") and {immune:,} immune cells start the run"
        )
    if immune > free:
        key = max(("ctl_cells", "nk_cells", "lak_cells"), key=lambda k: getattr(init, k))
        zone = (
            f" within init.immune_within_um = {init.immune_within_um:g} um of the tumour"
            if init.immune_within_um > 0
            else ""
        )
        raise ParameterError(
            f"{scenario.source_of(('init', key))}: key 'init.{key}': {immune:,} initial immune cells (ctl + nk + lak) "
            f"requested but only {free:,} free sites{zone} are certain once the tumour and the vessels are placed"
        )


def check_run(scenario: Any, available: int | None = None) -> MemoryEstimate:
    """Everything that needs the machine or per-site arrays, before a run: memory, then initial placement."""
    est = check_memory(scenario, available)
    check_placement(scenario)
    return est
