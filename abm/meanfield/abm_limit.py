"""The well-mixed (mean-field) limit of abm's cell rules: ODEs for the counts of each cell type, the mean MHC-I of
the tumour cells, their mean IFN-alpha sensitisation to NK/LAK lysis and the mean concentration of every species,
built from the same parameter tree and through the same conversions (:mod:`abm.rules`) as the lattice model. The
equations, the closure and where it applies are in docs/meanfield.md; in short:

* positions are uncorrelated: a given Moore neighbour of any site holds a tumour cell with probability
  rho = N_T / N_sites and is occupied with probability phi = (cells + vessels) / N_sites;
* an effector (CTL, NK, LAK) is *free* or *bound*. A free one lands, after each of its nu = v / h moves per
  minute, in a fresh neighbourhood of z sites, so it binds at rate eps = nu (1 - (1 - rho)^z); a bound one kills
  at hazard h = -ln(1 - p) / tau (p the kill probability per contact interval tau, docs/model.md 7.10) and is free
  again after the kill. At quasi-steady state the bound fraction is b = eps / (eps + h) and each active effector
  kills at rate h b = h eps / (eps + h): Michaelis–Menten in the tumour density, the form Kirschner & Panetta
  (1998) postulated, here derived with its constants from the rules;
* each effector type is split into classes by kills made (0 .. max_kills), so exhaustion after max_kills kills is
  exact in the mean-field, not a rate;
* a division, a drug kill of a cycling cell and an entry at a vessel need a free neighbour: probability
  1 - phi^z;
* fields are uniform: a cell senses the mean concentration (no autocrine or paracrine hot spots);
* the IFN-alpha mechanisms of docs/model.md 7.11 act on the means: NK/LAK kill x (1 + g_S S) with S the mean
  sensitisation (relaxing toward F / (F + K_S) with tau_S), the CTL IL-2 half-proliferation constant x
  (1 + q_CD25 F / (F + K)), LAK conversion slowed by 1 + q_LAK F / (F + K), IFN-induced chemokine secretion (the
  exchange table's induced term), IFN help to priming (plasma, in the recruitment rates); the drug kills the
  activated (cycling) CTL at k_drug,CTL C.

Rates come from :func:`abm.rules.cell_rules` (per-step probabilities turned back into rates: rate =
-ln(1 - p_step) / dt), :func:`abm.rules.exchange_table` (uptake and secretion) and
:func:`abm.rules.recruitment_rates_per_day`; no biological number is written here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_ivp

from abm.kernels import cells as K
from abm.kernels.exchange import GATE_ACTIVATED
from abm.lattice import Lattice
from abm.params import Params
from abm.rules import MIN_PER_DAY, cell_rules, exchange_table, recruitment_rates_per_day

MAX_KILL_CLASSES = 1000
"""Above this many kills before exhaustion, a type is tracked as one class (exhaustion ignored)."""


def _rate(prob_per_step: float, dt: float) -> float:
    """The Poisson rate (1/min) whose probability of an event in ``dt`` is ``prob_per_step``."""
    return float(-np.log1p(-min(prob_per_step, 1.0 - 1e-15)) / dt)


def _hazard(p_per_interval, attempts_per_step: float, dt: float):
    """Kill hazard of a conjugate (1/min) from the probability per contact interval: -ln(1 - p) / interval."""
    p = np.minimum(p_per_interval, 1.0 - 1e-15)
    return -np.log1p(-p) * attempts_per_step / dt


@dataclass(frozen=True)
class Layout:
    """Where each variable sits in the state vector."""

    n_ctl: int  # kill classes of CTL (the last is exhausted when exhaustion is tracked)
    n_nk: int
    n_lak: int
    n_species: int

    @property
    def tumour(self) -> int:
        return 0

    @property
    def mhc(self) -> int:
        return 1

    @property
    def ctl(self) -> slice:
        return slice(2, 2 + self.n_ctl)

    @property
    def nk(self) -> slice:
        return slice(self.ctl.stop, self.ctl.stop + self.n_nk)

    @property
    def lak(self) -> slice:
        return slice(self.nk.stop, self.nk.stop + self.n_lak)

    @property
    def conc(self) -> slice:
        return slice(self.lak.stop, self.lak.stop + self.n_species)

    @property
    def sens(self) -> int:
        """Mean IFN-alpha sensitisation S of the tumour cells (docs/model.md 7.11)."""
        return self.conc.stop

    @property
    def size(self) -> int:
        return self.sens + 1


def _classes(max_kills: int) -> int:
    return max_kills + 1 if max_kills <= MAX_KILL_CLASSES else 1


@dataclass
class MeanFieldSolution:
    """A mean-field trajectory: times (day) and per-time totals."""

    t_day: np.ndarray
    y: np.ndarray  # (state, time)
    layout: Layout
    species: list[str]

    @property
    def tumour(self) -> np.ndarray:
        return self.y[self.layout.tumour]

    @property
    def mhc(self) -> np.ndarray:
        return self.y[self.layout.mhc]

    @property
    def sensitisation(self) -> np.ndarray:
        return self.y[self.layout.sens]

    @property
    def ctl(self) -> np.ndarray:
        return self.y[self.layout.ctl].sum(axis=0)

    @property
    def nk(self) -> np.ndarray:
        return self.y[self.layout.nk].sum(axis=0)

    @property
    def lak(self) -> np.ndarray:
        return self.y[self.layout.lak].sum(axis=0)

    def conc(self, species: str) -> np.ndarray:
        return self.y[self.layout.conc][self.species.index(species)]

    def at(self, day: float) -> dict[str, float]:
        """Totals interpolated at ``day``."""
        keys = ("tumour", "mhc", "sensitisation", "ctl", "nk", "lak")
        out = {k: float(np.interp(day, self.t_day, getattr(self, k))) for k in keys}
        for s in self.species:
            out[s] = float(np.interp(day, self.t_day, self.conc(s)))
        return out


class MeanField:
    """The well-mixed ODE limit of the lattice model with parameters ``p`` (module docstring, docs/meanfield.md).

    Parameters
    ----------
    p:
        The parameter tree (the same one a lattice :class:`abm.Model` takes).
    n_vessels:
        Vessel sites; default the lattice model's count, ``patient.vessel_fraction`` of the sites outside the
        initial tumour.
    plasma:
        Plasma concentration of every species (species order of ``p.species_names``), constant (array) or a
        function of time in minutes; default zero (untreated).
    """

    def __init__(
        self,
        p: Params,
        n_vessels: int | None = None,
        plasma: np.ndarray | Callable[[float], np.ndarray] | None = None,
    ) -> None:
        self.p = p
        self.rules = cell_rules(p)
        self.exchange = exchange_table(p)
        lat = Lattice.from_params(p.lattice)
        self.n_sites = float(lat.n_sites)
        self.z = int(lat.geometry().offsets.shape[0])
        self.species = list(p.species_names)
        if n_vessels is None:
            from abm.state import initial_state  # the lattice model's own initial placement and vessel count

            n_vessels = int(initial_state(p, 0).vessels.size)
        self.n_vessels = float(n_vessels)
        ns = len(self.species)
        if callable(plasma):
            self._plasma = plasma
        else:
            const = np.zeros(ns) if plasma is None else np.asarray(plasma, dtype=float)
            self._plasma = lambda t: const
        self.layout = Layout(_classes(p.ctl.max_kills), _classes(p.nk.max_kills), _classes(p.lak.max_kills), ns)
        r = self.rules
        dt = r.dt_min
        tu, ctl, nk, lak = r.tumour, r.ctl, r.nk, r.lak
        # per-minute rates, from the same per-step records the kernels read
        self.division_rate = tu.division_prob_per_step / dt  # dt / tau_div per step
        self.tumour_death_rate = _rate(tu.death_prob_per_step, dt)
        self.mhc_rate = _rate(tu.mhc_relax_per_step, dt)
        self.sensitisation_rate = _rate(tu.sensitisation_relax_per_step, dt)
        self.ctl_death_rate = _rate(ctl.death_prob_per_step, dt)
        self.nk_death_rate = _rate(nk.death_prob_per_step, dt)
        self.lak_death_rate = _rate(lak.death_prob_per_step, dt)
        self.lak_withdrawal_rate = _rate(lak.withdrawal_death_prob_per_step, dt)
        self.ctl_prolif_rate = ctl.prolif_prob_max_per_step / dt
        self.moves_per_min = {
            K.CTL: ctl.moves_per_step / dt,
            K.NK: nk.moves_per_step / dt,
            K.LAK: lak.moves_per_step / dt,
        }
        self.lak_conversion_rate = 1.0 / nk.lak_exposure_min  # closure: exponential, not a fixed cumulative delay
        self.sp = r.species
        self.decay = np.array([p.species[s].decay_per_min for s in self.species])
        self.permeability = np.array([p.species[s].vessel_permeability_per_min for s in self.species])
        self.chem = r.species.chemokine

    # ------------------------------------------------------------------------------------------ closure terms
    def binding_rate(self, kind: int, tumour: float) -> float:
        """eps: binding rate (1/min) of a free effector of ``kind``: nu (1 - (1 - rho)^z), rho = N_T / N_sites."""
        rho = min(max(tumour, 0.0) / self.n_sites, 1.0)
        return self.moves_per_min[kind] * -np.expm1(self.z * np.log1p(-rho)) if rho < 1.0 else self.moves_per_min[kind]

    def ctl_hazard(self, m: float) -> float:
        c = self.rules.ctl
        return float(_hazard(c.kill_prob * m, c.kill_attempts_per_step, self.rules.dt_min))

    def nk_activation(self, il2: float, ifn: float) -> float:
        n = self.rules.nk
        a_i = il2 / (il2 + n.il2_activation_half_pM)
        a_f = ifn / (ifn + n.ifn_activation_half_pM)
        return n.baseline_activation + (1.0 - n.baseline_activation) * (1.0 - (1.0 - a_i) * (1.0 - a_f))

    def nk_hazard(self, m: float, il2: float, ifn: float, sens: float = 0.0) -> float:
        """NK kill hazard on a target of MHC-I ``m`` and IFN-alpha sensitisation ``sens``."""
        n = self.rules.nk
        p = min(1.0, n.kill_prob * (1.0 - m) * self.nk_activation(il2, ifn) * (1.0 + n.ifn_lysis_gain * sens))
        return float(_hazard(p, n.kill_attempts_per_step, self.rules.dt_min))

    def lak_hazard(self, sens: float = 0.0) -> float:
        a = self.rules.lak
        p = min(1.0, a.kill_prob * (1.0 + a.ifn_lysis_gain * sens))
        return float(_hazard(p, a.kill_attempts_per_step, self.rules.dt_min))

    def ctl_il2_half_pM(self, ifn: float) -> float:
        """The CTL IL-2 half-proliferation constant, raised while IFN-alpha suppresses CD25 (docs/model.md 7.11)."""
        c = self.rules.ctl
        return c.il2_prolif_half_pM * (1.0 + c.ifn_cd25_suppression * ifn / (ifn + c.ifn_cd25_half_pM))

    def lak_conversion(self, il2: float, ifn: float) -> float:
        """NK -> LAK conversion rate (1/min): exposure above the IL-2 threshold accrues slower under IFN-alpha."""
        n = self.rules.nk
        if il2 <= n.lak_threshold_pM:
            return 0.0
        return self.lak_conversion_rate / (1.0 + n.ifn_lak_suppression * ifn / (ifn + n.ifn_lak_suppression_half_pM))

    # ------------------------------------------------------------------------------------------------ the ODE
    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        L = self.layout
        r = self.rules
        dy = np.zeros_like(y)
        T = max(y[L.tumour], 0.0)
        m = y[L.mhc]
        C = np.maximum(y[L.ctl], 0.0)
        N = np.maximum(y[L.nk], 0.0)
        A = np.maximum(y[L.lak], 0.0)
        c = np.maximum(y[L.conc], 0.0)
        S = y[L.sens]
        il2, ifn, drug = c[self.sp.il2], c[self.sp.ifna], c[self.sp.drug]
        occupied = min((T + C.sum() + N.sum() + A.sum() + self.n_vessels) / self.n_sites, 1.0)
        room = 1.0 - occupied**self.z  # P(at least one free Moore neighbour)

        def kills(kind, hazard, pop, n_classes, max_kills):
            """Per-class kill rates (cells/min) and the bound fraction of the active effectors."""
            eps = self.binding_rate(kind, T)
            b = eps / (eps + hazard) if eps + hazard > 0 else 0.0
            lam = hazard * b  # kills per active effector per minute
            k = np.full(pop.shape, lam) * pop
            if n_classes > 1:  # the last class has made max_kills kills: it no longer kills
                k[-1] = 0.0
            return k, b, eps

        # tumour
        k_ctl, b_ctl, eps_ctl = kills(K.CTL, self.ctl_hazard(m), C, L.n_ctl, r.ctl.max_kills)
        k_nk, _, _ = kills(K.NK, self.nk_hazard(m, il2, ifn, S), N, L.n_nk, r.nk.max_kills)
        k_lak, _, _ = kills(K.LAK, self.lak_hazard(S), A, L.n_lak, r.lak.max_kills)
        tu = r.tumour
        div = self.division_rate / (1.0 + ifn / tu.ifn_prolif_half_pM) * room
        drug_kill = tu.drug_kill_per_uM_per_min * drug * room
        dy[L.tumour] = (div - drug_kill - self.tumour_death_rate) * T - k_ctl.sum() - k_nk.sum() - k_lak.sum()
        m_target = tu.mhc_baseline + (1.0 - tu.mhc_baseline) * ifn / (ifn + tu.mhc_ifn_half_pM)
        dy[L.mhc] = self.mhc_rate * (m_target - m)
        dy[L.sens] = self.sensitisation_rate * (ifn / (ifn + tu.ifn_sensitisation_half_pM) - S)

        # recruitment at vessels (whole-patient drivers as in the lattice model, local chemokine signal mean-field)
        plasma = np.asarray(self._plasma(t), dtype=float)
        ctl_day, nk_day = recruitment_rates_per_day(self.p, T, plasma[self.sp.il2], plasma[self.sp.ifna])
        g = 1.0 if self.chem < 0 else c[self.chem] / (c[self.chem] + self.p.vessels.recruitment_half_pM)
        entry = self.n_vessels * g * room / MIN_PER_DAY

        # CTL: kills move a cell up one class; the exhausted class neither engages nor proliferates nor secretes
        cr = r.ctl
        active = C.copy()
        if L.n_ctl > 1:
            active[-1] = 0.0
        dC = -self.ctl_death_rate * C - k_ctl
        dC[1:] += k_ctl[:-1]
        if L.n_ctl == 1:
            dC += k_ctl  # no exhaustion tracked: a kill does not change the class
        dC -= cr.aicd_rate_per_min * il2 / (il2 + cr.aicd_half_pM) * b_ctl * active
        activated = b_ctl + (1.0 - b_ctl) * -np.expm1(-eps_ctl * cr.secretion_window_min)
        gate = activated if cr.prolif_requires_activation else 1.0
        dC -= cr.drug_kill_per_uM_per_min * drug * gate * active  # a cycling CTL dies of the drug
        births = self.ctl_prolif_rate * il2 / (il2 + self.ctl_il2_half_pM(ifn)) * gate * room * active.sum()
        dC[0] += births + ctl_day * entry
        dy[L.ctl] = dC

        # NK: kills up a class; conversion to LAK above the IL-2 threshold (closure: at rate 1 / T_LAK)
        conv = self.lak_conversion(il2, ifn)
        dN = -(self.nk_death_rate + conv) * N - k_nk
        dN[1:] += k_nk[:-1]
        if L.n_nk == 1:
            dN += k_nk
        dN[0] += nk_day * entry
        dy[L.nk] = dN
        dA = -self.lak_death_rate * A - k_lak
        dA[1:] += k_lak[:-1]
        if L.n_lak == 1:
            dA += k_lak
        if il2 < r.lak.withdrawal_threshold_pM:
            dA -= self.lak_withdrawal_rate * A
        dA[0] += conv * N.sum()  # a converted cell's kills are reset
        dy[L.lak] = dA

        # fields: uniform concentration per species
        ex = self.exchange
        counts = np.zeros(K.N_TYPES)
        counts[K.TUMOUR], counts[K.CTL], counts[K.NK], counts[K.LAK] = T, C.sum(), N.sum(), A.sum()
        gated = counts.copy()
        gated[K.CTL] = activated * active.sum()
        gated[K.NK] = gated[K.LAK] = 0.0  # their activation window never opens (only engaged CTL open it)
        dc = -self.decay * c + self.permeability * self.n_vessels / self.n_sites * (plasma - c)
        for j in range(len(self.species)):
            for kind in (K.TUMOUR, K.CTL, K.NK, K.LAK):
                if ex.uptake_per_min[kind, j] > 0:
                    dc[j] -= (
                        counts[kind]
                        * ex.uptake_per_min[kind, j]
                        / (1.0 + c[j] / ex.uptake_saturation[kind, j])
                        * c[j]
                        / self.n_sites
                    )
                q = ex.secretion_per_min[kind, j]
                if ex.induced_per_min[kind, j] > 0:
                    f = c[ex.inducer[kind, j]]
                    q += ex.induced_per_min[kind, j] * f / (f + ex.induction_half[kind, j])
                if q > 0:
                    n = gated[kind] if ex.gate[kind, j] == GATE_ACTIVATED else counts[kind]
                    dc[j] += q * n / self.n_sites
        dy[L.conc] = dc
        return dy

    # ------------------------------------------------------------------------------------- initial state, solve
    def initial(
        self,
        tumour: float,
        ctl: float = 0.0,
        nk: float = 0.0,
        lak: float = 0.0,
        mhc: float | None = None,
        conc: np.ndarray | None = None,
        sensitisation: float = 0.0,
    ) -> np.ndarray:
        """A state vector: counts (all effectors with no kills yet), MHC-I (default ``patient.mhc_baseline``),
        mean concentrations (default zero), mean IFN-alpha sensitisation (default zero)."""
        L = self.layout
        y = np.zeros(L.size)
        y[L.tumour] = tumour
        y[L.mhc] = self.p.patient.mhc_baseline if mhc is None else mhc
        y[L.ctl.start] = ctl
        y[L.nk.start] = nk
        y[L.lak.start] = lak
        if conc is not None:
            y[L.conc] = conc
        y[L.sens] = sensitisation
        return y

    def initial_from_state(self, state) -> np.ndarray:
        """The state vector of a lattice :class:`abm.state.SimState` (counts by type and kills made, mean MHC-I and
        sensitisation of the tumour cells, mean concentrations)."""
        L = self.layout
        c = state.cells
        n = int(c.n[0])
        kind = np.asarray(c.ctype[:n])
        kills = np.asarray(c.kills[:n])
        y = np.zeros(L.size)
        tum = kind == K.TUMOUR
        y[L.tumour] = tum.sum()
        y[L.mhc] = float(np.asarray(c.mhc[:n])[tum].mean()) if tum.any() else self.p.patient.mhc_baseline
        y[L.sens] = float(np.asarray(c.sensitisation[:n])[tum].mean()) if tum.any() else 0.0
        for kind_code, sl, ncl in ((K.CTL, L.ctl, L.n_ctl), (K.NK, L.nk, L.n_nk), (K.LAK, L.lak, L.n_lak)):
            k = kills[kind == kind_code]
            cls = np.minimum(k, ncl - 1) if ncl > 1 else np.zeros_like(k)
            y[sl] = np.bincount(cls, minlength=ncl)[:ncl]
        y[L.conc] = np.asarray(state.conc).mean(axis=1)
        return y

    def solve(self, y0: np.ndarray, days: float, t_eval_day: np.ndarray | None = None, **kw) -> MeanFieldSolution:
        """Integrate for ``days`` (stiff solver: receptor uptake of IL-2 relaxes in about a minute while cells
        change over days)."""
        opts = {"method": "LSODA", "rtol": 1e-6, "atol": 1e-8}
        opts.update(kw)
        t_eval = None if t_eval_day is None else np.asarray(t_eval_day, float) * MIN_PER_DAY
        sol = solve_ivp(self.rhs, (0.0, days * MIN_PER_DAY), y0, t_eval=t_eval, **opts)
        if not sol.success:
            raise RuntimeError(f"mean-field integration failed: {sol.message}")
        return MeanFieldSolution(sol.t / MIN_PER_DAY, sol.y, self.layout, self.species)
