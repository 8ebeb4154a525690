"""The blocks cell schedule (abm/cell_blocks.py, abm/kernels/blocks.py): the layout never lets two cells of one
colour touch one site, the parallel step equals its serial oracle (the schedule's visit order run one cell at a
time), and a run gives the same bits on 1 and 2 threads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import abm
from abm import cell_blocks
from abm.kernels import blocks as KB
from abm.kernels import cells as K
from abm.kernels.records import CellArrays, Tissue

ROOT = Path(__file__).resolve().parents[1]


@given(n=st.integers(1, 200), width=st.integers(1, 30), periodic=st.booleans())
def test_axis_blocks_are_contiguous_wide_enough_and_even_on_a_periodic_axis(n, width, periodic):
    a = cell_blocks.axis_blocks(n, width, periodic)
    nb = int(a[-1]) + 1
    assert a[0] == 0 and np.all(np.diff(a) >= 0) and np.all(np.diff(a) <= 1)  # contiguous, in order
    sizes = np.bincount(a)
    if nb > 1:
        assert sizes.min() >= width
        if periodic:
            assert nb % 2 == 0
    assert nb == 1 or n >= 2 * width


def _wrapped(d, n, periodic):
    return np.minimum(d, n - d) if periodic else d


@settings(max_examples=25, deadline=None)
@given(
    nx=st.integers(1, 40),
    ny=st.integers(1, 40),
    nz=st.sampled_from([1, 1, 9]),
    reach=st.integers(1, 4),
    periodic=st.booleans(),
)
def test_two_sites_in_different_blocks_of_one_colour_are_more_than_two_reaches_apart(nx, ny, nz, reach, periodic):
    """Cells starting in two same-colour blocks reach at most ``reach`` sites each, so their footprints are
    disjoint when the blocks are more than ``2 reach`` apart (Chebyshev distance, across the wrap if periodic)."""
    lay = cell_blocks.block_layout((nx, ny, nz), periodic, reach)
    x, y, z = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
    x, y, z = x.ravel(), y.ravel(), z.ravel()
    block = lay.axis_x[x] + lay.nbx * (lay.axis_y[y] + lay.nby * lay.axis_z[z])
    rank = lay.rank[block]
    colour = np.searchsorted(lay.colour_start, rank, side="right") - 1
    rng = np.random.default_rng(nx * 10_000 + ny * 100 + nz)
    idx = rng.integers(0, x.shape[0], size=(400, 2))
    a, b = idx[:, 0], idx[:, 1]
    pair = (colour[a] == colour[b]) & (block[a] != block[b])
    d = np.maximum.reduce(
        [
            _wrapped(np.abs(x[a] - x[b]), nx, periodic),
            _wrapped(np.abs(y[a] - y[b]), ny, periodic),
            _wrapped(np.abs(z[a] - z[b]), nz, periodic),
        ]
    )
    assert np.all(d[pair] > 2 * reach)
    assert sorted(lay.rank.tolist()) == list(range(lay.rank.shape[0]))  # every block listed once
    assert lay.colour_start[0] == 0 and lay.colour_start[-1] == lay.rank.shape[0]


def test_reach_is_the_moves_rounded_up_plus_one_neighbour():
    rules = abm.Model(sets=["lattice.nx=20", "lattice.ny=20"]).rules
    moves = max(rules.ctl.moves_per_step, rules.nk.moves_per_step, rules.lak.moves_per_step)
    assert moves == 4.0 and cell_blocks.reach_sites(rules) == 5
    fast = abm.Model(sets=["lattice.nx=20", "lattice.ny=20", "nk.speed_um_per_min=8.5"]).rules
    assert cell_blocks.reach_sites(fast) == 6  # 4.25 moves: sometimes 5, then one neighbour


def _copy_tissue(t):
    c = t.cells
    cells = CellArrays(*(np.array(getattr(c, f)) for f in c._fields))
    return Tissue(cells, t.occupancy.copy(), t.conc.copy(), t.uptake.copy(), t.source.copy(), t.vessels.copy())


def _live(t):
    c = t.cells
    n = int(c.n[0])
    return {f: np.array(getattr(c, f)[:n]) for f in c._fields if f not in ("n",)} | {
        "occupancy": t.occupancy.copy(),
        "n": n,
        "next_id": int(c.next_id[0]),
    }


def _compare_step(m, full=False):
    """One blocks step from the model's state, parallel and oracle, on copies: identical after compaction."""
    lay, bs = m._blocks
    key = abm.model.StepKey(np.uint64(m.seed), np.int64(m.step_index))
    out = []
    for kernel in ("parallel", "oracle"):
        t = _copy_tissue(m.state.tissue)
        if full:  # arrays cut to the live cells and a few more: the reserve does not fit
            t = t._replace(cells=CellArrays(*(a[: int(t.cells.n[0]) + 5] if a.shape[0] > 1 else a for a in t.cells)))
        counters = K.empty_counters()
        if kernel == "parallel":
            parallel = KB.step_cells_blocks(t, m.geometry, m.rules, key, counters, m.scratch, lay, bs)
            assert parallel is (not full)
        else:
            KB.blocks_visit_serial(t, m.geometry, m.rules, key, counters, m.scratch, lay, bs)
        K.compact(t.cells, t.occupancy)
        assert K.check_consistency(t.cells, t.occupancy) == 0
        out.append((_live(t), counters))
    (a, ca), (b, cb) = out
    assert np.array_equal(ca, cb)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    return ca


@pytest.mark.parametrize(
    "sets",
    [
        ["lattice.nx=64", "lattice.ny=64"],
        ["lattice.nx=64", "lattice.ny=50", "lattice.boundary=periodic"],
        ["lattice.nx=24", "lattice.ny=24", "lattice.nz=24", "init.tumour_radius_um=120"],
    ],
    ids=["2d", "2d-periodic", "3d"],
)
def test_parallel_blocks_step_equals_its_serial_oracle(sets):
    m = abm.Model(
        "high_dose_il2",
        seed=5,
        sets=[*sets, "time.cell_schedule=blocks", "init.ctl_cells=60", "init.nk_cells=30", "init.lak_cells=10"],
    )
    events = np.zeros(K.N_COUNTERS, np.int64)
    for _ in range(6):
        m.advance(8)
        events += _compare_step(m)
    assert events[K.DIV_TUMOUR] > 0 and events[K.KILL_CTL] + events[K.KILL_NK] + events[K.KILL_LAK] > 0
    assert events[K.DIV_CTL] > 0  # daughters of immune cells exercised too


def test_full_arrays_run_the_oracle():
    m = abm.Model(sets=["lattice.nx=40", "lattice.ny=40", "time.cell_schedule=blocks"], seed=2)
    m.advance(3)
    _compare_step(m, full=True)


def test_blocks_is_a_different_rule_from_sequential_with_the_same_seed():
    sets = ["lattice.nx=40", "lattice.ny=40", "init.ctl_cells=30"]
    a = abm.Model(seed=4, sets=sets)
    b = abm.Model(seed=4, sets=[*sets, "time.cell_schedule=blocks"])
    a.advance(20)
    b.advance(20)
    assert not np.array_equal(a.state.occupancy, b.state.occupancy)


RUN = """
import hashlib, numba, numpy as np, abm, abm.threads
abm.threads.set_threads({threads})
m = abm.Model("high_dose_il2", seed=9, sets=["lattice.nx=120", "lattice.ny=120", "time.cell_schedule=blocks",
    "init.ctl_cells=80", "init.nk_cells=40"])
m.advance(60)
c = m.state.cells
n = int(c.n[0])
h = hashlib.sha256(m.state.occupancy.tobytes())
for f in c._fields:
    h.update(np.ascontiguousarray(getattr(c, f)[:n]).tobytes())
h.update(m.state.conc.tobytes())
print(numba.get_num_threads(), n, h.hexdigest())
"""


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs at least 2 Numba threads")
def test_blocks_run_same_bits_on_one_and_two_threads():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_NUM", "ABM_THREAD"))}
    env["PYTHONPATH"] = str(ROOT)
    out = {}
    for n in (1, 2):
        code = RUN.replace("{threads}", str(n))
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
        assert res.returncode == 0, res.stderr[-2000:]
        threads, cells, digest = res.stdout.split()[-3:]
        assert int(threads) == n
        out[n] = (int(cells), digest)
    assert out[1] == out[2] and out[1][0] > 100
