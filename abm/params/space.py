"""Where and when: the lattice, the time step, the initial state and the vessels."""

from __future__ import annotations

from typing import Literal

from abm.params.core import Group, P


class LatticeParams(Group):
    nx: int = P(200, "sites", "lattice sites along x", ge=1, le=4096, symbol="n_x", source="brief s2 (docs/model.md)")
    ny: int = P(200, "sites", "lattice sites along y", ge=1, le=4096, symbol="n_y", source="brief s2 (docs/model.md)")
    nz: int = P(
        1,
        "sites",
        "lattice sites along z (1 = a 2D run)",
        ge=1,
        le=4096,
        symbol="n_z",
        source="brief s2 (docs/model.md)",
    )
    spacing_um: float = P(
        20.0, "um", "site spacing, one cell diameter", ge=1, le=200, symbol="h", source="brief s2 (docs/model.md)"
    )
    boundary: Literal["closed", "periodic"] = P(
        "closed", "-", "closed: no-flux fields, walls for cells; periodic: both wrap", source="brief s2 (docs/model.md)"
    )

    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        return (self.nx, self.ny, self.nz)

    @property
    def ndim(self) -> int:
        return 2 if self.nz == 1 else 3


class TimeParams(Group):
    dt_min: float = P(10.0, "min", "agent step", gt=0, le=60, symbol="dt", source="brief s2 (docs/model.md)")
    field_substeps: int = P(
        1, "-", "field solver sub-steps per agent step (accuracy; the scheme is stable at any dt)", ge=1, le=100
    )
    field_rtol: float = P(
        1e-4,
        "-",
        "coupled field step: relative residual at which the conjugate-gradient solve stops (bounds the error "
        "relative to the right-hand side; see docs/solver.md)",
        gt=0,
        le=1e-2,
    )
    cell_schedule: Literal["sequential", "blocks"] = P(
        "sequential",
        "-",
        "order in which the cells act in a step: sequential (one seeded random order) or blocks (blocks of one "
        "colour act in parallel; docs/model.md, scheduling)",
        source="choice (numerics)",
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
    chemokine: str = P(
        "cxcl10",
        "-",
        "the species that guides effector cells: they leave the blood where it is and move up its gradient "
        "(a key of species; empty: no local signal, every vessel recruits alike and moves are unbiased)",
    )
    recruitment_half_pM: float = P(
        100.0,
        "pM",
        "chemokine at a vessel site giving half-maximal extravasation there: entry rate x c / (c + K_rec)",
        gt=0,
        symbol="K_rec",
        source="calibrated (docs/model.md 7.5): vessels beyond a few hundred um of the lesion admit next to none",
    )
