"""Shared fixtures: a tiny lattice (40 x 40 sites, a ~80-cell tumour) and one session-wide run file."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_SETS = ["lattice.nx=40", "lattice.ny=40", "init.tumour_radius_um=100"]
"""Overrides that make any scenario small enough for the default (fast) suite."""

SHIPPED = (
    "untreated",
    "high_dose_il2",
    "low_dose_iv_il2",
    "low_dose_sc_il2",
    "ifna",
    "il2_ifna",
    "il2_ifna_5fu",
    "lak_il2",
    "il2_ci",
    "ifna_negrier",
    "il2_ifna_ci",
)
"""The scenarios the project ships (scenarios/*.toml): the eight regimens of docs/model.md, brief s5 and the three the
Negrier 1998 virtual trial needs (continuous-infusion IL-2, IFN-alpha 18 MIU, both)."""

TINY_RUN_SNAPSHOT_MIN = 360.0
"""Snapshot interval of the shared ``tiny_run`` file, minutes."""


@pytest.fixture(scope="session")
def tiny_sets() -> list[str]:
    return list(TINY_SETS)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One short treated run written to HDF5, shared by the tests that only read it.

    High-dose IL-2 for 1.5 days (doses at 0, 8, 16, 24, 32 h, some held for toxicity), a snapshot every 6 h.
    Returns ``(RunResult, Path, Scenario)``.
    """
    import abm

    path: Path = tmp_path_factory.mktemp("tiny_run") / "hd.h5"
    sc = abm.Scenario.load("high_dose_il2", sets=TINY_SETS)
    res = abm.run(sc, out=path, seed=7, days=1.5, snapshot_every_min=TINY_RUN_SNAPSHOT_MIN)
    return res, path, sc
