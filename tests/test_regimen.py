"""Regimens: validation, schedule expansion, and the Therapy orchestrator (plasma, toxicity, holds, DLT)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from abm.params import ParameterError, Params
from abm.therapy import EVENT_KEYS, Regimen, Therapy
from abm.therapy import pk as _pk
from abm.therapy.toxicity import advance_toxicity, toxicity_drive_per_min

DAY = 1440.0

HIGH_DOSE = {
    "description": "high-dose bolus IL-2",
    "doses": [
        {
            "drug": "il2",
            "route": "iv",
            "dose": 720000,
            "unit": "IU/kg",
            "duration_min": 15,
            "start_day": 0,
            "every_h": 8,
            "count": 14,
            "cycles": 2,
            "rest_days": 9,
        }
    ],
}
LOW_DOSE_SC = {
    "doses": [
        {"drug": "il2", "route": "sc", "dose": 5, "unit": "MIU/m2", "weeks": [1, 2, 3, 4], "weekdays": [1, 2, 3, 4, 5]}
    ]
}

TOML = """
[regimen]
description = "high-dose bolus IL-2 with LAK"
[[regimen.doses]]
drug = "il2"
route = "iv"
dose = 720000
unit = "IU/kg"
duration_min = 15
start_day = 0
every_h = 8
count = 14
cycles = 2
rest_days = 9
[[regimen.doses]]
drug = "il2"
route = "sc"
dose = 10
unit = "MIU/m2"
weeks = [1, 4]
weekdays = [3, 4, 5]
per_day = 2
[[regimen.transfers]]
day = 0
cells_per_infusion = 5e10
[regimen.dose_scale]
il2 = 1.0
ifna = 1.0
drug = 1.0
"""


def given_pattern(th: Therapy) -> str:
    sym = {"dose_given": "G", "dose_held": "h", "dose_cancelled": "x", "toxicity_dlt": "!"}
    return "".join(sym.get(e["kind"], "") for e in th.events)


# ------------------------------------------------------------------------------------------------ expansion
def test_high_dose_expansion():
    doses = Regimen.from_dict(HIGH_DOSE).expand(60)
    assert len(doses) == 28
    t = np.array([d.time_min for d in doses])
    assert np.all(np.diff(t[:14]) == 480.0) and np.all(np.diff(t[14:]) == 480.0)
    assert t[14] - t[13] == 9 * DAY  # 9 days' rest between the last dose of cycle 1 and the first of cycle 2
    assert [d.cycle for d in doses] == [0] * 14 + [1] * 14
    d = doses[0]
    assert (d.drug, d.route, d.unit, d.duration_min, d.amount_unit) == ("il2", "iv", "IU/kg", 15.0, "pmol")
    assert d.amount == pytest.approx(2.0086e5, rel=1e-3)  # pmol: 201 nmol
    assert d.amount_mol == pytest.approx(2.0086e-7, rel=1e-3)
    # truncated at the run length
    assert len(Regimen.from_dict(HIGH_DOSE).expand(10)) == 14
    assert len(Regimen.from_dict(HIGH_DOSE).expand(1)) == 3


def test_weekly_pattern_days_and_twice_daily_spacing():
    reg = Regimen.from_dict(
        {
            "doses": [
                {
                    "drug": "il2",
                    "route": "sc",
                    "dose": 10,
                    "unit": "MIU/m2",
                    "start_day": 0,
                    "weeks": [1, 4],
                    "weekdays": [3, 4, 5],
                    "per_day": 2,
                }
            ]
        }
    )
    t = np.array([d.time_min for d in reg.expand(60)])
    assert len(t) == 12
    assert sorted({int(x // DAY) for x in t}) == [2, 3, 4, 23, 24, 25]  # days 3-5 of weeks 1 and 4 (0-based days)
    assert np.all(np.diff(t)[::2] == 720.0)  # twice daily: 0 h and 12 h
    five_a_week = Regimen.from_dict(LOW_DOSE_SC).expand(28)
    assert len(five_a_week) == 20
    assert sorted({int(d.time_min // DAY) % 7 for d in five_a_week}) == [0, 1, 2, 3, 4]
    # start_day shifts the weeks
    shifted = Regimen.from_dict(
        {
            "doses": [
                {
                    "drug": "ifna",
                    "route": "sc",
                    "dose": 5,
                    "unit": "MIU/m2",
                    "start_day": 28,
                    "weeks": [1],
                    "weekdays": [1, 3, 5],
                }
            ]
        }
    ).expand(60)
    assert [d.time_min / DAY for d in shifted] == [28, 30, 32]


def test_single_dose_and_sorting_by_time_then_drug():
    reg = Regimen.from_dict(
        {
            "doses": [
                {"drug": "drug", "route": "iv", "dose": 1000, "unit": "mg/m2", "start_day": 1},
                {"drug": "ifna", "route": "sc", "dose": 5, "unit": "MIU/m2", "start_day": 1},
                {"drug": "il2", "route": "sc", "dose": 5, "unit": "MIU/m2", "every_h": 24, "count": 3},
            ]
        }
    )
    doses = reg.expand(10)
    assert [(d.time_min / DAY, d.drug) for d in doses] == [(0, "il2"), (1, "il2"), (1, "ifna"), (1, "drug"), (2, "il2")]
    assert doses[3].amount_unit == "umol"
    assert doses[3].amount == pytest.approx(1.8 / 130.08 * 1e6)


def test_toml_round_trip(tmp_path):
    path = tmp_path / "hd_lak.toml"
    path.write_text(TOML)
    reg = Regimen.from_toml(path)
    assert reg.description.startswith("high-dose")
    assert len(reg.expand(60)) == 28 + 12
    tr = reg.expand_transfers(60)
    assert [(x.time_min, x.cells) for x in tr] == [(0.0, 5e10)]
    assert Regimen.model_validate(reg.model_dump()) == reg
    empty = tmp_path / "untreated.toml"
    empty.write_text("[run]\ndays = 3\n")
    assert Regimen.from_toml(empty).untreated


def test_dose_scale_multiplies_doses():
    base = Regimen.from_dict(HIGH_DOSE).expand(1)[0]
    scaled = Regimen.from_dict({**HIGH_DOSE, "dose_scale": {"il2": 2.0}}).expand(1)[0]
    assert scaled.dose == 2 * base.dose and scaled.amount == pytest.approx(2 * base.amount)


def test_patient_scaling():
    heavy = Params().replace("patient.weight_kg=100")
    d = Regimen.from_dict(HIGH_DOSE).expand(1, heavy)[0]
    assert d.amount == pytest.approx(Regimen.from_dict(HIGH_DOSE).expand(1)[0].amount * 100 / 70)


# ----------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("block", "match"),
    [
        ({"drug": "il3"}, r"doses\.0\.drug'.*invalid choice \(got 'il3'\); allowed: 'il2', 'ifna' or 'drug'"),
        ({"unit": "IU/m3"}, r"regimen\.doses\.0\.unit'.*got 'IU/m3'.*allowed: 'IU/kg', 'MIU/m2', 'mg/m2'"),
        ({"route": "oral"}, r"regimen\.doses\.0\.route'.*allowed: 'iv', 'infusion' or 'sc'"),
        ({"every_h": 8}, r"regimen\.doses\.0': an interval \(every_h\) needs count"),
        ({"count": 3}, r"count > 1 needs every_h"),
        ({"weekdays": [1, 2]}, r"a weekly pattern needs weeks"),
        ({"weeks": [1]}, r"a weekly pattern needs weekdays"),
        ({"weeks": [1], "weekdays": [8]}, r"weekdays must be in 1-7"),
        ({"weeks": [1], "weekdays": [1], "every_h": 8, "count": 2}, r"not both"),
        ({"per_day": 2}, r"per_day applies to a weekly pattern"),
        ({"dose": -1}, r"regimen\.doses\.0\.dose'.*out of range \(got -1\); allowed range \[0"),
        ({"count": 1.5, "every_h": 8}, r"regimen\.doses\.0\.count'.*expected an integer"),
        ({"evry_h": 8}, r"unknown key 'regimen\.doses\.0\.evry_h'; did you mean 'regimen\.doses\.0\.every_h'\?"),
        ({"route": "infusion"}, r"route 'infusion' needs duration_h > 0"),
        ({"unit": "IU/kg/day"}, r"is a rate \(per day\) and needs route = 'infusion'"),
        ({"route": "sc", "duration_min": 15}, r"duration_min is for route 'iv' only"),
        (
            {"drug": "drug", "unit": "mg/m2", "route": "sc"},
            r"route 'sc' is not available for drug 'drug'; allowed "
            r"routes: iv, infusion",
        ),
        ({"drug": "drug", "unit": "IU"}, r"unit 'IU' is not valid for drug 'drug'; allowed units: mg/m2"),
    ],
)
def test_validation_errors_name_key_and_allowed_values(block, match):
    data = {"doses": [{"drug": "il2", "route": "iv", "dose": 1.0, "unit": "IU/kg", **block}]}
    with pytest.raises(ParameterError, match=match) as err:
        Regimen.from_dict(data, source="scenarios/x.toml")
    assert str(err.value).startswith("scenarios/x.toml: ")


def test_validation_errors_elsewhere():
    with pytest.raises(ParameterError, match=r"unknown key 'regimen\.dosse'; did you mean 'regimen\.doses'"):
        Regimen.from_dict({"dosse": []})
    with pytest.raises(ParameterError, match=r"regimen\.transfers\.0\.day'.*out of range"):
        Regimen.from_dict({"transfers": [{"day": -1, "cells_per_infusion": 5e9}]})
    with pytest.raises(ParameterError, match=r"regimen\.dose_scale\.il2'.*out of range"):
        Regimen.from_dict({"dose_scale": {"il2": -1.0}})
    with pytest.raises(ParameterError, match=r"days must be a finite number"):
        Therapy(Regimen(), Params(), -1)


# ------------------------------------------------------------------------------------------------- Therapy
def test_untreated():
    p = Params()
    th = Therapy(Regimen(), p, 2)
    assert Regimen().untreated
    for step in range(10):
        out = th.advance(step)
        assert out.plasma.dtype == np.float64 and out.plasma.shape == (len(p.species_names),)
        assert not out.plasma.any() and out.toxicity == 0.0 and out.events == [] and out.lak_cells == 0


def test_advance_must_be_called_in_order():
    th = Therapy(Regimen(), Params(), 1)
    th.advance(0)
    with pytest.raises(ValueError, match="expected step 1, got 3"):
        th.advance(3)


def test_plasma_is_the_exact_step_average_in_species_order():
    p = Params()
    reg = Regimen.from_dict(
        {
            "doses": [
                {"drug": "il2", "route": "iv", "dose": 720000, "unit": "IU/kg", "duration_min": 15, "start_day": 0.003},
                {"drug": "drug", "route": "iv", "dose": 1000, "unit": "mg/m2", "start_day": 0.01},
            ]
        }
    )
    th = Therapy(reg, p, 1)
    doses = reg.expand(1, p)
    il2 = _pk.scheduled_dose_terms("il2", "iv", doses[0].amount, doses[0].time_min, 15.0, p.pk)
    drug = _pk.scheduled_dose_terms("drug", "iv", doses[1].amount, doses[1].time_min, 0.0, p.pk)
    i_il2, i_drug = p.species_names.index("il2"), p.species_names.index("drug")
    dt = p.time.dt_min
    for step in range(30):
        out = th.advance(step)
        assert out.plasma[i_il2] == pytest.approx(il2.average(step * dt, (step + 1) * dt), rel=1e-12, abs=1e-12)
        assert out.plasma[i_drug] == pytest.approx(drug.average(step * dt, (step + 1) * dt), rel=1e-12, abs=1e-15)
        assert out.plasma[p.species_names.index("ifna")] == 0.0
    # the dose at 4.32 min lands in step 0 and its curve starts there
    assert th.events[0]["step"] == 0 and th.events[0]["kind"] == "dose_given"
    assert set(th.events[0]) == set(EVENT_KEYS)


def test_superposition_through_therapy():
    p = Params()
    one = {"drug": "il2", "route": "sc", "dose": 5, "unit": "MIU/m2"}
    two = {"drug": "il2", "route": "iv", "dose": 72000, "unit": "IU/kg", "start_day": 0.25}
    runs = [Therapy(Regimen.from_dict({"doses": d}), p, 1).run() for d in ([one], [two], [one, two])]
    a, b, ab = (np.array([s.plasma for s in r]) for r in runs)
    np.testing.assert_allclose(ab, a + b, rtol=1e-12, atol=1e-12)


def test_transfers_inject_lak_cells_at_their_step():
    reg = Regimen.from_dict(
        {"transfers": [{"day": 0, "cells_per_infusion": 5e10}, {"day": 1.5, "cells_per_infusion": 2e10}]}
    )
    th = Therapy(reg, Params(), 3)
    out = th.run()
    lak = [(i, s.lak_cells) for i, s in enumerate(out) if s.lak_cells]
    assert lak == [(0, 5e10), (216, 2e10)]
    assert [e["kind"] for e in th.events] == ["transfer", "transfer"]
    assert th.summary()["lak_cells"] == 7e10


def test_toxicity_integration_matches_an_ode_solver():
    p = Params()
    a = Regimen.from_dict(HIGH_DOSE).expand(1, p)[0].amount
    terms = _pk.scheduled_dose_terms("il2", "iv", a, 3.0, 15.0, p.pk)
    tau = p.toxicity.recovery_time_h * 60.0
    s, t = 0.2, 0.0
    for _ in range(60):  # 10 h in 10-min steps
        s, _cross = advance_toxicity(s, t, t + 10.0, terms, p.toxicity)
        t += 10.0
    ref = solve_ivp(
        lambda t, y: toxicity_drive_per_min(terms.value(t), p.toxicity) - y / tau,
        (0.0, 600.0),
        [0.2],
        method="LSODA",
        rtol=1e-10,
        atol=1e-12,
        max_step=1.0,
    )
    assert s == pytest.approx(ref.y[0, -1], rel=1e-6)
    # without IL-2 the score recovers exactly exponentially
    s, _ = advance_toxicity(0.8, 0.0, 1440.0, _pk.Terms.empty(), p.toxicity)
    assert s == pytest.approx(0.8 * math.exp(-1440.0 / tau))


def test_default_high_dose_gives_holds_and_no_dlt():
    th = Therapy(Regimen.from_dict(HIGH_DOSE), Params(), 28)
    out = th.run()
    summ = th.summary()
    assert not summ["dlt"] and not out[-1].course_stopped
    assert summ["doses_held"] > 0 and summ["doses_cancelled"] == 0
    assert summ["doses_given"] + summ["doses_held"] == 28
    per_cycle = [
        sum(1 for e in th.events if e["kind"] == "dose_given" and (e["time_min"] < 10 * DAY) == c)
        for c in (True, False)
    ]
    assert all(5 <= n <= 10 for n in per_cycle)  # clinic: a median of about 8 of 14
    assert 0.5 < summ["max_toxicity"] < 1.0
    held = [e for e in th.events if e["kind"] == "dose_held"]
    assert all("hold threshold" in e["note"] for e in held)
    assert sum(s.doses_held for s in out) == summ["doses_held"]


def test_twice_the_high_dose_reaches_a_dlt_and_cancels_the_rest():
    p = Params()
    th = Therapy(Regimen.from_dict({**HIGH_DOSE, "dose_scale": {"il2": 2.0}}), p, 28)
    out = th.run()
    kinds = [e["kind"] for e in th.events]
    assert kinds.count("toxicity_dlt") == 1
    i = kinds.index("toxicity_dlt")
    assert set(kinds[i + 1 :]) == {"dose_cancelled"}
    assert th.summary()["doses_given"] + th.summary()["doses_held"] + th.summary()["doses_cancelled"] == 28
    dt = p.time.dt_min
    for e in th.events[i + 1 :]:
        assert e["step"] == math.floor(e["time_min"] / dt + 1e-9)  # at its own scheduled step
    dlt_step = th.events[i]["step"]
    assert all(s.course_stopped == (k >= dlt_step) for k, s in enumerate(out))
    assert max(s.toxicity for s in out) >= p.patient.toxicity_dlt_threshold


def test_low_dose_sc_gives_no_holds():
    th = Therapy(Regimen.from_dict(LOW_DOSE_SC), Params(), 28)
    th.run()
    assert th.summary()["doses_held"] == 0 and th.summary()["doses_given"] == 20
    assert th.summary()["max_toxicity"] < 0.1


def test_forced_holds_are_events_and_hold_every_drug():
    p = Params().replace("patient.toxicity_hold_threshold=1e-9", "patient.toxicity_dlt_threshold=100")
    reg = Regimen.from_dict(
        {
            "doses": [
                {"drug": "il2", "route": "sc", "dose": 5, "unit": "MIU/m2", "every_h": 24, "count": 5},
                {"drug": "ifna", "route": "sc", "dose": 5, "unit": "MIU/m2", "start_day": 1},
                {"drug": "drug", "route": "iv", "dose": 1000, "unit": "mg/m2", "start_day": 2},
            ]
        }
    )
    th = Therapy(reg, p, 7)
    out = th.run()
    kinds = [(e["kind"], e["drug"]) for e in th.events]
    assert kinds[0] == ("dose_given", "il2")  # the score is 0 before the first dose
    assert all(k == "dose_held" for k, _ in kinds[1:])
    assert {d for _, d in kinds[1:]} == {"il2", "ifna", "drug"}
    assert sum(s.doses_held for s in out) == 6 and sum(s.doses_given for s in out) == 1
    held_steps = [k for k, s in enumerate(out) if s.doses_held]
    assert held_steps == [144, 288, 432, 576]
    # held doses leave no plasma trace
    assert np.all(np.array([s.plasma[p.species_names.index("drug")] for s in out]) == 0.0)


def test_result_does_not_depend_on_the_step():
    pats = []
    for dt in (5.0, 10.0, 30.0):
        th = Therapy(Regimen.from_dict(HIGH_DOSE), Params().replace(f"time.dt_min={dt}"), 28)
        th.run()
        pats.append(given_pattern(th))
    assert pats[0] == pats[1] == pats[2]


def test_shift_days_moves_every_dose_of_one_drug_and_drops_those_before_day_0():
    """regimen.shift_days.<drug> (schedule-order sweeps): every dose of that drug moves by the shift, the other
    drugs' doses stay, and a dose moved before day 0 is not given."""
    from abm.scenario import Scenario

    base = Scenario.load("il2_ifna_5fu", sets=["run.days=84"])
    moved = Scenario.load("il2_ifna_5fu", sets=["run.days=84", "regimen.shift_days.drug=-35"])

    def times(sc, drug):
        return [d.time_min for d in sc.regimen.expand(84, sc.params) if d.drug == drug]

    t0, t1 = times(base, "drug"), times(moved, "drug")
    assert len(t0) == 4 and len(t1) == 3  # the first dose (day 28) would fall on day -7
    assert t1 == [t - 35 * 1440.0 for t in t0[1:]]
    assert times(base, "il2") == times(moved, "il2")
