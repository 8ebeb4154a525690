"""Lattice geometry: 2D and 3D shapes, flat site indexing, Moore and von Neumann neighbourhoods, boundaries.

Sites are numbered ``i = x + nx * (y + ny * z)`` (x fastest), so a per-site array reshapes to ``(nz, ny, nx)`` in C
order. A 2D lattice is ``nz == 1``; every kernel uses the same flat indices and offset tables for 2D and 3D.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from abm.kernels.geometry import neighbour_sites
from abm.kernels.records import Geometry


def moore_offsets(ndim: int) -> np.ndarray:
    """Moore neighbourhood offsets, (8, 3) in 2D or (26, 3) in 3D, int64, in a fixed order."""
    rng3 = (-1, 0, 1) if ndim == 3 else (0,)
    out = [(dx, dy, dz) for dz in rng3 for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dx, dy, dz) != (0, 0, 0)]
    return np.array(out, dtype=np.int64)


def von_neumann_offsets(ndim: int) -> np.ndarray:
    """Von Neumann neighbourhood offsets, (4, 3) in 2D or (6, 3) in 3D, int64."""
    out = [(-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0)]
    if ndim == 3:
        out += [(0, 0, -1), (0, 0, 1)]
    return np.array(out, dtype=np.int64)


@dataclass(frozen=True)
class Lattice:
    """A regular lattice of ``nx * ny * nz`` sites of spacing ``spacing_um``."""

    nx: int
    ny: int
    nz: int = 1
    spacing_um: float = 20.0
    periodic: bool = False

    def __post_init__(self) -> None:
        for name in ("nx", "ny", "nz"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Lattice.{name} must be >= 1, got {getattr(self, name)}")
        if self.spacing_um <= 0:
            raise ValueError(f"Lattice.spacing_um must be > 0, got {self.spacing_um}")

    @classmethod
    def from_params(cls, lattice) -> Lattice:
        """From a :class:`abm.params.LatticeParams`."""
        return cls(lattice.nx, lattice.ny, lattice.nz, lattice.spacing_um, lattice.boundary == "periodic")

    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        return (self.nx, self.ny, self.nz)

    @property
    def shape(self) -> tuple[int, ...]:
        """Array shape of a per-site field: (ny, nx) in 2D, (nz, ny, nx) in 3D."""
        return (self.ny, self.nx) if self.nz == 1 else (self.nz, self.ny, self.nx)

    @property
    def ndim(self) -> int:
        return 2 if self.nz == 1 else 3

    @property
    def n_sites(self) -> int:
        return self.nx * self.ny * self.nz

    @property
    def site_volume_um3(self) -> float:
        return self.spacing_um**3

    def index(self, x, y, z=0):
        """Flat index of coordinates (scalars or arrays); no bounds check."""
        return np.asarray(x) + self.nx * (np.asarray(y) + self.ny * np.asarray(z))

    def coords(self, site):
        """(x, y, z) integer coordinates of flat indices (scalars or arrays)."""
        site = np.asarray(site)
        return site % self.nx, (site // self.nx) % self.ny, site // (self.nx * self.ny)

    def positions_um(self, site) -> np.ndarray:
        """Site centres in um, shape (..., 3)."""
        x, y, z = self.coords(site)
        return (np.stack([x, y, z], axis=-1) + 0.5) * self.spacing_um

    def moore(self) -> np.ndarray:
        return moore_offsets(self.ndim)

    def von_neumann(self) -> np.ndarray:
        return von_neumann_offsets(self.ndim)

    def geometry(self, kind: str = "moore") -> Geometry:
        """The record kernels take: neighbour offsets of ``kind`` (moore or von_neumann), shape, periodicity."""
        offs = self.moore() if kind == "moore" else self.von_neumann()
        return Geometry(offs, self.nx, self.ny, self.nz, self.periodic)

    def neighbours(self, site: int, kind: str = "moore") -> np.ndarray:
        """Flat indices of the neighbours of one site (sites outside a closed lattice are left out)."""
        geo = self.geometry(kind)
        out = np.empty(geo.offsets.shape[0], dtype=np.int64)
        return out[: neighbour_sites(int(site), geo, out)].copy()

    def distance_um(self, a, b) -> np.ndarray:
        """Euclidean distance between site centres (minimum image when periodic)."""
        d = np.abs(np.stack(self.coords(a), -1) - np.stack(self.coords(b), -1)).astype(float)
        if self.periodic:
            n = np.array(self.shape_xyz, dtype=float)
            d = np.minimum(d, n - d)
        return np.sqrt((d**2).sum(-1)) * self.spacing_um
