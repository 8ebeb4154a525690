"""Plasma pharmacokinetics: unit conversion and linear PK models with closed forms.

Every model is linear, so the plasma curve of a whole schedule is the sum (superposition) of the curves of its
doses, and every dose's curve is a piecewise sum of exponentials

    C(t) = sum_j amp_j * exp(-rate_j * (t - ref_j))     for start_j <= t < end_j

in the species' plasma unit (pM for IL-2 and IFN-alpha, uM for the drug), t in minutes. Such a sum has an exact
instantaneous value and an exact integral, so the average over an agent step is exact even for an i.v. bolus whose
peak is shorter than the step.

Disposition (the response to a unit amount put into plasma at t = 0) is data (``params.pk[drug]``, a
:class:`~abm.params.DrugPK`): ``(1/V) sum_i f_i exp(-ln2 t / t_i)``; by default bi-exponential for IL-2 (13 and
85 min), one compartment for IFN-alpha and the cytotoxic drug.

Input, per route (amount ``D`` in plasma-unit moles, e.g. pmol for a pM species):

- ``iv`` with ``duration_min = 0``: instantaneous bolus, ``C = D h(t)``;
- ``iv`` with ``duration_min = T > 0`` (short infusion) and ``infusion`` (continuous, ``T = duration_h * 60``):
  zero-order input at ``R = D / T``, ``C = R sum_i c_i (1 - exp(-l_i t)) / l_i`` during the input, then each term
  decays from its end-of-input value;
- ``sc``: first-order absorption at ``ka`` with bioavailability ``F`` (Bateman function),
  ``C = F D ka sum_i c_i (exp(-l_i t) - exp(-ka t)) / (ka - l_i)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from abm.errors import ParameterError
from abm.kernels import portable as pm
from abm.units import AVOGADRO, CONC_UNITS_PER_MOLAR

if TYPE_CHECKING:  # pragma: no cover
    from abm.params import DrugPK, PatientParams

ROUTES = ("iv", "infusion", "sc")
"""Routes: i.v. bolus or short infusion (``duration_min``), continuous infusion (``duration_h``), subcutaneous."""

BASE_UNITS = ("IU/kg", "MIU/m2", "mg/m2", "MIU", "IU", "mg", "mg/kg")
"""Dose units in the clinic's terms; each also exists with a ``/day`` suffix (a rate, for continuous infusion)."""

UNITS = BASE_UNITS + tuple(u + "/day" for u in BASE_UNITS)

__all__ = [
    "AVOGADRO",
    "CONC_UNITS_PER_MOLAR",
    "ROUTES",
    "UNITS",
    "dose_to_mol",
    "disposition",
    "routes_for",
    "units_for",
]


def routes_for(drug: DrugPK) -> tuple[str, ...]:
    """The routes a drug can be given by: i.v. and infusion always, s.c. when it has an absorption model."""
    return ROUTES if drug.has_sc else ("iv", "infusion")


def units_for(drug: DrugPK) -> tuple[str, ...]:
    """The dose units a drug accepts: mass units always, activity (IU) units when it has a specific activity."""
    return UNITS if drug.dosed_in_iu else tuple(u for u in UNITS if u.startswith("mg"))


_TINY = 1e-16  # terms decayed below this fraction of their amplitude are dropped (error far below float noise)


# ----------------------------------------------------------------------------------------------- unit conversion
def miu_to_iu(miu: float) -> float:
    """Million international units (MIU) -> international units (IU)."""
    return miu * 1e6


def per_kg_to_total(dose_per_kg: float, weight_kg: float) -> float:
    """A dose per kg of body weight (X/kg) -> the patient's total dose (X), for ``weight_kg`` kg."""
    return dose_per_kg * weight_kg


def per_m2_to_total(dose_per_m2: float, surface_area_m2: float) -> float:
    """A dose per m^2 of body surface area (X/m^2) -> the patient's total dose (X), for ``surface_area_m2`` m^2."""
    return dose_per_m2 * surface_area_m2


def iu_to_mg(iu: float, iu_per_mg: float) -> float:
    """Biological activity (IU) -> protein mass (mg), with the specific activity ``iu_per_mg`` (IU/mg)."""
    return iu / iu_per_mg


def kda_to_g_per_mol(kda: float) -> float:
    """Molecular weight in kDa -> molar mass in g/mol."""
    return kda * 1e3


def mg_to_mol(mg: float, mw_g_per_mol: float) -> float:
    """Mass (mg) -> amount (mol), with molar mass ``mw_g_per_mol`` (g/mol)."""
    return mg * 1e-3 / mw_g_per_mol


def conc_units_per_molar(units: str) -> float:
    """How many plasma-concentration ``units`` (pM, uM, ...) make 1 mol/L."""
    try:
        return CONC_UNITS_PER_MOLAR[units]
    except KeyError:
        raise ParameterError(
            f"concentration unit {units!r} is not known to the PK model; allowed: {', '.join(CONC_UNITS_PER_MOLAR)}"
        ) from None


def mol_to_plasma_amount(mol: float, units: str) -> float:
    """Amount (mol) -> amount in the plasma unit's mole scale (pmol for a pM species, umol for uM)."""
    return mol * conc_units_per_molar(units)


def plasma_amount_unit(units: str) -> str:
    """The amount unit that goes with a concentration unit: ``pM`` -> ``pmol``, ``uM`` -> ``umol``."""
    conc_units_per_molar(units)
    return units[:-1] + "mol"


def amount_to_conc(amount: float, volume_l: float) -> float:
    """Amount (plasma-unit moles, e.g. pmol) in ``volume_l`` litres -> concentration (plasma units, e.g. pM)."""
    return amount / volume_l


def il2_iu_per_ml_to_pM(iu_per_ml: float, pk: Mapping[str, DrugPK]) -> float:
    """IL-2 activity concentration (IU/mL) -> molar concentration (pM); 1 IU/mL is about 4 pM by default."""
    d = pk["il2"]
    mol_per_l = mg_to_mol(iu_to_mg(iu_per_ml, d.iu_per_mg), d.molar_mass_g_per_mol) * 1e3
    return mol_per_l * 1e12


def il2_pM_to_iu_per_ml(pM: float, pk: Mapping[str, DrugPK]) -> float:
    """IL-2 molar concentration (pM) -> activity concentration (IU/mL)."""
    return pM / il2_iu_per_ml_to_pM(1.0, pk)


def drug_pk(drug: str, pk: Mapping[str, DrugPK]) -> DrugPK:
    """The PK model of ``drug`` (a key of the ``pk`` mapping of the parameter tree)."""
    try:
        return pk[drug]
    except KeyError:
        raise ParameterError(f"unknown drug {drug!r}; allowed: {', '.join(pk)}") from None


def check_unit(drug: str, unit: str, pk: Mapping[str, DrugPK]) -> None:
    allowed = units_for(drug_pk(drug, pk))
    if unit not in allowed:
        raise ParameterError(f"unit {unit!r} is not valid for drug {drug!r}; allowed: {', '.join(allowed)}")


def dose_total_clinic_units(dose: float, unit: str, patient: PatientParams, duration_h: float = 0.0) -> float:
    """A dose in the clinic's ``unit`` -> the patient's total, in IU (activity units) or mg (mass units).

    ``/kg`` uses ``patient.weight_kg``, ``/m2`` uses ``patient.surface_area_m2``, ``MIU`` is 1e6 IU, and a ``/day``
    unit is a rate, multiplied by the infusion's ``duration_h / 24``.
    """
    base = unit
    if unit.endswith("/day"):
        base = unit[: -len("/day")]
        dose = dose * duration_h / 24.0
    if base not in BASE_UNITS:
        raise ParameterError(f"unknown dose unit {unit!r}; allowed: {', '.join(UNITS)}")
    if base.startswith("MIU"):
        dose = miu_to_iu(dose)
    if base.endswith("/kg"):
        dose = per_kg_to_total(dose, patient.weight_kg)
    elif base.endswith("/m2"):
        dose = per_m2_to_total(dose, patient.surface_area_m2)
    return dose


def dose_to_mol(
    drug: str, dose: float, unit: str, pk: Mapping[str, DrugPK], patient: PatientParams, duration_h: float = 0.0
) -> float:
    """A dose in the clinic's units -> amount of substance (mol) for this patient.

    IU are converted with the drug's specific activity (IU/mg), mg with its molar mass; a drug without a specific
    activity accepts mass units only.
    """
    check_unit(drug, unit, pk)
    d = pk[drug]
    total = dose_total_clinic_units(dose, unit, patient, duration_h)
    mg = iu_to_mg(total, d.iu_per_mg) if unit.startswith(("IU", "MIU")) else total
    return mg_to_mol(mg, d.molar_mass_g_per_mol)


# --------------------------------------------------------------------------------------------------- disposition
def half_life_to_rate(half_life_min: float) -> float:
    """Half-life (min) -> first-order rate constant (1/min)."""
    return math.log(2.0) / half_life_min


@dataclass(frozen=True)
class Disposition:
    """Unit impulse response of plasma: ``h(t) = sum_i coef_per_l[i] * exp(-rate_per_min[i] * t)``.

    ``coef_per_l`` in 1/L (so amount x coef = concentration), ``rate_per_min`` in 1/min.
    """

    coef_per_l: tuple[float, ...]
    rate_per_min: tuple[float, ...]

    def __call__(self, t_min: np.ndarray | float) -> np.ndarray | float:
        t = np.asarray(t_min, dtype=float)
        out = sum(c * pm.exp(-r * t) for c, r in zip(self.coef_per_l, self.rate_per_min, strict=True))
        return np.where(t >= 0, out, 0.0)

    def auc_per_unit_amount(self) -> float:
        """Integral of h over [0, inf) (min/L): AUC = amount x this = amount / clearance."""
        return sum(c / r for c, r in zip(self.coef_per_l, self.rate_per_min, strict=True))


def disposition(drug: str, pk: Mapping[str, DrugPK]) -> Disposition:
    """The plasma disposition of ``drug``: one exponential per phase, the last phase taking the remaining share."""
    d = drug_pk(drug, pk)
    shares = [*d.phase_fractions, 1.0 - sum(d.phase_fractions)]
    return Disposition(tuple(f / d.volume_l for f in shares), tuple(half_life_to_rate(t) for t in d.half_lives_min))


def sc_absorption(drug: str, pk: Mapping[str, DrugPK]) -> tuple[float, float]:
    """(absorption rate constant ka in 1/min, bioavailability F) of a subcutaneous dose."""
    d = drug_pk(drug, pk)
    if not d.has_sc:
        raise ParameterError(
            f"route 'sc' is not available for drug {drug!r}; allowed routes: {', '.join(routes_for(d))}"
        )
    return half_life_to_rate(d.sc_absorption_half_life_min), d.sc_bioavailability


# ------------------------------------------------------------------------------------------------ exponential sums
@dataclass
class Terms:
    """A piecewise sum of exponentials: term j is ``amp * exp(-rate * (t - ref))`` on ``[start, end)``.

    Arrays of equal length; ``end`` may be ``inf``; ``rate`` may be 0 (a constant while an infusion runs).
    """

    amp: np.ndarray
    rate: np.ndarray
    ref: np.ndarray
    start: np.ndarray
    end: np.ndarray

    @staticmethod
    def empty() -> Terms:
        z = np.zeros(0)
        return Terms(z, z.copy(), z.copy(), z.copy(), z.copy())

    @staticmethod
    def concat(parts: list[Terms]) -> Terms:
        if not parts:
            return Terms.empty()
        return Terms(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("amp", "rate", "ref", "start", "end")))

    def __len__(self) -> int:
        return len(self.amp)

    def value(self, t_min: float | np.ndarray) -> float | np.ndarray:
        """Instantaneous concentration at time(s) ``t_min`` (plasma units)."""
        t = np.asarray(t_min, dtype=float)
        tt = t[..., None]
        on = (tt >= self.start) & (tt < self.end)
        x = np.where(on, -self.rate * (tt - self.ref), -np.inf)
        out = np.sum(np.where(on, self.amp * pm.exp(x), 0.0), axis=-1)
        return float(out) if out.ndim == 0 else out

    def integral(self, t0: float, t1: float) -> float:
        """Exact integral over ``[t0, t1)`` (plasma units x min)."""
        if t1 <= t0 or len(self) == 0:
            return 0.0
        a = np.maximum(self.start, t0)
        b = np.minimum(self.end, t1)
        on = b > a
        if not np.any(on):
            return 0.0
        amp, rate, ref, a, b = self.amp[on], self.rate[on], self.ref[on], a[on], b[on]
        width = b - a
        pos = rate > 0
        out = np.where(pos, 0.0, amp * width)
        r = np.where(pos, rate, 1.0)
        decayed = amp * pm.exp(-r * (a - ref))
        out = out + np.where(pos, decayed * -pm.expm1(-r * width) / r, 0.0)
        return float(np.sum(out))

    def average(self, t0: float, t1: float) -> float:
        """Exact mean concentration over ``[t0, t1)`` (plasma units)."""
        return self.integral(t0, t1) / (t1 - t0)

    def prune(self, t_min: float) -> Terms:
        """Drop terms that are over or have decayed to nothing by ``t_min`` (their future is below 1e-16 x amp)."""
        keep = (self.end > t_min) & ~((self.rate > 0) & (self.rate * (t_min - self.ref) > -math.log(_TINY)))
        if np.all(keep):
            return self
        return Terms(self.amp[keep], self.rate[keep], self.ref[keep], self.start[keep], self.end[keep])

    def breakpoints(self, t0: float, t1: float) -> list[float]:
        """Times strictly inside (t0, t1) where a term starts or ends (the curve has a kink or a jump there)."""
        pts = np.concatenate([self.start, self.end])
        pts = pts[(pts > t0) & (pts < t1)]
        return sorted(set(pts.tolist()))


def dose_terms(
    route: str,
    amount: float,
    t_dose_min: float,
    disp: Disposition,
    duration_min: float = 0.0,
    ka_per_min: float = 0.0,
    bioavailability: float = 1.0,
) -> Terms:
    """The plasma curve of one dose as exponential terms.

    Parameters
    ----------
    route : "iv" (bolus if ``duration_min`` is 0, else zero-order over ``duration_min``), "infusion" (zero-order
        over ``duration_min``) or "sc" (first-order absorption at ``ka_per_min`` with ``bioavailability``).
    amount : dose in plasma-unit moles (pmol for a pM species), i.e. concentration x litres.
    t_dose_min : time the dose (or infusion) starts, min.
    disp : the drug's disposition (1/L, 1/min).
    """
    c = np.asarray(disp.coef_per_l, dtype=float)
    lam = np.asarray(disp.rate_per_min, dtype=float)
    n = len(c)
    inf = np.full(n, np.inf)
    t0 = np.full(n, float(t_dose_min))
    if route == "sc":
        ka = float(ka_per_min)
        if ka <= 0:
            raise ParameterError("s.c. absorption rate must be > 0")
        # ka == l_i makes the Bateman form 0/0; nudge ka by 1e-4 (relative), far below any calibration's precision
        ka_i = np.where(np.abs(ka - lam) < 1e-4 * lam, ka * (1.0 + 1e-4), ka)
        amp = bioavailability * amount * ka_i * c / (ka_i - lam)
        return Terms(
            np.concatenate([amp, -amp]),
            np.concatenate([lam, ka_i]),
            np.concatenate([t0, t0]),
            np.concatenate([t0, t0]),
            np.concatenate([inf, inf]),
        )
    if route not in ("iv", "infusion"):
        raise ParameterError(f"unknown route {route!r}; allowed: {', '.join(ROUTES)}")
    T = float(duration_min)
    if T <= 0:
        if route == "infusion":
            raise ParameterError("a continuous infusion needs duration_h > 0")
        return Terms(amount * c, lam.copy(), t0, t0.copy(), inf)
    rate_in = amount / T
    plateau = rate_in * c / lam  # level each term approaches during the input
    t_end = np.full(n, float(t_dose_min) + T)
    after = plateau * -pm.expm1(-lam * T)
    return Terms(
        np.concatenate([plateau, -plateau, after]),
        np.concatenate([np.zeros(n), lam, lam]),
        np.concatenate([t0, t0, t_end]),
        np.concatenate([t0, t0, t_end]),
        np.concatenate([t_end, t_end, inf]),
    )


def scheduled_dose_terms(
    drug: str, route: str, amount: float, t_dose_min: float, duration_min: float, pk: Mapping[str, DrugPK]
) -> Terms:
    """:func:`dose_terms` with the disposition and absorption of ``drug`` taken from ``pk``."""
    disp = disposition(drug, pk)
    if route == "sc":
        ka, f = sc_absorption(drug, pk)
        return dose_terms("sc", amount, t_dose_min, disp, ka_per_min=ka, bioavailability=f)
    return dose_terms(route, amount, t_dose_min, disp, duration_min=duration_min)


def peak(terms: Terms, t_from: float, t_to: float, resolution_min: float = 0.1) -> tuple[float, float]:
    """(time, value) of the highest concentration on a grid over ``[t_from, t_to]`` (for tests and reports)."""
    t = np.arange(t_from, t_to + resolution_min / 2, resolution_min)
    v = terms.value(t)
    i = int(np.argmax(v))
    return float(t[i]), float(v[i])
