"""Cell rules (docs/model.md, submodels) as Numba kernels over structure-of-arrays cell storage.

Cells live in dense arrays ``[0, n)`` (:data:`~abm.kernels.records.CellArrays`); a death sets the type to EMPTY
and frees the site at once, a birth appends, and :func:`compact` closes the gaps once per step.
``occupancy[site]`` is the cell index, ``FREE`` or ``VESSEL``.

One step of the cells visits every cell alive at the start of the step once, in a random permutation that depends
only on (seed, step): a cell killed before its turn does not act, and when two cells want one site the earlier
one gets it. Every draw is keyed by (seed, step, cell index, purpose) (:mod:`abm.kernels.rng`), so a run is
bit-identical for a given seed whatever the thread count. :func:`step_cells` is sequential by design: the act
phase is a chain of conflicts (sites, targets) whose serial order *is* the model's conflict rule. The ``blocks``
schedule (:mod:`abm.kernels.blocks`) orders the same act phase (:func:`act_cells`) so that blocks of cells that
cannot conflict run in parallel.

Parameters arrive as records (:data:`~abm.kernels.records.CellRules`); no biological number appears here.
"""

import math

import numba
import numpy as np

from abm.kernels import rng
from abm.kernels.config import JIT
from abm.kernels.geometry import offset_site, site_coords

# cell types
EMPTY = 0
TUMOUR = 1
CTL = 2
NK = 3
LAK = 4
N_TYPES = 5

# occupancy codes
FREE = -1
VESSEL = -2

# event counters, reset every step (names in COUNTER_NAMES, same order)
DIV_TUMOUR = 0
DIV_TUMOUR_BLOCKED = 1
DIV_CTL = 2
KILL_CTL = 3
KILL_NK = 4
KILL_LAK = 5
KILL_DRUG = 6
DEATH_TUMOUR = 7
DEATH_CTL_NATURAL = 8
DEATH_CTL_AICD = 9
DEATH_NK_NATURAL = 10
DEATH_LAK_NATURAL = 11
DEATH_LAK_WITHDRAWAL = 12
LAK_CONVERSION = 13
RECRUIT_CTL = 14
RECRUIT_NK = 15
TRANSFER_LAK = 16
TRANSFER_FAILED = 17
CTL_EXHAUSTED = 18
ENGAGED_CTL = 19
DEATH_CTL_DRUG = 20
N_COUNTERS = 21
COUNTER_NAMES = (
    "divisions_tumour",
    "divisions_tumour_blocked",
    "divisions_ctl",
    "kills_ctl",
    "kills_nk",
    "kills_lak",
    "kills_drug",
    "deaths_tumour_spontaneous",
    "deaths_ctl_natural",
    "deaths_ctl_aicd",
    "deaths_nk_natural",
    "deaths_lak_natural",
    "deaths_lak_withdrawal",
    "lak_conversions",
    "recruited_ctl",
    "recruited_nk",
    "transferred_lak",
    "transfer_failed",
    "ctl_exhausted",
    "ctl_engaged",
    "deaths_ctl_drug",
)

_MOVE_PURPOSE_BASE = 1000  # purposes 1000+k: the k-th move of a cell in a step


@numba.njit(**JIT)
def scan_neighbours(site, occupancy, ctype, geo, free_out, tumour_out):
    """Free neighbour sites into ``free_out`` and adjacent tumour cell indices into ``tumour_out``; returns the
    two counts. The site's coordinates are computed once: this scan is most of the cost of a step."""
    nf = 0
    nt = 0
    x0, y0, z0 = site_coords(site, geo)
    for k in range(geo.offsets.shape[0]):
        s = offset_site(x0, y0, z0, k, geo)
        if s < 0:
            continue
        o = occupancy[s]
        if o == FREE:
            free_out[nf] = s
            nf += 1
        elif o >= 0 and ctype[o] == TUMOUR:
            tumour_out[nt] = o
            nt += 1
    return nf, nt


@numba.njit(**JIT)
def spawn(c, occupancy, site, kind, mhc):
    """Append a cell of ``kind`` at a free ``site`` with the next id; returns its index, or -1 when the arrays are
    full (no id is used then)."""
    i = c.n[0]
    if i >= c.ctype.shape[0]:
        return -1
    c.n[0] = i + 1
    c.id[i] = c.next_id[0]
    c.next_id[0] += 1
    c.ctype[i] = kind
    c.site[i] = site
    c.mhc[i] = mhc
    c.age_min[i] = 0.0
    c.kills[i] = 0
    c.timer_min[i] = 0.0
    c.exposure_min[i] = 0.0
    c.sensitisation[i] = 0.0
    occupancy[site] = i
    return i


@numba.njit(inline="always", **JIT)
def remove(c, occupancy, i):
    """Kill cell ``i``: its site is free at once; the slot is reclaimed by :func:`compact`."""
    occupancy[c.site[i]] = FREE
    c.ctype[i] = EMPTY


@numba.njit(**JIT)
def compact(c, occupancy):
    """Close the gaps left by dead cells, keeping order and ids; update occupancy. O(n), no allocation."""
    j = 0
    for i in range(c.n[0]):
        if c.ctype[i] != EMPTY:
            if j != i:
                c.ctype[j] = c.ctype[i]
                c.site[j] = c.site[i]
                c.mhc[j] = c.mhc[i]
                c.age_min[j] = c.age_min[i]
                c.kills[j] = c.kills[i]
                c.timer_min[j] = c.timer_min[i]
                c.exposure_min[j] = c.exposure_min[i]
                c.sensitisation[j] = c.sensitisation[i]
                c.id[j] = c.id[i]
                occupancy[c.site[j]] = j
            j += 1
    for i in range(j, c.n[0]):
        c.ctype[i] = EMPTY
    c.n[0] = j


@numba.njit(**JIT)
def count_of(c, kind):
    """The number of live cells of ``kind``."""
    n = 0
    for i in range(c.n[0]):
        if c.ctype[i] == kind:
            n += 1
    return n


@numba.njit(inline="always", **JIT)
def occupancy_of(c, kd):
    """Receptor occupancy c / (c + K_d)."""
    return c / (c + kd)


@numba.njit(**JIT)
def move(i, t, geo, tr, chem, key, sc):
    """Up to ``tr.moves_per_step`` moves of cell ``i`` into free neighbours (the fractional part is a chance of one
    more), ``tr`` its type's rule record. Each free neighbour s is chosen with weight exp(chi (rho_s - rho_here)),
    chi = ``tr.chemotaxis_sensitivity``, rho = c / (c + K_d) the receptor occupancy of the chemokine (row
    ``chem``; K_d = ``tr.chemokine_receptor_kd_pM``) sensed at s and here: up the gradient, saturating where the
    receptor is; with no gradient (or chi = 0, or no chemokine) an unbiased random walk. Stops beside a tumour
    cell or when boxed in."""
    c = t.cells
    occ = t.occupancy
    n_moves = tr.moves_per_step
    chi = tr.chemotaxis_sensitivity
    kd = tr.chemokine_receptor_kd_pM
    whole = int(n_moves)
    extra = 1 if rng.uniform(key.seed, key.step, i, rng.MOVE_COUNT) < n_moves - whole else 0
    biased = chem >= 0 and chi > 0.0
    for mv in range(whole + extra):
        site = c.site[i]
        nf, nt = scan_neighbours(site, occ, c.ctype, geo, sc.free, sc.tumour)
        if nt > 0 or nf == 0:
            return
        rho0 = occupancy_of(t.conc[chem, site], kd) if biased else 0.0
        total = 0.0
        for k in range(nf):
            w = 1.0
            if biased:
                w = math.exp(chi * (occupancy_of(t.conc[chem, sc.free[k]], kd) - rho0))
            total += w
            sc.weight[k] = total
        u = rng.uniform(key.seed, key.step, i, _MOVE_PURPOSE_BASE + mv) * total
        pick = nf - 1
        for k in range(nf):
            if u < sc.weight[k]:
                pick = k
                break
        new = sc.free[pick]
        occ[site] = FREE
        occ[new] = i
        c.site[i] = new


@numba.njit(**JIT)
def divide_into_free(i, t, geo, key, purpose, kind, mhc, sc):
    """A daughter of ``kind`` for cell ``i`` at a random free neighbour; its index, or -1 (no room or full)."""
    c = t.cells
    nf, _ = scan_neighbours(c.site[i], t.occupancy, c.ctype, geo, sc.free, sc.tumour)
    if nf == 0:
        return -1
    s = sc.free[rng.randint(key.seed, key.step, i, purpose, nf)]
    return spawn(c, t.occupancy, s, kind, mhc)


@numba.njit(**JIT)
def kill_per_step(p_per_interval, attempts):
    """Kill probability in one agent step from the probability per contact interval: ``1 - (1 - p)^attempts``,
    ``attempts = dt / interval`` (exactly ``p`` at one attempt, so the kill rate is independent of the step)."""
    if attempts == 1.0:
        return p_per_interval
    return 1.0 - (1.0 - p_per_interval) ** attempts


@numba.njit(**JIT)
def _ctl_step(i, t, geo, r, key, counters, sc):
    c = t.cells
    occ = t.occupancy
    chem = r.species.chemokine
    cr = r.ctl
    dt = r.dt_min
    site = c.site[i]
    il2 = t.conc[r.species.il2, site]
    if rng.uniform(key.seed, key.step, i, rng.DEATH) < cr.death_prob_per_step:
        remove(c, occ, i)
        counters[DEATH_CTL_NATURAL] += 1
        return
    exhausted = c.kills[i] >= cr.max_kills
    # a CTL in its proliferative window is cycling, so the cytotoxic drug can kill it (docs/model.md 7.2)
    drug = t.conc[r.species.drug, site]
    if drug > 0.0 and not exhausted and (c.timer_min[i] > 0.0 or not cr.prolif_requires_activation):
        if rng.uniform(key.seed, key.step, i, rng.DRUG_KILL) < -math.expm1(-cr.drug_kill_per_uM_per_min * drug * dt):
            remove(c, occ, i)
            counters[DEATH_CTL_DRUG] += 1
            return
    nf, nt = scan_neighbours(site, occ, c.ctype, geo, sc.free, sc.tumour)
    if nt > 0 and not exhausted:
        counters[ENGAGED_CTL] += 1
        c.timer_min[i] = cr.secretion_window_min
        p_aicd = -math.expm1(-cr.aicd_rate_per_min * il2 / (il2 + cr.aicd_half_pM) * dt)
        if rng.uniform(key.seed, key.step, i, rng.AICD) < p_aicd:
            remove(c, occ, i)
            counters[DEATH_CTL_AICD] += 1
            return
        tgt = sc.tumour[rng.randint(key.seed, key.step, i, rng.KILL_TARGET, nt)]
        if rng.uniform(key.seed, key.step, i, rng.KILL) < kill_per_step(
            cr.kill_prob * c.mhc[tgt], cr.kill_attempts_per_step
        ):
            remove(c, occ, tgt)
            counters[KILL_CTL] += 1
            c.kills[i] += 1
            if c.kills[i] >= cr.max_kills:
                counters[CTL_EXHAUSTED] += 1
                c.timer_min[i] = 0.0
    else:
        c.timer_min[i] = max(0.0, c.timer_min[i] - dt)
        if nt == 0:
            move(i, t, geo, cr, chem, key, sc)
    if not exhausted and (c.timer_min[i] > 0.0 or not cr.prolif_requires_activation):
        ifn = t.conc[r.species.ifna, site]
        k_il2 = cr.il2_prolif_half_pM * (1.0 + cr.ifn_cd25_suppression * ifn / (ifn + cr.ifn_cd25_half_pM))
        p_prolif = cr.prolif_prob_max_per_step * il2 / (il2 + k_il2)
        if rng.uniform(key.seed, key.step, i, rng.PROLIF) < p_prolif:
            if divide_into_free(i, t, geo, key, rng.PROLIF_SITE, CTL, 0.0, sc) >= 0:
                counters[DIV_CTL] += 1


@numba.njit(**JIT)
def _nk_step(i, t, geo, r, key, counters, sc):
    c = t.cells
    occ = t.occupancy
    chem = r.species.chemokine
    nr = r.nk
    site = c.site[i]
    il2 = t.conc[r.species.il2, site]
    ifn = t.conc[r.species.ifna, site]
    if rng.uniform(key.seed, key.step, i, rng.DEATH) < nr.death_prob_per_step:
        remove(c, occ, i)
        counters[DEATH_NK_NATURAL] += 1
        return
    if il2 > nr.lak_threshold_pM:  # IFN-alpha present at the same time slows LAK generation
        c.exposure_min[i] += r.dt_min / (1.0 + nr.ifn_lak_suppression * ifn / (ifn + nr.ifn_lak_suppression_half_pM))
        if c.exposure_min[i] >= nr.lak_exposure_min:
            c.ctype[i] = LAK  # the same cell, so the same id
            c.kills[i] = 0
            c.age_min[i] = 0.0
            counters[LAK_CONVERSION] += 1
            return
    nf, nt = scan_neighbours(site, occ, c.ctype, geo, sc.free, sc.tumour)
    if nt > 0:
        if c.kills[i] < nr.max_kills:
            a_il2 = il2 / (il2 + nr.il2_activation_half_pM)
            a_ifn = ifn / (ifn + nr.ifn_activation_half_pM)
            act = nr.baseline_activation + (1.0 - nr.baseline_activation) * (1.0 - (1.0 - a_il2) * (1.0 - a_ifn))
            tgt = sc.tumour[rng.randint(key.seed, key.step, i, rng.KILL_TARGET, nt)]
            p = min(1.0, nr.kill_prob * (1.0 - c.mhc[tgt]) * act * (1.0 + nr.ifn_lysis_gain * c.sensitisation[tgt]))
            if rng.uniform(key.seed, key.step, i, rng.KILL) < kill_per_step(p, nr.kill_attempts_per_step):
                remove(c, occ, tgt)
                counters[KILL_NK] += 1
                c.kills[i] += 1
    else:
        move(i, t, geo, nr, chem, key, sc)


@numba.njit(**JIT)
def _lak_step(i, t, geo, r, key, counters, sc):
    c = t.cells
    occ = t.occupancy
    chem = r.species.chemokine
    lr = r.lak
    site = c.site[i]
    il2 = t.conc[r.species.il2, site]
    if rng.uniform(key.seed, key.step, i, rng.DEATH) < lr.death_prob_per_step:
        remove(c, occ, i)
        counters[DEATH_LAK_NATURAL] += 1
        return
    if il2 < lr.withdrawal_threshold_pM:
        if rng.uniform(key.seed, key.step, i, rng.WITHDRAWAL) < lr.withdrawal_death_prob_per_step:
            remove(c, occ, i)
            counters[DEATH_LAK_WITHDRAWAL] += 1
            return
    nf, nt = scan_neighbours(site, occ, c.ctype, geo, sc.free, sc.tumour)
    if nt > 0:
        if c.kills[i] < lr.max_kills:
            tgt = sc.tumour[rng.randint(key.seed, key.step, i, rng.KILL_TARGET, nt)]
            p = min(1.0, lr.kill_prob * (1.0 + lr.ifn_lysis_gain * c.sensitisation[tgt]))
            if rng.uniform(key.seed, key.step, i, rng.KILL) < kill_per_step(p, lr.kill_attempts_per_step):
                remove(c, occ, tgt)
                counters[KILL_LAK] += 1
                c.kills[i] += 1
    else:
        move(i, t, geo, lr, chem, key, sc)


@numba.njit(**JIT)
def keyed_shuffle(n, key, purpose, out):
    """``out[:n]``: a permutation of ``0..n-1`` that depends only on (seed, step, purpose) (Fisher-Yates with
    keyed draws)."""
    for j in range(n):
        out[j] = j
    for j in range(n - 1, 0, -1):
        k = rng.randint(key.seed, key.step, j, purpose, j + 1)
        tmp = out[j]
        out[j] = out[k]
        out[k] = tmp


@numba.njit(**JIT)
def shuffled_order(n0, key, order):
    """``order[:n0]``: the step's visiting order of the cells ``0..n0-1``."""
    keyed_shuffle(n0, key, rng.ORDER, order)


@numba.njit(**JIT)
def step_cells(t, geo, r, key, counters, sc):
    """Advance every cell alive at the start of the step by one step ``r.dt_min`` (docs/model.md, scheduling,
    item 3): in a seeded random order, each senses its site, updates its state, then acts."""
    n0 = t.cells.n[0]
    shuffled_order(n0, key, sc.order)
    act_cells(t, geo, r, key, counters, sc, sc.order[:n0])


@numba.njit(**JIT)
def act_cells(t, geo, r, key, counters, sc, order):
    """The cells ``order`` (cell indices) act, one after the other (a cell already dead is skipped): the act phase of
    :func:`step_cells`, also run on one block at a time by :mod:`abm.kernels.blocks`."""
    c = t.cells
    # the records' members are bound once here, not per cell: passing a record of arrays to a function costs a
    # reference-count update per array, which per tumour cell (most of the cells) doubled the cost of a step
    occ = t.occupancy
    conc = t.conc
    tr = r.tumour
    dt = r.dt_min
    ifna = r.species.ifna
    drug_row = r.species.drug
    for jj in range(order.shape[0]):
        i = order[jj]
        kind = c.ctype[i]
        if kind == EMPTY:
            continue
        c.age_min[i] += dt
        if kind == TUMOUR:  # written out here, not called: it runs for most cells
            site = c.site[i]
            ifn = conc[ifna, site]
            if tr.death_prob_per_step > 0.0 and rng.uniform(key.seed, key.step, i, rng.DEATH) < tr.death_prob_per_step:
                remove(c, occ, i)
                counters[DEATH_TUMOUR] += 1
                continue
            drug = conc[drug_row, site]
            p_div = tr.division_prob_per_step / (1.0 + ifn / tr.ifn_prolif_half_pM)
            divide = rng.uniform(key.seed, key.step, i, rng.DIVIDE) < p_div
            nf = 0
            if drug > 0.0 or divide:  # the neighbourhood matters only for the drug or a division
                nf, _ = scan_neighbours(site, occ, c.ctype, geo, sc.free, sc.tumour)
            cycling = nf > 0  # contact inhibition: only cells with room to divide are in cycle
            if cycling and drug > 0.0:
                p_kill = -math.expm1(-tr.drug_kill_per_uM_per_min * drug * dt)
                if rng.uniform(key.seed, key.step, i, rng.DRUG_KILL) < p_kill:
                    remove(c, occ, i)
                    counters[KILL_DRUG] += 1
                    continue
            target_m = tr.mhc_baseline + (1.0 - tr.mhc_baseline) * ifn / (ifn + tr.mhc_ifn_half_pM)
            c.mhc[i] += (target_m - c.mhc[i]) * tr.mhc_relax_per_step
            # IFN-alpha sensitisation to NK/LAK lysis builds up under exposure and decays after it (7.1)
            target_s = ifn / (ifn + tr.ifn_sensitisation_half_pM)
            c.sensitisation[i] += (target_s - c.sensitisation[i]) * tr.sensitisation_relax_per_step
            if divide:
                if nf > 0:
                    s = sc.free[rng.randint(key.seed, key.step, i, rng.DIVIDE_SITE, nf)]
                    d = spawn(c, occ, s, TUMOUR, c.mhc[i])
                    if d >= 0:
                        c.sensitisation[d] = c.sensitisation[i]
                    counters[DIV_TUMOUR] += 1
                else:
                    counters[DIV_TUMOUR_BLOCKED] += 1
        elif kind == CTL:
            _ctl_step(i, t, geo, r, key, counters, sc)
        elif kind == NK:
            _nk_step(i, t, geo, r, key, counters, sc)
        elif kind == LAK:
            _lak_step(i, t, geo, r, key, counters, sc)


@numba.njit(inline="always", **JIT)
def local_signal(t, site, tr):
    """Extravasation drive at a vessel site: c / (c + K_rec) of the chemokine there (1 with no chemokine)."""
    if tr.chemokine < 0:
        return 1.0
    c = t.conc[tr.chemokine, site]
    return c / (c + tr.half_conc)


@numba.njit(**JIT)
def recruit(t, geo, tr, key, counters, sc):
    """Each vessel site lets in a CTL and an NK cell with probabilities ``1 - exp(-r g dt)`` this step, r the
    per-vessel rates of ``tr`` (a :data:`~abm.kernels.records.Trafficking`) and g the local chemokine signal at
    the vessel: entry is local to where the lesion's chemokine is. Each entrant takes a random free neighbour
    (none free: no entry). Vessels are visited in site order; draws keyed by vessel."""
    c = t.cells
    for v in range(t.vessels.shape[0]):
        vs = t.vessels[v]
        g = local_signal(t, vs, tr)
        if g <= 0.0:
            continue
        for kind in (CTL, NK):
            rate = tr.ctl_per_min if kind == CTL else tr.nk_per_min
            purpose = rng.RECRUIT_CTL if kind == CTL else rng.RECRUIT_NK
            if rate <= 0.0 or rng.uniform(key.seed, key.step, v, purpose) >= -math.expm1(-rate * g * tr.dt_min):
                continue
            nf, _ = scan_neighbours(vs, t.occupancy, c.ctype, geo, sc.free, sc.tumour)
            if nf == 0:
                continue
            s = sc.free[rng.randint(key.seed, key.step, v, rng.RECRUIT_SITE + 100 * kind, nf)]
            if spawn(c, t.occupancy, s, kind, 0.0) >= 0:
                counters[RECRUIT_CTL if kind == CTL else RECRUIT_NK] += 1


@numba.njit(**JIT)
def transfer_lak(t, geo, n_cells, tr, key, counters, sc):
    """Adoptive transfer: ``n_cells`` LAK cells leave the blood next to vessel sites chosen with weight g, the
    local chemokine signal (as recruitment; uniform where there is none anywhere), several tries each."""
    c = t.cells
    nv = t.vessels.shape[0]
    if nv == 0:
        counters[TRANSFER_FAILED] += n_cells
        return
    total = 0.0
    for v in range(nv):
        total += local_signal(t, t.vessels[v], tr)
        sc.vessel_weight[v] = total
    for k in range(n_cells):
        placed = False
        for attempt in range(16):
            u = rng.uniform(key.seed, key.step, k * 16 + attempt, rng.TRANSFER)
            if total > 0.0:
                v = np.searchsorted(sc.vessel_weight[:nv], u * total, side="right")
                v = min(v, nv - 1)
            else:
                v = min(int(u * nv), nv - 1)
            nf, _ = scan_neighbours(t.vessels[v], t.occupancy, c.ctype, geo, sc.free, sc.tumour)
            if nf > 0:
                s = sc.free[rng.randint(key.seed, key.step, k * 16 + attempt, rng.RECRUIT_SITE, nf)]
                if spawn(c, t.occupancy, s, LAK, 0.0) >= 0:
                    placed = True
                    break
        if placed:
            counters[TRANSFER_LAK] += 1
        else:
            counters[TRANSFER_FAILED] += 1


@numba.njit(**JIT)
def count_types(c, out):
    for k in range(out.shape[0]):
        out[k] = 0
    for i in range(c.n[0]):
        out[c.ctype[i]] += 1
    return out


@numba.njit(**JIT)
def check_consistency(c, occupancy):
    """0 if occupancy and cell arrays agree (each live cell on its own site, each occupied site pointing back),
    else a code saying what broke; for tests and debugging."""
    seen = 0
    for i in range(c.n[0]):
        if c.ctype[i] == EMPTY:
            return 1
        if occupancy[c.site[i]] != i:
            return 2
    for s in range(occupancy.shape[0]):
        o = occupancy[s]
        if o >= 0:
            seen += 1
            if o >= c.n[0] or c.site[o] != s:
                return 3
    if seen != c.n[0]:
        return 4
    return 0


def empty_counters() -> np.ndarray:
    return np.zeros(N_COUNTERS, dtype=np.int64)
