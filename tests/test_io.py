"""Tests for the HDF5 trajectory format (abm.io): round trip, layout, xarray, crash safety, protection."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import abm.io
from abm.io import FORMAT_NAME, FORMAT_VERSION, ObservableSpec, SpeciesSpec, TrajectoryWriter, load, partial_path
from abm.io.locking import read_lock

CODES = {"empty": 0, "tumour": 1, "ctl": 2, "nk": 3, "lak": 4}
OBS = [
    ObservableSpec("n_tumour", "cells", "int64", "tumour cells on the lattice"),
    ObservableSpec("tumour_volume", "mm3", description="RECIST-like volume"),
    ObservableSpec("il2_mean", "pM"),
]
SPECIES = [SpeciesSpec("il2", "pM"), SpeciesSpec("ifna", "IU/mL")]
ATTRS = {"abm_version": "0.1.0", "git_hash": None, "seed": 12345, "scenario_name": "il2 high dose", "dirty": True}
PARAMS = json.dumps({"cells": {"tumour": {"division_h": 24.0}}, "note": "µm ✓"})
TOML = '[run]\nname = "il2 high dose"\nsteps = 100\n'

SHAPES = {"2d": (7, 5, 1), "3d": (6, 5, 4)}


def grid_shape(shape_xyz):
    nx, ny, nz = shape_xyz
    return (nz, ny, nx) if nz > 1 else (ny, nx)


def make_writer(path, shape_xyz=(7, 5, 1), **kw) -> TrajectoryWriter:
    args = dict(
        shape_xyz=shape_xyz,
        spacing_um=15.0,
        dt_min=0.5,
        observables=OBS,
        species=SPECIES,
        cell_type_codes=CODES,
        vessel_sites=np.array([0, 3, int(np.prod(shape_xyz)) - 1]),
        attrs=ATTRS,
        parameters_json=PARAMS,
        scenario_toml=TOML,
        creator="abm-test",
        creator_version="9.9",
    )
    args.update(kw)
    return TrajectoryWriter(path, **args)


def synthetic(shape_xyz, n_rows=40, n_snap=3, seed=0):
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape_xyz))
    rows = [
        (
            s,
            0.5 * s,
            {
                "n_tumour": int(rng.integers(0, 1000)),
                "tumour_volume": float(rng.random()),
                "il2_mean": float(rng.random() * 10),
            },
        )
        for s in range(n_rows)
    ]
    snaps = [
        (10 * k, 5.0 * k, rng.integers(0, 5, n).astype(np.uint8), {"il2": rng.random(n) * 100, "ifna": rng.random(n)})
        for k in range(n_snap)
    ]
    events = [
        (
            3,
            1.5,
            "dose_given",
            dict(drug="il2", route="iv", dose=600000.0, unit="IU/kg", amount=4.2e7, amount_unit="pmol"),
        ),
        (4, 2.0, "dose_held", dict(drug="il2", note="grade 3 toxicity")),
        (9, 4.5, "interrupted", {}),
    ]
    return rows, snaps, events


def write_run(path, shape_xyz, **kw):
    rows, snaps, events = synthetic(shape_xyz)
    w = make_writer(path, shape_xyz, observable_block=16, **kw)  # 40 rows: two full blocks + a flushed tail
    assert w.partial_path.exists() and not Path(path).exists()
    for k, snap in enumerate(snaps):
        for s, t, vals in rows[k * 13 : (k + 1) * 13]:
            w.append_observables(s, t, vals)
        w.append_snapshot(*snap)
        assert w.partial_path.exists()
    for s, t, vals in rows[39:]:
        w.append_observables(s, t, vals)
    for s, t, kind, fields in events:
        w.add_event(s, t, kind, **fields)
    w.write_summary({"outcome": "PR", "best_response": -0.42, "n_doses": 14, "cured": False, "ttp_days": None})
    assert w.n_snapshots == 3 and w.n_observable_rows == 40
    final = w.close()
    return final, rows, snaps, events


@pytest.fixture(params=sorted(SHAPES))
def shape_xyz(request):
    return SHAPES[request.param]


# --------------------------------------------------------------------------------------------------------------------
def test_public_api_exports():
    assert FORMAT_NAME == "abm-trajectory" and FORMAT_VERSION == "1.3"
    for name in ("TrajectoryWriter", "load", "Trajectory", "ObservableSpec", "SpeciesSpec"):
        assert hasattr(abm.io, name)


def test_round_trip(tmp_path, shape_xyz):
    path = tmp_path / "run.h5"
    final, rows, snaps, events = write_run(path, shape_xyz)
    assert final == path and path.exists() and not partial_path(path).exists()

    t = load(path)
    assert t.complete is True and t.status == "completed" and t.format_version == FORMAT_VERSION
    assert t.attrs["seed"] == 12345 and t.attrs["scenario_name"] == "il2 high dose"
    assert t.attrs["git_hash"] is None and t.attrs["dirty"] is True and t.attrs["format_name"] == FORMAT_NAME
    assert t.parameters_json == PARAMS and json.loads(t.parameters_json)["note"] == "µm ✓"
    assert t.scenario_toml == TOML
    assert t.shape_xyz == shape_xyz and t.spacing_um == 15.0 and t.dt_min == 0.5
    assert t.cell_type_codes == CODES
    np.testing.assert_array_equal(t.vessel_sites, [0, 3, int(np.prod(shape_xyz)) - 1])

    assert list(t.observables) == [o.name for o in OBS]
    assert t.observable_units == {"n_tumour": "cells", "tumour_volume": "mm3", "il2_mean": "pM"}
    np.testing.assert_array_equal(t.steps, [r[0] for r in rows])
    np.testing.assert_array_equal(t.time_min, [r[1] for r in rows])
    for o in OBS:
        np.testing.assert_array_equal(t.observables[o.name], [r[2][o.name] for r in rows])
    assert t.observables["n_tumour"].dtype == np.int64

    assert t.species == ["il2", "ifna"] and t.field_units == {"il2": "pM", "ifna": "IU/mL"}
    assert t.n_snapshots == 3
    np.testing.assert_array_equal(t.snapshot_steps, [0, 10, 20])
    np.testing.assert_array_equal(t.snapshot_time_min, [0.0, 5.0, 10.0])
    gs = grid_shape(shape_xyz)
    for i, (_, _, ct, fields) in enumerate(snaps):
        got = t.cell_type(i)
        assert got.shape == gs and got.dtype == np.uint8
        np.testing.assert_array_equal(got, ct.reshape(gs))
        for name, arr in fields.items():
            f = t.field(name, i)
            assert f.shape == gs and f.dtype == np.float32
            np.testing.assert_array_equal(f, arr.astype(np.float32).reshape(gs))
    np.testing.assert_array_equal(t.cell_type(-1), t.cell_types()[-1])
    with pytest.raises(IndexError):
        t.cell_type(3)

    assert len(t.events) == 3
    e0, e1, e2 = t.events
    assert e0 == {
        "step": 3,
        "time_min": 1.5,
        "kind": "dose_given",
        "drug": "il2",
        "route": "iv",
        "dose": 600000.0,
        "unit": "IU/kg",
        "amount": 4.2e7,
        "amount_unit": "pmol",
        "note": "",
    }
    assert e1["note"] == "grade 3 toxicity" and math.isnan(e1["dose"]) and e1["route"] == ""
    assert e2["kind"] == "interrupted" and math.isnan(e2["amount"])
    assert t.events_of("dose_held") == [e1]
    assert t.summary == {"outcome": "PR", "best_response": -0.42, "n_doses": 14, "cured": False, "ttp_days": None}


def test_flat_index_convention(tmp_path, shape_xyz):
    """Site i = x + nx*(y + ny*z) is stored at [z, y, x] (3D) or [y, x] (2D); shaped input is accepted as is."""
    nx, ny, nz = shape_xyz
    x, y, z = nx - 2, ny - 1, nz - 1
    flat = np.zeros(nx * ny * nz, np.uint8)
    flat[x + nx * (y + ny * z)] = 4
    with make_writer(tmp_path / "r.h5", shape_xyz, species=[]) as w:
        w.append_snapshot(0, 0.0, flat, {})
        w.append_snapshot(1, 0.5, flat.reshape(grid_shape(shape_xyz)), {})
    t = load(tmp_path / "r.h5")
    for i in range(2):
        frame = t.cell_type(i)
        idx = (z, y, x) if nz > 1 else (y, x)
        assert frame[idx] == 4 and frame.sum() == 4


def test_layout_with_plain_h5py(tmp_path, shape_xyz):
    path, *_ = write_run(tmp_path / "run.h5", shape_xyz)
    gs = grid_shape(shape_xyz)
    dims = ("z", "y", "x") if shape_xyz[2] > 1 else ("y", "x")
    with h5py.File(path, "r") as f:
        assert f.attrs["format_name"] == FORMAT_NAME and f.attrs["format_version"] == FORMAT_VERSION
        assert bool(f.attrs["complete"]) and f.attrs["status"] == "completed" and f.attrs["created"].endswith("Z")
        assert list(f["h5md"].attrs["version"]) == [1, 1]
        assert f["h5md/creator"].attrs["name"] == "abm-test" and f["h5md/creator"].attrs["version"] == "9.9"
        for name in ("parameters/resolved_json", "parameters/scenario_toml"):
            assert h5py.check_string_dtype(f[name].dtype).encoding == "utf-8"
        assert f["parameters/resolved_json"][()].decode() == PARAMS

        lat = f["lattice"]
        assert list(lat.attrs["shape_xyz"]) == list(shape_xyz) and lat.attrs["spacing_um"] == 15.0
        assert lat.attrs["dt_min"] == 0.5 and lat.attrs["dims"] == (3 if shape_xyz[2] > 1 else 2)
        assert lat["vessel_sites"].dtype == np.int64
        assert dict(lat["cell_type_codes"].attrs) == CODES

        for o in OBS:
            g = f["observables"][o.name]
            assert g["value"].attrs["units"] == o.units and g["value"].attrs["description"] == o.description
            assert g["time"].attrs["units"] == "min" and g["value"].maxshape == (None,)
            assert len(g["step"]) == len(g["time"]) == len(g["value"]) == 40
            assert g["value"].dims[0][0].name == g["time"].name

        groups = {"particles/lattice/cell_type": np.uint8, "fields/il2": np.float32, "fields/ifna": np.float32}
        for gname, dtype in groups.items():
            g = f[gname]
            v = g["value"]
            assert v.dtype == dtype and v.shape == (3, *gs) and v.maxshape == (None, *gs)
            assert v.chunks == (1, *gs) and v.compression == "gzip"
            assert "units" in v.attrs and g["time"].attrs["units"] == "min"
            assert h5py.h5ds.is_scale(g["time"].id)
            assert [v.dims[i][0].name.split("/")[-1] for i in range(v.ndim)] == ["time", *dims]
            for d in dims:
                assert g[d].attrs["units"] == "um" and h5py.h5ds.is_scale(g[d].id)
            np.testing.assert_array_equal(g["x"][:], np.arange(shape_xyz[0]) * 15.0)
        assert f["fields/il2/value"].attrs["units"] == "pM"
        assert list(f["particles/lattice/cell_type/value"].attrs["flag_values"]) == [0, 1, 2, 3, 4]
        assert f["particles/lattice/cell_type/value"].attrs["flag_meanings"] == "empty tumour ctl nk lak"

        ev = f["events"]
        assert list(ev) == ["step", "time", "kind", "drug", "route", "dose", "unit", "amount", "note", "amount_unit"]
        assert ev["amount"].attrs["units_column"] == "amount_unit" and ev["dose"].attrs["units_column"] == "unit"
        assert len(ev["kind"]) == 3 and h5py.check_string_dtype(ev["kind"].dtype).encoding == "utf-8"
        assert f["summary/outcome"][()].decode() == "PR" and f["summary/n_doses"][()] == 14


def test_xarray_opens_groups_with_named_dims(tmp_path, shape_xyz):
    xr = pytest.importorskip("xarray")
    path, _, snaps, _ = write_run(tmp_path / "run.h5", shape_xyz)
    gs = grid_shape(shape_xyz)
    dims = ("time", "z", "y", "x") if shape_xyz[2] > 1 else ("time", "y", "x")
    with xr.open_dataset(path, engine="h5netcdf", group="fields/il2") as ds:
        assert ds["value"].dims == dims and ds["value"].attrs["units"] == "pM"
        assert ds["step"].dims == ("time",)
        np.testing.assert_array_equal(ds["time"].values, [0.0, 5.0, 10.0])
        np.testing.assert_array_equal(ds["x"].values, np.arange(shape_xyz[0]) * 15.0)
        expected = snaps[1][3]["il2"].astype(np.float32).reshape(gs)
        np.testing.assert_array_equal(ds["value"].isel(time=1).values, expected)
    with xr.open_dataset(path, engine="h5netcdf", group="particles/lattice/cell_type") as ds:
        assert ds["value"].dims == dims and ds["value"].dtype == np.uint8
    with xr.open_dataset(path, engine="h5netcdf", group="observables/tumour_volume") as ds:
        assert ds["value"].dims == ("time",) and ds["value"].attrs["units"] == "mm3" and ds.sizes["time"] == 40
    with xr.open_dataset(path, engine="h5netcdf", group="events") as ds:
        assert ds["kind"].dims == ("time",) and list(ds["kind"].values) == ["dose_given", "dose_held", "interrupted"]

    ds = load(path).to_xarray()
    assert ds["il2"].dims == ("snapshot_time", *dims[1:]) and ds["il2"].attrs["units"] == "pM"
    assert ds["tumour_volume"].dims == ("time",) and ds["time"].attrs["units"] == "min"
    assert ds["x"].attrs["units"] == "um" and ds.sizes["snapshot_time"] == 3
    np.testing.assert_array_equal(ds["cell_type"].isel(snapshot_time=2).values, snaps[2][2].reshape(gs))


def test_partial_readable_while_writing_and_block_buffering(tmp_path):
    path = tmp_path / "run.h5"
    rows, snaps, _ = synthetic(SHAPES["2d"])
    w = make_writer(path, observable_block=16)
    for s, t, vals in rows[:20]:
        w.append_observables(s, t, vals)
    assert w.n_observable_rows == 20
    with h5py.File(w.partial_path, "r") as f:  # another reader sees the last flush: the header only
        assert len(f["observables/il2_mean/value"]) == 0 and not f.attrs["complete"]
        assert f.attrs["status"] == "running"
    w.flush()
    with h5py.File(w.partial_path, "r") as f:  # the full block and the 4 buffered rows
        assert len(f["observables/il2_mean/value"]) == 20
    w.append_snapshot(*snaps[0])  # flushes buffered rows too
    t = load(w.partial_path)
    assert t.n_snapshots == 1 and len(t.steps) == 20 and t.complete is False
    w.close()
    assert not w.partial_path.exists() and load(path).complete


def test_close_incomplete(tmp_path):
    """An incomplete run stays in its private partial file: NAME, when it exists, is always a complete run."""
    path = tmp_path / "run.h5"
    w = make_writer(path)
    rows, snaps, _ = synthetic(SHAPES["2d"])
    w.append_snapshot(*snaps[0])
    for s, t, vals in rows[:5]:
        w.append_observables(s, t, vals)
    with pytest.warns(abm.io.IncompleteRunWarning, match="did not complete.*partial"):
        kept = w.close(complete=False, status="interrupted: SIGTERM")
    assert kept == w.partial_path and kept.name.startswith("run.h5.") and kept.name.endswith(".partial")
    assert w.close() == kept  # idempotent, does not flip `complete`
    assert not path.exists() and kept.exists() and not w.lock_path.exists()
    assert partial_path(path) == kept
    with pytest.warns(RuntimeWarning, match="unfinished"):
        t = load(path)  # finds the partial file
    assert t.path == kept and t.complete is False and t.status == "interrupted: SIGTERM"
    assert t.n_snapshots == 1 and len(t.steps) == 5 and t.integrity == "manifest"
    with pytest.raises(RuntimeError, match="closed"):
        w.append_observables(99, 1.0, rows[0][2])


def test_context_manager(tmp_path):
    rows, snaps, _ = synthetic(SHAPES["2d"])
    with make_writer(tmp_path / "ok.h5") as w:
        w.append_snapshot(*snaps[0])
    assert load(tmp_path / "ok.h5").complete is True

    with pytest.raises(KeyboardInterrupt), pytest.warns(abm.io.IncompleteRunWarning):
        with make_writer(tmp_path / "bad.h5") as w:
            w.append_snapshot(*snaps[0])
            w.append_observables(*rows[0])
            raise KeyboardInterrupt()
    assert not (tmp_path / "bad.h5").exists()
    t = load(w.partial_path)
    assert t.complete is False and "KeyboardInterrupt" in t.status
    assert t.n_snapshots == 1 and len(t.steps) == 1

    with pytest.raises(ValueError, match="boom"), pytest.warns(abm.io.IncompleteRunWarning):
        with make_writer(tmp_path / "err.h5") as w:
            raise ValueError("boom")
    assert load(w.partial_path).status == "ValueError('boom')"


def test_overwrite_protection(tmp_path):
    path = tmp_path / "run.h5"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_writer(path)
    assert path.read_bytes() == b"precious" and not partial_path(path).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]  # no lock, no reserve left behind

    w = make_writer(path, overwrite=True)
    assert path.read_bytes() == b"precious"  # replaced only when the new run completes
    w.close()
    assert load(path).complete

    # an interrupted run's partial file blocks a new writer without overwrite, and survives its refusal
    leftover = path.with_name("run.h5.123-0123abcd.partial")
    leftover.write_bytes(b"leftover")
    path.unlink()
    with pytest.raises(FileExistsError, match="unfinished run left run.h5.123-0123abcd.partial"):
        make_writer(path)
    assert leftover.read_bytes() == b"leftover"
    make_writer(path, overwrite=True).close()  # a completed overwrite supersedes it
    assert load(path).complete and not leftover.exists() and not partial_path(path).exists()


def test_validation(tmp_path):
    n = int(np.prod(SHAPES["2d"]))
    ok_fields = {"il2": np.zeros(n), "ifna": np.zeros(n)}
    ct = np.zeros(n, np.uint8)
    with pytest.raises(ValueError, match="reserved"):
        make_writer(tmp_path / "a.h5", attrs={"complete": True})
    with pytest.raises(ValueError, match="observable"):
        make_writer(tmp_path / "a.h5", observables=[ObservableSpec("a/b", "1")])
    with pytest.raises(ValueError, match="vessel_sites"):
        make_writer(tmp_path / "a.h5", vessel_sites=np.array([n]))
    with pytest.raises(TypeError, match="attrs"):
        make_writer(tmp_path / "a.h5", attrs={"obj": object()})
    assert not list(tmp_path.iterdir())  # validation happens before anything is written

    w = make_writer(tmp_path / "a.h5")
    with pytest.raises(KeyError, match="missing"):
        w.append_snapshot(0, 0.0, ct, {"il2": np.zeros(n)})
    with pytest.raises(ValueError, match="sites"):
        w.append_snapshot(0, 0.0, ct[:-1], ok_fields)
    with pytest.raises(ValueError, match="0..255"):
        w.append_snapshot(0, 0.0, np.full(n, 300), ok_fields)
    with pytest.raises(KeyError, match="undeclared"):
        w.append_observables(0, 0.0, {"n_tumour": 1, "tumour_volume": 1.0, "il2_mean": 0.0, "extra": 1.0})
    with pytest.raises(TypeError, match="unknown event fields"):
        w.add_event(0, 0.0, "dose_given", drug="il2", dosage=3)
    w.append_snapshot(5, 2.5, ct, ok_fields)
    with pytest.raises(ValueError, match="increase"):
        w.append_snapshot(5, 2.5, ct, ok_fields)
    w.close()
    assert load(tmp_path / "a.h5").n_snapshots == 1


def test_load_rejects_other_formats(tmp_path):
    path = tmp_path / "run.h5"
    make_writer(path).close()
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = "2.0"
    with pytest.raises(ValueError, match="format_version"):
        load(path)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["format_name"] = "mdtraj"
    with pytest.raises(ValueError, match="not an abm-trajectory"):
        load(tmp_path / "other.h5")
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.h5")


CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from abm.io import ObservableSpec, SpeciesSpec, TrajectoryWriter
    path = sys.argv[1]
    w = TrajectoryWriter(path, shape_xyz=(16, 12, 3), spacing_um=10.0, dt_min=1.0,
                         observables=[ObservableSpec("n", "cells", "int64")], species=[SpeciesSpec("il2", "pM")],
                         cell_type_codes={"empty": 0, "tumour": 1}, vessel_sites=np.array([1, 2]),
                         attrs={"seed": 7}, parameters_json="{}", scenario_toml="")
    n = 16 * 12 * 3
    for k in range(3):
        for s in range(10 * k, 10 * k + 10):
            w.append_observables(s, float(s), {"n": s})
        w.append_snapshot(10 * k + 9, 10.0 * k + 9, np.full(n, k % 2, np.uint8), {"il2": np.full(n, float(k))})
        print("flushed", k + 1, flush=True)
    w.add_event(29, 29.0, "dose_given", drug="il2", dose=1.0)
    for s in range(30, 40):  # buffered only: lost on SIGKILL
        w.append_observables(s, float(s), {"n": s})
    print("ready", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_leaves_readable_partial(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    path = tmp_path / "killed.h5"
    repo_root = str(Path(abm.io.__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo_root, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line.strip())
            if line.strip() == "ready":
                break
        assert lines[-1] == "ready", f"child failed: {lines} {proc.stderr.read() if proc.poll() is not None else ''}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not path.exists() and partial_path(path).exists()
    assert partial_path(path).name.startswith(f"killed.h5.{proc.pid}-")
    assert abm.io.lock_path(path).exists()  # a stale lock: its holder is dead

    with h5py.File(partial_path(path), "r") as f:
        assert f["fields/il2/value"].shape == (3, 3, 12, 16)
        assert f["particles/lattice/cell_type/value"][2].max() == 0 and f["fields/il2/value"][2].max() == 2.0
        assert not f.attrs["complete"] and f.attrs["status"] == "running"

    with pytest.warns(RuntimeWarning, match="partial"):
        t = load(path)  # falls back to NAME.partial
    assert t.complete is False and t.n_snapshots == 3 and t.attrs["seed"] == 7
    np.testing.assert_array_equal(t.steps, np.arange(30))  # rows up to the last flush survive
    assert [e["kind"] for e in t.events] == ["dose_given"]
    assert t.integrity == "chunks only"  # never closed: no manifest, Fletcher-32 still checked

    # the stale lock does not block the next writer, which takes it over
    w = make_writer(path, overwrite=True)
    assert read_lock(abm.io.lock_path(path))["pid"] == os.getpid()
    w.close()
    assert load(path).complete and not abm.io.lock_path(path).exists()
    assert not partial_path(path).exists()  # the completed overwrite superseded the killed run's partial file


FRAMES_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from abm.io import ObservableSpec, SpeciesSpec, TrajectoryWriter
    from abm.io.schema import CELL_COLUMNS

    def frame(k):  # a snapshot and a per-cell frame of 300-3000 rows: a compressed tail chunk that grows
        r = np.random.default_rng(k)
        n = int(r.integers(300, 3000))
        cols = {c.name: (r.random(n) * 1000).astype(c.dtype) for c in CELL_COLUMNS}
        return r.integers(0, 2, 40 * 40).astype(np.uint8), {"il2": r.random(40 * 40).astype(np.float32)}, cols

    if __name__ == "__main__":
        w = TrajectoryWriter(sys.argv[1], shape_xyz=(40, 40, 1), spacing_um=10.0, dt_min=1.0,
                             observables=[ObservableSpec(f"o{i}", "1") for i in range(8)],
                             species=[SpeciesSpec("il2", "pM")], cell_type_codes={"empty": 0, "tumour": 1},
                             cell_columns=CELL_COLUMNS, vessel_sites=np.array([1]), attrs={},
                             parameters_json="{}", scenario_toml="")
        for k in range(100000):
            for s in range(4):
                w.append_observables(4 * k + s, 0.0, {f"o{i}": float(s) for i in range(8)})
            ct, fields, cols = frame(k)
            w.append_snapshot(4 * k, float(k), ct, fields)
            w.append_cells(4 * k, float(k), cols)
            print("flushed", k, flush=True)
    """
)


def _kill_writer_at_random_instants(tmp_path: Path, n: int, seed: int) -> list[str]:
    """SIGKILL a writer ``n`` times at random instants; every frame flushed before the kill must read back equal."""
    import random  # noqa: PLC0415
    import time  # noqa: PLC0415

    from abm.io.integrity import frame_crc32  # noqa: PLC0415

    script = tmp_path / "frames_child.py"
    script.write_text(FRAMES_CHILD)
    sys.path.insert(0, str(tmp_path))
    try:
        import frames_child  # noqa: PLC0415
    finally:
        sys.path.remove(str(tmp_path))
    repo_root = str(Path(abm.io.__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo_root, os.environ.get("PYTHONPATH", "")]))
    rng = random.Random(seed)
    failures, past_end = [], []
    for i in range(n):
        path = tmp_path / f"k{i}.h5"
        proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout.readline().startswith("flushed 0"), "the writer did not start"
        time.sleep(rng.uniform(0.05, 1.5))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        last = int(out.strip().splitlines()[-1].split()[1]) if out.strip() else 0
        try:
            with h5py.File(partial_path(path), "r") as f:
                g = f["particles/cells"]
                start, count = g["start"][: last + 1], g["count"][: last + 1]
                for k in range(last + 1):
                    ct, fields, cols = frames_child.frame(k)
                    assert frame_crc32(f["particles/lattice/cell_type/value"][k]) == frame_crc32(ct.reshape(40, 40))
                    assert frame_crc32(f["fields/il2/value"][k]) == frame_crc32(fields["il2"].reshape(40, 40))
                    for name, v in cols.items():
                        assert frame_crc32(g[name][start[k] : start[k] + count[k]]) == frame_crc32(v), (name, k)
        except (OSError, AssertionError) as e:
            what = f"kill {i} after frame {last}: {type(e).__name__}: {e}"
            # a kill during a flush can leave a flushed frame's relocated chunk indexed past the end of the file's
            # recorded allocation: unreadable, never wrong (docs/output-format.md); counted apart, bounded below
            (past_end if "addr overflow" in str(e) else failures).append(what)
    return failures, past_end


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_writer_killed_at_random_instants_keeps_every_flushed_frame(tmp_path):
    # with HDF5's default file-space strategy, 12 of 40 such kills left a flushed per-cell frame unreadable
    # (FS_STRATEGY in abm.io.schema); 8 kills catch that with probability 0.94
    failures, past_end = _kill_writer_at_random_instants(tmp_path, 8, seed=5)
    assert failures == [] and len(past_end) <= 2, (failures, past_end)


@pytest.mark.slow  # 60 kills (about 2 minutes)
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_writer_killed_sixty_times_keeps_every_flushed_frame(tmp_path):
    failures, past_end = _kill_writer_at_random_instants(tmp_path, 60, seed=55)
    # no flushed frame reads back wrong; one indexed past the end: 1 of 60 kills in each of two runs (2026-12-03)
    assert failures == [] and len(past_end) <= 6, (failures, past_end)


@settings(max_examples=15, deadline=None)
@given(nx=st.integers(1, 6), ny=st.integers(1, 6), nz=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_any_shape_round_trips(tmp_path_factory, nx, ny, nz, seed):
    rng = np.random.default_rng(seed)
    n = nx * ny * nz
    ct = rng.integers(0, 5, n).astype(np.uint8)
    il2 = rng.standard_normal(n)
    path = tmp_path_factory.mktemp("h") / "r.h5"
    with make_writer(path, (nx, ny, nz), species=[SpeciesSpec("il2", "pM")], vessel_sites=np.array([], np.int64)) as w:
        w.append_snapshot(0, 0.0, ct, {"il2": il2})
    t = load(path)
    np.testing.assert_array_equal(t.cell_type(0).reshape(-1), ct)
    np.testing.assert_array_equal(t.field("il2", 0).reshape(-1), il2.astype(np.float32))
    assert t.cell_type(0).shape == ((nz, ny, nx) if nz > 1 else (ny, nx))
