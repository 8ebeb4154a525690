"""Threads that fit the machine (abm/threads.py) and work only when due (abm/simulation.py).

- ``import abm`` fills in the runtime defaults (a short OpenMP spin, the usable CPUs) without overriding the user's;
- unless the user chose a count, a model's steps run on the faster of 1 and all threads, measured (StepThreads);
- ``abm run --threads N`` sets the thread count (the pool size before Numba loads, else the threads in use);
- the split sweeps and the coupled solve give the same bits on their serial and parallel paths;
- the loop observes, snapshots and copies cells only on the steps some reporter asks for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

import abm
from abm import threads as threads_mod
from abm.cli import main
from abm.simulation import Simulation
from abm.threads import StepThreads
from tests.conftest import TINY_SETS

ROOT = Path(__file__).resolve().parents[1]
TINY_ARGS = [a for s in TINY_SETS for a in ("--set", s)]


def _python(code: str, **env: str) -> str:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OMP_", "KMP_", "GOMP_", "NUMBA_NUM", "NUMBA_THREADING", "ABM_THREAD"))
    }
    base["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**base, **env}, timeout=600, check=True
    )
    return out.stdout.strip().splitlines()[-1]


PROBE = """
import json, os, numba, numpy as np, abm, abm.field_solver
from abm.kernels import fields
fields.react_sweep_x(np.zeros((1, 4)), fields.Reaction(np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32),
    np.zeros(4, np.uint8), np.zeros(1), np.zeros(1), np.zeros(1)), 1.0, 4,
    fields.thomas_factors(4, np.zeros(1), False), np.ones(1, np.uint8))
print(json.dumps({"wait": os.environ.get("OMP_WAIT_POLICY"), "spin": os.environ.get("GOMP_SPINCOUNT"),
    "layer": numba.threading_layer(),
    "pool": numba.config.NUMBA_NUM_THREADS, "threads": numba.get_num_threads(), "cpus": len(os.sched_getaffinity(0)),
    "env_threads": os.environ.get("NUMBA_NUM_THREADS")}))
"""


def test_import_sets_a_short_spin_and_the_usable_cpus():
    got = json.loads(_python(PROBE))
    assert got["wait"] is None and got["spin"] == "10000"
    assert got["threads"] == min(got["pool"], got["cpus"])
    assert got["env_threads"] is None  # not exported: workers that default to one thread still do
    assert got["layer"] in ("omp", "tbb", "workqueue")


def test_threads_capped_at_the_usable_cpus():
    pin = "import os\nos.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
    got = json.loads(_python(pin + PROBE))
    assert got["cpus"] == 1 and got["threads"] == 1


def test_the_users_settings_win():
    got = json.loads(_python(PROBE, OMP_WAIT_POLICY="ACTIVE", GOMP_SPINCOUNT="7", NUMBA_NUM_THREADS="1"))
    assert got["wait"] == "ACTIVE" and got["spin"] == "7" and got["pool"] == 1 and got["threads"] == 1


def test_threads_option_in_a_fresh_process(tmp_path):
    code = (
        "import sys, numba; from abm.cli import main; "
        f"rc = main(['run', 'untreated', '--days', '0.05', '--quiet', '--threads', '1', '-o', r'{tmp_path / 'a.h5'}', "
        f"*{TINY_ARGS!r}]); print(rc, numba.get_num_threads())"
    )
    assert _python(code) == "0 1"


def test_threads_option_out_of_range_exits_2(tmp_path, capsys):
    args = ["run", "untreated", "--days", "0.05", "--quiet", "-o", str(tmp_path / "b.h5"), *TINY_ARGS]
    assert main([*args, "--threads", "0"]) == 2
    assert main([*args, "--threads", str(numba.config.NUMBA_NUM_THREADS + 1)]) == 2
    assert "NUMBA_NUM_THREADS" in capsys.readouterr().err
    old = numba.get_num_threads()
    try:
        assert main([*args, "--threads", "1"]) == 0
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(old)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs at least 2 Numba threads")
@pytest.mark.parametrize("shape", [(40, 30, 1), (300, 400, 1), (12, 10, 9), (60, 50, 40)])
def test_split_sweeps_serial_and_parallel_paths_give_the_same_bits(shape):
    from abm.kernels import fields as K
    from benchmarks import fields as bf

    out = {}
    for name, rx_f, st_f, nt in (
        ("serial", K.react_sweep_x_serial, K.sweep_strided_serial, 1),
        ("parallel", K.react_sweep_x, K.sweep_strided, 2),
    ):
        solver, (conc, up, so, _, perm, plasma) = bf.make_case(shape)
        rx = K.Reaction(up, so, solver._vmask, perm, perm * plasma, solver.decay_per_min)
        nx, ny, nz = shape
        ax, ay, az = solver._axes
        old = numba.get_num_threads()
        numba.set_num_threads(nt)
        try:
            for _ in range(2):
                rx_f(conc, rx, solver.dt_sub_min, nx, ax, solver._split_active)
                st_f(conc, nz, ny, nx, solver._block_y, ay, solver._split_active)
                st_f(conc, 1, nz, nx * ny, solver._block_z, az, solver._split_active)
        finally:
            numba.set_num_threads(old)
        out[name] = conc
    assert np.array_equal(out["serial"], out["parallel"])


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs at least 2 Numba threads")
def test_field_solver_same_bits_on_one_and_two_threads_above_and_below_the_thresholds():
    from benchmarks import fields as bf

    for shape in ((60, 50, 1), (260, 250, 1)):
        res = []
        for nt in (1, 2):
            old = numba.get_num_threads()
            numba.set_num_threads(nt)
            try:
                solver, args = bf.make_case(shape, coupled=[True, False, False])
                for _ in range(2):
                    solver.step(*args)
            finally:
                numba.set_num_threads(old)
            res.append(args[0].copy())
        assert np.array_equal(res[0], res[1]), shape


# ------------------------------------------------------------------------------------------ work only when due
class Every:
    """A reporter asking for ``needs`` every ``n`` steps."""

    def __init__(self, n: int, needs: set[str]) -> None:
        self.n, self.needs, self.steps = n, frozenset(needs), []

    def describe_next_report(self, last_step: int):
        return self.n - last_step % self.n, self.needs

    def begin(self, info) -> None:
        pass

    def report(self, frame) -> None:
        self.steps.append(frame.step)
        for k in self.needs:  # a frame shared by the reporters due at a step carries the union of their needs
            assert getattr(frame, k) is not None, k

    def close(self, end) -> None:
        pass


def _counting(model, monkeypatch) -> dict[str, int]:
    calls = {"measure": 0, "snapshot": 0}
    measure, cell_map = model.observer.measure, model.state.cell_type_map

    def counted_measure(*a, **k):
        calls["measure"] += 1
        return measure(*a, **k)

    def counted_map(*a, **k):
        calls["snapshot"] += 1
        return cell_map(*a, **k)

    monkeypatch.setattr(model.observer, "measure", counted_measure)
    monkeypatch.setattr(model.state, "cell_type_map", counted_map)
    return calls


def test_observation_and_snapshots_only_on_the_steps_asked_for(monkeypatch):
    model = abm.Model("untreated", seed=2, sets=TINY_SETS)
    calls = _counting(model, monkeypatch)
    obs = Every(10, {"observables"})
    snap = Every(25, {"snapshot", "cells"})
    counts = Every(1, {"counts"})
    sim = Simulation(model, [obs, snap, counts], 50)
    sim.begin()
    sim.run()
    assert obs.steps == [0, 10, 20, 30, 40, 50]
    assert snap.steps == [0, 25, 50]
    assert counts.steps == list(range(51))
    # steps 10..50 (step 0 was observed once at construction, for Mesa's DataCollector, and is cached); never on
    # the other 45 steps; snapshots on 3 of 51
    assert calls == {"measure": 5, "snapshot": 3}


def test_advance_observes_nothing(monkeypatch):
    model = abm.Model("untreated", seed=2, sets=TINY_SETS)
    calls = _counting(model, monkeypatch)
    model.advance(20)
    assert calls == {"measure": 0, "snapshot": 0}


# ---------------------------------------------------------------------------------------------- StepThreads
two_threads = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs at least 2 Numba threads")


def _drive(monkeypatch, cost_s, steps: int, at_step=None) -> tuple[StepThreads, list[int]]:
    """Run a StepThreads through ``steps`` steps on a fake clock; a step costs ``cost_s(step)[threads]`` seconds.
    Returns the tuner and the thread count of every step."""
    clock = [0.0]
    monkeypatch.setattr(threads_mod.time, "perf_counter", lambda: clock[0])
    tuner = StepThreads()
    tuner.active = True  # whatever this test process's environment says
    used = []
    for k in range(steps):
        tuner.before_step()
        n = numba.get_num_threads()
        used.append(n)
        clock[0] += cost_s(k)[n]
        tuner.after_step()
    return tuner, used


@pytest.fixture
def all_threads():
    old = numba.get_num_threads()
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    yield numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(old)


@two_threads
@pytest.mark.parametrize("faster", ["one", "all"])
def test_step_threads_settles_on_the_faster_count_and_rarely_probes(monkeypatch, all_threads, faster):
    full = all_threads
    cost = {1: 1.0, full: 2.5} if faster == "one" else {1: 1.5, full: 1.0}
    tuner, used = _drive(monkeypatch, lambda k: cost, 600)
    want = 1 if faster == "one" else full
    assert tuner.choice == want
    other = sum(1 for n in used[10:] if n != want)
    # probes at 16, 32, 64, ... steps apart: at most 6 in 590 steps (each probe that loses doubles the gap)
    assert 1 <= other <= 6, used


@two_threads
def test_step_threads_follows_a_change_of_load(monkeypatch, all_threads):
    """Quiet at first (all threads faster), then another job takes a core (one thread faster): the choice follows
    within a probe interval or two."""
    full = all_threads
    tuner, used = _drive(monkeypatch, lambda k: {1: 1.5, full: 1.0} if k < 300 else {1: 1.5, full: 4.0}, 700)
    assert used[250:300].count(full) >= 45
    switched = next(k for k in range(300, 700) if used[k] == 1 and all(n == 1 for n in used[k : k + 10]))
    assert switched - 300 <= 520  # the first probe after the change at most MAX_PROBE steps later
    assert tuner.choice == 1


@two_threads
def test_someone_elses_thread_count_stops_the_tuning(monkeypatch, all_threads):
    tuner, _ = _drive(monkeypatch, lambda k: {1: 1.0, all_threads: 2.0}, 5)
    numba.set_num_threads(all_threads if tuner.choice == 1 else 1)
    chosen = numba.get_num_threads()
    tuner.before_step()
    tuner.after_step()
    assert not tuner.active and numba.get_num_threads() == chosen


def test_a_chosen_count_is_not_tuned():
    code = (
        "import abm, numba\nfrom abm.threads import set_threads\nset_threads(1)\n"
        f"m = abm.Model('untreated', seed=1, sets={TINY_SETS!r})\nm.advance(3)\n"
        "print(m._threads.active, numba.get_num_threads())"
    )
    assert _python(code) == "False 1"
    assert _python(code.replace("set_threads(1)", "pass"), NUMBA_NUM_THREADS="1").startswith("False")


@two_threads
def test_a_tuned_run_gives_the_bits_of_a_one_thread_run():
    """Thread counts switch between steps while tuning; the state after 40 steps is the one-thread state."""
    code = (
        "import hashlib, abm, numpy as np\n"
        "m = abm.Model('high_dose_il2', seed=3, sets=['lattice.nx=140', 'lattice.ny=140'])\n"
        "m.advance(40)\n"
        "h = hashlib.sha256()\n"
        "for a in (m.state.conc, m.state.occupancy, m.state.cells.site[: m.state.cells.n[0]]):\n"
        "    h.update(np.ascontiguousarray(a).tobytes())\n"
        "print(m._threads.active, sorted(m._threads.mean_s), h.hexdigest())"
    )
    tuned = _python(code).split()
    fixed = _python(code, NUMBA_NUM_THREADS="1").split()
    assert tuned[0] == "True" and fixed[0] == "False"
    assert tuned[-1] == fixed[-1]


@two_threads
def test_a_model_tuned_down_leaves_the_thread_count_as_it_found_it(monkeypatch, all_threads):
    """A model that settles on 1 thread must not leave the process (the next model, other Numba code) on 1."""
    tuner, _ = _drive(monkeypatch, lambda k: {1: 1.0, all_threads: 2.5}, 40)
    assert tuner.choice == 1 and numba.get_num_threads() == 1
    tuner.restore()
    assert numba.get_num_threads() == all_threads
    tuner.before_step()  # the next batch: back on the chosen count, still tuning
    assert tuner.active and numba.get_num_threads() == 1
