"""Lattice geometry inside kernels: flat index <-> coordinates and neighbour lookup with closed/periodic walls.

Flat index ``i = x + nx * (y + ny * z)``; a 2D lattice is nz = 1. The geometry arrives as a
:data:`~abm.kernels.records.Geometry` record whose offset table ((n, 3) int) makes the same kernels serve 2D and 3D.
This is the one place where a neighbour is computed: every scan (free sites, tumour neighbours, lesion membership,
recruitment sites) goes through :func:`offset_site`.
"""

import numba

from abm.kernels.config import JIT


@numba.njit(inline="always", **JIT)
def site_coords(site, geo):
    """(x, y, z) of a flat site index."""
    x = site % geo.nx
    yz = site // geo.nx
    return x, yz % geo.ny, yz // geo.ny


@numba.njit(inline="always", **JIT)
def offset_site(x0, y0, z0, k, geo):
    """The flat index of the k-th neighbour offset of (x0, y0, z0), or -1 outside a closed lattice."""
    nx = geo.nx
    ny = geo.ny
    nz = geo.nz
    x = x0 + geo.offsets[k, 0]
    y = y0 + geo.offsets[k, 1]
    z = z0 + geo.offsets[k, 2]
    if geo.periodic:
        if x < 0:
            x += nx
        elif x >= nx:
            x -= nx
        if y < 0:
            y += ny
        elif y >= ny:
            y -= ny
        if z < 0:
            z += nz
        elif z >= nz:
            z -= nz
    elif x < 0 or x >= nx or y < 0 or y >= ny or z < 0 or z >= nz:
        return -1
    return x + nx * (y + ny * z)


@numba.njit(**JIT)
def neighbour_sites(site, geo, out):
    """The neighbour sites of ``site`` (in offset order, those outside a closed lattice left out) into ``out``;
    returns how many."""
    x0, y0, z0 = site_coords(site, geo)
    n = 0
    for k in range(geo.offsets.shape[0]):
        s = offset_site(x0, y0, z0, k, geo)
        if s >= 0:
            out[n] = s
            n += 1
    return n
