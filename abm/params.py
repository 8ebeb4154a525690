"""The parameter tree: every model number, with its default, unit, allowed range, symbol and source.

Built on pydantic v2: typed fields with bounds give validation and JSON round trips for free, ``extra="forbid"``
catches misspelt keys, and the field metadata (unit, symbol, source) generates the parameter table of
``docs/model.md``. Errors raised here are :class:`ParameterError` with a message that names the file, the key,
the allowed range and the nearest valid keys; nothing else in abm validates parameters.

Groups mirror ../shared/SCIENCE.md: ``lattice``, ``time``, ``init``, ``patient`` (everything that varies between
virtual patients, section 9), ``tumour``, ``ctl``, ``nk``, ``lak``, ``species`` (one entry per diffusing
substance), ``vessels``, ``pk``, ``toxicity``, ``response``.
"""

from __future__ import annotations

import difflib
import json
import math
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MOLECULES_PER_SITE_TO_PM = 1.0 / (6.02214076e23 * (20e-6) ** 3 * 1e3) * 1e12
"""pM produced by one molecule in one (20 um)^3 site (about 0.21 pM), used only for documentation/derivations."""


class ParameterError(ValueError):
    """A parameter or scenario value that cannot be accepted; the message says where, what and what is allowed."""


def P(
    default: Any,
    unit: str,
    doc: str,
    *,
    ge: float | None = None,
    le: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    symbol: str = "",
    source: str = "",
) -> Any:
    """A documented parameter field: default, unit, one-line description, bounds, symbol and source."""
    return Field(
        default,
        description=doc,
        ge=ge,
        le=le,
        gt=gt,
        lt=lt,
        json_schema_extra={"unit": unit, "symbol": symbol, "source": source},
    )


class Group(BaseModel):
    """Base of every parameter group: strict keys, values checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


# ----------------------------------------------------------------------------------------------------- geometry
class LatticeParams(Group):
    nx: int = P(200, "sites", "lattice sites along x", ge=1, le=4096, symbol="n_x", source="SCIENCE.md s2")
    ny: int = P(200, "sites", "lattice sites along y", ge=1, le=4096, symbol="n_y", source="SCIENCE.md s2")
    nz: int = P(1, "sites", "lattice sites along z (1 = a 2D run)", ge=1, le=4096, symbol="n_z", source="SCIENCE.md s2")
    spacing_um: float = P(
        20.0, "um", "site spacing, one cell diameter", gt=0, le=200, symbol="h", source="SCIENCE.md s2"
    )
    boundary: Literal["closed", "periodic"] = P(
        "closed", "-", "closed: no-flux fields, walls for cells; periodic: both wrap", source="SCIENCE.md s2"
    )

    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        return (self.nx, self.ny, self.nz)

    @property
    def ndim(self) -> int:
        return 2 if self.nz == 1 else 3


class TimeParams(Group):
    dt_min: float = P(10.0, "min", "agent step", gt=0, le=60, symbol="dt", source="SCIENCE.md s2")
    field_substeps: int = P(
        1, "-", "field solver sub-steps per agent step (accuracy; the scheme is stable at any dt)", ge=1, le=100
    )


class InitParams(Group):
    tumour_radius_um: float = P(
        300.0,
        "um",
        "radius of the initial tumour disc (2D) or ball (3D) at the lattice centre",
        ge=0,
        le=1e5,
        source="choice: a small metastasis",
    )
    tumour_cells: int = P(
        0,
        "cells",
        "if > 0, the initial tumour is the this many sites nearest the centre (overrides the radius)",
        ge=0,
        le=10**9,
    )
    ctl_cells: int = P(0, "cells", "CTL placed at random free sites at t = 0", ge=0, le=10**8)
    nk_cells: int = P(0, "cells", "NK cells placed at random free sites at t = 0", ge=0, le=10**8)
    lak_cells: int = P(0, "cells", "LAK cells placed at random free sites at t = 0", ge=0, le=10**8)
    immune_within_um: float = P(
        0.0, "um", "if > 0, initial immune cells are placed within this distance of the tumour edge", ge=0, le=1e6
    )
    cell_capacity: int = P(
        0,
        "cells",
        "size of the cell arrays; 0 = the number of lattice sites (the most that can ever live)",
        ge=0,
        le=10**9,
    )


# ------------------------------------------------------------------------------------------------------ patient
class PatientParams(Group):
    """Everything that differs between virtual patients (SCIENCE.md s9): a cohort is a distribution over this block."""

    weight_kg: float = P(70.0, "kg", "body weight (converts IU/kg doses)", gt=0, le=500, source="SCIENCE.md s4")
    surface_area_m2: float = P(
        1.8, "m^2", "body surface area (converts MIU/m^2 and mg/m^2 doses)", gt=0, le=5, source="SCIENCE.md s4"
    )
    tumour_division_time_h: float = P(
        48.0,
        "h",
        "mean time between divisions of a cycling tumour cell",
        gt=0,
        le=1e4,
        symbol="tau_div",
        source="SCIENCE.md s4",
    )
    mhc_baseline: float = P(
        0.3, "-", "MHC-I level of a tumour cell without IFN-alpha", ge=0, le=1, symbol="m0", source="SCIENCE.md s4"
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
        source="SCIENCE.md s4",
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


# ------------------------------------------------------------------------------------------------------- cells
class TumourParams(Group):
    ifn_prolif_half_pM: float = P(
        50.0,
        "pM",
        "IFN-alpha that halves the division rate: factor 1/(1 + F/K)",
        gt=0,
        symbol="K_F,prolif",
        source="SCIENCE.md s4",
    )
    mhc_ifn_half_pM: float = P(
        10.0,
        "pM",
        "IFN-alpha giving half of the MHC-I up-regulation",
        gt=0,
        symbol="K_F,MHC",
        source="estimate (about the s.c. plasma peak, 9 pM)",
    )
    mhc_relax_time_h: float = P(
        24.0,
        "h",
        "time constant of MHC-I relaxing toward its IFN-driven target",
        gt=0,
        symbol="tau_MHC",
        source="SCIENCE.md s4",
    )
    drug_kill_per_uM_per_min: float = P(
        5e-6,
        "1/(uM min)",
        "drug kill rate of a cycling tumour cell: p = 1 - exp(-k C dt)",
        ge=0,
        symbol="k_drug",
        source="calibrated: about one log of the cycling rim per 4 weekly 5-FU doses (docs/therapy.md)",
    )
    death_rate_per_day: float = P(0.0, "1/day", "spontaneous tumour cell death", ge=0, le=100)


class CTLParams(Group):
    recruit_per_vessel_per_day: float = P(
        0.01,
        "1/day",
        "CTL entry rate per vessel site at saturating tumour burden",
        ge=0,
        le=100,
        symbol="r_CTL",
        source="calibrated (untreated tumours escape)",
    )
    recruit_tumour_half_cells: float = P(
        1000.0, "cells", "tumour burden giving half-maximal CTL priming", gt=0, symbol="K_N", source="estimate"
    )
    il2_recruit_boost: float = P(
        4.0,
        "-",
        "maximal extra fold-recruitment driven by plasma IL-2",
        ge=0,
        le=1000,
        symbol="a_sys",
        source="estimate",
    )
    il2_recruit_half_pM: float = P(
        200.0, "pM", "plasma IL-2 giving half of the recruitment boost", gt=0, symbol="K_sys", source="estimate"
    )
    speed_um_per_min: float = P(8.0, "um/min", "migration speed", ge=0, le=100, symbol="v_CTL", source="SCIENCE.md s4")
    tumour_bias: float = P(
        1.0,
        "-",
        "strength of the bias of each move toward the tumour (0 = unbiased random walk)",
        ge=0,
        le=20,
        symbol="beta",
        source="choice: surrogate for a chemokine gradient",
    )
    kill_prob: float = P(
        0.05,
        "-",
        "kill probability per attempt at MHC-I m = 1 (p = p_CTL m)",
        ge=0,
        le=1,
        symbol="p_CTL",
        source="2-16 kills/day in vivo (SCIENCE.md s4)",
    )
    max_kills: int = P(
        10, "kills", "kills after which a CTL is exhausted", ge=1, le=10**6, symbol="n_max,CTL", source="SCIENCE.md s4"
    )
    il2_secretion_molecules_per_s: float = P(
        1.0,
        "molecules/s",
        "IL-2 secretion while engaged and during the window after",
        ge=0,
        le=1000,
        symbol="s_IL2",
        source="calibrated within SCIENCE.md s4's 1-10: at 5 the autocrine loop alone clears",
    )
    secretion_window_h: float = P(
        8.0,
        "h",
        "IL-2 secretion continues this long after the last engagement",
        ge=0,
        le=1000,
        symbol="T_sec",
        source="SCIENCE.md s4",
    )
    prolif_requires_activation: bool = P(
        True,
        "-",
        "only CTL activated by an engagement (within their secretion window) proliferate on IL-2",
        source="choice: the high-affinity IL-2 receptor (CD25) is expressed after TCR activation",
    )
    prolif_time_h: float = P(
        12.0, "h", "mean time to divide at saturating IL-2", gt=0, symbol="tau_prolif", source="SCIENCE.md s4"
    )
    il2_prolif_half_pM: float = P(
        10.0,
        "pM",
        "IL-2 giving half-maximal proliferation (high-affinity receptor)",
        gt=0,
        symbol="K_I,prolif",
        source="SCIENCE.md s4",
    )
    lifespan_days: float = P(5.0, "day", "mean natural lifespan", gt=0, symbol="T_CTL", source="SCIENCE.md s4")
    aicd_rate_per_day: float = P(
        2.0,
        "1/day",
        "maximal activation-induced death rate of an engaged CTL under high IL-2",
        ge=0,
        le=1000,
        symbol="k_AICD",
        source="estimate",
    )
    aicd_half_pM: float = P(
        1000.0, "pM", "IL-2 giving half-maximal AICD", gt=0, symbol="K_AICD", source="SCIENCE.md s4"
    )
    il2_uptake_per_min: float = P(
        1.2,
        "1/min",
        "IL-2 uptake rate constant at low concentration (first order)",
        ge=0,
        le=1000,
        symbol="k_up,CTL",
        source="1e4 receptors x 1e7 /M/s (SCIENCE.md s4)",
    )
    il2_uptake_saturation_pM: float = P(
        100.0,
        "pM",
        "IL-2 at which uptake is half its first-order value (Michaelis-Menten K_m)",
        gt=0,
        symbol="K_m,CTL",
        source="estimate: receptor turnover limits uptake",
    )


class NKParams(Group):
    recruit_per_vessel_per_day: float = P(
        0.005, "1/day", "NK entry rate per vessel site", ge=0, le=100, symbol="r_NK", source="calibrated"
    )
    il2_recruit_boost: float = P(
        4.0, "-", "maximal extra fold-recruitment driven by plasma IL-2", ge=0, le=1000, source="estimate"
    )
    il2_recruit_half_pM: float = P(200.0, "pM", "plasma IL-2 giving half of the boost", gt=0, source="estimate")
    speed_um_per_min: float = P(8.0, "um/min", "migration speed", ge=0, le=100, source="estimate (as CTL)")
    tumour_bias: float = P(1.0, "-", "bias of each move toward the tumour", ge=0, le=20, source="choice")
    kill_prob: float = P(
        0.05,
        "-",
        "kill probability per attempt for m = 0 and full activation",
        ge=0,
        le=1,
        symbol="p_NK",
        source="estimate",
    )
    max_kills: int = P(10, "kills", "kills after which an NK cell stops killing", ge=1, le=10**6, source="estimate")
    baseline_activation: float = P(
        0.2, "-", "activation of a resting NK cell", ge=0, le=1, symbol="A_0", source="estimate"
    )
    il2_activation_half_pM: float = P(
        2000.0,
        "pM",
        "IL-2 giving half-maximal activation (intermediate-affinity receptor)",
        gt=0,
        symbol="K_A,IL2",
        source="SCIENCE.md s4",
    )
    ifn_activation_half_pM: float = P(
        20.0, "pM", "IFN-alpha giving half-maximal activation", gt=0, symbol="K_A,IFN", source="estimate"
    )
    lak_threshold_pM: float = P(
        1000.0,
        "pM",
        "local IL-2 above which exposure toward LAK conversion accumulates",
        gt=0,
        symbol="theta_LAK",
        source="SCIENCE.md s4 (100-1,000 IU/mL)",
    )
    lak_exposure_h: float = P(
        72.0,
        "h",
        "cumulative exposure above the threshold that converts an NK cell to LAK",
        gt=0,
        symbol="T_LAK",
        source="SCIENCE.md s4 (3-5 days)",
    )
    lifespan_days: float = P(10.0, "day", "mean natural lifespan", gt=0, source="estimate (NK half-life 1-2 weeks)")
    il2_uptake_per_min: float = P(
        0.3, "1/min", "IL-2 uptake rate constant (intermediate-affinity receptor)", ge=0, le=1000, source="estimate"
    )
    il2_uptake_saturation_pM: float = P(2000.0, "pM", "Michaelis-Menten K_m of NK IL-2 uptake", gt=0, source="estimate")


class LAKParams(Group):
    kill_prob: float = P(
        0.1,
        "-",
        "kill probability per attempt on any adjacent tumour cell (MHC-independent)",
        ge=0,
        le=1,
        symbol="p_LAK",
        source="estimate",
    )
    max_kills: int = P(20, "kills", "kills after which a LAK cell stops killing", ge=1, le=10**6, source="estimate")
    speed_um_per_min: float = P(8.0, "um/min", "migration speed", ge=0, le=100, source="estimate")
    tumour_bias: float = P(1.0, "-", "bias of each move toward the tumour", ge=0, le=20, source="choice")
    withdrawal_threshold_pM: float = P(
        100.0,
        "pM",
        "local IL-2 below which a LAK cell dies of cytokine withdrawal",
        ge=0,
        symbol="theta_wd",
        source="SCIENCE.md s4",
    )
    withdrawal_death_per_day: float = P(
        1.0, "1/day", "death rate below the withdrawal threshold", ge=0, le=1000, source="estimate"
    )
    lifespan_days: float = P(10.0, "day", "mean natural lifespan with IL-2", gt=0, source="estimate")
    il2_uptake_per_min: float = P(1.2, "1/min", "IL-2 uptake rate constant", ge=0, le=1000, source="estimate")
    il2_uptake_saturation_pM: float = P(100.0, "pM", "Michaelis-Menten K_m of LAK IL-2 uptake", gt=0, source="estimate")


# ------------------------------------------------------------------------------------------------------ fields
class SpeciesParams(Group):
    """One diffusing substance: adding a chemokine is one more entry, not new solver code."""

    units: str = P("pM", "-", "concentration unit of the field and of plasma")
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
    description: str = P("", "-", "what this species is")

    @property
    def diffusion_um2_per_min(self) -> float:
        return self.diffusion_um2_per_s * 60.0

    @property
    def decay_per_min(self) -> float:
        return self.decay_per_s * 60.0


REQUIRED_SPECIES = ("il2", "ifna", "drug")


def _default_species() -> dict[str, SpeciesParams]:
    return {
        "il2": SpeciesParams(
            units="pM",
            diffusion_um2_per_s=100.0,
            decay_per_s=2.8e-5,
            vessel_permeability_per_min=0.1,
            description="interleukin-2 (15.3 kDa); half-life in tissue about 7 h",
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
    }


class VesselParams(Group):
    tumour_margin_um: float = P(
        0.0, "um", "vessels are placed at least this far outside the initial tumour", ge=0, le=1e5
    )


class ResponseParams(Group):
    """RECIST-like classification on the longest diameter."""

    partial_response_shrinkage: float = P(
        0.30, "-", "fractional shrinkage for a partial response", gt=0, lt=1, source="RECIST 1.1"
    )
    progression_growth: float = P(
        0.20, "-", "fractional growth over the nadir for progressive disease", gt=0, le=10, source="RECIST 1.1"
    )
    complete_response_cells: int = P(0, "cells", "tumour cells at or below which a response is complete", ge=0)
    lesion_min_tumour_neighbours: int = P(
        3,
        "cells",
        "a tumour cell counts toward the measured lesion if at least this many Moore neighbours are tumour cells "
        "(scattered survivors are not a measurable lesion; 0 = every cell)",
        ge=0,
        le=26,
        source="choice: a RECIST lesion is a contiguous mass seen on imaging",
    )
    stable_disease_min_days: float = P(
        42.0,
        "day",
        "stable disease counts as the best response only if no progression occurs before this time",
        ge=0,
        le=3650,
        source="RECIST 1.1 (minimum interval for SD, commonly 6-8 weeks)",
    )


# The therapy package owns its parameter groups (PK, toxicity); they are part of the one tree.
from abm.therapy.params import PKParams, ToxicityParams  # noqa: E402


class Params(Group):
    """The whole parameter tree. ``Params()`` is the default virtual patient on the default lattice."""

    lattice: LatticeParams = Field(default_factory=LatticeParams)
    time: TimeParams = Field(default_factory=TimeParams)
    init: InitParams = Field(default_factory=InitParams)
    patient: PatientParams = Field(default_factory=PatientParams)
    tumour: TumourParams = Field(default_factory=TumourParams)
    ctl: CTLParams = Field(default_factory=CTLParams)
    nk: NKParams = Field(default_factory=NKParams)
    lak: LAKParams = Field(default_factory=LAKParams)
    species: dict[str, SpeciesParams] = Field(default_factory=_default_species)
    vessels: VesselParams = Field(default_factory=VesselParams)
    pk: PKParams = Field(default_factory=PKParams)
    toxicity: ToxicityParams = Field(default_factory=ToxicityParams)
    response: ResponseParams = Field(default_factory=ResponseParams)

    @field_validator("species")
    @classmethod
    def _required_species(cls, v: dict[str, SpeciesParams]) -> dict[str, SpeciesParams]:
        missing = [s for s in REQUIRED_SPECIES if s not in v]
        if missing:
            raise ValueError(f"species {missing} are required by the cell rules (have {sorted(v)})")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        if self.patient.toxicity_dlt_threshold < self.patient.toxicity_hold_threshold:
            raise ValueError("patient.toxicity_dlt_threshold must be >= patient.toxicity_hold_threshold")
        return self

    @property
    def species_names(self) -> list[str]:
        """Species in solver order: the required ones first, then any extra, in the order given."""
        return list(REQUIRED_SPECIES) + [s for s in self.species if s not in REQUIRED_SPECIES]

    # ---- serialisation
    def to_json(self) -> str:
        return self.model_dump_json(indent=1)

    @classmethod
    def from_json(cls, text: str) -> Params:
        return cls.model_validate_json(text)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    # ---- overrides
    @classmethod
    def from_overrides(
        cls, data: dict[str, Any] | None = None, sets: list[str] | None = None, source: str = "<parameters>"
    ) -> Params:
        """Defaults, then a nested ``data`` dict (e.g. from TOML), then ``key.path=value`` strings."""
        merged = cls().to_dict()
        if data:
            check_keys(data, cls, source)
            deep_merge(merged, data)
            validate(cls, merged, source)
        for s in sets or []:
            key, value = parse_set(s)
            check_keys(nest(key, value), cls, "--set " + s)
            deep_merge(merged, nest(key, value))
            validate(cls, merged, "--set " + s)
        return validate(cls, merged, source)

    @classmethod
    def from_toml(cls, path: str | Path, sets: list[str] | None = None) -> Params:
        path = Path(path)
        return cls.from_overrides(read_toml(path), sets, source=str(path))

    def replace(self, *sets: str) -> Params:
        """A copy with ``key.path=value`` overrides applied."""
        return Params.from_overrides(self.to_dict(), list(sets))


# --------------------------------------------------------------------------------------------- override helpers
def read_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ParameterError(f"{path}: file not found")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ParameterError(f"{path}: not valid TOML: {e}") from None


def parse_set(s: str) -> tuple[str, Any]:
    """``'ctl.kill_prob=0.1'`` -> ``('ctl.kill_prob', 0.1)``; the value is parsed as TOML, else kept as a string."""
    if "=" not in s:
        raise ParameterError(f"--set {s!r}: expected key.path=value")
    key, raw = (t.strip() for t in s.split("=", 1))
    if not key:
        raise ParameterError(f"--set {s!r}: empty key")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def nest(key: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_merge(base[k], v)
        else:
            base[k] = v
    return base


def _model_at(model: type[BaseModel], path: list[str]) -> type[BaseModel] | None:
    """The pydantic model class reached by following ``path`` from ``model`` (None if not a model)."""
    cur: Any = model
    for part in path:
        if isinstance(cur, type) and issubclass(cur, BaseModel):
            f = cur.model_fields.get(part)
            if f is None:
                return None
            ann = f.annotation
            args = getattr(ann, "__args__", ())
            if getattr(ann, "__origin__", None) is dict and len(args) == 2:
                cur = ("dict", args[1])
            else:
                cur = ann
        elif isinstance(cur, tuple) and cur[0] == "dict":
            cur = cur[1]
        else:
            return None
    return cur if isinstance(cur, type) and issubclass(cur, BaseModel) else None


def all_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every leaf key path of a model class (dict entries shown as ``name.<entry>``)."""
    out = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        args = getattr(ann, "__args__", ())
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += all_keys(ann, f"{prefix}{name}.")
        elif getattr(ann, "__origin__", None) is dict and len(args) == 2 and issubclass(args[1], BaseModel):
            out += all_keys(args[1], f"{prefix}{name}.<entry>.")
        else:
            out.append(prefix + name)
    return out


def check_keys(data: dict[str, Any], model: type[BaseModel], source: str, prefix: list[str] | None = None) -> None:
    """Reject unknown keys before validation, naming the nearest valid ones."""
    prefix = prefix or []
    cls = _model_at(model, prefix) if prefix else model
    dict_entry = False
    if cls is None and prefix:
        # inside a dict field (species): the next level is an entry name, free-form
        parent = _model_at(model, prefix[:-1]) if len(prefix) > 1 else model
        f = parent.model_fields.get(prefix[-1]) if parent else None
        if f is not None and getattr(f.annotation, "__origin__", None) is dict:
            dict_entry = True
        else:
            return
    for k, v in data.items():
        if dict_entry:
            if isinstance(v, dict):
                check_keys(v, model, source, prefix + [k])
            continue
        if k not in cls.model_fields:
            here = ".".join(prefix + [k])
            valid = list(cls.model_fields)
            near = difflib.get_close_matches(k, valid, n=3, cutoff=0.5)
            if not near:
                near = difflib.get_close_matches(here, all_keys(model), n=3, cutoff=0.6)
            hint = (
                f"; did you mean {', '.join(repr('.'.join(prefix + [n]) if '.' not in n else n) for n in near)}?"
                if near
                else ""
            )
            where = ".".join(prefix) or "the top level"
            raise ParameterError(f"{source}: unknown key '{here}'{hint} Valid keys in {where}: {', '.join(valid)}.")
        if isinstance(v, dict):
            check_keys(v, model, source, prefix + [k])


def _field_info(model: type[BaseModel], loc: tuple[Any, ...]):
    cls = _model_at(model, [str(p) for p in loc[:-1]])
    if cls is None:
        return None
    return cls.model_fields.get(str(loc[-1]))


def describe_range(info) -> str:
    if info is None:
        return ""
    lo = hi = None
    lo_c = hi_c = "["
    for m in info.metadata:
        for attr, side in (("ge", "lo"), ("gt", "lo"), ("le", "hi"), ("lt", "hi")):
            val = getattr(m, attr, None)
            if val is not None:
                if side == "lo":
                    lo, lo_c = val, ("[" if attr == "ge" else "(")
                else:
                    hi, hi_c = val, ("]" if attr == "le" else ")")
    unit = (info.json_schema_extra or {}).get("unit", "") if isinstance(info.json_schema_extra, dict) else ""
    unit = "" if unit in ("", "-") else f" {unit}"
    if lo is None and hi is None:
        return ""
    lo_s = f"{lo_c}{lo}" if lo is not None else "(-inf"
    hi_s = f"{hi}{hi_c if hi_c != '[' else ']'}" if hi is not None else "inf)"
    return f"allowed range {lo_s}, {hi_s}{unit}"


_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}


def validate(model: type[BaseModel], data: dict[str, Any], source: str) -> Any:
    """Validate ``data`` into ``model``; turn pydantic's errors into one clear :class:`ParameterError`."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ParameterError(format_validation_error(e, model, source)) from None


def format_validation_error(e: ValidationError, model: type[BaseModel], source: str) -> str:
    lines = []
    for err in e.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        info = _field_info(model, loc) if loc else None
        given = err.get("input")
        given_s = f" (got {given!r})" if not isinstance(given, dict) else ""
        t = err["type"]
        if t in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            msg = f"value out of range{given_s}; {describe_range(info)}"
        elif t.endswith("_type") or t.endswith("_parsing") or t == "bool_type":
            want = t.split("_")[0]
            if info is not None and info.annotation is not None:
                want = getattr(info.annotation, "__name__", str(info.annotation))
            msg = f"wrong type{given_s}; expected {_TYPE_WORDS.get(want, want)}"
            rng = describe_range(info)
            if rng:
                msg += f", {rng}"
        elif t == "literal_error":
            msg = f"invalid choice{given_s}; {err['msg'].lower()}"
        elif t == "extra_forbidden":
            msg = "unknown key"
        else:
            msg = err["msg"] + given_s
        lines.append(f"{source}: key '{key}': {msg}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ documentation
def parameter_rows(model: type[BaseModel] = None, prefix: str = "", instance: Any = None) -> list[dict[str, str]]:
    """One row per parameter (name, symbol, default, unit, range, description, source), in tree order."""
    model = model or Params
    instance = instance if instance is not None else model()
    rows = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        value = getattr(instance, name)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows += parameter_rows(ann, f"{prefix}{name}.", value)
            continue
        if isinstance(value, dict) and value and isinstance(next(iter(value.values())), BaseModel):
            for entry, sub in value.items():
                rows += parameter_rows(type(sub), f"{prefix}{name}.{entry}.", sub)
            continue
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        rows.append(
            {
                "name": prefix + name,
                "symbol": extra.get("symbol", ""),
                "default": json.dumps(value)
                if isinstance(value, str)
                else f"{value:g}"
                if isinstance(value, float)
                else str(value),
                "unit": extra.get("unit", ""),
                "range": describe_range(f).replace("allowed range ", ""),
                "description": f.description or "",
                "source": extra.get("source", ""),
            }
        )
    return rows


def parameter_table_markdown() -> str:
    """The Markdown parameter table embedded in docs/model.md (a test keeps the two equal)."""
    rows = parameter_rows()
    out = [
        "| name | symbol | default | unit | range | description | source |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        cells = [r["name"], r["symbol"], r["default"], r["unit"], r["range"], r["description"], r["source"]]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out) + "\n"
