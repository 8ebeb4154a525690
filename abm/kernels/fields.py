"""Diffusion–reaction kernels: pointwise backward-Euler reaction, then locally one-dimensional backward-Euler diffusion.

Layout: ``c`` is float64 ``(n_species, n_sites)``, C-contiguous, site ``i = x + nx*(y + ny*z)`` (x contiguous).
Every kernel works in place and allocates nothing.

One sweep along an axis solves, for every line along it and every species ``s``, the cell-centred finite-volume system
``(I - r_s L) x = d`` with ``r_s = D_s dt / h^2`` and ``L`` the 1-D three-point Laplacian with no-flux ends (diagonal
``1 + r`` at both ends, ``1 + 2r`` inside, off-diagonals ``-r``) or periodic ends (cyclic). Each column of that matrix
sums to one, so the sweep conserves mass, and it is an M-matrix, so it keeps concentrations non-negative.

Factors (see :func:`thomas_factors`) are precomputed once per species and axis by the caller:

- mode 0: the axis has one site, the sweep is the identity;
- mode 1: Thomas, ``f = 1/pivot`` and ``g = r f``; forward ``d'_i = d_i f_i + g_i d'_{i-1}``, back
  ``x_i = d'_i + g_i x_{i+1}``. Every operation adds non-negative numbers, so positivity holds in floating point.
  (A periodic axis of two sites is mode 1 with ``r`` doubled: both neighbours are the same site.)
- mode 2: cyclic (periodic, ``n >= 3``), solved by eliminating the first unknown: the interior ``1..n-1`` is a
  Dirichlet-like system (factors ``f, g`` at indices ``1..n-1``), ``x_i = y_i + x_0 z_i`` with ``z >= 0`` precomputed,
  ``x_0 = (d_0 + r (y_1 + y_{n-1})) / schur``. Again only non-negative terms are added: no Sherman–Morrison
  cancellation, positivity exact.

Parallel loops run over independent lines (x sweep) or over independent blocks of columns (y and z sweeps, where the
recursion runs over rows/planes with the inner loop over contiguous x). Each line or column is computed by one
thread with the same operations whatever the thread count or block size, so results are bit-identical.
"""

from collections import namedtuple

import numba
import numpy as np

from abm.kernels.config import JIT, PARALLEL

AxisFactors = namedtuple("AxisFactors", ["mode", "f", "g", "z", "r", "inv_schur"])
AxisFactors.__doc__ = """Precomputed tridiagonal factors for one axis, all species.

mode : int (0 identity, 1 Thomas, 2 cyclic); f, g, z : float64 (n_species, n); r, inv_schur : float64 (n_species,).
"""

Reaction = namedtuple("Reaction", ["uptake", "source", "vmask", "perm", "perm_plasma", "decay"])
Reaction.__doc__ = """The site-local terms of one step.

uptake, source : float32 (n_species, n_sites), 1/min and concentration/min; vmask : uint8 (n_sites,), times each site
is listed as a vessel; perm, perm_plasma, decay : float64 (n_species,), P, P * C_plasma and k.
"""


def _pivots(n: int, r: float, closed_ends: bool) -> np.ndarray:
    """Thomas pivots of the n x n matrix tridiag(-r, diag, -r), computed without cancellation.

    ``closed_ends``: diag is ``1 + r`` at both ends (no-flux), else ``1 + 2r`` everywhere (the interior of the cyclic
    system). Uses ``e_i = pivot_i - r``, ``e_i = 1 + r e_{i-1}/pivot_{i-1}``; the no-flux last pivot is
    ``1 + r e_{n-2}/pivot_{n-2}``; the subtraction ``1 + r - r^2/pivot`` never appears.
    """
    piv = np.empty(n)
    e = 1.0 if closed_ends else 1.0 + r
    piv[0] = r + e if n > 1 or not closed_ends else 1.0
    for i in range(1, n):
        t = r * e / piv[i - 1]
        if closed_ends and i == n - 1:
            piv[i] = 1.0 + t
        else:
            e = 1.0 + t
            piv[i] = r + e
    return piv


def _thomas_solve_py(f: np.ndarray, g: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Plain-Python solve with precomputed factors (used only when building factors)."""
    x = np.array(d, dtype=np.float64)
    n = x.shape[0]
    x[0] *= f[0]
    for i in range(1, n):
        x[i] = x[i] * f[i] + g[i] * x[i - 1]
    for i in range(n - 2, -1, -1):
        x[i] += g[i] * x[i + 1]
    return x


def thomas_factors(n: int, r_per_species: np.ndarray, periodic: bool) -> AxisFactors:
    """Precompute the factors of one axis for every species (plain numpy; called once per solver).

    Parameters
    ----------
    n : int
        Sites along the axis.
    r_per_species : float64 (n_species,)
        ``D dt / h^2`` per species (dimensionless), ``>= 0``.
    periodic : bool
        Periodic (cyclic) or no-flux ends.
    """
    r_per_species = np.asarray(r_per_species, dtype=np.float64)
    ns = r_per_species.shape[0]
    f = np.ones((ns, n))
    g = np.zeros((ns, n))
    z = np.zeros((ns, n))
    rr = np.zeros(ns)
    inv_schur = np.ones(ns)
    if n == 1:
        mode = 0
    elif not periodic or n == 2:
        mode = 1
        for s in range(ns):
            r = float(r_per_species[s]) * (2.0 if (periodic and n == 2) else 1.0)
            piv = _pivots(n, r, closed_ends=True)
            f[s] = 1.0 / piv
            g[s] = r * f[s]
            rr[s] = r
    else:
        mode = 2
        for s in range(ns):
            r = float(r_per_species[s])
            piv = _pivots(n - 1, r, closed_ends=False)
            f[s, 1:] = 1.0 / piv
            g[s, 1:] = r * f[s, 1:]
            rhs = np.zeros(n - 1)
            rhs[0] += r
            rhs[-1] += r
            z[s, 1:] = _thomas_solve_py(f[s, 1:], g[s, 1:], rhs)  # >= 0, the response to a unit x_0
            w = _thomas_solve_py(f[s, 1:], g[s, 1:], np.ones(n - 1))  # w = 1 - z, accurate where z is near 1
            inv_schur[s] = 1.0 / (1.0 + r * (w[0] + w[-1]))
            rr[s] = r
    return AxisFactors(mode, f, g, z, rr, inv_schur)


@numba.njit(**JIT)
def mark_vessels(vmask, sites, n_sites):
    """Add one to ``vmask`` (uint8, per site) at every listed site; return -1, or the index of the first bad entry.

    A bad entry (out of range, or a site listed more than 255 times) leaves ``vmask`` unchanged.
    """
    for k in range(sites.shape[0]):
        j = sites[k]
        if j < 0 or j >= n_sites or vmask[j] == 255:
            for kk in range(k):
                vmask[sites[kk]] -= 1
            return k
        vmask[j] += 1
    return -1


@numba.njit(**JIT)
def clear_vessels(vmask, sites):
    """Zero ``vmask`` at the listed sites (validated by :func:`mark_vessels` in the same step)."""
    for k in range(sites.shape[0]):
        vmask[sites[k]] = 0


# Split sweeps with fewer voxel-species updates than this run on one thread (react_sweep_x_serial,
# sweep_strided_serial: the same tasks in the same order, so the same bits). Measured in docs/performance.md
# ("Threads"): below it a 2-thread region costs more than it saves, on a quiet machine and a busy one.
PARALLEL_MIN_UPDATES = 100_000

LINES_PER_TASK = 16  # x lines solved together: independent recursions interleaved to hide the FP latency


@numba.njit(**JIT)
def _react_x_task(task, c, rx, dt, nx, ax, active):
    """Task ``task`` of :func:`react_sweep_x`: one group of ``LINES_PER_TASK`` x lines of one species."""
    task = np.int64(task)
    uptake, source, vmask, perm, perm_plasma, decay = rx
    mode, f, g, z, r, inv_schur = ax
    nlines = c.shape[1] // nx
    ngroups = (nlines + LINES_PER_TASK - 1) // LINES_PER_TASK
    s = task // ngroups
    if active[s] == 0:
        return
    l0 = (task - s * ngroups) * LINES_PER_TASK
    nl = min(LINES_PER_TASK, nlines - l0)
    b = l0 * nx
    e = b + nl * nx
    seg = c[s, b:e]
    up = uptake[s, b:e]
    so = source[s, b:e]
    vm = vmask[b:e]
    k = decay[s]
    p = perm[s]
    pc = perm_plasma[s]
    for i in range(e - b):
        m = np.float64(vm[i])
        seg[i] = (seg[i] + dt * (np.float64(so[i]) + m * pc)) / (1.0 + dt * (k + np.float64(up[i]) + m * p))
    if mode == 0:
        return
    fs = f[s]
    gs = g[s]
    first = 0 if mode == 1 else 1  # the cyclic interior starts at x = 1
    fi = fs[first]
    for ll in range(nl):
        seg[ll * nx + first] = seg[ll * nx + first] * fi
    for i in range(first + 1, nx):
        fi = fs[i]
        gi = gs[i]
        for ll in range(nl):
            j = ll * nx + i
            seg[j] = seg[j] * fi + gi * seg[j - 1]
    for i in range(nx - 2, first - 1, -1):
        gi = gs[i]
        for ll in range(nl):
            j = ll * nx + i
            seg[j] = seg[j] + gi * seg[j + 1]
    if mode == 2:
        zs = z[s]
        rs = r[s]
        isch = inv_schur[s]
        for ll in range(nl):
            j = ll * nx
            x0 = (seg[j] + rs * (seg[j + 1] + seg[j + nx - 1])) * isch
            seg[j] = x0
            for i in range(1, nx):
                seg[j + i] = seg[j + i] + zs[i] * x0


@numba.njit(**PARALLEL)
def react_sweep_x(c, rx, dt, nx, ax, active):
    """Pointwise backward-Euler reaction fused with the implicit x sweep, in place, for the species with
    ``active[s] != 0`` (the others are left untouched).

    Reaction at site j, species s: ``c <- (c + dt*(S + m P Cp)) / (1 + dt*(k + U + m P))`` with ``m = vmask[j]``,
    ``P = perm[s]``, ``P Cp = perm_plasma[s]``, ``k = decay[s]``, ``U = uptake[s, j]``, ``S = source[s, j]``
    (``rx``, a :class:`Reaction`); ``ax`` is the :class:`AxisFactors` of x.
    Tasks are groups of ``LINES_PER_TASK`` consecutive x lines of one species; within a group the Thomas recursion
    runs over x with the inner loop over the lines, so the independent recursions overlap in the pipeline.
    """
    # Only arrays and scalars may cross into a prange body (Numba passes them to a gufunc): unpack, re-pack inside.
    uptake, source, vmask, perm, perm_plasma, decay = rx
    mode, f, g, z, r, inv_schur = ax
    ntasks = c.shape[0] * ((c.shape[1] // nx + LINES_PER_TASK - 1) // LINES_PER_TASK)
    for task in numba.prange(ntasks):
        _react_x_task(
            task, c, (uptake, source, vmask, perm, perm_plasma, decay), dt, nx, (mode, f, g, z, r, inv_schur), active
        )


@numba.njit(**JIT)
def react_sweep_x_serial(c, rx, dt, nx, ax, active):
    """:func:`react_sweep_x` on the calling thread (the same tasks in task order: the same bits)."""
    ntasks = c.shape[0] * ((c.shape[1] // nx + LINES_PER_TASK - 1) // LINES_PER_TASK)
    for task in range(ntasks):
        _react_x_task(task, c, rx, dt, nx, ax, active)


@numba.njit(**JIT)
def _strided_task(task, c, dims, ax, active):
    """Task ``task`` of :func:`sweep_strided`: one (species, outer, block) triple; ``dims = (n_outer, n, n_inner,
    block)``."""
    task = np.int64(task)
    n_outer, n, n_inner, block = dims
    mode, f, g, z, r, inv_schur = ax
    nblocks = (n_inner + block - 1) // block
    per_s = n_outer * nblocks
    s = task // per_s
    if active[s] == 0:
        return
    rem = task - s * per_s
    o = rem // nblocks
    blk = rem - o * nblocks
    lo = o * n * n_inner + blk * block
    w = min(block, n_inner - blk * block)
    row = c[s]
    fs = f[s]
    gs = g[s]
    first = 0 if mode == 1 else 1  # the cyclic interior starts at row 1
    cur = row[lo + first * n_inner : lo + first * n_inner + w]
    fi = fs[first]
    for j in range(w):
        cur[j] = cur[j] * fi
    for i in range(first + 1, n):
        prev = cur
        cur = row[lo + i * n_inner : lo + i * n_inner + w]
        fi = fs[i]
        gi = gs[i]
        for j in range(w):
            cur[j] = cur[j] * fi + gi * prev[j]
    for i in range(n - 2, first - 1, -1):
        nxt = cur
        cur = row[lo + i * n_inner : lo + i * n_inner + w]
        gi = gs[i]
        for j in range(w):
            cur[j] = cur[j] + gi * nxt[j]
    if mode == 2:
        zs = z[s]
        rs = r[s]
        isch = inv_schur[s]
        r0 = row[lo : lo + w]
        r1 = row[lo + n_inner : lo + n_inner + w]
        rl = row[lo + (n - 1) * n_inner : lo + (n - 1) * n_inner + w]
        for j in range(w):
            r0[j] = (r0[j] + rs * (r1[j] + rl[j])) * isch
        for i in range(1, n):
            cur = row[lo + i * n_inner : lo + i * n_inner + w]
            zi = zs[i]
            for j in range(w):
                cur[j] = cur[j] + zi * r0[j]


@numba.njit(**JIT, inline="always")
def _strided_tasks(c, n_outer, n_inner, block):
    return c.shape[0] * n_outer * ((n_inner + block - 1) // block)


@numba.njit(**PARALLEL)
def sweep_strided(c, n_outer, n, n_inner, block, ax, active):
    """Implicit sweep along a non-contiguous axis, in place, for the species with ``active[s] != 0``.

    Each species row of ``c`` is viewed as ``(n_outer, n, n_inner)`` in C order and solved along the middle axis:
    the y sweep is ``(nz, ny, nx)``, the z sweep ``(1, nz, nx*ny)``. The recursion runs over the ``n`` rows with the
    inner loop over a block of ``block`` contiguous columns (kept small enough for the block to stay in cache
    between the forward and the backward pass). Tasks are (species, outer, block) triples. ``ax`` is the
    :class:`AxisFactors` of the axis.
    """
    mode, f, g, z, r, inv_schur = ax
    if mode == 0:
        return
    for task in numba.prange(_strided_tasks(c, n_outer, n_inner, block)):
        _strided_task(task, c, (n_outer, n, n_inner, block), (mode, f, g, z, r, inv_schur), active)


@numba.njit(**JIT)
def sweep_strided_serial(c, n_outer, n, n_inner, block, ax, active):
    """:func:`sweep_strided` on the calling thread (the same tasks in task order: the same bits)."""
    if ax[0] == 0:
        return
    for task in range(_strided_tasks(c, n_outer, n_inner, block)):
        _strided_task(task, c, (n_outer, n, n_inner, block), ax, active)
