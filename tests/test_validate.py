"""The validation suite (abm validate): statistics and verdicts on synthetic numbers, the experiments' arms, the
tables, the command's errors; and (slow) ``abm validate --quick`` end to end."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from abm.cli import main
from abm.validate import experiments as ex
from abm.validate import stats
from abm.validate.runner import QUICK, run_specs, run_suite

SEEDS = (1, 2, 3, 4)


def summary(auc: float, final: float = 500.0, initial: float = 700.0, tox: float = 0.0, ctl: float = 50.0, **kw):
    """A run summary with the keys the suite reads."""
    s = {
        "tumour_auc_cell_days": auc,
        "tumour_auc_relative": auc / (initial * 28.0),
        "tumour_cells_final": final,
        "tumour_cells_initial": initial,
        "toxicity_max": tox,
        "max_n_ctl": ctl,
        "max_n_lak": 0.0,
        "doses_held": 0,
        "best_response": "CR" if final == 0 else ("PD" if final > 1.2 * initial else "SD"),
        "time_to_eradication_day": 10.0 if final == 0 else math.nan,
        "dose_limiting_toxicity": False,
    }
    s.update(kw)
    return s


def runs_of(**arms):
    """``runs[arm][seed]`` from lists of AUCs (one per seed), other read-outs fixed."""
    return {a: {s: summary(v) for s, v in zip(SEEDS, vals, strict=True)} for a, vals in arms.items()}


# ------------------------------------------------------------------------------------------------ statistics
def test_effect_is_the_fraction_of_the_same_seeds_untreated_burden_removed():
    runs = runs_of(untreated=[100, 200, 400, 800], a=[50, 100, 100, 200], b=[100, 200, 200, 400])
    c = ex.Comparison("X", "", "diff", "effect", ("a", "b"))
    seeds, vals = stats.per_seed(c, runs)
    assert seeds == list(SEEDS)
    np.testing.assert_allclose(vals, [0.5, 0.5, 0.25, 0.25])  # E(a) = .5 .5 .75 .75, E(b) = 0 0 .5 .5


def test_value_statistic_with_offset_and_sign():
    runs = {"untreated": {s: summary(1.0, final=f) for s, f in zip(SEEDS, [1400, 2100, 700, 1050], strict=True)}}
    grow = ex.Comparison("G", "", "value", "growth", ("untreated",), offset=1.0)
    shrink = ex.Comparison("S", "", "value", "growth", ("untreated",), offset=1.0, sign=-1.0)
    np.testing.assert_allclose(stats.per_seed(grow, runs)[1], [1.0, 2.0, 0.0, 0.5])
    np.testing.assert_allclose(stats.per_seed(shrink, runs)[1], [-1.0, -2.0, 0.0, -0.5])


def test_bliss_excess_against_independence():
    # E(a) = 0.5, E(b) = 0.2 every seed; independence predicts 0.6; the combination removes 0.7 -> excess 0.1
    runs = runs_of(untreated=[100] * 4, a=[50] * 4, b=[80] * 4, ab=[30] * 4)
    c = ex.Comparison("B", "", "bliss", "effect", ("ab", "a", "b"), expect="bliss")
    np.testing.assert_allclose(stats.per_seed(c, runs)[1], [0.1] * 4)
    row = stats.compare(c, runs)
    assert row["verdict"] == stats.EMERGES and row["reading"].startswith("synergy")


def test_log_ratio_is_reported_as_a_geometric_mean_ratio():
    runs = {
        "a": {s: summary(1.0, ctl=v) for s, v in zip(SEEDS, [200, 400, 100, 800], strict=True)},
        "b": {s: summary(1.0, ctl=v) for s, v in zip(SEEDS, [100, 100, 100, 100], strict=True)},
    }
    c = ex.Comparison("R", "", "log_ratio", "max_n_ctl", ("a", "b"))
    row = stats.compare(c, runs)
    assert row["effect"] == pytest.approx(2.0 ** ((1 + 2 + 0 + 3) / 4))
    assert row["lo"] < row["effect"] < row["hi"]
    assert row["per_seed"] == pytest.approx([2.0, 4.0, 1.0, 8.0])
    # the interval from 4 log ratios with sd 1.29 (log 2 units) reaches below 1: not an increase at 95%
    assert row["lo"] < 1.0 and row["verdict"] == stats.DOES_NOT


def test_only_seeds_every_arm_completed_are_paired():
    runs = runs_of(untreated=[100, 100, 100, 100], a=[50, 50, 50, 50], b=[80, 80, 80, 80])
    del runs["a"][2]
    del runs["untreated"][4]
    seeds, _ = stats.per_seed(ex.Comparison("X", "", "diff", "effect", ("a", "b")), runs)
    assert seeds == [1, 3]
    with pytest.raises(KeyError, match="no runs of arm"):
        stats.per_seed(ex.Comparison("X", "", "diff", "effect", ("a", "zz")), runs)


def _ci(lo, hi):
    return {"lo": lo, "hi": hi}


@pytest.mark.parametrize(
    ("expect", "margin", "lo", "hi", "want"),
    [
        ("above", 0.0, 0.01, 0.3, stats.EMERGES),
        ("above", 0.0, -0.01, 0.3, stats.DOES_NOT),
        ("above", 0.0, -0.3, -0.1, stats.DOES_NOT),  # clearly the other way: does not emerge
        ("below", 0.05, -0.2, 0.049, stats.EMERGES),
        ("below", 0.05, -0.2, 0.051, stats.DOES_NOT),
        ("bliss", 0.0, 0.01, 0.2, stats.EMERGES),
        ("bliss", 0.0, -0.01, 0.2, stats.EMERGES),
        ("bliss", 0.0, -0.2, -0.01, stats.DOES_NOT),
        ("above", 0.0, math.nan, math.nan, stats.UNDETERMINED),
    ],
)
def test_verdict_rules(expect, margin, lo, hi, want):
    c = ex.Comparison("X", "", "diff", "effect", ("a", "b"), expect=expect, margin=margin)
    assert stats.verdict(c, _ci(lo, hi))[0] == want


def test_bliss_reading_names_independence_and_antagonism():
    c = ex.Comparison("X", "", "bliss", "effect", ("a", "b", "c"), expect="bliss")
    assert "independence" in stats.verdict(c, _ci(-0.1, 0.1))[1]
    assert "antagonism" in stats.verdict(c, _ci(-0.3, -0.1))[1]


def test_log_ratio_rule_is_on_the_ratio_scale():
    c = ex.Comparison("R", "", "log_ratio", "max_n_ctl", ("a", "b"))
    assert stats.verdict(c, _ci(1.01, 3.0))[0] == stats.EMERGES
    assert stats.verdict(c, _ci(0.99, 3.0))[0] == stats.DOES_NOT


def test_interval_is_the_t_interval_of_the_seed_mean():
    from scipy import stats as st

    x = [0.1, 0.3, 0.2, 0.6]
    ci = stats.interval(x)
    lo, hi = st.t.interval(0.95, 3, loc=np.mean(x), scale=st.sem(x))
    assert (ci["effect"], ci["lo"], ci["hi"]) == pytest.approx((0.3, lo, hi))
    assert ci["n"] == 4 and math.isfinite(ci["bca_lo"])
    one = stats.interval([0.4])
    assert one["effect"] == 0.4 and math.isnan(one["lo"])


def test_pattern_verdict():
    E, N, U = stats.EMERGES, stats.DOES_NOT, stats.UNDETERMINED
    assert stats.pattern_verdict([E, E]) == E
    assert stats.pattern_verdict([N, N]) == N
    assert stats.pattern_verdict([E, N, E]) == "partly (2 of 3)"
    assert stats.pattern_verdict([E, U]) == U


def test_arm_summary_proportions_use_wilson_intervals():
    rows = [summary(1.0, final=0), summary(1.0, final=0), summary(1.0, final=900), summary(1.0, final=600)]
    a = stats.arm_summary(rows)
    assert a["complete"]["k"] == 2 and a["eradicated"]["k"] == 2 and a["responders"]["k"] == 2
    assert (a["complete"]["lo"], a["complete"]["hi"]) == pytest.approx((0.150, 0.850), abs=1e-3)  # Wilson 2/4
    assert a["best_responses"] == ["CR", "CR", "PD", "SD"]


# ------------------------------------------------------------------------------------------------ experiments
def test_select_patterns():
    assert [p.key for p in ex.select("p3, P1,P3")] == ["P3", "P1"]
    assert [p.key for p in ex.select(None)] == ["P1", "P2", "P3", "P4", "P5", "P6"]
    with pytest.raises(ValueError, match="unknown pattern P9; choose from P1"):
        ex.select("P1,P9")
    with pytest.raises(ValueError, match="unknown pattern"):
        ex.select(",")


def test_every_comparison_uses_arms_of_its_pattern_and_every_arm_is_distinct():
    for p in ex.PATTERNS.values():
        assert ex.UNTREATED in p.arms
        for c in p.comparisons:
            assert c.key.startswith(p.key)
            assert set(c.arms) <= set(p.arms), c.key
        for arm, _ in p.doses:
            assert arm in p.arms
    runs = {(a.scenario, a.sets) for a in ex.ARMS.values()}
    assert len(runs) == len(ex.ARMS)


def test_every_arm_is_a_valid_scenario_and_the_5fu_arms_move_only_the_drug_block():
    from abm.scenario import Scenario

    for arm in ex.ARMS.values():
        Scenario.load(arm.scenario, sets=list(arm.sets))  # raises ParameterError when an override went stale
    before = Scenario.load(ex.ARMS["atz_5fu_before"].scenario, sets=list(ex.ARMS["atz_5fu_before"].sets))
    during = Scenario.load(ex.ARMS["atz_5fu_during"].scenario, sets=list(ex.ARMS["atz_5fu_during"].sets))
    cyto = Scenario.load(ex.ARMS["atz_il2_ifna"].scenario)
    fu_b, fu_d = before.regimen.doses[ex.FU_BLOCK], during.regimen.doses[ex.FU_BLOCK]
    assert fu_b.drug == fu_d.drug == "drug" and fu_b.dose == fu_d.dose
    assert fu_b.weeks == fu_d.weeks == [1, 4] and fu_b.weekdays == [1] and fu_d.weekdays == [4]
    # everything but the drug block is the cytokine arm's regimen
    strip = [d for i, d in enumerate(before.regimen.doses) if i != ex.FU_BLOCK]
    assert [d.model_dump(exclude={"note"}) for d in strip] == [
        d.model_dump(exclude={"note"}) for d in cyto.regimen.doses
    ]
    # both 5-FU days fall inside the quick run, and "during" is inside an IL-2 pulse (days 3-5 of week 1)
    il2_days = {int(t // 1440) + 1 for t, _ in cyto.regimen.doses[3].times_min()}
    assert 4 in il2_days and 1 not in il2_days


def test_run_specs_cover_arms_times_seeds_with_shared_seeds():
    specs = run_specs(ex.select("P1,P5"), QUICK)
    assert [r.run_id for r in specs][:3] == ["untreated@s1", "untreated@s2", "untreated@s3"]
    assert {r.run_id.split("@")[0] for r in specs} == {"untreated", "hd_il2", "lak_il2"}
    assert len(specs) == 3 * QUICK.seeds
    assert all(f"lattice.nx={QUICK.size}" in r.sets and r.seed == r.replicate for r in specs)


# ------------------------------------------------------------------------------------------------ runner and tables
def fake_task(run):
    """Stands in for a simulation: AUC falls with the arm index, so treated arms beat untreated."""
    arm = run.run_id.split("@")[0]
    auc = 1000.0 / (1 + list(ex.ARMS).index(arm)) + 10 * run.seed
    curve = {"day": [0.0, 1.0], "n_tumour": [700.0, 700.0 * auc / 1000], "n_ctl": [0.0, 5.0], "n_lak": [0.0, 0.0]}
    return {"run_id": run.run_id, "ok": True, "summary": summary(auc), "curve": curve, "elapsed_s": 0.5}


def test_runner_and_report_on_a_fake_task(tmp_path):
    from abm.validate.report import TABLE_COLUMNS, write_report

    pats = ex.select("P1,P2")
    suite = run_suite(pats, QUICK, workers=0, progress=False, task=fake_task)
    assert set(suite.runs) == set(ex.arms_of(pats)) and not suite.failures
    assert all(sorted(d) == QUICK.seed_list for d in suite.runs.values())
    meta = {"command": "abm validate --out X", "abm_version": "t", "git_hash": "", "lattice": "60 x 60", "days": 14.0}
    meta["seeds"] = QUICK.seed_list
    res, paths = write_report(pats, suite, meta, tmp_path)
    names = {p.name for p in paths}
    assert names == {"results.json", "table.csv", "table.md", "arms.csv", "P1.png", "P2.png"}
    rows = list(csv.DictReader((tmp_path / "table.csv").open()))
    assert [r["comparison"] for r in rows] == ["P1a", "P1b", "P1c", "P2a", "P2b", "P2c", "P2d"]
    assert list(rows[0]) == list(TABLE_COLUMNS)
    # fake E(high dose) = 1 - (1000/2 + 10 s) / (1000 + 10 s) > 0 every seed: P1c emerges; the fake tumour never
    # changes its final count (500 of 700), so P1a (growth) does not and P1b (regression) does
    by = {r["comparison"]: r for r in rows}
    assert by["P1c"]["verdict"] == "emerges" and by["P1a"]["verdict"] == "does not emerge"
    assert by["P1b"]["verdict"] == "emerges" and by["P1a"]["pattern_verdict"] == "partly (2 of 3)"
    assert float(by["P1a"]["effect"]) == pytest.approx(500 / 700 - 1)
    assert by["P1a"]["seeds"] == "1 2 3" and by["P1a"]["lattice"] == "60 x 60" and by["P1a"]["command"]
    md = (tmp_path / "table.md").read_text()
    assert "`abm validate --out X`" in md and "| P1 | P1c:" in md and "load average" in md
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["patterns"][0]["verdict"] == "partly (2 of 3)" and len(data["runs_done"]) == 5 * QUICK.seeds


def test_a_failed_run_is_reported_and_its_rows_use_the_remaining_seeds(tmp_path):
    from abm.validate.report import build_results

    def task(run):
        if run.run_id == "hd_il2@s2":
            return {"run_id": run.run_id, "ok": False, "error": "ValueError: boom", "elapsed_s": 0.1}
        return fake_task(run)

    pats = ex.select("P1")
    suite = run_suite(pats, QUICK, workers=0, progress=False, task=task)
    assert list(suite.failures) == ["hd_il2@s2"]
    res = build_results(pats, suite, {"lattice": "60 x 60", "days": 14.0, "seeds": QUICK.seed_list})
    rows = {r["key"]: r for r in res["patterns"][0]["comparisons"]}
    assert rows["P1a"]["seeds"] == [1, 2, 3] and rows["P1c"]["seeds"] == [1, 3]


# ------------------------------------------------------------------------------------------------ the command
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--patterns", "P1,P7"], "unknown pattern P7"),
        (["--size", "5"], "--size 5: allowed range is 40 to 2000"),
        (["--seeds", "1"], "--seeds 1: allowed range is 2 to 1000"),
        (["--days", "0"], "--days 0: allowed range is 1 to 365"),
        (["--workers", "-1"], "--workers -1: allowed range is 0 or more"),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path, capsys, argv, message):
    rc = main(["validate", "--out", str(tmp_path / "v"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "v").exists()  # refused before anything was created


def test_out_that_is_a_file_exits_2(tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("x")
    assert main(["validate", "--out", str(f), "--quick"]) == 2
    assert "is not a directory" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ end to end (slow)
EMERGE_AT_QUICK = ("P1b", "P1c", "P2a", "P2b", "P2c", "P2d", "P5a", "P6c")
"""The comparisons that emerged at the quick size when this test was written (a299a9c rules, load about 6: 36 runs in
6.3 min). Measured then, not asserted: P1a (untreated growth, 0.445 [-0.751, 1.64]: seed 1 ends at 637 of 716 cells
on the 1.2-mm box after 14 days, although its diameter makes it PD), P3a, P4a, P4b, P6a, P6b (docs/validation.md
reports the full size). The runs are deterministic for given seeds, so a change here is a change of the model."""


@pytest.mark.slow
def test_validate_quick_end_to_end(tmp_path, capsys):
    """``abm validate --quick`` (60 x 60 sites, 14 days, 3 seeds, 2 workers): a few minutes on 2 cores."""
    out = tmp_path / "v"
    assert main(["validate", "--out", str(out), "--quick", "--workers", "2", "--quiet"]) == 0
    for name in ("results.json", "table.csv", "table.md", "arms.csv", *(f"P{i}.png" for i in range(1, 7))):
        assert (out / name).is_file(), name
    res = json.loads((out / "results.json").read_text())
    assert not res["failures"] and len(res["runs_done"]) == 12 * QUICK.seeds
    rows = {r["key"]: r for p in res["patterns"] for r in p["comparisons"]}
    print((out / "table.md").read_text())
    for key in EMERGE_AT_QUICK:
        assert rows[key]["verdict"] == "emerges", json.dumps(rows[key], indent=1)
    # untreated, every seed is PD by RECIST; under high-dose IL-2 every seed clears
    assert res["arms"]["untreated"]["best_responses"] == ["PD"] * QUICK.seeds
    assert res["arms"]["hd_il2"]["complete"]["k"] == QUICK.seeds
