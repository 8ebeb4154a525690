"""Sweeps under fire (issue 16): workers killed mid-run (only their run is charged), a run whose worker always
dies, a driver killed with SIGKILL (its workers go with it, the caller's pipes close), SIGTERM, and driver-kill
storms resumed and compared row for row with an uninterrupted sweep.

A fast stand-in task (:func:`fake_task`, deterministic in the run's seed and parameters) replaces the simulation
where the test is about the machinery; the ``slow`` tests also run real (tiny) simulations. Counts are printed.
"""

from __future__ import annotations

import functools
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

import abm
from abm.sweep import RunStore, SweepSpec, read_sweep, run_sweep
from abm.sweep.store import STORE_NAME

TESTS = str(Path(__file__).parent)
sys.path.insert(0, TESTS)
from test_sweep import METRICS, tiny_spec  # noqa: E402

REPO = str(Path(abm.__file__).resolve().parents[1])
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([REPO, TESTS, os.environ.get("PYTHONPATH", "")]),
    "NUMBA_NUM_THREADS": "1",
}


# --------------------------------------------------------------------------- the stand-in task (runs in workers)
def fake_task(run, sleep: float = 0.0, exec_dir: str | None = None, kill_first=(), kill_always=()):
    """Record the execution, maybe kill this worker (SIGKILL), sleep, return a summary made from the seed."""
    n = 1
    if exec_dir is not None:
        p = Path(exec_dir) / run.run_id
        with open(p, "a") as f:
            f.write(f"{os.getpid()}\n")
        n = len(p.read_text().splitlines())
    if run.run_id in kill_always or (run.run_id in kill_first and n == 1):
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(sleep)
    s = run.seed
    summary = {
        "best_response": ["CR", "PR", "SD", "PD"][s % 4],
        "tumour_auc_relative": (s % 10007) / 10007 + run.values[0],
        "doses_given": s % 13,
        "dose_limiting_toxicity": bool(s % 2),
        "dlt_day": math.nan if s % 3 else 4.5,
    }
    return {"run_id": run.run_id, "ok": True, "elapsed_s": sleep, "summary": summary}


def executions(exec_dir: Path) -> dict[str, int]:
    return {p.name: len(p.read_text().splitlines()) for p in exec_dir.iterdir()}


def spec_of(n_replicates: int, **kw) -> SweepSpec:
    return tiny_spec(replicates=n_replicates, **kw)


@functools.cache
def reference_rows(n_replicates: int) -> pd.DataFrame:
    """The uninterrupted sweep (in-process) that every interrupted one must equal."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        run_sweep(spec_of(n_replicates), Path(d) / "ref", workers=0, progress=False, run_fn=fake_task)
        return read_sweep(Path(d) / "ref")["summary"].drop(columns=["elapsed_s"])


def assert_rows_equal(got: pd.DataFrame, ref: pd.DataFrame) -> None:
    got = got.drop(columns=["elapsed_s"]).sort_values("run_id").reset_index(drop=True)
    assert list(got["run_id"]) == list(ref["run_id"]), "runs lost or duplicated"
    pd.testing.assert_frame_equal(got, ref, check_exact=True)


# --------------------------------------------------------------------------- worker deaths
def test_a_worker_death_is_charged_to_its_run_only(tmp_path):
    ex = tmp_path / "exec"
    ex.mkdir()
    fn = functools.partial(fake_task, sleep=0.1, exec_dir=str(ex), kill_first=("p0001r002",))
    res = run_sweep(spec_of(4), tmp_path / "s", workers=2, progress=False, run_fn=fn)
    assert (res.n_done, res.n_failed, res.n_retried, res.deaths) == (12, 0, 1, {"p0001r002": 1})
    runs = read_sweep(tmp_path / "s")["runs"].set_index("run_id")
    assert runs.loc["p0001r002", "attempts"] == 2 and runs.loc["p0001r002", "deaths"] == 1
    others = runs.drop(index="p0001r002")
    assert (others["attempts"] == 1).all() and (others["deaths"] == 0).all() and (runs["status"] == "done").all()
    counts = executions(ex)
    assert counts.pop("p0001r002") == 2 and set(counts.values()) == {1} and len(counts) == 11
    assert_rows_equal(read_sweep(tmp_path / "s")["summary"], reference_rows(4))


@pytest.mark.slow  # three worker kills (11 s); one worker kill stays in the default suite
def test_three_worker_kills_in_36_runs_lose_nothing(tmp_path):
    """The issue's case: --workers 2, three workers SIGKILLed from outside while they run; 36 runs."""
    killed: list[str] = []
    started = []

    def on_event(ev):
        if ev.kind != "started":
            return
        started.append(ev.run_id)
        if len(started) in (5, 15, 25):
            time.sleep(0.05)  # it is running now
            os.kill(int(str(ev.value).rsplit(":", 1)[1]), signal.SIGKILL)
            killed.append(ev.run_id)

    fn = functools.partial(fake_task, sleep=0.15)
    res = run_sweep(spec_of(12), tmp_path / "s", workers=2, progress=False, run_fn=fn, on_event=on_event)
    assert (res.n_runs, res.n_done, res.n_failed) == (36, 36, 0)
    assert res.deaths == {rid: 1 for rid in killed} and len(killed) == 3
    runs = read_sweep(tmp_path / "s")["runs"].set_index("run_id")
    assert (runs.loc[killed, "attempts"] == 2).all()
    assert (runs.drop(index=killed)["attempts"] == 1).all() and runs["deaths"].sum() == 3
    assert_rows_equal(read_sweep(tmp_path / "s")["summary"], reference_rows(12))
    again = run_sweep(spec_of(12), tmp_path / "s", workers=0, resume=True, progress=False, run_fn=fn)
    assert (again.n_done, again.n_failed, again.n_skipped) == (0, 0, 36)
    print(f"36 runs, 2 workers, 3 worker kills: {res.n_done} done, 0 lost, charged: {sorted(killed)}")


def test_a_run_whose_worker_always_dies_fails_and_resume_reruns_it(tmp_path):
    fn = functools.partial(fake_task, kill_always=("p0000r001",))
    res = run_sweep(spec_of(2, max_retries=2), tmp_path / "s", workers=2, progress=False, run_fn=fn)
    assert (res.n_done, res.n_failed, res.deaths) == (5, 1, {"p0000r001": 3})
    data = read_sweep(tmp_path / "s")
    f = data["failures"].set_index("run_id")
    assert list(f.index) == ["p0000r001"] and f.loc["p0000r001", "attempts"] == 3
    assert "its worker died 3 times running it" in f.loc["p0000r001", "error"]
    assert "killed by SIGKILL" in f.loc["p0000r001", "error"]
    again = run_sweep(
        spec_of(2, max_retries=2), tmp_path / "s", workers=0, resume=True, progress=False, run_fn=fake_task
    )
    assert (again.n_done, again.n_failed, again.n_skipped) == (1, 0, 5)  # the failed run is rerun, not "finished"
    assert_rows_equal(read_sweep(tmp_path / "s")["summary"], reference_rows(2))


# --------------------------------------------------------------------------- the driver dies
DRIVER = textwrap.dedent("""
    import functools, sys
    sys.path.insert(0, {tests!r})
    import test_sweep_reliability as t
    from abm.sweep import run_sweep
    if __name__ == "__main__":
        out, workers, sleep, resume = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"
        print("DRIVER", flush=True)
        run_sweep(t.spec_of(int(sys.argv[5])), out, workers=workers, resume=resume, progress=False,
                  run_fn=functools.partial(t.fake_task, sleep=sleep))
        print("FINISHED", flush=True)
""")


def _driver(tmp_path: Path, out: Path, workers: int, sleep: float, resume: bool, reps: int) -> subprocess.Popen:
    script = tmp_path / "driver.py"
    if not script.exists():
        script.write_text(DRIVER.format(tests=TESTS))
    args = [sys.executable, str(script), str(out), str(workers), str(sleep), "1" if resume else "0", str(reps)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def _running(out: Path) -> list[dict]:
    if not (out / STORE_NAME).exists():
        return []
    try:
        with RunStore.open(out / STORE_NAME) as s:
            return [r for r in s.rows() if r["status"] == "running"]
    except Exception:  # noqa: BLE001 - created this instant
        return []


def _alive(proc: psutil.Process) -> bool:
    """Running, not a zombie waiting for whoever adopted it (init) to reap it."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_killed_driver_takes_its_workers_and_frees_the_callers_pipes(tmp_path):
    out = tmp_path / "s"
    p = _driver(tmp_path, out, workers=2, sleep=60.0, resume=False, reps=2)
    try:
        t0 = time.monotonic()
        while len(_running(out)) < 2:
            assert time.monotonic() - t0 < 120 and p.poll() is None, p.stderr.read() if p.poll() is not None else ""
            time.sleep(0.1)
        children = psutil.Process(p.pid).children(recursive=True)
        worker_pids = sorted(int(r["worker"].rsplit(":", 1)[1]) for r in _running(out))
        assert sorted(c.pid for c in children) == worker_pids  # no resource tracker, nothing else
        p.kill()
        t_kill = time.monotonic()
        p.communicate(timeout=15)  # returns only when every holder of the pipes (workers included) is gone
        t_pipes = time.monotonic() - t_kill
        alive = list(children)
        while alive and time.monotonic() - t_kill < 10:
            alive = [c for c in alive if _alive(c)]
            time.sleep(0.01)
        t_gone = time.monotonic() - t_kill
    finally:
        if p.poll() is None:
            p.kill()
    assert not alive, f"workers outlived the driver: {alive}"
    assert t_pipes < 5 and t_gone < 5
    print(f"driver SIGKILLed: caller's pipes closed after {t_pipes:.2f} s, its 2 workers gone after {t_gone:.2f} s")
    # the store resumes: the two runs in flight were not charged
    res = run_sweep(spec_of(2), out, workers=0, resume=True, progress=False, run_fn=fake_task)
    assert res.n_reset == 2 and res.n_done == 6 and res.deaths == {}
    assert (read_sweep(out)["runs"]["deaths"] == 0).all()


def test_sigterm_stops_the_driver_cleanly(tmp_path):
    out = tmp_path / "s"
    p = _driver(tmp_path, out, workers=2, sleep=60.0, resume=False, reps=2)
    t0 = time.monotonic()
    while len(_running(out)) < 2:
        assert time.monotonic() - t0 < 120 and p.poll() is None
        time.sleep(0.1)
    children = psutil.Process(p.pid).children(recursive=True)
    p.terminate()
    _, err = p.communicate(timeout=30)
    assert p.returncode != 0 and "FINISHED" not in err
    t0 = time.monotonic()
    while any(_alive(c) for c in children):
        assert time.monotonic() - t0 < 10, "workers outlived a SIGTERMed driver"
        time.sleep(0.05)
    data = read_sweep(out)
    assert (data["runs"]["status"] == "pending").all() and (data["runs"]["deaths"] == 0).all()
    assert (out / "sweep.h5").exists() and read_sweep(out / "sweep.h5")["summary"].empty
    assert not (out / "sweep.lock").exists()


def _done(out: Path) -> int:
    try:
        with RunStore.open(out / STORE_NAME, readonly=True) as s:
            return s.counts()["done"]
    except Exception:  # noqa: BLE001 - not there yet
        return -1


def _storm(tmp_path: Path, name: str, kills: int, workers: int, rng: random.Random, reps: int) -> dict:
    """Kill a driver ``kills`` times (each restart resumes), then finish; check the store after every kill.

    Half the kills land at a random time from the driver's start (start-up, store creation, first results), half
    while results are being recorded (once a random number of further runs is done, plus a random delay).
    """
    out = tmp_path / name
    n = 3 * reps
    tally = {"kills": 0, "before the store existed": 0, "while recording results": 0}
    for k in range(kills):
        resume = (out / STORE_NAME).exists()
        p = _driver(tmp_path, out, workers=workers, sleep=0.1, resume=resume, reps=reps)
        assert p.stdout.readline().strip() == "DRIVER"
        before = _done(out)
        if k % 2 == 0 or before >= n - 2:
            time.sleep(rng.uniform(0.0, 3.0))
        else:
            target = before + rng.randint(1, max(1, (n - before) // 3))
            t0 = time.monotonic()
            while _done(out) < target and p.poll() is None and time.monotonic() - t0 < 60:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.05))
        p.kill()
        p.communicate(timeout=30)
        tally["kills"] += 1
        if not (out / STORE_NAME).exists():
            tally["before the store existed"] += 1
            continue
        with RunStore.open(out / STORE_NAME) as s:
            s.check()  # SQLite's integrity check after every kill
            done = s.counts()["done"]
        if before < done < n:
            tally["while recording results"] += 1
    res = run_sweep(
        spec_of(reps),
        out,
        workers=workers,
        resume=(out / STORE_NAME).exists(),
        progress=False,
        run_fn=functools.partial(fake_task, sleep=0.05),
    )
    assert res.n_failed == 0 and res.n_done + res.n_skipped == res.n_runs == n
    assert_rows_equal(read_sweep(out)["summary"], reference_rows(reps))
    assert_rows_equal(read_sweep(out / "sweep.h5")["summary"], reference_rows(reps))  # the export agrees
    runs = read_sweep(out)["runs"]
    assert (runs["deaths"] == 0).all() and (runs["status"] == "done").all()
    return tally


@pytest.mark.slow  # a storm of driver kills (19 s); one driver kill and resume stays default (test_sweep.py)
def test_driver_kill_storm_then_resume_equals_uninterrupted(tmp_path):
    tally = _storm(tmp_path, "storm", kills=3, workers=2, rng=random.Random(3), reps=6)
    print(f"driver-kill storm (3 SIGKILLs, 18 runs, 2 workers): 0 runs lost, 0 stores damaged, {tally}")
    assert tally["while recording results"] >= 1


def test_resume_after_a_kill_while_the_store_was_created(tmp_path):
    """A driver SIGKILLed inside RunStore.create leaves only its temporary file: --resume starts the sweep."""
    out = tmp_path / "s"
    out.mkdir()
    stale = out / f".{STORE_NAME}.4242.tmp"
    stale.write_bytes(b"SQLite format 3\x00 torn")
    (out / f".{STORE_NAME}.4242.tmp-journal").write_bytes(b"")
    res = run_sweep(spec_of(2), out, workers=0, resume=True, progress=False, run_fn=fake_task)
    assert (res.n_done, res.n_failed, res.n_skipped) == (6, 0, 0)
    assert not stale.exists() and sorted(p.name for p in out.iterdir()) == ["sweep.h5", STORE_NAME]
    assert_rows_equal(read_sweep(out)["summary"], reference_rows(2))
    (out / STORE_NAME).unlink()
    (out / "sweep.h5").unlink()
    (out / "notes.txt").write_text("x")  # a directory with something else in it is not a sweep to resume
    with pytest.raises(abm.params.ParameterError, match="there is no sweep in it"):
        run_sweep(spec_of(2), out, workers=0, resume=True, progress=False, run_fn=fake_task)


@pytest.mark.slow  # 10 storms of 5 driver kills each (about 3 minutes on 2 cores)
def test_ten_driver_kill_storms(tmp_path):
    rng = random.Random(1016)
    totals = {"kills": 0, "before the store existed": 0, "while recording results": 0}
    for i in range(10):
        t = _storm(tmp_path, f"storm{i}", kills=5, workers=2 if i % 2 else 0, rng=rng, reps=10)
        for k in totals:
            totals[k] += t[k]
    print(f"10 driver-kill storms, {totals['kills']} SIGKILLs: 0 runs lost, 0 stores damaged, {totals}")
    assert totals["kills"] == 50 and totals["while recording results"] >= 10


@pytest.mark.slow  # real simulations: 3 storms of 3 kills of a 2-worker driver, compared with plain abm.run
def test_driver_kill_storms_with_real_runs(tmp_path):
    from abm.scenario import Scenario
    from abm.sweep import expand

    ref = []
    for r in expand(tiny_spec()):
        res = abm.run(Scenario.load(r.base, sets=list(r.sets)), seed=r.seed)
        ref.append({"run_id": r.run_id, **{m: res.summary[m] for m in METRICS}})
    ref = pd.DataFrame(ref).sort_values("run_id").reset_index(drop=True)
    script = tmp_path / "real.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {TESTS!r})
        import test_sweep
        from abm.sweep import run_sweep
        if __name__ == "__main__":
            run_sweep(test_sweep.tiny_spec(), sys.argv[1], workers=2, resume=sys.argv[2] == "1", progress=False)
    """)
    )
    rng = random.Random(99)
    kills = 0
    for storm in range(3):
        out = tmp_path / f"real{storm}"
        for k in range(3):
            resume = k > 0 and (out / STORE_NAME).exists()
            p = subprocess.Popen([sys.executable, str(script), str(out), "1" if resume else "0"], env=ENV)
            time.sleep(rng.uniform(2.0, 12.0))
            p.kill()
            p.wait()
            kills += 1
        run_sweep(tiny_spec(), out, workers=2, resume=(out / STORE_NAME).exists(), progress=False)
        got = read_sweep(out)["summary"].sort_values("run_id").reset_index(drop=True)
        assert list(got["run_id"]) == list(ref["run_id"])
        for m in METRICS:
            a, b = got[m].to_numpy(), ref[m].to_numpy()
            if b.dtype.kind in "fib":
                np.testing.assert_array_equal(a.astype(float), b.astype(float), err_msg=m)
            else:
                assert list(a) == list(b), m
    print(f"real-run driver-kill storms: 3 storms, {kills} SIGKILLs, 0 runs lost, equal to plain abm.run")


# --------------------------------------------------------------------------- Dask
@pytest.fixture(scope="module")
def dask_client():
    import cloudpickle
    from distributed import Client, LocalCluster

    from abm.sweep.runner import NUMBA_ENV

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, env=NUMBA_ENV)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


def test_dask_worker_death_reruns_that_run_only(dask_client, tmp_path):
    ex = tmp_path / "exec"
    ex.mkdir()
    fn = functools.partial(fake_task, sleep=0.3, exec_dir=str(ex), kill_first=("p0001r001",))
    res = run_sweep(spec_of(4), tmp_path / "s", client=dask_client, progress=False, run_fn=fn)
    assert (res.n_done, res.n_failed) == (12, 0)
    pids = {p.name: [int(x) for x in p.read_text().split()] for p in ex.iterdir()}
    dead = pids["p0001r001"][0]
    assert len(pids["p0001r001"]) == 2 and pids["p0001r001"][1] != dead
    # Dask reruns what the dead worker held: the run it was running, and runs it had finished whose results the
    # driver had not fetched yet (results live on the workers). Nothing else runs twice.
    rerun = sorted(rid for rid, ps in pids.items() if len(ps) > 1)
    assert all(pids[rid][0] == dead for rid in rerun) and all(len(ps) <= 2 for ps in pids.values())
    assert res.deaths == {}  # Dask reran them itself; no KilledWorker, so the driver charged nothing
    print(f"Dask worker killed mid-run: rerun {rerun} (all on the dead worker), 0 charged, 0 lost")
    assert_rows_equal(read_sweep(tmp_path / "s")["summary"], reference_rows(4))


@pytest.mark.slow  # a LocalCluster of its own in a driver process (about 20 s)
def test_dask_local_workers_die_with_a_killed_driver(tmp_path):
    script = tmp_path / "dask_driver.py"
    script.write_text(
        textwrap.dedent(f"""
        import functools, sys
        sys.path.insert(0, {TESTS!r})
        import test_sweep_reliability as t
        from abm.sweep import run_sweep
        if __name__ == "__main__":
            run_sweep(t.spec_of(2), sys.argv[1], dask_local=2, progress=False,
                      run_fn=functools.partial(t.fake_task, sleep=60))
    """)
    )
    out = tmp_path / "s"
    p = subprocess.Popen(
        [sys.executable, str(script), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV
    )
    try:
        t0 = time.monotonic()
        while len(_running(out)) < 6:  # (Dask: every run is "running" once handed to the cluster)
            assert time.monotonic() - t0 < 120 and p.poll() is None
            time.sleep(0.2)
        time.sleep(2)
        children = psutil.Process(p.pid).children(recursive=True)
        assert len(children) >= 2
        p.kill()
        t_kill = time.monotonic()
        p.communicate(timeout=60)
        t_pipes = time.monotonic() - t_kill
        _, alive = psutil.wait_procs(children, timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert not alive, alive
    print(f"--dask-local driver SIGKILLed: pipes closed after {t_pipes:.1f} s, {len(children)} processes gone")
    assert t_pipes < 30


def test_store_run_table_is_generic_for_trials(tmp_path):
    """The virtual-trial feature reuses the store: per-patient rows with covariates as the design."""
    from abm.sweep import RunRecord

    patients = [RunRecord(f"pt{i:03d}", i, 7 + i, {"arm": "il2", "age": 40 + i, "weight_kg": 70.5}) for i in range(3)]
    s = RunStore.create(tmp_path / "trial.sqlite", {"kind": "trial", "parameters": ["age"]}, patients)
    s.mark_running("pt001", "w")
    s.record_done("pt001", {"best_response": "PR", "visits": [0, 42, 84]}, 2.0)
    row = s.row("pt001")
    assert row["design"] == {"arm": "il2", "age": 41, "weight_kg": 70.5}
    assert row["summary"]["visits"] == [0, 42, 84] and s.meta()["kind"] == "trial"
    t = s.tables()
    assert list(t["summary"]["run_id"]) == ["pt001"] and t["summary"]["age"].iloc[0] == 41
    s.close()
