"""Coupled backward-Euler diffusion–reaction step: reaction and diffusion in one implicit solve.

For one species over a step ``dt``, with ``c`` the field at the start of the step, the new field ``x`` solves

    A x = b,   A = M - r L,   M_i = 1 + dt (k + U_i + m_i P),   b_i = c_i + dt (S_i + m_i P C_p),   r = D dt / h^2

with ``L`` the cell-centred finite-volume Laplacian in units of ``1/h^2`` (3, 5 or 7 points; no-flux or periodic), ``k``
decay, ``U`` per-site uptake, ``S`` per-site secretion, ``m_i`` the number of times site ``i`` is a vessel, ``P`` the
vessel permeability and ``C_p`` the plasma level. ``A`` is symmetric positive definite and an M-matrix with
eigenvalues ``>= min M >= 1``, so ``A^-1 >= 0`` entrywise and ``||x - x*||_2 <= ||b - A x||_2``.

Solver: conjugate gradients preconditioned by one multigrid V-cycle (:func:`vcycle`), warm-started from ``c``, stopped
when ``||b - A x||_2 <= rtol ||b||_2`` (the recursively updated residual). The hierarchy coarsens every axis by two
(``n -> ceil(n/2)``) down to one site by aggregation: a coarse cell is the sum of its (up to 8) children, prolongation
is piecewise constant and restriction its transpose (the sum). Coarse operators are Galerkin for the site term ``M``
(children summed) and the aggregated face couplings halved (the usual scaling that makes piecewise-constant
aggregation consistent with re-discretisation on the ``2h`` grid for a second-order operator; Braess 1995). The
smoother is red–black Gauss–Seidel, ``sweeps`` sweeps before (red then black) and after (black then red, in reverse
site order), so the V-cycle is a symmetric positive definite operator and CG applies.

Non-negativity and mass: after convergence negative entries (at most ``rtol ||b||_2`` in size, since the exact
solution is ``>= 0``) are set to zero and the field is scaled by ``theta = sum(b) / sum(M x)``, which closes the
discrete balance ``sum(x) + dt sum((k + U + m P) x) = sum(c) + dt sum(S + m P C_p)`` to round-off (the Laplacian
sums to zero over the lattice). ``theta - 1`` is of the order of the solve tolerance.

Determinism: every pointwise update of the smoother reads neighbours of the other colour, or (odd periodic axes, where
two neighbours share a colour) is done by the same task in a fixed order; dot products are summed over fixed blocks of
``DOT_BLOCK`` sites and then over blocks in order. Nothing depends on the thread count, so results are bit-identical
for any number of threads. Levels with fewer than ``PARALLEL_MIN_SITES`` sites run their loops on one thread (the
same operations in the same order).

Layout: ``c`` rows are float64 ``(n_sites,)`` with site ``i = x + nx*(y + ny*z)``. Level ``l`` occupies
``[off[l], off[l+1])`` of the concatenated per-site arrays; level 0 is the lattice. Nothing is allocated per call.
"""

from collections import namedtuple

import numba
import numpy as np

from abm.kernels.config import JIT, PARALLEL

DOT_BLOCK = 4096  # sites per partial sum of a dot product (fixed: independent of the thread count)
PARALLEL_MIN_SITES = 16384  # levels smaller than this run on one thread
COARSE_COUPLING_SCALE = 0.5  # aggregated face couplings are halved at each coarsening

Levels = namedtuple("Levels", ["shape", "off", "w", "cdiag", "periodic"])
Levels.__doc__ = """The multigrid hierarchy of one lattice (shared by every coupled species).

shape : int64 (n_levels, 3), (nx, ny, nz) per level; the last level is one site.
off : int64 (n_levels + 1,), start of each level in the concatenated per-site arrays.
w : float64 (3, n_total), face coupling from each site to its +x / +y / +z neighbour in units of ``r`` (level 0: 1,
    or 0 at a no-flux end; coarse levels: halved sums of the fine faces they aggregate).
cdiag : float64 (n_total,), the sum of the couplings of every face of a site (the diagonal of ``-L``).
periodic : int64, 1 if every axis is periodic.
"""

Work = namedtuple("Work", ["b", "r", "z", "p", "q", "mass", "diag", "invd", "xc", "bc", "partial"])
Work.__doc__ = """Scratch of one coupled species, allocated once.

b, r, z, p, q : float64 (n_sites,), right-hand side, residual, preconditioned residual, search direction, A p.
mass, diag, invd : float64 (n_total,), site term M, diagonal of A and its inverse, on every level.
xc, bc : float64 (n_total - n_sites,), correction and right-hand side on the coarse levels.
partial : float64 (n_blocks,), per-block partial sums of dot products.
"""

Control = namedtuple("Control", ["rtol", "max_iterations", "sweeps"])
Control.__doc__ = """rtol : float, relative residual target; max_iterations : int; sweeps : int, smoothing sweeps."""

SiteTerms = namedtuple("SiteTerms", ["uptake", "source", "vmask"])
SiteTerms.__doc__ = """uptake, source : float32 (n_species, n_sites), 1/min and conc/min; vmask : uint8 (n_sites,)."""

# coefficient columns of the per-species ``coef`` row
C_DT, C_R, C_DECAY, C_PERM, C_PERM_PLASMA = range(5)


# ----------------------------------------------------------------------------------------------- building (numpy)


def _level_shapes(shape: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    shapes = [tuple(int(v) for v in shape)]
    while np.prod(shapes[-1]) > 1:
        shapes.append(tuple((n + 1) // 2 for n in shapes[-1]))
    return shapes


def _cdiag(w3: np.ndarray, shape: tuple[int, int, int], periodic: bool) -> np.ndarray:
    """Sum of the couplings of both faces of every site along every axis with more than one site."""
    nx, ny, nz = shape
    out = np.zeros((nz, ny, nx))
    for a, n in enumerate(shape):
        if n == 1:
            continue
        wa = w3[a].reshape(nz, ny, nx)
        ax = 2 - a  # numpy axis of lattice axis a in (z, y, x) order
        left = np.roll(wa, 1, axis=ax)  # the face between i-1 and i; at index 0 the wrap face (stored at n-1)
        if not periodic:
            idx = [slice(None)] * 3
            idx[ax] = 0
            left[tuple(idx)] = 0.0
        out += wa + left
    return out.ravel()


def build_levels(shape: tuple[int, int, int], periodic: bool) -> Levels:
    """The aggregation hierarchy of a lattice: shapes, offsets, unit face couplings and their diagonal sums."""
    shapes = _level_shapes(shape)
    sizes = [int(np.prod(s)) for s in shapes]
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    w = np.zeros((3, int(off[-1])))
    cdiag = np.zeros(int(off[-1]))
    prev = None
    for lvl, sh in enumerate(shapes):
        nx, ny, nz = sh
        w3 = np.zeros((3, nz, ny, nx))
        for a, n in enumerate(sh):
            if n == 1:
                continue
            ax = 2 - a
            if lvl == 0:
                wa = np.ones((nz, ny, nx))
                if not periodic:
                    idx = [slice(None)] * 3
                    idx[ax] = n - 1
                    wa[tuple(idx)] = 0.0
            else:
                fine_shape = shapes[lvl - 1]
                fw = prev[a]  # (nz, ny, nx) of the fine level
                nf = fine_shape[a]
                last = np.minimum(2 * np.arange(n) + 1, nf - 1)  # the last fine child of each coarse cell along a
                wa = np.take(fw, last, axis=ax)
                for b_ in range(3):  # sum the children across the face (the other axes)
                    if b_ == a:
                        continue
                    bx = 2 - b_
                    wa = np.add.reduceat(wa, np.arange(0, fine_shape[b_], 2), axis=bx)
                wa = wa * COARSE_COUPLING_SCALE
            w3[a] = wa
        o = int(off[lvl])
        for a in range(3):
            w[a, o : o + sizes[lvl]] = w3[a].ravel()
        cdiag[o : o + sizes[lvl]] = _cdiag(w[:, o : o + sizes[lvl]], sh, periodic)
        prev = w3
    return Levels(np.array(shapes, dtype=np.int64), off, w, cdiag, np.int64(1 if periodic else 0))


def make_work(levels: Levels) -> Work:
    n0 = int(levels.off[1])
    nt = int(levels.off[-1])
    nx, ny, nz = (int(v) for v in levels.shape[0])
    nb = nz if nz > 1 else ny  # one partial sum per slab of level 0
    vec = [np.zeros(n0) for _ in range(5)]
    return Work(*vec, np.zeros(nt), np.zeros(nt), np.zeros(nt), np.zeros(nt - n0), np.zeros(nt - n0), np.zeros(nb))


# ----------------------------------------------------------------------------------------------- row helpers
#
# A level is cut into slabs: z planes in 3D, y rows otherwise (a 1-D lattice is one slab). Every parallel loop runs
# over slabs (or coarse slabs), and every reduction is a sum of per-slab partial sums taken in slab order, so the
# partition, and hence every result, is a function of the lattice shape only.


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
def _row(y, z, nx, ny, nz, per):
    """Row (y, z): (base, ym, yp, zm, zp, fym, fyp, fzm, fzp) with the start of the row, of its -y/+y/-z/+z
    neighbour rows, and 0/1 factors saying whether each exists (a missing one points at the row itself)."""
    sy = nx
    sz = nx * ny
    base = nx * (y + ny * z)
    ym = yp = zm = zp = base
    fym = fyp = fzm = fzp = 0.0
    if ny > 1:
        if y > 0:
            ym, fym = base - sy, 1.0
        elif per:
            ym, fym = base + (ny - 1) * sy, 1.0
        if y < ny - 1:
            yp, fyp = base + sy, 1.0
        elif per:
            yp, fyp = base - (ny - 1) * sy, 1.0
    if nz > 1:
        if z > 0:
            zm, fzm = base - sz, 1.0
        elif per:
            zm, fzm = base + (nz - 1) * sz, 1.0
        if z < nz - 1:
            zp, fzp = base + sz, 1.0
        elif per:
            zp, fzp = base - (nz - 1) * sz, 1.0
    return base, ym, yp, zm, zp, fym, fyp, fzm, fzp


@numba.njit(**JIT, inline="always")
def _nb_yz(v, w1, w2, uni, x, rw):
    """The y and z part of sum_faces w v_nb at column x of row ``rw`` (see :func:`_row`)."""
    base, ym, yp, zm, zp, fym, fyp, fzm, fzp = rw
    i = base + x
    if uni:
        return fym * v[ym + x] + fyp * v[yp + x] + fzm * v[zm + x] + fzp * v[zp + x]
    return (
        fym * w1[ym + x] * v[ym + x] + fyp * w1[i] * v[yp + x] + fzm * w2[zm + x] * v[zm + x] + fzp * w2[i] * v[zp + x]
    )


@numba.njit(**JIT, inline="always")
def _nb(v, w0, w1, w2, uni, x, nx, per, rw):
    """sum over the faces of site (x, row) of coupling * neighbour value (couplings 1 if ``uni``)."""
    base = rw[0]
    i = base + x
    s = _nb_yz(v, w1, w2, uni, x, rw)
    if 0 < x < nx - 1:
        if uni:
            return s + v[i - 1] + v[i + 1]
        return s + w0[i - 1] * v[i - 1] + w0[i] * v[i + 1]
    if nx == 1:
        return s
    if x > 0:
        s += v[i - 1] if uni else w0[i - 1] * v[i - 1]
    elif per:
        s += v[base + nx - 1] if uni else w0[base + nx - 1] * v[base + nx - 1]
    if x < nx - 1:
        s += v[i + 1] if uni else w0[i] * v[i + 1]
    elif per:
        s += v[base] if uni else w0[i] * v[base]
    return s


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


# ----------------------------------------------------------------------------------------------- smoother tasks


@numba.njit(**JIT)
def _relax_tasks(nx, ny, nz, per):
    """(n_slabs, n_tasks): an odd periodic slab axis pairs its first and last slab in task 0, because there they
    are neighbours of the same colour and must be updated in a fixed order."""
    ns = _n_slabs(nx, ny, nz)
    pair = per != 0 and ns >= 3 and ns % 2 == 1
    return ns, ns - 1 if pair else ns


@numba.njit(**JIT)
def _relax_task(t, x, b, invd, w3, rs, shape, per, colour, rev, uni):
    """Gauss–Seidel update of the sites of one colour in the slab(s) of task t: ``x_i = (b_i + rs sum w x_nb) / A_ii``.

    Forward order is ascending z, y, x; ``rev`` reverses it (including the two slabs of a paired task 0)."""
    t = np.int64(t)
    nx, ny, nz = shape[0], shape[1], shape[2]
    w0, w1, w2 = w3
    ns, nt = _relax_tasks(nx, ny, nz, per)
    for k in range(2):
        if k == 1 and (nt == ns or t != 0):
            break
        sl = t
        if nt != ns and t == 0:
            sl = (ns - 1 if k == 0 else 0) if rev else (0 if k == 0 else ns - 1)
        z0, z1, y0, y1 = _slab_rows(sl, ny, nz)
        for zz in range(z0, z1):
            for jy in range(y1 - y0):
                yy = y1 - 1 - jy if rev else y0 + jy
                rw = _row(yy, zz, nx, ny, nz, per)
                _relax_row(x, b, invd, w0, w1, w2, rs, rw, nx, per, (colour + yy + zz) & 1, rev, uni)


@numba.njit(**JIT, inline="always")
def _relax_row(x, b, invd, w0, w1, w2, rs, rw, nx, per, start, rev, uni):
    """Gauss–Seidel update of x = start, start + 2, ... of one row (descending if ``rev``): the ends go through
    :func:`_nb`, the interior through explicit loops."""
    base, ym, yp, zm, zp, fym, fyp, fzm, fzp = rw
    last = start + 2 * ((nx - 1 - start) // 2)  # the last column of this colour
    if start > nx - 1:
        return
    lo = start if start > 0 else start + 2  # interior columns lo, lo + 2, ..., hi
    hi = last if last < nx - 1 else last - 2
    if not rev and start == 0:
        x[base] = (b[base] + rs * _nb(x, w0, w1, w2, uni, 0, nx, per, rw)) * invd[base]
    if rev and last == nx - 1 and nx > 1:
        i = base + nx - 1
        x[i] = (b[i] + rs * _nb(x, w0, w1, w2, uni, nx - 1, nx, per, rw)) * invd[i]
    if hi >= lo:
        cnt = (hi - lo) // 2 + 1
        if uni:
            for j in range(cnt):
                xx = hi - 2 * j if rev else lo + 2 * j
                i = base + xx
                s = x[i - 1] + x[i + 1] + fym * x[ym + xx] + fyp * x[yp + xx] + fzm * x[zm + xx] + fzp * x[zp + xx]
                x[i] = (b[i] + rs * s) * invd[i]
        else:
            for j in range(cnt):
                xx = hi - 2 * j if rev else lo + 2 * j
                i = base + xx
                s = (
                    w0[i - 1] * x[i - 1]
                    + w0[i] * x[i + 1]
                    + fym * w1[ym + xx] * x[ym + xx]
                    + fyp * w1[i] * x[yp + xx]
                    + fzm * w2[zm + xx] * x[zm + xx]
                    + fzp * w2[i] * x[zp + xx]
                )
                x[i] = (b[i] + rs * s) * invd[i]
    if not rev and last == nx - 1 and nx > 1:
        i = base + nx - 1
        x[i] = (b[i] + rs * _nb(x, w0, w1, w2, uni, nx - 1, nx, per, rw)) * invd[i]
    if rev and start == 0:
        x[base] = (b[base] + rs * _nb(x, w0, w1, w2, uni, 0, nx, per, rw)) * invd[base]


@numba.njit(**PARALLEL)
def _relax_par(x, b, invd, w3, rs, shape, per, colour, rev, uni):
    ns, nt = _relax_tasks(shape[0], shape[1], shape[2], per)
    for t in numba.prange(nt):
        _relax_task(t, x, b, invd, w3, rs, shape, per, colour, rev, uni)


@numba.njit(**JIT)
def _relax_ser(x, b, invd, w3, rs, shape, per, colour, rev, uni):
    ns, nt = _relax_tasks(shape[0], shape[1], shape[2], per)
    for t in range(nt):
        _relax_task(t, x, b, invd, w3, rs, shape, per, colour, rev, uni)


@numba.njit(**JIT)
def _restrict_task(cs, fx, fb, fdiag, w3, rs, fshape, cshape, per, uni, only, out):
    """Coarse slab ``cs``: out[I] = sum over the children i of I of the residual (b - A x)_i.

    ``only`` >= 0 sums the children of that colour only: after a Gauss–Seidel half-sweep of the other colour its
    residual is zero (exact arithmetic), so those children add nothing."""
    cs = np.int64(cs)
    nx, ny, nz = fshape[0], fshape[1], fshape[2]
    cx, cy = cshape[0], cshape[1]
    w0, w1, w2 = w3
    kz0, kz1, ky0, ky1 = _slab_rows(cs, cy, cshape[2])
    for kz in range(kz0, kz1):
        for ky in range(ky0, ky1):
            cb = cx * (ky + cy * kz)
            for kx in range(cx):
                out[cb + kx] = 0.0
            for zz in range(2 * kz, min(2 * kz + 2, nz)):
                for yy in range(2 * ky, min(2 * ky + 2, ny)):
                    rw = _row(yy, zz, nx, ny, nz, per)
                    if only < 0:
                        _resid_row_add(fx, fb, fdiag, w0, w1, w2, rs, rw, nx, per, 0, 1, uni, out, cb)
                    else:
                        st = (only + yy + zz) & 1
                        _resid_row_add(fx, fb, fdiag, w0, w1, w2, rs, rw, nx, per, st, 2, uni, out, cb)


@numba.njit(**JIT, inline="always")
def _resid_row_add(fx, fb, fdiag, w0, w1, w2, rs, rw, nx, per, start, step, uni, out, cb):
    """out[cb + x // 2] += (b - A x)_x for x = start, start + step, ... of one fine row."""
    base, ym, yp, zm, zp, fym, fyp, fzm, fzp = rw
    if start > nx - 1:
        return
    if start == 0:
        out[cb] += fb[base] - fdiag[base] * fx[base] + rs * _nb(fx, w0, w1, w2, uni, 0, nx, per, rw)
    lo = start if start > 0 else step
    last = start + step * ((nx - 1 - start) // step)
    hi = last if last < nx - 1 else last - step
    if hi >= lo:
        cnt = (hi - lo) // step + 1
        if uni:
            for j in range(cnt):
                xx = lo + step * j
                i = base + xx
                s = fx[i - 1] + fx[i + 1] + fym * fx[ym + xx] + fyp * fx[yp + xx]
                s += fzm * fx[zm + xx] + fzp * fx[zp + xx]
                out[cb + xx // 2] += fb[i] - fdiag[i] * fx[i] + rs * s
        else:
            for j in range(cnt):
                xx = lo + step * j
                i = base + xx
                s = (
                    w0[i - 1] * fx[i - 1]
                    + w0[i] * fx[i + 1]
                    + fym * w1[ym + xx] * fx[ym + xx]
                    + fyp * w1[i] * fx[yp + xx]
                    + fzm * w2[zm + xx] * fx[zm + xx]
                    + fzp * w2[i] * fx[zp + xx]
                )
                out[cb + xx // 2] += fb[i] - fdiag[i] * fx[i] + rs * s
    if last == nx - 1 and nx > 1:
        i = base + nx - 1
        out[cb + (nx - 1) // 2] += fb[i] - fdiag[i] * fx[i] + rs * _nb(fx, w0, w1, w2, uni, nx - 1, nx, per, rw)


@numba.njit(**PARALLEL)
def _restrict_par(fx, fb, fdiag, w3, rs, fshape, cshape, per, uni, only, out):
    n = _n_slabs(cshape[0], cshape[1], cshape[2])
    for cs in numba.prange(n):
        _restrict_task(cs, fx, fb, fdiag, w3, rs, fshape, cshape, per, uni, only, out)


@numba.njit(**JIT)
def _restrict_ser(fx, fb, fdiag, w3, rs, fshape, cshape, per, uni, only, out):
    n = _n_slabs(cshape[0], cshape[1], cshape[2])
    for cs in range(n):
        _restrict_task(cs, fx, fb, fdiag, w3, rs, fshape, cshape, per, uni, only, out)


@numba.njit(**JIT)
def _prolong_task(cs, fx, cxv, fshape, cshape):
    """x_fine[i] += x_coarse[parent(i)] for the fine sites whose parents lie in coarse slab ``cs``."""
    cs = np.int64(cs)
    nx, ny, nz = fshape[0], fshape[1], fshape[2]
    cx, cy = cshape[0], cshape[1]
    kz0, kz1, ky0, ky1 = _slab_rows(cs, cy, cshape[2])
    for kz in range(kz0, kz1):
        for ky in range(ky0, ky1):
            cb = cx * (ky + cy * kz)
            for zz in range(2 * kz, min(2 * kz + 2, nz)):
                for yy in range(2 * ky, min(2 * ky + 2, ny)):
                    base = nx * (yy + ny * zz)
                    for xx in range(nx):
                        fx[base + xx] += cxv[cb + xx // 2]


@numba.njit(**PARALLEL)
def _prolong_par(fx, cxv, fshape, cshape):
    n = _n_slabs(cshape[0], cshape[1], cshape[2])
    for cs in numba.prange(n):
        _prolong_task(cs, fx, cxv, fshape, cshape)


@numba.njit(**JIT)
def _prolong_ser(fx, cxv, fshape, cshape):
    n = _n_slabs(cshape[0], cshape[1], cshape[2])
    for cs in range(n):
        _prolong_task(cs, fx, cxv, fshape, cshape)


# ----------------------------------------------------------------------------------------------- the V-cycle


@numba.njit(**JIT)
def _level_w(lv, l):
    o = lv.off[l]
    e = lv.off[l + 1]
    return (lv.w[0, o:e], lv.w[1, o:e], lv.w[2, o:e])


@numba.njit(**JIT)
def _odd_periodic(shape, per):
    """True if a periodic axis has an odd number (>= 3) of sites: same-colour neighbours exist."""
    if per == 0:
        return False
    for a in range(3):
        if shape[a] >= 3 and shape[a] % 2 == 1:
            return True
    return False


@numba.njit(**JIT)
def _smooth(x, b, invd, w3, rs, shape, per, uni, par, sweeps, rev):
    """``sweeps`` red–black sweeps; forward: red then black; ``rev``: black then red, each in reverse order."""
    for _ in range(sweeps):
        for k in range(2):
            colour = (1 - k) if rev else k
            if par:
                _relax_par(x, b, invd, w3, rs, shape, per, colour, rev, uni)
            else:
                _relax_ser(x, b, invd, w3, rs, shape, per, colour, rev, uni)


@numba.njit(**JIT)
def vcycle(lv, wk, rs, sweeps):
    """z = B r: one symmetric V-cycle from a zero guess (B is symmetric positive definite)."""
    nl = lv.shape.shape[0]
    n0 = lv.off[1]
    per = lv.periodic
    if nl == 1:
        for i in range(n0):
            wk.z[i] = wk.r[i] * wk.invd[i]
        return
    for l in range(nl - 1):  # down: smooth, restrict the residual
        o = lv.off[l]
        n = lv.off[l + 1] - o
        if l == 0:
            x = wk.z
            b = wk.r
        else:
            x = wk.xc[o - n0 : o - n0 + n]
            b = wk.bc[o - n0 : o - n0 + n]
        x[:] = 0.0
        shape = lv.shape[l]
        w3 = _level_w(lv, l)
        par = n >= PARALLEL_MIN_SITES
        _smooth(x, b, wk.invd[o : o + n], w3, rs, shape, per, l == 0, par, sweeps, False)
        oc = lv.off[l + 1]
        out = wk.bc[oc - n0 : lv.off[l + 2] - n0]
        only = -1 if _odd_periodic(shape, per) else 0  # the forward sweep ends with black (1): red residuals remain
        if par:
            _restrict_par(x, b, wk.diag[o : o + n], w3, rs, shape, lv.shape[l + 1], per, l == 0, only, out)
        else:
            _restrict_ser(x, b, wk.diag[o : o + n], w3, rs, shape, lv.shape[l + 1], per, l == 0, only, out)
    oc = lv.off[nl - 1]  # the coarsest level is one site without couplings
    wk.xc[oc - n0] = wk.bc[oc - n0] * wk.invd[oc]
    for l in range(nl - 2, -1, -1):  # up: prolong, smooth in reverse
        o = lv.off[l]
        n = lv.off[l + 1] - o
        if l == 0:
            x = wk.z
            b = wk.r
        else:
            x = wk.xc[o - n0 : o - n0 + n]
            b = wk.bc[o - n0 : o - n0 + n]
        oc = lv.off[l + 1]
        cxv = wk.xc[oc - n0 : lv.off[l + 2] - n0]
        par = n >= PARALLEL_MIN_SITES
        if par:
            _prolong_par(x, cxv, lv.shape[l], lv.shape[l + 1])
        else:
            _prolong_ser(x, cxv, lv.shape[l], lv.shape[l + 1])
        _smooth(x, b, wk.invd[o : o + n], _level_w(lv, l), rs, lv.shape[l], per, l == 0, par, sweeps, True)


# ----------------------------------------------------------------------------------------------- level-0 vector ops


@numba.njit(**PARALLEL)
def _apply_a(lv, rs, diag, p, b, q, resid, partial):
    """Level 0: q = b - A p and returns q . q if ``resid``, else q = A p (``b`` unused) and returns q . p.

    ``A p = A_ii p_i - r sum p_nb``; partial sums per slab, added in slab order."""
    nx, ny, nz = lv.shape[0, 0], lv.shape[0, 1], lv.shape[0, 2]
    per = lv.periodic
    w0 = lv.w[0, 0:0]  # unused: level-0 couplings are all 1
    ns = _n_slabs(nx, ny, nz)
    for sl in numba.prange(ns):
        z0, z1, y0, y1 = _slab_rows(np.int64(sl), ny, nz)
        for zz in range(z0, z1):
            for yy in range(y0, y1):
                rw = _row(yy, zz, nx, ny, nz, per)
                base, ym, yp, zm, zp, fym, fyp, fzm, fzp = rw
                for xx in range(nx):
                    i = base + xx
                    if 0 < xx < nx - 1:
                        s = p[i - 1] + p[i + 1] + fym * p[ym + xx] + fyp * p[yp + xx]
                        s += fzm * p[zm + xx] + fzp * p[zp + xx]
                    else:
                        s = _nb(p, w0, w0, w0, True, xx, nx, per, rw)
                    ap = diag[i] * p[i] - rs * s
                    q[i] = b[i] - ap if resid else ap
        lo = nx * (y0 + ny * z0)
        hi = nx * (y1 + ny * (z1 - 1))
        partial[sl] = _dot_range(q, q, lo, hi) if resid else _dot_range(q, p, lo, hi)
    return _sum_partials(partial, ns)


@numba.njit(**PARALLEL)
def _dot(lv, a, b, partial):
    nx, ny, nz = lv.shape[0, 0], lv.shape[0, 1], lv.shape[0, 2]
    ns = _n_slabs(nx, ny, nz)
    m = a.shape[0] // ns
    for sl in numba.prange(ns):
        partial[sl] = _dot_range(a, b, sl * m, sl * m + m)
    return _sum_partials(partial, ns)


@numba.njit(**PARALLEL)
def _update_xr(lv, x, r, p, q, alpha, partial):
    """x += alpha p, r -= alpha q; returns ||r||^2."""
    nx, ny, nz = lv.shape[0, 0], lv.shape[0, 1], lv.shape[0, 2]
    ns = _n_slabs(nx, ny, nz)
    m = x.shape[0] // ns
    for sl in numba.prange(ns):
        lo = sl * m
        for i in range(lo, lo + m):
            x[i] += alpha * p[i]
            r[i] -= alpha * q[i]
        partial[sl] = _dot_range(r, r, lo, lo + m)
    return _sum_partials(partial, ns)


@numba.njit(**PARALLEL)
def _update_p(lv, p, z, beta):
    nx, ny, nz = lv.shape[0, 0], lv.shape[0, 1], lv.shape[0, 2]
    ns = _n_slabs(nx, ny, nz)
    m = p.shape[0] // ns
    for sl in numba.prange(ns):
        for i in range(sl * m, sl * m + m):
            p[i] = z[i] + beta * p[i]


@numba.njit(**PARALLEL)
def _clip_and_balance(lv, x, mass, partial):
    """x <- max(x, 0); returns sum M x of the clipped x (fixed slab order)."""
    nx, ny, nz = lv.shape[0, 0], lv.shape[0, 1], lv.shape[0, 2]
    ns = _n_slabs(nx, ny, nz)
    m = x.shape[0] // ns
    for sl in numba.prange(ns):
        lo = sl * m
        for i in range(lo, lo + m):
            if x[i] < 0.0:
                x[i] = 0.0
        partial[sl] = _dot_range(mass, x, lo, lo + m)
    return _sum_partials(partial, ns)


@numba.njit(**PARALLEL)
def _scale(lv, x, theta):
    nx, ny, nz = lv.shape[0, 0], lv.shape[0, 1], lv.shape[0, 2]
    ns = _n_slabs(nx, ny, nz)
    m = x.shape[0] // ns
    for sl in numba.prange(ns):
        for i in range(sl * m, sl * m + m):
            x[i] *= theta


# ----------------------------------------------------------------------------------------------- assembly, solve


@numba.njit(**PARALLEL)
def _assemble0(c, s, terms, coef, lv, wk):
    """Level 0: M = 1 + dt (k + U + m P), b = c + dt (S + m P Cp), A_ii = M + r cdiag and its inverse.
    Returns sum b (fixed slab order)."""
    dt = coef[C_DT]
    rs = coef[C_R]
    k = coef[C_DECAY]
    p = coef[C_PERM]
    pc = coef[C_PERM_PLASMA]
    up = terms.uptake[s]
    so = terms.source[s]
    vm = terms.vmask
    cd = lv.cdiag
    # Bind the arrays to locals: a setitem on a named-tuple field inside prange is lost (a Numba parfor quirk).
    mass_a = wk.mass
    b_a = wk.b
    diag_a = wk.diag
    invd_a = wk.invd
    partial = wk.partial
    nx, ny, nz = lv.shape[0, 0], lv.shape[0, 1], lv.shape[0, 2]
    ns = _n_slabs(nx, ny, nz)
    m_ = c.shape[0] // ns
    for sl in numba.prange(ns):
        lo = sl * m_
        acc = 0.0
        for i in range(lo, lo + m_):
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
    return _sum_partials(partial, ns)


@numba.njit(**JIT)
def _assemble_coarse(rs, lv, wk):
    """Coarse levels: M summed over the children, A_ii = M + r cdiag (halved couplings are built into cdiag)."""
    nl = lv.shape.shape[0]
    for l in range(nl - 1):
        o = lv.off[l]
        oc = lv.off[l + 1]
        e = lv.off[l + 2]
        fx, fy, fz = lv.shape[l, 0], lv.shape[l, 1], lv.shape[l, 2]
        cx, cy = lv.shape[l + 1, 0], lv.shape[l + 1, 1]
        for i in range(oc, e):
            wk.mass[i] = 0.0
        for zz in range(fz):
            for yy in range(fy):
                fb = o + fx * (yy + fy * zz)
                cb = oc + cx * (yy // 2 + cy * (zz // 2))
                for xx in range(fx):
                    wk.mass[cb + xx // 2] += wk.mass[fb + xx]
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
    sum_b = _assemble0(c, s, terms, coef, lv, wk)
    _assemble_coarse(rs, lv, wk)
    bn = np.sqrt(_dot(lv, wk.b, wk.b, wk.partial))
    stats[0] = 0.0
    stats[1] = 0.0
    stats[2] = 0.0
    if bn == 0.0:
        c[:] = 0.0
        return 0
    rn = np.sqrt(_apply_a(lv, rs, wk.diag, c, wk.b, wk.r, True, wk.partial))
    stats[1] = rn / bn
    target = ctrl.rtol * bn
    it = 0
    status = 0
    if rn > target:
        vcycle(lv, wk, rs, ctrl.sweeps)
        rz = _dot(lv, wk.r, wk.z, wk.partial)
        wk.p[:] = wk.z
        while True:
            pq = _apply_a(lv, rs, wk.diag, wk.p, wk.p, wk.q, False, wk.partial)
            alpha = rz / pq
            rn = np.sqrt(_update_xr(lv, c, wk.r, wk.p, wk.q, alpha, wk.partial))
            it += 1
            if rn <= target:
                break
            if it >= ctrl.max_iterations:
                status = 1
                break
            vcycle(lv, wk, rs, ctrl.sweeps)
            rz_new = _dot(lv, wk.r, wk.z, wk.partial)
            _update_p(lv, wk.p, wk.z, rz_new / rz)
            rz = rz_new
    stats[0] = it
    stats[2] = rn / bn
    if status == 0:
        smx = _clip_and_balance(lv, c, wk.mass, wk.partial)
        if smx > 0.0:
            _scale(lv, c, sum_b / smx)
    return status
