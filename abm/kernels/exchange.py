"""Cell x species exchange: per-site uptake and secretion that the field solver reads this step, from tables.

Each cell type's exchange with each species is data (:data:`~abm.kernels.records.ExchangeTable`, built from
``species.<name>.cells`` in the parameter tree): a new species that some cell type secretes or takes up needs no
change here.
"""

import numba

from abm.kernels.cells import EMPTY
from abm.kernels.config import JIT

GATE_ALWAYS = 0
GATE_ACTIVATED = 1  # within the activation window (timer > 0) and not exhausted (kills < the type's max_kills)


@numba.njit(**JIT)
def fill_exchange(t, table):
    """Write uptake (Michaelis-Menten, linearised at the current concentration: ``k / (1 + c / K_m)``, 1/min) and
    secretion (conc/min: basal + induced I / (I + K_ind), I the inducer's local level) at every site holding a cell
    whose type exchanges a species. Only those sites are
    touched; the caller zeroes the rows of the species that any type exchanges."""
    c = t.cells
    for i in range(c.n[0]):
        kind = c.ctype[i]
        if kind == EMPTY or not table.type_exchanges[kind]:
            continue
        s = c.site[i]
        for sp in table.rows:
            k = table.uptake_per_min[kind, sp]
            if k > 0.0:
                t.uptake[sp, s] = k / (1.0 + t.conc[sp, s] / table.uptake_saturation[kind, sp])
            q = table.secretion_per_min[kind, sp]
            q_ind = table.induced_per_min[kind, sp]
            if q_ind > 0.0:
                f = t.conc[table.inducer[kind, sp], s]
                q += q_ind * f / (f + table.induction_half[kind, sp])
            if q > 0.0:
                if table.gate[kind, sp] == GATE_ALWAYS or (c.timer_min[i] > 0.0 and c.kills[i] < table.max_kills[kind]):
                    t.source[sp, s] = q
