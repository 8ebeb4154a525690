"""RECIST 1.1 at visits (abm.trial.recist) on made-up trajectories and made-up lattices: baseline, nadir, the floor
standing in for 5 mm, confirmation, best overall response, the fragmented lesion of issue 14."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abm.errors import ParameterError
from abm.params.core import Layer, build
from abm.trial.recist import Assessor, Measurement, RecistParams, assess_series, measure_lattice

DAY = np.arange(0, 200, 1.0)
H_UM = 20.0


def rule(**kw) -> RecistParams:
    return RecistParams(**kw)


def series(points: dict[float, float], cells: dict[float, int] | None = None, base: float = 0.62):
    """A step series: the sum is ``base`` until the first key, then each value from its day on."""
    s = np.full(DAY.shape, base)
    n = np.full(DAY.shape, 500)
    for d in sorted(points):
        s[DAY >= d] = points[d]
    for d in sorted(cells or {}):
        n[DAY >= d] = cells[d]
    return s, n


# ------------------------------------------------------------------------------------------------ the schedule
def test_schedule_default_every_8_weeks_to_follow_up():
    r = rule()
    assert r.scheduled_days() == [56.0, 112.0]
    assert r.last_day == 112.0 + 28.0  # a confirmation scan after the last visit


def test_schedule_explicit_weeks_and_first_visit():
    assert rule(visit_weeks=[10], follow_up_weeks=10).scheduled_days() == [70.0]
    assert rule(first_visit_week=4, visit_every_weeks=6, follow_up_weeks=16).scheduled_days() == [28.0, 70.0, 112.0]
    assert rule(confirmation_scan=False).last_day == 112.0


def test_schedule_errors_name_the_key():
    with pytest.raises(ParameterError, match=r"f\.toml: key 'recist'.*no assessment is scheduled"):
        build(_Doc, [Layer("f.toml", {"recist": {"first_visit_week": 20, "follow_up_weeks": 12}})], "f.toml")
    with pytest.raises(ParameterError, match=r"f\.toml: key 'recist.partial_response'"):
        build(_Doc, [Layer("f.toml", {"recist": {"partial_response": 1.5}})])
    with pytest.raises(ParameterError, match="visit_weeks must increase"):
        build(_Doc, [Layer("f.toml", {"recist": {"visit_weeks": [8, 4]}})], "f.toml")


from pydantic import Field  # noqa: E402

from abm.params.core import Group  # noqa: E402


class _Doc(Group):
    recist: RecistParams = Field(default_factory=RecistParams)


# ------------------------------------------------------------------------------------------------ responses
def test_confirmed_partial_response_by_a_scan_four_weeks_later():
    s, n = series({30: 0.3})  # -52% from day 30 on
    a = assess_series(DAY, s, n, rule())
    days = [p.day for p in a.points]
    assert days == [56.0, 84.0, 112.0]  # the scheduled visits and the confirmation scan between them
    assert [p.scheduled for p in a.points] == [True, False, True]
    res = a.result()
    assert res["best_response"] == "PR" and res["responder"]
    assert res["time_to_response_day"] == 56.0
    assert res["best_change_pct"] == pytest.approx(100 * (0.3 / 0.62 - 1))
    assert res["response_ongoing"] and res["duration_of_response_day"] == 56.0


def test_response_not_confirmed_is_stable_disease():
    s, n = series({50: 0.3, 70: 0.55})  # PR at week 8, back above -30% by the confirmation scan
    a = assess_series(DAY, s, n, rule())
    res = a.result()
    assert [p.response for p in a.points][:2] == ["PR", "PD"]  # 0.55 >= 1.2 x nadir 0.3 and +0.25 mm
    assert res["best_response_unconfirmed"] == "PR"
    assert res["best_response"] == "SD"  # PR then PD: SD, since week 8 is past the 6-week minimum for SD
    assert not res["responder"]
    assert res["progressed"] and res["time_to_progression_day"] == 84.0


def test_confirmed_complete_response_needs_two_cr_four_weeks_apart():
    s, n = series({40: 0.0}, {40: 0})
    a = assess_series(DAY, s, n, rule())
    res = a.result()
    assert res["best_response"] == "CR"
    assert res["time_to_cr_day"] == 56.0 and res["time_to_response_day"] == 56.0
    assert res["best_change_pct"] == -100.0
    # the run stops once the CR is confirmed: nothing later can change the best response
    assert [p.day for p in a.points] == [56.0, 84.0]
    b = assess_series(DAY, s, n, rule(stop_after_confirmed_cr=False))
    assert [p.day for p in b.points] == [56.0, 84.0, 112.0]


def test_cr_without_confirmation_then_reappearance_is_progression():
    s, n = series({40: 0.0, 60: 0.04}, {40: 0, 60: 6})  # gone at week 8, six cells back by the scan
    a = assess_series(DAY, s, n, rule())
    assert [p.response for p in a.points] == ["CR", "PD"]
    assert a.result()["best_response"] == "SD"
    assert a.result()["best_response_unconfirmed"] == "CR"


def test_growth_before_therapy_acts_is_not_locked_in():
    """Issue 14: judged at every step, a tumour that grows first (+60% at day 10) was locked into progression;
    at visits only the assessments count."""
    s, n = series({5: 0.8, 10: 1.0, 25: 0.35})
    res = assess_series(DAY, s, n, rule()).result()
    assert res["best_response"] == "PR"


def test_progression_is_against_the_nadir_and_needs_the_floor():
    # nadir 0.05 mm: +60% is only +0.03 mm, below the 0.1 mm floor standing in for RECIST's 5 mm: not PD
    r = rule(visit_every_weeks=4, follow_up_weeks=16)
    s, n = series({20: 0.05, 50: 0.08})
    a = assess_series(DAY, s, n, r)
    assert "PD" not in [p.response for p in a.points]
    s, n = series({20: 0.05, 50: 0.16})  # +0.11 mm over the nadir: PD
    a = assess_series(DAY, s, n, r)
    assert [p.response for p in a.points] == ["PR", "PD"]
    # without the floor the first series is PD (the floor is what stops it)
    s, n = series({20: 0.05, 50: 0.08})
    a = assess_series(DAY, s, n, rule(visit_every_weeks=4, follow_up_weeks=16, progression_min_increase_mm=0))
    assert [p.response for p in a.points] == ["PR", "PD"]


def test_growth_over_baseline_is_progression_and_ends_the_study():
    s, n = series({30: 0.9})
    a = assess_series(DAY, s, n, rule())
    assert [p.response for p in a.points] == ["PD"]  # off study: no assessment after the first PD
    assert a.done()
    res = a.result()
    assert res["best_response"] == "PD" and res["time_to_progression_day"] == 56.0
    b = assess_series(DAY, s, n, rule(off_study_at_progression=False))
    assert [p.response for p in b.points] == ["PD", "PD"]


def test_stable_disease_needs_the_minimum_interval():
    s, n = series({})  # unchanged
    assert assess_series(DAY, s, n, rule(visit_weeks=[4, 12], follow_up_weeks=12)).result()["best_response"] == "SD"
    # one early assessment only (week 4 < 6): not evaluable; early SD then PD: PD
    assert assess_series(DAY, s, n, rule(visit_weeks=[4], follow_up_weeks=4)).result()["best_response"] == "NE"
    s, n = series({40: 0.9})
    assert assess_series(DAY, s, n, rule(visit_weeks=[4, 8], follow_up_weeks=8)).result()["best_response"] == "PD"


def test_no_measurable_lesion_at_baseline_is_not_evaluable():
    s, n = series({}, base=0.0)
    a = assess_series(DAY, s, n, rule())
    assert a.result()["best_response"] == "NE" and not a.result()["evaluable"]
    assert a.points == [] and a.done()


def test_confirmation_by_the_next_visit_when_visits_are_close():
    s, n = series({20: 0.3})
    a = assess_series(DAY, s, n, rule(visit_every_weeks=4, follow_up_weeks=12))
    assert all(p.scheduled for p in a.points)  # no extra scan: the next visit is 4 weeks on
    assert a.result()["best_response"] == "PR"


def test_a_later_response_needs_consecutive_confirmation():
    # PR at week 4, SD at week 8, PR at week 12 and 16: confirmed by weeks 12 -> 16, not by 4 -> 12
    s, n = series({20: 0.3, 50: 0.5, 80: 0.3})
    a = assess_series(DAY, s, n, rule(visit_every_weeks=4, follow_up_weeks=16, progression_min_increase_mm=1))
    assert [p.response for p in a.points] == ["PR", "SD", "PR", "PR"]
    assert a.result()["time_to_response_day"] == 84.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 1.5), st.integers(0, 3)), min_size=6, max_size=6))
def test_confirmed_best_response_is_never_better_than_unconfirmed(visits):
    order = {"CR": 0, "PR": 1, "SD": 2, "PD": 3, "NE": 4}
    a = Assessor(rule(visit_every_weeks=4, follow_up_weeks=24, confirmation_scan=False))
    a.add(0.0, Measurement(0.6, 500, 1, 1, 0.6))
    for (s, c), d in zip(visits, [28, 56, 84, 112, 140, 168]):
        if a.done():
            break
        cells = 0 if c == 0 else 100
        a.add(float(d), Measurement(0.0 if cells == 0 else s, cells, 1, 1, s))
    conf, unc = a.best_response(True), a.best_response(False)
    assert order[conf] >= order[unc]
    if conf == "CR":
        crs = [p.day for p in a.points if p.response == "CR"]
        assert max(crs) - min(crs) >= 28
    assert all(p.response != "PD" for p in a.points[:-1])  # off study at the first PD


# ------------------------------------------------------------------------------------------------ the lattice
def _lattice(nx: int = 200, ny: int = 200) -> np.ndarray:
    return np.zeros((ny, nx), dtype=bool)


def _disc(m: np.ndarray, cx: int, cy: int, r: float) -> None:
    y, x = np.mgrid[: m.shape[0], : m.shape[1]]
    m[(x - cx) ** 2 + (y - cy) ** 2 <= r * r] = True


def _measure(m: np.ndarray, r: RecistParams | None = None):
    ny, nx = m.shape
    return measure_lattice(m.ravel(), (nx, ny, 1), H_UM, r or rule())


def test_a_disc_measures_its_diameter():
    m = _lattice()
    _disc(m, 100, 100, 15)
    got = _measure(m)
    assert got.fragments == 1 and got.measurable == 1
    assert got.sum_mm == pytest.approx(31 * 0.02, abs=0.011)  # 30 sites centre to centre + one cell
    assert got.cells == m.sum()


def test_fragments_closer_than_the_merge_distance_are_one():
    m = _lattice(60, 20)
    m[5:10, 5:10] = True
    m[5:10, 12:17] = True  # a gap of 2 free sites = 40 um: one fragment
    assert _measure(m).fragments == 1
    m[5:10, 12:17] = False
    m[5:10, 13:18] = True  # a gap of 3 sites: two
    got = _measure(m)
    assert got.fragments == 2 and got.sum_mm == pytest.approx(2 * (math.hypot(4, 4) + 1) * 0.02)
    assert _measure(m, rule(merge_distance_um=80)).fragments == 1


def test_fragments_below_the_measurable_size_do_not_count():
    m = _lattice(60, 60)
    m[10:12, 10:12] = True  # 2 x 2: (sqrt 2 + 1) sites = 0.048 mm
    m[40, 40] = True
    got = _measure(m)
    assert got.fragments == 2 and got.measurable == 0 and got.sum_mm == 0.0 and got.cells == 5
    assert _measure(m, rule(measurable_min_mm=0.01)).sum_mm == pytest.approx((math.sqrt(2) + 1 + 1) * 0.02)


def test_three_dimensional_lattice():
    nx = ny = nz = 20
    z, y, x = np.mgrid[:nz, :ny, :nx]
    ball = (x - 10) ** 2 + (y - 10) ** 2 + (z - 10) ** 2 <= 25
    got = measure_lattice(ball.ravel(), (nx, ny, nz), H_UM, rule())
    assert got.fragments == 1 and got.sum_mm == pytest.approx(11 * 0.02, abs=0.001)


def test_the_fragmented_lesion_of_issue_14():
    """716 cells -> 68 (-90%) while the caliper grew 0.62 -> 0.82 mm across separate fragments: judged on one
    caliper this is progression; on the sum of fragment diameters (RECIST 1.1 s4.3) a partial response."""
    base = _lattice()
    _disc(base, 100, 100, 15)
    after = _lattice()
    for cx in (80, 100, 120):  # three 4 x 4 clusters spread over 41 sites (0.82 mm) ...
        after[98:102, cx - 2 : cx + 2] = True
    rng = np.random.default_rng(3)
    free = np.argwhere(~after[60:140, 60:140])
    for i in rng.choice(len(free), 20, replace=False):  # ... and 20 scattered single cells
        after[60 + free[i][0], 60 + free[i][1]] = True
    n_after = int(after.sum())
    assert 64 <= n_after <= 68
    m0, m1 = _measure(base), _measure(after)
    assert m0.cells == pytest.approx(716, abs=20)
    assert m0.sum_mm == pytest.approx(0.62, abs=0.011)
    assert m1.measurable == 3 and m1.sum_mm == pytest.approx(3 * (math.hypot(3, 3) + 1) * 0.02)
    # the same patient's assessments (week 8, the scan at week 12) on the two measures
    days = np.array([0.0, 56.0, 84.0])
    cells = np.array([m0.cells, n_after, n_after])
    frag = assess_series(days, np.array([m0.sum_mm, m1.sum_mm, m1.sum_mm]), cells, rule())
    caliper = assess_series(days, np.array([0.62, 0.82, 0.82]), cells, rule(measure="caliper"))
    assert frag.result()["best_response"] == "PR"
    assert frag.result()["best_change_pct"] == pytest.approx(100 * (m1.sum_mm / m0.sum_mm - 1))
    assert caliper.result()["best_response"] == "PD"
