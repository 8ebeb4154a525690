"""Bounds checked before any work (issue 16, item 4): abm/limits.py and the seed range end to end."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import abm
from abm import limits
from abm.errors import ParameterError
from abm.kernels import cells as K
from abm.state import initial_state

SMALL = ["lattice.nx=40", "lattice.ny=40", "init.tumour_radius_um=100"]


@pytest.mark.parametrize(
    "sets",
    [
        [],
        ["init.immune_within_um=60"],
        ["init.immune_within_um=60", "vessels.tumour_margin_um=20", "patient.vessel_fraction=0.5"],
        ["init.tumour_cells=333", "init.immune_within_um=100"],
        ["lattice.nz=12", "lattice.nx=12", "lattice.ny=12", "init.tumour_radius_um=50", "init.immune_within_um=40"],
    ],
)
def test_free_site_count_is_what_initial_state_leaves(sets):
    """The guaranteed count never exceeds what a seed leaves, and equals it when no vessel can fall in the zone."""
    sc = abm.Scenario.load("untreated", sets=SMALL + sets)
    n_t, guaranteed = limits.free_sites(sc.params)
    for seed in range(5):
        st = initial_state(sc.params, seed)
        assert st.n_cells == n_t
        free = np.flatnonzero(st.occupancy == K.FREE)
        if sc.params.init.immune_within_um > 0:
            lat = st.lattice
            x, y, z = lat.coords(free)
            c = (np.array(lat.shape_xyz) - 1) / 2.0
            if lat.ndim == 2:
                c[2] = 0
            d = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) * lat.spacing_um
            radius = sc.params.init.tumour_radius_um
            if sc.params.init.tumour_cells:
                radius = limits_radius(sc)
            free = free[d <= radius + sc.params.init.immune_within_um]
        assert guaranteed <= free.size


def limits_radius(sc) -> float:
    lat = abm.lattice.Lattice.from_params(sc.params.lattice)
    x, y, z = lat.coords(np.arange(lat.n_sites))
    c = (np.array(lat.shape_xyz) - 1) / 2.0
    c[2] = 0
    d = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) * lat.spacing_um
    return float(np.sort(d)[sc.params.init.tumour_cells - 1])


def test_placement_accepts_exactly_the_guaranteed_count():
    sc = abm.Scenario.load("untreated", sets=SMALL + ["init.immune_within_um=60"])
    _, free = limits.free_sites(sc.params)
    ok = sc.with_overrides([f"init.ctl_cells={free}"])
    limits.check_placement(ok)
    abm.Model(ok, seed=3)  # places them
    with pytest.raises(ParameterError, match=r"--set init.ctl_cells=\d+: key 'init.ctl_cells'"):
        limits.check_placement(sc.with_overrides([f"init.ctl_cells={free + 1}"]))


def test_a_tumour_disc_and_immune_cells_beyond_the_cell_capacity_are_refused():
    """A fuzzer find: a disc tumour (init.tumour_radius_um) larger than init.cell_capacity failed only at
    initialisation, and immune cells beyond it were dropped silently."""
    sc = abm.Scenario.load("untreated", sets=SMALL)
    n_t, _ = limits.free_sites(sc.params)
    with pytest.raises(ParameterError, match=rf"--set init.cell_capacity=1: key 'init.cell_capacity'.* {n_t} tumour"):
        limits.check_placement(sc.with_overrides(["init.cell_capacity=1"]))
    exact = sc.with_overrides([f"init.cell_capacity={n_t + 5}", "init.ctl_cells=5"])
    limits.check_placement(exact)
    assert abm.Model(exact, seed=3).state.n_cells == n_t + 5  # every cell placed
    need = rf"--set init.cell_capacity={n_t + 5}: key 'init.cell_capacity'.* 6 immune cells"
    with pytest.raises(ParameterError, match=need):
        limits.check_placement(exact.with_overrides(["init.ctl_cells=6"]))


def test_memory_estimate_covers_the_state_and_refuses_above_the_machine():
    sc = abm.Scenario.load("untreated", sets=["lattice.nx=300", "lattice.ny=300"])
    est = limits.estimate_memory(sc)
    m = abm.Model(sc, seed=1)
    state_bytes = sum(a.nbytes for a in m.state.cells) + m.state.occupancy.nbytes
    state_bytes += m.state.conc.nbytes + m.state.uptake.nbytes + m.state.source.nbytes
    assert est.total > state_bytes
    with pytest.raises(ParameterError) as e:
        limits.check_memory(sc, available=est.total - 1)
    msg = str(e.value)
    assert "key 'lattice." in msg and "needs about" in msg and "available" in msg
    assert limits.check_memory(sc, available=est.total + 1).total == est.total


def test_steps_and_schedules_are_bounded_before_expansion():
    with pytest.raises(ParameterError, match="at most 10,000,000 steps"):
        abm.Scenario.load("untreated", sets=["time.dt_min=0.0001"])
    with pytest.raises(ParameterError, match=r"key 'regimen.doses.0': the block enumerates 100,000,000 doses"):
        abm.Scenario.load("untreated", sets=["regimen.doses=[{every_h=1e-9,count=100000,cycles=1000}]"])
    # the lesion's share of an infusion: dose x homing fraction (0.01) x lesion cells / body burden (1e10); the
    # lesion holds at most the capacity, so a dose above 1e12 cells could overfill it
    with pytest.raises(ParameterError, match=r"key 'regimen.transfers.0.cells_per_infusion'"):
        abm.Scenario.load("lak_il2", sets=SMALL + ["regimen.transfers.0.cells_per_infusion=1.01e12"])
    abm.Scenario.load("lak_il2", sets=SMALL + ["regimen.transfers.0.cells_per_infusion=1e12"])
    with pytest.raises(ParameterError, match=r"key 'regimen.transfers.0.cells_per_infusion'"):
        abm.Scenario.load("lak_il2", sets=SMALL + ["patient.tumour_burden_cells=1e6"])


def test_the_largest_seed_runs_and_reads_back(tmp_path):
    seed = 2**64 - 1
    res = abm.run("untreated", sets=SMALL, days=0.05, seed=seed, out=tmp_path / "s.h5")
    assert res.summary["seed"] == seed
    r = abm.load(tmp_path / "s.h5")
    assert r.summary["seed"] == seed and int(r.attrs["seed"]) == seed
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f["summary/seed"].dtype == np.uint64
    with pytest.raises(ParameterError, match="run.seed"):
        abm.Scenario.load("untreated", sets=[f"run.seed={2**64}"])
