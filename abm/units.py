"""Concentration units and the molecule <-> concentration conversion for one lattice site.

A leaf module (no other abm imports): the parameter tree, the PK models and the cell-rule records all use it.
"""

from __future__ import annotations

AVOGADRO = 6.02214076e23

CONC_UNITS_PER_MOLAR = {"M": 1.0, "mM": 1e3, "uM": 1e6, "nM": 1e9, "pM": 1e12, "fM": 1e15}
"""Concentration units understood by abm, as multiples of mol/L."""


def site_volume_litres(spacing_um: float) -> float:
    """Volume (L) of one cubic lattice site of side ``spacing_um``."""
    return (spacing_um * 1e-5) ** 3 * 1e-3 * 1e3  # (um -> dm)^3 = L


def molecules_to_conc(spacing_um: float, units: str = "pM") -> float:
    """Concentration (in ``units``) of one molecule in one lattice site of side ``spacing_um``."""
    return CONC_UNITS_PER_MOLAR[units] / (AVOGADRO * site_volume_litres(spacing_um))


def molecules_to_pM(spacing_um: float) -> float:
    """Concentration (pM) of one molecule in one lattice site of side ``spacing_um`` (about 0.21 pM at 20 um)."""
    return molecules_to_conc(spacing_um, "pM")
