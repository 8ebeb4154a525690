"""The ``blocks`` cell schedule (docs/model.md, scheduling): cells act block by block, the blocks of one colour in
parallel.

The lattice is cut into blocks at least ``2 R`` sites wide along each axis, R the reach of one cell's action (the
farthest site it can read or write: its moves plus one neighbour), and the blocks are coloured by the parity of
their block coordinates (up to 8 colours). Two blocks of one colour are at least one block apart, so their cells
cannot touch the same site or cell in one step and can act at the same time. The rule is then: the colours act one
after the other in an order drawn from (seed, step); within a colour every block's cells act in the order of the
step's seeded permutation (:func:`~abm.kernels.cells.shuffled_order`), a cell belonging to the block it sat in at
the start of the step.

That is exactly the sequential visit "colours in the drawn order, blocks of a colour in block order, cells of a
block in permutation order" (:func:`blocks_visit_serial`, the oracle), so the result is the same bits whatever the
thread count or the scheduling of blocks. Daughters go to slots reserved per block (one per cell: a cell has at
most one daughter per step) in visit order, and take their ids in slot order after the step, so after
:func:`~abm.kernels.cells.compact` the cell arrays equal the oracle's. When the reserve does not fit (more than half
the capacity occupied) the step runs the oracle itself.
"""

import numba
import numpy as np

from abm.kernels import cells as K
from abm.kernels import rng
from abm.kernels.config import JIT, PARALLEL
from abm.kernels.geometry import site_coords
from abm.kernels.records import CellArrays, CellRules, Scratch, Tissue

N_COLOURS = 8


@numba.njit(inline="always", **JIT)
def block_of(site, geo, lay):
    """The colour-major position of the block holding ``site``."""
    x, y, z = site_coords(site, geo)
    return lay.rank[lay.axis_x[x] + lay.nbx * (lay.axis_y[y] + lay.nby * lay.axis_z[z])]


@numba.njit(**JIT)
def colour_order(key, out):
    """``out[:8]``: the order in which the colours act this step, drawn from (seed, step)."""
    K.keyed_shuffle(N_COLOURS, key, rng.BLOCK_COLOUR, out)


@numba.njit(**JIT)
def sort_into_blocks(t, geo, key, sc, lay, bs):
    """The step's permutation of the ``n0`` cells, bucketed by block (stable): block ``b``'s cells are
    ``bs.cells[bs.start[b]:bs.start[b + 1]]``, in permutation order. Returns n0."""
    c = t.cells
    n0 = c.n[0]
    K.shuffled_order(n0, key, sc.order)
    nb = lay.rank.shape[0]
    for b in range(nb + 1):
        bs.count[b] = 0
    for j in range(n0):
        bs.count[block_of(c.site[sc.order[j]], geo, lay)] += 1
    acc = 0
    for b in range(nb):
        bs.start[b] = acc
        acc += bs.count[b]
        bs.cursor[b] = bs.start[b]
    bs.start[nb] = acc
    for j in range(n0):
        i = sc.order[j]
        b = block_of(c.site[i], geo, lay)
        bs.cells[bs.cursor[b]] = i
        bs.cursor[b] += 1
    return n0


@numba.njit(**JIT)
def blocks_visit_serial(t, geo, r, key, counters, sc, lay, bs):
    """The oracle: every block's cells act one block at a time in the schedule's visit order (colours in the
    drawn order, blocks of a colour in order). Daughters are appended as in the sequential schedule."""
    sort_into_blocks(t, geo, key, sc, lay, bs)
    colours = bs.colours
    colour_order(key, colours)
    for ci in range(N_COLOURS):
        col = colours[ci]
        lo = bs.start[lay.colour_start[col]]
        hi = bs.start[lay.colour_start[col + 1]]
        K.act_cells(t, geo, r, key, counters, sc, bs.cells[lo:hi])


@numba.njit(**PARALLEL)
def _act_colour(cells, occ, conc, uptake, source, vessels, geo, dt, sp, tumour, ctl, nk, lak, key, sc, bs, first, last):
    """Blocks ``first..last-1`` (one colour) act in parallel, each with its own birth cursor, id counter, event
    counters and neighbour scratch. The records arrive flattened, the one exception to the eight-argument rule: a
    Numba parallel loop can take a record of arrays or scalars, not a record that holds records."""
    c = cells
    for b in numba.prange(first, last):
        cb = CellArrays(
            c.ctype,
            c.site,
            c.mhc,
            c.age_min,
            c.kills,
            c.timer_min,
            c.exposure_min,
            c.sensitisation,
            c.id,
            bs.cursor[b : b + 1],
            bs.ids[b : b + 1],
        )
        tb = Tissue(cb, occ, conc, uptake, source, vessels)
        rb = CellRules(dt, sp, tumour, ctl, nk, lak)
        sb = Scratch(sc.order, bs.free[b], bs.tumour[b], bs.weight[b], sc.vessel_weight)
        K.act_cells(tb, geo, rb, key, bs.counters[b], sb, bs.cells[bs.start[b] : bs.start[b + 1]])


@numba.njit(**JIT)
def step_cells_blocks(t, geo, r, key, counters, sc, lay, bs):
    """One cell step under the blocks schedule (module docstring): blocks of a colour in parallel. Returns True
    when it ran in parallel, False when the daughters' reserve did not fit and it ran the oracle."""
    c = t.cells
    n0 = c.n[0]
    if 2 * n0 > c.ctype.shape[0]:
        blocks_visit_serial(t, geo, r, key, counters, sc, lay, bs)
        return False
    sort_into_blocks(t, geo, key, sc, lay, bs)
    colours = bs.colours
    colour_order(key, colours)
    nb = lay.rank.shape[0]
    acc = n0  # each block's daughters' slots, in visit order, so that compaction gives the oracle's order
    for ci in range(N_COLOURS):
        col = colours[ci]
        for b in range(lay.colour_start[col], lay.colour_start[col + 1]):
            bs.cursor[b] = acc
            acc += bs.count[b]
    for s in range(n0, acc):
        c.ctype[s] = K.EMPTY
        c.id[s] = -1
    for b in range(nb):
        bs.ids[b] = 0
        for k in range(K.N_COUNTERS):
            bs.counters[b, k] = 0
    for ci in range(N_COLOURS):
        col = colours[ci]
        first = lay.colour_start[col]
        last = lay.colour_start[col + 1]
        _act_colour(
            c, t.occupancy, t.conc, t.uptake, t.source, t.vessels, geo, r.dt_min, r.species, r.tumour, r.ctl,
            r.nk, r.lak, key, sc, bs, first, last,
        )  # fmt: skip
    for b in range(nb):
        for k in range(K.N_COUNTERS):
            counters[k] += bs.counters[b, k]
    for s in range(n0, acc):  # ids in slot order, i.e. in the oracle's birth order
        if c.id[s] != -1:
            c.id[s] = c.next_id[0]
            c.next_id[0] += 1
    c.n[0] = acc
    return True


def empty_scratch(n_blocks: int, capacity: int, n_offsets: int):
    """A :data:`~abm.kernels.records.BlockScratch` for ``n_blocks`` blocks."""
    from abm.kernels.records import BlockScratch

    return BlockScratch(
        count=np.zeros(n_blocks + 1, np.int64),
        start=np.zeros(n_blocks + 1, np.int64),
        cells=np.zeros(capacity, np.int64),
        free=np.zeros((n_blocks, n_offsets), np.int64),
        tumour=np.zeros((n_blocks, n_offsets), np.int64),
        weight=np.zeros((n_blocks, n_offsets), np.float64),
        counters=np.zeros((n_blocks, K.N_COUNTERS), np.int64),
        cursor=np.zeros(n_blocks, np.int64),
        ids=np.zeros(n_blocks, np.int64),
        colours=np.zeros(N_COLOURS, np.int64),
    )
