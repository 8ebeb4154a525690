"""The model of docs/model.md written the way a Mesa modeller would write it: one Python object per cell.

This is the *reference* implementation. It is slow on purpose-free grounds (plain Python, one object per cell)
and exists for two reasons: a newcomer can read the rules here, and the tests check that the fast array/Numba
model (:class:`abm.Model`) and this one produce the same distributions of outcomes (tests/test_reference.py).

What is shared with :class:`abm.Model` and what is not:

- shared: the parameter tree (:class:`abm.params.Params`) and its per-step quantities (:func:`abm.rules.cell_rules`
  and the exchange tables of :func:`abm.rules.exchange_table`), the initial placement
  (:func:`abm.state.initial_state`: tumour disc, vessels, initial immune cells), the field solver
  (:class:`abm.field_solver.FieldSolver`) and the therapy (plasma PK, dosing, toxicity, LAK transfers:
  :class:`abm.therapy.Therapy`). The comparison is about the *cell rules*.
- not shared: the cell rules themselves, written again below as agent methods, and the random numbers, which
  come from Mesa's own generator (``model.random``, seeded by ``seed``) instead of the counter-based kernel draws.

One step (docs/model.md, scheduling), exactly as in :meth:`abm.Model.step`:

1. therapy: plasma levels over the step, doses, adoptive LAK transfer (the lesion's share of the infused dose)
   next to vessels chosen with weight their local chemokine signal;
2. fields: each cell sets its uptake (Michaelis-Menten, linearised) and secretion of every species its type
   exchanges (the species' tables), then the solver advances exchange with plasma, decay, uptake, secretion and
   diffusion;
3. cells: every cell alive at the start of the step acts once, in a random order; a cell killed before its turn
   does not act; newborn cells wait for the next step; when two cells want one site, the earlier one gets it;
4. recruitment: each vessel (in site order) lets in a CTL, then an NK cell, at a random free neighbour, with a
   probability set by the whole-patient drivers and the local chemokine at the vessel;
5. observe: counts, tumour area, and this step's event counters.

2D only.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
from mesa import Model
from mesa.discrete_space import CellAgent, FixedAgent, OrthogonalMooreGrid

from abm.cell_blocks import block_layout, reach_sites
from abm.field_solver import FieldSolver
from abm.kernels.cells import COUNTER_NAMES
from abm.kernels.cells import CTL as CTL_CODE
from abm.kernels.cells import LAK as LAK_CODE
from abm.kernels.cells import NK as NK_CODE
from abm.kernels.cells import TUMOUR as TUMOUR_CODE
from abm.kernels.exchange import GATE_ALWAYS
from abm.rules import cell_rules, exchange_table, exchanged_species
from abm.scenario import Scenario
from abm.state import initial_state


def kill_per_step(p_per_interval: float, attempts: float) -> float:
    """The per-step kill probability from the probability per contact interval (``attempts`` = dt / interval)."""
    return p_per_interval if attempts == 1.0 else 1.0 - (1.0 - p_per_interval) ** attempts


class Vessel(FixedAgent):
    """A blood-vessel site: never holds a cell; cells enter next to it; the solver exchanges plasma there."""

    def __init__(self, model: ReferenceModel, cell) -> None:
        super().__init__(model)
        self.cell = cell

    @property
    def site(self) -> int:
        x, y = self.cell.coordinate
        return x + self.model.nx * y


class LatticeCell(CellAgent):
    """A biological cell on one lattice site. Subclasses implement :meth:`act` (one step of the rules)."""

    kind = "cell"
    code = 0  # the kernels' type code (a row of the exchange tables)
    kills = 0
    timer_min = 0.0

    def __init__(self, model: ReferenceModel, cell) -> None:
        super().__init__(model)
        self.cell = cell
        self.age_min = 0.0
        self.alive = True

    def exchange(self) -> None:
        """Set this cell's uptake and secretion of every exchanged species at its site (the species' tables)."""
        m, t, s = self.model, self.model.exchange, self.site
        for j in m.exchanged:
            k = t.uptake_per_min[self.code, j]
            if k > 0.0:
                m.uptake[j, s] = k / (1.0 + float(m.conc[j, s]) / t.uptake_saturation[self.code, j])
            q = t.secretion_per_min[self.code, j]
            activated = self.timer_min > 0.0 and self.kills < t.max_kills[self.code]
            if q > 0.0 and (t.gate[self.code, j] == GATE_ALWAYS or activated):
                m.source[j, s] = q

    # ------------------------------------------------------------------ what a cell senses
    @property
    def site(self) -> int:
        x, y = self.cell.coordinate
        return x + self.model.nx * y

    def concentration(self, species: int) -> float:
        return float(self.model.conc[species, self.site])

    def surroundings(self) -> tuple[list, list[TumourCell]]:
        """Empty neighbouring sites (vessels are not empty) and the tumour cells next to this cell."""
        free, tumour = [], []
        for c in self.cell.neighborhood:
            if c.is_empty:
                free.append(c)
            else:
                for a in c.agents:
                    if isinstance(a, TumourCell):
                        tumour.append(a)
        return free, tumour

    # ------------------------------------------------------------------ what a cell does
    def chance(self, p: float) -> bool:
        return self.model.random.random() < p

    def die(self, cause: str) -> None:
        self.model.counters[cause] += 1
        self.alive = False
        self.remove()

    def move(self, n_moves: float, chi: float, kd: float) -> None:
        """Up to ``n_moves`` steps into empty neighbouring sites (the fractional part is a chance of one more),
        each chosen with weight exp(chi (rho' - rho)), rho = c / (c + kd) the chemokine receptor occupancy at the
        candidate site and here (chemotaxis; unbiased without a chemokine); stops next to a tumour cell or when
        boxed in."""
        whole = int(n_moves)
        n = whole + (1 if self.chance(n_moves - whole) else 0)
        chem = self.model.sp.chemokine
        biased = chem >= 0 and chi > 0.0
        nx = self.model.nx
        for _ in range(n):
            free, tumour = self.surroundings()
            if tumour or not free:
                return
            weights = [1.0] * len(free)
            if biased:
                c0 = float(self.model.conc[chem, self.site])
                rho0 = c0 / (c0 + kd)
                for k, c in enumerate(free):
                    cs = float(self.model.conc[chem, c.coordinate[0] + nx * c.coordinate[1]])
                    weights[k] = math.exp(chi * (cs / (cs + kd) - rho0))
            self.cell = self.model.random.choices(free, weights=weights)[0]

    def kill(self, target: TumourCell, counter: str) -> None:
        target.die(counter)
        self.kills += 1


class TumourCell(LatticeCell):
    kind = "tumour"
    code = TUMOUR_CODE

    def __init__(self, model, cell, mhc: float, sensitisation: float = 0.0) -> None:
        super().__init__(model, cell)
        self.mhc = mhc
        self.sensitisation = sensitisation  # to NK/LAK lysis, built up by IFN-alpha

    def act(self) -> None:
        r = self.model.rules
        ifn = self.concentration(self.model.sp.ifna)
        self.age_min += r.dt_min
        if r.tumour.death_prob_per_step > 0.0 and self.chance(r.tumour.death_prob_per_step):
            return self.die("deaths_tumour_spontaneous")
        free, _ = self.surroundings()
        cycling = bool(free)  # contact inhibition: only a cell with room to divide is in cycle
        drug = self.concentration(self.model.sp.drug)
        if cycling and drug > 0.0 and self.chance(-math.expm1(-r.tumour.drug_kill_per_uM_per_min * drug * r.dt_min)):
            return self.die("kills_drug")
        # MHC-I relaxes toward a level raised by IFN-alpha
        target = r.tumour.mhc_baseline + (1.0 - r.tumour.mhc_baseline) * ifn / (ifn + r.tumour.mhc_ifn_half_pM)
        self.mhc += (target - self.mhc) * r.tumour.mhc_relax_per_step
        target_s = ifn / (ifn + r.tumour.ifn_sensitisation_half_pM)
        self.sensitisation += (target_s - self.sensitisation) * r.tumour.sensitisation_relax_per_step
        # division into a random empty neighbour, slowed by IFN-alpha
        if self.chance(r.tumour.division_prob_per_step / (1.0 + ifn / r.tumour.ifn_prolif_half_pM)):
            if free:
                TumourCell(self.model, self.model.random.choice(free), self.mhc, self.sensitisation)
                self.model.counters["divisions_tumour"] += 1
            else:
                self.model.counters["divisions_tumour_blocked"] += 1


class CTL(LatticeCell):
    kind = "ctl"
    code = CTL_CODE

    def __init__(self, model, cell) -> None:
        super().__init__(model, cell)
        self.kills = 0
        self.timer_min = 0.0  # engaged / IL-2 secretion window left

    def act(self) -> None:
        r = self.model.rules
        il2 = self.concentration(self.model.sp.il2)
        ifn = self.concentration(self.model.sp.ifna)  # sensed here, before any move (IFN-alpha lowers CD25)
        self.age_min += r.dt_min
        if self.chance(r.ctl.death_prob_per_step):
            return self.die("deaths_ctl_natural")
        exhausted = self.kills >= r.ctl.max_kills
        drug = self.concentration(self.model.sp.drug)
        cycling = not exhausted and (self.timer_min > 0.0 or not r.ctl.prolif_requires_activation)
        if drug > 0.0 and cycling and self.chance(-math.expm1(-r.ctl.drug_kill_per_uM_per_min * drug * r.dt_min)):
            return self.die("deaths_ctl_drug")  # cycling lymphocytes are killed by the cytotoxic drug
        free, tumour = self.surroundings()
        if tumour and not exhausted:
            # engaged: secretes IL-2 for a window; may die of activation-induced cell death under high IL-2
            self.model.counters["ctl_engaged"] += 1
            self.timer_min = r.ctl.secretion_window_min
            if self.chance(-math.expm1(-r.ctl.aicd_rate_per_min * il2 / (il2 + r.ctl.aicd_half_pM) * r.dt_min)):
                return self.die("deaths_ctl_aicd")
            target = self.model.random.choice(tumour)
            # recognition needs MHC-I
            if self.chance(kill_per_step(r.ctl.kill_prob * target.mhc, r.ctl.kill_attempts_per_step)):
                self.kill(target, "kills_ctl")
                if self.kills >= r.ctl.max_kills:
                    self.model.counters["ctl_exhausted"] += 1
                    self.timer_min = 0.0
        else:
            self.timer_min = max(0.0, self.timer_min - r.dt_min)
            if not tumour:
                self.move(r.ctl.moves_per_step, r.ctl.chemotaxis_sensitivity, r.ctl.chemokine_receptor_kd_pM)
        # only activated CTL (engaged within their secretion window) carry the high-affinity IL-2 receptor
        activated = self.timer_min > 0.0 or not r.ctl.prolif_requires_activation
        k_il2 = r.ctl.il2_prolif_half_pM * (1.0 + r.ctl.ifn_cd25_suppression * ifn / (ifn + r.ctl.ifn_cd25_half_pM))
        if not exhausted and activated and self.chance(r.ctl.prolif_prob_max_per_step * il2 / (il2 + k_il2)):
            free, _ = self.surroundings()
            if free:
                CTL(self.model, self.model.random.choice(free))
                self.model.counters["divisions_ctl"] += 1


class NKCell(LatticeCell):
    kind = "nk"
    code = NK_CODE

    def __init__(self, model, cell) -> None:
        super().__init__(model, cell)
        self.kills = 0
        self.exposure_min = 0.0  # cumulative time above the LAK threshold

    def act(self) -> None:
        r = self.model.rules
        il2, ifn = self.concentration(self.model.sp.il2), self.concentration(self.model.sp.ifna)
        self.age_min += r.dt_min
        if self.chance(r.nk.death_prob_per_step):
            return self.die("deaths_nk_natural")
        if il2 > r.nk.lak_threshold_pM:
            self.exposure_min += r.dt_min / (
                1.0 + r.nk.ifn_lak_suppression * ifn / (ifn + r.nk.ifn_lak_suppression_half_pM)
            )
            if self.exposure_min >= r.nk.lak_exposure_min:  # sustained high IL-2: becomes a LAK cell
                site = self.cell
                self.alive = False
                self.remove()
                LAKCell(self.model, site)
                self.model.counters["lak_conversions"] += 1
                return
        free, tumour = self.surroundings()
        if tumour:
            if self.kills < r.nk.max_kills:
                a_il2 = il2 / (il2 + r.nk.il2_activation_half_pM)
                a_ifn = ifn / (ifn + r.nk.ifn_activation_half_pM)
                activation = r.nk.baseline_activation + (1.0 - r.nk.baseline_activation) * (
                    1.0 - (1.0 - a_il2) * (1.0 - a_ifn)
                )
                target = self.model.random.choice(tumour)
                p = min(
                    1.0,
                    r.nk.kill_prob
                    * (1.0 - target.mhc)
                    * activation
                    * (1.0 + r.nk.ifn_lysis_gain * target.sensitisation),
                )
                p_kill = kill_per_step(p, r.nk.kill_attempts_per_step)
                if self.chance(p_kill):  # missing self
                    self.kill(target, "kills_nk")
        else:
            self.move(r.nk.moves_per_step, r.nk.chemotaxis_sensitivity, r.nk.chemokine_receptor_kd_pM)


class LAKCell(LatticeCell):
    kind = "lak"
    code = LAK_CODE

    def __init__(self, model, cell) -> None:
        super().__init__(model, cell)
        self.kills = 0

    def act(self) -> None:
        r = self.model.rules
        il2 = self.concentration(self.model.sp.il2)
        self.age_min += r.dt_min
        if self.chance(r.lak.death_prob_per_step):
            return self.die("deaths_lak_natural")
        if il2 < r.lak.withdrawal_threshold_pM and self.chance(r.lak.withdrawal_death_prob_per_step):
            return self.die("deaths_lak_withdrawal")
        free, tumour = self.surroundings()
        if tumour:
            if self.kills < r.lak.max_kills:
                target = self.model.random.choice(tumour)
                p = min(1.0, r.lak.kill_prob * (1.0 + r.lak.ifn_lysis_gain * target.sensitisation))
                if self.chance(kill_per_step(p, r.lak.kill_attempts_per_step)):  # MHC-unrestricted
                    self.kill(target, "kills_lak")
        else:
            self.move(r.lak.moves_per_step, r.lak.chemotaxis_sensitivity, r.lak.chemokine_receptor_kd_pM)


IMMUNE = (CTL, NKCell, LAKCell)
_BY_CODE = {2: CTL, 3: NKCell, 4: LAKCell}  # abm.kernels.cells type codes of the initial immune cells


class ReferenceModel(Model):
    """The tumour-immune model as plain Mesa agents (2D).

    Parameters
    ----------
    scenario:
        A :class:`abm.scenario.Scenario`, a shipped scenario name or a TOML path (None: defaults, untreated).
    seed:
        Seeds Mesa's generator (all rule draws) and the initial placement.
    sets:
        ``key.path=value`` overrides, as for :class:`abm.Model`.
    """

    def __init__(self, scenario: Any = None, *, seed: int = 0, sets: list[str] | None = None) -> None:
        super().__init__(seed=seed)
        if scenario is None:
            scenario = Scenario.default()
        elif not isinstance(scenario, Scenario):
            scenario = Scenario.load(scenario)
        if sets:
            scenario = scenario.with_overrides(list(sets))
        p = scenario.params
        if p.lattice.nz != 1:
            raise ValueError(f"lattice.nz = {p.lattice.nz}: the Mesa reference model is 2D only (nz = 1)")
        self.scenario, self.params, self.rules = scenario, p, cell_rules(p)
        self.sp = self.rules.species  # which concentration row holds which sensed species
        self.exchange = exchange_table(p)
        self.exchanged = exchanged_species(self.exchange)
        self.dt_min = p.time.dt_min
        self.nx, self.ny = p.lattice.nx, p.lattice.ny
        self.site_area_mm2 = (p.lattice.spacing_um * 1e-3) ** 2
        periodic = p.lattice.boundary == "periodic"
        self.grid = OrthogonalMooreGrid((self.nx, self.ny), torus=periodic, capacity=1, random=self.random)

        # initial placement: the same function as abm.Model (tumour disc, vessels, initial immune cells)
        init = initial_state(p, seed)
        self.vessel_sites = init.vessels
        self.vessels = [Vessel(self, self._cell_at(s)) for s in init.vessels]
        c = init.cells
        for i in range(int(c.n[0])):
            where = self._cell_at(int(c.site[i]))
            if c.ctype[i] == 1:
                TumourCell(self, where, float(c.mhc[i]), float(c.sensitisation[i]))
            else:
                _BY_CODE[int(c.ctype[i])](self, where)

        # fields (numpy arrays, flat index x + nx*y) and the same solver as abm.Model
        self.species = p.species_names
        n_sites = self.nx * self.ny
        self.conc = np.zeros((len(self.species), n_sites))
        self.uptake = np.zeros((len(self.species), n_sites), dtype=np.float32)
        self.source = np.zeros((len(self.species), n_sites), dtype=np.float32)
        self.solver = FieldSolver(
            (self.nx, self.ny, 1),
            p.lattice.spacing_um,
            self.dt_min,
            [p.species[s].diffusion_um2_per_min for s in self.species],
            [p.species[s].decay_per_min for s in self.species],
            periodic=periodic,
            substeps=p.time.field_substeps,
            coupled=[p.species[s].scheme == "coupled" for s in self.species],
            rtol=p.time.field_rtol,
        )
        self.permeability = np.array([p.species[s].vessel_permeability_per_min for s in self.species])
        self.plasma = np.zeros(len(self.species))
        self.therapy = scenario.make_therapy()
        # the blocks cell schedule (docs/model.md, scheduling): which block each site is in, and its colour
        self.site_block = self.block_colour = None
        if p.time.cell_schedule == "blocks":
            lay = block_layout((self.nx, self.ny, 1), periodic, reach_sites(self.rules))
            x = np.arange(n_sites) % self.nx
            y = np.arange(n_sites) // self.nx
            block = lay.axis_x[x] + int(lay.nbx) * lay.axis_y[y]
            self.site_block = block.tolist()
            nb = int(block.max()) + 1
            self.block_colour = [(b % int(lay.nbx)) % 2 + 2 * ((b // int(lay.nbx)) % 2) for b in range(nb)]
        self.step_index = 0
        self.counters: Counter = Counter()
        self.latest = self.observe()

    # ------------------------------------------------------------------ helpers
    def _cell_at(self, site: int):
        return self.grid[(site % self.nx, site // self.nx)]

    def cells_of(self, kind: type) -> list:
        return list(self.agents_by_type.get(kind, []))

    def free_next_to(self, vessel: Vessel) -> list:
        return [c for c in vessel.cell.neighborhood if c.is_empty]

    # ------------------------------------------------------------------ the step
    def step(self) -> None:
        self.counters = Counter()
        n_tumour_at_start = self.latest["n_tumour"]
        # 1. therapy
        lak_dose = 0.0
        if self.therapy is not None:
            ts = self.therapy.advance(self.step_index)
            self.plasma[:] = ts.plasma
            lak_dose = ts.lak_cells
        ctl_rate, nk_rate = self.recruitment_rates_per_day(n_tumour_at_start)
        if lak_dose > 0:
            for _ in range(self.lesion_share(lak_dose, n_tumour_at_start)):
                self.transfer_one_lak()
        # 2. fields: cells set uptake and secretion at their sites (the species' exchange tables), then the solver
        for j in self.exchanged:
            self.uptake[j] = 0.0
            self.source[j] = 0.0
        for kind in (TumourCell, *IMMUNE):
            for a in self.cells_of(kind):
                a.exchange()
        self.solver.step(self.conc, self.uptake, self.source, self.vessel_sites, self.permeability, self.plasma)
        # 3. cells, in random order; newborns wait; the dead do not act
        order = [a for a in self.agents if isinstance(a, LatticeCell)]
        self.random.shuffle(order)
        if self.site_block is not None:
            order = self.blocks_order(order)
        for a in order:
            if a.alive:
                a.act()
        # 4. recruitment at vessels, where the lesion's chemokine is (rates from the start of the step)
        dt_day = self.dt_min / 1440.0
        for v in self.vessels:
            g = self.local_signal(v)
            for kind, rate, counter in ((CTL, ctl_rate, "recruited_ctl"), (NKCell, nk_rate, "recruited_nk")):
                if rate > 0.0 and g > 0.0 and self.random.random() < -math.expm1(-rate * g * dt_day):
                    free = self.free_next_to(v)
                    if free:
                        kind(self, self.random.choice(free))
                        self.counters[counter] += 1
        # 5. observe
        self.step_index += 1
        self.latest = self.observe()

    def blocks_order(self, order: list) -> list:
        """The blocks schedule's visit: the colours in a random order, a colour's blocks in block order, a block's
        cells in the order given (each cell in the block it starts the step in)."""
        colours = list(range(8))
        self.random.shuffle(colours)
        by_block: dict[int, list] = {}
        for a in order:
            by_block.setdefault(self.site_block[a.site], []).append(a)
        out = []
        for col in colours:
            for b in sorted(by_block):
                if self.block_colour[b] == col:
                    out.extend(by_block[b])
        return out

    def local_signal(self, vessel: Vessel) -> float:
        """Extravasation drive at a vessel: c / (c + K_rec) of the chemokine there (1 without a chemokine)."""
        if self.sp.chemokine < 0:
            return 1.0
        c = float(self.conc[self.sp.chemokine, vessel.site])
        return c / (c + self.params.vessels.recruitment_half_pM)

    def transfer_one_lak(self) -> None:
        """Adoptive transfer of one LAK cell next to a vessel chosen with weight its local signal (16 tries)."""
        weights = [self.local_signal(v) for v in self.vessels]
        for _ in range(16):
            if not self.vessels:
                break
            if sum(weights) > 0:
                v = self.random.choices(self.vessels, weights=weights)[0]
            else:
                v = self.random.choice(self.vessels)
            free = self.free_next_to(v)
            if free:
                LAKCell(self, self.random.choice(free))
                self.counters["transferred_lak"] += 1
                return
        self.counters["transfer_failed"] += 1

    def lesion_share(self, dose_cells: float, n_t: float) -> int:
        """LAK cells of an infusion reaching this lesion (as abm.Model.lesion_share)."""
        p = self.params
        x = dose_cells * p.lak.homing_fraction * n_t / p.patient.tumour_burden_cells
        whole = int(x)
        return whole + int(self.random.random() < x - whole)

    def recruitment_rates_per_day(self, n_t: float) -> tuple[float, float]:
        """Per-vessel CTL and NK entry rates at saturating local signal (as abm.Model.recruitment_rates_per_day)."""
        p, cp, fp = self.params, float(self.plasma[self.sp.il2]), float(self.plasma[self.sp.ifna])
        ctl = (
            p.ctl.recruit_per_vessel_per_day
            * p.patient.antigenicity
            * n_t
            / (n_t + p.ctl.recruit_tumour_half_cells)
            * (1.0 + p.ctl.il2_recruit_boost * cp / (cp + p.ctl.il2_recruit_half_pM))
            * (1.0 + p.ctl.ifn_priming_boost * fp / (fp + p.ctl.ifn_priming_half_pM))
        )
        nk = (
            p.nk.recruit_per_vessel_per_day
            * p.patient.nk_recruitment_scale
            * (1.0 + p.nk.il2_recruit_boost * cp / (cp + p.nk.il2_recruit_half_pM))
        )
        return ctl, nk

    def observe(self) -> dict[str, float]:
        n = {
            k: len(self.agents_by_type.get(cls, []))
            for k, cls in (("tumour", TumourCell), ("ctl", CTL), ("nk", NKCell), ("lak", LAKCell))
        }
        out = {f"n_{k}": float(v) for k, v in n.items()}
        out["tumour_area_mm2"] = n["tumour"] * self.site_area_mm2
        for name in COUNTER_NAMES:
            out[name] = float(self.counters.get(name, 0))
        out["il2_mean"] = float(self.conc[self.sp.il2].mean())
        return out

    def n_agents(self) -> int:
        return sum(len(self.agents_by_type.get(k, [])) for k in (TumourCell, *IMMUNE))


def run_reference(
    scenario: Any = None,
    *,
    days: float,
    seed: int = 0,
    sets: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Run the reference model for ``days`` and return every observable per step (step 0 = initial state)."""
    m = ReferenceModel(scenario, seed=seed, sets=sets)
    n_steps = int(round(days * 1440.0 / m.dt_min))
    rows = [m.latest]
    for _ in range(n_steps):
        m.step()
        rows.append(m.latest)
    out = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    out["step"] = np.arange(n_steps + 1)
    return out
