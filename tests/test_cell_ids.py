"""Stable per-cell ids (``CellArrays.id``): drawn from a counter at spawn, kept through compaction and through the
NK -> LAK conversion, never reused; and they change no trajectory (tests/golden.py covers the bits)."""

from __future__ import annotations

import numpy as np

from abm import Model
from abm.kernels import cells as K
from abm.state import initial_state
from tests.conftest import TINY_SETS
from tests.test_cells import Bench


def _live(c):
    n = int(c.n[0])
    return {name: np.array(getattr(c, name)[:n]) for name in ("id", "ctype", "site", "age_min", "kills")}


def test_initial_cells_have_distinct_ids_from_zero():
    m = Model("untreated", sets=[*TINY_SETS, "init.ctl_cells=5", "init.nk_cells=5"], seed=2)
    c = m.state.cells
    n = int(c.n[0])
    ids = c.id[:n]
    assert np.array_equal(np.sort(ids), np.arange(n)), ids
    assert int(c.next_id[0]) == n
    tumour = c.ctype[:n] == K.TUMOUR
    # the tumour cells come first, numbered in site order
    assert np.array_equal(ids[tumour], np.arange(int(tumour.sum())))
    assert np.all(np.diff(c.site[:n][tumour]) > 0)


def test_spawn_numbers_cells_and_compact_keeps_each_id_with_its_cell():
    b = Bench(10, 10)
    sites = [3, 17, 25, 40, 41, 77]
    idx = [b.put(s % 10, s // 10, K.TUMOUR) for s in sites]
    c, occ = b.state.cells, b.state.occupancy
    assert [int(c.id[i]) for i in idx] == list(range(int(c.next_id[0]) - 6, int(c.next_id[0])))
    before = {int(c.site[i]): int(c.id[i]) for i in idx}
    K.remove(c, occ, idx[1])
    K.remove(c, occ, idx[3])
    K.compact(c, occ)
    assert K.check_consistency(c, occ) == 0
    n = int(c.n[0])
    after = {int(c.site[i]): int(c.id[i]) for i in range(n)}
    assert after == {s: i for s, i in before.items() if s not in (17, 40)}
    # a newcomer gets a fresh id, never one of the dead
    j = K.spawn(c, occ, 55, K.CTL, 0.0)
    assert int(c.id[j]) == max(before.values()) + 1


def test_spawn_into_full_arrays_uses_no_id():
    p_sets = ["lattice.nx=4", "lattice.ny=4", "init.tumour_radius_um=0", "init.cell_capacity=2"]
    from abm.params import Params

    s = initial_state(Params.from_overrides(None, p_sets), 1)
    c, occ = s.cells, s.occupancy
    assert K.spawn(c, occ, 0, K.TUMOUR, 0.3) == 0
    assert K.spawn(c, occ, 1, K.TUMOUR, 0.3) == 1
    assert K.spawn(c, occ, 2, K.TUMOUR, 0.3) == -1
    assert int(c.next_id[0]) == 2


def test_lak_conversion_keeps_the_id():
    b = Bench(8, 8)
    for y in range(0, 8, 2):
        for x in range(0, 8, 2):
            b.put(x, y, K.NK)
    r = b.rules
    ids_before = dict(zip(b.state.cells.site[:16].tolist(), b.state.cells.id[:16].tolist()))
    b.set_conc("il2", r.nk.lak_threshold_pM * 2)
    for _ in range(int(np.ceil(r.nk.lak_exposure_min / r.dt_min))):
        b.step()
    c = b.state.cells
    n = int(c.n[0])
    assert n == 16 and np.all(c.ctype[:n] == K.LAK)
    assert dict(zip(c.site[:n].tolist(), c.id[:n].tolist())) == ids_before


def test_ids_follow_cells_through_a_run():
    """At every step of a short treated run with every cell type: live ids are distinct and below ``next_id``; a
    cell seen at consecutive steps has the same type (or went NK -> LAK), its age grew by exactly dt (reset on
    conversion) and its kills did not drop; ids of cells that died never come back."""
    sets = [*TINY_SETS, "init.ctl_cells=30", "init.nk_cells=30", "init.immune_within_um=60", "nk.lak_exposure_h=2"]
    m = Model("high_dose_il2", sets=sets, seed=4)
    dt = float(m.dt_min)
    prev = _live(m.state.cells)
    dead: set[int] = set()
    conversions = compactions = 0
    for _ in range(60):
        m.advance(1)
        cur = _live(m.state.cells)
        ids = cur["id"]
        assert len(np.unique(ids)) == len(ids)
        assert ids.max() < int(m.state.cells.next_id[0])
        assert not dead.intersection(ids.tolist())
        pi = {int(i): k for k, i in enumerate(prev["id"])}
        ci = {int(i): k for k, i in enumerate(ids)}
        for i, k in ci.items():
            if i not in pi:
                continue
            j = pi[i]
            t0, t1 = int(prev["ctype"][j]), int(cur["ctype"][k])
            if t0 == K.NK and t1 == K.LAK:
                conversions += 1
                assert cur["age_min"][k] == 0.0
            else:
                assert t0 == t1
                assert cur["age_min"][k] == np.float32(prev["age_min"][j] + np.float32(dt))
                assert cur["kills"][k] >= prev["kills"][j]
            compactions += int(k != j)
        dead.update(set(pi) - set(ci))
        prev = cur
    assert dead and compactions and conversions, (len(dead), compactions, conversions)
