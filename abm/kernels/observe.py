"""Per-step measurements over the cell arrays and fields: O(cells + sites), no allocation."""

import math

import numba
import numpy as np

from abm.kernels.cells import TUMOUR
from abm.kernels.config import JIT


def caliper_directions(ndim: int, n: int = 0) -> np.ndarray:
    """Unit vectors for the caliper diameter: ``n`` angles over a half circle (2D) or a Fibonacci half-sphere
    (3D). The largest spread over them underestimates the true longest diameter by at most 1 - cos(pi / 2n)."""
    if ndim == 2:
        n = n or 90
        a = np.pi * np.arange(n) / n
        return np.stack([np.cos(a), np.sin(a), np.zeros(n)], axis=1)
    n = n or 200
    k = np.arange(2 * n) + 0.5
    zc = 1 - k / n  # (-1, 1)
    phi = np.pi * (1 + 5**0.5) * k
    r = np.sqrt(1 - zc**2)
    d = np.stack([r * np.cos(phi), r * np.sin(phi), zc], axis=1)
    return np.ascontiguousarray(d[d[:, 2] >= 0])


@numba.njit(**JIT)
def _tumour_neighbours(site, occ, ctype, offs, nx, ny, nz, periodic):
    """Number of tumour cells in the Moore neighbourhood of ``site``."""
    x0 = site % nx
    yz = site // nx
    y0 = yz % ny
    z0 = yz // ny
    cnt = 0
    for k in range(offs.shape[0]):
        x = x0 + offs[k, 0]
        y = y0 + offs[k, 1]
        z = z0 + offs[k, 2]
        if periodic:
            x = (x + nx) % nx
            y = (y + ny) % ny
            z = (z + nz) % nz
        elif x < 0 or x >= nx or y < 0 or y >= ny or z < 0 or z >= nz:
            continue
        o = occ[x + nx * (y + ny * z)]
        if o >= 0 and ctype[o] == TUMOUR:
            cnt += 1
    return cnt


@numba.njit(inline="always", **JIT)
def _in_lesion(site, occ, ctype, offs, nx, ny, nz, periodic, min_neighbours):
    """A tumour cell on ``site`` with at least ``min_neighbours`` tumour neighbours."""
    o = occ[site]
    if o < 0 or ctype[o] != TUMOUR:
        return False
    return min_neighbours <= 0 or _tumour_neighbours(site, occ, ctype, offs, nx, ny, nz, periodic) >= min_neighbours


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
def tumour_geometry(
    ctype,
    site,
    n,
    occ,
    offs,
    nx,
    ny,
    nz,
    periodic,
    min_neighbours,
    directions,
    line_lo,
    line_hi,
    lesion_lo,
    lesion_hi,
    packed,
    centroid,
):
    """Tumour cell count, centroid (site coordinates, written to ``centroid``), and two caliper longest diameters
    in sites (centre-to-centre spread + 1 cell): over every tumour cell, and over the *lesion*, the tumour cells
    with at least ``min_neighbours`` tumour cells in their Moore neighbourhood (scattered survivors are not a
    measurable lesion).

    Along a lattice line (fixed y, z) a projection is linear in x, so its extremes over the tumour are attained
    at the two extreme tumour cells of some line: the caliper runs over at most 2 * ny * nz points.
    The four line arrays are int64 scratch of size ny * nz, ``packed`` float64 scratch of shape (ny * nz, 4)."""
    nlines = line_lo.shape[0]
    for k in range(nlines):
        line_lo[k] = nx
        line_hi[k] = -1
        lesion_lo[k] = nx
        lesion_hi[k] = -1
    cnt = 0
    sx = 0.0
    sy = 0.0
    sz = 0.0
    for i in range(n):
        if ctype[i] != TUMOUR:
            continue
        s = site[i]
        x = s % nx
        line = s // nx
        cnt += 1
        sx += x
        sy += line % ny
        sz += line // ny
        if x < line_lo[line]:
            line_lo[line] = x
        if x > line_hi[line]:
            line_hi[line] = x
    if cnt == 0:
        centroid[0] = math.nan
        centroid[1] = math.nan
        centroid[2] = math.nan
        return 0, 0.0, 0.0
    # lesion extremes: walk each occupied line inwards from its ends to the first cell that belongs to the lesion
    # (in a compact tumour that is the end cell itself, so this costs a few neighbour counts per line)
    for line in range(nlines):
        if line_hi[line] < 0:
            continue
        base = nx * line
        for x in range(line_lo[line], line_hi[line] + 1):
            if _in_lesion(base + x, occ, ctype, offs, nx, ny, nz, periodic, min_neighbours):
                lesion_lo[line] = x
                break
        if lesion_lo[line] == nx:
            continue
        for x in range(line_hi[line], lesion_lo[line] - 1, -1):
            if _in_lesion(base + x, occ, ctype, offs, nx, ny, nz, periodic, min_neighbours):
                lesion_hi[line] = x
                break
    centroid[0] = sx / cnt
    centroid[1] = sy / cnt
    centroid[2] = sz / cnt
    return (
        cnt,
        _caliper(directions, line_lo, line_hi, ny, packed),
        _caliper(directions, lesion_lo, lesion_hi, ny, packed),
    )


@numba.njit(**JIT)
def field_stats(conc, ctype, site, n, out):
    """Per species: mean over the lattice, max, and mean over sites holding tumour cells (nan if none).
    ``out`` is (n_species, 3)."""
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
