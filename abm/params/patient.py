"""The virtual patient: everything that differs between patients, so that a cohort is a distribution over one
block (docs/model.md, virtual patients)."""

from __future__ import annotations

from abm.params.core import Group, P


class PatientParams(Group):
    """Everything that differs between virtual patients (docs/model.md, brief s9): a cohort is a distribution over
    this block."""

    weight_kg: float = P(
        70.0, "kg", "body weight (converts IU/kg doses)", gt=0, le=500, source="brief s4 (docs/model.md)"
    )
    surface_area_m2: float = P(
        1.8,
        "m^2",
        "body surface area (converts MIU/m^2 and mg/m^2 doses)",
        gt=0,
        le=5,
        source="brief s4 (docs/model.md)",
    )
    tumour_division_time_h: float = P(
        48.0,
        "h",
        "mean time between divisions of a cycling tumour cell",
        gt=0,
        le=1e4,
        symbol="tau_div",
        source="brief s4 (docs/model.md)",
    )
    mhc_baseline: float = P(
        0.3,
        "-",
        "MHC-I level of a tumour cell without IFN-alpha",
        ge=0,
        le=1,
        symbol="m0",
        source="brief s4 (docs/model.md)",
    )
    antigenicity: float = P(
        1.0,
        "-",
        "multiplies CTL recruitment (tumour antigen drives priming)",
        ge=0,
        le=100,
        symbol="alpha_Ag",
        source="choice: patient scale factor",
    )
    nk_recruitment_scale: float = P(
        1.0, "-", "multiplies NK recruitment", ge=0, le=100, source="choice: patient scale factor"
    )
    vessel_fraction: float = P(
        0.02,
        "-",
        "fraction of lattice sites outside the initial tumour that are vessels",
        ge=0,
        le=0.5,
        source="brief s4 (docs/model.md)",
    )
    toxicity_hold_threshold: float = P(
        0.5,
        "-",
        "toxicity score above which a scheduled dose is held",
        gt=0,
        le=100,
        symbol="S_hold",
        source="calibrated: holds some high-dose IL-2 doses (clinic: about half of 14 given)",
    )
    toxicity_dlt_threshold: float = P(
        1.0,
        "-",
        "toxicity score at which the course stops (dose-limiting toxicity)",
        gt=0,
        le=100,
        symbol="S_DLT",
        source="calibrated: see docs/therapy.md",
    )
    tumour_burden_cells: float = P(
        1e10,
        "cells",
        "the patient's whole tumour burden: the simulated lesion's share of an infused cell product is its cell "
        "count over this (docs/model.md, adoptive transfer)",
        gt=0,
        le=1e14,
        symbol="N_body",
        source="about 1e9-1e11 tumour cells in patients treated with LAK + IL-2 (Rosenberg 1987-1993)",
    )
