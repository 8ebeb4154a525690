"""Dosing regimens in the clinic's terms (TOML ``[regimen]``), validated, and expanded into a timed schedule.

A regimen is a list of dosing blocks and adoptive transfers::

    [regimen]
    description = "high-dose bolus IL-2"
    [[regimen.doses]]
    drug = "il2"            # il2 | ifna | drug
    route = "iv"            # iv (bolus or short infusion: duration_min) | infusion (continuous: duration_h) | sc
    dose = 720000
    unit = "IU/kg"          # IU/kg MIU/m2 mg/m2 MIU IU mg mg/kg, or any of them + "/day" (an infusion's rate)
    duration_min = 15
    start_day = 0
    every_h = 8             # a fixed interval with a count ...
    count = 14
    cycles = 2
    rest_days = 9
    [[regimen.doses]]       # ... or a weekly pattern: weeks (1-based, from start_day), weekdays (1-7), per_day
    [[regimen.transfers]]
    day = 0
    cells = 500
    [regimen.dose_scale]
    il2 = 1.0

``Regimen()`` is the untreated regimen. :meth:`Regimen.from_dict` / :meth:`Regimen.from_toml` turn every problem
into one :class:`~abm.params.ParameterError` naming the key (``regimen.doses[0].unit``) and the allowed values.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError, model_validator

from abm.params import Group, P, ParameterError, describe_range, read_toml
from abm.therapy import pk as _pk

if TYPE_CHECKING:  # pragma: no cover
    from abm.params import Params

MIN_PER_DAY = 1440.0

DrugName = Literal["il2", "ifna", "drug"]
RouteName = Literal["iv", "infusion", "sc"]
UnitName = Literal[_pk.UNITS]  # type: ignore[valid-type]


class DoseBlock(Group):
    """One dosing block: a drug, route and dose, repeated at a fixed interval or in a weekly pattern."""

    drug: DrugName = P("il2", "-", "species dosed: il2 | ifna | drug")
    route: RouteName = P("iv", "-", "iv (bolus / short infusion), infusion (continuous), sc (subcutaneous)")
    dose: float = P(0.0, "-", "dose per administration in `unit` (a rate if the unit ends in /day)", ge=0, le=1e12)
    unit: UnitName = P("IU/kg", "-", "clinic dose unit")
    duration_min: float = P(
        0.0, "min", "i.v. input duration (0 = instantaneous bolus); route iv only", ge=0, le=MIN_PER_DAY
    )
    duration_h: float = P(0.0, "h", "continuous infusion duration; route infusion only", ge=0, le=24 * 366)
    start_day: float = P(0.0, "day", "days from the start of the run to the block's first dose", ge=0, le=3660)
    every_h: float | None = P(None, "h", "fixed dosing interval (needs count)", gt=0, le=24 * 366)
    count: int | None = P(None, "doses", "doses per cycle at the fixed interval", ge=1, le=100000)
    cycles: int = P(1, "-", "number of cycles", ge=1, le=1000)
    rest_days: float = P(0.0, "day", "rest between a cycle's last dose and the next cycle's first", ge=0, le=3660)
    weeks: list[int] | None = P(None, "-", "weekly pattern: 1-based weeks counted from start_day (needs weekdays)")
    weekdays: list[int] | None = P(None, "-", "weekly pattern: 1-based days of the week (1-7)")
    per_day: int = P(1, "doses", "weekly pattern: doses per dosing day, spread evenly over 24 h", ge=1, le=24)
    note: str = P("", "-", "free text carried into the schedule")

    @model_validator(mode="after")
    def _consistent(self) -> DoseBlock:
        allowed_routes = _pk.ROUTES_BY_DRUG[self.drug]
        if self.route not in allowed_routes:
            raise ValueError(
                f"route {self.route!r} is not available for drug {self.drug!r}; allowed routes: "
                f"{', '.join(allowed_routes)}"
            )
        allowed_units = _pk.UNITS_BY_DRUG[self.drug]
        if self.unit not in allowed_units:
            raise ValueError(
                f"unit {self.unit!r} is not valid for drug {self.drug!r}; allowed units: {', '.join(allowed_units)}"
            )
        if self.unit.endswith("/day") and self.route != "infusion":
            raise ValueError(f"unit {self.unit!r} is a rate (per day) and needs route = 'infusion'")
        if self.route == "infusion":
            if self.duration_h <= 0:
                raise ValueError("route 'infusion' needs duration_h > 0 (hours of continuous infusion)")
            if self.duration_min:
                raise ValueError("route 'infusion' takes duration_h, not duration_min")
        elif self.duration_h:
            raise ValueError(
                f"duration_h is for route 'infusion' only (route is {self.route!r}; use duration_min "
                "for a short i.v. infusion)"
            )
        if self.route == "sc" and self.duration_min:
            raise ValueError("duration_min is for route 'iv' only (route is 'sc')")
        weekly = self.weeks is not None or self.weekdays is not None
        if weekly:
            if self.every_h is not None or self.count is not None:
                raise ValueError(
                    "give either a fixed interval (every_h, count) or a weekly pattern (weeks, weekdays), not both"
                )
            if not self.weeks:
                raise ValueError("a weekly pattern needs weeks (1-based weeks counted from start_day, e.g. [1, 4])")
            if not self.weekdays:
                raise ValueError("a weekly pattern needs weekdays (1-based days of the week 1-7, e.g. [1, 3, 5])")
            if any(w < 1 for w in self.weeks):
                raise ValueError(f"weeks must be >= 1 (got {self.weeks})")
            if any(d < 1 or d > 7 for d in self.weekdays):
                raise ValueError(f"weekdays must be in 1-7 (got {self.weekdays})")
            if len(set(self.weeks)) != len(self.weeks) or len(set(self.weekdays)) != len(self.weekdays):
                raise ValueError("weeks and weekdays must not repeat a value")
        else:
            if self.per_day != 1:
                raise ValueError("per_day applies to a weekly pattern (weeks, weekdays) only")
            if self.every_h is not None and self.count is None:
                raise ValueError("an interval (every_h) needs count (the number of doses per cycle)")
            if self.count is not None and self.count > 1 and self.every_h is None:
                raise ValueError("count > 1 needs every_h (the interval between doses, hours)")
        return self

    @property
    def input_duration_min(self) -> float:
        """Duration of the plasma input (min): i.v. infusion time, continuous-infusion time, 0 for bolus and s.c."""
        if self.route == "infusion":
            return self.duration_h * 60.0
        if self.route == "iv":
            return self.duration_min
        return 0.0

    def times_min(self) -> list[tuple[float, int]]:
        """(time in min from the run start, cycle number from 0) of every dose of this block, unbounded in time."""
        start = self.start_day * MIN_PER_DAY
        if self.weeks is not None:
            assert self.weekdays is not None
            one = sorted(
                ((w - 1) * 7 + (d - 1)) * MIN_PER_DAY + j * MIN_PER_DAY / self.per_day
                for w in self.weeks
                for d in self.weekdays
                for j in range(self.per_day)
            )
        else:
            n = self.count or 1
            one = [k * (self.every_h or 0.0) * 60.0 for k in range(n)]
        span = one[-1] - one[0]
        out = []
        for c in range(self.cycles):
            shift = c * (span + self.rest_days * MIN_PER_DAY)
            out.extend((start + shift + t, c) for t in one)
        return out


class Transfer(Group):
    """An adoptive transfer of LAK cells (lattice cells, scaled to the simulated tissue)."""

    day: float = P(0.0, "day", "days from the start of the run", ge=0, le=3660)
    cells: int = P(0, "cells", "LAK cells injected through vessel sites", ge=0, le=10**9)
    note: str = P("", "-", "free text")


class DoseScale(Group):
    """Multipliers of every dose of a drug (for dose-response sweeps)."""

    il2: float = P(1.0, "-", "multiplier of IL-2 doses", ge=0, le=1e6)
    ifna: float = P(1.0, "-", "multiplier of IFN-alpha doses", ge=0, le=1e6)
    drug: float = P(1.0, "-", "multiplier of cytotoxic drug doses", ge=0, le=1e6)


@dataclass(frozen=True)
class ScheduledDose:
    """One administration, resolved for a patient.

    ``dose`` is in the clinic's ``unit`` after ``dose_scale``; ``amount`` is what enters plasma before
    bioavailability, in the plasma unit's moles (``amount_unit``: pmol for a pM species, umol for uM);
    ``duration_min`` is the input duration (0 for a bolus or s.c.).
    """

    time_min: float
    drug: str
    route: str
    dose: float
    unit: str
    duration_min: float
    amount: float
    amount_unit: str
    amount_mol: float
    block: int
    cycle: int
    note: str = ""


@dataclass(frozen=True)
class ScheduledTransfer:
    time_min: float
    cells: int
    index: int
    note: str = ""


_DRUG_ORDER = {d: i for i, d in enumerate(_pk.DRUGS)}


class Regimen(Group):
    """A whole regimen; ``Regimen()`` is untreated."""

    description: str = P("untreated", "-", "what this regimen is")
    doses: list[DoseBlock] = Field(default_factory=list, description="dosing blocks")
    transfers: list[Transfer] = Field(default_factory=list, description="adoptive LAK transfers")
    dose_scale: DoseScale = Field(default_factory=DoseScale, description="dose multipliers per drug")

    # ---- loading
    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, source: str = "<regimen>") -> Regimen:
        """Validate the ``[regimen]`` table (the dict under ``regimen``); errors become one ParameterError."""
        try:
            return cls.model_validate(data or {})
        except ValidationError as e:
            raise ParameterError(format_regimen_error(e, source)) from None

    @classmethod
    def from_toml(cls, path: str | Path) -> Regimen:
        """Read the ``[regimen]`` table of a TOML file (a file without one is untreated)."""
        path = Path(path)
        data = read_toml(path)
        table = data.get("regimen", {})
        if not isinstance(table, dict):
            raise ParameterError(f"{path}: key 'regimen' must be a table ([regimen])")
        return cls.from_dict(table, source=str(path))

    @property
    def untreated(self) -> bool:
        return not self.doses and not self.transfers

    # ---- expansion
    def expand(self, days: float, params: Params | None = None) -> list[ScheduledDose]:
        """Every dose due in ``[0, days)``, sorted by time (then drug, route, block), resolved for the patient.

        ``params`` gives the patient (weight, surface area), the PK constants and the plasma units; default
        ``Params()``.
        """
        params = _default_params(params)
        end = days * MIN_PER_DAY
        out = []
        for b, block in enumerate(self.doses):
            units = params.species[block.drug].units
            scale = getattr(self.dose_scale, block.drug)
            dose = block.dose * scale
            if dose <= 0.0:  # a block scaled to zero (a single-agent arm of a combination grid) is not given
                continue
            mol = _pk.dose_to_mol(block.drug, dose, block.unit, params.pk, params.patient, block.duration_h)
            amount = _pk.mol_to_plasma_amount(mol, units)
            for t, cycle in block.times_min():
                if t < end:
                    out.append(
                        ScheduledDose(
                            time_min=t,
                            drug=block.drug,
                            route=block.route,
                            dose=dose,
                            unit=block.unit,
                            duration_min=block.input_duration_min,
                            amount=amount,
                            amount_unit=_pk.plasma_amount_unit(units),
                            amount_mol=mol,
                            block=b,
                            cycle=cycle,
                            note=block.note,
                        )
                    )
        out.sort(key=lambda d: (d.time_min, _DRUG_ORDER[d.drug], d.route, d.block))
        return out

    def expand_transfers(self, days: float) -> list[ScheduledTransfer]:
        """Every transfer due in ``[0, days)``, sorted by time."""
        end = days * MIN_PER_DAY
        out = [
            ScheduledTransfer(tr.day * MIN_PER_DAY, tr.cells, i, tr.note)
            for i, tr in enumerate(self.transfers)
            if tr.day * MIN_PER_DAY < end
        ]
        out.sort(key=lambda s: (s.time_min, s.index))
        return out


def _default_params(params: Params | None) -> Params:
    if params is not None:
        return params
    from abm.params import Params

    return Params()


# ----------------------------------------------------------------------------------------------- error messages
def _unwrap(ann: Any) -> Any:
    """Strip ``X | None`` and ``list[X]`` down to X."""
    for _ in range(3):
        args = [a for a in get_args(ann) if a is not type(None)]
        if get_origin(ann) is list or (args and len(args) == 1 and get_origin(ann) is not Literal):
            ann = args[0]
        else:
            break
    return ann


def _locate(loc: tuple[Any, ...]) -> tuple[str, Any, Any]:
    """(key path like ``regimen.doses[0].unit``, FieldInfo of the last key or None, model class the path reaches)."""
    key = "regimen"
    model: Any = Regimen
    info = None
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
            continue
        key += f".{part}"
        fields = model.model_fields if isinstance(model, type) and issubclass(model, BaseModel) else {}
        info = fields.get(str(part))
        model = _unwrap(info.annotation) if info is not None else None
    return key, info, model


_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "string": "a string",
    "bool": "true or false",
    "list": "a list",
    "model": "a table",
    "dict": "a table",
}


def format_regimen_error(e: ValidationError, source: str) -> str:
    """One line per problem: ``<source>: key 'regimen.doses[0].unit': invalid choice (got 'IU/m3'); ...``."""
    lines = []
    for err in e.errors():
        loc = tuple(err["loc"])
        t = err["type"]
        given = err.get("input")
        given_s = f" (got {given!r})" if not isinstance(given, dict | list) else ""
        if t == "extra_forbidden":
            key, _, model = _locate(loc[:-1])
            valid = list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []
            near = difflib.get_close_matches(str(loc[-1]), valid, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else "."
            lines.append(f"{source}: unknown key '{key}.{loc[-1]}'{hint} Valid keys: {', '.join(valid)}.")
            continue
        key, info, _ = _locate(loc)
        if t in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            msg = f"value out of range{given_s}; {describe_range(info)}"
        elif t == "literal_error":
            msg = f"invalid choice{given_s}; allowed: {(err.get('ctx') or {}).get('expected', err['msg'])}"
        elif t == "value_error":
            msg = str(err["msg"]).removeprefix("Value error, ")
        elif t.endswith("_type") or t.endswith("_parsing"):
            want = _TYPE_WORDS.get(t.split("_")[0], "")
            msg = f"wrong type{given_s}" + (f"; expected {want}" if want else "")
        else:
            msg = err["msg"] + given_s
        lines.append(f"{source}: key '{key}': {msg}")
    return "\n".join(lines)


def check_days(days: float) -> float:
    if not (isinstance(days, int | float) and math.isfinite(days) and days >= 0):
        raise ParameterError(f"days must be a finite number >= 0 (got {days!r})")
    return float(days)
