"""Per-cell tables (format 1.2): one row per live cell per snapshot under /particles/cells, read back as numpy arrays
(``Trajectory.cell_arrays``) or pandas DataFrames (``cells``, ``cells_at``, ``all_cells``); files of format 1.0 and
1.1 still read."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import abm
from abm.io import IncompleteRunWarning, TrajectoryWriter, load, verify
from abm.io.schema import CELL_COLUMNS, CELL_TABLE, FORMAT_VERSION
from abm.kernels import cells as K
from abm.simulation import NEEDS, make_frame
from tests.conftest import TINY_SETS

DATA = Path(__file__).resolve().parent / "data"
SETS = [*TINY_SETS, "init.ctl_cells=20", "init.nk_cells=10", "init.immune_within_um=60"]


@pytest.fixture(scope="module")
def cell_run(tmp_path_factory):
    """High-dose IL-2 for one day, a snapshot every 6 h (5 snapshots, the last at the final step)."""
    path = tmp_path_factory.mktemp("cells") / "run.h5"
    res = abm.run("high_dose_il2", out=path, seed=3, days=1.0, snapshot_every_min=360.0, sets=SETS)
    return res, abm.load(path)


def test_format_version_is_1_2():
    assert FORMAT_VERSION == "1.3"


def test_frame_need_cells_copies_the_live_cells():
    assert "cells" in NEEDS
    m = abm.Model("untreated", sets=SETS, seed=1)
    fr = make_frame(m, {"cells"})
    c = m.state.cells
    n = int(c.n[0])
    assert set(fr.cells) == set(c._fields) - {"n", "next_id"}
    for name, arr in fr.cells.items():
        assert len(arr) == n and np.array_equal(arr, getattr(c, name)[:n]), name
    before = fr.cells["id"].copy()
    c.id[:n] += 1000  # a copy, not a view: the model moving on does not change a frame
    assert np.array_equal(fr.cells["id"], before)
    c.id[:n] -= 1000
    assert make_frame(m, {"observables"}).cells is None


def test_a_table_at_every_snapshot_agrees_with_the_cell_type_map(cell_run):
    res, r = cell_run
    assert r.format_version == "1.3" and r.integrity == "manifest" and r.has_cells
    assert r.n_cell_frames == r.n_snapshots == 5
    np.testing.assert_array_equal(r.cell_steps, r.snapshot_steps)
    np.testing.assert_array_equal(r.cell_time_min, r.snapshot_time_min)
    nx, ny, _ = r.shape_xyz
    h = r.spacing_um
    for i in range(r.n_snapshots):
        t = r.cell_arrays(i)
        assert list(t) == [c.name for c in CELL_COLUMNS]
        assert len(np.unique(t["id"])) == len(t["id"])
        grid = np.zeros(nx * ny, dtype=np.uint8)
        grid[t["site"]] = t["type"]
        np.testing.assert_array_equal(grid, r.cell_type(i).reshape(-1))  # every cell, on its site, with its type
        np.testing.assert_array_equal(t["x"], (t["site"] % nx) * h)
        np.testing.assert_array_equal(t["y"], (t["site"] // nx) * h)
        assert np.all(t["z"] == 0.0)
        assert int(r.cell_count[i]) == len(t["id"]) == int(np.count_nonzero(grid))


def test_the_last_table_is_the_final_state(cell_run):
    res, r = cell_run
    c = res.model.state.cells
    n = int(c.n[0])
    t = r.cell_arrays(-1)
    assert r.cell_steps[-1] == res.model.step_index
    for col, field in (("id", "id"), ("type", "ctype"), ("site", "site"), ("mhc", "mhc"), ("age_min", "age_min")):
        np.testing.assert_array_equal(t[col], getattr(c, field)[:n].astype(t[col].dtype), err_msg=col)
    for col in ("kills", "timer_min", "exposure_min"):
        np.testing.assert_array_equal(t[col], getattr(c, col)[:n], err_msg=col)


def test_every_column_has_units_and_a_description(cell_run):
    _, r = cell_run
    with h5py.File(r.path, "r") as f:
        g = f[CELL_TABLE]
        for c in CELL_COLUMNS:
            assert g[c.name].attrs["units"] == c.units and g[c.name].attrs["description"], c.name
            assert g[c.name].fletcher32 and g[c.name].chunks is not None
        assert g["x"].attrs["units"] == "um" and g["age_min"].attrs["units"] == "min"
        assert g["time"].attrs["units"] == "min"
        assert list(g["type"].attrs["flag_values"]) == [0, 1, 2, 3, 4]
    assert r.cell_units["x"] == "um" and r.cell_units["timer_min"] == "min"


def test_dataframes(cell_run):
    pd = pytest.importorskip("pandas")
    res, r = cell_run
    df = r.cells(-1)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == [c.name for c in CELL_COLUMNS] + ["type_name"]
    assert df.attrs["step"] == res.model.step_index and df.attrs["units"]["x"] == "um"
    counts = df["type_name"].value_counts()
    assert counts["tumour"] == res.model.counts()["tumour"] and counts["ctl"] == res.model.counts()["ctl"]
    assert r.cells_at(0.5).attrs["time_min"] == 720.0
    assert r.cells_at(0.52).attrs["time_min"] == 720.0  # the nearest snapshot
    everything = r.all_cells()
    assert list(everything.columns[:2]) == ["step", "time_min"]
    assert len(everything) == int(r.cell_count.sum())
    assert everything.groupby("step").size().tolist() == r.cell_count.tolist()


def test_following_one_ctl(cell_run):
    """A cell keeps its id from snapshot to snapshot: its kills never drop, its age grows by the time between."""
    pytest.importorskip("pandas")
    _, r = cell_run
    df = r.all_cells()
    ctl = df[df.type == K.CTL]
    seen = ctl.groupby("id").size()
    tracked = seen[seen == r.n_cell_frames].index
    assert len(tracked) > 0
    for cid in tracked[:5]:
        track = ctl[ctl.id == cid].sort_values("time_min")
        assert track["kills"].is_monotonic_increasing
        np.testing.assert_allclose(np.diff(track["age_min"]), np.diff(track["time_min"]))
    assert ctl.groupby("id")["kills"].max().sum() > 0  # some CTL killed


def test_verify_reads_every_cell_column(cell_run):
    _, r = cell_run
    assert verify(r.path).has_cells


def _writer(path, **kw):
    return TrajectoryWriter(
        path,
        shape_xyz=(4, 3, 1),
        spacing_um=10.0,
        dt_min=1.0,
        observables=[],
        species=[],
        cell_type_codes={"empty": 0, "tumour": 1},
        vessel_sites=np.zeros(0, dtype=np.int64),
        attrs={},
        parameters_json="{}",
        scenario_toml="",
        **kw,
    )


def _table(n, first_id=0):
    site = np.arange(n, dtype=np.int64)
    return {
        "id": np.arange(first_id, first_id + n),
        "type": np.ones(n, dtype=np.uint8),
        "site": site,
        "x": (site % 4) * 10.0,
        "y": (site // 4) * 10.0,
        "z": np.zeros(n),
        "mhc": np.full(n, 0.3),
        "age_min": np.arange(n, dtype=np.float32),
        "kills": np.zeros(n, dtype=np.int16),
        "timer_min": np.zeros(n, dtype=np.float32),
        "exposure_min": np.zeros(n, dtype=np.float32),
        "sensitisation": np.zeros(n, dtype=np.float32),
    }


def test_ragged_frames_round_trip_including_an_empty_one(tmp_path):
    w = _writer(tmp_path / "r.h5", cell_columns=CELL_COLUMNS)
    sizes = [5, 0, 12, 1]
    for k, n in enumerate(sizes):
        w.append_cells(10 * k, 10.0 * k, _table(n, first_id=100 * k))
    with pytest.raises(ValueError, match="must increase"):
        w.append_cells(30, 30.0, _table(1))
    with pytest.raises(KeyError, match="missing columns"):
        w.append_cells(40, 40.0, {"id": np.arange(2)})
    w.close()
    r = load(tmp_path / "r.h5")
    assert r.cell_count.tolist() == sizes and r.cell_start.tolist() == [0, 5, 5, 17]
    for k, n in enumerate(sizes):
        t = r.cell_arrays(k)
        np.testing.assert_array_equal(t["id"], np.arange(100 * k, 100 * k + n))
        assert t["mhc"].dtype == np.float32 and t["kills"].dtype == np.int16
    with pytest.raises(IndexError):
        r.cell_arrays(4)


def test_a_writer_without_cell_columns_writes_no_table(tmp_path):
    w = _writer(tmp_path / "n.h5")
    with pytest.raises(ValueError, match="no per-cell table"):
        w.append_cells(0, 0.0, _table(1))
    w.close()
    r = load(tmp_path / "n.h5")
    assert not r.has_cells and r.n_cell_frames == 0
    with pytest.raises(LookupError, match="no per-cell tables"):
        r.cell_arrays(0)


def test_a_frame_whose_rows_are_not_all_written_is_dropped(tmp_path):
    """After a crash between the rows and the frame index, a reader keeps the frames every column holds."""
    path = tmp_path / "c.h5"
    w = _writer(path, cell_columns=CELL_COLUMNS)
    w.append_cells(0, 0.0, _table(3))
    w.append_cells(1, 1.0, _table(4))
    with pytest.warns(IncompleteRunWarning):
        w.close(complete=False)
    (partial,) = abm.io.find_partials(path)
    with h5py.File(partial, "r+") as f:
        f[f"{CELL_TABLE}/kills"].resize((5,))  # the second frame's rows only partly there
        del f["integrity"]  # as if killed before closing
        f.attrs["status"] = "running"
    with pytest.warns(RuntimeWarning):
        r = load(path)
    assert r.n_cell_frames == 1 and len(r.cell_arrays(0)["id"]) == 3


def _old(tmp_path) -> Path:
    out = tmp_path / "old.h5"
    with gzip.open(DATA / "run_format_1_1.h5.gz") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


def test_a_format_1_1_file_still_reads(tmp_path):
    """A run written by abm's format-1.1 writer (tests/data, 16 x 16 high-dose IL-2, half a day, seed 5)."""
    r = abm.load(_old(tmp_path))
    assert r.format_version == "1.1" and r.integrity == "manifest" and r.complete
    assert r.seed == 5 and r.attrs["seed"] == "5"  # stored as text by 1.1
    assert r.summary["response"] == "SD" and isinstance(r.summary["response"], str)
    assert r.summary_units == {} and not r.has_cells
    assert r.events[0]["kind"] == "dose_given" and r.events[0]["amount_unit"] == ""
    assert r.n_snapshots == 4 and r.cell_type(-1).shape == (16, 16)
    with pytest.raises(LookupError, match=r"format 1\.1"):
        r.cells(0)
    assert verify(r.path).format_version == "1.1"
