"""Per-step measurements over the cell arrays and fields: O(cells + sites), no allocation."""

import math

import numba
import numpy as np

from abm.kernels import portable as pm
from abm.kernels.cells import TUMOUR
from abm.kernels.config import JIT
from abm.kernels.geometry import offset_site, site_coords


def caliper_directions(ndim: int, n: int = 0) -> np.ndarray:
    """Unit vectors for the caliper diameter: ``n`` angles over a half circle (2D) or a Fibonacci half-sphere
    (3D). The largest spread over them underestimates the true longest diameter by at most 1 - cos(pi / 2n)."""
    if ndim == 2:
        n = n or 90
        a = np.pi * np.arange(n) / n
        return np.stack([pm.cos(a), pm.sin(a), np.zeros(n)], axis=1)
    n = n or 200
    k = np.arange(2 * n) + 0.5
    zc = 1 - k / n  # (-1, 1)
    phi = np.pi * (1 + 5**0.5) * k
    r = np.sqrt(1 - zc**2)
    d = np.stack([r * pm.cos(phi), r * pm.sin(phi), zc], axis=1)
    return np.ascontiguousarray(d[d[:, 2] >= 0])


@numba.njit(**JIT)
def tumour_neighbours(site, occupancy, ctype, geo):
    """Number of tumour cells among the neighbours of ``site``."""
    x0, y0, z0 = site_coords(site, geo)
    cnt = 0
    for k in range(geo.offsets.shape[0]):
        s = offset_site(x0, y0, z0, k, geo)
        if s < 0:
            continue
        o = occupancy[s]
        if o >= 0 and ctype[o] == TUMOUR:
            cnt += 1
    return cnt


@numba.njit(inline="always", **JIT)
def _in_lesion(site, occupancy, ctype, geo, min_neighbours):
    """A tumour cell on ``site`` with at least ``min_neighbours`` tumour neighbours."""
    o = occupancy[site]
    if o < 0 or ctype[o] != TUMOUR:
        return False
    return min_neighbours <= 0 or tumour_neighbours(site, occupancy, ctype, geo) >= min_neighbours


@numba.njit(**JIT)
def _caliper(directions, line_lo, line_hi, ny, packed):
    """Largest spread over ``directions`` of the line extremes; the occupied lines are packed first into the
    (n_lines, 4) float scratch ``packed`` so the inner loop runs over the tumour's lines only."""
    m = 0
    for line in range(line_lo.shape[0]):
        if line_hi[line] >= 0:
            packed[m, 0] = line_lo[line]
            packed[m, 1] = line_hi[line]
            packed[m, 2] = line % ny
            packed[m, 3] = line // ny
            m += 1
    if m == 0:
        return 0.0
    best = 0.0
    for k in range(directions.shape[0]):
        d0 = directions[k, 0]
        d1 = directions[k, 1]
        d2 = directions[k, 2]
        lo = math.inf
        hi = -math.inf
        for j in range(m):
            q = d1 * packed[j, 2] + d2 * packed[j, 3]
            a = d0 * packed[j, 0] + q
            b = d0 * packed[j, 1] + q
            if a > b:
                a, b = b, a
            if a < lo:
                lo = a
            if b > hi:
                hi = b
        if hi - lo > best:
            best = hi - lo
    return best + 1.0


@numba.njit(**JIT)
def tumour_geometry(c, occupancy, geo, min_neighbours, directions, ls):
    """Tumour cell count and two caliper longest diameters in sites (centre-to-centre spread + 1 cell): over every
    tumour cell, and over the *lesion*, the tumour cells with at least ``min_neighbours`` tumour cells among their
    neighbours (scattered survivors are not a measurable lesion).

    Along a lattice line (fixed y, z) a projection is linear in x, so its extremes over the tumour are attained
    at the two extreme tumour cells of some line: the caliper runs over at most 2 * ny * nz points. ``ls`` is a
    :data:`~abm.kernels.records.LesionScratch` for ny * nz lines."""
    nx = geo.nx
    ny = geo.ny
    line_lo = ls.line_lo
    line_hi = ls.line_hi
    lesion_lo = ls.lesion_lo
    lesion_hi = ls.lesion_hi
    nlines = line_lo.shape[0]
    for k in range(nlines):
        line_lo[k] = nx
        line_hi[k] = -1
        lesion_lo[k] = nx
        lesion_hi[k] = -1
    cnt = 0
    for i in range(c.n[0]):
        if c.ctype[i] != TUMOUR:
            continue
        s = c.site[i]
        x = s % nx
        line = s // nx
        cnt += 1
        if x < line_lo[line]:
            line_lo[line] = x
        if x > line_hi[line]:
            line_hi[line] = x
    if cnt == 0:
        return 0, 0.0, 0.0
    # lesion extremes: walk each occupied line inwards from its ends to the first cell that belongs to the lesion
    # (in a compact tumour that is the end cell itself, so this costs a few neighbour counts per line)
    for line in range(nlines):
        if line_hi[line] < 0:
            continue
        base = nx * line
        for x in range(line_lo[line], line_hi[line] + 1):
            if _in_lesion(base + x, occupancy, c.ctype, geo, min_neighbours):
                lesion_lo[line] = x
                break
        if lesion_lo[line] == nx:
            continue
        for x in range(line_hi[line], lesion_lo[line] - 1, -1):
            if _in_lesion(base + x, occupancy, c.ctype, geo, min_neighbours):
                lesion_hi[line] = x
                break
    longest = _caliper(directions, line_lo, line_hi, ny, ls.packed)
    return cnt, longest, _caliper(directions, lesion_lo, lesion_hi, ny, ls.packed)


@numba.njit(**JIT)
def field_stats(conc, c, out):
    """Per species: mean over the lattice, max, and mean over sites holding tumour cells (nan if none).
    ``out`` is (n_species, 3)."""
    ctype = c.ctype
    site = c.site
    n = c.n[0]
    ns = conc.shape[0]
    nsites = conc.shape[1]
    for sp in range(ns):
        tot = 0.0
        mx = 0.0
        for s in range(nsites):
            v = conc[sp, s]
            tot += v
            if v > mx:
                mx = v
        out[sp, 0] = tot / nsites
        out[sp, 1] = mx
        tt = 0.0
        cnt = 0
        for i in range(n):
            if ctype[i] == TUMOUR:
                tt += conc[sp, site[i]]
                cnt += 1
        out[sp, 2] = tt / cnt if cnt > 0 else math.nan
    return out
