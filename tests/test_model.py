"""The Model as a whole: reproducibility, 2D and 3D, growth and immune control, and the Mesa face."""

from __future__ import annotations

import os
import subprocess
import sys

import mesa
import numpy as np
import pytest

import abm
from abm import Model
from abm.kernels import cells as K

TINY = ["lattice.nx=40", "lattice.ny=40", "init.tumour_radius_um=100"]


def _final_state(m: Model) -> dict[str, np.ndarray]:
    s = m.state
    n = s.n_cells
    out = {name: np.asarray(getattr(s.cells, name)[:n]) for name in s.cells._fields if name != "n"}
    out["occupancy"] = s.occupancy
    out["conc"] = s.conc
    return out


def _run_tiny(seed: int, sets: list[str] | None = None, days: float = 1.0):
    """A short run with some immune activity (initial CTL/NK, IL-2 in plasma), so every rule draws."""
    extra = ["init.ctl_cells=40", "init.nk_cells=20", "init.immune_within_um=60"] + (sets or [])
    r = abm.run("untreated", days=days, sets=TINY + extra, seed=seed)
    return r


def test_same_seed_same_trajectory_different_seed_differs():
    a, b, c = _run_tiny(7), _run_tiny(7), _run_tiny(8)
    assert a.observables.keys() == b.observables.keys()
    for k in a.observables:
        assert np.array_equal(a.observables[k], b.observables[k]), k
    sa, sb, sc = _final_state(a.model), _final_state(b.model), _final_state(c.model)
    for k in sa:
        assert np.array_equal(sa[k], sb[k]), k
    assert a.summary == b.summary
    assert not all(np.array_equal(a.observables[k], c.observables[k]) for k in ("n_tumour", "n_ctl", "n_nk"))
    assert not np.array_equal(sa["occupancy"], sc["occupancy"])


_HASH_SCRIPT = """
import hashlib, numba, numpy as np, abm
assert numba.config.NUMBA_NUM_THREADS == {threads}, numba.config.NUMBA_NUM_THREADS
m = abm.Model(sets={sets!r}, seed=11)
m.plasma[:3] = [300.0, 20.0, 0.0]
for _ in range(60):
    m.step()
s = m.state
n = s.n_cells
h = hashlib.sha256()
for name in s.cells._fields:
    h.update(np.ascontiguousarray(getattr(s.cells, name)[:n] if name != "n" else s.cells.n).tobytes())
h.update(s.occupancy.tobytes())
h.update(s.conc.tobytes())
print(h.hexdigest())
"""


def test_thread_count_does_not_change_results():
    """NUMBA_NUM_THREADS=1 and 2 give bit-identical final states (two fresh processes, hashes compared)."""
    sets = TINY + ["init.ctl_cells=40", "init.nk_cells=20", "init.immune_within_um=60"]
    hashes = []
    for threads in (1, 2):
        env = {**os.environ, "NUMBA_NUM_THREADS": str(threads)}
        out = subprocess.run(
            [sys.executable, "-c", _HASH_SCRIPT.format(threads=threads, sets=sets)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        hashes.append(out.stdout.strip().splitlines()[-1])
    assert len(hashes[0]) == 64
    assert hashes[0] == hashes[1]


@pytest.mark.parametrize("shape", [(30, 30, 1), (16, 16, 16)], ids=["2d", "3d"])
def test_2d_and_3d_step(shape):
    nx, ny, nz = shape
    m = Model(
        sets=[
            f"lattice.nx={nx}",
            f"lattice.ny={ny}",
            f"lattice.nz={nz}",
            "init.tumour_radius_um=80",
            "init.ctl_cells=10",
            "init.nk_cells=5",
        ],
        seed=3,
    )
    assert m.state.lattice.ndim == (2 if nz == 1 else 3)
    assert m.cell_type_map().shape == ((ny, nx) if nz == 1 else (nz, ny, nx))
    n0 = m.counts()["tumour"]
    assert n0 > 0
    m.plasma[:3] = [500.0, 10.0, 0.0]
    for _ in range(12):
        m.step()
        assert K.check_consistency(m.state.cells, m.state.occupancy) == 0
    assert m.step_index == 12 and m.time_min == pytest.approx(120.0)
    assert m.latest["n_tumour"] == m.counts()["tumour"]
    assert m.latest["il2_max"] > 0.0  # plasma reached the tissue through vessels
    for f in m.fields().values():
        assert f.shape == m.cell_type_map().shape


def test_untreated_tumour_grows():
    """Untreated, default rules, 40x40 lattice, 10 days: the tumour more than doubles (observed 80 -> 452 cells)."""
    m = Model(sets=TINY, seed=1)
    n0 = m.latest["n_tumour"]
    d0 = m.latest["tumour_longest_diameter_mm"]
    m.run_days(10)
    assert m.latest["n_tumour"] > 2 * n0
    assert m.latest["tumour_longest_diameter_mm"] > d0


def test_strong_infiltrate_shrinks_tumour():
    """A strong immune infiltrate: 300 CTL placed within 100 um of the tumour, full MHC-I (m0 = 1, the top of its
    documented range [0, 1]), p_CTL = 0.3 (range [0, 1]), antigenicity 10 (range [0, 100]). In 2 days the tumour
    falls below half its size (observed: 316 -> 0 cells), while the same tumour without CTL (none placed, none
    recruited: with local recruitment antigenicity 10 brings in an infiltrate of its own) grows."""
    base = [
        "lattice.nx=60",
        "lattice.ny=60",
        "init.tumour_radius_um=200",
        "patient.mhc_baseline=1.0",
        "ctl.kill_prob=0.3",
        "patient.antigenicity=10",
    ]
    treated = Model(sets=base + ["init.ctl_cells=300", "init.immune_within_um=100"], seed=1)
    n0 = treated.latest["n_tumour"]
    treated.run_days(2)
    assert treated.latest["n_tumour"] < 0.5 * n0
    assert len(treated.datacollector.get_model_vars_dataframe()) == treated.steps_for_days(2) + 1
    control = Model(sets=base + ["ctl.recruit_per_vessel_per_day=0", "nk.recruit_per_vessel_per_day=0"], seed=1)
    control.run_days(2)
    assert control.latest["n_tumour"] > n0


# ------------------------------------------------------------------------------------------------- Mesa face
def test_mesa_batch_run():
    rows = mesa.batch_run(
        abm.Model,
        parameters={
            "ctl__kill_prob": [0.02, 0.2],
            "lattice__nx": 30,
            "lattice__ny": 30,
            "init__tumour_radius_um": 80.0,
            "seed": 1,
        },
        iterations=1,
        max_steps=20,
        number_processes=1,
        display_progress=False,
    )
    assert rows
    by_kp = {}
    for row in rows:
        for key in ("n_tumour", "n_ctl", "n_nk", "n_lak", "Step", "ctl__kill_prob"):
            assert key in row, key
        by_kp.setdefault(row["ctl__kill_prob"], []).append(row)
    assert set(by_kp) == {0.02, 0.2}
    for rs in by_kp.values():
        assert max(r["Step"] for r in rs) == 20
        assert all(r["n_tumour"] > 0 for r in rs)


def test_mesa_batch_run_iterations_are_distinct_replicates():
    """Without a seed, each iteration draws its own (Mesa's convention); the seed is recorded in the model."""
    rows = mesa.batch_run(
        abm.Model,
        parameters={
            "scenario": "untreated",  # a shipped scenario, whose run.seed = 1 must not fix every replicate
            "lattice__nx": 30,
            "lattice__ny": 30,
            "init__tumour_radius_um": 80.0,
            "init__nk_cells": 20,
        },
        iterations=3,
        max_steps=30,
        number_processes=1,
        display_progress=False,
        data_collection_period=1,
    )
    finals = {}
    for row in rows:
        finals.setdefault(row["RunId"], []).append((row["Step"], row["n_tumour"], row["n_nk"], row["il2_mean"]))
    trajectories = {tuple(sorted(v)) for v in finals.values()}
    assert len(finals) == 3 and len(trajectories) == 3


def test_run_model_returns_at_the_scenarios_end():
    m = Model(sets=TINY, seed=1, run__days=0.5)
    m.run_model()
    assert not m.running and m.step_index == m.steps == 72
    assert len(m.datacollector.get_model_vars_dataframe()) == 73


def test_mesa_seed_and_rng_conventions():
    m = Model(sets=TINY, seed=5)
    assert m.seed == 5
    a = Model(sets=TINY, rng=np.random.default_rng(3))
    b = Model(sets=TINY, rng=np.random.default_rng(3))
    c = Model(sets=TINY, rng=np.random.default_rng(4))
    assert a.seed == b.seed != c.seed
    assert isinstance(a.rng, np.random.Generator)
    assert m.steps == 0 and m.running
    m.step()
    m.step()
    assert m.steps == 2 and m.step_index == 2
    df = m.datacollector.get_model_vars_dataframe()
    assert len(df) == 3 and "n_tumour" in df.columns  # t = 0 plus two steps


def test_seed_and_rng_together_refused_like_mesa():
    with pytest.raises(ValueError):
        mesa.Model(seed=1, rng=np.random.default_rng(1))
    with pytest.raises(ValueError):
        Model(sets=TINY, seed=1, rng=np.random.default_rng(1))


def test_kwargs_overrides_match_sets():
    a = Model(ctl__kill_prob=0.123, lattice__nx=30, lattice__ny=30, seed=2)
    b = Model(sets=["ctl.kill_prob=0.123", "lattice.nx=30", "lattice.ny=30"], seed=2)
    assert a.params.ctl.kill_prob == 0.123 and a.params == b.params
    assert np.array_equal(a.state.occupancy, b.state.occupancy)


def test_property_layers_2d():
    m = Model(sets=TINY, seed=1)
    m.step()
    layers = m.property_layers()
    assert {"il2", "ifna", "drug", "cell_type"} <= set(layers)
    ct = layers["cell_type"]
    data = np.asarray(ct.data)
    assert data.shape == (40, 40)  # Mesa indexes (x, y)
    assert np.array_equal(data.T, m.cell_type_map())
    assert np.count_nonzero(data == K.TUMOUR) == m.counts()["tumour"]
