"""Slow, obvious reference implementations of kernels (STUMPY's tests/naive.py): plain Python/numpy written
straight from the definitions in docs/model.md, with no concern for speed. tests/test_naive.py compares each kernel
with its oracle on random inputs (hypothesis)."""

from __future__ import annotations

import itertools
import math

import numpy as np

EMPTY, TUMOUR, CTL, NK, LAK = 0, 1, 2, 3, 4
FREE, VESSEL = -1, -2


def neighbours(site: int, shape_xyz: tuple[int, int, int], periodic: bool) -> list[int]:
    """The Moore neighbours of ``site`` in the lattice's offset order (dz, then dy, then dx, each -1, 0, 1)."""
    nx, ny, nz = shape_xyz
    x, y, z = site % nx, (site // nx) % ny, site // (nx * ny)
    dzs = (-1, 0, 1) if nz > 1 else (0,)
    out = []
    for dz, dy, dx in itertools.product(dzs, (-1, 0, 1), (-1, 0, 1)):
        if (dx, dy, dz) == (0, 0, 0):
            continue
        xx, yy, zz = x + dx, y + dy, z + dz
        if periodic:
            xx, yy, zz = xx % nx, yy % ny, zz % nz
        elif not (0 <= xx < nx and 0 <= yy < ny and 0 <= zz < nz):
            continue
        out.append(xx + nx * (yy + ny * zz))
    return out


def scan(site: int, occupancy: np.ndarray, ctype: np.ndarray, shape_xyz, periodic) -> tuple[list[int], list[int]]:
    """(free neighbour sites, indices of the tumour cells next to ``site``), in neighbour order."""
    free, tumour = [], []
    for s in neighbours(site, shape_xyz, periodic):
        o = int(occupancy[s])
        if o == FREE:
            free.append(s)
        elif o >= 0 and ctype[o] == TUMOUR:
            tumour.append(o)
    return free, tumour


def lesion_sites(occupancy, ctype, shape_xyz, periodic, min_neighbours: int) -> list[int]:
    """Sites of tumour cells with at least ``min_neighbours`` tumour neighbours (every tumour cell if <= 0)."""
    out = []
    for s in range(occupancy.shape[0]):
        o = int(occupancy[s])
        if o < 0 or ctype[o] != TUMOUR:
            continue
        if min_neighbours > 0:
            n = sum(
                1 for t in neighbours(s, shape_xyz, periodic) if occupancy[t] >= 0 and ctype[occupancy[t]] == TUMOUR
            )
            if n < min_neighbours:
                continue
        out.append(s)
    return out


def caliper(sites: list[int], shape_xyz, directions: np.ndarray) -> float:
    """Largest spread over ``directions`` of the site centres (in sites), plus one cell; 0 with no sites."""
    if not sites:
        return 0.0
    nx, ny, _ = shape_xyz
    pts = [(s % nx, (s // nx) % ny, s // (nx * ny)) for s in sites]
    best = 0.0
    for d0, d1, d2 in directions:
        proj = [d0 * x + (d1 * y + d2 * z) for x, y, z in pts]
        best = max(best, max(proj) - min(proj))
    return best + 1.0


def tumour_geometry(occupancy, ctype, shape_xyz, periodic, min_neighbours, directions) -> tuple[int, float, float]:
    """(tumour cells, caliper over all of them, caliper over the lesion)."""
    every = lesion_sites(occupancy, ctype, shape_xyz, periodic, 0)
    lesion = lesion_sites(occupancy, ctype, shape_xyz, periodic, min_neighbours)
    return len(every), caliper(every, shape_xyz, directions), caliper(lesion, shape_xyz, directions)


def move_weights(site: int, free: list[int], conc_row: np.ndarray, chi: float, kd: float) -> np.ndarray:
    """Chemotactic move probabilities over the free neighbours: exp(chi (rho_s - rho_here)), rho = c / (c + kd)."""
    rho = lambda c: c / (c + kd)  # noqa: E731
    w = np.array([math.exp(chi * (rho(conc_row[s]) - rho(conc_row[site]))) for s in free])
    return w / w.sum()


def exchange(cells, conc, table) -> tuple[np.ndarray, np.ndarray]:
    """Per-site uptake (k / (1 + c / K_m)) and secretion from the cell x species tables, on zeroed arrays."""
    uptake = np.zeros(conc.shape, dtype=np.float32)
    source = np.zeros(conc.shape, dtype=np.float32)
    for i in range(int(cells.n[0])):
        kind = int(cells.ctype[i])
        if kind == EMPTY:
            continue
        s = int(cells.site[i])
        for sp in range(conc.shape[0]):
            k = table.uptake_per_min[kind, sp]
            if k > 0:
                uptake[sp, s] = k / (1.0 + conc[sp, s] / table.uptake_saturation[kind, sp])
            q = table.secretion_per_min[kind, sp]
            if table.induced_per_min[kind, sp] > 0:
                f = conc[table.inducer[kind, sp], s]
                q = q + table.induced_per_min[kind, sp] * f / (f + table.induction_half[kind, sp])
            activated = cells.timer_min[i] > 0 and cells.kills[i] < table.max_kills[kind]
            if q > 0 and (table.gate[kind, sp] == 0 or activated):
                source[sp, s] = q
    return uptake, source
