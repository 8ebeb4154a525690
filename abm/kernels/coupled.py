"""Coupled backward-Euler diffusion–reaction step: reaction and diffusion in one implicit solve.

For one species over a step ``dt``, with ``c`` the field at the start of the step, the new field ``x`` solves

    A x = b,   A = M - r L,   M_i = 1 + dt (k + U_i + m_i P),   b_i = c_i + dt (S_i + m_i P C_p),   r = D dt / h^2

with ``L`` the cell-centred finite-volume Laplacian in units of ``1/h^2`` (3, 5 or 7 points; no-flux or periodic), ``k``
decay, ``U`` per-site uptake, ``S`` per-site secretion, ``m_i`` the number of times site ``i`` is a vessel, ``P`` the
vessel permeability and ``C_p`` the plasma level. ``A`` is symmetric positive definite and an M-matrix with
eigenvalues ``>= min M >= 1``, so ``A^-1 >= 0`` entrywise and ``||x - x*||_2 <= ||b - A x||_2``.

Solver: conjugate gradients preconditioned by one multigrid V-cycle (:func:`vcycle`), warm-started from ``c``, stopped
when ``||b - A x||_2 <= rtol ||b||_2`` (the recursively updated residual). The hierarchy coarsens every axis with more
than one site by two (``n -> ceil(n/2)``) down to a single site: a coarse cell aggregates its (up to 8) children,
prolongation is piecewise constant and restriction is its transpose (the sum over the children). The coarse site term
is the sum of the children's ``M`` (Galerkin); a coarse face couples ``r * (fine faces across it) / 2``, the
aggregated fine faces halved at every coarsening (piecewise-constant aggregation with Galerkin couplings would double
the diffusion on each coarser level; the factor 1/2 is the usual correction, Braess 1995, and equals re-discretising
the finite-volume operator on the coarse cells). That is one scalar per level and axis (:attr:`Levels.cpl`) times
tensor-product fractions for the smaller last cell of an odd axis (:attr:`Levels.frac`).
The smoother is red–black Gauss–Seidel, ``sweeps`` sweeps before the coarse correction
(red then black) and after it (black then red, each in reverse order), so the V-cycle is a symmetric positive definite
operator and CG applies (e.g. Tatebe 1993).

Non-negativity and mass: after convergence negative entries (at most ``rtol ||b||_2`` in size, since the exact
solution is ``>= 0``) are set to zero, and the field is scaled by ``theta = sum(b) / sum(M x)``, which closes the
discrete balance ``sum(x) + dt sum((k + U + m P) x) = sum(c) + dt sum(S + m P C_p)`` to round-off (the Laplacian sums
to zero over the lattice). ``theta - 1`` is of the order of the solve tolerance.

Determinism: a level is cut into slabs (z planes in 3D, y rows in 2D); parallel loops run over slabs and every
reduction adds per-slab partial sums in slab order. Each Gauss–Seidel update reads only neighbours of the other colour,
except across an odd periodic axis, where two neighbours share a colour; there the two end slabs are one task (and
the x and y ends lie in one slab), updated in a fixed order. Nothing depends on the thread count, so results are
bit-identical for any number of threads. Levels with fewer than ``Control.par_min`` sites (``PARALLEL_MIN_SITES``, or
every level when one thread is in use) run their serial twins on the calling thread.

Layout: ``c`` rows are float64 ``(n_sites,)`` with site ``i = x + nx*(y + ny*z)``. Level ``l`` occupies
``[off[l], off[l+1])`` of the concatenated per-site arrays; level 0 is the lattice. Nothing is allocated per call.

Numba note: writing through a named-tuple field inside ``prange`` (``wk.b[i] = ...``) is silently lost (seen with
Numba 0.68), so parallel kernels bind the arrays they write to local names first.
"""

from collections import namedtuple

import numba
import numpy as np

from abm.kernels.config import JIT, PARALLEL

PARALLEL_MIN_SITES = 16384  # levels smaller than this run on one thread

Levels = namedtuple("Levels", ["shape", "off", "cpl", "frac", "cdiag", "periodic"])
Levels.__doc__ = """The multigrid hierarchy of one lattice (shared by every coupled species).

shape : int64 (n_levels, 3), (nx, ny, nz) per level; the last level is one site.
off : int64 (n_levels + 1,), start of each level in the concatenated per-site arrays.
cpl : float64 (n_levels, 3), face coupling along x, y, z between full coarse cells, in units of ``r`` (1 on level 0;
    0 for an axis of one site).
frac : float64 (n_levels, 3, n_max), per level and axis, the size of each coarse cell along that axis as a fraction of
    a full one (1 except for the last cell of an odd axis). A face normal to x between cells (i, j, k) and (i+1, j, k)
    couples ``cpl_x frac_y[j] frac_z[k]`` (and so on): the aggregated fine faces across it, halved per level.
cdiag : float64 (n_total,), sum of the couplings of the faces of each site (the diagonal of ``-L``, units of ``r``).
periodic : int64, 1 if every axis is periodic.
"""

Work = namedtuple("Work", ["b", "r", "z", "p", "q", "mass", "diag", "invd", "xc", "bc", "partial", "rows"])
Work.__doc__ = """Scratch of one coupled species, allocated once.

b, r, z, p, q : float64 (n_sites,), right-hand side, residual, preconditioned residual, search direction, A p.
mass, diag, invd : float64 (n_total,), site term M, diagonal of A and its inverse, on every level.
xc, bc : float64 (n_total - n_sites,), correction and right-hand side on the coarse levels.
partial : float64 (n_slabs,), per-slab partial sums of the level-0 reductions.
rows : float64 (NUMBA_NUM_THREADS, nx), one row of scratch per thread: a half-sweep or a residual row is computed
    for every column into it (a contiguous loop LLVM vectorises), then the columns of one colour are kept.
"""

#: A right-hand side with ||b||_2 below this (in the species' unit) is taken as zero. Its squares and those of the
#: Krylov vectors reach the subnormal range (about 1e-308), where p.Ap underflows to 0 and CG divides by it: a field
#: decayed for weeks after a course's last dose (IL-2 levels near 1e-155 pM) made the solve return NaN.
NEGLIGIBLE_RHS = 1e-140

Control = namedtuple("Control", ["rtol", "max_iterations", "sweeps", "par_min"])
Control.__doc__ = """rtol : float, relative residual target; max_iterations : int; sweeps : int, smoothing sweeps;
par_min : int, levels with fewer sites run on one thread (:data:`PARALLEL_MIN_SITES`, or more than any level when
only one thread is in use, so no parallel region is entered at all)."""

SiteTerms = namedtuple("SiteTerms", ["uptake", "source", "vmask"])
SiteTerms.__doc__ = """uptake, source : float32 (n_species, n_sites), 1/min and conc/min; vmask : uint8 (n_sites,)."""

# columns of the per-species coefficient row
C_DT, C_R, C_DECAY, C_PERM, C_PERM_PLASMA = range(5)


# ----------------------------------------------------------------------------------------------- building (numpy)


def _faces(n: int, periodic: bool) -> np.ndarray:
    """Faces of each site along an axis of n sites (a periodic axis of 2 has two faces, both to the other site)."""
    if n == 1:
        return np.zeros(1)
    f = np.full(n, 2.0)
    if not periodic:
        f[0] = f[-1] = 1.0
    return f


def build_levels(shape: tuple[int, int, int], periodic: bool) -> Levels:
    """The aggregation hierarchy of a lattice: shapes, offsets, coupling factors and diagonal sums per level."""
    shapes = [tuple(int(v) for v in shape)]
    while np.prod(shapes[-1]) > 1:
        shapes.append(tuple((n + 1) // 2 for n in shapes[-1]))
    sizes = [int(np.prod(s)) for s in shapes]
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    cpl = np.zeros((len(shapes), 3))
    cpl[0] = [1.0 if n > 1 else 0.0 for n in shapes[0]]
    for lvl in range(1, len(shapes)):
        fine, coarse = shapes[lvl - 1], shapes[lvl]
        for a in range(3):
            if coarse[a] == 1:
                continue
            grown = sum(1 for b in range(3) if b != a and fine[b] > 1)  # cross-section axes that aggregate pairs
            cpl[lvl, a] = cpl[lvl - 1, a] * 0.5 * 2.0**grown
    n_max = max(shapes[0])
    frac = np.zeros((len(shapes), 3, n_max))
    counts = [np.ones(n) for n in shapes[0]]  # level-0 sites per cell along each axis
    full = [1.0, 1.0, 1.0]
    for lvl, sh in enumerate(shapes):
        if lvl > 0:
            for a in range(3):
                if shapes[lvl - 1][a] > 1:
                    counts[a] = np.add.reduceat(counts[a], np.arange(0, shapes[lvl - 1][a], 2))
                    full[a] *= 2.0
        for a in range(3):
            frac[lvl, a, : sh[a]] = counts[a] / full[a]
    cdiag = np.zeros(int(off[-1]))
    for lvl, (nx, ny, nz) in enumerate(shapes):
        fx, fy, fz = (_faces(n, periodic) for n in (nx, ny, nz))
        ax = frac[lvl, 0, :nx][None, None, :]
        ay = frac[lvl, 1, :ny][None, :, None]
        az = frac[lvl, 2, :nz][:, None, None]
        d = (
            cpl[lvl, 0] * fx[None, None, :] * ay * az
            + cpl[lvl, 1] * fy[None, :, None] * ax * az
            + cpl[lvl, 2] * fz[:, None, None] * ax * ay
        )
        cdiag[off[lvl] : off[lvl + 1]] = d.ravel()
    return Levels(np.array(shapes, dtype=np.int64), off, cpl, frac, cdiag, np.int64(1 if periodic else 0))


def make_work(levels: Levels) -> Work:
    """Scratch for one species (allocated once, by the caller's constructor)."""
    n0 = int(levels.off[1])
    nt = int(levels.off[-1])
    nx, ny, nz = (int(v) for v in levels.shape[0])
    n_slabs = nz if nz > 1 else ny
    vec = [np.zeros(n0) for _ in range(5)]
    rows = np.zeros((numba.config.NUMBA_NUM_THREADS, nx))
    return Work(
        *vec, np.zeros(nt), np.zeros(nt), np.zeros(nt), np.zeros(nt - n0), np.zeros(nt - n0), np.zeros(n_slabs), rows
    )


# ----------------------------------------------------------------------------------------------- row helpers


@numba.njit(**JIT, inline="always")
def _n_slabs(nx, ny, nz):
    return nz if nz > 1 else ny


@numba.njit(**JIT, inline="always")
def _slab_rows(sl, ny, nz):
    """(z0, z1, y0, y1): the rows of slab ``sl``."""
    if nz > 1:
        return sl, sl + 1, 0, ny
    return 0, 1, sl, sl + 1


@numba.njit(**JIT, inline="always")
def _row(y, z, nx, ny, nz, per, cw, fr):
    """Row (y, z): (base, ym, yp, zm, zp, gx, gym, gyp, gzm, gzp): the start of the row and of its -y, +y, -z, +z
    neighbour rows, the x coupling along the row and the y, z couplings (to be multiplied by ``fr[0, x]``), 0 where a
    neighbour does not exist (the row then points at itself). ``cw`` = couplings (x, y, z) times r, ``fr`` = frac."""
    sy = nx
    sz = nx * ny
    base = nx * (y + ny * z)
    ay = fr[1, y]
    az = fr[2, z]
    gx = cw[0] * ay * az
    cy = cw[1] * az
    cz = cw[2] * ay
    ym = yp = zm = zp = base
    gym = gyp = gzm = gzp = 0.0
    if ny > 1:
        if y > 0:
            ym, gym = base - sy, cy
        elif per:
            ym, gym = base + (ny - 1) * sy, cy
        if y < ny - 1:
            yp, gyp = base + sy, cy
        elif per:
            yp, gyp = base - (ny - 1) * sy, cy
    if nz > 1:
        if z > 0:
            zm, gzm = base - sz, cz
        elif per:
            zm, gzm = base + (nz - 1) * sz, cz
        if z < nz - 1:
            zp, gzp = base + sz, cz
        elif per:
            zp, gzp = base - (nz - 1) * sz, cz
    return base, ym, yp, zm, zp, gx, gym, gyp, gzm, gzp


@numba.njit(**JIT, inline="always")
def _nb_end(v, fx, rw, x, nx, per):
    """sum of coupling * neighbour value at an end column x (0 or nx - 1) of row ``rw``; ``fx`` = frac[0]."""
    base, ym, yp, zm, zp, cx, gym, gyp, gzm, gzp = rw
    s = fx[x] * (gym * v[ym + x] + gyp * v[yp + x] + gzm * v[zm + x] + gzp * v[zp + x])
    if nx == 1:
        return s
    i = base + x
    t = 0.0
    if x > 0:
        t += v[i - 1]
    elif per:
        t += v[base + nx - 1]
    if x < nx - 1:
        t += v[i + 1]
    elif per:
        t += v[base]
    return s + cx * t


@numba.njit(**JIT, inline="always")
def _dot_range(a, b, lo, hi):
    """sum a[i] b[i] over [lo, hi) with four interleaved accumulators, combined in a fixed order."""
    a0 = a1 = a2 = a3 = 0.0
    i = lo
    while i + 4 <= hi:
        a0 += a[i] * b[i]
        a1 += a[i + 1] * b[i + 1]
        a2 += a[i + 2] * b[i + 2]
        a3 += a[i + 3] * b[i + 3]
        i += 4
    while i < hi:
        a0 += a[i] * b[i]
        i += 1
    return (a0 + a1) + (a2 + a3)


@numba.njit(**JIT)
def _sum_partials(partial, n):
    s = 0.0
    for k in range(n):
        s += partial[k]
    return s


@numba.njit(**JIT)
def _odd_periodic(shape, per):
    """True if some periodic axis has an odd number (>= 3) of sites, so that neighbours can share a colour."""
    if per == 0:
        return False
    for a in range(3):
        if shape[a] >= 3 and shape[a] % 2 == 1:
            return True
    return False


# ----------------------------------------------------------------------------------------------- smoother
#
# A level is described to the kernels by ``grid = (shape, per, cw, fr)``: its (nx, ny, nz), the periodic flag, the
# couplings (x, y, z) times r between full cells, and its ``frac`` table (see :class:`Levels`).


@numba.njit(**JIT, inline="always")
def _relax_row(arrs, fx, rw, nx, per, start, rev, tb):
    """Gauss–Seidel update ``x_i = (b_i + sum g x_nb) / A_ii`` (``arrs = (x, b, invd)``) of columns start,
    start + 2, ... of one row, descending if ``rev``; the end columns go through :func:`_nb_end` (in order: across
    an odd periodic x axis they are neighbours of one colour), the interior through a row of scratch ``tb``."""
    if start > nx - 1:
        return
    x, b, invd = arrs
    base, ym, yp, zm, zp, cx, gym, gyp, gzm, gzp = rw
    last = start + 2 * ((nx - 1 - start) // 2)
    lo = start if start > 0 else 2
    hi = last if last < nx - 1 else last - 2
    first_end = start == 0
    last_end = last == nx - 1 and nx > 1
    if first_end and not rev:
        x[base] = (b[base] + _nb_end(x, fx, rw, 0, nx, per)) * invd[base]
    if last_end and rev:
        i = base + nx - 1
        x[i] = (b[i] + _nb_end(x, fx, rw, nx - 1, nx, per)) * invd[i]
    if hi >= lo:
        # 1-D views of the row and its neighbour rows: simple indexing, which LLVM schedules far better
        xr, br, ir = x[base : base + nx], b[base : base + nx], invd[base : base + nx]
        xym, xyp, xzm, xzp = x[ym : ym + nx], x[yp : yp + nx], x[zm : zm + nx], x[zp : zp + nx]
        # Every interior column is computed from the old row (a contiguous loop that LLVM vectorises; strided, it
        # does not), then the columns of this colour are stored. An updated interior column reads only
        # other-colour values (x +- 1 of its row, the same column of other rows), so this is the Gauss–Seidel
        # update bit for bit, in either order.
        # (The loop runs over 1..nx-2, not lo..hi: Numba wraps negative indices, and only a start it can see is
        # >= 1 lets LLVM drop that check and vectorise: 0.9 against 6.3 ns per site on 75^3.)
        for xx in range(1, nx - 1):
            s = gym * xym[xx] + gyp * xyp[xx] + gzm * xzm[xx] + gzp * xzp[xx]
            tb[xx] = (br[xx] + cx * (xr[xx - 1] + xr[xx + 1]) + fx[xx] * s) * ir[xx]
        xo, to = xr[lo:], tb[lo:]  # indices 2j >= 0: no negative-index check in the loop
        for j in range((hi - lo) // 2 + 1):
            xo[2 * j] = to[2 * j]
    if last_end and not rev:
        i = base + nx - 1
        x[i] = (b[i] + _nb_end(x, fx, rw, nx - 1, nx, per)) * invd[i]
    if first_end and rev:
        x[base] = (b[base] + _nb_end(x, fx, rw, 0, nx, per)) * invd[base]


@numba.njit(**JIT, inline="always")
def _relax_tasks(nx, ny, nz, per):
    """(n_slabs, n_tasks): an odd periodic slab axis pairs its first and last slab in task 0."""
    ns = _n_slabs(nx, ny, nz)
    pair = per != 0 and ns >= 3 and ns % 2 == 1
    return ns, ns - 1 if pair else ns


@numba.njit(**JIT)
def _relax_task(t, grid, arrs, colour, rev, tb):
    """Gauss–Seidel half-sweep (one colour) over the slab(s) of task t; forward order is ascending z, y, x and
    ``rev`` reverses it, including the two slabs of a paired task 0."""
    t = np.int64(t)
    shape, per, cw, fr = grid
    nx, ny, nz = shape[0], shape[1], shape[2]
    fx = fr[0]
    ns, nt = _relax_tasks(nx, ny, nz, per)
    for k in range(2):
        if k == 1 and (nt == ns or t != 0):
            break
        sl = t
        if nt != ns and t == 0:
            sl = (ns - 1 if k == 0 else 0) if rev else (0 if k == 0 else ns - 1)
        z0, z1, y0, y1 = _slab_rows(sl, ny, nz)
        for jz in range(z1 - z0):
            zz = z1 - 1 - jz if rev else z0 + jz
            for jy in range(y1 - y0):
                yy = y1 - 1 - jy if rev else y0 + jy
                rw = _row(yy, zz, nx, ny, nz, per, cw, fr)
                _relax_row(arrs, fx, rw, nx, per, (colour + yy + zz) & 1, rev, tb)


@numba.njit(**PARALLEL)
def _relax_par(grid, arrs, colour, rev, rows):
    # Only arrays and scalars may cross into a prange body (Numba passes them to a gufunc): unpack, re-pack inside.
    shape, per, cw, fr = grid
    cx, cy, cz = cw
    x, b, invd = arrs
    ns, nt = _relax_tasks(shape[0], shape[1], shape[2], per)
    for t in numba.prange(nt):
        _relax_task(t, (shape, per, (cx, cy, cz), fr), (x, b, invd), colour, rev, rows[numba.get_thread_id()])


@numba.njit(**JIT)
def _relax_ser(grid, arrs, colour, rev, rows):
    shape = grid[0]
    ns, nt = _relax_tasks(shape[0], shape[1], shape[2], grid[1])
    for t in range(nt):
        _relax_task(t, grid, arrs, colour, rev, rows[0])


@numba.njit(**JIT)
def _first_red_task(sl, shape, arrs):
    """The first (red) half-sweep from x = 0: x = b / A_ii on red sites, 0 on black ones (no neighbour is read)."""
    sl = np.int64(sl)
    x, b, invd = arrs
    nx, ny, nz = shape[0], shape[1], shape[2]
    z0, z1, y0, y1 = _slab_rows(sl, ny, nz)
    for zz in range(z0, z1):
        for yy in range(y0, y1):
            base = nx * (yy + ny * zz)
            for xx in range(nx):
                x[base + xx] = 0.0
            for xx in range((yy + zz) & 1, nx, 2):
                i = base + xx
                x[i] = b[i] * invd[i]


@numba.njit(**PARALLEL)
def _first_red_par(shape, arrs):
    x, b, invd = arrs
    for sl in numba.prange(_n_slabs(shape[0], shape[1], shape[2])):
        _first_red_task(sl, shape, (x, b, invd))


@numba.njit(**JIT)
def _first_red_ser(shape, arrs):
    for sl in range(_n_slabs(shape[0], shape[1], shape[2])):
        _first_red_task(sl, shape, arrs)


@numba.njit(**JIT)
def _smooth(grid, arrs, par, sweeps, rev, from_zero, rows):
    """``sweeps`` red–black sweeps; forward: red then black; ``rev``: black then red, each in reverse order.
    ``from_zero``: x is taken as 0 on entry (the first red half-sweep then reads no neighbours)."""
    shape, per = grid[0], grid[1]
    for sw in range(sweeps):
        for k in range(2):
            colour = (1 - k) if rev else k
            if sw == 0 and k == 0 and from_zero:
                if _odd_periodic(shape, per):
                    arrs[0][:] = 0.0  # same-colour neighbours: the half-sweep reads updated values, do it in full
                elif par:
                    _first_red_par(shape, arrs)
                    continue
                else:
                    _first_red_ser(shape, arrs)
                    continue
            if par:
                _relax_par(grid, arrs, colour, rev, rows)
            else:
                _relax_ser(grid, arrs, colour, rev, rows)


# ----------------------------------------------------------------------------------------------- grid transfers


@numba.njit(**JIT, inline="always")
def _resid_row_add(arrs, fxr, rw, nx, per, start, step, dst):
    """out[cb + x // 2] += (b - A x)_x for x = start, start + step, ... of one fine row; ``arrs = (x, b, diag)``,
    ``dst = (out, cb, tb)``, ``tb`` a row of scratch (the interior residuals, all columns, then added by step)."""
    if start > nx - 1:
        return
    fx, fb, fdiag = arrs
    out, cb, tb = dst
    base, ym, yp, zm, zp, cx, gym, gyp, gzm, gzp = rw
    if start == 0:
        out[cb] += fb[base] - fdiag[base] * fx[base] + _nb_end(fx, fxr, rw, 0, nx, per)
    lo = start if start > 0 else step
    last = start + step * ((nx - 1 - start) // step)
    hi = last if last < nx - 1 else last - step
    if hi >= lo:
        xr, br, dr = fx[base : base + nx], fb[base : base + nx], fdiag[base : base + nx]
        xym, xyp, xzm, xzp = fx[ym : ym + nx], fx[yp : yp + nx], fx[zm : zm + nx], fx[zp : zp + nx]
        oc = out[cb : cb + (nx + 1) // 2]
        for xx in range(1, nx - 1):  # contiguous, from 1 (vectorised, see _relax_row); then added in the same order
            s = gym * xym[xx] + gyp * xyp[xx] + gzm * xzm[xx] + gzp * xzp[xx]
            tb[xx] = br[xx] - dr[xx] * xr[xx] + cx * (xr[xx - 1] + xr[xx + 1]) + fxr[xx] * s
        if step == 1:
            for xx in range(lo, hi + 1):
                oc[xx // 2] += tb[xx]
        else:  # lo and the coarse cell lo // 2 advance together
            oo, to = oc[lo // 2 :], tb[lo:]
            for j in range((hi - lo) // 2 + 1):
                oo[j] += to[2 * j]
    if last == nx - 1 and nx > 1:
        i = base + nx - 1
        out[cb + (nx - 1) // 2] += fb[i] - fdiag[i] * fx[i] + _nb_end(fx, fxr, rw, nx - 1, nx, per)


@numba.njit(**JIT)
def _restrict_task(cs, grid, cshape, arrs, only, out, tb):
    """Coarse slab ``cs``: out[I] = sum over the children i of I of the residual (b - A x)_i (``arrs = (x, b,
    diag)`` of the fine level), children in ascending (z, y, x) order. ``only`` >= 0 adds the children of that colour
    only: right after a Gauss–Seidel half-sweep of the other colour the residual there is zero (in exact arithmetic),
    so those children add nothing."""
    cs = np.int64(cs)
    shape, per, cw, fr = grid
    nx, ny, nz = shape[0], shape[1], shape[2]
    cxn, cyn = cshape[0], cshape[1]
    fxr = fr[0]
    kz0, kz1, ky0, ky1 = _slab_rows(cs, cyn, cshape[2])
    for kz in range(kz0, kz1):
        for ky in range(ky0, ky1):
            cb = cxn * (ky + cyn * kz)
            for kx in range(cxn):
                out[cb + kx] = 0.0
            for zz in range(2 * kz, min(2 * kz + 2, nz)):
                for yy in range(2 * ky, min(2 * ky + 2, ny)):
                    rw = _row(yy, zz, nx, ny, nz, per, cw, fr)
                    if only < 0:
                        _resid_row_add(arrs, fxr, rw, nx, per, 0, 1, (out, cb, tb))
                    else:
                        _resid_row_add(arrs, fxr, rw, nx, per, (only + yy + zz) & 1, 2, (out, cb, tb))


@numba.njit(**PARALLEL)
def _restrict_par(grid, cshape, arrs, only, out, rows):
    shape, per, cw, fr = grid
    cx, cy, cz = cw
    x, b, diag = arrs
    for cs in numba.prange(_n_slabs(cshape[0], cshape[1], cshape[2])):
        tb = rows[numba.get_thread_id()]
        _restrict_task(cs, (shape, per, (cx, cy, cz), fr), cshape, (x, b, diag), only, out, tb)


@numba.njit(**JIT)
def _restrict_ser(grid, cshape, arrs, only, out, rows):
    for cs in range(_n_slabs(cshape[0], cshape[1], cshape[2])):
        _restrict_task(cs, grid, cshape, arrs, only, out, rows[0])


@numba.njit(**JIT)
def _prolong_task(cs, fx, cxv, fshape, cshape):
    """x_fine[i] += x_coarse[parent(i)] for the fine sites whose parents lie in coarse slab ``cs``."""
    cs = np.int64(cs)
    nx, ny, nz = fshape[0], fshape[1], fshape[2]
    cxn, cyn = cshape[0], cshape[1]
    kz0, kz1, ky0, ky1 = _slab_rows(cs, cyn, cshape[2])
    for kz in range(kz0, kz1):
        for ky in range(ky0, ky1):
            cb = cxn * (ky + cyn * kz)
            for zz in range(2 * kz, min(2 * kz + 2, nz)):
                for yy in range(2 * ky, min(2 * ky + 2, ny)):
                    base = nx * (yy + ny * zz)
                    for xx in range(nx):
                        fx[base + xx] += cxv[cb + xx // 2]


@numba.njit(**PARALLEL)
def _prolong_par(fx, cxv, fshape, cshape):
    for cs in numba.prange(_n_slabs(cshape[0], cshape[1], cshape[2])):
        _prolong_task(cs, fx, cxv, fshape, cshape)


@numba.njit(**JIT)
def _prolong_ser(fx, cxv, fshape, cshape):
    for cs in range(_n_slabs(cshape[0], cshape[1], cshape[2])):
        _prolong_task(cs, fx, cxv, fshape, cshape)


@numba.njit(**JIT)
def _mass_task(cs, fm, fshape, cshape, cm):
    """cm[I] = sum of fm over the children of I, for the coarse cells of coarse slab ``cs``."""
    cs = np.int64(cs)
    nx, ny, nz = fshape[0], fshape[1], fshape[2]
    cxn, cyn = cshape[0], cshape[1]
    kz0, kz1, ky0, ky1 = _slab_rows(cs, cyn, cshape[2])
    for kz in range(kz0, kz1):
        for ky in range(ky0, ky1):
            cb = cxn * (ky + cyn * kz)
            for kx in range(cxn):
                cm[cb + kx] = 0.0
            for zz in range(2 * kz, min(2 * kz + 2, nz)):
                for yy in range(2 * ky, min(2 * ky + 2, ny)):
                    base = nx * (yy + ny * zz)
                    for xx in range(nx):
                        cm[cb + xx // 2] += fm[base + xx]


@numba.njit(**PARALLEL)
def _mass_par(fm, fshape, cshape, cm):
    for cs in numba.prange(_n_slabs(cshape[0], cshape[1], cshape[2])):
        _mass_task(cs, fm, fshape, cshape, cm)


@numba.njit(**JIT)
def _mass_ser(fm, fshape, cshape, cm):
    for cs in range(_n_slabs(cshape[0], cshape[1], cshape[2])):
        _mass_task(cs, fm, fshape, cshape, cm)


# ----------------------------------------------------------------------------------------------- the V-cycle


@numba.njit(**JIT)
def _level_vectors(lv, wk, l):
    """(x, b) of level l: the preconditioner's output z and input r on level 0, coarse scratch otherwise."""
    n0 = lv.off[1]
    o = lv.off[l]
    e = lv.off[l + 1]
    if l == 0:
        return wk.z, wk.r
    return wk.xc[o - n0 : e - n0], wk.bc[o - n0 : e - n0]


@numba.njit(**JIT)
def _grid(lv, l, rs):
    return (lv.shape[l], lv.periodic, (rs * lv.cpl[l, 0], rs * lv.cpl[l, 1], rs * lv.cpl[l, 2]), lv.frac[l])


@numba.njit(**JIT)
def vcycle(lv, wk, rs, sweeps, par_min):
    """z = B r: one symmetric V-cycle from a zero guess (B is symmetric positive definite)."""
    nl = lv.shape.shape[0]
    n0 = lv.off[1]
    if nl == 1:
        for i in range(n0):
            wk.z[i] = wk.r[i] * wk.invd[i]
        return
    for l in range(nl - 1):  # down: smooth, restrict the residual
        o = lv.off[l]
        e = lv.off[l + 1]
        x, b = _level_vectors(lv, wk, l)
        grid = _grid(lv, l, rs)
        par = e - o >= par_min
        _smooth(grid, (x, b, wk.invd[o:e]), par, sweeps, False, True, wk.rows)
        out = _level_vectors(lv, wk, l + 1)[1]
        only = -1 if _odd_periodic(grid[0], grid[1]) else 0  # the forward sweep ends with black: red residuals remain
        if par:
            _restrict_par(grid, lv.shape[l + 1], (x, b, wk.diag[o:e]), only, out, wk.rows)
        else:
            _restrict_ser(grid, lv.shape[l + 1], (x, b, wk.diag[o:e]), only, out, wk.rows)
    oc = lv.off[nl - 1]  # the coarsest level is one site without couplings
    wk.xc[oc - n0] = wk.bc[oc - n0] * wk.invd[oc]
    for l in range(nl - 2, -1, -1):  # up: prolong, smooth in reverse
        o = lv.off[l]
        e = lv.off[l + 1]
        x, b = _level_vectors(lv, wk, l)
        cxv = _level_vectors(lv, wk, l + 1)[0]
        par = e - o >= par_min
        if par:
            _prolong_par(x, cxv, lv.shape[l], lv.shape[l + 1])
        else:
            _prolong_ser(x, cxv, lv.shape[l], lv.shape[l + 1])
        _smooth(_grid(lv, l, rs), (x, b, wk.invd[o:e]), par, sweeps, True, False, wk.rows)


# ----------------------------------------------------------------------------------------------- level-0 vector ops
#
# Level-0 operations run over the slabs of the lattice in parallel (``_par``) or, for lattices smaller than
# ``PARALLEL_MIN_SITES``, on one thread (``_ser``); both call the same per-slab task, so they give the same bits.
# Reductions write one partial sum per slab and add them in slab order.

OP_DOT, OP_UPDATE_XR, OP_UPDATE_P, OP_CLIP, OP_SCALE = range(5)


@numba.njit(**JIT)
def _vec_task(sl, op, arrs, alpha, partial):
    """Pointwise operation ``op`` on slab ``sl`` of level-0 vectors ``arrs = (a, b, c, d)``:

    OP_DOT: partial = a . b; OP_UPDATE_XR: a += alpha b, c -= alpha d, partial = c . c (x, p, r, q);
    OP_UPDATE_P: a = b + alpha a (p, z); OP_CLIP: a = max(a, 0), partial = b . a (x, M); OP_SCALE: a *= alpha.
    """
    sl = np.int64(sl)
    a, b, c, d = arrs
    m = a.shape[0] // partial.shape[0]
    lo = sl * m
    hi = lo + m
    if op == OP_DOT:
        partial[sl] = _dot_range(a, b, lo, hi)
    elif op == OP_UPDATE_XR:
        for i in range(lo, hi):
            a[i] += alpha * b[i]
            c[i] -= alpha * d[i]
        partial[sl] = _dot_range(c, c, lo, hi)
    elif op == OP_UPDATE_P:
        for i in range(lo, hi):
            a[i] = b[i] + alpha * a[i]
    elif op == OP_CLIP:
        for i in range(lo, hi):
            if a[i] < 0.0:
                a[i] = 0.0
        partial[sl] = _dot_range(b, a, lo, hi)
    else:
        for i in range(lo, hi):
            a[i] *= alpha


@numba.njit(**PARALLEL)
def _vec_par(op, arrs, alpha, partial):
    a, b, c, d = arrs
    for sl in numba.prange(partial.shape[0]):
        _vec_task(sl, op, (a, b, c, d), alpha, partial)
    return _sum_partials(partial, partial.shape[0])


@numba.njit(**JIT)
def _vec_ser(op, arrs, alpha, partial):
    for sl in range(partial.shape[0]):
        _vec_task(sl, op, arrs, alpha, partial)
    return _sum_partials(partial, partial.shape[0])


@numba.njit(**JIT)
def _vec(par, op, arrs, alpha, partial):
    if par:
        return _vec_par(op, arrs, alpha, partial)
    return _vec_ser(op, arrs, alpha, partial)


@numba.njit(**JIT)
def _apply_a_task(sl, grid, arrs, resid, partial):
    """Slab ``sl`` of level 0 (``arrs = (diag, p, b, q)``): q = b - A p and partial = q . q if ``resid``, else
    q = A p (``b`` unused) and partial = q . p, with ``(A p)_i = A_ii p_i - r sum p_nb``."""
    sl = np.int64(sl)
    shape, per, cw, fr = grid
    diag, p, b, q = arrs
    nx, ny, nz = shape[0], shape[1], shape[2]
    fxr = fr[0]
    z0, z1, y0, y1 = _slab_rows(sl, ny, nz)
    for zz in range(z0, z1):
        for yy in range(y0, y1):
            rw = _row(yy, zz, nx, ny, nz, per, cw, fr)
            base, ym, yp, zm, zp, cx, gym, gyp, gzm, gzp = rw
            pr, dr, br, qr = p[base : base + nx], diag[base : base + nx], b[base : base + nx], q[base : base + nx]
            pym, pyp, pzm, pzp = p[ym : ym + nx], p[yp : yp + nx], p[zm : zm + nx], p[zp : zp + nx]
            if resid:
                for xx in range(1, nx - 1):
                    s = gym * pym[xx] + gyp * pyp[xx] + gzm * pzm[xx] + gzp * pzp[xx]
                    qr[xx] = br[xx] - (dr[xx] * pr[xx] - cx * (pr[xx - 1] + pr[xx + 1]) - fxr[xx] * s)
            else:
                for xx in range(1, nx - 1):
                    s = gym * pym[xx] + gyp * pyp[xx] + gzm * pzm[xx] + gzp * pzp[xx]
                    qr[xx] = dr[xx] * pr[xx] - cx * (pr[xx - 1] + pr[xx + 1]) - fxr[xx] * s
            for xx in range(0, nx, max(nx - 1, 1)):  # the end columns 0 and nx - 1
                i = base + xx
                ap = diag[i] * p[i] - _nb_end(p, fxr, rw, xx, nx, per)
                q[i] = b[i] - ap if resid else ap
    lo = nx * (y0 + ny * z0)
    hi = nx * (y1 + ny * (z1 - 1))
    partial[sl] = _dot_range(q, q, lo, hi) if resid else _dot_range(q, p, lo, hi)


@numba.njit(**PARALLEL)
def _apply_a_par(grid, arrs, resid, partial):
    shape, per, cw, fr = grid
    cx, cy, cz = cw
    diag, p, b, q = arrs
    for sl in numba.prange(partial.shape[0]):
        _apply_a_task(sl, (shape, per, (cx, cy, cz), fr), (diag, p, b, q), resid, partial)
    return _sum_partials(partial, partial.shape[0])


@numba.njit(**JIT)
def _apply_a_ser(grid, arrs, resid, partial):
    for sl in range(partial.shape[0]):
        _apply_a_task(sl, grid, arrs, resid, partial)
    return _sum_partials(partial, partial.shape[0])


@numba.njit(**JIT)
def _apply_a(par, grid, arrs, resid, partial):
    if par:
        return _apply_a_par(grid, arrs, resid, partial)
    return _apply_a_ser(grid, arrs, resid, partial)


# ----------------------------------------------------------------------------------------------- assembly, solve


@numba.njit(**JIT)
def _assemble_task(sl, cf, src, dst, partial):
    """Slab ``sl`` of level 0: M = 1 + dt (k + U + m P), b = c + dt (S + m P Cp), A_ii = M + r cdiag and 1 / A_ii;
    partial = sum b. ``cf`` = coefficient row, ``src = (c, U, S, vmask, cdiag)``, ``dst = (M, b, A_ii, 1/A_ii)``."""
    sl = np.int64(sl)
    c, up, so, vm, cd = src
    mass_a, b_a, diag_a, invd_a = dst
    dt, rs, k, p, pc = cf[C_DT], cf[C_R], cf[C_DECAY], cf[C_PERM], cf[C_PERM_PLASMA]
    m_ = c.shape[0] // partial.shape[0]
    acc = 0.0
    for i in range(sl * m_, sl * m_ + m_):
        m = np.float64(vm[i])
        mass = 1.0 + dt * (k + np.float64(up[i]) + m * p)
        mass_a[i] = mass
        bi = c[i] + dt * (np.float64(so[i]) + m * pc)
        b_a[i] = bi
        acc += bi
        d = mass + rs * cd[i]
        diag_a[i] = d
        invd_a[i] = 1.0 / d
    partial[sl] = acc


@numba.njit(**PARALLEL)
def _assemble_par(cf, src, dst, partial):
    c, up, so, vm, cd = src
    mass_a, b_a, diag_a, invd_a = dst
    for sl in numba.prange(partial.shape[0]):
        _assemble_task(sl, cf, (c, up, so, vm, cd), (mass_a, b_a, diag_a, invd_a), partial)
    return _sum_partials(partial, partial.shape[0])


@numba.njit(**JIT)
def _assemble_ser(cf, src, dst, partial):
    for sl in range(partial.shape[0]):
        _assemble_task(sl, cf, src, dst, partial)
    return _sum_partials(partial, partial.shape[0])


@numba.njit(**JIT)
def _assemble0(c, s, terms, coef, lv, wk, par_min):
    """Level 0 of the system (see :func:`_assemble_task`); returns sum b."""
    n0 = lv.off[1]
    src = (c, terms.uptake[s], terms.source[s], terms.vmask, lv.cdiag[:n0])
    dst = (wk.mass[:n0], wk.b, wk.diag[:n0], wk.invd[:n0])
    if n0 >= par_min:
        return _assemble_par(coef, src, dst, wk.partial)
    return _assemble_ser(coef, src, dst, wk.partial)


@numba.njit(**JIT)
def _assemble_coarse(rs, lv, wk, par_min):
    """Coarse levels: M summed over the children, A_ii = M + r cdiag."""
    nl = lv.shape.shape[0]
    for l in range(nl - 1):
        o = lv.off[l]
        oc = lv.off[l + 1]
        e = lv.off[l + 2]
        if oc - o >= par_min:
            _mass_par(wk.mass[o:oc], lv.shape[l], lv.shape[l + 1], wk.mass[oc:e])
        else:
            _mass_ser(wk.mass[o:oc], lv.shape[l], lv.shape[l + 1], wk.mass[oc:e])
        for i in range(oc, e):
            d = wk.mass[i] + rs * lv.cdiag[i]
            wk.diag[i] = d
            wk.invd[i] = 1.0 / d


@numba.njit(**JIT)
def solve(c, s, terms, coef, lv, wk, ctrl, stats):
    """Advance row ``c`` (species ``s``) by one coupled backward-Euler step, in place (``c`` is also the warm start).

    ``coef``: float64 (5,) = (dt, r, decay, P, P Cp) of this species. ``stats`` (float64 (3,)) receives the
    iterations, the initial and the final relative residual. Returns 0 when converged, 1 when ``max_iterations``
    was reached (then ``c`` holds the last iterate, neither clipped nor balanced).
    """
    rs = coef[C_R]
    n0 = lv.off[1]
    par = n0 >= ctrl.par_min
    pt = wk.partial
    grid = _grid(lv, 0, rs)
    diag = wk.diag[:n0]
    sum_b = _assemble0(c, s, terms, coef, lv, wk, ctrl.par_min)
    _assemble_coarse(rs, lv, wk, ctrl.par_min)
    bn = np.sqrt(_vec(par, OP_DOT, (wk.b, wk.b, wk.b, wk.b), 0.0, pt))
    stats[0] = 0.0
    stats[1] = 0.0
    stats[2] = 0.0
    if bn < NEGLIGIBLE_RHS:  # nothing left, or so little that the Krylov dot products would underflow
        c[:] = 0.0
        return 0
    rn = np.sqrt(_apply_a(par, grid, (diag, c, wk.b, wk.r), True, pt))
    stats[1] = rn / bn
    target = ctrl.rtol * bn
    it = 0
    status = 0
    if rn > target:
        vcycle(lv, wk, rs, ctrl.sweeps, ctrl.par_min)
        rz = _vec(par, OP_DOT, (wk.r, wk.z, wk.r, wk.r), 0.0, pt)
        wk.p[:] = wk.z
        while True:
            pq = _apply_a(par, grid, (diag, wk.p, wk.p, wk.q), False, pt)
            alpha = rz / pq
            rn = np.sqrt(_vec(par, OP_UPDATE_XR, (c, wk.p, wk.r, wk.q), alpha, pt))
            it += 1
            if rn <= target:
                break
            if it >= ctrl.max_iterations:
                status = 1
                break
            vcycle(lv, wk, rs, ctrl.sweeps, ctrl.par_min)
            rz_new = _vec(par, OP_DOT, (wk.r, wk.z, wk.r, wk.r), 0.0, pt)
            _vec(par, OP_UPDATE_P, (wk.p, wk.z, wk.p, wk.p), rz_new / rz, pt)
            rz = rz_new
    stats[0] = it
    stats[2] = rn / bn
    if status == 0:
        smx = _vec(par, OP_CLIP, (c, wk.mass[:n0], c, c), 0.0, pt)
        if smx > 0.0:
            _vec(par, OP_SCALE, (c, c, c, c), sum_b / smx, pt)
    return status
