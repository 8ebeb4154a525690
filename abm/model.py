"""The Model: owns the state and advances it, one step in the order of docs/model.md (scheduling), written once here.

``abm.Model`` is a ``mesa.Model`` (through :mod:`abm.mesa_face`), so it honours Mesa's contract: seed or rng at
construction, ``step()``, ``steps``, ``running``, a ``datacollector``, and ``mesa.batch_run``. Underneath, cells
and fields are numpy arrays advanced by Numba kernels.

Two ways to move a model forward: :meth:`Model.step` (Mesa's: one step, then the DataCollector collects) and
:meth:`Model.advance` (the engine: ``n`` steps of dynamics, no observation), which :mod:`abm.simulation` uses
between the reports its reporters ask for. The dynamics never read an observation: what they need (the tumour
count, the point that biases migration) the model computes itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from abm import cell_blocks, mesa_face
from abm import checkpoint as _checkpoint
from abm.field_solver import FieldSolver
from abm.kernels import blocks as KB
from abm.kernels import cells as K
from abm.kernels import rng
from abm.kernels.exchange import fill_exchange
from abm.kernels.records import Scratch, StepKey
from abm.observables import Observer, observable_specs
from abm.params import Params
from abm.rules import cell_rules, exchange_table, exchanged_species, recruitment_rates_per_day, trafficking
from abm.scenario import Scenario
from abm.state import CELL_TYPES, initial_state
from abm.threads import StepThreads


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
        kernels; with ``rng`` (or neither) that key is drawn from the generator and kept in ``model.seed``. The
        scenario's ``run.seed`` is used by :func:`abm.run`, not here: ``Model(sc, seed=sc.run.seed)`` reproduces it.
    sets:
        ``key.path=value`` override strings applied on top.
    **overrides:
        Typed overrides as keyword arguments, ``__`` standing for ``.`` (``ctl__kill_prob=0.1``), which is how
        ``mesa.batch_run`` passes parameters.
    """

    def __init__(
        self,
        scenario: Any = None,
        *,
        params: Params | None = None,
        seed: int | None = None,
        rng: Any = None,
        sets: Iterable[str] | None = None,
        **overrides: Any,
    ) -> None:
        if scenario is None:
            scenario = Scenario.default()
        elif isinstance(scenario, str | Path):
            scenario = Scenario.load(scenario)
        scenario = scenario.with_overrides(list(sets or []), values=overrides)
        if params is not None:
            scenario = scenario.with_params(params)
        self.scenario = scenario
        self.params: Params = scenario.params
        mesa_face.mesa_init(self, seed, rng)  # Mesa's rule: seed or rng, not both
        # neither given: a fresh key drawn from Mesa's (freshly seeded) generator and kept in self.seed, as Mesa
        # models do, so mesa.batch_run's iterations are independent replicates; abm.run passes run.seed itself
        self.seed = _resolve_seed(seed, self.rng)

        p = self.params
        self.state = initial_state(p, self.seed)
        lat = self.state.lattice
        self.geometry = lat.geometry()
        self.rules = cell_rules(p)
        self.exchange = exchange_table(p)
        self._exchanged = exchanged_species(self.exchange)
        self.solver = FieldSolver(
            lat.shape_xyz,
            lat.spacing_um,
            p.time.dt_min,
            [p.species[s].diffusion_um2_per_min for s in p.species_names],
            [p.species[s].decay_per_min for s in p.species_names],
            periodic=lat.periodic,
            substeps=p.time.field_substeps,
            coupled=[p.species[s].scheme == "coupled" for s in p.species_names],
            rtol=p.time.field_rtol,
        )
        self.species = p.species_names
        self._permeability = np.array([p.species[s].vessel_permeability_per_min for s in self.species])
        self.plasma = np.zeros(len(self.species))  # set directly when no therapy drives it
        self.therapy = scenario.make_therapy()
        self.toxicity = 0.0
        self.doses_given = self.doses_held = 0  # this step's
        self.events: list[dict[str, Any]] = []
        self.step_index = 0
        self.dt_min = p.time.dt_min
        n_offs = self.geometry.offsets.shape[0]
        self.scratch = Scratch(
            order=np.zeros(self.state.cells.ctype.shape[0], dtype=np.int64),
            free=np.zeros(n_offs, dtype=np.int64),
            tumour=np.zeros(n_offs, dtype=np.int64),
            weight=np.zeros(n_offs, dtype=np.float64),
            vessel_weight=np.zeros(max(1, self.state.vessels.shape[0]), dtype=np.float64),
        )
        self.counters = K.empty_counters()
        self._blocks = None  # the blocks cell schedule's layout and buffers (abm/cell_blocks.py)
        if p.time.cell_schedule == "blocks":
            layout = cell_blocks.block_layout(lat.shape_xyz, lat.periodic, cell_blocks.reach_sites(self.rules))
            bs = KB.empty_scratch(cell_blocks.n_blocks(layout), self.state.cells.ctype.shape[0], n_offs)
            self._blocks = (layout, bs)
        self._threads = StepThreads()  # the thread count for these steps, measured (abm/threads.py)
        self.n_tumour = K.count_of(self.state.cells, K.TUMOUR)  # at the start of the current step (CTL priming)
        self.observer = Observer(p, lat)
        self.observable_specs = observable_specs(p)
        self.observable_units = {o.name: o.units for o in self.observable_specs}
        self._observed: tuple[int, dict[str, float]] | None = None
        self.n_steps = self.steps_for_days(scenario.run.days)  # the scenario's length: Mesa's `running` ends there
        self.datacollector = mesa_face.headline_datacollector()
        self.datacollector.collect(self)
        self.running = self.n_steps > 0

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> Model:
        """The model of a checkpoint (:mod:`abm.checkpoint`): built from the scenario and seed the checkpoint
        records, then every state attribute restored, so that advancing it continues the checkpointed run bit for
        bit. (:func:`abm.simulation.resume` continues a run with its reporters and output file.)"""
        ck = _checkpoint.read(path)
        model = cls(ck.scenario(), seed=ck.seed)
        ck.restore_model(model)
        return model

    # ------------------------------------------------------------------------------------------- the step
    def advance(self, n: int = 1) -> None:
        """Advance the dynamics by ``n`` steps of ``dt_min`` (no observation, no data collection)."""
        for _ in range(int(n)):
            self._threads.before_step()
            self._step_dynamics()
            self._threads.after_step()
        self._threads.restore()
        self.steps = self.step_index  # Mesa's step counter follows the engine's

    def step(self) -> None:
        """One agent step of ``dt_min`` (Mesa's ``step``): the dynamics, then the DataCollector collects; ``running``
        turns False at the scenario's ``run.days``, so ``run_model()`` returns there."""
        self.advance(1)
        self.datacollector.collect(self)
        self.running = self.step_index < self.n_steps

    def _step_dynamics(self) -> None:
        """docs/model.md, scheduling: therapy, fields, cells, recruitment."""
        s = self.state
        t = s.tissue
        key = StepKey(np.uint64(self.seed), np.int64(self.step_index))
        self.counters[:] = 0
        self.doses_given = self.doses_held = 0
        self.n_tumour = K.count_of(s.cells, K.TUMOUR)
        # 1. therapy: plasma levels over this step, doses (or holds), adoptive transfer
        lak_dose = 0.0
        if self.therapy is not None:
            ts = self.therapy.advance(self.step_index)
            self.plasma[:] = ts.plasma
            self.toxicity = ts.toxicity
            self.doses_given, self.doses_held = ts.doses_given, ts.doses_held
            self.events.extend(ts.events)
            lak_dose = ts.lak_cells
        tr = self.trafficking()
        if lak_dose > 0:
            n = self.lesion_share(lak_dose, key)
            K.transfer_lak(t, self.geometry, n, tr, key, self.counters, self.scratch)
        # 2. fields: cells set uptake and secretion, then exchange with plasma, decay, diffusion
        for row in self._exchanged:
            s.uptake[row] = 0.0
            s.source[row] = 0.0
        fill_exchange(t, self.exchange)
        self.solver.step(s.conc, s.uptake, s.source, s.vessels, self._permeability, self.plasma)
        # 3. cells, in a seeded random order
        if self._blocks is None:
            K.step_cells(t, self.geometry, self.rules, key, self.counters, self.scratch)
        else:
            KB.step_cells_blocks(t, self.geometry, self.rules, key, self.counters, self.scratch, *self._blocks)
        # 4. recruitment at vessels, where the lesion's chemokine is
        K.recruit(t, self.geometry, tr, key, self.counters, self.scratch)
        K.compact(s.cells, s.occupancy)
        self.step_index += 1

    def recruitment_rates_per_day(self) -> tuple[float, float]:
        """Per-vessel CTL and NK entry rates (1/day) at saturating local chemokine, from the whole-patient drivers
        (docs/model.md, recruitment): tumour antigen primes CTL (the tumour count at the start of the step),
        plasma IL-2 expands both pools, plasma IFN-alpha helps CTL priming. The local factor c / (c + K_rec) at each
        vessel is applied in the kernel."""
        sp = self.rules.species
        return recruitment_rates_per_day(self.params, self.n_tumour, self.plasma[sp.il2], self.plasma[sp.ifna])

    def trafficking(self):
        """This step's :data:`~abm.kernels.records.Trafficking` record."""
        return trafficking(self.params, *self.recruitment_rates_per_day())

    def lesion_share(self, dose_cells: float, key) -> int:
        """LAK cells of an infusion of ``dose_cells`` that reach this lesion: dose x lak.homing_fraction x (lesion
        tumour cells / patient.tumour_burden_cells), rounded up or down at random (keyed by the step)."""
        p = self.params
        x = dose_cells * p.lak.homing_fraction * self.n_tumour / p.patient.tumour_burden_cells
        whole = int(x)
        frac = x - whole
        return whole + int(frac > 0 and rng.uniform(key.seed, key.step, 0, rng.TRANSFER_ROUND) < frac)

    # ---------------------------------------------------------------------------------------- observation
    def observe(self) -> dict[str, float]:
        """Every observable at the current step (computed once per step, on demand)."""
        if self._observed is None or self._observed[0] != self.step_index:
            values = self.observer.measure(
                self.state, self.counters, self.plasma, self.toxicity, self.doses_given, self.doses_held
            )
            self._observed = (self.step_index, values)
        return self._observed[1]

    @property
    def latest(self) -> dict[str, float]:
        """The observables at the current step (see :meth:`observe`)."""
        return self.observe()

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
        """Step (Mesa's :meth:`step`, collecting data) for ``days`` simulated days; see :func:`abm.run` for files,
        progress and the run summary."""
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
