"""Species are data: a new secreted species is a TOML block, with no solver or kernel edit, and its mass balances."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

import abm
from abm.units import molecules_to_conc

SCENARIO = """
[scenario]
name = "chemokine_test"
inherits = "untreated"

[lattice]
nx = 40
ny = 40

[init]
tumour_radius_um = 100

[patient]
vessel_fraction = 0.0            # no vessels: no recruitment and no plasma exchange
tumour_division_time_h = 1e4     # few divisions (counted below)

[species.cxcl10]
units = "nM"
diffusion_um2_per_s = 30.0
decay_per_s = 0.0
vessel_permeability_per_min = 0.0
description = "a test chemokine secreted by tumour cells"

[species.cxcl10.cells.tumour]
secretion_molecules_per_s = 2.5
"""


@pytest.fixture
def scenario(tmp_path):
    f = tmp_path / "chemokine.toml"
    f.write_text(textwrap.dedent(SCENARIO))
    return abm.Scenario.load(f)


def test_a_secreted_species_from_toml_balances_its_mass(scenario):
    m = abm.Model(scenario, seed=2)
    assert m.species == ["il2", "ifna", "drug", "cxcl10"]
    row = m.species.index("cxcl10")
    secreting = []  # tumour cells at the start of each step: they secrete during it
    for _ in range(30):
        secreting.append(m.counts()["tumour"])
        m.advance(1)
    assert min(secreting) > 50
    q_nM_per_min = float(np.float32(2.5 * 60.0 * molecules_to_conc(20.0, "nM")))  # sources are stored float32
    expected = m.dt_min * q_nM_per_min * sum(secreting)  # concentration x sites: no-flux walls, no decay
    total = float(m.state.conc[row].sum())
    assert total == pytest.approx(expected, rel=1e-10)
    # it spread beyond the tumour but stays highest on it, and the observables carry it with its unit
    obs = m.observe()
    assert obs["cxcl10_tumour_mean"] > obs["cxcl10_mean"] > 0
    assert {o.name: o.units for o in m.observable_specs}["cxcl10_mean"] == "nM"


def test_uptake_by_a_cell_type_is_a_sink(scenario):
    """The same species taken up by NK cells (first order, 0.5/min): mass falls below the secretion-only total."""
    sc = scenario.with_overrides(
        ["species.cxcl10.cells.nk.uptake_per_min=0.5", "init.nk_cells=200", "nk.speed_um_per_min=0"]
    )
    m = abm.Model(sc, seed=2)
    free = abm.Model(scenario, seed=2)
    m.advance(30)
    free.advance(30)
    row = m.species.index("cxcl10")
    assert 0 < m.state.conc[row].sum() < 0.99 * free.state.conc[row].sum()
    assert np.all(m.state.conc[row] >= 0)
