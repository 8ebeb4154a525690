"""Kernels against the slow, obvious oracles of tests/naive.py on random lattices (hypothesis): the neighbour scan,
the lesion caliper (tumour_geometry), the tumour centroid and the cell x species exchange."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from abm.kernels import cells as K
from abm.kernels.exchange import fill_exchange
from abm.kernels.observe import caliper_directions, tumour_geometry
from abm.kernels.records import CellArrays, LesionScratch, Tissue
from abm.lattice import Lattice
from abm.params import Params
from abm.rules import exchange_table
from tests import naive


@st.composite
def lattices(draw):
    """A random small 2D or 3D lattice, closed or periodic, with random vessels and cells of every type."""
    three_d = draw(st.booleans())
    nx, ny = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    nz = draw(st.integers(2, 5)) if three_d else 1
    periodic = draw(st.booleans())
    lat = Lattice(nx, ny, nz, 20.0, periodic)
    n = lat.n_sites
    kinds = draw(st.lists(st.sampled_from([-2, -1, -1, 1, 1, 1, 2, 3, 4]), min_size=n, max_size=n))
    cap = n + 4
    c = CellArrays(
        ctype=np.zeros(cap, np.int8),
        site=np.zeros(cap, np.int32),
        mhc=np.zeros(cap, np.float32),
        age_min=np.zeros(cap, np.float32),
        kills=np.zeros(cap, np.int16),
        timer_min=np.zeros(cap, np.float32),
        exposure_min=np.zeros(cap, np.float32),
        sensitisation=np.zeros(cap, np.float32),
        id=np.zeros(cap, np.int64),
        n=np.zeros(1, np.int64),
        next_id=np.zeros(1, np.int64),
    )
    occ = np.full(n, K.FREE, dtype=np.int32)
    sites = np.arange(n)
    order = draw(st.permutations(list(sites)))  # cell index order unrelated to site order
    for s in order:
        k = kinds[s]
        if k == -2:
            occ[s] = K.VESSEL
        elif k > 0:
            i = K.spawn(c, occ, int(s), k, 0.0)
            c.kills[i] = draw(st.integers(0, 12))
            c.timer_min[i] = draw(st.sampled_from([0.0, 5.0]))
    return lat, c, occ


@settings(max_examples=150, deadline=None)
@given(lattices(), st.data())
def test_neighbour_scan_matches_naive(case, data):
    lat, c, occ = case
    geo = lat.geometry()
    free = np.zeros(geo.offsets.shape[0], dtype=np.int64)
    tum = np.zeros(geo.offsets.shape[0], dtype=np.int64)
    for site in range(lat.n_sites):
        nf, nt = K.scan_neighbours(site, occ, c.ctype, geo, free, tum)
        want_free, want_tum = naive.scan(site, occ, c.ctype, lat.shape_xyz, lat.periodic)
        assert list(free[:nf]) == want_free and list(tum[:nt]) == want_tum, site
        assert list(lat.neighbours(site)) == naive.neighbours(site, lat.shape_xyz, lat.periodic)


@settings(max_examples=150, deadline=None)
@given(lattices(), st.integers(0, 8))
def test_tumour_geometry_matches_naive(case, min_nb):
    lat, c, occ = case
    geo = lat.geometry()
    directions = caliper_directions(lat.ndim, 12)
    lines = lat.ny * lat.nz
    ls = LesionScratch(*(np.empty(lines, dtype=np.int64) for _ in range(4)), np.empty((lines, 4)))
    got = tumour_geometry(c, occ, geo, min_nb, directions, ls)
    want = naive.tumour_geometry(occ, c.ctype, lat.shape_xyz, lat.periodic, min_nb, directions)
    assert got[0] == want[0]
    np.testing.assert_allclose(got[1:], want[1:], rtol=1e-12, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(lattices())
def test_count_of_matches_naive(case):
    lat, c, occ = case
    for kind in (K.TUMOUR, K.CTL, K.NK, K.LAK):
        assert K.count_of(c, kind) == int(np.count_nonzero(c.ctype[: c.n[0]] == kind))


@settings(max_examples=100, deadline=None)
@given(lattices(), st.floats(0, 1e4), st.sampled_from([0.0, 3.0]))
def test_exchange_matches_naive(case, level, tumour_secretion):
    """With a made-up species that tumour cells secrete (basal, and induced by IFN-alpha) and NK cells take up, next
    to IL-2 and the default chemokine."""
    lat, c, occ = case
    sets = [
        f"lattice.nx={lat.nx}",
        f"lattice.ny={lat.ny}",
        f"lattice.nz={lat.nz}",
        f"species.cxcl.cells.tumour.secretion_molecules_per_s={tumour_secretion}",
        "species.cxcl.cells.nk.uptake_per_min=0.7",
        "species.cxcl.cells.nk.uptake_saturation=50.0",
        "species.cxcl.cells.tumour.induced_secretion_molecules_per_s=4.0",
        'species.cxcl.cells.tumour.induced_by="ifna"',
        "species.cxcl.cells.tumour.induction_half_conc=30.0",
    ]
    p = Params.from_overrides(sets=sets)
    table = exchange_table(p)
    rng = np.random.default_rng(int(level))
    conc = rng.uniform(0, level, size=(len(p.species_names), lat.n_sites))
    uptake = np.zeros(conc.shape, dtype=np.float32)
    source = np.zeros(conc.shape, dtype=np.float32)
    fill_exchange(Tissue(c, occ, conc, uptake, source, np.zeros(0, np.int64)), table)
    want_up, want_src = naive.exchange(c, conc, table)
    np.testing.assert_array_equal(uptake, want_up)
    np.testing.assert_array_equal(source, want_src)
