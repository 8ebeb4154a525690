"""Tests of the diffusion–reaction field solver (abm.field_solver.FieldSolver, abm.kernels.fields).

Tolerances and why (see docs/solver.md):
- against a dense reference (numpy.linalg.solve of the same split scheme): 1e-10 relative, round-off only;
- mass: 1e-12 relative (round-off of O(n) additions; every 1-D matrix has unit column sums);
- Gaussian pulse, resolved (h = 20 um, sigma 40 -> 100 um, 100 sub-steps): relative L2 error < 1.5% (2D measures
  0.87%, 3D 1.1%: O((h/sigma)^2) space error plus the O(dt) splitting/backward-Euler error);
- Gaussian pulse at production settings (dt = 10 min, D = 6000 um^2/min, sigma0 = 200 um, 12 steps): < 5% (split 3.8%,
  coupled 4.9%: backward Euler of the whole operator damps smooth modes slightly more than the LOD product);
- the Gaussian and point-source tests run for both schemes (split, and coupled: abm.kernels.coupled);
- point source with uptake (L = 4h): split-scheme steady state at dt = 0.005 min, and coupled-scheme steady state at
  dt = 10 min, vs K0 / exp(-r/L)/r for 3h..8h (2D) and 4h..8h (3D) from the source, boundary 20h away;
- convergence: fitted order in h within 1.9–2.1 (time error removed by Richardson extrapolation in dt), in dt within
  0.9–1.1 (measured against the exact semi-discrete solution, so no space error enters).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import k0

try:
    from abm.field_solver import FieldSolver
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from abm.field_solver import FieldSolver

NO_VESSELS = np.zeros(0, dtype=np.int64)
H = 20.0


def zeros_s(ns: int) -> np.ndarray:
    return np.zeros(ns)


def run(
    solver: FieldSolver,
    conc: np.ndarray,
    nsteps: int,
    uptake=None,
    source=None,
    vessels=NO_VESSELS,
    perm=None,
    plasma=None,
) -> np.ndarray:
    ns = solver.n_species
    perm = zeros_s(ns) if perm is None else perm
    plasma = zeros_s(ns) if plasma is None else plasma
    for _ in range(nsteps):
        solver.step(conc, uptake, source, vessels, perm, plasma)
    return conc


def centred_coords(shape: tuple[int, int, int], h: float, origin: tuple[float, float, float]) -> np.ndarray:
    """Squared distance from ``origin`` of every cell centre, flat in site order."""
    nx, ny, nz = shape
    z, y, x = np.meshgrid(
        (np.arange(nz) + 0.5) * h, (np.arange(ny) + 0.5) * h, (np.arange(nx) + 0.5) * h, indexing="ij"
    )
    return ((x - origin[0]) ** 2 + (y - origin[1]) ** 2 + (z - origin[2]) ** 2).ravel()


# ---------------------------------------------------------------------------------------------- dense reference


def _axis_matrix(n: int, r: float, periodic: bool) -> np.ndarray:
    a = np.eye(n)
    for i in range(n):
        for j in (i - 1, i + 1):
            if periodic:
                j %= n
            elif j < 0 or j >= n:
                continue
            if j != i:
                a[i, i] += r
                a[i, j] -= r
    return a


def reference_step(conc, uptake, source, vessels, perm, plasma, decay, diff, dt, h, shape, periodic):
    """The split scheme written the obvious way: pointwise BE reaction, then dense 1-D solves along x, y, z."""
    nx, ny, nz = shape
    out = conc.copy()
    m = np.zeros(conc.shape[1])
    np.add.at(m, vessels, 1.0)
    for s in range(conc.shape[0]):
        v = (conc[s] + dt * (source[s].astype(np.float64) + m * perm[s] * plasma[s])) / (
            1.0 + dt * (decay[s] + uptake[s].astype(np.float64) + m * perm[s])
        )
        g = v.reshape(nz, ny, nx)
        r = diff[s] * dt / h**2
        for axis, n in ((2, nx), (1, ny), (0, nz)):
            moved = np.moveaxis(g, axis, 0)
            solved = np.linalg.solve(_axis_matrix(n, r, periodic), moved.reshape(n, -1)).reshape(moved.shape)
            g = np.moveaxis(solved, 0, axis)
        out[s] = g.ravel()
    return out


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


@hsettings
@given(
    shape=shapes,
    ns=st.integers(1, 3),
    periodic=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    dt=st.sampled_from([0.05, 1.0, 10.0]),
    substeps=st.integers(1, 2),
)
def test_matches_dense_reference(shape, ns, periodic, seed, dt, substeps):
    rng = np.random.default_rng(seed)
    diff = rng.random(ns) * 18000.0
    decay = rng.random(ns) * 0.01
    conc, uptake, source, vessels, perm, plasma = random_problem(rng, shape, ns)
    solver = FieldSolver(shape, H, dt, diff, decay, periodic=periodic, substeps=substeps)
    expected = conc.copy()
    for _ in range(substeps):
        expected = reference_step(
            expected, uptake, source, vessels, perm, plasma, decay, diff, dt / substeps, H, shape, periodic
        )
    solver.step(conc, uptake, source, vessels, perm, plasma)
    np.testing.assert_allclose(conc, expected, rtol=1e-10, atol=1e-12 * np.abs(expected).max())


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
    conc = rng.random((ns, int(np.prod(shape)))) * (rng.random((ns, int(np.prod(shape)))) < 0.5)
    conc[:, 0] += 1.0
    mass0 = conc.sum(axis=1)
    solver = FieldSolver(shape, H, dt, diff, np.zeros(ns), periodic=periodic)
    run(solver, conc, nsteps)
    np.testing.assert_allclose(conc.sum(axis=1), mass0, rtol=1e-12, atol=0)


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
    solver = FieldSolver(shape, H, dt, diff, decay, periodic=periodic)
    for _ in range(3):
        solver.step(conc, uptake, source, vessels, perm, plasma)
        assert np.all(np.isfinite(conc))
        assert np.all(conc >= 0.0)


def test_non_negative_single_spike_large_r():
    """A lone spike at r = D dt / h^2 = 450 (drug at dt = 10 min) stays >= 0 everywhere, closed and periodic."""
    for periodic in (False, True):
        solver = FieldSolver((30, 20, 10), H, 10.0, [18000.0], [0.0], periodic=periodic)
        conc = np.zeros((1, solver.n_sites))
        conc[0, 1234] = 1e-300
        conc[0, 7] = 1e6
        run(solver, conc, 2)
        assert np.all(conc >= 0.0)
        np.testing.assert_allclose(conc.sum(), 1e6 + 1e-300, rtol=1e-12)


@hsettings
@given(
    nx=st.integers(1, 8),
    ny=st.integers(1, 8),
    ns=st.integers(1, 3),
    periodic=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_2d_equals_3d_with_nz_1(nx, ny, ns, periodic, seed):
    rng = np.random.default_rng(seed)
    diff = rng.random(ns) * 18000.0
    decay = rng.random(ns) * 0.01
    problem = random_problem(rng, (nx, ny, 1), ns)
    a = FieldSolver((nx, ny), H, 10.0, diff, decay, periodic=periodic)
    b = FieldSolver((nx, ny, 1), H, 10.0, diff, decay, periodic=periodic)
    out = []
    for solver in (a, b):
        conc = problem[0].copy()
        solver.step(conc, *problem[1:])
        out.append(conc)
    assert a.ndim == b.ndim == 2
    assert np.array_equal(out[0], out[1])


@pytest.mark.parametrize("periodic", [False, True])
def test_field_uniform_across_axes_reduces_to_1d(periodic):
    """Data constant along y and z: the 3D answer equals the 1-D (nx, 1, 1) answer on every line (to round-off)."""
    rng = np.random.default_rng(3)
    nx, ny, nz = 17, 6, 5
    line = random_problem(rng, (nx, 1, 1), 2)
    vessels_1d = np.unique(line[3])
    one = FieldSolver((nx, 1, 1), H, 10.0, [6000.0, 18000.0], [0.001, 0.002], periodic=periodic)
    full = FieldSolver((nx, ny, nz), H, 10.0, [6000.0, 18000.0], [0.001, 0.002], periodic=periodic)

    def tile(arr):
        return np.ascontiguousarray(np.tile(arr, (1, ny * nz)))

    c1 = line[0].copy()
    one.step(c1, line[1], line[2], vessels_1d, line[4], line[5])
    c3 = tile(line[0])
    vessels_3d = (vessels_1d[None, :] + nx * np.arange(ny * nz)[:, None]).ravel().astype(np.int64)
    full.step(c3, tile(line[1]), tile(line[2]), vessels_3d, line[4], line[5])
    np.testing.assert_allclose(c3, tile(c1), rtol=1e-12, atol=1e-13 * c1.max())


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs at least 2 Numba threads")
@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("shape", [(40, 30, 20), (200, 150, 1), (5, 300, 7)])
def test_thread_count_independent(shape, periodic):
    rng = np.random.default_rng(11)
    problem = random_problem(rng, shape, 3)
    solver = FieldSolver(shape, H, 10.0, [6000.0, 3600.0, 18000.0], [0.0017, 0.004, 0.006], periodic=periodic)
    before = numba.get_num_threads()
    results = []
    try:
        for nt in (1, 2):
            numba.set_num_threads(nt)
            conc = problem[0].copy()
            for _ in range(2):
                solver.step(conc, *problem[1:])
            results.append(conc)
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(results[0], results[1])


@hsettings
@given(shape=shapes, periodic=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_thread_count_independent_random(shape, periodic, seed):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs at least 2 Numba threads")
    rng = np.random.default_rng(seed)
    problem = random_problem(rng, shape, 2)
    solver = FieldSolver(shape, H, 10.0, [6000.0, 18000.0], [0.001, 0.0], periodic=periodic)
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


def test_substeps_equal_repeated_small_steps():
    rng = np.random.default_rng(5)
    shape = (12, 7, 5)
    problem = random_problem(rng, shape, 2)
    a = FieldSolver(shape, H, 10.0, [6000.0, 18000.0], [0.01, 0.02], substeps=4)
    b = FieldSolver(shape, H, 2.5, [6000.0, 18000.0], [0.01, 0.02])
    ca, cb = problem[0].copy(), problem[0].copy()
    a.step(ca, *problem[1:])
    for _ in range(4):
        b.step(cb, *problem[1:])
    assert np.array_equal(ca, cb)


# ---------------------------------------------------------------------------------------------- reactions, vessels


def test_decay_alone_is_backward_euler_exactly():
    k, dt, c0, n = 0.0385, 10.0, 7.25, 50
    solver = FieldSolver((1, 1, 1), H, dt, [6000.0], [k])
    conc = np.array([[c0]])
    expected = c0
    for _ in range(n):
        solver.step(conc, None, None, NO_VESSELS, np.zeros(1), np.zeros(1))
        expected = expected / (1.0 + dt * k)
    assert conc[0, 0] == expected
    np.testing.assert_allclose(conc[0, 0], c0 * (1.0 + k * dt) ** -n, rtol=1e-13)
    # and on a uniform field with diffusion (the diffusion of a constant is the identity up to round-off)
    solver = FieldSolver((9, 8, 7), H, dt, [18000.0, 60.0], [k, 2 * k], periodic=False)
    conc = np.full((2, solver.n_sites), c0)
    run(solver, conc, n)
    np.testing.assert_allclose(conc[0], c0 * (1.0 + k * dt) ** -n, rtol=1e-12)
    np.testing.assert_allclose(conc[1], c0 * (1.0 + 2 * k * dt) ** -n, rtol=1e-12)


def test_vessel_exchange_relaxes_to_plasma_at_backward_euler_rate():
    p, cp, dt, c0, n = 0.3, 5.0, 10.0, 1.0, 8
    solver = FieldSolver((1, 1, 1), H, dt, [6000.0], [0.0])
    conc = np.array([[c0]])
    perm, plasma = np.array([p]), np.array([cp])
    site = np.array([0], dtype=np.int64)
    run(solver, conc, n, vessels=site, perm=perm, plasma=plasma)
    np.testing.assert_allclose(conc[0, 0], cp + (c0 - cp) * (1.0 + p * dt) ** -n, rtol=1e-13)
    # a uniform field whose every site is a vessel relaxes the same way
    solver = FieldSolver((6, 5, 4), H, dt, [6000.0, 18000.0], [0.0, 0.0], periodic=True)
    conc = np.full((2, solver.n_sites), c0)
    perm2, plasma2 = np.array([p, 2 * p]), np.array([cp, 0.5 * cp])
    run(solver, conc, n, vessels=np.arange(solver.n_sites, dtype=np.int64), perm=perm2, plasma=plasma2)
    for s in range(2):
        np.testing.assert_allclose(conc[s], plasma2[s] + (c0 - plasma2[s]) * (1.0 + perm2[s] * dt) ** -n, rtol=1e-12)
    # a site listed twice exchanges twice: same as doubling P
    a = FieldSolver((1, 1, 1), H, dt, [0.0], [0.0])
    ca, cb = np.array([[c0]]), np.array([[c0]])
    a.step(ca, None, None, np.array([0, 0], dtype=np.int64), perm, plasma)
    a.step(cb, None, None, site, 2 * perm, plasma)
    np.testing.assert_allclose(ca, cb, rtol=1e-15)


def test_vessel_mask_is_cleared_between_steps():
    solver = FieldSolver((4, 4, 1), H, 1.0, [0.0], [0.0])
    conc = np.zeros((1, 16))
    solver.step(conc, None, None, np.array([3], dtype=np.int64), np.array([1.0]), np.array([1.0]))
    assert conc[0, 3] > 0 and np.count_nonzero(conc) == 1
    solver.step(conc, None, None, NO_VESSELS, np.array([1.0]), np.array([1.0]))
    assert np.count_nonzero(conc) == 1
    assert not solver._vmask.any()


# ---------------------------------------------------------------------------------------------- analytic solutions


def gaussian_error(n, ndim, d, sigma0, t_end, nsteps, substeps, coupled=False):
    shape = (n, n, n if ndim == 3 else 1)
    solver = FieldSolver(shape, H, t_end / nsteps, [d], [0.0], substeps=substeps, coupled=coupled)
    centre = n * H / 2
    r2 = centred_coords(shape, H, (centre, centre, centre if ndim == 3 else H / 2))

    def g(sig2):
        return np.exp(-r2 / (2 * sig2)) / (2 * np.pi * sig2) ** (ndim / 2)

    conc = g(sigma0**2)[None, :].copy()
    run(solver, conc, nsteps)
    exact = g(sigma0**2 + 2 * d * t_end)
    return np.linalg.norm(conc[0] - exact) / np.linalg.norm(exact)


@pytest.mark.parametrize("coupled", [False, True], ids=["split", "coupled"])
@pytest.mark.parametrize(("ndim", "n", "tol"), [(2, 64, 0.015), (3, 48, 0.015)])
def test_gaussian_pulse_resolved(ndim, n, tol, coupled):
    """sigma 40 -> 100 um on h = 20 um, D = 6000 um^2/min (0.7 min, 100 sub-steps); domain +-4.8 sigma or more.
    Both schemes: the coupled one has no splitting error, only O(h^2) + O(dt) (see docs/solver.md)."""
    d = 6000.0
    err = gaussian_error(n, ndim, d, 40.0, (100.0**2 - 40.0**2) / (2 * d), 1, 100, coupled)
    assert err < tol


@pytest.mark.parametrize("coupled", [False, True], ids=["split", "coupled"])
def test_gaussian_pulse_production_step(coupled):
    """At the agent step (dt = 10 min, r = 150) a pulse wider than sqrt(D dt) spreads correctly: 12 steps, 2 h."""
    err = gaussian_error(400, 2, 6000.0, 200.0, 120.0, 12, 1, coupled)
    assert err < 0.05


def point_source_errors(ndim, n, dt, t_end, rmin, rmax, coupled=False):
    d, length = 6000.0, 80.0
    shape = (n, n, n if ndim == 3 else 1)
    solver = FieldSolver(shape, H, dt, [d], [0.0], coupled=coupled)
    uptake = np.full((1, solver.n_sites), d / length**2, dtype=np.float32)
    k = float(uptake[0, 0])  # the float32 value actually used
    centre = n // 2
    site = centre + n * centre + (n * n * centre if ndim == 3 else 0)
    source = np.zeros((1, solver.n_sites), dtype=np.float32)
    source[0, site] = 100.0  # concentration units / min at one site: q = S h^ndim amount / min
    q = 100.0 * H**ndim
    conc = np.zeros((1, solver.n_sites))
    run(solver, conc, int(round(t_end / dt)), uptake=uptake, source=source)
    c0 = (centre + 0.5) * H
    r = np.sqrt(centred_coords(shape, H, (c0, c0, c0 if ndim == 3 else H / 2)))
    ell = np.sqrt(d / k)
    sel = (r >= rmin) & (r <= rmax)
    rs = r[sel]
    exact = q / (2 * np.pi * d) * k0(rs / ell) if ndim == 2 else q / (4 * np.pi * d * rs) * np.exp(-rs / ell)
    rel = np.abs(conc[0, sel] - exact) / exact
    return rel.max(), np.sqrt(np.mean(rel**2))


def test_point_source_steady_state_2d():
    """L = sqrt(D/k) = 80 um = 4h; 81x81 lattice, 20 min (k t = 19) at dt = 0.005 min; 3h <= r <= 8h."""
    worst, rms = point_source_errors(2, 81, 0.005, 20.0, 3 * H, 8 * H)
    assert worst < 0.03 and rms < 0.015


def test_point_source_steady_state_3d():
    """As 2D on 41^3; 4h <= r <= 8h (the LOD splitting error is largest next to the source)."""
    worst, rms = point_source_errors(3, 41, 0.005, 20.0, 4 * H, 8 * H)
    assert worst < 0.09 and rms < 0.025


@pytest.mark.parametrize(("ndim", "n", "rmin", "tols"), [(2, 81, 3 * H, (0.03, 0.015)), (3, 41, 4 * H, (0.09, 0.025))])
def test_point_source_steady_state_coupled_at_the_agent_step(ndim, n, rmin, tols):
    """The same analytic comparison, limits and ranges as the two tests above, but with the coupled step at the agent
    step dt = 10 min (k dt = 9.4): it reaches the exact steady state of the discrete operator (20 steps, each damping
    the transient by at least 1 / (1 + k dt)), so only the space error is left (2D measures 1.5% / 0.8%, 3D 4.4% /
    1.2%)."""
    worst, rms = point_source_errors(ndim, n, 10.0, 200.0, rmin, 8 * H, coupled=True)
    assert worst < tols[0] and rms < tols[1]


# ---------------------------------------------------------------------------------------------- convergence


def fitted_order(steps, errors):
    return np.polyfit(np.log(steps), np.log(errors), 1)[0]


def cosine_mode(shape, modes):
    """A product of Neumann eigenmodes cos(pi m (i + 1/2) / n) along each axis, flat in site order."""
    out = np.ones(shape[::-1])
    for axis, (n, m) in enumerate(zip(shape, modes)):
        v = np.cos(np.pi * m * (np.arange(n) + 0.5) / n)
        out = out * v.reshape([-1 if a == 2 - axis else 1 for a in range(3)])
    return out.ravel()


@pytest.mark.parametrize(("ndim", "ns_grid"), [(2, (16, 32, 64)), (3, (8, 16, 32))])
def test_convergence_order_in_space(ndim, ns_grid):
    """Closed box of side 640 um, mode (1, 2[, 1]), D = 6000, decay 0.5 /min, D lambda T = 1; the O(dt) error is
    removed by Richardson extrapolation (2 u_{2N} - u_N, N = 400), leaving the O(h^2) space error."""
    side, d, k = 640.0, 6000.0, 0.5
    modes = (1, 2, 1) if ndim == 3 else (1, 2, 0)
    lam = sum((np.pi * m / side) ** 2 for m in modes)
    t_end = 1.0 / (d * lam)
    errors, hs = [], []
    for n in ns_grid:
        h = side / n
        shape = (n, n, n if ndim == 3 else 1)
        mode = cosine_mode(shape, modes)
        u = []
        for nsteps in (400, 800):
            solver = FieldSolver(shape, h, t_end / nsteps, [d], [k])
            conc = mode[None, :].copy()
            run(solver, conc, nsteps)
            u.append(conc[0])
        extrapolated = 2 * u[1] - u[0]
        exact = mode * np.exp(-(d * lam + k) * t_end)
        errors.append(np.linalg.norm(extrapolated - exact) / np.linalg.norm(exact))
        hs.append(h)
    order = fitted_order(hs, errors)
    assert 1.9 <= order <= 2.1, (order, errors)


def test_convergence_order_in_time():
    """Fixed 32x32 lattice, h = 20 um; vs the exact semi-discrete solution (mean + Neumann mode, decay, uniform
    uptake and source), dt = T/10, T/20, T/40 with (D lambda_h + k) T ~ 1.3: order 1 expected."""
    n, d, k, u, s = 32, 6000.0, 0.2, 0.1, 3.0
    shape = (n, n, 1)
    modes = (1, 2, 0)
    lam_h = sum(4 / H**2 * np.sin(np.pi * m / (2 * n)) ** 2 for m in modes)
    t_end = 1.0 / (d * lam_h)
    mean0, amp0 = 2.0, 1.0
    mode = cosine_mode(shape, modes)
    kk = k + float(np.float32(u))
    mean_exact = s / kk + (mean0 - s / kk) * np.exp(-kk * t_end)
    exact = mean_exact + amp0 * mode * np.exp(-(d * lam_h + kk) * t_end)
    errors, dts = [], []
    for nsteps in (10, 20, 40):
        dt = t_end / nsteps
        solver = FieldSolver(shape, H, dt, [d], [k])
        conc = (mean0 + amp0 * mode)[None, :].copy()
        uptake = np.full((1, solver.n_sites), u, dtype=np.float32)
        source = np.full((1, solver.n_sites), s, dtype=np.float32)
        run(solver, conc, nsteps, uptake=uptake, source=source)
        errors.append(np.linalg.norm(conc[0] - exact) / np.linalg.norm(exact))
        dts.append(dt)
    order = fitted_order(dts, errors)
    assert 0.9 <= order <= 1.1, (order, errors)


# ---------------------------------------------------------------------------------------------- wrapper errors


def good_args(solver):
    ns, n = solver.n_species, solver.n_sites
    return {
        "conc": np.zeros((ns, n)),
        "uptake_per_min": np.zeros((ns, n), dtype=np.float32),
        "source_per_min": np.zeros((ns, n), dtype=np.float32),
        "vessel_sites": np.array([0, n - 1], dtype=np.int64),
        "vessel_exchange_per_min": np.ones(ns),
        "plasma": np.ones(ns),
    }


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"diffusion_um2_per_min": [6000.0, -1.0]}, "diffusion_um2_per_min"),
        ({"diffusion_um2_per_min": [6000.0, np.nan]}, "diffusion_um2_per_min"),
        ({"decay_per_min": [0.1]}, "decay_per_min"),
        ({"decay_per_min": [0.1, -0.1]}, "decay_per_min"),
        ({"shape_xyz": (4, 0, 1)}, "shape_xyz"),
        ({"shape_xyz": (4, 3, 2, 1)}, "shape_xyz"),
        ({"spacing_um": 0.0}, "spacing_um"),
        ({"dt_min": -1.0}, "dt_min"),
        ({"substeps": 0}, "substeps"),
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


@pytest.mark.parametrize(
    ("key", "value", "name"),
    [
        ("conc", np.zeros((2, 24), dtype=np.float32), "conc"),
        ("conc", np.zeros((2, 23)), "conc"),
        ("conc", np.zeros((24, 2)).T, "conc"),
        ("uptake_per_min", np.zeros((2, 24)), "uptake_per_min"),
        ("uptake_per_min", np.zeros((2, 25), dtype=np.float32), "uptake_per_min"),
        ("source_per_min", np.zeros((1, 24), dtype=np.float32), "source_per_min"),
        ("source_per_min", np.zeros((24, 2), dtype=np.float32).T, "source_per_min"),
        ("vessel_sites", np.array([0, 1], dtype=np.int32), "vessel_sites"),
        ("vessel_sites", np.array([0, 24], dtype=np.int64), "vessel_sites"),
        ("vessel_sites", np.array([-1], dtype=np.int64), "vessel_sites"),
        ("vessel_exchange_per_min", np.array([1.0, -1.0]), "vessel_exchange_per_min"),
        ("vessel_exchange_per_min", np.ones(3), "vessel_exchange_per_min"),
        ("plasma", np.ones(2, dtype=np.float32), "plasma"),
        ("plasma", np.array([1.0, np.inf]), "plasma"),
    ],
)
def test_step_errors(key, value, name):
    solver = FieldSolver((4, 3, 2), H, 10.0, [6000.0, 3600.0], [0.1, 0.2])
    args = good_args(solver)
    args[key] = value
    with pytest.raises(ValueError, match=name):
        solver.step(**args)
    assert not solver._vmask.any()  # a rejected step leaves no vessel marks behind


def test_step_check_values():
    solver = FieldSolver((4, 3, 2), H, 10.0, [6000.0, 3600.0], [0.1, 0.2])
    args = good_args(solver)
    args["uptake_per_min"][1, 5] = -1.0
    with pytest.raises(ValueError, match="uptake_per_min"):
        solver.step(**args, check_values=True)


def test_none_means_zero():
    rng = np.random.default_rng(2)
    solver = FieldSolver((5, 4, 3), H, 10.0, [6000.0, 3600.0], [0.1, 0.2])
    args = good_args(solver)
    args["conc"] = rng.random((2, solver.n_sites))
    conc = args["conc"].copy()
    solver.step(**args)
    solver.step(conc, None, None, args["vessel_sites"], args["vessel_exchange_per_min"], args["plasma"])
    assert np.array_equal(conc, args["conc"])
