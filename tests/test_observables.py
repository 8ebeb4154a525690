"""RECIST-like classification and the lesion diameter."""

import numpy as np
import pytest

from abm.kernels import cells as K
from abm.observables import Observer, best_overall_response, classify, run_outcome
from abm.params import Params
from abm.state import initial_state

R = Params().response
DAY = 1440.0


def test_classify_thresholds():
    d = np.array([10.0, 9.0, 6.9, 7.1, 8.5, 0.0])  # 7.0 would be exactly 30% shrinkage: PR
    n = np.array([100, 90, 50, 60, 80, 0])
    assert list(classify(d, n, R)) == ["SD", "SD", "PR", "SD", "PD", "CR"]


def test_a_vanished_lesion_is_not_progression_until_it_reappears():
    """Scattered survivors leave cells but no measurable lesion (diameter 0): that is a response, not PD; a lesion
    that forms again after the nadir 0 is progression."""
    d = np.array([10.0, 4.0, 0.0, 0.0, 0.0, 8.0])
    n = np.array([100, 40, 3, 2, 2, 9])
    assert list(classify(d, n, R)) == ["SD", "PR", "PR", "PR", "PR", "PD"]


def test_best_response_needs_sd_to_last():
    t = np.arange(0, 60) * DAY
    growing = 10.0 * 1.01 ** np.arange(60)  # +20% over the nadir on day 19, before 42 days
    n = np.full(60, 100)
    assert best_overall_response(t, classify(growing, n, R), R) == "PD"
    stable = np.full(60, 10.0)
    assert best_overall_response(t, classify(stable, n, R), R) == "SD"
    late = np.r_[np.full(50, 10.0), np.full(10, 13.0)]  # progression only after 42 days: SD was reached
    assert best_overall_response(t, classify(late, n, R), R) == "SD"
    shrink = np.r_[np.full(5, 10.0), np.full(55, 6.0)]
    assert best_overall_response(t, classify(shrink, n, R), R) == "PR"


def test_run_outcome_reports_partial_response_and_times():
    t = np.arange(0, 11) * DAY
    d = np.array([10, 9, 8, 6.9, 6, 5, 5, 5, 5, 5, 5], dtype=float)
    n = np.full(11, 100.0)
    out = run_outcome(t, d, n, R)
    assert out["best_response"] == "PR" and out["response"] == "PR"
    assert out["time_to_regression_day"] == pytest.approx(3.0)
    assert np.isnan(out["time_to_eradication_day"])


def _observer_with_tumour(sites):
    p = Params.from_overrides(
        sets=[
            "lattice.nx=40",
            "lattice.ny=40",
            "init.tumour_cells=0",
            "init.tumour_radius_um=0",
            "patient.vessel_fraction=0",
        ]
    )
    st = initial_state(p, seed=1)
    K.compact(st.cells, st.occupancy)
    for i in range(st.n_cells):
        K.remove(st.cells, st.occupancy, i)
    K.compact(st.cells, st.occupancy)
    for s in sites:
        K.spawn(st.cells, st.occupancy, int(s), K.TUMOUR, 0.3)
    obs = Observer(p, st.lattice)
    out = obs.measure(st, K.empty_counters(), np.zeros(len(p.species_names)), 0.0, 0, 0)
    return st.lattice, out


def test_lesion_diameter_ignores_scattered_survivors():
    from abm.lattice import Lattice

    lat = Lattice(40, 40)
    block = [lat.index(x, y) for x in range(10, 20) for y in range(10, 20)]  # a 10 x 10 mass
    _, compact = _observer_with_tumour(block)
    h = 0.02
    assert compact["tumour_lesion_diameter_mm"] == pytest.approx(compact["tumour_longest_diameter_mm"])
    assert compact["tumour_longest_diameter_mm"] == pytest.approx((9 * 2**0.5 + 1) * h, rel=1e-3)
    scattered = [lat.index(2, 2), lat.index(37, 37), lat.index(2, 37)]  # isolated survivors far apart
    _, mixed = _observer_with_tumour(block[:16] + scattered)
    assert mixed["tumour_longest_diameter_mm"] > 0.9  # the caliper spans the scattered cells
    assert mixed["tumour_lesion_diameter_mm"] < 0.2  # the lesion is the small remaining mass
    _, only_scattered = _observer_with_tumour(scattered)
    assert only_scattered["tumour_lesion_diameter_mm"] == 0.0 and only_scattered["n_tumour"] == 3
