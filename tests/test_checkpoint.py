"""Checkpoint and resume (issue 16, item 1): the state record round-trips, a resumed run equals the uninterrupted
one bit for bit (2D and 3D, treated: doses before and after the checkpoint, holds, transfers), a new regimen starts
from another run's checkpoint, and ``abm run`` interrupted at random instants resumes to the same file.

Counts: the default suite interrupts ``abm run`` twice; the slow test 50 times (the issue's count)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

import abm
from abm import checkpoint as C
from abm.cli import main
from abm.errors import ParameterError, UsageError
from abm.io import find_partials
from abm.simulation import RunInterrupted, Simulation, resume, run
from tests.golden import _file_fingerprint

REPO = str(Path(abm.__file__).resolve().parents[1])
ENV = {**os.environ, "PYTHONPATH": REPO, "NUMBA_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SMALL = [
    "lattice.nx=40",
    "lattice.ny=40",
    "init.tumour_radius_um=100",
    "init.ctl_cells=10",
    "init.nk_cells=10",
    "init.immune_within_um=100",
    "patient.antigenicity=4",
    "run.snapshot_every_min=360",
]
SMALL_3D = [
    "lattice.nx=14",
    "lattice.ny=14",
    "lattice.nz=14",
    "init.tumour_radius_um=60",
    "init.ctl_cells=10",
    "init.nk_cells=10",
    "run.snapshot_every_min=240",
]


class StopAt:
    """A reporter that sends this process SIGINT at one step (the run then stops at the next step boundary)."""

    def __init__(self, step: int, sig: int = signal.SIGINT) -> None:
        self.step, self.sig = step, sig

    def describe_next_report(self, last):
        return (self.step - last if last < self.step else 10**9), frozenset()

    def begin(self, info):
        pass

    def report(self, frame):
        if frame.step == self.step:
            os.kill(os.getpid(), self.sig)

    def close(self, end):
        pass


class FailAt(StopAt):
    """A reporter that raises at one step: a run that dies (as if killed) after its checkpoints."""

    def report(self, frame):
        if frame.step == self.step:
            raise RuntimeError("simulated crash")


def same_files(a: Path, b: Path) -> list[str]:
    fa, fb = _file_fingerprint(a), _file_fingerprint(b)
    return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k) and k != "@status")


def assert_same_run(a, b) -> None:
    assert a.observables.keys() == b.observables.keys()
    for k in a.observables:
        np.testing.assert_array_equal(a.observables[k], b.observables[k], err_msg=k)
    assert a.summary == b.summary
    assert a.events == b.events
    assert same_files(a.path, b.path) == []
    with h5py.File(b.path, "r") as f:
        assert "resumed at step" in f.attrs["status"]


@pytest.mark.parametrize(
    "name, sets, days, stop",
    [
        ("high_dose_il2", SMALL, 3.0, 200),  # doses q8h before and after step 200 (day 1.4), holds
        ("lak_il2", SMALL_3D, 1.5, 77),  # 3D, LAK transfers on days 0-2 around the stop
    ],
)
def test_resume_after_an_interruption_equals_the_uninterrupted_run(tmp_path, name, sets, days, stop):
    sc = abm.Scenario.load(name, sets=sets)
    full = run(sc, out=tmp_path / "full.h5", seed=11, days=days)
    kinds = {e["kind"] for e in full.events}
    assert "dose_given" in kinds
    steps = [e["step"] for e in full.events if e["kind"] in ("dose_given", "dose_held", "transfer")]
    assert min(steps) < stop < max(steps)  # therapy acts on both sides of the checkpoint
    if name == "high_dose_il2":
        assert "dose_held" in kinds
    out = tmp_path / "part.h5"
    with pytest.raises(RunInterrupted) as e, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run(sc, out=out, seed=11, days=days, checkpoint=C.checkpoint_path(out), reporters=[StopAt(stop)])
    assert e.value.checkpoint == tmp_path / "part.ckpt.h5"
    ck = C.read(e.value.checkpoint)
    assert ck.step == stop + 1 and not ck.complete
    res = resume(tmp_path / "part.ckpt.h5")
    assert res.path == out
    assert_same_run(full, res)
    # the superseded partial file and the checkpoint are gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.h5", "part.h5"]


def test_resume_from_an_interval_checkpoint_after_a_crash(tmp_path):
    sc = abm.Scenario.load("high_dose_il2", sets=SMALL)
    full = run(sc, out=tmp_path / "full.h5", seed=3, days=2.0)
    out = tmp_path / "c.h5"
    with pytest.raises(RuntimeError, match="simulated crash"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run(sc, out=out, seed=3, days=2.0, checkpoint_every_min=6 * 60, reporters=[FailAt(150)])
    ck = C.read(tmp_path / "c.ckpt.h5")
    assert ck.step == 144 and ck.checkpoint_every == 36  # the last 6-hour checkpoint before the crash at 150
    res = resume(find_partials(out)[0])  # the partial file finds its checkpoint
    assert_same_run(full, res)
    # asked-for checkpoints go on; the final one is kept (for a run from it)
    assert res.checkpoint == tmp_path / "c.ckpt.h5" and C.read(res.checkpoint).complete
    with pytest.raises(UsageError, match="the run is complete"):  # nothing left to resume
        resume(res.checkpoint)


@pytest.mark.parametrize("dataset", ["fields/il2/value", "particles/cells/site"])
def test_resume_refuses_a_partial_file_whose_frames_changed_after_the_checkpoint(tmp_path, dataset):
    sc = abm.Scenario.load("high_dose_il2", sets=SMALL)
    out = tmp_path / "c.h5"
    with pytest.raises(RuntimeError, match="simulated crash"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run(sc, out=out, seed=3, days=1.0, checkpoint_every_min=6 * 60, reporters=[FailAt(80)])
    ck = C.read(tmp_path / "c.ckpt.h5")
    partial = find_partials(out)[0]
    with h5py.File(ck.path, "r") as f, h5py.File(partial, "r") as p:
        # format 1.1: the CRC-32 of every frame written before the checkpoint (steps 0, 36; not 72, its own step)
        assert f["partial_crc32/fields/il2/value"].shape == (2,) and p["fields/il2/value"].shape[0] == 3
        assert f["partial_crc32/particles/cells/id"].shape == (2,)
    # a frame that reads back (its Fletcher-32 rewritten with it) but is not what the run wrote: never replayed
    with h5py.File(partial, "r+") as p:
        ds = p[dataset]
        if ds.ndim > 1:
            ds[1] = ds[1] + 1.0
        else:
            row = int(p["particles/cells/start"][1])
            ds[row] = ds[row] + 1
    with pytest.raises(UsageError, match=f"frame 1 of /{dataset} differs from what the first run wrote"):
        resume(ck.path)


def test_model_from_checkpoint_continues_the_state_record(tmp_path):
    sc = abm.Scenario.load("il2_ifna", sets=SMALL)
    a = abm.Model(sc, seed=5)
    a.advance(40)
    a.extra_counter = np.arange(4)  # a field a later model issue adds: saved and restored without an edit
    a.extra_flag = True
    sim = Simulation(a, [], 100)
    C.Checkpointer(tmp_path / "m.ckpt.h5").save(sim)
    b = abm.Model.from_checkpoint(tmp_path / "m.ckpt.h5")
    np.testing.assert_array_equal(b.extra_counter, a.extra_counter)
    assert b.extra_flag is True and b.step_index == 40
    for x, y in zip(a.state.cells, b.state.cells, strict=True):
        np.testing.assert_array_equal(x, y)
    assert b.state.tissue.conc is b.state.conc  # restored in place: the kernels' views still hold
    assert b.therapy.__dict__.keys() == a.therapy.__dict__.keys()
    assert b.therapy._next_dose == a.therapy._next_dose and b.therapy.toxicity == a.therapy.toxicity
    a.advance(30)
    b.advance(30)
    np.testing.assert_array_equal(a.state.conc, b.state.conc)
    np.testing.assert_array_equal(a.state.occupancy, b.state.occupancy)
    assert a.events == b.events and a.observe() == b.observe()


def test_an_attribute_that_cannot_be_stored_stops_the_checkpoint(tmp_path):
    m = abm.Model(abm.Scenario.load("untreated", sets=SMALL), seed=1)
    m.helper = object()
    with pytest.raises(C.CheckpointError, match=r"model\.helper"):
        C.Checkpointer(tmp_path / "x.ckpt.h5").save(Simulation(m, [], 10))
    assert not (tmp_path / "x.ckpt.h5").exists() and list(tmp_path.iterdir()) == []


def test_grow_untreated_then_treat_from_the_checkpoint(tmp_path):
    grow = run(
        abm.Scenario.load("untreated", sets=SMALL),
        out=tmp_path / "grow.h5",
        seed=2,
        days=1.0,
        checkpoint_every_min=24 * 60,
    )
    ck_path = grow.checkpoint
    assert ck_path == tmp_path / "grow.ckpt.h5" and C.read(ck_path).complete
    treat = run(
        abm.Scenario.load("high_dose_il2", sets=SMALL),
        out=tmp_path / "treat.h5",
        days=1.0,
        from_checkpoint=ck_path,
    )
    # the treated run starts from the grown tissue, at its own t = 0, with its own regimen and a spawned seed
    assert treat.observables["n_tumour"][0] == grow.observables["n_tumour"][-1]
    assert treat.observables["step"][0] == 0 and any(e["kind"] == "dose_given" for e in treat.events)
    assert treat.model.seed == C.derived_seed(C.read(ck_path)) != grow.model.seed
    with h5py.File(tmp_path / "treat.h5", "r") as f:
        origin = json.loads(f["parameters/resolved_json"][()])["origin"]
    assert origin["checkpoint"] == str(ck_path.resolve()) and origin["step"] == 144 and origin["day"] == 1.0
    assert origin["scenario"] == "untreated"
    # anything but the regimen and run settings must equal the checkpoint's
    with pytest.raises(ParameterError, match=r"--set ctl.kill_prob=0.3: key 'ctl.kill_prob': differs"):
        run(
            abm.Scenario.load("high_dose_il2", sets=[*SMALL, "ctl.kill_prob=0.3"]),
            days=0.1,
            from_checkpoint=ck_path,
        )


def test_cli_resume_refuses_overrides_and_bad_files(tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path / "nothing.ckpt.h5")]) == 2
    assert "no checkpoint found" in capsys.readouterr().err
    assert main(["run", "untreated", "--resume", "x.ckpt.h5"]) == 2
    assert "takes no SCENARIO" in capsys.readouterr().err
    bad = tmp_path / "bad.ckpt.h5"
    with h5py.File(bad, "w") as f:
        f.attrs["format_name"] = "something"
    assert main(["resume", str(bad)]) == 2
    assert "not an abm checkpoint" in capsys.readouterr().err
    bad.write_bytes(b"not hdf5")
    assert main(["resume", str(bad)]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    with pytest.raises(UsageError):
        C.read(tmp_path)


# ------------------------------------------------------------------------------- abm run at random instants
ABM = [sys.executable, "-m", "abm.cli"]
RUN_SETS = [a for s in SMALL for a in ("--set", s)]


def _reference(tmp: Path) -> Path:
    ref = tmp / "ref.h5"
    cmd = [*ABM, "run", "high_dose_il2", *RUN_SETS, "--seed", "4", "--days", "2", "-q", "--out", str(ref)]
    subprocess.run(cmd, check=True, env=ENV, cwd=tmp, timeout=300, capture_output=True)
    return ref


def _interrupt_and_resume(tmp: Path, ref: Path, rng: random.Random, tally: dict[str, int]) -> None:
    out = tmp / "run.h5"
    sig = rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
    cmd = [*ABM, "run", "high_dose_il2", *RUN_SETS, "--seed", "4", "--days", "2", "-q", "--out", str(out)]
    cmd += ["--checkpoint-every", "4"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=tmp)
    t0 = time.monotonic()
    while not find_partials(out) and p.poll() is None and time.monotonic() - t0 < 120:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 1.5))
    if p.poll() is None:
        p.send_signal(sig)
    _, err = p.communicate(timeout=300)
    assert "Traceback" not in err and p.returncode != -signal.SIGSEGV, err
    ck = C.checkpoint_path(out)
    # a signal after the output's rename (the run complete, its last checkpoint kept) leaves nothing to resume
    if p.returncode == 0 or (out.exists() and ck.exists() and C.read(ck).complete):
        tally["completed before the signal"] += 1
    elif not ck.exists():
        tally["stopped before its first checkpoint"] += 1
        for q in find_partials(out):
            q.unlink()
        (tmp / "run.h5.lock").unlink(missing_ok=True)
        return
    else:
        C.read(ck)  # never a torn checkpoint: written beside and renamed
        key = f"{signal.Signals(sig).name}, resumed"
        tally[key] = tally.get(key, 0) + 1
        r = subprocess.run([*ABM, "run", "--resume", str(ck), "-q"], env=ENV, cwd=tmp, capture_output=True, text=True)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert same_files(ref, out) == [], "resumed run differs from the uninterrupted one"
    tally["equal to the uninterrupted run"] += 1
    out.unlink()
    for q in [*find_partials(out), ck]:
        q.unlink(missing_ok=True)


def _random_interruptions(tmp_path: Path, n: int, seed: int) -> dict[str, int]:
    ref = _reference(tmp_path)
    rng = random.Random(seed)
    tally: dict[str, int] = {"equal to the uninterrupted run": 0, "completed before the signal": 0}
    tally["stopped before its first checkpoint"] = 0
    for _ in range(n):
        _interrupt_and_resume(tmp_path, ref, rng, tally)
    print(f"abm run interrupted {n} times at random instants and resumed: {tally}")
    return tally


@pytest.mark.slow  # 2 random interruptions (21 s); test_resume_after_an_interruption stays default
def test_abm_run_interrupted_at_random_instants_resumes_to_the_same_file(tmp_path):
    tally = _random_interruptions(tmp_path, 2, seed=161)
    assert tally["equal to the uninterrupted run"] + tally["stopped before its first checkpoint"] == 2


@pytest.mark.slow  # 50 interruptions and resumes (several minutes on 2 cores)
def test_fifty_random_interruptions_resume_bit_for_bit(tmp_path):
    tally = _random_interruptions(tmp_path, 50, seed=1616)
    assert tally["equal to the uninterrupted run"] + tally["stopped before its first checkpoint"] == 50
    assert tally["equal to the uninterrupted run"] - tally["completed before the signal"] >= 25
