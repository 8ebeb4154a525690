"""The Model: owns the state and runs one step in the order of SCIENCE.md section 3, written once here.

``abm.Model`` is a ``mesa.Model`` (through :mod:`abm.mesa_face`), so it honours Mesa's contract: seed or rng at
construction, ``step()``, ``steps``, ``running``, a ``datacollector``, and ``mesa.batch_run``. Underneath, cells
and fields are numpy arrays advanced by Numba kernels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from abm import mesa_face
from abm.field_solver import FieldSolver
from abm.kernels import cells as K
from abm.observables import Observer, observable_specs
from abm.params import Params
from abm.state import CELL_TYPES, cell_rules, initial_state


def _resolve_seed(seed: Any, mesa_rng: np.random.Generator) -> int:
    """The integer that keys every kernel draw: the given seed, or one drawn from Mesa's generator."""
    if seed is None:
        return int(mesa_rng.integers(0, 2**63 - 1))
    s = int(seed)
    if s < 0 or s >= 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return s


class Model(mesa_face.MesaModel):
    """A tumour-immune simulation.

    Parameters
    ----------
    scenario:
        A :class:`abm.scenario.Scenario`, a path to a scenario TOML or the name of a shipped scenario; or None
        for the default parameters, untreated.
    params:
        A parameter tree to use instead of the scenario's.
    seed, rng:
        Mesa's seeding convention (one or the other). ``seed`` is also the key of every random draw in the
        kernels; with ``rng`` (or neither) that key is drawn from the generator and kept in ``model.seed``.
    sets:
        ``key.path=value`` overrides applied on top.
    **overrides:
        More overrides as keyword arguments, ``__`` standing for ``.`` (``ctl__kill_prob=0.1``), which is how
        ``mesa.batch_run`` passes parameters.
    """

    def __init__(
        self,
        scenario: Any = None,
        *,
        params: Params | None = None,
        seed: int | None = None,
        rng: Any = None,
        sets: list[str] | None = None,
        **overrides: Any,
    ) -> None:
        from abm.scenario import Scenario  # scenario imports therapy; keep the model importable on its own

        if scenario is None:
            scenario = Scenario.default()
        elif isinstance(scenario, str | Path):
            scenario = Scenario.load(scenario)
        extra = list(sets or []) + [f"{k.replace('__', '.')}={_toml_value(v)}" for k, v in overrides.items()]
        if extra:
            scenario = scenario.with_overrides(extra)
        if params is not None:
            scenario = scenario.with_params(params)
        self.scenario = scenario
        self.params: Params = scenario.params
        mesa_face.mesa_init(self, seed, rng)  # Mesa's rule: seed or rng, not both
        if seed is None and rng is None and scenario.run.seed is not None:
            seed = scenario.run.seed
        self.seed = _resolve_seed(seed, self.rng)

        p = self.params
        self.state = initial_state(p, self.seed)
        self.rules = cell_rules(p)
        lat = self.state.lattice
        self.solver = FieldSolver(
            lat.shape_xyz,
            lat.spacing_um,
            p.time.dt_min,
            [p.species[s].diffusion_um2_per_min for s in p.species_names],
            [p.species[s].decay_per_min for s in p.species_names],
            periodic=lat.periodic,
            substeps=p.time.field_substeps,
        )
        self.species = p.species_names
        self._permeability = np.array([p.species[s].vessel_permeability_per_min for s in self.species])
        self.plasma = np.zeros(len(self.species))  # set directly when no therapy drives it
        self.therapy = scenario.make_therapy()
        self.toxicity = 0.0
        self.events: list[dict[str, Any]] = []
        self.step_index = 0
        self.dt_min = p.time.dt_min
        self._offs = lat.moore()
        n_cap = self.state.cells.ctype.shape[0]
        self._order = np.zeros(n_cap, dtype=np.int64)
        self._free = np.zeros(len(self._offs), dtype=np.int64)
        self._tum = np.zeros(len(self._offs), dtype=np.int64)
        self._w = np.zeros(len(self._offs), dtype=np.float64)
        self.counters = K.empty_counters()
        self.observer = Observer(p, lat)
        self.observable_specs = observable_specs(p)
        self.latest = self.observer.measure(self.state, self.counters, self.plasma, 0.0, 0, 0)
        self.datacollector = mesa_face.headline_datacollector()
        self.datacollector.collect(self)
        self.running = True

    # ------------------------------------------------------------------------------------------- the step
    def step(self) -> None:
        """One agent step of ``dt_min`` (SCIENCE.md s3): therapy, fields, cells, recruitment, observation."""
        s = self.state
        lat = s.lattice
        k = self.step_index
        self.counters[:] = 0
        doses_given = doses_held = 0
        # 1. therapy: plasma levels over this step, doses (or holds), adoptive transfer
        if self.therapy is not None:
            ts = self.therapy.advance(k)
            self.plasma[:] = ts.plasma
            self.toxicity = ts.toxicity
            doses_given, doses_held = ts.doses_given, ts.doses_held
            self.events.extend(ts.events)
            if ts.lak_cells > 0:
                K.transfer_lak(
                    s.cells,
                    s.occupancy,
                    s.vessels,
                    self._offs,
                    lat.nx,
                    lat.ny,
                    lat.nz,
                    lat.periodic,
                    int(ts.lak_cells),
                    self.seed,
                    k,
                    self.counters,
                    self._free,
                    self._tum,
                )
        # 2. fields: cells set uptake/secretion, then exchange with plasma, decay, diffusion
        s.uptake[K.IL2] = 0.0
        s.source[K.IL2] = 0.0
        K.fill_il2_exchange(s.cells, s.conc, s.uptake, s.source, self.rules)
        self.solver.step(s.conc, s.uptake, s.source, s.vessels, self._permeability, self.plasma)
        # 3. cells, in a seeded random order
        K.step_cells(
            s.cells,
            s.occupancy,
            s.conc,
            self._offs,
            lat.nx,
            lat.ny,
            lat.nz,
            lat.periodic,
            self.rules,
            self._bias_target(),
            self.seed,
            k,
            self.counters,
            self._order,
            self._free,
            self._tum,
            self._w,
        )
        # 4. recruitment at vessels
        p_ctl, p_nk = self.recruitment_probabilities()
        K.recruit(
            s.cells,
            s.occupancy,
            s.vessels,
            self._offs,
            lat.nx,
            lat.ny,
            lat.nz,
            lat.periodic,
            p_ctl,
            p_nk,
            self.seed,
            k,
            self.counters,
            self._free,
            self._tum,
        )
        K.compact(s.cells, s.occupancy)
        # 5. observe
        self.step_index = k + 1
        self.latest = self.observer.measure(s, self.counters, self.plasma, self.toxicity, doses_given, doses_held)
        self.datacollector.collect(self)

    def recruitment_probabilities(self) -> tuple[float, float]:
        """Per-vessel probabilities of a CTL and an NK entry this step (SCIENCE.md s4)."""
        p = self.params
        n_t = self.latest["n_tumour"]
        cp = self.plasma[K.IL2]
        ctl = (
            p.ctl.recruit_per_vessel_per_day
            * p.patient.antigenicity
            * n_t
            / (n_t + p.ctl.recruit_tumour_half_cells)
            * (1.0 + p.ctl.il2_recruit_boost * cp / (cp + p.ctl.il2_recruit_half_pM))
        )
        nk = (
            p.nk.recruit_per_vessel_per_day
            * p.patient.nk_recruitment_scale
            * (1.0 + p.nk.il2_recruit_boost * cp / (cp + p.nk.il2_recruit_half_pM))
        )
        dt_day = self.dt_min / 1440.0
        return float(-np.expm1(-ctl * dt_day)), float(-np.expm1(-nk * dt_day))

    def _bias_target(self) -> np.ndarray:
        c = self.observer.centroid
        return c if np.all(np.isfinite(c)) else np.full(3, np.nan)

    # ------------------------------------------------------------------------------------------ conveniences
    @property
    def time_min(self) -> float:
        return self.step_index * self.dt_min

    @property
    def time_day(self) -> float:
        return self.time_min / 1440.0

    def steps_for_days(self, days: float) -> int:
        return int(round(days * 1440.0 / self.dt_min))

    def run_days(self, days: float) -> None:
        """Step for ``days`` simulated days (no reporters; see :func:`abm.run` for files and progress)."""
        for _ in range(self.steps_for_days(days)):
            self.step()

    def counts(self) -> dict[str, int]:
        return self.state.counts()

    def cell_type_map(self) -> np.ndarray:
        """Cell type per site as an array shaped like the lattice ((ny, nx) or (nz, ny, nx)); codes in
        ``CELL_TYPES``."""
        return self.state.cell_type_map().reshape(self.state.lattice.shape)

    def fields(self) -> dict[str, np.ndarray]:
        """Each species' concentration field shaped like the lattice (views, not copies)."""
        shape = self.state.lattice.shape
        return {sp: self.state.conc[k].reshape(shape) for k, sp in enumerate(self.species)}

    def property_layers(self) -> dict[str, Any]:
        """The fields and the cell-type map as Mesa property layers (2D; {} where Mesa lacks them)."""
        return mesa_face.property_layers(self)

    cell_types = CELL_TYPES


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace('"', '\\"') + '"'
    return repr(v)
