"""abm.run -> HDF5 -> abm.load: every dataset, units, dimension scales, parameters, plain-h5py reading,
interruption by SIGINT/SIGTERM, and reproducibility from the seed."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

import abm
import abm.io
from abm.observables import observable_specs
from tests.conftest import TINY_RUN_SNAPSHOT_MIN, TINY_SETS


def assert_same_observables(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


# ------------------------------------------------------------------------------------------------ the file layout
def test_every_observable_spec_is_stored_with_units(tiny_run):
    res, path, sc = tiny_run
    specs = observable_specs(sc.params)
    n_rows = res.model.step_index + 1  # step 0 and every step after it
    with h5py.File(path, "r") as f:
        assert sorted(f["observables"]) == sorted(s.name for s in specs)
        for s in specs:
            g = f["observables"][s.name]
            assert g["value"].shape == (n_rows,), s.name
            assert g["value"].attrs["units"] == s.units, s.name
            assert g["time"].attrs["units"] == "min"
            np.testing.assert_array_equal(g["step"][:], np.arange(n_rows))
    for s in specs:
        assert s.name in res.observables
    np.testing.assert_array_equal(res.observables["step"], np.arange(n_rows))


def test_snapshots_and_fields_per_species(tiny_run):
    res, path, sc = tiny_run
    p = sc.params
    shape = (p.lattice.ny, p.lattice.nx)
    every = TINY_RUN_SNAPSHOT_MIN
    n_snap = int(res.model.time_min // every) + 1  # step 0, then every 6 h up to 1.5 days
    assert n_snap == 7
    with h5py.File(path, "r") as f:
        ct = f["particles/lattice/cell_type/value"]
        assert ct.shape == (n_snap, *shape)
        assert sorted(f["fields"]) == sorted(p.species_names)
        for sp in p.species_names:
            v = f["fields"][sp]["value"]
            assert v.shape == (n_snap, *shape), sp
            assert v.attrs["units"] == p.species[sp].units, sp
            np.testing.assert_allclose(f["fields"][sp]["time"][:], np.arange(n_snap) * every)
    run = abm.load(path)
    assert run.n_snapshots == n_snap
    assert run.species == list(p.species_names)
    # the last snapshot is the final state of the model
    final = run.cell_type(-1).reshape(-1)
    np.testing.assert_array_equal(final, res.model.cell_type_map().reshape(-1))
    for k, sp in enumerate(p.species_names):
        np.testing.assert_allclose(run.field(sp, -1).reshape(-1), res.model.state.conc[k], rtol=1e-6, atol=1e-30)
    # IL-2 was given i.v.: the tissue has IL-2 in it
    assert run.field("il2", -1).max() > 0


def test_events_of_a_treated_run(tiny_run):
    res, path, _ = tiny_run
    run = abm.load(path)
    assert res.events, "high-dose IL-2 gives doses in 1.5 days"
    assert len(run.events) == len(res.events)
    for got, want in zip(run.events, res.events):
        for k, v in want.items():
            if isinstance(v, float) and math.isnan(v):
                assert math.isnan(got[k])
            else:
                assert got[k] == v, (k, got, want)
    kinds = {e["kind"] for e in run.events}
    assert "dose_given" in kinds
    given = run.events_of("dose_given")
    assert all(e["drug"] == "il2" and e["route"] == "iv" and e["unit"] == "IU/kg" for e in given)
    assert len(given) == res.summary["doses_given"]
    assert len(run.events_of("dose_held")) == res.summary["doses_held"]
    with h5py.File(path, "r") as f:
        assert f["events/time"].attrs["units"] == "min"
        assert f["events/kind"].shape == (len(res.events),)


def test_summary_round_trip(tiny_run):
    res, path, _ = tiny_run
    run = abm.load(path)
    assert run.complete is True and run.status == "completed"
    for k, v in res.summary.items():
        assert k in run.summary, k
        got = run.summary[k]
        if isinstance(v, float) and math.isnan(v):
            assert math.isnan(got), k
        else:
            assert got == v, (k, got, v)


def test_observables_read_back_equal(tiny_run):
    res, path, _ = tiny_run
    run = abm.load(path)
    for k, v in run.observables.items():
        np.testing.assert_array_equal(v, res.observables[k], err_msg=k)
    np.testing.assert_array_equal(run.time_min, res.observables["time_min"])
    np.testing.assert_array_equal(run.steps, res.observables["step"])
    assert run.observable_units["n_tumour"] == "cells"


def test_parameters_restored_equal(tiny_run):
    res, path, sc = tiny_run
    run = abm.load(path)
    assert run.params == sc.params
    assert run.resolved["regimen"] == sc.resolved()["regimen"]
    assert run.resolved["run"]["days"] == 1.5
    assert run.attrs["scenario_name"] == "high_dose_il2"
    assert str(run.attrs["seed"]) == "7"
    assert "720000" in run.scenario_toml
    assert run.shape_xyz == (40, 40, 1) and run.spacing_um == sc.params.lattice.spacing_um


def test_xarray_opens_fields_with_named_dimensions(tiny_run):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    _, path, sc = tiny_run
    with xr.open_dataset(path, group="fields/il2", engine="h5netcdf") as ds:
        v = ds["value"]
        assert v.dims == ("time", "y", "x")
        assert v.attrs["units"] == sc.params.species["il2"].units
        np.testing.assert_allclose(ds["x"].values, np.arange(40) * sc.params.lattice.spacing_um)
        assert ds["time"].attrs["units"] == "min"
    with xr.open_dataset(path, group="observables/n_tumour", engine="h5netcdf") as ds:
        assert ds["value"].dims == ("time",)
    full = abm.load(path).to_xarray()
    assert full["il2"].dims == ("snapshot_time", "y", "x")
    assert full["n_tumour"].dims == ("time",)


def test_plain_h5py_read(tiny_run):
    res, path, _ = tiny_run
    with h5py.File(path, "r") as f:
        assert f.attrs["format_name"] == "abm-trajectory"
        assert bool(f.attrs["complete"])
        n = f["observables/n_tumour/value"][:]
        t = f["observables/n_tumour/time"][:]
        frames = f["particles/lattice/cell_type/value"][:]
        codes = dict(f["lattice/cell_type_codes"].attrs)
        il2 = f["fields/il2/value"][-1]
        resolved = f["parameters/resolved_json"][()]
    np.testing.assert_array_equal(n, res.observables["n_tumour"])
    np.testing.assert_array_equal(t, res.observables["time_min"])
    # the tumour count in the first frame is the observable at step 0
    assert int((frames[0] == codes["tumour"]).sum()) == int(n[0])
    assert int((frames[-1] == codes["tumour"]).sum()) == int(n[-1])
    assert il2.dtype == np.float32 and il2.shape == (40, 40)
    assert b"kill_prob" in (resolved if isinstance(resolved, bytes) else resolved.encode())


# --------------------------------------------------------------------------------------------------- reproducible
def test_same_seed_same_observables_different_seed_differs():
    kw = dict(days=0.5, sets=TINY_SETS)
    a = abm.run("high_dose_il2", seed=123, **kw)
    b = abm.run("high_dose_il2", seed=123, **kw)
    c = abm.run("high_dose_il2", seed=124, **kw)
    assert_same_observables(a.observables, b.observables)
    assert a.events == b.events
    np.testing.assert_array_equal(a.model.cell_type_map(), b.model.cell_type_map())
    assert any(
        not np.array_equal(a.observables[k], c.observables[k], equal_nan=True)
        for k in ("n_tumour", "n_nk", "divisions_tumour", "il2_mean")
    )


# --------------------------------------------------------------------------------------------------- interruption
CHILD = """
    import signal, sys
    import abm
    from abm.simulation import RunInterrupted

    # a background job may inherit SIGINT ignored; Python then leaves it ignored: restore the default
    signal.signal(signal.SIGINT, signal.default_int_handler)

    class Tell:
        '''Prints READY once the trajectory has written a few snapshots (it reports after the file does).'''
        def __init__(self, after_step):
            self.after_step = after_step
            self.told = False
        def describe_next_report(self, last_step):
            return 1, frozenset()
        def begin(self, info):
            pass
        def report(self, frame):
            if not self.told and frame.step >= self.after_step:
                print("READY", frame.step, flush=True)
                self.told = True
        def close(self, end):
            pass

    out = sys.argv[1]
    try:
        abm.run("high_dose_il2", out=out, seed=3, days=60, snapshot_every_min=60,
                sets={sets!r}, reporters=[Tell(after_step=24)])
    except RunInterrupted as e:
        print("INTERRUPTED", e.signame, flush=True)
        sys.exit(3)
    print("FINISHED", flush=True)
"""


def test_sigint_and_sigterm_leave_a_readable_incomplete_file(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD).format(sets=TINY_SETS))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    sigs = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}
    procs = {}
    for name in sigs:  # both children start at once: they pay the import/JIT-cache load in parallel
        procs[name] = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / f"{name}.h5")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    try:
        for name, proc in procs.items():
            line = proc.stdout.readline()  # blocks until READY (or EOF if the child died)
            assert line.startswith("READY"), f"{name} child: {line!r} {proc.stderr.read()}"
            proc.send_signal(sigs[name])
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 3, f"{name}: rc {proc.returncode}\n{out}\n{err}"
            assert f"INTERRUPTED {name}" in out
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name in sigs:
        path = tmp_path / f"{name}.h5"
        partial = abm.io.partial_path(path)
        assert not path.exists() and partial.exists(), f"{name}: an interrupted run keeps its partial name"
        with pytest.warns(RuntimeWarning, match="unfinished"):
            run = abm.load(path)  # finds the interrupted run's partial file
        assert run.complete is False
        assert name in run.status, run.status
        assert run.n_snapshots >= 5  # step 0 and every hour to step 24 at least
        assert run.snapshot_steps[-1] >= 24
        assert len(run.time_min) >= 25
        assert run.time_min[-1] < 60 * 1440.0  # stopped long before the end
        run.cell_type(-1)  # the frames read
        run.field("il2", -1)
        with h5py.File(partial, "r") as f:  # and plain h5py agrees
            assert not bool(f.attrs["complete"])


def test_run_failure_closes_the_file_marked_failed(tmp_path, monkeypatch):
    from abm.model import Model

    real_step = Model._step_dynamics

    def step(self):
        if self.step_index == 5:
            raise FloatingPointError("boom at step 5")
        return real_step(self)

    monkeypatch.setattr(Model, "_step_dynamics", step)
    path = tmp_path / "fail.h5"
    with pytest.raises(FloatingPointError), pytest.warns(abm.io.IncompleteRunWarning):
        abm.run("untreated", out=path, days=1, sets=TINY_SETS, seed=1)
    assert not path.exists() and len(abm.io.find_partials(path)) == 1  # a failed run never takes the final name
    with pytest.warns(RuntimeWarning, match="unfinished"):
        run = abm.load(path)
    assert run.complete is False
    assert "failed" in run.status and "boom at step 5" in run.status


def test_existing_output_is_not_overwritten(tmp_path):
    path = tmp_path / "x.h5"
    path.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        abm.run("untreated", out=path, days=0.1, sets=TINY_SETS, seed=1)
    assert path.read_bytes() == b"keep me"
