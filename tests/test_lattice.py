"""Lattice geometry and the counter-based random numbers."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abm.kernels import rng
from abm.lattice import Lattice, moore_offsets, von_neumann_offsets


def test_offsets():
    assert moore_offsets(2).shape == (8, 3) and moore_offsets(3).shape == (26, 3)
    assert von_neumann_offsets(2).shape == (4, 3) and von_neumann_offsets(3).shape == (6, 3)
    assert not np.any(np.all(moore_offsets(3) == 0, axis=1))
    assert np.all(moore_offsets(2)[:, 2] == 0)


@settings(max_examples=50, deadline=None)
@given(nx=st.integers(1, 9), ny=st.integers(1, 9), nz=st.integers(1, 5), data=st.data())
def test_index_coords_round_trip(nx, ny, nz, data):
    lat = Lattice(nx, ny, nz)
    s = data.draw(st.integers(0, lat.n_sites - 1))
    x, y, z = lat.coords(s)
    assert lat.index(x, y, z) == s
    assert 0 <= x < nx and 0 <= y < ny and 0 <= z < nz


def test_neighbour_counts_closed_and_periodic():
    lat = Lattice(5, 5, 1)
    assert len(lat.neighbours(lat.index(2, 2))) == 8
    assert len(lat.neighbours(0)) == 3  # a corner
    assert len(lat.neighbours(0, "von_neumann")) == 2
    per = Lattice(5, 5, 1, periodic=True)
    assert len(per.neighbours(0)) == 8
    assert set(per.neighbours(0)) >= {per.index(4, 4), per.index(1, 0), per.index(0, 4)}
    l3 = Lattice(4, 4, 4)
    assert len(l3.neighbours(l3.index(1, 1, 1))) == 26 and len(l3.neighbours(0)) == 7


def test_neighbours_are_symmetric():
    for lat in (Lattice(4, 3, 1), Lattice(3, 3, 3, periodic=True), Lattice(4, 4, 2)):
        for s in range(lat.n_sites):
            for t in lat.neighbours(s):
                assert s in lat.neighbours(t)


def test_shapes_and_distances():
    lat = Lattice(10, 6, 1, spacing_um=20)
    assert lat.shape == (6, 10) and lat.ndim == 2 and lat.n_sites == 60
    assert Lattice(4, 5, 6).shape == (6, 5, 4)
    assert lat.distance_um(lat.index(0, 0), lat.index(3, 4)) == pytest.approx(100.0)
    per = Lattice(10, 10, 1, spacing_um=1, periodic=True)
    assert per.distance_um(per.index(0, 0), per.index(9, 0)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="nx"):
        Lattice(0, 3)


def test_counter_rng_is_a_pure_function_of_its_key():
    a = rng.uniform_array(7, 3, rng.KILL, np.empty(1000))
    b = rng.uniform_array(7, 3, rng.KILL, np.empty(1000))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, rng.uniform_array(8, 3, rng.KILL, np.empty(1000)))
    assert not np.array_equal(a, rng.uniform_array(7, 4, rng.KILL, np.empty(1000)))
    assert not np.array_equal(a, rng.uniform_array(7, 3, rng.MOVE, np.empty(1000)))


def test_counter_rng_is_uniform():
    from scipy import stats

    u = rng.uniform_array(12345, 0, rng.DIVIDE, np.empty(200_000))
    assert u.min() >= 0 and u.max() < 1
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    # neighbouring keys are not correlated
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01
