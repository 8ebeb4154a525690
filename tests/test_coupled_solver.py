"""Tests of the coupled backward-Euler field step (FieldSolver(coupled=...), abm.kernels.coupled).

The coupled step solves ``(1 + dt (k + U + m P) - D dt Lap) c' = c + dt (S + m P Cp)`` for each coupled species.
Every reference below is the *same discrete operator* (cell-centred finite volumes, no-flux or periodic) assembled with
scipy.sparse, so the only differences measured are the solve error, the time discretisation and, where stated, the
space discretisation. Tolerances and why (see docs/solver.md for the measured values):

- solve error against scipy.sparse.linalg.spsolve: the solver stops at ``||b - A c'||_2 <= rtol ||b||_2``; every
  eigenvalue of ``A`` is >= 1, so ``||c' - c'*||_2 <= rtol ||b||_2``; asserted with a factor 2 for the difference
  between the recursively updated and the true residual and the non-negativity/balance fix-up (both O(rtol));
- mass and the discrete balance: 1e-12 relative (the fix-up closes the balance to round-off);
- single secreting cell with receptor uptake (1 molecule/s, 1.2/min, D = 100 um^2/s, h = 20 um, dt = 10 min):
  site value and escape fraction within 5% (the issue's target) of the exact steady state (spsolve) and of the dt -> 0
  limit (the exact semi-discrete solution, scipy.sparse.linalg.expm_multiply); measured errors are far smaller;
- fitted temporal order of the coupled step against the exact semi-discrete solution: 0.9-1.1 (backward Euler).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numba
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

try:
    from abm.field_solver import FieldSolver
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from abm.field_solver import FieldSolver

from abm.kernels import coupled as ck
from abm.units import molecules_to_pM

ROOT = Path(__file__).resolve().parents[1]
NO_VESSELS = np.zeros(0, dtype=np.int64)
H = 20.0

# the single-cell case of issue 11 (the defaults of docs/model.md)
D_IL2 = 6000.0  # um^2/min (100 um^2/s)
DECAY_IL2 = 2.8e-5 * 60.0  # 1/min
UPTAKE = 1.2  # 1/min, receptor uptake at the cell's site (first order at these levels)
KM = 100.0  # pM, Michaelis-Menten constant of the uptake (linearised at the current concentration)
SECRETION = 60.0 * molecules_to_pM(H)  # pM/min at the cell's site: 1 molecule/s


# ---------------------------------------------------------------------------------------------- sparse reference


def neg_laplacian_1d(n: int, periodic: bool) -> sp.csr_matrix:
    """-L along one axis in units of 1/h^2: no-flux ends (diagonal 1) or cyclic; a cyclic axis of 2 has two faces."""
    rows, cols, vals = [], [], []
    for i in range(n):
        for j in (i - 1, i + 1):
            if periodic:
                j %= n
            elif j < 0 or j >= n:
                continue
            if j == i:
                continue
            rows += [i, i]
            cols += [i, j]
            vals += [1.0, -1.0]
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, n))


def neg_laplacian(shape: tuple[int, int, int], periodic: bool) -> sp.csr_matrix:
    nx, ny, nz = shape
    eye = sp.identity
    return (
        sp.kron(eye(nz), sp.kron(eye(ny), neg_laplacian_1d(nx, periodic)))
        + sp.kron(eye(nz), sp.kron(neg_laplacian_1d(ny, periodic), eye(nx)))
        + sp.kron(neg_laplacian_1d(nz, periodic), sp.kron(eye(ny), eye(nx)))
    ).tocsr()


def coupled_system(conc_s, uptake_s, source_s, vessels, perm_s, plasma_s, decay_s, diff_s, dt, shape, periodic):
    """(A, b) of one coupled backward-Euler step of one species, assembled with scipy.sparse."""
    n = conc_s.shape[0]
    m = np.zeros(n)
    np.add.at(m, vessels, 1.0)
    mass = 1.0 + dt * (decay_s + uptake_s.astype(np.float64) + m * perm_s)
    b = conc_s + dt * (source_s.astype(np.float64) + m * perm_s * plasma_s)
    a = sp.diags(mass) + (diff_s * dt / H**2) * neg_laplacian(shape, periodic)
    return a.tocsc(), b


def random_problem(rng, shape, ns, sparse=False):
    n = int(np.prod(shape))
    conc = rng.random((ns, n)) * 10.0
    if sparse:
        conc *= rng.random((ns, n)) < 0.2
    uptake = (rng.random((ns, n)) * 2.0 * (rng.random((ns, n)) < 0.5)).astype(np.float32)
    source = (rng.random((ns, n)) * 5.0 * (rng.random((ns, n)) < 0.3)).astype(np.float32)
    vessels = rng.integers(0, n, size=max(1, n // 10)).astype(np.int64)
    perm = rng.random(ns)
    plasma = rng.random(ns) * 20.0
    return conc, uptake, source, vessels, perm, plasma


shapes = st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(1, 6))
hsettings = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------- against spsolve


@hsettings
@given(
    shape=shapes,
    ns=st.integers(1, 3),
    periodic=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    dt=st.sampled_from([0.05, 1.0, 10.0]),
    flags=st.integers(1, 7),
)
def test_matches_sparse_direct_solve(shape, ns, periodic, seed, dt, flags):
    """Coupled species equal spsolve of the same system to the solve bound (rtol = 1e-10); split species are left
    exactly as a split-only solver leaves them."""
    rng = np.random.default_rng(seed)
    diff = rng.random(ns) * 18000.0
    decay = rng.random(ns) * 0.01
    coupled = [bool((flags >> s) & 1) for s in range(ns)]
    conc, uptake, source, vessels, perm, plasma = random_problem(rng, shape, ns)
    solver = FieldSolver(shape, H, dt, diff, decay, periodic=periodic, coupled=coupled, rtol=1e-10)
    split = FieldSolver(shape, H, dt, diff, decay, periodic=periodic)
    out, ref = conc.copy(), conc.copy()
    solver.step(out, uptake, source, vessels, perm, plasma)
    split.step(ref, uptake, source, vessels, perm, plasma)
    for s in range(ns):
        if not coupled[s]:
            assert np.array_equal(out[s], ref[s])
            assert solver.last_iterations[s] == 0
            continue
        a, b = coupled_system(conc[s], uptake[s], source[s], vessels, perm[s], plasma[s], decay[s], diff[s], dt,
                              solver.shape_xyz, periodic)  # fmt: skip
        exact = spla.spsolve(a, b)
        assert np.linalg.norm(out[s] - exact) <= 2e-10 * np.linalg.norm(b)
        assert solver.last_residual[s] <= 1e-10


@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("shape", [(64, 48, 1), (24, 20, 17), (41, 37, 13)])
def test_larger_grids_match_sparse_solve(shape, periodic):
    """Grids whose fine levels run the parallel kernels (>= 16384 sites for the 3D ones), including odd periodic
    axes (same-colour neighbours), at the production step (dt = 10 min, r = 150 and 450); default rtol = 1e-8."""
    rng = np.random.default_rng(7)
    conc, uptake, source, vessels, perm, plasma = random_problem(rng, shape, 2)
    diff, decay = np.array([6000.0, 18000.0]), np.array([0.00168, 0.0058])
    solver = FieldSolver(shape, H, 10.0, diff, decay, periodic=periodic, coupled=True)
    out = conc.copy()
    solver.step(out, uptake, source, vessels, perm, plasma)
    for s in range(2):
        a, b = coupled_system(conc[s], uptake[s], source[s], vessels, perm[s], plasma[s], decay[s], diff[s], 10.0,
                              solver.shape_xyz, periodic)  # fmt: skip
        exact = spla.spsolve(a, b)
        assert np.linalg.norm(out[s] - exact) <= 2e-8 * np.linalg.norm(b)
        assert 0 < solver.last_iterations[s] <= 12


# ---------------------------------------------------------------------------------------------- invariants


@hsettings
@given(
    shape=shapes,
    ns=st.integers(1, 3),
    periodic=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    dt=st.sampled_from([0.1, 1.0, 10.0]),
    nsteps=st.integers(1, 3),
)
def test_mass_conserved_without_reactions(shape, ns, periodic, seed, dt, nsteps):
    rng = np.random.default_rng(seed)
    diff = rng.random(ns) * 18000.0
    n = int(np.prod(shape))
    conc = rng.random((ns, n)) * (rng.random((ns, n)) < 0.5)
    conc[:, 0] += 1.0
    mass0 = conc.sum(axis=1)
    solver = FieldSolver(shape, H, dt, diff, np.zeros(ns), periodic=periodic, coupled=True)
    for _ in range(nsteps):
        solver.step(conc, None, None, NO_VESSELS, np.zeros(ns), np.zeros(ns))
    np.testing.assert_allclose(conc.sum(axis=1), mass0, rtol=1e-12, atol=0)


@hsettings
@given(shape=shapes, ns=st.integers(1, 3), periodic=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_discrete_balance_closed_with_reactions(shape, ns, periodic, seed):
    """sum c' + dt sum((k + U + m P) c') = sum c + dt sum(S + m P Cp): what enters and leaves, to round-off."""
    rng = np.random.default_rng(seed)
    diff = rng.random(ns) * 18000.0
    decay = rng.random(ns) * 0.01
    dt = 10.0
    conc, uptake, source, vessels, perm, plasma = random_problem(rng, shape, ns)
    solver = FieldSolver(shape, H, dt, diff, decay, periodic=periodic, coupled=True)
    out = conc.copy()
    solver.step(out, uptake, source, vessels, perm, plasma)
    m = np.zeros(solver.n_sites)
    np.add.at(m, vessels, 1.0)
    for s in range(ns):
        lhs = out[s].sum() + dt * np.sum((decay[s] + uptake[s].astype(np.float64) + m * perm[s]) * out[s])
        rhs = conc[s].sum() + dt * np.sum(source[s].astype(np.float64) + m * perm[s] * plasma[s])
        np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


@hsettings
@given(
    shape=shapes,
    ns=st.integers(1, 3),
    periodic=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    dt=st.sampled_from([0.1, 1.0, 10.0]),
    sparse=st.booleans(),
)
def test_non_negative(shape, ns, periodic, seed, dt, sparse):
    rng = np.random.default_rng(seed)
    diff = rng.random(ns) * 18000.0 * (rng.random(ns) < 0.8)
    decay = rng.random(ns)
    conc, uptake, source, vessels, perm, plasma = random_problem(rng, shape, ns, sparse=sparse)
    solver = FieldSolver(shape, H, dt, diff, decay, periodic=periodic, coupled=True)
    for _ in range(3):
        solver.step(conc, uptake, source, vessels, perm, plasma)
        assert np.all(np.isfinite(conc))
        assert np.all(conc >= 0.0)


@pytest.mark.parametrize("periodic", [False, True])
def test_non_negative_single_spike_large_r(periodic):
    """A lone 1e6 spike next to a 1e-300 at r = 450 (drug at dt = 10 min): the Krylov iterate has small negative
    entries far from the spike (the exact solution there is ~1e-50); they are clipped and the mass is restored."""
    solver = FieldSolver((30, 20, 10), H, 10.0, [18000.0], [0.0], periodic=periodic, coupled=True)
    conc = np.zeros((1, solver.n_sites))
    conc[0, 1234] = 1e-300
    conc[0, 7] = 1e6
    for _ in range(2):
        solver.step(conc, None, None, NO_VESSELS, np.zeros(1), np.zeros(1))
    assert np.all(conc >= 0.0)
    np.testing.assert_allclose(conc.sum(), 1e6 + 1e-300, rtol=1e-12)


@pytest.mark.parametrize("level", [1e-150, 1e-155, 1e-160, 1e-200])
def test_a_field_decayed_to_underflow_levels_does_not_break_the_solve(level):
    """A field that has decayed for weeks (IL-2 after the last dose of a course: the plasma level halves every 85 min)
    reaches levels whose squares underflow the Krylov dot products (the trial runner met it as 'relative residual
    nan' at 1e-153 to 1e-162). The step must stay finite and non-negative; a right-hand side below
    ck.NEGLIGIBLE_RHS is zero."""
    solver = FieldSolver((30, 20, 1), H, 10.0, [6000.0], [0.0016], coupled=True)
    conc = np.full((1, solver.n_sites), level)
    conc[0, 17] = 3.0 * level
    uptake = np.full((1, solver.n_sites), 1.2, dtype=np.float32)
    for _ in range(3):
        solver.step(conc, uptake, None, NO_VESSELS, np.zeros(1), np.zeros(1))
    assert np.all(np.isfinite(conc)) and np.all(conc >= 0.0)
    assert conc.max() <= 3.0 * level


@pytest.mark.parametrize("periodic", [False, True])
def test_clip_and_balance_exercised_where_the_field_vanishes(periodic):
    """Slow diffusion (r = 1.5) and fast decay (k dt = 10): the exact solution falls by about 1e-1 per site away from
    a 1e6 spike, down to ~1e-20 at the far end, far below the solve error (<= rtol ||b||_2 ~ 1e-2). The Krylov
    iterate is therefore negative at some far sites: they come back as exact zeros (the clip is exercised), nothing
    is negative, and the balance sum(c') (1 + k dt) = sum(c) holds to round-off."""
    solver = FieldSolver((30, 20, 10), H, 10.0, [60.0], [1.0], periodic=periodic, coupled=True)
    conc = np.full((1, solver.n_sites), 1e-300)
    conc[0, 7] = 1e6
    mass0 = conc.sum()
    solver.step(conc, None, None, NO_VESSELS, np.zeros(1), np.zeros(1))
    assert np.all(conc >= 0.0)
    assert np.count_nonzero(conc == 0.0) > 0
    np.testing.assert_allclose(conc.sum() * (1.0 + 10.0), mass0, rtol=1e-12)


@hsettings
@given(nx=st.integers(1, 8), ny=st.integers(1, 8), periodic=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_2d_equals_3d_with_nz_1(nx, ny, periodic, seed):
    rng = np.random.default_rng(seed)
    problem = random_problem(rng, (nx, ny, 1), 2)
    out = []
    for shape in ((nx, ny), (nx, ny, 1)):
        solver = FieldSolver(shape, H, 10.0, [6000.0, 18000.0], [0.001, 0.0], periodic=periodic, coupled=True)
        conc = problem[0].copy()
        solver.step(conc, *problem[1:])
        out.append(conc)
    assert np.array_equal(out[0], out[1])


def test_substeps_equal_repeated_small_steps():
    rng = np.random.default_rng(5)
    shape = (12, 7, 5)
    problem = random_problem(rng, shape, 2)
    a = FieldSolver(shape, H, 10.0, [6000.0, 18000.0], [0.01, 0.02], substeps=4, coupled=[True, False])
    b = FieldSolver(shape, H, 2.5, [6000.0, 18000.0], [0.01, 0.02], coupled=[True, False])
    ca, cb = problem[0].copy(), problem[0].copy()
    a.step(ca, *problem[1:])
    iterations = 0
    for _ in range(4):
        b.step(cb, *problem[1:])
        iterations += int(b.last_iterations[0])
    assert np.array_equal(ca, cb)
    assert a.last_iterations[0] == iterations


def test_step_is_a_pure_function_of_its_arguments():
    """The warm start is the field passed in; no state is carried between steps (restarts reproduce runs)."""
    rng = np.random.default_rng(9)
    shape = (40, 30, 1)
    problem = random_problem(rng, shape, 1)
    fresh = FieldSolver(shape, H, 10.0, [6000.0], [0.00168], coupled=True)
    used = FieldSolver(shape, H, 10.0, [6000.0], [0.00168], coupled=True)
    other = random_problem(np.random.default_rng(10), shape, 1)
    for _ in range(3):
        used.step(other[0].copy(), *other[1:])
    ca, cb = problem[0].copy(), problem[0].copy()
    fresh.step(ca, *problem[1:])
    used.step(cb, *problem[1:])
    assert np.array_equal(ca, cb)


def test_uniform_field_decays_at_backward_euler_rate():
    """A uniform field decays as (1 + k dt)^-n. Each solve is exact to its bound, ||e||_2 <= rtol ||b||_2, i.e. a
    relative error per site of at most rtol sqrt(n_sites) per step for a uniform field: asserted over n steps with
    rtol = 1e-10 (so <= 20 * 1e-10 * sqrt(504) = 4.5e-8; measured about 1e-15)."""
    k, dt, c0, n = 0.0385, 10.0, 7.25, 20
    solver = FieldSolver((9, 8, 7), H, dt, [18000.0, 60.0], [k, 2 * k], coupled=True, rtol=1e-10)
    conc = np.full((2, solver.n_sites), c0)
    for _ in range(n):
        solver.step(conc, None, None, NO_VESSELS, np.zeros(2), np.zeros(2))
    bound = n * 1e-10 * np.sqrt(solver.n_sites)
    np.testing.assert_allclose(conc[0], c0 * (1.0 + k * dt) ** -n, rtol=bound)
    np.testing.assert_allclose(conc[1], c0 * (1.0 + 2 * k * dt) ** -n, rtol=bound)


def test_vessel_exchange_relaxes_to_plasma_at_backward_euler_rate():
    """One site (the solve is then exact) and a uniform field whose every site is a vessel (bound as above)."""
    p, cp, dt, c0, n = 0.3, 5.0, 10.0, 1.0, 8
    solver = FieldSolver((1, 1, 1), H, dt, [6000.0], [0.0], coupled=True)
    conc = np.array([[c0]])
    for _ in range(n):
        solver.step(conc, None, None, np.array([0], dtype=np.int64), np.array([p]), np.array([cp]))
    np.testing.assert_allclose(conc[0, 0], cp + (c0 - cp) * (1.0 + p * dt) ** -n, rtol=1e-13)
    solver = FieldSolver((6, 5, 4), H, dt, [6000.0, 18000.0], [0.0, 0.0], periodic=True, coupled=True, rtol=1e-10)
    conc = np.full((2, solver.n_sites), c0)
    perm2, plasma2 = np.array([p, 2 * p]), np.array([cp, 0.5 * cp])
    every = np.arange(solver.n_sites, dtype=np.int64)
    for _ in range(n):
        solver.step(conc, None, None, every, perm2, plasma2)
    bound = n * 1e-10 * np.sqrt(solver.n_sites)
    for s in range(2):
        expected = plasma2[s] + (c0 - plasma2[s]) * (1.0 + perm2[s] * dt) ** -n
        np.testing.assert_allclose(conc[s], expected, rtol=bound)


# ---------------------------------------------------------------------------------------------- threads, allocation

_THREAD_SCRIPT = textwrap.dedent(
    """
    import hashlib, sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from abm.field_solver import FieldSolver
    digest = hashlib.sha256()
    for shape, periodic in [((200, 150, 1), False), ((40, 30, 20), True), ((41, 37, 13), True), ((5, 300, 7), False)]:
        rng = np.random.default_rng(11)
        n = int(np.prod(shape))
        conc = rng.random((2, n)) * 10.0
        uptake = (rng.random((2, n)) * 1.2 * (rng.random((2, n)) < 0.2)).astype(np.float32)
        source = (rng.random((2, n)) * 5.0 * (rng.random((2, n)) < 0.1)).astype(np.float32)
        vessels = rng.integers(0, n, size=n // 50).astype(np.int64)
        solver = FieldSolver(shape, 20.0, 10.0, [6000.0, 18000.0], [0.00168, 0.0058], periodic=periodic,
                             coupled=[True, False])
        for _ in range(3):
            solver.step(conc, uptake, source, vessels, np.array([0.1, 0.5]), np.array([300.0, 5.0]))
        digest.update(conc.tobytes())
    print(digest.hexdigest())
    """
)


def test_thread_count_independent_in_subprocesses():
    """The same coupled steps with NUMBA_NUM_THREADS = 1 and 2 give bit-identical fields (sha256 of the bytes),
    on grids whose fine levels run in parallel, closed and periodic (with odd periodic axes)."""
    digests = []
    for threads in (1, 2):
        env = {**os.environ, "NUMBA_NUM_THREADS": str(threads)}
        out = subprocess.run(
            [sys.executable, "-c", _THREAD_SCRIPT, str(ROOT)], env=env, capture_output=True, text=True, check=True
        )
        digests.append(out.stdout.strip())
    assert digests[0] == digests[1]


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs at least 2 Numba threads")
@hsettings
@given(shape=shapes, periodic=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_thread_count_independent_random(shape, periodic, seed):
    rng = np.random.default_rng(seed)
    problem = random_problem(rng, shape, 2)
    solver = FieldSolver(shape, H, 10.0, [6000.0, 18000.0], [0.001, 0.0], periodic=periodic, coupled=True)
    before = numba.get_num_threads()
    results = []
    try:
        for nt in (1, 2):
            numba.set_num_threads(nt)
            conc = problem[0].copy()
            solver.step(conc, *problem[1:])
            results.append(conc)
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(results[0], results[1])


_ALLOC_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from numba.core.runtime import rtsys
    from abm.field_solver import FieldSolver
    out = []
    for shape in [(60, 50, 1), (200, 150, 1), (30, 30, 30)]:
        for rtol in (1e-3, 1e-12):
            rng = np.random.default_rng(3)
            n = int(np.prod(shape))
            conc = rng.random((2, n)) * 10.0
            uptake = (rng.random((2, n)) * 1.2).astype(np.float32)
            source = (rng.random((2, n)) * 5.0).astype(np.float32)
            vessels = np.arange(0, n, 37, dtype=np.int64)
            solver = FieldSolver(shape, 20.0, 10.0, [6000.0, 18000.0], [0.00168, 0.0058], coupled=True, rtol=rtol)
            args = (uptake, source, vessels, np.array([0.1, 0.5]), np.array([300.0, 5.0]))
            solver.step(conc, *args)
            before = rtsys.get_allocation_stats()
            solver.step(conc, *args)
            after = rtsys.get_allocation_stats()
            out.append((after.alloc - before.alloc, after.free - before.free, int(solver.last_iterations.sum())))
    print(out)
    """
)


def test_no_kernel_allocation_per_iteration():
    """Numba runtime allocations of one step (NRT statistics, in a subprocess) do not depend on the lattice size or
    on the number of iterations (rtol 1e-3 vs 1e-12): the kernels allocate nothing; what is counted is the fixed
    boxing of the arguments at the Python-Numba boundary (one record per array argument), all freed again."""
    env = {**os.environ, "NUMBA_NRT_STATS": "1", "NUMBA_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _ALLOC_SCRIPT, str(ROOT)], env=env, capture_output=True, text=True, check=True
    )
    rows = ast.literal_eval(out.stdout.strip())  # [(alloc, free, iterations), ...]
    assert len({(a, f) for a, f, _ in rows}) == 1, rows
    assert all(a == f for a, f, _ in rows)
    assert all(rows[k][2] < rows[k + 1][2] for k in range(0, len(rows), 2)), rows


def test_no_array_allocation_per_step():
    """The Python side of a step allocates no field-sized temporaries: the tracemalloc peak over three steps of a
    300 x 200 lattice stays below 5% of one field row (it is a few kB of records, independent of the size)."""
    rng = np.random.default_rng(4)
    shape = (300, 200, 1)
    problem = random_problem(rng, shape, 2)
    solver = FieldSolver(shape, H, 10.0, [6000.0, 18000.0], [0.00168, 0.0058], coupled=[True, False])
    conc = problem[0].copy()
    solver.step(conc, *problem[1:])
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(3):
            solver.step(conc, *problem[1:])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak - base < 0.05 * conc[0].nbytes


# ---------------------------------------------------------------------------------------------- a secreting cell


def single_cell_case(shape):
    """(solver-ready arrays) for one CTL at the centre secreting 1 molecule/s with receptor uptake."""
    nx, ny, nz = shape
    site = nx // 2 + nx * (ny // 2 + ny * (nz // 2))
    n = nx * ny * nz
    source = np.zeros((1, n), dtype=np.float32)
    source[0, site] = SECRETION
    return site, source


def exact_steady_state(shape, site, secretion):
    """Steady state of the same discrete operator with Michaelis–Menten uptake at ``site`` (fixed point of
    linearised solves with spsolve, to 1e-14)."""
    n = int(np.prod(shape))
    lap = (D_IL2 / H**2) * neg_laplacian(shape, False)
    rhs = np.zeros(n)
    rhs[site] = secretion
    c_site = 0.0
    for _ in range(50):
        k = UPTAKE / (1.0 + c_site / KM)
        u = np.zeros(n)
        u[site] = k
        c = spla.spsolve((sp.diags(DECAY_IL2 + u) + lap).tocsc(), rhs)
        if abs(c[site] - c_site) <= 1e-14 * c[site]:
            break
        c_site = c[site]
    return c, k


def run_single_cell(shape, dt, t_end, coupled, substeps=1):
    site, source = single_cell_case(shape)
    solver = FieldSolver(shape, H, dt, [D_IL2], [DECAY_IL2], coupled=coupled, substeps=substeps)
    conc = np.zeros((1, solver.n_sites))
    uptake = np.zeros((1, solver.n_sites), dtype=np.float32)
    for _ in range(int(round(t_end / dt))):
        uptake[0, site] = UPTAKE / (1.0 + conc[0, site] / KM)  # as the model's fill_il2_exchange
        solver.step(conc, uptake, source, NO_VESSELS, np.zeros(1), np.zeros(1))
    k = float(uptake[0, site])
    return conc[0], site, k


@pytest.mark.parametrize(("shape", "t_end"), [((64, 64, 1), 6000.0), ((25, 25, 25), 6000.0)])
def test_single_secreting_cell_steady_state(shape, t_end):
    """One CTL secreting 1 molecule/s with receptor uptake (1.2/min, Km 100 pM) on a closed lattice, from zero, at
    the agent step dt = 10 min: after 100 h (about 10 relaxation times of the slowest, global mode) the site value and
    the escape fraction 1 - U c_site / S are within 5% of the exact steady state of the same operator. (The split
    step is 11x too low at the site; see the next test.)"""
    c, site, k = run_single_cell(shape, 10.0, t_end, coupled=True)
    exact, k_exact = exact_steady_state(shape, site, SECRETION)
    escape = 1.0 - k * c[site] / SECRETION
    escape_exact = 1.0 - k_exact * exact[site] / SECRETION
    assert abs(c[site] / exact[site] - 1.0) < 0.05
    assert abs(escape / escape_exact - 1.0) < 0.05
    assert np.linalg.norm(c - exact) / np.linalg.norm(exact) < 0.05


def test_split_step_misses_the_self_uptake():
    """The documented failure the coupled step fixes: at dt = 10 min the split step's site value is far below the
    converged one (2D, 64^2, steady state); asserted as more than 50% low so the comparison in docs/solver.md stays
    true."""
    shape = (64, 64, 1)
    c, site, _ = run_single_cell(shape, 10.0, 6000.0, coupled=False)
    exact, _ = exact_steady_state(shape, site, SECRETION)
    assert c[site] < 0.5 * exact[site]


def semi_discrete_solution(shape, site, t_end, uptake):
    """The exact semi-discrete solution from zero with constant uptake (the dt -> 0 limit), by expm_multiply."""
    n = int(np.prod(shape))
    u = np.zeros(n)
    u[site] = uptake
    jac = (sp.diags(DECAY_IL2 + u) + (D_IL2 / H**2) * neg_laplacian(shape, False)).tocsc()
    rhs = np.zeros(n)
    rhs[site] = SECRETION
    steady = spla.spsolve(jac, rhs)
    return steady - spla.expm_multiply(-t_end * jac, steady)


def run_constant_uptake(shape, dt, t_end, coupled=True):
    site, source = single_cell_case(shape)
    solver = FieldSolver(shape, H, dt, [D_IL2], [DECAY_IL2], coupled=coupled, rtol=1e-12)
    conc = np.zeros((1, solver.n_sites))
    uptake = np.zeros((1, solver.n_sites), dtype=np.float32)
    uptake[0, site] = UPTAKE
    for _ in range(int(round(t_end / dt))):
        solver.step(conc, uptake, source, NO_VESSELS, np.zeros(1), np.zeros(1))
    return conc[0], site


@pytest.mark.parametrize("shape", [(64, 64, 1), (25, 25, 25)])
@pytest.mark.parametrize("t_end", [30.0, 120.0])
def test_single_secreting_cell_transient_matches_dt_to_zero(shape, t_end):
    """Site value and escape fraction at t = 30 min and 2 h after the cell starts secreting, coupled step at
    dt = 10 min, within 5% of the exact semi-discrete solution (constant uptake 1.2/min, so that the reference is
    exact)."""
    c, site = run_constant_uptake(shape, 10.0, t_end)
    exact = semi_discrete_solution(shape, site, t_end, float(np.float32(UPTAKE)))
    k = float(np.float32(UPTAKE))
    assert abs(c[site] / exact[site] - 1.0) < 0.05
    assert abs((1.0 - k * c[site] / SECRETION) / (1.0 - k * exact[site] / SECRETION) - 1.0) < 0.05


def fitted_order(steps, errors):
    return np.polyfit(np.log(steps), np.log(errors), 1)[0]


def test_temporal_order_single_cell():
    """Backward Euler coupled: first order in dt on the stiff case itself (uptake x dt = 12 at dt = 10 min), against
    the exact semi-discrete solution at t = 2 h (2D, 64^2): dt = 10, 5, 2.5, 1.25 min, fitted order of the site error
    and of the relative L2 error in 0.9-1.1."""
    shape, t_end = (64, 64, 1), 120.0
    site = single_cell_case(shape)[0]
    exact = semi_discrete_solution(shape, site, t_end, float(np.float32(UPTAKE)))
    dts, site_err, l2_err = [10.0, 5.0, 2.5, 1.25], [], []
    for dt in dts:
        c, _ = run_constant_uptake(shape, dt, t_end)
        site_err.append(abs(c[site] - exact[site]) / exact[site])
        l2_err.append(np.linalg.norm(c - exact) / np.linalg.norm(exact))
    assert 0.9 <= fitted_order(dts, site_err) <= 1.1, site_err
    assert 0.9 <= fitted_order(dts, l2_err) <= 1.1, l2_err


# ---------------------------------------------------------------------------------------------- wrapper


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"coupled": [True]}, "coupled"),
        ({"coupled": [True, 1]}, "coupled"),
        ({"coupled": "yes"}, "coupled"),
        ({"coupled": 3}, "coupled"),
        ({"rtol": 0.0}, "rtol"),
        ({"rtol": 1.0}, "rtol"),
        ({"rtol": float("nan")}, "rtol"),
        ({"rtol": True}, "rtol"),
        ({"rtol": "1e-8"}, "rtol"),
        ({"max_iterations": 0}, "max_iterations"),
        ({"max_iterations": 2.0}, "max_iterations"),
        ({"max_iterations": True}, "max_iterations"),
    ],
)
def test_constructor_errors(kwargs, name):
    args = {
        "shape_xyz": (4, 3, 2),
        "spacing_um": H,
        "dt_min": 10.0,
        "diffusion_um2_per_min": [6000.0, 3600.0],
        "decay_per_min": [0.1, 0.2],
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        FieldSolver(**args)


def test_options_and_attributes():
    solver = FieldSolver((4, 3, 2), H, 10.0, [6000.0, 3600.0], [0.1, 0.2], coupled=[True, False], rtol=1e-6)
    assert solver.coupled == (True, False)
    assert solver.rtol == 1e-6 and solver.max_iterations == 100
    assert FieldSolver((4, 3), H, 10.0, [6000.0], [0.1]).coupled == (False,)
    assert FieldSolver((4, 3), H, 10.0, [6000.0, 1.0], [0.1, 0.0], coupled=True).coupled == (True, True)
    assert "coupled=(True, False)" in repr(solver)


def test_iteration_cap_raises():
    """max_iterations reached: RuntimeError naming the species, and no vessel marks are left behind."""
    rng = np.random.default_rng(1)
    shape = (30, 30, 1)
    problem = random_problem(rng, shape, 1)
    solver = FieldSolver(shape, H, 10.0, [6000.0], [0.0], coupled=True, rtol=1e-14, max_iterations=1)
    with pytest.raises(RuntimeError, match="species 0"):
        solver.step(problem[0].copy(), *problem[1:])
    assert not solver._vmask.any()


def test_statistics_recorded():
    rng = np.random.default_rng(2)
    shape = (30, 20, 1)
    problem = random_problem(rng, shape, 2)
    solver = FieldSolver(shape, H, 10.0, [6000.0, 3600.0], [0.001, 0.002], coupled=[True, False], rtol=1e-7)
    solver.step(problem[0].copy(), *problem[1:])
    assert solver.last_iterations[0] > 0 and solver.last_iterations[1] == 0
    assert 0.0 < solver.last_residual[0] <= 1e-7 and solver.last_residual[1] == 0.0
    assert solver.last_initial_residual[0] > solver.last_residual[0]


def test_levels_couplings():
    """Hierarchy bookkeeping: shapes halve (rounding up) to one site; full coarse faces couple r (2D) or 2^l r (3D);
    the diagonal sums of level 0 count the faces."""
    lv = ck.build_levels((8, 6, 1), False)
    assert [tuple(s) for s in lv.shape] == [(8, 6, 1), (4, 3, 1), (2, 2, 1), (1, 1, 1)]
    np.testing.assert_array_equal(lv.cpl[:, :2], [[1, 1], [1, 1], [1, 1], [0, 0]])
    lv3 = ck.build_levels((8, 8, 8), True)
    np.testing.assert_array_equal(lv3.cpl[:, 0], [1, 2, 4, 0])
    assert lv3.cdiag[0] == 6.0
    assert ck.build_levels((8, 6, 1), False).cdiag[0] == 2.0
    frac = ck.build_levels((5, 1, 1), False).frac
    np.testing.assert_array_equal(frac[1, 0, :3], [1.0, 1.0, 0.5])
