"""Lattice geometry inside kernels: flat index <-> coordinates and neighbour lookup with closed/periodic walls.

Flat index ``i = x + nx * (y + ny * z)``; a 2D lattice is nz = 1. Neighbour offsets come as an (n, 3) int array
(from :mod:`abm.lattice`), so the same kernels serve 2D and 3D.
"""

import numba

from abm.kernels.config import JIT


@numba.njit(inline="always", **JIT)
def neighbour(site, dx, dy, dz, nx, ny, nz, periodic):
    """The flat index of ``site + (dx, dy, dz)``, or -1 outside a closed lattice."""
    x = site % nx
    yz = site // nx
    y = yz % ny
    z = yz // ny
    x += dx
    y += dy
    z += dz
    if periodic:
        x %= nx
        y %= ny
        z %= nz
    elif x < 0 or x >= nx or y < 0 or y >= ny or z < 0 or z >= nz:
        return -1
    return x + nx * (y + ny * z)
