"""The records kernels take: named tuples of arrays and scalars, so a kernel has a few named arguments, not twenty.

- :data:`Geometry`: the lattice as kernels see it (neighbour offsets, shape, periodicity);
- :data:`CellArrays`: structure-of-arrays cell storage; :data:`Tissue`: cells, occupancy, fields and vessels;
- :data:`Scratch`: per-step buffers of the cell step (allocated once); :data:`LesionScratch`: the observer's;
- :data:`StepKey`: the key of every random draw of one step;
- :data:`SpeciesIndex`: which concentration row holds which species the cell rules sense;
- :data:`ExchangeTable`: uptake and secretion, cell type x species.

The cell-rule records (one per cell type, named after the parameter-tree fields they come from) are defined where
they are built from the tree, in :mod:`abm.rules`.

Pure definitions: nothing here imports numba or the rest of abm.
"""

from collections import namedtuple

Geometry = namedtuple("Geometry", ["offsets", "nx", "ny", "nz", "periodic"])
Geometry.__doc__ = """Neighbour offsets (int64 (n, 3), Moore or von Neumann), lattice shape and periodicity (bool)."""

CellArrays = namedtuple(
    "CellArrays",
    ["ctype", "site", "mhc", "age_min", "kills", "timer_min", "exposure_min", "sensitisation", "id", "n", "next_id"],
)
CellArrays.__doc__ = """Per-cell arrays, live cells in ``[0, n[0])``: type (int8), flat site (int32), MHC-I level m
(float32, tumour), age (float32, min; the cell-cycle clock), kills so far (int16), activation window remaining
(float32, min: engaged CTL secrete IL-2 and may proliferate while it runs), cumulative high-IL-2 exposure (float32,
min, NK), IFN-alpha sensitisation to NK/LAK lysis (float32, 0-1, tumour), and a stable identity (int64): a cell's
index changes when :func:`~abm.kernels.cells.compact` closes gaps, its ``id`` never does (it is drawn from the
counter ``next_id`` (int64 (1,)) at spawn and kept when an NK cell becomes a LAK cell). ``n`` (int64 (1,)) is the
live count. Ids are never used as keys of random draws, so they change no trajectory."""

Tissue = namedtuple("Tissue", ["cells", "occupancy", "conc", "uptake", "source", "vessels"])
Tissue.__doc__ = """What the kernels act on: cells (CellArrays), occupancy (int32 per site: cell index, FREE or
VESSEL), conc (float64 (n_species, n_sites)), uptake (float32, 1/min) and source (float32, conc/min) per species
and site, vessels (int64 sorted flat sites)."""

Scratch = namedtuple("Scratch", ["order", "free", "tumour", "weight", "vessel_weight"])
Scratch.__doc__ = """Cell-step buffers: visiting order (int64, capacity), free neighbour sites and adjacent tumour cell
indices (int64, one per neighbour offset), cumulative move weights (float64, one per offset), cumulative vessel
weights for adoptive transfer (float64, one per vessel)."""

LesionScratch = namedtuple("LesionScratch", ["line_lo", "line_hi", "lesion_lo", "lesion_hi", "packed"])
LesionScratch.__doc__ = """Observer buffers: per lattice line (ny * nz) the extreme x of the tumour and of the lesion
(int64), and the packed occupied lines (float64 (ny * nz, 4))."""

StepKey = namedtuple("StepKey", ["seed", "step"])
StepKey.__doc__ = """The key of every draw of one step: the run's seed (uint64) and the step index (int64)."""

SpeciesIndex = namedtuple("SpeciesIndex", ["il2", "ifna", "drug", "chemokine"])
SpeciesIndex.__doc__ = """Rows of the concentration array holding the species the cell rules sense; ``chemokine`` (the
trafficking signal, ``vessels.chemokine``) is -1 when none is configured."""

Trafficking = namedtuple("Trafficking", ["ctl_per_min", "nk_per_min", "dt_min", "chemokine", "half_conc"])
Trafficking.__doc__ = """This step's entry from the blood: CTL and NK rates per vessel site at saturating local signal
(1/min; the whole-patient drivers already applied), the step (min), the chemokine row (-1: none, every vessel alike)
and the local level giving half-maximal extravasation (``vessels.recruitment_half_pM``)."""

CellRules = namedtuple("CellRules", ["dt_min", "species", "tumour", "ctl", "nk", "lak"])
CellRules.__doc__ = """Everything the cell step needs: the agent step (min), the species rows, one record per type
(the per-type records are defined where they are built from the tree, in :mod:`abm.rules`)."""

ExchangeTable = namedtuple(
    "ExchangeTable",
    [
        "uptake_per_min",
        "uptake_saturation",
        "secretion_per_min",
        "induced_per_min",
        "inducer",
        "induction_half",
        "gate",
        "max_kills",
        "rows",
        "type_exchanges",
    ],
)
ExchangeTable.__doc__ = """Cell type x species tables (float64/int8 (n_types, n_species)): uptake rate constant at low
concentration (1/min), Michaelis-Menten K_m (species units), basal secretion (species units per min added to the
cell's site), the extra secretion at saturating inducer (same units), the inducer's row (int64; -1: none) and its
half-maximal level, and the gate that opens secretion (GATE_ALWAYS or GATE_ACTIVATED); max_kills (int64
(n_types,)) closes the activated gate of an exhausted cell; rows (int64): the species some type exchanges;
type_exchanges (bool (n_types,)): whether a type exchanges any species (the others are skipped)."""

BlockLayout = namedtuple("BlockLayout", ["axis_x", "axis_y", "axis_z", "nbx", "nby", "rank", "colour_start"])
BlockLayout.__doc__ = """The blocks of the ``blocks`` cell schedule (:mod:`abm.cell_blocks`): per-axis maps
coordinate -> block coordinate (int64), blocks along x and y, each block's position in the colour-major list
(int64 (n_blocks,), block = bx + nbx (by + nby bz)) and where each of the 8 colours starts in that list (int64 (9,))."""

BlockScratch = namedtuple(
    "BlockScratch",
    ["count", "start", "cells", "free", "tumour", "weight", "counters", "cursor", "ids", "colours"],
)
BlockScratch.__doc__ = """Buffers of the blocks schedule, allocated once: cells per block and where each block's cells
start in ``cells`` (int64 (n_blocks + 1,)), the cells sorted by block (int64, capacity), per-block neighbour
scratch (int64/float64 (n_blocks, n_offsets)), per-block event counters (int64 (n_blocks, N_COUNTERS)), per-block
birth cursor (the next reserved daughter slot) and id counter (int64 (n_blocks,)), this step's colour order
(int64 (8,))."""
