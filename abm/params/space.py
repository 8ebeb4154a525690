"""Where and when: the lattice, the time step, the initial state and the vessels."""

from __future__ import annotations

from typing import Literal

from abm.params.core import Group, P


class LatticeParams(Group):
    nx: int = P(200, "sites", "lattice sites along x", ge=1, le=4096, symbol="n_x", source="SCIENCE.md s2")
    ny: int = P(200, "sites", "lattice sites along y", ge=1, le=4096, symbol="n_y", source="SCIENCE.md s2")
    nz: int = P(1, "sites", "lattice sites along z (1 = a 2D run)", ge=1, le=4096, symbol="n_z", source="SCIENCE.md s2")
    spacing_um: float = P(
        20.0, "um", "site spacing, one cell diameter", ge=1, le=200, symbol="h", source="SCIENCE.md s2"
    )
    boundary: Literal["closed", "periodic"] = P(
        "closed", "-", "closed: no-flux fields, walls for cells; periodic: both wrap", source="SCIENCE.md s2"
    )

    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        return (self.nx, self.ny, self.nz)

    @property
    def ndim(self) -> int:
        return 2 if self.nz == 1 else 3


class TimeParams(Group):
    dt_min: float = P(10.0, "min", "agent step", gt=0, le=60, symbol="dt", source="SCIENCE.md s2")
    field_substeps: int = P(
        1, "-", "field solver sub-steps per agent step (accuracy; the scheme is stable at any dt)", ge=1, le=100
    )


class InitParams(Group):
    tumour_radius_um: float = P(
        300.0,
        "um",
        "radius of the initial tumour disc (2D) or ball (3D) at the lattice centre",
        ge=0,
        le=1e5,
        source="choice: a small metastasis",
    )
    tumour_cells: int = P(
        0,
        "cells",
        "if > 0, the initial tumour is the this many sites nearest the centre (overrides the radius)",
        ge=0,
        le=10**9,
    )
    ctl_cells: int = P(0, "cells", "CTL placed at random free sites at t = 0", ge=0, le=10**8)
    nk_cells: int = P(0, "cells", "NK cells placed at random free sites at t = 0", ge=0, le=10**8)
    lak_cells: int = P(0, "cells", "LAK cells placed at random free sites at t = 0", ge=0, le=10**8)
    immune_within_um: float = P(
        0.0, "um", "if > 0, initial immune cells are placed within this distance of the tumour edge", ge=0, le=1e6
    )
    cell_capacity: int = P(
        0,
        "cells",
        "size of the cell arrays; 0 = the number of lattice sites (the most that can ever live)",
        ge=0,
        le=10**9,
    )


class VesselParams(Group):
    tumour_margin_um: float = P(
        0.0, "um", "vessels are placed at least this far outside the initial tumour", ge=0, le=1e5
    )
