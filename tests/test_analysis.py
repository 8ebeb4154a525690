"""abm.sweep.analysis: intervals, Emax/Hill fits, ED50/TD50 and the therapeutic index, clinical dose units, the
small-sweep warning, and the combination intervals, on data whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from abm.sweep import SweepSpec, run_sweep
from abm.sweep import analysis as an


def fake(summary: pd.DataFrame, keys: list[str], base: str | None = None) -> dict:
    spec = {"design": "grid", "seed": 1, "name": "fake", "analysis": "dose_response"}
    if base:
        spec["base"] = base
    return {"summary": summary, "parameters": keys, "design": summary, "spec": spec, "failures": pd.DataFrame()}


def dose_rows(spec: dict[float, tuple[int, int, float]], n: int, auc=lambda d, i: 100.0) -> pd.DataFrame:
    """``spec``: dose -> (responders, DLTs, peak toxicity), ``n`` runs per dose."""
    rows = []
    for d, (k, dlt, tox) in spec.items():
        for i in range(n):
            rows.append(
                {
                    "regimen.dose_scale.il2": d,
                    "best_response": "PR" if i < k else "SD",
                    "tumour_auc_cell_days": auc(d, i),
                    "toxicity_max": tox,
                    "doses_held": 0,
                    "doses_given": 1,
                    "dose_limiting_toxicity": i < dlt,
                }
            )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ intervals
def test_exact_interval_is_never_zero_width_at_zero_of_four():
    from scipy import stats

    lo, hi = an.proportion_ci(0, 4)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025**0.25)  # Clopper-Pearson: 1 - (alpha/2)^(1/n) = 0.602
    ci = stats.binomtest(6, 12).proportion_ci(method="exact")
    assert an.proportion_ci(6, 12) == pytest.approx((ci.low, ci.high))
    assert an.proportion_ci(4, 4)[0] == pytest.approx(0.025**0.25)


def test_small_sweep_rule_and_warning():
    assert an.min_replicates() == 17  # the fewest runs with every exact 95% interval under +-0.25
    lo, hi = an.proportion_ci(8, 16)
    assert (hi - lo) / 2 > 0.25
    lo, hi = an.proportion_ci(8, 17)
    assert (hi - lo) / 2 < 0.25
    w = an.small_sweep_warnings([4, 4, 4])
    assert len(w) == 1 and "4 replicates per level" in w[0] and "at least 17" in w[0] and "+-0.25" in w[0]
    assert an.small_sweep_warnings([17, 20]) == []


def test_auc_ratio_interval_cannot_go_negative():
    x = np.array([1.0, 60.0, 2.0, 90.0])  # a level with very different replicates
    ref = np.array([100.0, 104.0, 97.0, 99.0])
    r, lo, hi = an.ratio_of_means_ci(x, ref)
    assert r == pytest.approx(x.mean() / ref.mean())
    assert 0 < lo < r < hi and math.sqrt(lo * hi) == pytest.approx(r)
    _m, t_lo, _ = an.mean_ci(x / ref.mean())  # the old t interval on the ratio
    assert t_lo < 0
    r1, lo1, hi1 = an.ratio_of_means_ci(ref, None)  # the control against its own mean
    assert r1 == 1.0 and lo1 < 1 < hi1


def test_bca_mean_interval_stays_in_the_data_range():
    x = np.array([0.0, 0.0, 0.0, 8.0, 0.0, 14.0])  # doses held: t interval would go below 0
    m, lo, hi = an.bca_mean_ci(x)
    assert m == pytest.approx(x.mean()) and 0 <= lo < m < hi <= 14
    assert an.mean_ci(x)[1] < 0
    assert an.bca_mean_ci(np.full(4, 0.78)) == (0.78, 0.78, 0.78)


# ------------------------------------------------------------------------------------------------ Emax fits
def test_quantal_hill_fit_recovers_ed50_with_a_profile_interval():
    d = np.array([0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0])
    n = np.full(len(d), 400)
    k = np.round(n * an.hill(d, 0.0, 0.8, 0.1, 1.5))
    fit = an.fit_quantal_hill(d, k, n, e0=0.0)
    assert fit["ed50"] == pytest.approx(0.1, rel=0.05) and fit["emax"] == pytest.approx(0.8, abs=0.02)
    assert fit["h"] == pytest.approx(1.5, rel=0.1)
    assert fit["lo"] < 0.1 < fit["hi"] and fit["hi"] / fit["lo"] < 1.5
    # few runs: the same curve, a much wider interval
    small = an.fit_quantal_hill(d, np.round(4 * an.hill(d, 0.0, 0.8, 0.1, 1.5)), np.full(len(d), 4), e0=0.0)
    assert small["hi"] / small["lo"] > fit["hi"] / fit["lo"]


def test_burden_emax_fit_recovers_ed50():
    rng = np.random.default_rng(1)
    d = np.repeat([0.0, 0.01, 0.03, 0.1, 0.3, 1.0], 12)
    y = an.hill(d, 0.0, 0.9, 0.05, 1.2) + rng.normal(0, 0.03, d.size)
    fit = an.fit_burden_emax(d, y)
    assert fit["ed50"] == pytest.approx(0.05, rel=0.2) and fit["lo"] < 0.05 < fit["hi"] and fit["lo"] > 0


def test_therapeutic_index_td50_over_ed50():
    # response rises to 10/12 by 0.1x; DLTs only at 2x and 4x (0, 0, 0, 0, 6/12, 12/12): TD50 near 2
    spec = {0.0: (0, 0, 0), 0.01: (1, 0, 0.1), 0.03: (4, 0, 0.2), 0.1: (9, 0, 0.3), 0.3: (10, 0, 0.5)}
    spec |= {1.0: (10, 0, 0.8), 2.0: (10, 6, 1.0), 4.0: (10, 12, 1.2)}
    t = an.dose_response_table(fake(dose_rows(spec, 12), ["regimen.dose_scale.il2"]))
    ti = an.therapeutic_index(t)
    assert ti["status"] == "estimated"
    ed, td = ti["ed50"], ti["td50"]
    assert 0.01 < ed["ed50"] < 0.05 and ed["lo"] < ed["ed50"] < ed["hi"]
    assert 1.0 < td["ed50"] < 4.0 and td["lo"] > 1.0 and td["hi"] < 4.0
    assert ti["ti"] == pytest.approx(td["ed50"] / ed["ed50"])
    assert ti["ti_lo"] == pytest.approx(td["lo"] / ed["hi"]) and ti["ti_hi"] == pytest.approx(td["hi"] / ed["lo"])
    assert "Muller" in ti["definition"] and "dose-limiting" in ti["definition"]


def test_therapeutic_index_not_estimable_when_dlt_stays_below_half():
    spec = {0.0: (0, 0, 0), 0.01: (1, 0, 0.1), 0.03: (4, 0, 0.2), 0.1: (9, 0, 0.3), 0.3: (10, 1, 0.5)}
    spec |= {1.0: (10, 3, 0.8), 2.0: (3, 5, 1.0)}
    t = an.dose_response_table(fake(dose_rows(spec, 12), ["regimen.dose_scale.il2"]))
    ti = an.therapeutic_index(t)
    assert ti["status"].startswith("not estimable: the DLT rate never reaches 50%")
    assert math.isnan(ti["ti"]) and ti["ti_hi"] == math.inf and 0 < ti["ti_lo"] < math.inf
    # the response falls at the top dose (10/12 -> 3/12, outside the best level's interval): the Emax model is
    # fitted to the plateau (0.3 and 1.0 lie within it) and below, and the report says so
    assert ti["ed50"]["falls_above"] == 1.0 and ti["ti_lo"] > 1.0 / ti["ed50"]["hi"]
    limb, falls = an.rising_limb(t, "orr")
    assert list(limb["dose"]) == [0.0, 0.01, 0.03, 0.1, 0.3, 1.0] and falls
    r = an.dose_response_readouts(t)
    assert "fitted to the doses up to it only" in r["warnings"] and "too small to read" in r["warnings"]


# ------------------------------------------------------------------------------------------------ dose units
def test_dose_axis_in_clinical_units():
    u = an.dose_units({"base": "high_dose_il2"}, "regimen.dose_scale.il2")
    assert u["factor"] == 720000.0 and u["unit"] == "IU/kg"
    assert u["label"] == "IL-2 iv dose per administration (IU/kg)"
    u2 = an.dose_units({"base": "il2_ifna"}, "regimen.dose_scale.il2")
    assert u2["factor"] is None and "5 MIU/m2 / 10 MIU/m2" in u2["label"]
    assert an.dose_units({"base": "high_dose_il2"}, "ctl.kill_prob")["label"] == "ctl.kill_prob"
    spec = {0.0: (0, 0, 0), 0.5: (2, 0, 0.6), 1.0: (1, 0, 0.8)}
    t = an.dose_response_table(fake(dose_rows(spec, 4), ["regimen.dose_scale.il2"], base="high_dose_il2"))
    assert list(t["dose_clinical"]) == [0.0, 360000.0, 720000.0]
    # 0/4 responders at dose 0: an exact interval, not [0, 0]
    assert t["orr_lo"][0] == 0 and t["orr_hi"][0] == pytest.approx(0.602, abs=1e-3)


def test_analyze_warns_and_writes_the_report(tmp_path, capsys):
    raw = {
        "sweep": {
            "name": "tiny",
            "base": "high_dose_il2",
            "sets": ["lattice.nx=30", "lattice.ny=30", "init.tumour_radius_um=80", "run.days=1"],
            "replicates": 2,
            "seed": 11,
            "analysis": "dose_response",
        },
        "parameters": {"regimen.dose_scale.il2": {"values": [0.0, 0.5, 1.0]}},
    }
    run_sweep(SweepSpec.from_dict(raw, source="<test>"), tmp_path / "s", workers=0, progress=False)
    out = an.analyze(tmp_path / "s", tmp_path / "a")
    names = {p.name for p in out}
    assert {"dose_response.csv", "dose_response_summary.csv", "dose_response.png", "report.md"} <= names
    err = capsys.readouterr().err
    assert "abm analyze: warning: too small to read: 2 replicates per level" in err
    report = (tmp_path / "a" / "report.md").read_text()
    assert "## Warnings" in report and "too small to read" in report and "TD50/ED50" in report
    assert "IU/kg" in report
    s = pd.read_csv(tmp_path / "a" / "dose_response_summary.csv")
    assert s["dose_unit"][0] == "IU/kg" and s["replicates_needed"][0] == 17
    assert {"ed50", "ed50_lo", "ed50_hi", "td50", "therapeutic_index", "therapeutic_index_status"} <= set(s.columns)
    assert {"burden_ed50", "burden_ed50_lo", "burden_ed50_hi"} <= set(s.columns) and "burden ED50" in report
    t = pd.read_csv(tmp_path / "a" / "dose_response.csv")
    assert list(t["dose_clinical"]) == [0.0, 360000.0, 720000.0]


# ------------------------------------------------------------------------------------------------ combination
def test_combination_responder_excess_interval_is_not_zero_width():
    rows = []
    for a in (0, 1):
        for b in (0, 1):
            for i in range(4):
                auc = 100.0 - 20 * a - 30 * b + (i - 1.5)  # some spread
                rows.append({"a": a, "b": b, "best_response": "SD", "tumour_auc_cell_days": auc})
    g = an.combination_grid(fake(pd.DataFrame(rows), ["a", "b"]), n_boot=400)
    lo, hi = g["orr"]["bliss_ci"][:, 1, 1]
    assert g["orr"]["bliss"][1, 1] == 0 and lo < 0 < hi  # 0/4 everywhere: not [0, 0]
    elo, ehi = g["orr"]["effect_ci"][:, 1, 1]
    assert elo == 0 and ehi == pytest.approx(0.602, abs=1e-3)
    be = g["burden_effect"]
    blo, bhi = be["bliss_ci"][:, 1, 1]
    assert blo < be["bliss"][1, 1] < bhi
    assert g["table"]["n"].min() == 4
