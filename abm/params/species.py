"""Diffusing species as data: transport (diffusion, decay, vessel exchange) and, per cell type, receptor uptake and
secretion. Adding a chemokine is one more ``[species.<name>]`` table; no solver or kernel code changes."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from abm.params.core import Group, P
from abm.units import CONC_UNITS_PER_MOLAR

CELL_TYPE_NAMES = ("tumour", "ctl", "nk", "lak")
"""Cell types that can carry a species' receptor or secrete it (the keys of ``species.<name>.cells``)."""

ConcUnit = Literal[tuple(CONC_UNITS_PER_MOLAR)]  # type: ignore[valid-type]


class CellExchange(Group):
    """How one cell type exchanges one species at its own site: saturable uptake and gated, inducible secretion.

    Uptake is Michaelis-Menten, linearised at the current concentration c: a first-order rate
    ``uptake_per_min / (1 + c / uptake_saturation)``. Secretion adds ``secretion_molecules_per_s +
    induced_secretion_molecules_per_s I / (I + induction_half_conc)`` molecules per second to the cell's site while
    the gate ``secretes_when`` is open, I the local level of the species ``induced_by`` (interferon inducing a
    chemokine, say).
    """

    uptake_per_min: float = P(
        0.0, "1/min", "receptor uptake rate constant at low concentration (first order)", ge=0, le=1000
    )
    uptake_saturation: float = P(
        1e9,
        "species unit",
        "concentration at which uptake is half its first-order value (Michaelis-Menten K_m; large = first order)",
        gt=0,
    )
    secretion_molecules_per_s: float = P(
        0.0, "molecules/s", "basal secretion rate while the gate is open", ge=0, le=1e6
    )
    induced_secretion_molecules_per_s: float = P(
        0.0,
        "molecules/s",
        "extra secretion at saturating inducer: + s_ind I / (I + K_ind), I the local level of induced_by",
        ge=0,
        le=1e6,
    )
    induced_by: str = P("", "-", "the species that induces the extra secretion (a key of species; empty: none)")
    induction_half_conc: float = P(10.0, "inducer unit", "inducer level giving half the extra secretion (K_ind)", gt=0)
    secretes_when: Literal["always", "activated"] = P(
        "always",
        "-",
        "always; or activated: within the cell's activation window (an engagement in the last "
        "ctl.secretion_window_h) and not exhausted (kills below the type's max_kills)",
    )
    source: str = P("", "-", "where these numbers come from")


class SpeciesParams(Group):
    """One diffusing substance: adding a chemokine is one more entry, not new solver code."""

    units: ConcUnit = P("pM", "-", "concentration unit of the field and of plasma")
    diffusion_um2_per_s: float = P(100.0, "um^2/s", "diffusion coefficient", ge=0, le=1e5, symbol="D")
    decay_per_s: float = P(2.8e-5, "1/s", "first-order decay in tissue", ge=0, le=10, symbol="lambda")
    vessel_permeability_per_min: float = P(
        0.1,
        "1/min",
        "exchange with plasma at a vessel site: flux P (C_plasma - c)",
        ge=0,
        le=1000,
        symbol="P",
        source="calibrated: steady tissue/plasma ratio P f / (P f + lambda) of 0.3-0.6 with f = 2% vessels",
    )
    scheme: Literal["split", "coupled"] = P(
        "split",
        "-",
        "field step: split (pointwise reaction, then line-implicit diffusion) or coupled (reaction and diffusion in "
        "one implicit solve; accurate where a cell's uptake rate x dt is large, see docs/solver.md)",
    )
    description: str = P("", "-", "what this species is")
    cells: dict[str, CellExchange] = Field(
        default_factory=dict,
        description="uptake and secretion by cell type (tumour, ctl, nk, lak); a type not listed neither takes up "
        "nor secretes this species",
        json_schema_extra={"unit": "-", "symbol": "", "source": ""},
    )

    @field_validator("cells")
    @classmethod
    def _known_cell_types(cls, v: dict[str, CellExchange]) -> dict[str, CellExchange]:
        bad = [k for k in v if k not in CELL_TYPE_NAMES]
        if bad:
            raise ValueError(f"unknown cell type {bad[0]!r} in cells; allowed: {', '.join(CELL_TYPE_NAMES)}")
        return v

    @property
    def diffusion_um2_per_min(self) -> float:
        return self.diffusion_um2_per_s * 60.0

    @property
    def decay_per_min(self) -> float:
        return self.decay_per_s * 60.0


REQUIRED_SPECIES = ("il2", "ifna", "drug")
"""Species the cell rules sense (IL-2, IFN-alpha, the cytotoxic drug); any other species is optional data."""


def default_species() -> dict[str, SpeciesParams]:
    return {
        "il2": SpeciesParams(
            units="pM",
            diffusion_um2_per_s=100.0,
            decay_per_s=2.8e-5,
            vessel_permeability_per_min=0.1,
            scheme="coupled",  # receptor uptake 1.2/min x dt 10 min = 12: the split step loses a cell's own IL-2
            description="interleukin-2 (15.3 kDa); half-life in tissue about 7 h",
            cells={
                "ctl": CellExchange(
                    uptake_per_min=1.2,
                    uptake_saturation=100.0,
                    secretion_molecules_per_s=0.25,
                    secretes_when="activated",
                    source="uptake: 1e4 high-affinity receptors x k_on 1e7 /M/s; K_m an estimate (receptor turnover "
                    "limits uptake); secretion calibrated (docs/model.md 7.8): below the 1-10 molecules/s estimated "
                    "for acutely activated T cells, since chronically stimulated tumour-infiltrating CD8 T cells lose "
                    "IL-2 production first (Wherry 2011) and in vivo secretion is transient (Sojka 2004)",
                ),
                "nk": CellExchange(
                    uptake_per_min=0.3,
                    uptake_saturation=2000.0,
                    source="estimate (intermediate-affinity receptor)",
                ),
                "lak": CellExchange(uptake_per_min=1.2, uptake_saturation=100.0, source="estimate"),
            },
        ),
        "ifna": SpeciesParams(
            units="pM",
            diffusion_um2_per_s=60.0,
            decay_per_s=math.log(2) / (3 * 3600.0),
            vessel_permeability_per_min=0.1,
            description="interferon-alpha (19 kDa); half-life 3 h",
        ),
        "drug": SpeciesParams(
            units="uM",
            diffusion_um2_per_s=300.0,
            decay_per_s=math.log(2) / (2 * 3600.0),
            vessel_permeability_per_min=0.5,
            description="cytotoxic small molecule (e.g. 5-FU); half-life 2 h",
        ),
        "cxcl10": SpeciesParams(
            units="pM",
            diffusion_um2_per_s=10.0,
            decay_per_s=math.log(2) / 3600.0,
            vessel_permeability_per_min=0.0,
            # split: tumour cells secrete it and do not take it up, so no cell absorbs its own secretion; immune
            # uptake x dt is 1. benchmarks/convergence.py checks the outcome against 16 sub-steps.
            scheme="split",
            description="CXCL10-like CXCR3 ligand (8.7 kDa), secreted by tumour cells (more under interferon), "
            "taken up by the effector cells that carry CXCR3; guides them in (vessels.chemokine). Free CXCL10 "
            "diffuses at about 100-150 um^2/s in water; binding to glycosaminoglycans slows it in tissue, here "
            "10 um^2/s (estimate); half-life 1 h (estimate); plasma exchange not modelled (cleared by decay)",
            cells={
                "tumour": CellExchange(
                    secretion_molecules_per_s=0.5,
                    induced_secretion_molecules_per_s=2.0,
                    induced_by="ifna",
                    induction_half_conc=2.5,
                    source="estimate: tumour and stromal cells release CXCL10 at ng/mL per 1e6 cells per day "
                    "(0.1-1 molecule/s per cell); CXCL10 is an interferon-stimulated gene, induced several-fold "
                    "by type I IFN at ISG-type concentrations (docs/model.md 7.11): + 2 molecules/s x F/(F + 2.5 pM)",
                ),
                "ctl": CellExchange(
                    uptake_per_min=0.1,
                    uptake_saturation=1000.0,
                    source="estimate: CXCR3 internalises its ligand (about 1e4 receptors)",
                ),
                "nk": CellExchange(uptake_per_min=0.1, uptake_saturation=1000.0, source="estimate (as CTL)"),
                "lak": CellExchange(uptake_per_min=0.1, uptake_saturation=1000.0, source="estimate (as CTL)"),
            },
        ),
    }
