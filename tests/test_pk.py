"""Plasma PK: unit conversions, closed forms, exact step averages, superposition and the calibration anchors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad

from abm.params import ParameterError, Params, PatientParams
from abm.therapy import pk

PKD = Params().pk
PATIENT = PatientParams()


def il2_amount_pmol(dose: float, unit: str) -> float:
    return pk.mol_to_plasma_amount(pk.dose_to_mol("il2", dose, unit, PKD, PATIENT), "pM")


def terms_for(
    drug: str, route: str, dose: float, unit: str, duration_min: float = 0.0, t0: float = 0.0, units: str = "pM"
) -> pk.Terms:
    duration_h = duration_min / 60.0 if route == "infusion" else 0.0
    amount = pk.mol_to_plasma_amount(pk.dose_to_mol(drug, dose, unit, PKD, PATIENT, duration_h), units)
    return pk.scheduled_dose_terms(drug, route, amount, t0, duration_min, PKD)


# ------------------------------------------------------------------------------------------------ conversions
def test_named_conversions():
    assert pk.miu_to_iu(18) == 18e6
    assert pk.per_kg_to_total(720000, 70) == pytest.approx(5.04e7)
    assert pk.per_m2_to_total(5, 1.8) == pytest.approx(9.0)
    assert pk.iu_to_mg(18e6, PKD["il2"].iu_per_mg) == pytest.approx(1.1, rel=0.01)  # 18 MIU = 1.1 mg
    assert pk.kda_to_g_per_mol(15.3) == 15300.0
    assert pk.mg_to_mol(1.1, 15300.0) == pytest.approx(7.19e-8, rel=1e-3)
    assert pk.mol_to_plasma_amount(1e-12, "pM") == pytest.approx(1.0)
    assert pk.mol_to_plasma_amount(1e-6, "uM") == pytest.approx(1.0)
    assert pk.plasma_amount_unit("pM") == "pmol" and pk.plasma_amount_unit("uM") == "umol"
    assert pk.amount_to_conc(6.0, 3.0) == 2.0


def test_il2_iu_per_ml_is_about_4_pM():
    assert pk.il2_iu_per_ml_to_pM(1.0, PKD) == pytest.approx(3.985, rel=1e-3)
    assert pk.il2_pM_to_iu_per_ml(pk.il2_iu_per_ml_to_pM(123.0, PKD), PKD) == pytest.approx(123.0)


def test_dose_to_mol_clinic_units():
    # 720,000 IU/kg x 70 kg = 50.4 MIU = 3.07 mg = 201 nmol
    assert pk.dose_to_mol("il2", 720000, "IU/kg", PKD, PATIENT) == pytest.approx(2.0086e-7, rel=1e-3)
    assert pk.dose_to_mol("il2", 50.4, "MIU", PKD, PATIENT) == pytest.approx(
        pk.dose_to_mol("il2", 720000, "IU/kg", PKD, PATIENT)
    )
    assert pk.dose_to_mol("il2", 5.04e7, "IU", PKD, PATIENT) == pytest.approx(
        pk.dose_to_mol("il2", 720000, "IU/kg", PKD, PATIENT)
    )
    # 5-FU 1,000 mg/m^2 x 1.8 m^2 = 1,800 mg = 13.8 mmol
    assert pk.dose_to_mol("drug", 1000, "mg/m2", PKD, PATIENT) == pytest.approx(1.8 / 130.08)
    assert pk.dose_to_mol("drug", 10, "mg/kg", PKD, PATIENT) == pytest.approx(0.7 / 130.08)
    assert pk.dose_to_mol("drug", 700, "mg", PKD, PATIENT) == pytest.approx(0.7 / 130.08)
    # IFN-alpha 5 MIU/m^2 = 9 MIU = 34.6 ug = 1.79 nmol
    assert pk.dose_to_mol("ifna", 5, "MIU/m2", PKD, PATIENT) == pytest.approx(9e6 / 2.6e8 * 1e-3 / 19300)
    # a /day unit is a rate: 18 MIU/m^2/day for 120 h = 90 MIU/m^2
    assert pk.dose_to_mol("il2", 18, "MIU/m2/day", PKD, PATIENT, duration_h=120) == pytest.approx(
        pk.dose_to_mol("il2", 90, "MIU/m2", PKD, PATIENT)
    )


def test_conversion_errors_name_allowed_values():
    with pytest.raises(ParameterError, match=r"unit 'IU/kg' is not valid for drug 'drug'; allowed: mg/m2"):
        pk.dose_to_mol("drug", 1, "IU/kg", PKD, PATIENT)
    with pytest.raises(ParameterError, match=r"unknown drug 'il3'; allowed: il2, ifna, drug"):
        pk.dose_to_mol("il3", 1, "IU", PKD, PATIENT)
    with pytest.raises(ParameterError, match=r"allowed: M, mM, uM, nM, pM"):
        pk.conc_units_per_molar("ng/mL")
    with pytest.raises(ParameterError, match=r"route 'sc' is not available for drug 'drug'"):
        pk.sc_absorption("drug", PKD)


# ------------------------------------------------------------------------------------------------ closed forms
def test_high_dose_bolus_peak_anchor():
    """720,000 IU/kg peaks at roughly 1e4 IU/mL, 40-70 nM (docs/model.md, brief s4)."""
    short = terms_for("il2", "iv", 720000, "IU/kg", duration_min=15)
    t_peak, c_peak = pk.peak(short, 0, 120)
    assert t_peak == pytest.approx(15.0, abs=0.2)  # peak at the end of the 15-min infusion
    assert 40e3 <= c_peak <= 70e3
    assert 0.8e4 <= pk.il2_pM_to_iu_per_ml(c_peak, PKD) <= 2e4
    bolus = terms_for("il2", "iv", 720000, "IU/kg")
    assert 40e3 <= bolus.value(0.0) <= 70e3
    assert bolus.value(0.0) == pytest.approx(il2_amount_pmol(720000, "IU/kg") / PKD["il2"].volume_l)


def test_log_slopes_give_the_half_lives():
    bolus = terms_for("il2", "iv", 720000, "IU/kg")
    # late (beta) phase: alpha phase is < 1e-9 of it after 10 h
    slope = math.log(bolus.value(600.0) / bolus.value(700.0)) / 100.0
    assert math.log(2) / slope == pytest.approx(PKD["il2"].half_lives_min[1], rel=1e-6)
    # early phase is the sum; peel the beta phase off to recover alpha
    beta = pk.half_life_to_rate(PKD["il2"].half_lives_min[1])
    c0 = bolus.value(0.0)
    fast = [bolus.value(t) - c0 * (1 - PKD["il2"].phase_fractions[0]) * math.exp(-beta * t) for t in (0.0, 20.0)]
    assert math.log(2) * 20.0 / math.log(fast[0] / fast[1]) == pytest.approx(PKD["il2"].half_lives_min[0])
    drug = terms_for("drug", "iv", 1000, "mg/m2", units="uM")
    slope = math.log(drug.value(30.0) / drug.value(330.0)) / 300.0
    assert math.log(2) / slope == pytest.approx(PKD["drug"].half_lives_min[0])
    # s.c. IFN-alpha is absorption-limited (flip-flop): the terminal slope is the absorption rate
    ifn = terms_for("ifna", "sc", 5, "MIU/m2")
    slope = math.log(ifn.value(3000.0) / ifn.value(4000.0)) / 1000.0
    assert math.log(2) / slope == pytest.approx(PKD["ifna"].sc_absorption_half_life_min, rel=1e-3)


def test_auc_is_dose_over_clearance():
    a = il2_amount_pmol(720000, "IU/kg")
    disp = pk.disposition("il2", PKD)
    for route, dur in (("iv", 0.0), ("iv", 15.0), ("infusion", 600.0)):
        t = pk.scheduled_dose_terms("il2", route, a, 0.0, dur, PKD)
        assert t.integral(0.0, 1e6) == pytest.approx(a * disp.auc_per_unit_amount(), rel=1e-9)
    sc = pk.scheduled_dose_terms("il2", "sc", a, 0.0, 0.0, PKD)
    assert sc.integral(0.0, 1e6) == pytest.approx(PKD["il2"].sc_bioavailability * a * disp.auc_per_unit_amount())
    # one compartment: AUC = dose / (V k)
    drug = terms_for("drug", "iv", 1000, "mg/m2", units="uM")
    dose_umol = pk.dose_to_mol("drug", 1000, "mg/m2", PKD, PATIENT) * 1e6
    k = pk.half_life_to_rate(PKD["drug"].half_lives_min[0])
    assert drug.integral(0.0, 1e6) == pytest.approx(dose_umol / (PKD["drug"].volume_l * k))
    assert drug.value(0.0) == pytest.approx(dose_umol / PKD["drug"].volume_l)


def test_continuous_infusion_is_zero_order():
    """18 MIU/m^2/day for 5 days approaches the steady state R / CL and is continuous at the end of the input."""
    t = terms_for("il2", "infusion", 18, "MIU/m2/day", duration_min=120 * 60)
    rate = il2_amount_pmol(18, "MIU/m2") / 1440.0
    steady = rate * pk.disposition("il2", PKD).auc_per_unit_amount()
    assert t.value(0.0) == 0.0
    assert t.value(100 * 60.0) == pytest.approx(steady, rel=1e-6)
    end = 120 * 60.0
    assert t.value(end - 1e-6) == pytest.approx(t.value(end), rel=1e-6)
    assert t.value(end + 600) < 0.1 * steady


def test_sc_il2_is_flat_for_about_8_hours_at_2_percent_of_iv():
    a = il2_amount_pmol(5, "MIU/m2")
    sc = pk.scheduled_dose_terms("il2", "sc", a, 0.0, 0.0, PKD)
    iv_peak = a / PKD["il2"].volume_l
    t_peak, c_peak = pk.peak(sc, 0.0, 1440.0, 1.0)
    assert 0.01 <= c_peak / iv_peak <= 0.03
    window = sc.value(np.arange(60.0, 8 * 60.0 + 1, 10.0))  # from 1 h to 8 h
    assert window.min() >= 0.65 * c_peak
    assert 1.0 <= t_peak / 60 <= 6.0


def test_ifna_sc_anchor():
    """5 MIU/m^2 s.c. peaks at about 9 pM at about 8 h."""
    t_peak, c_peak = pk.peak(terms_for("ifna", "sc", 5, "MIU/m2"), 0.0, 2880.0, 1.0)
    assert c_peak == pytest.approx(9.0, rel=0.05)
    assert t_peak / 60.0 == pytest.approx(8.0, abs=0.25)


def test_sc_degenerate_rates_are_finite():
    disp = pk.Disposition((1.0,), (0.01,))
    t = pk.dose_terms("sc", 100.0, 0.0, disp, ka_per_min=0.01, bioavailability=1.0)
    # limit form F D c ka t exp(-k t) at ka == k
    assert t.value(100.0) == pytest.approx(100.0 * 0.01 * 100.0 * math.exp(-1.0), rel=1e-3)


# ------------------------------------------------------------------------------------- exact step averages
@settings(max_examples=60, deadline=None)
@given(
    route=st.sampled_from(["bolus", "short", "infusion", "sc"]),
    t0=st.floats(0.0, 3000.0),
    width=st.floats(0.01, 120.0),
)
def test_step_average_equals_numerical_integral(route, t0, width):
    a = il2_amount_pmol(720000, "IU/kg")
    r, dur = {"bolus": ("iv", 0.0), "short": ("iv", 15.0), "infusion": ("infusion", 600.0), "sc": ("sc", 0.0)}[route]
    terms = pk.scheduled_dose_terms("il2", r, a, 7.0, dur, PKD)
    t1 = t0 + width
    pts = [p for p in (7.0, 7.0 + dur) if t0 < p < t1]
    num, _ = quad(lambda t: terms.value(t), t0, t1, points=pts or None, epsabs=1e-9, epsrel=1e-11, limit=200)
    assert terms.integral(t0, t1) == pytest.approx(num, rel=1e-8, abs=1e-6)
    assert terms.average(t0, t1) == pytest.approx(num / width, rel=1e-8, abs=1e-6)


def test_bolus_within_a_step_average_is_exact():
    """A bolus peak shorter than the step: the step average is its exact integral, not a point sample."""
    bolus = terms_for("il2", "iv", 720000, "IU/kg", t0=3.0)
    avg = bolus.average(0.0, 10.0)
    disp = pk.disposition("il2", PKD)
    a = il2_amount_pmol(720000, "IU/kg")
    pairs = zip(disp.coef_per_l, disp.rate_per_min, strict=True)
    exact = sum(a * c * (1 - math.exp(-r * 7.0)) / r for c, r in pairs) / 10.0
    assert avg == pytest.approx(exact, rel=1e-12)
    assert bolus.value(0.0) == 0.0 and avg < bolus.value(3.0)


def test_superposition():
    a = terms_for("il2", "iv", 720000, "IU/kg", duration_min=15, t0=0.0)
    b = terms_for("il2", "sc", 5, "MIU/m2", t0=200.0)
    both = pk.Terms.concat([a, b])
    t = np.linspace(0, 2000, 401)
    np.testing.assert_allclose(both.value(t), a.value(t) + b.value(t), rtol=1e-12)
    assert both.integral(10, 900) == pytest.approx(a.integral(10, 900) + b.integral(10, 900), rel=1e-12)


def test_prune_keeps_the_future():
    t = terms_for("il2", "iv", 720000, "IU/kg", duration_min=15)
    later = t.prune(3000.0)
    assert len(later) < len(t)
    for s in (3000.0, 3100.0, 5000.0):
        assert later.value(s) == pytest.approx(t.value(s), rel=1e-12, abs=1e-300)
    assert len(t.prune(1e7)) == 0


def test_disposition_matches_bolus_terms():
    disp = pk.disposition("il2", PKD)
    t = pk.dose_terms("iv", 2.0, 0.0, disp)
    x = np.array([0.0, 5.0, 50.0, 500.0])
    np.testing.assert_allclose(t.value(x), 2.0 * disp(x))


def test_params_tree_carries_pk():
    p = Params()
    assert p.pk["il2"].volume_l == PKD["il2"].volume_l
    assert p.species["drug"].units == "uM"
