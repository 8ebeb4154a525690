"""Virtual trials (abm.trial): the TRIAL.toml schema and its errors, paired tasks, the visit reporter, the driver on
the run store (resume, failures), the read-outs and their intervals, the figures, ``abm analyze`` on a trial
directory, the calibration fit; end to end on tiny lattices (the shipped trials' --quick runs are slow tests)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

from abm.errors import ParameterError
from abm.trial import analysis, calibrate
from abm.trial.cohort import CohortSpec, ParamDist, draw
from abm.trial.recist import RecistParams
from abm.trial.runner import OffStudy, TrialError, VisitReporter, is_trial, run_trial, tasks
from abm.trial.spec import FitParam, TrialSpec, find_trial

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_TRIALS = ("atkins1999_hd_il2", "negrier1998", "rosenberg1993")
TINY = ["lattice.nx=30", "lattice.ny=30", "init.tumour_radius_um=80"]


def tiny_trial(tmp_path: Path, **over) -> Path:
    """A two-arm trial on a tiny lattice, written as a TOML file."""
    t = {
        "patients": 4,
        "seed": 5,
        "sets": TINY,
        "arms": '[[arms]]\nname = "hd"\nscenario = "high_dose_il2"\n\n'
        '[[arms]]\nname = "lo"\nscenario = "low_dose_iv_il2"',
        "recist": "visit_every_weeks = 1\nfollow_up_weeks = 1\nconfirm_min_weeks = 1\nsd_min_weeks = 1",
        "extra": "",
    } | over
    p = tmp_path / "trial.toml"
    p.write_text(
        f"""[trial]
name = "tiny"
patients = {t["patients"]}
seed = {t["seed"]}
sets = {json.dumps(t["sets"])}

[recist]
{t["recist"]}

{t["arms"]}

[[clinical]]
arm = "hd"
endpoint = "orr"
k = 3
n = 20
source = "made up"
{t["extra"]}
"""
    )
    return p


# ------------------------------------------------------------------------------------------------ the schema
@pytest.mark.parametrize("name", SHIPPED_TRIALS)
@pytest.mark.parametrize("quick", [False, True])
def test_shipped_trials_load(name, quick):
    s = TrialSpec.load(name, quick=quick)
    assert s.arms and s.doc.clinical and all(c.source for c in s.doc.clinical)
    assert s.run_days >= s.recist.scheduled_days()[-1]
    if quick:
        assert s.doc.trial.patients <= 6 and any("lattice.nx" in x for x in s.doc.trial.sets)
    assert find_trial(name) == find_trial(ROOT / "scenarios" / "trials" / f"{name}.toml")


def test_shipped_clinical_figures():
    """The clinic's counts each trial names (docs/model.md, brief s1): Atkins/Fyfe, Negrier, Rosenberg."""
    got = {
        (n, c.arm, c.endpoint, c.population): (c.k, c.n) for n in SHIPPED_TRIALS for c in TrialSpec.load(n).doc.clinical
    }
    assert got[("atkins1999_hd_il2", "hd_il2", "orr", "RCC")] == (37, 255)
    assert got[("atkins1999_hd_il2", "hd_il2", "cr_rate", "melanoma")] == (17, 270)
    assert [
        round(100 * got[("negrier1998", a, "orr", "RCC")][0] / got[("negrier1998", a, "orr", "RCC")][1], 1)
        for a in ("il2", "ifna", "il2_ifna")
    ] == [6.5, 7.5, 18.6]
    assert sum(got[("negrier1998", a, "orr", "RCC")][1] for a in ("il2", "ifna", "il2_ifna")) == 425
    assert got[("rosenberg1993", "lak_il2", "cr_rate", "")] == (10, 85)
    assert got[("rosenberg1993", "il2", "cr_rate", "")] == (4, 79)


def test_errors_name_the_file_and_the_key(tmp_path):
    p = tiny_trial(tmp_path, extra="\n[trial.oops]\n")
    with pytest.raises(ParameterError, match=r"trial\.toml: unknown key 'trial.oops'"):
        TrialSpec.load(p)
    p = tiny_trial(tmp_path, patients=0)
    with pytest.raises(ParameterError, match=r"trial\.toml: key 'trial.patients': value out of range"):
        TrialSpec.load(p)
    p = tiny_trial(tmp_path, extra='\n[[clinical]]\narm = "nope"\nk = 1\nn = 2\nsource = "x"\n')
    with pytest.raises(ParameterError, match=r"clinical.1.arm = 'nope' is not an arm"):
        TrialSpec.load(p)
    p = tiny_trial(tmp_path, extra='\n[[clinical]]\narm = "hd"\nk = 3\nn = 2\nsource = "x"\n')
    with pytest.raises(ParameterError, match=r"key 'clinical.1'.*k = 3 is more than n = 2"):
        TrialSpec.load(p)
    p = tiny_trial(tmp_path, arms='[[arms]]\nname = "hd"\nscenario = "no_such_regimen"')
    with pytest.raises(ParameterError, match=r"key 'arms.0.scenario': no_such_regimen: scenario file not found"):
        TrialSpec.load(p)
    p = tiny_trial(tmp_path, recist="visit_every_weeks = 1\nfollow_up_weeks = 1\nmeasure = 'volume'")
    with pytest.raises(ParameterError, match=r"key 'recist.measure': invalid choice"):
        TrialSpec.load(p)
    with pytest.raises(ParameterError, match=r"--quick asks for a \[quick\] table"):
        TrialSpec.load(tiny_trial(tmp_path), quick=True)
    p = tiny_trial(tmp_path, sets=["lattice.nx=30", "ctl.no_such=1"])
    with pytest.raises(ParameterError, match=r"arm 'hd'.*unknown key 'ctl.no_such'"):
        TrialSpec.load(p)


def test_set_on_the_command_line_appends_to_the_trial_sets(tmp_path, capsys):
    """`abm trial/calibrate --set KEY=VALUE` overrides every arm after the file's (and [quick]'s) sets, and a bad
    value is refused before any work (exit 2, the key and its range named, nothing written)."""
    import argparse

    from abm.cli import main
    from abm.trial.cli import _argv, _load

    p = tiny_trial(tmp_path, sets=["lattice.nx=30"])
    args = argparse.Namespace(
        command="trial", trial=str(p), out="o", quick=False, set=["lattice.nx=34", "lattice.ny=31"]
    )
    spec = _load(args, {"trial.patients": 3})
    assert spec.doc.trial.sets == ["lattice.nx=30", "lattice.nx=34", "lattice.ny=31"]
    assert spec.doc.trial.patients == 3
    sc = spec.scenario(spec.arms[0])
    assert (sc.params.lattice.nx, sc.params.lattice.ny) == (34, 31)  # the last override wins
    assert _argv(args)[-4:] == ["--set", "lattice.nx=34", "--set", "lattice.ny=31"]
    out = tmp_path / "never"
    assert main(["trial", str(p), "--out", str(out), "--set", "lattice.nx=-3"]) == 2
    err = capsys.readouterr().err
    assert "key 'lattice.nx': value out of range (got -3)" in err and "[1, 4096]" in err
    assert not out.exists()
    # --cohort: another cohort file (relative to the working directory), refused by name when missing
    assert main(["trial", str(p), "--out", str(out), "--cohort", str(tmp_path / "nope.toml")]) == 2
    assert "key 'trial.cohort'" in capsys.readouterr().err and not out.exists()


def test_cohort_changes_in_the_trial_file_and_errors_in_the_cohort(tmp_path):
    p = tiny_trial(tmp_path, extra='\n[cohort.parameters."patient.antigenicity"]\ncv = 1.5\n')
    s = TrialSpec.load(p)
    assert s.cohort.parameters["patient.antigenicity"].cv == 1.5
    assert s.cohort.parameters["patient.antigenicity"].median == 1.0  # the rest from the cohort file
    p = tiny_trial(tmp_path, extra='\n[cohort.parameters."patient.mhc_baseline"]\nmedian = 1.5\n')
    # (a check of the whole table names the file that made the table: here the cohort file)
    with pytest.raises(ParameterError, match=r"key 'cohort.parameters.patient.mhc_baseline.median'.*\(got 1.5\)"):
        TrialSpec.load(p)
    p = tiny_trial(tmp_path, extra='\n[cohort.parameters."patient.mhc_baseline"]\nsd = -1\n')
    with pytest.raises(ParameterError, match=r"trial\.toml: key 'cohort.parameters.patient.mhc_baseline.sd'"):
        TrialSpec.load(p)


def test_fingerprint_follows_what_defines_the_runs(tmp_path):
    a = TrialSpec.load(tiny_trial(tmp_path))
    assert TrialSpec.load(tiny_trial(tmp_path)).fingerprint() == a.fingerprint()
    assert TrialSpec.load(tiny_trial(tmp_path, patients=5)).fingerprint() != a.fingerprint()
    assert TrialSpec.load(tiny_trial(tmp_path, seed=6)).fingerprint() != a.fingerprint()
    b = TrialSpec.load(tiny_trial(tmp_path), values={"clinical.0.k": 4})  # the clinic's figures change no run
    assert b.fingerprint() == a.fingerprint()


def test_tasks_are_paired_and_patient_major(tmp_path):
    s = TrialSpec.load(tiny_trial(tmp_path))
    ts = tasks(s)
    assert [t.run_id for t in ts[:4]] == ["hd.p0000", "lo.p0000", "hd.p0001", "lo.p0001"]
    for i in range(0, len(ts), 2):
        a, b = ts[i], ts[i + 1]
        assert (a.patient, a.seed, a.values) == (b.patient, b.seed, b.values)
        assert a.scenario != b.scenario
    pts = draw(s.cohort, 4, 5)
    assert [dict(t.values) for t in ts[::2]] == [dict(p.values) for p in pts]
    assert all(f"run.days={s.run_days!r}" in t.sets for t in ts)


# ------------------------------------------------------------------------------------------------ the reporter
def _frames(reporter, cells_by_day, n_steps, dt=1440.0):
    """Drive a VisitReporter by hand with one frame per day: a 10 x 10 lattice, ``cells_by_day(day)`` tumour cells
    in its first row(s)."""
    info = SimpleNamespace(
        dt_min=dt, n_steps=n_steps, shape_xyz=(10, 10, 1), spacing_um=20.0, cell_type_codes={"tumour": 1}
    )
    reporter.begin(info)
    last = -1
    while True:
        n, needs = reporter.describe_next_report(last)
        step = min(last + n, n_steps)
        k = cells_by_day(step)
        ct = np.zeros(100, dtype=np.uint8)
        ct[:k] = 1
        obs = {
            "n_tumour": float(k),
            "tumour_lesion_diameter_mm": 0.02 * min(k, 10),
            "tumour_equivalent_diameter_mm": 0.0,
        }
        frame = SimpleNamespace(
            step=step, time_day=step * dt / 1440.0, observables=obs, snapshot=SimpleNamespace(cell_type=ct)
        )
        reporter.report(frame)
        if step >= n_steps:
            return step
        last = step


def test_visit_reporter_ends_a_progressing_run_at_the_first_progression():
    r = RecistParams(visit_every_weeks=1, follow_up_weeks=4, confirm_min_weeks=1, sd_min_weeks=1)
    rep = VisitReporter(r, stop=True, course_end_day=20.0)
    with pytest.raises(OffStudy, match="progression"):
        _frames(rep, lambda d: 6 if d < 7 else 100, n_steps=35)  # a row of 6 (0.12 mm), then all 10 x 10
    assert rep.stopped_day == 7.0  # before the course ends: progression takes the patient off study at once
    assert [p.response for p in rep.assessor.points] == ["PD"]


def test_visit_reporter_keeps_the_course_going_after_a_confirmed_cr():
    r = RecistParams(visit_every_weeks=1, follow_up_weeks=4, confirm_min_weeks=1, sd_min_weeks=1)
    rep = VisitReporter(r, stop=True, course_end_day=17.5)
    with pytest.raises(OffStudy, match="confirmed CR"):
        _frames(rep, lambda d: 10 if d < 5 else 0, n_steps=35)
    assert [p.day for p in rep.assessor.points] == [7.0, 14.0]  # confirmed on day 14 ...
    assert rep.stopped_day == 18.0  # ... the run goes on to the end of the course (every dose counted)
    rep = VisitReporter(r, stop=False, course_end_day=17.5)  # (a kept trajectory runs to its end)
    assert _frames(rep, lambda d: 10 if d < 5 else 0, n_steps=35) == 35


# ------------------------------------------------------------------------------------------------ the driver
def fake_patient(task) -> dict:
    """Deterministic made-up outcomes: arm hd responds in patients 0, 1 (mod 3), arm lo in patient 0 (mod 3)."""
    i = task.patient
    resp = (
        ("CR" if i % 3 == 0 else "PR" if i % 3 == 1 else "PD") if task.arm == "hd" else ("CR" if i % 3 == 0 else "SD")
    )
    change = {"CR": -100.0, "PR": -45.0, "SD": -5.0, "PD": 60.0}[resp]
    pts = [[7.0, 0.2, change, resp, 10, 1, True]]
    s = {
        "evaluable": True,
        "best_response": resp,
        "best_response_unconfirmed": resp,
        "responder": resp in ("CR", "PR"),
        "best_change_pct": change,
        "time_to_response_day": 7.0 if resp in ("CR", "PR") else math.nan,
        "time_to_cr_day": 7.0 if resp == "CR" else math.nan,
        "progressed": resp == "PD",
        "time_to_progression_day": 7.0 if resp == "PD" else math.nan,
        "last_assessment_day": 7.0,
        "response_ongoing": resp in ("CR", "PR"),
        "assessments": json.dumps(pts),
        "stopped_day": 14.0,
        "doses_given": 10,
        "doses_held": 4,
        "doses_cancelled": 0,
        "doses_due_on_study": 14,
        "doses_scheduled": 14,
        "dose_limiting_toxicity": i % 4 == 0,
        "dlt_day": 2.0 if i % 4 == 0 else math.nan,
        "dose_marks": json.dumps([[1.0, "H"]]),
    }
    return {"run_id": task.run_id, "ok": True, "summary": s, "elapsed_s": 0.0}


def failing_patient(task) -> dict:
    if task.patient == 2:
        raise RuntimeError("boom")
    return fake_patient(task)


def test_driver_records_every_patient_and_resumes_what_failed(tmp_path):
    s = TrialSpec.load(tiny_trial(tmp_path, patients=6))
    out = tmp_path / "run"
    r = run_trial(s, out, workers=0, progress=False, run_fn=failing_patient)
    assert (r.n_runs, r.n_done, r.n_failed) == (12, 10, 2)
    assert is_trial(out) and not is_trial(tmp_path)
    with pytest.raises(TrialError, match="pass --resume"):
        run_trial(s, out, workers=0, progress=False, run_fn=fake_patient)
    seen = []
    r = run_trial(s, out, workers=0, progress=False, resume=True, run_fn=fake_patient, on_result=seen.append)
    assert (r.n_done, r.n_skipped) == (2, 10)
    assert sorted(x["run_id"] for x in seen) == ["hd.p0002", "lo.p0002"]
    other = TrialSpec.load(tiny_trial(tmp_path, patients=7))
    with pytest.raises(TrialError, match="another trial"):
        run_trial(other, out, workers=0, progress=False, resume=True, run_fn=fake_patient)
    data = analysis.read_trial(out)
    assert (data["patients"]["status"] == "done").all() and len(data["patients"]) == 12


def _fake_trial(tmp_path, patients=30):
    s = TrialSpec.load(tiny_trial(tmp_path, patients=patients))
    out = tmp_path / "run"
    run_trial(s, out, workers=0, progress=False, run_fn=fake_patient)
    return out


def test_arm_rates_have_exact_and_wilson_intervals(tmp_path):
    data = analysis.read_trial(_fake_trial(tmp_path))
    arms = analysis.arm_table(data).set_index("arm")
    hd, lo = arms.loc["hd"], arms.loc["lo"]
    assert (hd["n"], hd["orr_k"], hd["cr_rate_k"], hd["pr_rate_k"], hd["pd_rate_k"]) == (30, 20, 10, 10, 10)
    assert (lo["orr_k"], lo["sd_rate_k"], hd["dlt_rate_k"]) == (10, 20, 8)
    ci = stats.binomtest(20, 30).proportion_ci(method="exact")
    assert (hd["orr_lo"], hd["orr_hi"]) == pytest.approx((ci.low, ci.high))
    wi = stats.binomtest(20, 30).proportion_ci(method="wilson")
    assert (hd["orr_wilson_lo"], hd["orr_wilson_hi"]) == pytest.approx((wi.low, wi.high))
    assert hd["delivered_fraction"] == pytest.approx(10 / 14)
    assert hd["delivered_fraction_lo"] == hd["delivered_fraction_hi"] == pytest.approx(10 / 14)  # no spread
    assert hd["doses_given_mean"] == 10.0


def test_paired_comparison_counts_discordant_pairs_and_mcnemar(tmp_path):
    data = analysis.read_trial(_fake_trial(tmp_path))
    c = analysis.comparison_table(data).set_index("endpoint").loc["orr"]
    # hd responds in every patient lo does (i % 3 == 0) and in the i % 3 == 1 ones too: 10 discordant pairs
    assert (c["pairs_both"], c["pairs_a_only"], c["pairs_b_only"], c["pairs_neither"]) == (10, 10, 0, 10)
    assert c["mcnemar_p"] == pytest.approx(stats.binomtest(10, 10, 0.5).pvalue)
    assert c["diff"] == pytest.approx(1 / 3)
    assert c["diff_lo"] < 1 / 3 < c["diff_hi"] and 0 < c["diff_lo"]
    cr = analysis.comparison_table(data).set_index("endpoint").loc["cr_rate"]
    assert cr["mcnemar_p"] == 1.0 and cr["diff"] == 0.0


def test_clinical_comparison_and_predictive_interval(tmp_path):
    data = analysis.read_trial(_fake_trial(tmp_path))
    clin = analysis.clinical_table(data).iloc[0]
    assert (clin["model_k"], clin["model_n"], clin["clinic_k"], clin["clinic_n"]) == (20, 30, 3, 20)
    assert clin["fisher_p"] == pytest.approx(stats.fisher_exact([[20, 10], [3, 17]]).pvalue)
    lo, hi = stats.betabinom.interval(0.95, 20, 20.5, 10.5)
    assert (clin["predicted_k_lo"], clin["predicted_k_hi"]) == (lo, hi)
    assert not clin["consistent"]  # 3 of 20 is far below what a 67% responder rate predicts


def test_analyze_writes_tables_figures_and_report_and_the_cli_dispatches(tmp_path, capsys):
    from abm.cli import main

    out = _fake_trial(tmp_path, patients=8)
    assert main(["analyze", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in (
        "patients.csv",
        "arms.csv",
        "comparisons.csv",
        "clinical.csv",
        "waterfall.png",
        "swimmer.png",
        "spider.png",
        "forest.png",
        "pfs.csv",
        "pfs.png",
        "report.md",
    ):
        assert (out / "analysis" / name).stat().st_size > 0, name
        assert name in printed
    rep = (out / "analysis" / "report.md").read_text()
    assert "exact McNemar" in rep and "8 patients" in rep  # the small-arm warning is in the report


def _product_limit(t, event):
    """Kaplan-Meier by hand: S(d) = prod over event days <= d of (1 - events / at risk)."""
    s, out = 1.0, {}
    for d in sorted(set(t)):
        at_risk = sum(1 for x in t if x >= d)
        ev = sum(1 for x, e in zip(t, event) if x == d and e)
        s *= 1 - ev / at_risk
        out[d] = s
    return out


def test_kaplan_meier_is_the_product_limit_estimate_with_its_median():
    t = [3.0, 4.0, 5.0, 5.0, 8.0, 9.0, 9.0]
    e = [True, False, True, True, True, False, False]
    km = analysis.kaplan_meier(np.array(t), np.array(e))
    hand = _product_limit(t, e)
    assert list(km["day"]) == sorted(hand)
    assert km["survival"] == pytest.approx([hand[d] for d in sorted(hand)])
    assert list(km["at_risk"]) == [7, 6, 5, 3, 2] and list(km["events"]) == [1, 0, 2, 1, 0]
    assert km["median"] == 8.0  # S(5) = 0.514 > 1/2, S(8) = 0.343
    assert (km["lo"] <= km["survival"] + 1e-12).all() and (km["survival"] <= km["hi"] + 1e-12).all()
    assert km["median_lo"] <= km["median"] and (math.isnan(km["median_hi"]) or km["median_hi"] >= km["median"])
    none = analysis.kaplan_meier(np.array([4.0, 9.0]), np.array([False, False]))  # no progression: not reached
    assert list(none["survival"]) == [1.0, 1.0] and math.isnan(none["median"])


def test_pfs_table_counts_progressions_and_censors_at_the_last_assessment(tmp_path):
    data = analysis.read_trial(_fake_trial(tmp_path))
    km = analysis.pfs_table(data)
    hd = km[km["arm"] == "hd"]
    assert list(hd["day"]) == [0.0, 7.0] and list(hd["at_risk"]) == [30, 30] and list(hd["events"]) == [0, 10]
    assert hd["survival"].iloc[-1] == pytest.approx(20 / 30)
    lo = km[km["arm"] == "lo"]
    assert list(lo["events"]) == [0, 0] and (lo["survival"] == 1.0).all()  # SD and CR: censored at day 7
    arms = analysis.arm_table(data).set_index("arm")
    assert arms.loc["hd", "progressions"] == 10 and math.isnan(arms.loc["hd", "pfs_median_day"])


def test_swimmer_summarises_a_large_arm(tmp_path):
    from abm.trial import figures

    data = analysis.read_trial(_fake_trial(tmp_path, patients=70))
    p = figures.swimmer(data, tmp_path / "s.png")
    assert p.stat().st_size > 0


# ------------------------------------------------------------------------------------------------ real runs
def test_a_tiny_trial_end_to_end_in_process(tmp_path, capsys):
    """`abm trial` then `abm analyze` on two patients in two arms of the real model on a 30 x 30 lattice, in this
    process (--workers 0): the invariants of a patient's row whatever the model does; the store and the tables are
    read without abm (sqlite3, json, csv). Nothing is asserted about how many respond: that is the model's biology,
    not the machinery."""
    import csv
    import sqlite3

    from abm.cli import main

    p = tiny_trial(tmp_path, patients=2)
    s = TrialSpec.load(p)
    out = tmp_path / "run"
    assert main(["trial", str(p), "--out", str(out), "--workers", "0", "--quiet"]) == 0
    assert "4 runs; 4 done now, 0 failed" in capsys.readouterr().out
    with sqlite3.connect(out / "sweep.sqlite") as db:  # the store without abm
        meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
        rows = db.execute("SELECT run_id, status, design, summary FROM runs ORDER BY ordinal").fetchall()
    assert meta["kind"] == "trial" and [r[0] for r in rows] == ["hd.p0000", "lo.p0000", "hd.p0001", "lo.p0001"]
    assert all(r[1] == "done" for r in rows)
    summ = [json.loads(r[3]) for r in rows]
    assert all(x["best_response"] in ("CR", "PR", "SD", "PD", "NE") for x in summ)
    assert json.loads(rows[0][2]) == json.loads(rows[1][2])  # paired: one patient's parameters in both arms
    assert main(["analyze", str(out)]) == 0
    with open(out / "analysis" / "arms.csv", newline="") as f:
        arms = {r["arm"]: r for r in csv.DictReader(f)}
    assert set(arms) == {"hd", "lo"} and all(int(a["n"]) == 2 for a in arms.values())
    for a in arms.values():
        k = int(a["orr_k"])
        ci = stats.binomtest(k, 2).proportion_ci(method="exact")
        assert (float(a["orr_lo"]), float(a["orr_hi"])) == pytest.approx((ci.low, ci.high))
        assert sum(int(a[f"{r}_rate_k"]) for r in ("cr", "pr", "sd", "pd", "ne")) == 2
    for f in ("patients.csv", "pfs.csv", "waterfall.png", "swimmer.png", "spider.png", "forest.png", "pfs.png"):
        assert (out / "analysis" / f).stat().st_size > 0, f
    df = analysis.read_trial(out)["patients"]
    assert set(df["best_response"]) <= {"CR", "PR", "SD", "PD", "NE"}
    for _, p in df.iterrows():
        pts = json.loads(p["assessments"])
        assert [x[0] for x in pts] == sorted(x[0] for x in pts)
        assert p["stopped_day"] >= p["last_assessment_day"] - 1e-9
        assert p["stopped_day"] <= s.run_days + 1e-9
        if p["off_study"] == "progression":
            assert p["stopped_day"] == pytest.approx(p["time_to_progression_day"])
        elif p["stopped_day"] < s.run_days - 1e-9:  # stopped early: not before the course was over
            assert p["stopped_day"] >= p["course_end_day"] - 1e-9
            assert p["doses_given"] + p["doses_held"] + p["doses_cancelled"] == p["doses_scheduled"]
    a = df.set_index(["patient", "arm"])
    assert a.loc[(0, "hd"), "seed"] == a.loc[(0, "lo"), "seed"]
    assert a.loc[(0, "hd"), "patient.antigenicity"] == a.loc[(0, "lo"), "patient.antigenicity"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED_TRIALS)
def test_shipped_trial_quick_with_two_workers_and_analyze(name, tmp_path):
    """Done when (issue 14): `abm trial scenarios/trials/<trial> --quick --workers 2` and `abm analyze` produce the
    tables and the four figures."""
    out = tmp_path / name
    path = str(ROOT / "scenarios" / "trials" / f"{name}.toml")
    r = subprocess.run(
        [sys.executable, "-m", "abm.cli", "trial", path, "--quick", "--workers", "2", "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr + r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "abm.cli", "analyze", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    for f in (
        "patients.csv",
        "arms.csv",
        "clinical.csv",
        "report.md",
        "waterfall.png",
        "swimmer.png",
        "spider.png",
        "forest.png",
        "pfs.csv",
        "pfs.png",
    ):
        assert (out / "analysis" / f).stat().st_size > 0
    spec = TrialSpec.load(path, quick=True)
    arms = analysis.arm_table(analysis.read_trial(out))
    assert (arms["n"] == spec.doc.trial.patients).all()
    if len(spec.arms) > 1:
        assert (out / "analysis" / "comparisons.csv").exists()


# ------------------------------------------------------------------------------------------------ calibration
SYNTHETIC_PROPOSAL = ParamDist(dist="lognormal", median=0.3, cv=2.0, low=0.005, high=20.0, source="test proposal")


SYNTHETIC_FIT = [
    FitParam(key="patient.antigenicity", field="median", low=0.02, high=5.0),
    FitParam(key="patient.antigenicity", field="cv", low=0.1, high=3.0),
]


def synthetic_spec(values: dict) -> TrialSpec:
    """The quick Atkins trial with the tests' own fit (antigenicity median and CV) and proposal."""
    s = TrialSpec.load("atkins1999_hd_il2", quick=True, values=values)
    s.doc.calibration.parameters = SYNTHETIC_FIT
    s.doc.calibration.proposal = {"patient.antigenicity": SYNTHETIC_PROPOSAL}
    return s


def _synthetic(theta=(0.8, 0.8), n_clinic=20000, n_pool=3000, seed=4):
    """A pool whose outcome is a known function of antigenicity (CR above 3, PR in (1.5, 3]) and clinic counts
    from a known cohort (lognormal median, CV = theta)."""
    s = TrialSpec.load("atkins1999_hd_il2", quick=True)
    base = s.cohort.parameters["patient.antigenicity"]
    cal = s.doc.calibration
    cal.proposal = {"patient.antigenicity": SYNTHETIC_PROPOSAL}  # the tests' own, not the shipped one
    cal.parameters = SYNTHETIC_FIT
    prop = SYNTHETIC_PROPOSAL
    rng = np.random.default_rng(seed)
    x = prop.ppf(rng.random(n_pool))
    truth = calibrate._dist(base, list(cal.parameters), np.array(theta))
    sf = lambda v: 1 - np.interp(v, truth.ppf(np.linspace(1e-6, 1 - 1e-6, 20001)), np.linspace(1e-6, 1 - 1e-6, 20001))  # noqa: E731
    p_cr, p_pr = float(sf(3.0)), float(sf(1.5) - sf(3.0))
    pool = calibrate.Pool(
        x[:, None], (x > 3).astype(float), ((x > 1.5) & (x <= 3)).astype(float), np.zeros(n_pool), prop.logpdf(x)
    )
    k_cr, k_pr = round(p_cr * n_clinic), round(p_pr * n_clinic)
    targets = calibrate.Targets([(k_cr, k_pr, n_clinic)], [])
    return s, base, cal, pool, targets, (p_cr, p_pr)


def test_reweighting_recovers_a_known_cohort():
    s, base, cal, pool, targets, (p_cr, p_pr) = _synthetic()
    f = calibrate.Fitter(s.cohort, list(cal.parameters), pool, targets)
    theta = f.fit()
    assert theta == pytest.approx([0.8, 0.8], rel=0.12)
    r = f.rates(theta)
    assert r["cr_rate"] == pytest.approx(p_cr, abs=0.01) and r["pr_rate"] == pytest.approx(p_pr, abs=0.01)
    assert 100 < r["ess"] < len(pool.cr)
    # the weights at the proposal itself are uniform: every pool patient counts
    fp = calibrate.Fitter(
        s.cohort.model_copy(
            update={"parameters": {**s.cohort.parameters, "patient.antigenicity": cal.proposal["patient.antigenicity"]}}
        ),
        list(cal.parameters),
        pool,
        targets,
    )
    assert fp.rates(np.array([0.3, 2.0]))["ess"] == pytest.approx(len(pool.cr), rel=1e-6)


def test_fit_pool_intervals_cover_the_truth(monkeypatch):
    s, base, cal, pool, targets, _ = _synthetic(n_clinic=400)
    monkeypatch.setattr(calibrate, "targets_of", lambda spec: targets)
    fit = calibrate.fit_pool(synthetic_spec({"calibration.bootstrap": 40}), pool)
    lo, hi = fit["theta_ci"]["patient.antigenicity:median"]
    assert lo < 0.8 < hi and lo < fit["theta"]["patient.antigenicity:median"] < hi
    assert fit["rates_ci"]["orr"][0] < fit["rates"]["orr"] < fit["rates_ci"]["orr"][1]


def test_the_fitted_cohort_is_a_cohort_a_trial_can_use(tmp_path):
    s = TrialSpec.load("atkins1999_hd_il2", quick=True)
    c = calibrate.fitted_cohort(
        s,
        {"patient.antigenicity:median": 0.4, "patient.nk_recruitment_scale:median": 0.5},
        {"pool": 12, "fitted_to": "CR 17/255, ORR 37/255"},
    )
    p = tmp_path / "fitted.toml"
    p.write_text(c.to_toml())
    t = TrialSpec.load(tiny_trial(tmp_path, extra=""), values={"trial.cohort": str(p)})
    d = t.cohort.parameters["patient.antigenicity"]
    assert (d.median, d.cv) == (0.4, 0.6) and "fitted by abm calibrate" in d.source
    assert t.cohort.parameters["patient.nk_recruitment_scale"].median == 0.5
    assert t.cohort.fit["pool"] == 12


def test_a_proposal_that_does_not_cover_the_cohort_is_refused():
    s = TrialSpec.load("atkins1999_hd_il2", quick=True)
    narrow = ParamDist(dist="lognormal", median=1.0, cv=0.5, low=0.5, high=2.0, source="x")
    s.doc.calibration.proposal["patient.antigenicity"] = narrow
    with pytest.raises(ParameterError, match="must cover the cohort"):
        calibrate.pool_spec(s)


def test_pool_spec_is_the_calibration_arm_with_the_proposal():
    s = TrialSpec.load("atkins1999_hd_il2", quick=True)
    p = calibrate.pool_spec(s)
    cal = s.doc.calibration
    assert [a.name for a in p.arms] == ["hd_il2"] and p.doc.trial.patients == cal.pool
    assert p.cohort.parameters["patient.antigenicity"] == cal.proposal["patient.antigenicity"]
    assert p.cohort.parameters["patient.mhc_baseline"] == s.cohort.parameters["patient.mhc_baseline"]
    # the NK proposal is the cohort's own distribution (another source text): the pool draws as the cohort does
    nk = "patient.nk_recruitment_scale"
    assert cal.proposal[nk].source != s.cohort.parameters[nk].source
    assert p.cohort.parameters[nk] == s.cohort.parameters[nk]
    other = cal.proposal[nk].model_copy(update={"median": 0.5})
    s.doc.calibration.proposal[nk] = other
    assert calibrate.pool_spec(s).cohort.parameters[nk] == other
    assert isinstance(p.cohort, CohortSpec)


def threshold_patient(task) -> dict:
    """A made-up patient whose confirmed response is a known function of its antigenicity: CR above 3, PR in
    (1.5, 3], PD below."""
    out = fake_patient(task)
    a = dict(task.values)["patient.antigenicity"]
    resp = "CR" if a > 3 else "PR" if a > 1.5 else "PD"
    out["summary"] |= {"best_response": resp, "responder": resp != "PD", "dose_limiting_toxicity": False}
    return out


def test_calibrate_end_to_end_on_a_made_up_pool(tmp_path):
    """The whole of abm calibrate (pool run into its store, read back, ML fit, bootstrap, fitted cohort TOML,
    report and figure) on 300 made-up patients: the fitted cohort reproduces the clinic's CR and PR rates, its
    interval holds the estimate, and the fitted TOML is a cohort a trial loads. Says nothing of the model."""
    spec = synthetic_spec({"calibration.pool": 300, "calibration.bootstrap": 10})
    out = tmp_path / "cal"
    fit = calibrate.calibrate(spec, out, workers=0, progress=False, run_fn=threshold_patient, command="abm test")
    assert fit["pool_n"] == 300
    cr, pr, n = fit["targets"]["multinomial"][0]
    assert fit["rates"]["cr_rate"] == pytest.approx(cr / n, abs=0.02)
    assert fit["rates"]["pr_rate"] == pytest.approx(pr / n, abs=0.02)
    for k, v in fit["theta"].items():
        lo, hi = fit["theta_ci"][k]
        assert lo <= v <= hi, k
    assert (out / "calibration.png").stat().st_size > 0 and (out / "calibration.md").read_text()
    assert json.loads((out / "calibration.json").read_text())["record"]["command"] == "abm test"
    t = TrialSpec.load(tiny_trial(tmp_path), values={"trial.cohort": str(out / "fitted_cohort.toml")})
    d = t.cohort.parameters["patient.antigenicity"]
    assert d.median == pytest.approx(fit["theta"]["patient.antigenicity:median"])
    with pytest.raises(ParameterError, match="pass --resume"):
        calibrate.calibrate(spec, out, workers=0, progress=False, run_fn=threshold_patient)


def test_fit_checks_flag_an_estimate_on_a_bound_and_rates_outside_the_clinic():
    """The shipped Atkins calibration (docs/validation.md): antigenicity median 0.0113, NK recruitment median
    0.415, fitted ORR = CR = 7.2% against the clinic's 37/255 and 17/255 (the model gives no PR). The ORR lies
    outside the clinic's exact interval (10.4-19.4%) and is flagged; the CR (3.9-10.5%) is not. A median on its
    lower bound is flagged; a fit inside is not."""
    s = TrialSpec.load("atkins1999_hd_il2", quick=True)
    fit = {
        "theta": {"patient.antigenicity:median": 0.0113, "patient.nk_recruitment_scale:median": 0.415},
        "targets": {"multinomial": [(17, 20, 255)], "binomial": []},
        "rates": {"cr_rate": 0.0723, "orr": 0.0723, "pr_rate": 0.0, "dlt_rate": 0.0},
    }
    w = calibrate.fit_checks(s, fit)
    assert len(w) == 1 and "ORR is 7.2%, outside the clinic's 37/255" in w[0]
    fit["theta"]["patient.antigenicity:median"] = 0.005  # the fit's lower bound
    assert any("on the lower bound of its fit (0.005)" in x for x in calibrate.fit_checks(s, fit))
    good = fit | {
        "theta": {"patient.antigenicity:median": 0.4, "patient.nk_recruitment_scale:median": 1.1},
        "rates": {"cr_rate": 0.07, "orr": 0.15, "pr_rate": 0.08, "dlt_rate": 0.0},
    }
    assert calibrate.fit_checks(s, good) == []


def test_calibrate_warns_when_no_cohort_reproduces_the_trial(tmp_path, capsys):
    """Every made-up pool patient is a CR whatever its antigenicity (as the model nearly is under high-dose IL-2):
    no reweighting gives the clinic's CR rate, and abm calibrate says so."""

    def everyone_cr(task):
        out = fake_patient(task)
        out["summary"] |= {"best_response": "CR", "responder": True, "dose_limiting_toxicity": False}
        return out

    spec = TrialSpec.load("atkins1999_hd_il2", quick=True, values={"calibration.pool": 60, "calibration.bootstrap": 5})
    fit = calibrate.calibrate(spec, tmp_path / "cal", workers=0, progress=False, run_fn=everyone_cr)
    assert fit["rates"]["cr_rate"] == pytest.approx(1.0)
    assert any("the fit does not reproduce the trial" in w for w in fit["warnings"])
    assert "the fit does not reproduce the trial" in capsys.readouterr().err


@pytest.mark.slow
def test_calibrate_quick_end_to_end(tmp_path):
    out = tmp_path / "cal"
    path = str(ROOT / "scenarios" / "trials" / "atkins1999_hd_il2.toml")
    r = subprocess.run(
        [sys.executable, "-m", "abm.cli", "calibrate", path, "--quick", "--workers", "2", "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr + r.stdout
    fit = json.loads((out / "calibration.json").read_text())
    assert set(fit["theta"]) == {"patient.antigenicity:median", "patient.nk_recruitment_scale:median"}
    assert (out / "calibration.png").stat().st_size > 0 and "pipeline check" in (out / "calibration.md").read_text()
    TrialSpec.load(path, quick=True, values={"trial.cohort": str(out / "fitted_cohort.toml")})
