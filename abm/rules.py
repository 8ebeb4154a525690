"""From the parameter tree to the records the kernels take: per-step rule quantities, the cell x species exchange
tables and the species rows. No kernel holds a biological number; every one arrives through these records."""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

from abm.kernels import cells as K
from abm.kernels.exchange import GATE_ACTIVATED, GATE_ALWAYS
from abm.kernels.records import CellRules, ExchangeTable, SpeciesIndex, Trafficking
from abm.params import Params
from abm.units import molecules_to_conc

MIN_PER_DAY = 1440.0

TYPE_CODES = {"tumour": K.TUMOUR, "ctl": K.CTL, "nk": K.NK, "lak": K.LAK}
"""Cell-type names of the parameter tree -> kernel type codes."""


# One record per cell type: fields named after the parameter-tree fields they come from, units in the names;
# ``_per_step`` marks a probability or amount per agent step. A new rule parameter is a field in its group
# (abm/params/cells.py), a field here and its use in the kernel and the reference model.
TumourRules = namedtuple(
    "TumourRules",
    [
        "division_prob_per_step",  # dt / patient.tumour_division_time_h (capped at 1)
        "ifn_prolif_half_pM",
        "mhc_baseline",  # patient.mhc_baseline
        "mhc_ifn_half_pM",
        "mhc_relax_per_step",  # 1 - exp(-dt / tumour.mhc_relax_time_h)
        "drug_kill_per_uM_per_min",
        "death_prob_per_step",  # from tumour.death_rate_per_day
        "ifn_sensitisation_half_pM",
        "sensitisation_relax_per_step",  # 1 - exp(-dt / tumour.ifn_sensitisation_time_h)
    ],
)

CTLRules = namedtuple(
    "CTLRules",
    [
        "death_prob_per_step",  # from ctl.lifespan_days
        "moves_per_step",  # ctl.speed_um_per_min * dt / h
        "chemotaxis_sensitivity",
        "chemokine_receptor_kd_pM",
        "kill_prob",
        "kill_attempts_per_step",  # dt / <type>.kill_attempt_min: the exponent of the per-step kill probability
        "max_kills",
        "secretion_window_min",  # ctl.secretion_window_h
        "prolif_prob_max_per_step",  # dt / ctl.prolif_time_h (capped at 1)
        "il2_prolif_half_pM",
        "prolif_requires_activation",
        "aicd_rate_per_min",  # ctl.aicd_rate_per_day
        "aicd_half_pM",
        "ifn_cd25_suppression",
        "ifn_cd25_half_pM",
        "drug_kill_per_uM_per_min",
    ],
)

NKRules = namedtuple(
    "NKRules",
    [
        "death_prob_per_step",  # from nk.lifespan_days
        "moves_per_step",
        "chemotaxis_sensitivity",
        "chemokine_receptor_kd_pM",
        "kill_prob",
        "kill_attempts_per_step",  # dt / <type>.kill_attempt_min: the exponent of the per-step kill probability
        "max_kills",
        "baseline_activation",
        "il2_activation_half_pM",
        "ifn_activation_half_pM",
        "lak_threshold_pM",
        "lak_exposure_min",  # nk.lak_exposure_h
        "ifn_lak_suppression",
        "ifn_lak_suppression_half_pM",
        "ifn_lysis_gain",  # tumour.ifn_lysis_gain: the target's sensitisation raises the kill probability
    ],
)

LAKRules = namedtuple(
    "LAKRules",
    [
        "death_prob_per_step",  # from lak.lifespan_days
        "moves_per_step",
        "chemotaxis_sensitivity",
        "chemokine_receptor_kd_pM",
        "kill_prob",
        "kill_attempts_per_step",  # dt / <type>.kill_attempt_min: the exponent of the per-step kill probability
        "max_kills",
        "withdrawal_threshold_pM",
        "withdrawal_death_prob_per_step",  # from lak.withdrawal_death_per_day
        "ifn_lysis_gain",  # tumour.ifn_lysis_gain
    ],
)


def _p(rate_per_min: float, dt: float) -> float:
    """Probability of at least one event of a Poisson process in one step."""
    return -math.expm1(-rate_per_min * dt)  # math, not numpy: the same bits on every CPU (abm.kernels.portable)


def species_index(p: Params) -> SpeciesIndex:
    names = p.species_names
    chem = names.index(p.vessels.chemokine) if p.vessels.chemokine else -1
    return SpeciesIndex(il2=names.index("il2"), ifna=names.index("ifna"), drug=names.index("drug"), chemokine=chem)


def cell_rules(p: Params) -> CellRules:
    """The per-step quantities of every cell rule, one record per cell type."""
    dt = p.time.dt_min
    h = p.lattice.spacing_um
    day = MIN_PER_DAY
    tumour = TumourRules(
        division_prob_per_step=min(1.0, dt / (p.patient.tumour_division_time_h * 60.0)),
        ifn_prolif_half_pM=p.tumour.ifn_prolif_half_pM,
        mhc_baseline=p.patient.mhc_baseline,
        mhc_ifn_half_pM=p.tumour.mhc_ifn_half_pM,
        mhc_relax_per_step=_p(1.0 / (p.tumour.mhc_relax_time_h * 60.0), dt),
        drug_kill_per_uM_per_min=p.tumour.drug_kill_per_uM_per_min,
        death_prob_per_step=_p(p.tumour.death_rate_per_day / day, dt),
        ifn_sensitisation_half_pM=p.tumour.ifn_sensitisation_half_pM,
        sensitisation_relax_per_step=_p(1.0 / (p.tumour.ifn_sensitisation_time_h * 60.0), dt),
    )
    ctl = CTLRules(
        death_prob_per_step=_p(1.0 / (p.ctl.lifespan_days * day), dt),
        moves_per_step=p.ctl.speed_um_per_min * dt / h,
        chemotaxis_sensitivity=p.ctl.chemotaxis_sensitivity,
        chemokine_receptor_kd_pM=p.ctl.chemokine_receptor_kd_pM,
        kill_prob=p.ctl.kill_prob,
        kill_attempts_per_step=dt / p.ctl.kill_attempt_min,
        max_kills=p.ctl.max_kills,
        secretion_window_min=p.ctl.secretion_window_h * 60.0,
        prolif_prob_max_per_step=min(1.0, dt / (p.ctl.prolif_time_h * 60.0)),
        il2_prolif_half_pM=p.ctl.il2_prolif_half_pM,
        prolif_requires_activation=p.ctl.prolif_requires_activation,
        aicd_rate_per_min=p.ctl.aicd_rate_per_day / day,
        aicd_half_pM=p.ctl.aicd_half_pM,
        ifn_cd25_suppression=p.ctl.ifn_cd25_suppression,
        ifn_cd25_half_pM=p.ctl.ifn_cd25_half_pM,
        drug_kill_per_uM_per_min=p.ctl.drug_kill_per_uM_per_min,
    )
    nk = NKRules(
        death_prob_per_step=_p(1.0 / (p.nk.lifespan_days * day), dt),
        moves_per_step=p.nk.speed_um_per_min * dt / h,
        chemotaxis_sensitivity=p.nk.chemotaxis_sensitivity,
        chemokine_receptor_kd_pM=p.nk.chemokine_receptor_kd_pM,
        kill_prob=p.nk.kill_prob,
        kill_attempts_per_step=dt / p.nk.kill_attempt_min,
        max_kills=p.nk.max_kills,
        baseline_activation=p.nk.baseline_activation,
        il2_activation_half_pM=p.nk.il2_activation_half_pM,
        ifn_activation_half_pM=p.nk.ifn_activation_half_pM,
        lak_threshold_pM=p.nk.lak_threshold_pM,
        lak_exposure_min=p.nk.lak_exposure_h * 60.0,
        ifn_lak_suppression=p.nk.ifn_lak_suppression,
        ifn_lak_suppression_half_pM=p.nk.ifn_lak_suppression_half_pM,
        ifn_lysis_gain=p.tumour.ifn_lysis_gain,
    )
    lak = LAKRules(
        death_prob_per_step=_p(1.0 / (p.lak.lifespan_days * day), dt),
        moves_per_step=p.lak.speed_um_per_min * dt / h,
        chemotaxis_sensitivity=p.lak.chemotaxis_sensitivity,
        chemokine_receptor_kd_pM=p.lak.chemokine_receptor_kd_pM,
        kill_prob=p.lak.kill_prob,
        kill_attempts_per_step=dt / p.lak.kill_attempt_min,
        max_kills=p.lak.max_kills,
        withdrawal_threshold_pM=p.lak.withdrawal_threshold_pM,
        withdrawal_death_prob_per_step=_p(p.lak.withdrawal_death_per_day / day, dt),
        ifn_lysis_gain=p.tumour.ifn_lysis_gain,
    )
    return CellRules(dt_min=dt, species=species_index(p), tumour=tumour, ctl=ctl, nk=nk, lak=lak)


def exchange_table(p: Params) -> ExchangeTable:
    """Cell type x species uptake and secretion, from ``species.<name>.cells`` (species in solver order)."""
    names = p.species_names
    shape = (K.N_TYPES, len(names))
    up = np.zeros(shape)
    km = np.ones(shape)
    sec = np.zeros(shape)
    ind = np.zeros(shape)
    inducer = np.full(shape, -1, dtype=np.int64)
    ind_half = np.ones(shape)
    gate = np.zeros(shape, dtype=np.int8)
    h = p.lattice.spacing_um
    for j, sp in enumerate(names):
        spec = p.species[sp]
        per_molecule_s = 60.0 * molecules_to_conc(h, spec.units)  # molecules/s into one site -> conc/min
        for cell_type, ex in spec.cells.items():
            t = TYPE_CODES[cell_type]
            up[t, j] = ex.uptake_per_min
            km[t, j] = ex.uptake_saturation
            sec[t, j] = ex.secretion_molecules_per_s * per_molecule_s
            if ex.induced_by and ex.induced_secretion_molecules_per_s > 0:
                ind[t, j] = ex.induced_secretion_molecules_per_s * per_molecule_s
                inducer[t, j] = names.index(ex.induced_by)
                ind_half[t, j] = ex.induction_half_conc
            gate[t, j] = GATE_ACTIVATED if ex.secretes_when == "activated" else GATE_ALWAYS
    max_kills = np.zeros(K.N_TYPES, dtype=np.int64)
    max_kills[K.CTL] = p.ctl.max_kills
    max_kills[K.NK] = p.nk.max_kills
    max_kills[K.LAK] = p.lak.max_kills
    active = (up > 0) | (sec > 0) | (ind > 0)
    rows = np.flatnonzero(active.any(axis=0)).astype(np.int64)
    return ExchangeTable(up, km, sec, ind, inducer, ind_half, gate, max_kills, rows, active.any(axis=1))


def trafficking(p: Params, ctl_per_day: float, nk_per_day: float) -> Trafficking:
    """This step's entry record from the per-vessel rates (1/day, whole-patient drivers applied)."""
    sp = species_index(p)
    return Trafficking(
        ctl_per_min=ctl_per_day / MIN_PER_DAY,
        nk_per_min=nk_per_day / MIN_PER_DAY,
        dt_min=p.time.dt_min,
        chemokine=sp.chemokine,
        half_conc=p.vessels.recruitment_half_pM,
    )


def recruitment_rates_per_day(
    p: Params, n_tumour: float, plasma_il2: float, plasma_ifna: float = 0.0
) -> tuple[float, float]:
    """Per-vessel CTL and NK entry rates (1/day) at saturating local chemokine (docs/model.md 7.5): tumour antigen
    primes CTL (``n_tumour`` the lesion's tumour count), plasma IL-2 ``plasma_il2`` expands both pools, plasma
    IFN-alpha ``plasma_ifna`` helps CTL priming (7.11). The lattice model and its mean-field limit
    (:mod:`abm.meanfield`) both take them from here."""
    n_t = float(n_tumour)
    cp = float(plasma_il2)
    fp = float(plasma_ifna)
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
    return float(ctl), float(nk)


def exchanged_species(table: ExchangeTable) -> list[int]:
    """Rows of the species that some cell type takes up or secretes (their uptake/source rows are refilled each
    step; the others stay zero)."""
    return [int(j) for j in table.rows]
