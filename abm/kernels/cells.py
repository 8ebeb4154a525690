"""Cell rules (SCIENCE.md section 4) as Numba kernels over structure-of-arrays cell storage.

Cells live in dense arrays ``[0, n)`` (see :mod:`abm.state`); a death sets the type to EMPTY and frees the site at
once, a birth appends, and :func:`compact` closes the gaps once per step. ``occupancy[site]`` is the cell index,
``FREE`` or ``VESSEL``.

One step of the cells visits every cell alive at the start of the step once, in a random permutation that depends
only on (seed, step): a cell killed before its turn does not act, and when two cells want one site the earlier
one gets it. Every draw is keyed by (seed, step, cell index, purpose) (:mod:`abm.kernels.rng`), so a run is
bit-identical for a given seed whatever the thread count. The loop is sequential by design: the act phase is a
chain of conflicts (sites, targets) whose serial order *is* the model's conflict rule.

Parameters arrive as a named tuple of scalars (:class:`abm.state.CellRules`); no biological number appears here.
"""

import math

import numba
import numpy as np

from abm.kernels import rng
from abm.kernels.config import JIT

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

# species rows in the concentration array (abm.params.REQUIRED_SPECIES order)
IL2 = 0
IFNA = 1
DRUG = 2

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
N_COUNTERS = 20
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
)

_MOVE_PURPOSE_BASE = 1000  # purposes 1000+k: the k-th move of a cell in a step


@numba.njit(**JIT)
def scan_neighbours(site, occ, ctype, offs, nx, ny, nz, periodic, free_out, tumour_out):
    """Free neighbour sites into ``free_out`` and adjacent tumour cell indices into ``tumour_out``; counts.

    The site's coordinates are computed once (not per neighbour): this scan is most of the cost of a step."""
    nf = 0
    nt = 0
    x0 = site % nx
    yz = site // nx
    y0 = yz % ny
    z0 = yz // ny
    for k in range(offs.shape[0]):
        x = x0 + offs[k, 0]
        y = y0 + offs[k, 1]
        z = z0 + offs[k, 2]
        if periodic:
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
            continue
        s = x + nx * (y + ny * z)
        o = occ[s]
        if o == FREE:
            free_out[nf] = s
            nf += 1
        elif o >= 0 and ctype[o] == TUMOUR:
            tumour_out[nt] = o
            nt += 1
    return nf, nt


@numba.njit(**JIT)
def spawn(c, occ, site, kind, mhc):
    """Append a cell of ``kind`` at a free ``site``; returns its index, or -1 when the arrays are full."""
    i = c.n[0]
    if i >= c.ctype.shape[0]:
        return -1
    c.n[0] = i + 1
    c.ctype[i] = kind
    c.site[i] = site
    c.mhc[i] = mhc
    c.age_min[i] = 0.0
    c.kills[i] = 0
    c.timer_min[i] = 0.0
    c.exposure_min[i] = 0.0
    occ[site] = i
    return i


@numba.njit(inline="always", **JIT)
def remove(c, occ, i):
    """Kill cell ``i``: its site is free at once; the slot is reclaimed by :func:`compact`."""
    occ[c.site[i]] = FREE
    c.ctype[i] = EMPTY


@numba.njit(**JIT)
def compact(c, occ):
    """Close the gaps left by dead cells, keeping order; update occupancy. O(n), no allocation."""
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
                occ[c.site[j]] = j
            j += 1
    for i in range(j, c.n[0]):
        c.ctype[i] = EMPTY
    c.n[0] = j


@numba.njit(**JIT)
def _move(i, c, occ, offs, nx, ny, nz, periodic, n_moves, bias, centroid, seed, step, free_buf, tum_buf, wbuf):
    """Up to ``n_moves`` moves into free Moore neighbours, each biased toward the tumour centroid by
    weights exp(bias * cos(angle)); stops beside a tumour cell or when boxed in."""
    whole = int(n_moves)
    extra = 1 if rng.uniform(seed, step, i, rng.MOVE_COUNT) < n_moves - whole else 0
    for mv in range(whole + extra):
        site = c.site[i]
        nf, nt = scan_neighbours(site, occ, c.ctype, offs, nx, ny, nz, periodic, free_buf, tum_buf)
        if nt > 0 or nf == 0:
            return
        x = site % nx
        y = (site // nx) % ny
        z = site // (nx * ny)
        dx = centroid[0] - x
        dy = centroid[1] - y
        dz = centroid[2] - z
        dn = math.sqrt(dx * dx + dy * dy + dz * dz)
        total = 0.0
        for k in range(nf):
            w = 1.0
            if bias > 0.0 and dn > 1e-9:
                s = free_buf[k]
                ox = s % nx - x
                oy = (s // nx) % ny - y
                oz = s // (nx * ny) - z
                on = math.sqrt(ox * ox + oy * oy + oz * oz)
                w = math.exp(bias * (ox * dx + oy * dy + oz * dz) / (on * dn))
            total += w
            wbuf[k] = total
        u = rng.uniform(seed, step, i, _MOVE_PURPOSE_BASE + mv) * total
        pick = nf - 1
        for k in range(nf):
            if u < wbuf[k]:
                pick = k
                break
        new = free_buf[pick]
        occ[site] = FREE
        occ[new] = i
        c.site[i] = new


@numba.njit(**JIT)
def _divide_into_free(i, c, occ, offs, nx, ny, nz, periodic, seed, step, purpose, kind, mhc, free_buf, tum_buf):
    nf, _ = scan_neighbours(c.site[i], occ, c.ctype, offs, nx, ny, nz, periodic, free_buf, tum_buf)
    if nf == 0:
        return -1
    s = free_buf[rng.randint(seed, step, i, purpose, nf)]
    return spawn(c, occ, s, kind, mhc)


@numba.njit(**JIT)
def step_cells(
    c, occ, conc, offs, nx, ny, nz, periodic, r, centroid, seed, step, counters, order, free_buf, tum_buf, wbuf
):
    """Advance every cell alive at the start of the step by one step ``r.dt_min`` (SCIENCE.md s3, item 3)."""
    n0 = c.n[0]
    for j in range(n0):
        order[j] = j
    for j in range(n0 - 1, 0, -1):  # Fisher-Yates with keyed draws: the order depends only on (seed, step)
        k = rng.randint(seed, step, j, rng.ORDER, j + 1)
        t = order[j]
        order[j] = order[k]
        order[k] = t
    dt = r.dt_min
    for jj in range(n0):
        i = order[jj]
        kind = c.ctype[i]
        if kind == EMPTY:
            continue
        site = c.site[i]
        il2 = conc[IL2, site]
        ifn = conc[IFNA, site]
        c.age_min[i] += dt
        if kind == TUMOUR:
            if r.p_tumour_death > 0.0 and rng.uniform(seed, step, i, rng.DEATH) < r.p_tumour_death:
                remove(c, occ, i)
                counters[DEATH_TUMOUR] += 1
                continue
            drug = conc[DRUG, site]
            p_div = r.p_div_max / (1.0 + ifn / r.ifn_prolif_half)
            divide = rng.uniform(seed, step, i, rng.DIVIDE) < p_div
            nf = 0
            if drug > 0.0 or divide:  # the neighbourhood matters only for the drug or a division
                nf, _ = scan_neighbours(site, occ, c.ctype, offs, nx, ny, nz, periodic, free_buf, tum_buf)
            cycling = nf > 0  # contact inhibition: only cells with room to divide are in cycle
            if cycling and drug > 0.0:
                if rng.uniform(seed, step, i, rng.DRUG) < -math.expm1(-r.drug_kill_per_conc_per_min * drug * dt):
                    remove(c, occ, i)
                    counters[KILL_DRUG] += 1
                    continue
            target = r.mhc_baseline + (1.0 - r.mhc_baseline) * ifn / (ifn + r.mhc_ifn_half)
            c.mhc[i] += (target - c.mhc[i]) * r.mhc_relax
            if divide:
                if nf > 0:
                    spawn(c, occ, free_buf[rng.randint(seed, step, i, rng.DIVIDE_SITE, nf)], TUMOUR, c.mhc[i])
                    counters[DIV_TUMOUR] += 1
                else:
                    counters[DIV_TUMOUR_BLOCKED] += 1
        elif kind == CTL:
            if rng.uniform(seed, step, i, rng.DEATH) < r.p_ctl_death:
                remove(c, occ, i)
                counters[DEATH_CTL_NATURAL] += 1
                continue
            exhausted = c.kills[i] >= r.ctl_max_kills
            nf, nt = scan_neighbours(site, occ, c.ctype, offs, nx, ny, nz, periodic, free_buf, tum_buf)
            if nt > 0 and not exhausted:
                counters[ENGAGED_CTL] += 1
                c.timer_min[i] = r.ctl_window_min
                p_aicd = -math.expm1(-r.ctl_aicd_per_min * il2 / (il2 + r.ctl_aicd_half) * dt)
                if rng.uniform(seed, step, i, rng.AICD) < p_aicd:
                    remove(c, occ, i)
                    counters[DEATH_CTL_AICD] += 1
                    continue
                tgt = tum_buf[rng.randint(seed, step, i, rng.KILL_TARGET, nt)]
                if rng.uniform(seed, step, i, rng.KILL) < r.p_ctl_kill * c.mhc[tgt]:
                    remove(c, occ, tgt)
                    counters[KILL_CTL] += 1
                    c.kills[i] += 1
                    if c.kills[i] >= r.ctl_max_kills:
                        counters[CTL_EXHAUSTED] += 1
                        c.timer_min[i] = 0.0
            else:
                c.timer_min[i] = max(0.0, c.timer_min[i] - dt)
                if nt == 0:
                    _move(
                        i,
                        c,
                        occ,
                        offs,
                        nx,
                        ny,
                        nz,
                        periodic,
                        r.ctl_moves,
                        r.ctl_bias,
                        centroid,
                        seed,
                        step,
                        free_buf,
                        tum_buf,
                        wbuf,
                    )
            if not exhausted and (c.timer_min[i] > 0.0 or not r.ctl_prolif_requires_activation):
                p_prolif = r.p_ctl_prolif_max * il2 / (il2 + r.ctl_prolif_half)
                if rng.uniform(seed, step, i, rng.PROLIF) < p_prolif:
                    d = _divide_into_free(
                        i, c, occ, offs, nx, ny, nz, periodic, seed, step, rng.PROLIF_SITE, CTL, 0.0, free_buf, tum_buf
                    )
                    if d >= 0:
                        counters[DIV_CTL] += 1
        elif kind == NK:
            if rng.uniform(seed, step, i, rng.DEATH) < r.p_nk_death:
                remove(c, occ, i)
                counters[DEATH_NK_NATURAL] += 1
                continue
            if il2 > r.lak_threshold:
                c.exposure_min[i] += dt
                if c.exposure_min[i] >= r.lak_exposure_min:
                    c.ctype[i] = LAK
                    c.kills[i] = 0
                    c.age_min[i] = 0.0
                    counters[LAK_CONVERSION] += 1
                    continue
            nf, nt = scan_neighbours(site, occ, c.ctype, offs, nx, ny, nz, periodic, free_buf, tum_buf)
            if nt > 0:
                if c.kills[i] < r.nk_max_kills:
                    a_il2 = il2 / (il2 + r.nk_il2_half)
                    a_ifn = ifn / (ifn + r.nk_ifn_half)
                    act = r.nk_a0 + (1.0 - r.nk_a0) * (1.0 - (1.0 - a_il2) * (1.0 - a_ifn))
                    tgt = tum_buf[rng.randint(seed, step, i, rng.KILL_TARGET, nt)]
                    if rng.uniform(seed, step, i, rng.KILL) < r.p_nk_kill * (1.0 - c.mhc[tgt]) * act:
                        remove(c, occ, tgt)
                        counters[KILL_NK] += 1
                        c.kills[i] += 1
            else:
                _move(
                    i,
                    c,
                    occ,
                    offs,
                    nx,
                    ny,
                    nz,
                    periodic,
                    r.nk_moves,
                    r.nk_bias,
                    centroid,
                    seed,
                    step,
                    free_buf,
                    tum_buf,
                    wbuf,
                )
        elif kind == LAK:
            if rng.uniform(seed, step, i, rng.DEATH) < r.p_lak_death:
                remove(c, occ, i)
                counters[DEATH_LAK_NATURAL] += 1
                continue
            if il2 < r.lak_withdrawal_threshold:
                if rng.uniform(seed, step, i, rng.WITHDRAWAL) < r.p_lak_withdrawal:
                    remove(c, occ, i)
                    counters[DEATH_LAK_WITHDRAWAL] += 1
                    continue
            nf, nt = scan_neighbours(site, occ, c.ctype, offs, nx, ny, nz, periodic, free_buf, tum_buf)
            if nt > 0:
                if c.kills[i] < r.lak_max_kills:
                    tgt = tum_buf[rng.randint(seed, step, i, rng.KILL_TARGET, nt)]
                    if rng.uniform(seed, step, i, rng.KILL) < r.p_lak_kill:
                        remove(c, occ, tgt)
                        counters[KILL_LAK] += 1
                        c.kills[i] += 1
            else:
                _move(
                    i,
                    c,
                    occ,
                    offs,
                    nx,
                    ny,
                    nz,
                    periodic,
                    r.lak_moves,
                    r.lak_bias,
                    centroid,
                    seed,
                    step,
                    free_buf,
                    tum_buf,
                    wbuf,
                )


@numba.njit(**JIT)
def recruit(c, occ, vessels, offs, nx, ny, nz, periodic, p_ctl, p_nk, seed, step, counters, free_buf, tum_buf):
    """Each vessel site lets in a CTL with probability ``p_ctl`` and an NK cell with ``p_nk`` this step, each at a
    random free Moore neighbour (none free: no entry). Vessels are visited in site order; draws keyed by vessel."""
    for v in range(vessels.shape[0]):
        vs = vessels[v]
        for kind in (CTL, NK):
            p = p_ctl if kind == CTL else p_nk
            purpose = rng.RECRUIT_CTL if kind == CTL else rng.RECRUIT_NK
            if p <= 0.0 or rng.uniform(seed, step, v, purpose) >= p:
                continue
            nf, _ = scan_neighbours(vs, occ, c.ctype, offs, nx, ny, nz, periodic, free_buf, tum_buf)
            if nf == 0:
                continue
            s = free_buf[rng.randint(seed, step, v, rng.RECRUIT_SITE + 100 * kind, nf)]
            if spawn(c, occ, s, kind, 0.0) >= 0:
                counters[RECRUIT_CTL if kind == CTL else RECRUIT_NK] += 1


@numba.njit(**JIT)
def transfer_lak(c, occ, vessels, offs, nx, ny, nz, periodic, n_cells, seed, step, counters, free_buf, tum_buf):
    """Adoptive transfer: ``n_cells`` LAK cells enter next to randomly chosen vessel sites (several tries each)."""
    nv = vessels.shape[0]
    if nv == 0:
        counters[TRANSFER_FAILED] += n_cells
        return
    for k in range(n_cells):
        placed = False
        for attempt in range(16):
            v = rng.randint(seed, step, k * 16 + attempt, rng.TRANSFER, nv)
            nf, _ = scan_neighbours(vessels[v], occ, c.ctype, offs, nx, ny, nz, periodic, free_buf, tum_buf)
            if nf > 0:
                s = free_buf[rng.randint(seed, step, k * 16 + attempt, rng.RECRUIT_SITE, nf)]
                if spawn(c, occ, s, LAK, 0.0) >= 0:
                    placed = True
                    break
        if placed:
            counters[TRANSFER_LAK] += 1
        else:
            counters[TRANSFER_FAILED] += 1


@numba.njit(**JIT)
def fill_il2_exchange(c, conc, uptake, source, r):
    """Per-site IL-2 uptake (Michaelis-Menten, linearised at the current concentration) and secretion that the
    field solver reads this step. Only sites holding cells are touched; the caller zeroes row IL2 first."""
    for i in range(c.n[0]):
        kind = c.ctype[i]
        if kind == EMPTY or kind == TUMOUR:
            continue
        s = c.site[i]
        il2 = conc[IL2, s]
        if kind == CTL:
            uptake[IL2, s] = r.ctl_uptake / (1.0 + il2 / r.ctl_uptake_km)
            if c.timer_min[i] > 0.0 and c.kills[i] < r.ctl_max_kills:
                source[IL2, s] = r.ctl_secretion_conc_per_min
        elif kind == NK:
            uptake[IL2, s] = r.nk_uptake / (1.0 + il2 / r.nk_uptake_km)
        else:
            uptake[IL2, s] = r.lak_uptake / (1.0 + il2 / r.lak_uptake_km)


@numba.njit(**JIT)
def count_types(c, out):
    for k in range(out.shape[0]):
        out[k] = 0
    for i in range(c.n[0]):
        out[c.ctype[i]] += 1
    return out


@numba.njit(**JIT)
def check_consistency(c, occ):
    """0 if occupancy and cell arrays agree (each live cell on its own site, each occupied site pointing back),
    else a code saying what broke; for tests and debugging."""
    seen = 0
    for i in range(c.n[0]):
        if c.ctype[i] == EMPTY:
            return 1
        if occ[c.site[i]] != i:
            return 2
    for s in range(occ.shape[0]):
        o = occ[s]
        if o >= 0:
            seen += 1
            if o >= c.n[0] or c.site[o] != s:
                return 3
    if seen != c.n[0]:
        return 4
    return 0


def empty_counters() -> np.ndarray:
    return np.zeros(N_COUNTERS, dtype=np.int64)
