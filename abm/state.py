"""Simulation state: structure-of-arrays cells, occupancy, vessels and fields, and their initialisation.

Memory per lattice site (all preallocated, nothing grows during a run): occupancy int32 (4 B), per-cell arrays at
capacity = sites (type 1 + site 4 + MHC 4 + age 4 + kills 2 + timer 4 + exposure 4 + id 8 = 31 B), fields float64
per species (8 B) plus uptake and secretion float32 (8 B): about 83 B per site with 3 species, so a 200^3 lattice
(8e6 sites) needs about 660 MB.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from abm.kernels import cells as K
from abm.kernels import rng
from abm.kernels.records import CellArrays, Tissue
from abm.lattice import Lattice
from abm.params import Params

CELL_TYPES = {"empty": K.EMPTY, "tumour": K.TUMOUR, "ctl": K.CTL, "nk": K.NK, "lak": K.LAK}


@dataclass
class SimState:
    """Everything that changes during a run. Arrays are views the kernels write in place."""

    lattice: Lattice
    cells: CellArrays
    occupancy: np.ndarray  # int32 (n_sites,): cell index, K.FREE or K.VESSEL
    vessels: np.ndarray  # int64 (n_vessels,), sorted flat site indices
    conc: np.ndarray  # float64 (n_species, n_sites)
    uptake: np.ndarray  # float32 (n_species, n_sites), 1/min
    source: np.ndarray  # float32 (n_species, n_sites), concentration units/min
    initial_tumour_sites: np.ndarray  # int64
    tissue: Tissue = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # the record the kernels take: views of the same arrays, built once
        self.tissue = Tissue(self.cells, self.occupancy, self.conc, self.uptake, self.source, self.vessels)

    @property
    def n_cells(self) -> int:
        return int(self.cells.n[0])

    def live(self) -> slice:
        return slice(0, self.n_cells)

    def cell_type_map(self) -> np.ndarray:
        """uint8 per site: the type of the cell there (0 empty); vessels are not cells and read 0."""
        out = np.zeros(self.lattice.n_sites, dtype=np.uint8)
        n = self.n_cells
        out[self.cells.site[:n]] = self.cells.ctype[:n]
        return out

    def counts(self) -> dict[str, int]:
        c = K.count_types(self.cells, np.zeros(K.N_TYPES, dtype=np.int64))
        return {name: int(c[code]) for name, code in CELL_TYPES.items() if code != K.EMPTY}


def _alloc_cells(capacity: int) -> CellArrays:
    return CellArrays(
        ctype=np.zeros(capacity, np.int8),
        site=np.zeros(capacity, np.int32),
        mhc=np.zeros(capacity, np.float32),
        age_min=np.zeros(capacity, np.float32),
        kills=np.zeros(capacity, np.int16),
        timer_min=np.zeros(capacity, np.float32),
        exposure_min=np.zeros(capacity, np.float32),
        sensitisation=np.zeros(capacity, np.float32),
        id=np.zeros(capacity, np.int64),
        n=np.zeros(1, np.int64),
        next_id=np.zeros(1, np.int64),
    )


def initial_state(p: Params, seed: int) -> SimState:
    """The t = 0 state: a tumour disc (2D) or ball (3D) at the centre, vessels at a seeded random fraction of the
    sites outside it, and optional immune cells. All placement draws come from ``seed``."""
    lat = Lattice.from_params(p.lattice)
    n_sites = lat.n_sites
    g = np.random.default_rng(np.random.SeedSequence([seed, rng.INIT]))
    x, y, z = lat.coords(np.arange(n_sites))
    centre = (np.array(lat.shape_xyz) - 1) / 2.0
    if lat.ndim == 2:
        centre[2] = 0.0
    dist_um = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) * lat.spacing_um
    if p.init.tumour_cells > 0:
        n_t = min(p.init.tumour_cells, n_sites)
        tumour_sites = np.sort(np.argsort(dist_um, kind="stable")[:n_t])
        radius_um = float(dist_um[tumour_sites].max()) if n_t else 0.0
    else:
        tumour_sites = np.flatnonzero(dist_um <= p.init.tumour_radius_um)
        radius_um = p.init.tumour_radius_um
    outside = np.flatnonzero(dist_um > radius_um + p.vessels.tumour_margin_um)
    n_v = int(round(p.patient.vessel_fraction * outside.size))
    vessels = np.sort(g.choice(outside, size=n_v, replace=False)).astype(np.int64) if n_v else np.zeros(0, np.int64)

    capacity = p.init.cell_capacity or n_sites
    cells = _alloc_cells(capacity)
    occ = np.full(n_sites, K.FREE, dtype=np.int32)
    occ[vessels] = K.VESSEL
    n_t = tumour_sites.size
    if n_t > capacity:
        raise ValueError(f"init: {n_t} tumour cells exceed init.cell_capacity = {capacity}")
    cells.ctype[:n_t] = K.TUMOUR
    cells.site[:n_t] = tumour_sites
    cells.mhc[:n_t] = p.patient.mhc_baseline
    cells.id[:n_t] = np.arange(n_t, dtype=np.int64)  # the initial tumour cells are 0..n_t-1, in site order
    occ[tumour_sites] = np.arange(n_t, dtype=np.int32)
    cells.n[0] = n_t
    cells.next_id[0] = n_t

    immune = [(K.CTL, p.init.ctl_cells), (K.NK, p.init.nk_cells), (K.LAK, p.init.lak_cells)]
    total_immune = sum(n for _, n in immune)
    if total_immune:
        free = np.flatnonzero(occ == K.FREE)
        if p.init.immune_within_um > 0:
            free = free[dist_um[free] <= radius_um + p.init.immune_within_um]
        if total_immune > free.size:
            raise ValueError(
                f"init: {total_immune} immune cells requested but only {free.size} free sites are available"
            )
        chosen = g.choice(free, size=total_immune, replace=False)
        k = 0
        for kind, n in immune:
            for s in chosen[k : k + n]:
                K.spawn(cells, occ, int(s), kind, 0.0)
            k += n

    n_species = len(p.species_names)
    return SimState(
        lattice=lat,
        cells=cells,
        occupancy=occ,
        vessels=vessels,
        conc=np.zeros((n_species, n_sites), dtype=np.float64),
        uptake=np.zeros((n_species, n_sites), dtype=np.float32),
        source=np.zeros((n_species, n_sites), dtype=np.float32),
        initial_tumour_sites=tumour_sites.astype(np.int64),
    )
