"""Sweeps: designs and seeds, a real Dask LocalCluster (2 process workers) against serial runs, a worker that dies,
a run that raises, a driver killed mid-sweep and resumed, and the analyses on data with known answers."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from abm.params import ParameterError
from abm.sweep import SweepError, SweepSpec, design_points, execute, expand, read_sweep, run_seed, run_sweep
from abm.sweep import analysis as an

TINY_SETS = ["lattice.nx=40", "lattice.ny=40", "init.tumour_radius_um=100", "run.days=1", "run.snapshot_every_min=1440"]
METRICS = [
    "best_response",
    "response",
    "tumour_cells_final",
    "tumour_auc_cell_days",
    "toxicity_max",
    "doses_given",
    "doses_held",
    "total_kills_ctl",
    "max_n_ctl",
]


def tiny_spec(replicates: int = 2, levels=(0.0, 0.1, 1.0), seed: int = 11, **kw) -> SweepSpec:
    raw = {
        "sweep": {
            "name": "tiny",
            "base": "high_dose_il2",
            "sets": TINY_SETS,
            "replicates": replicates,
            "seed": seed,
            "metrics": METRICS,
            **kw,
        },
        "parameters": {"regimen.dose_scale.il2": {"values": list(levels)}},
    }
    return SweepSpec.from_dict(raw, source="<test>")


# --------------------------------------------------------------------------- task wrappers shipped to workers
def kill_once(run, marker: str, target: str):
    """Kill this worker process the first time it runs ``target`` (the marker file remembers)."""
    if run.run_id == target and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return execute(run)


def fail_some(run, bad_param: str, bad_raise: str):
    """``bad_param`` gets an invalid parameter (the simulation's own error); ``bad_raise`` raises in the task."""
    if run.run_id == bad_raise:
        raise RuntimeError("deliberate failure in the task")
    if run.run_id == bad_param:
        run = dataclasses.replace(run, sets=run.sets + ("ctl.kill_prob=7",))
    return execute(run)


def _pickle_by_value() -> None:
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def reference():
    """The tiny sweep's design run serially with plain abm.run, one row per design row."""
    import abm
    from abm.scenario import Scenario

    rows = []
    for r in expand(tiny_spec()):
        res = abm.run(Scenario.load(r.base, sets=list(r.sets)), seed=r.seed)
        rows.append({"run_id": r.run_id, **{m: res.summary[m] for m in METRICS}})
    return pd.DataFrame(rows).sort_values("run_id").reset_index(drop=True)


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    from abm.sweep.runner import NUMBA_ENV

    _pickle_by_value()
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, env=dict(NUMBA_ENV)
    )
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


def assert_same(got: pd.DataFrame, ref: pd.DataFrame) -> None:
    got = got.sort_values("run_id").reset_index(drop=True)
    assert list(got["run_id"]) == list(ref["run_id"]), "runs missing or duplicated"
    for m in METRICS:
        a, b = got[m].to_numpy(), ref[m].to_numpy()
        if a.dtype.kind in "fi" or b.dtype.kind in "fi":
            np.testing.assert_array_equal(a.astype(float), b.astype(float), err_msg=m)
        else:
            assert list(a) == list(b), m


# --------------------------------------------------------------------------- execution
def test_dask_grid_equals_serial(client, reference, tmp_path):
    res = run_sweep(tiny_spec(), tmp_path / "s", client=client, progress=False)
    assert (res.n_runs, res.n_done, res.n_failed) == (6, 6, 0)
    data = read_sweep(tmp_path / "s")
    assert_same(data["summary"], reference)
    assert data["failures"].empty
    # the design table holds every run with its parameters and seed
    d = data["design"]
    assert list(d["regimen.dose_scale.il2"]) == [0.0, 0.0, 0.1, 0.1, 1.0, 1.0]
    assert d["seed"].is_unique


def test_worker_killed_mid_sweep_loses_and_duplicates_nothing(client, reference, tmp_path):
    marker = tmp_path / "killed"
    fn = functools.partial(kill_once, marker=str(marker), target="p0001r000")
    res = run_sweep(tiny_spec(), tmp_path / "s", client=client, progress=False, run_fn=fn)
    assert marker.exists(), "the worker never killed itself"
    assert int(marker.read_text()) != os.getpid()
    assert (res.n_done, res.n_failed) == (6, 0)
    data = read_sweep(tmp_path / "s")
    assert data["failures"].empty
    assert_same(data["summary"], reference)


@pytest.mark.slow  # a local pool rebuilt after a death pays the workers' start-up twice (~30 s here)
def test_local_pool_worker_killed_is_retried(reference, tmp_path):
    marker = tmp_path / "killed"
    fn = functools.partial(kill_once, marker=str(marker), target="p0002r001")
    res = run_sweep(tiny_spec(), tmp_path / "s", workers=2, progress=False, run_fn=fn)
    assert marker.exists()
    assert res.n_retried >= 1 and (res.n_done, res.n_failed) == (6, 0)
    assert_same(read_sweep(tmp_path / "s")["summary"], reference)


def test_run_that_raises_is_recorded_and_the_rest_complete(client, reference, tmp_path):
    fn = functools.partial(fail_some, bad_param="p0000r001", bad_raise="p0002r000")
    # through the scheduler's address, as `abm sweep --scheduler tcp://...` does
    address = client.scheduler.address
    assert address.startswith("tcp://")
    res = run_sweep(tiny_spec(), tmp_path / "s", scheduler=address, progress=False, run_fn=fn)
    assert (res.n_done, res.n_failed) == (4, 2)
    data = read_sweep(tmp_path / "s")
    f = data["failures"].set_index("run_id")
    assert sorted(f.index) == ["p0000r001", "p0002r000"]
    assert "ctl.kill_prob" in f.loc["p0000r001", "error"] and "ParameterError" in f.loc["p0000r001", "error"]
    assert "deliberate failure" in f.loc["p0002r000", "error"]
    ok = reference[~reference["run_id"].isin(f.index)].reset_index(drop=True)
    assert_same(data["summary"], ok)
    # a resume reruns the failed runs (never reports them as finished); here they now succeed
    again = run_sweep(tiny_spec(), tmp_path / "s", workers=0, resume=True, progress=False)
    assert (again.n_done, again.n_failed, again.n_skipped) == (2, 0, 4)
    done = read_sweep(tmp_path / "s")
    assert done["failures"].empty
    assert_same(done["summary"], reference)
    runs = done["runs"].set_index("run_id")
    assert runs.loc["p0000r001", "attempts"] == 2 and runs.loc["p0001r000", "attempts"] == 1
    assert (runs["deaths"] == 0).all()


KILLER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import test_sweep
    from abm.sweep import run_sweep
    seen = []
    def on_result(res):
        seen.append(res["run_id"])
        if len(seen) == 3:
            os.kill(os.getpid(), signal.SIGKILL)   # the driver dies mid-sweep, runs in flight
    if __name__ == "__main__":  # the pool's spawned workers import this file too
        run_sweep(test_sweep.tiny_spec(), {out!r}, workers=2, progress=False, on_result=on_result)
""")


def test_driver_killed_and_resumed_equals_uninterrupted(reference, tmp_path):
    from abm.cli import main

    out = tmp_path / "s"
    script = tmp_path / "driver.py"
    script.write_text(KILLER.format(tests=str(Path(__file__).parent), out=str(out)))
    p = subprocess.Popen([sys.executable, str(script)], start_new_session=True)
    try:
        rc = p.wait(timeout=240)
    finally:
        try:  # the pool workers the dead driver leaves behind
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert rc == -signal.SIGKILL
    partial = read_sweep(out)
    assert len(partial["summary"]) == 3 and partial["failures"].empty
    with pytest.raises(SweepError, match="--resume"):
        run_sweep(tiny_spec(), out, workers=0, progress=False)
    sweep_toml = tmp_path / "tiny.toml"
    assert main(["sweep", str(_write_toml(sweep_toml)), "--out", str(out), "--resume", "--workers", "0", "-q"]) == 0
    done = read_sweep(out)
    assert_same(done["summary"], reference)
    assert done["failures"].empty


def _write_toml(path: Path) -> Path:
    spec = tiny_spec()
    sets = ", ".join(f'"{s}"' for s in TINY_SETS)
    path.write_text(
        textwrap.dedent(f"""
        [sweep]
        name = "tiny"
        base = "high_dose_il2"
        sets = [{sets}]
        replicates = {spec.replicates}
        seed = {spec.seed}
        metrics = [{", ".join(f'"{m}"' for m in METRICS)}]
        [parameters."regimen.dose_scale.il2"]
        values = [0.0, 0.1, 1.0]
    """)
    )
    return path


def test_resume_refuses_a_different_definition(tmp_path):
    run_sweep(tiny_spec(levels=(0.0,), replicates=1), tmp_path / "s", workers=0, progress=False)
    with pytest.raises(ParameterError, match="different definition"):
        run_sweep(tiny_spec(levels=(0.0,), replicates=2), tmp_path / "s", workers=0, resume=True, progress=False)


# --------------------------------------------------------------------------- designs and seeds
def _spec(design: str, **kw) -> SweepSpec:
    raw = {
        "sweep": {"name": "d", "base": "untreated", "design": design, "seed": 5, **kw},
        "parameters": {
            "ctl.kill_prob": {"low": 0.01, "high": 0.2},
            "ctl.aicd_rate_per_day": {"low": 0.5, "high": 8.0, "scale": "log"},
            "nk.kill_prob": {"low": 0.0, "high": 0.1},
        },
    }
    return SweepSpec.from_dict(raw, source="<test>")


def test_sobol_design_size_and_bounds():
    pts = design_points(_spec("sobol", samples=16))
    assert pts.shape == (16 * (3 + 2), 3)
    for j, (lo, hi) in enumerate([(0.01, 0.2), (0.5, 8.0), (0.0, 0.1)]):
        assert pts[:, j].min() >= lo and pts[:, j].max() <= hi
        assert pts[:, j].max() - pts[:, j].min() > 0.8 * (hi - lo)


def test_lhs_design_stratifies_every_parameter():
    n = 20
    spec = _spec("lhs", samples=n)
    pts = design_points(spec)
    assert pts.shape == (n, 3)
    for j, p in enumerate(spec.parameters):
        lo, hi = p.bounds()
        u = (np.log(pts[:, j] / lo) / np.log(hi / lo)) if p.scale == "log" else (pts[:, j] - lo) / (hi - lo)
        assert sorted(np.floor(u * n).astype(int)) == list(range(n))  # one sample in each of the n strata
    np.testing.assert_array_equal(pts, design_points(spec))


def test_morris_design_size():
    pts = design_points(_spec("morris", samples=5, morris_levels=4))
    assert pts.shape == (5 * (3 + 1), 3)


def test_seeds_differ_across_runs_and_repeat_across_invocations():
    a = expand(tiny_spec(replicates=4))
    b = expand(tiny_spec(replicates=4))
    assert [r.seed for r in a] == [r.seed for r in b]
    assert len({r.seed for r in a}) == len(a)
    # a run's seed depends on its (point, replicate) alone, not on the size of the design
    bigger = {r.run_id: r.seed for r in expand(tiny_spec(replicates=6, levels=(0.0, 0.1, 1.0, 2.0)))}
    assert all(bigger[r.run_id] == r.seed for r in a)
    assert run_seed(11, 0, 0) != run_seed(12, 0, 0)
    assert all(0 <= r.seed < 2**63 for r in a)


def test_bad_sweep_definitions_name_the_key(tmp_path):
    with pytest.raises(ParameterError, match="sweep.design"):
        tiny_spec(design="random")
    with pytest.raises(ParameterError, match="unknown key 'replicate'"):
        SweepSpec.from_dict(
            {
                "sweep": {"name": "x", "base": "untreated", "replicate": 2},
                "parameters": {"ctl.kill_prob": {"values": [0.1]}},
            }
        )
    with pytest.raises(ParameterError, match=r"ctl\.kill_prob"):
        SweepSpec.from_dict(
            {"sweep": {"name": "x", "base": "untreated"}, "parameters": {"ctl.kill_prob": {"values": [0.1, 3.0]}}}
        )
    with pytest.raises(ParameterError, match="sweep.replicates"):
        tiny_spec(replicates=0)
    with pytest.raises(ParameterError, match=r"\[quick\]"):
        p = tmp_path / "s.toml"
        p.write_text('[sweep]\nname="x"\nbase="untreated"\n[parameters."ctl.kill_prob"]\nvalues=[0.1]\n')
        SweepSpec.load(p, quick=True)


@pytest.mark.parametrize("name", ["il2_dose_response", "il2_ifna_grid", "sensitivity"])
def test_shipped_sweeps_load_at_both_sizes(name):
    path = Path(__file__).resolve().parent.parent / "scenarios" / "sweeps" / f"{name}.toml"
    full, quick = SweepSpec.load(path), SweepSpec.load(path, quick=True)
    assert len(expand(quick)) < len(expand(full))
    if name == "il2_dose_response":
        v = full.parameters[0].grid_values()
        assert 0.0 in v and min(x for x in v if x > 0) <= 0.011 and max(v) >= 2.0 and len(v) >= 9
        assert full.replicates >= 2
    if name == "il2_ifna_grid":
        for q in (full, quick):
            assert all(0.0 in p.grid_values() and len(p.grid_values()) >= 4 for p in q.parameters)


# --------------------------------------------------------------------------- analyses on known data
def _fake(summary: pd.DataFrame, keys: list[str], design: str = "grid") -> dict:
    return {
        "summary": summary,
        "parameters": keys,
        "design": summary,
        "spec": {"design": design, "seed": 1},
        "failures": pd.DataFrame(),
    }


def test_bliss_and_hsa_excess_on_a_known_grid():
    # single agents give effects 0.2 and 0.5; the combination 0.8 > Bliss 1 - 0.8 * 0.5 = 0.6 and HSA 0.5
    rows = []
    eff = {(0, 0): 0.0, (1, 0): 0.2, (0, 1): 0.5, (1, 1): 0.8}
    for (a, b), e in eff.items():
        for _r in range(5):
            rows.append({"a": a, "b": b, "best_response": "PD", "tumour_auc_cell_days": 100.0 * (1 - e)})
    g = an.combination_grid(_fake(pd.DataFrame(rows), ["a", "b"]), n_boot=200)
    be = g["burden_effect"]
    assert be["bliss"][1, 1] == pytest.approx(0.2)
    assert be["hsa"][1, 1] == pytest.approx(0.3)
    assert be["bliss"][0, 1] == pytest.approx(0.0) and be["bliss"][1, 0] == pytest.approx(0.0)
    lo, hi = be["bliss_ci"][:, 1, 1]
    assert lo == pytest.approx(0.2) and hi == pytest.approx(0.2)  # no spread across replicates


def test_dose_response_mtd_and_therapeutic_index():
    rows = []
    # level: (responders of 10, DLTs of 10, toxicity)
    spec = {0.0: (0, 0, 0.0), 0.1: (4, 0, 0.1), 0.3: (6, 1, 0.3), 1.0: (6, 3, 0.8), 2.0: (5, 6, 1.0)}
    for d, (k, dlt, tox) in spec.items():
        for i in range(10):
            rows.append(
                {
                    "dose": d,
                    "best_response": "PR" if i < k else "SD",
                    "tumour_auc_cell_days": 100.0,
                    "toxicity_max": tox,
                    "doses_held": 0,
                    "doses_given": 1,
                    "dose_limiting_toxicity": i < dlt,
                }
            )
    t = an.dose_response_table(_fake(pd.DataFrame(rows), ["dose"]))
    assert list(t["orr"]) == [0.0, 0.4, 0.6, 0.6, 0.5]
    assert an.mtd(t) == (1.0, True)  # 30% DLT at 1.0 stays below 33%; 60% at 2.0 does not
    ti = an.therapeutic_index(t)  # TD50/ED50 (tests/test_analysis.py has its cases); DLT reaches 60% at 2.0
    assert ti["status"] == "estimated" and 1.0 < ti["td50"]["ed50"] < 3.0 and ti["ti"] > 1
    lo, hi = an.wilson(6, 10)
    assert lo < 0.6 < hi and 0.25 < lo < 0.35


def test_analyze_writes_tables_and_figures(tmp_path):
    run_sweep(tiny_spec(levels=(0.0, 1.0), replicates=1, metrics=None), tmp_path / "s", workers=0, progress=False)
    out = an.analyze(tmp_path / "s", tmp_path / "a")
    names = {p.name for p in out}
    assert {"runs.csv", "dose_response.csv", "dose_response_summary.csv", "dose_response.png"} <= names
    t = pd.read_csv(tmp_path / "a" / "dose_response.csv")
    assert list(t["dose"]) == [0.0, 1.0] and math.isclose(t["auc_rel_untreated"][0], 1.0)


def test_sobol_indices_find_the_parameter_that_matters():
    spec = _spec("sobol", samples=64)
    pts = design_points(spec)
    n = len(pts)
    design = pd.DataFrame({"run_id": [f"p{i:04d}r000" for i in range(n)], "point": range(n), "replicate": 0})
    for j, k in enumerate(spec.keys):
        design[k] = pts[:, j]
    summary = design.copy()
    # the outcome depends on ctl.kill_prob alone (linear), plus a little on nk.kill_prob
    summary["tumour_auc_relative"] = (pts[:, 0] - 0.01) / 0.19 + 0.1 * pts[:, 2] / 0.1
    data = {
        "summary": summary,
        "design": design,
        "parameters": spec.keys,
        "failures": pd.DataFrame(),
        "spec": {"design": "sobol", "seed": 5, "parameters": [p.__dict__ for p in spec.parameters]},
    }
    t = an.sensitivity_table(data, metrics=("tumour_auc_relative",)).set_index("parameter")
    assert t.loc["ctl.kill_prob", "ST"] > 0.9 and t.loc["ctl.kill_prob", "S1"] > 0.85
    assert abs(t.loc["ctl.aicd_rate_per_day", "ST"]) < 0.05
    assert 0 < t.loc["nk.kill_prob", "ST"] < 0.1
