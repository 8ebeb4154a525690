"""The whole parameter tree, :class:`Params`: ``Params()`` is the default virtual patient on the default lattice."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from abm.params.cells import CTLParams, LAKParams, NKParams, TumourParams
from abm.params.core import Group, Layer, build, parameter_rows, read_toml, set_layers
from abm.params.patient import PatientParams
from abm.params.response import ResponseParams
from abm.params.space import InitParams, LatticeParams, TimeParams, VesselParams
from abm.params.species import REQUIRED_SPECIES, SpeciesParams, default_species
from abm.params.therapy import DrugPK, ToxicityParams, default_pk


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
    species: dict[str, SpeciesParams] = Field(default_factory=default_species)
    vessels: VesselParams = Field(default_factory=VesselParams)
    pk: dict[str, DrugPK] = Field(default_factory=default_pk)
    toxicity: ToxicityParams = Field(default_factory=ToxicityParams)
    response: ResponseParams = Field(default_factory=ResponseParams)

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        missing = [s for s in REQUIRED_SPECIES if s not in self.species]
        if missing:
            raise ValueError(f"species {missing} are required by the cell rules (have {sorted(self.species)})")
        undiffused = [d for d in self.pk if d not in self.species]
        if undiffused:
            raise ValueError(f"pk.{undiffused[0]}: a dosed drug needs a species entry species.{undiffused[0]}")
        if self.vessels.chemokine and self.vessels.chemokine not in self.species:
            raise ValueError(
                f"vessels.chemokine = {self.vessels.chemokine!r} is not a species; allowed: {', '.join(self.species)} "
                "or '' (no local trafficking signal)"
            )
        for sp, spec in self.species.items():
            for cell_type, ex in spec.cells.items():
                if ex.induced_by and ex.induced_by not in self.species:
                    raise ValueError(
                        f"species.{sp}.cells.{cell_type}.induced_by = {ex.induced_by!r} is not a species; allowed: "
                        f"{', '.join(self.species)}"
                    )
        if self.toxicity.drug not in self.pk:
            raise ValueError(f"toxicity.drug = {self.toxicity.drug!r} has no PK model; allowed: {', '.join(self.pk)}")
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
    def from_layers(cls, layers: Iterable[Layer], base_source: str = "<parameters>") -> Params:
        """Defaults, then each layer of nested data in turn, validated once."""
        return build(cls, layers, base_source)

    @classmethod
    def from_overrides(
        cls, data: dict[str, Any] | None = None, sets: list[str] | None = None, source: str = "<parameters>"
    ) -> Params:
        """Defaults, then a nested ``data`` dict (e.g. from TOML), then ``key.path=value`` strings."""
        layers = ([Layer(source, data)] if data else []) + set_layers(sets or [])
        return cls.from_layers(layers, source)

    @classmethod
    def from_toml(cls, path: str | Path, sets: list[str] | None = None) -> Params:
        path = Path(path)
        return cls.from_overrides(read_toml(path), sets, source=str(path))

    def replace(self, *sets: str) -> Params:
        """A copy with ``key.path=value`` overrides applied."""
        return Params.from_layers([Layer("<parameters>", self.to_dict()), *set_layers(sets)])


def parameter_table_markdown() -> str:
    """The Markdown parameter table embedded in docs/model.md (a test keeps the two equal)."""
    out = [
        "| name | symbol | default | unit | range | description | source |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in parameter_rows(Params):
        cells = [r["name"], r["symbol"], r["default"], r["unit"], r["range"], r["description"], r["source"]]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out) + "\n"
