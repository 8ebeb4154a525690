"""Equivalence of the fast model (abm.Model: arrays + Numba, counter-based draws) and the plain-Mesa reference
(abm.reference: one agent per cell, Mesa's random stream) in distribution.

Design
------
Each model is run from ``N_SEEDS`` independent seeds (disjoint seed ranges, so the samples are independent; the
initial placement is drawn from the seed in both) on a small 2D lattice with an immune infiltrate next to a
~50-cell tumour, for a short span. For every observable in ``OBSERVABLES`` (counts at the end and half-way, tumour
area, cumulative kills by type, divisions, AICD deaths) a Welch t-test compares the two samples' means. The family
(all observables of all scenarios in one test) is held at ``FAMILY_ALPHA`` with a Bonferroni correction, so a
correct pair of models fails the test with probability <= FAMILY_ALPHA; seeds are fixed, so the result is
reproducible. The power of each test against a shift of one standard deviation is computed and asserted.

A negative check doubles ``ctl.kill_prob`` in the reference only: the same statistic must flag it.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from scipy import stats

import abm
from abm.reference import ReferenceModel

SETS = [
    "lattice.nx=30",
    "lattice.ny=30",
    "init.tumour_cells=50",
    "init.ctl_cells=15",
    "init.nk_cells=10",
    "init.lak_cells=2",
    "init.immune_within_um=100",
]
SCENARIOS = {"untreated": [], "high_dose_il2": []}
DAYS = 1.0
N_SEEDS = 45
FAMILY_ALPHA = 0.01
EFFECT_SD = 1.0  # the shift (in standard deviations) the tests must detect with MIN_POWER
MIN_POWER = 0.8
END_COUNTS = ("n_tumour", "n_ctl", "n_nk", "n_lak", "tumour_area_mm2")
CUMULATIVE = (
    "kills_ctl",
    "kills_nk",
    "kills_lak",
    "divisions_tumour",
    "divisions_ctl",
    "deaths_ctl_aicd",
    "ctl_engaged",
)
OBSERVABLES = END_COUNTS + ("n_tumour_half",) + tuple(f"total_{k}" for k in CUMULATIVE)
ABM_SEED0, REF_SEED0 = 1, 100_001


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Results do not depend on the thread count (counter-based draws); one thread avoids the per-call cost of
    waking a thread team on these tiny lattices on a shared machine."""
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(old)


def _summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    out = {k: rows[-1][k] for k in END_COUNTS}
    out["n_tumour_half"] = rows[len(rows) // 2]["n_tumour"]
    for k in CUMULATIVE:
        out[f"total_{k}"] = float(sum(r[k] for r in rows[1:]))
    return out


def _run_abm(scenario: str, seed: int, sets: list[str], days: float) -> dict[str, float]:
    m = abm.Model(scenario, seed=seed, sets=sets)
    rows = [m.latest]
    for _ in range(m.steps_for_days(days)):
        m.step()
        rows.append(m.latest)
    return _summarise(rows)


def _run_ref(scenario: str, seed: int, sets: list[str], days: float) -> dict[str, float]:
    m = ReferenceModel(scenario, seed=seed, sets=sets)
    rows = [m.latest]
    for _ in range(int(round(days * 1440.0 / m.dt_min))):
        m.step()
        rows.append(m.latest)
    return _summarise(rows)


def sample(runner, scenario: str, seed0: int, n: int, sets: list[str], days: float) -> dict[str, np.ndarray]:
    rows = [runner(scenario, seed0 + i, sets, days) for i in range(n)]
    return {k: np.array([r[k] for r in rows]) for k in OBSERVABLES}


def welch_pvalues(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """Two-sided Welch t-test p-value per observable; 1 when both samples are the same constant, 0 when they are
    different constants."""
    out = {}
    for k in OBSERVABLES:
        x, y = a[k], b[k]
        if np.var(x) == 0 and np.var(y) == 0:
            out[k] = 1.0 if x[0] == y[0] else 0.0
        else:
            out[k] = float(stats.ttest_ind(x, y, equal_var=False).pvalue)
    return out


def power_two_sample(n: int, alpha: float, effect_sd: float) -> float:
    """Power of a two-sided two-sample t-test (n per arm, equal variances) against a shift of effect_sd SDs."""
    df = 2 * n - 2
    nc = effect_sd * np.sqrt(n / 2.0)
    t = stats.t.ppf(1 - alpha / 2, df)
    return float(1 - stats.nct.cdf(t, df, nc) + stats.nct.cdf(-t, df, nc))


@pytest.fixture(scope="module")
def samples():
    out = {}
    for name, extra in SCENARIOS.items():
        sets = SETS + extra
        out[name] = (
            sample(_run_abm, name, ABM_SEED0, N_SEEDS, sets, DAYS),
            sample(_run_ref, name, REF_SEED0, N_SEEDS, sets, DAYS),
        )
    return out


def _alpha_per_test(n_scenarios: int) -> float:
    return FAMILY_ALPHA / (len(OBSERVABLES) * n_scenarios)


def test_design_has_power():
    """With N_SEEDS per arm, each Bonferroni-corrected test detects a one-SD shift with probability >= 0.8."""
    assert power_two_sample(N_SEEDS, _alpha_per_test(len(SCENARIOS)), EFFECT_SD) >= MIN_POWER


def test_reference_matches_abm_in_distribution(samples):
    alpha = _alpha_per_test(len(SCENARIOS))
    report, failures = [], []
    for name, (a, r) in samples.items():
        # the scenarios must exercise the rules being compared
        assert a["total_kills_ctl"].mean() > 5 and r["total_kills_ctl"].mean() > 5, name
        assert a["total_kills_nk"].mean() > 0.5 and a["total_divisions_tumour"].mean() > 1, name
        assert a["total_kills_lak"].mean() > 0.5, name
        for k, p in welch_pvalues(a, r).items():
            report.append(f"{name}:{k} abm {a[k].mean():.3g} ref {r[k].mean():.3g} p={p:.3g}")
            if p < alpha:
                failures.append(report[-1])
    print("\n".join(report))
    assert not failures, f"distributions differ at Bonferroni alpha {alpha:.2g}:\n" + "\n".join(failures)


@pytest.mark.slow  # a broken rule must fail the equivalence test (23 s); the equivalence stays default
def test_broken_rule_is_detected(samples):
    """Doubling ctl.kill_prob in the reference only must be flagged by the same statistic."""
    a, _ = samples["untreated"]
    base = abm.Scenario.load("untreated", sets=SETS).params.ctl.kill_prob
    broken = sample(_run_ref, "untreated", REF_SEED0, N_SEEDS, SETS + [f"ctl.kill_prob={2 * base!r}"], DAYS)
    p = welch_pvalues(a, broken)
    alpha = _alpha_per_test(len(SCENARIOS))
    print({k: f"{v:.2g}" for k, v in p.items()})
    assert min(p.values()) < alpha
    assert p["total_kills_ctl"] < alpha or p["n_tumour"] < alpha


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["untreated", "high_dose_il2", "lak_il2", "il2_ifna_5fu"])
def test_reference_matches_abm_longer(scenario):
    """Heavier variant: 3 days, 60 seeds per arm, larger lattice, more scenarios (LAK transfer, IFN, drug)."""
    sets = [
        "lattice.nx=40",
        "lattice.ny=40",
        "init.tumour_cells=120",
        "init.ctl_cells=20",
        "init.nk_cells=15",
        "init.immune_within_um=100",
    ]
    n, days = 60, 3.0
    a = sample(_run_abm, scenario, ABM_SEED0, n, sets, days)
    r = sample(_run_ref, scenario, REF_SEED0, n, sets, days)
    alpha = FAMILY_ALPHA / len(OBSERVABLES)
    p = welch_pvalues(a, r)
    bad = {k: v for k, v in p.items() if v < alpha}
    assert not bad, {k: (a[k].mean(), r[k].mean(), v) for k, v in bad.items()}


def test_reference_matches_abm_under_the_blocks_schedule():
    """``time.cell_schedule = "blocks"`` (the parallel cell step's rule) in both models: the reference visits the
    cells colour by colour, block by block, as abm's blocks run in parallel. On 30 x 30 the lattice is 3 x 3 blocks
    of 10 sites, and the lesion straddles their edges."""
    sets = [*SETS, "time.cell_schedule=blocks"]
    a = sample(_run_abm, "high_dose_il2", ABM_SEED0, N_SEEDS, sets, DAYS)
    r = sample(_run_ref, "high_dose_il2", REF_SEED0, N_SEEDS, sets, DAYS)
    assert a["total_kills_ctl"].mean() > 5 and r["total_kills_ctl"].mean() > 5
    alpha = FAMILY_ALPHA / len(OBSERVABLES)
    p = welch_pvalues(a, r)
    print({k: f"{v:.2g}" for k, v in p.items()})
    bad = {k: (a[k].mean(), r[k].mean(), v) for k, v in p.items() if v < alpha}
    assert not bad, bad
