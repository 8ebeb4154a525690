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
    cells_per_infusion = 1e10   # the whole patient's dose; the lesion receives its share
    [regimen.dose_scale]
    il2 = 1.0
    [regimen.shift_days]        # move every dose of a drug (schedule-order sweeps); doses before day 0 are dropped
    drug = -28

``Regimen()`` is the untreated regimen. :meth:`Regimen.from_dict` / :meth:`Regimen.from_toml` turn every problem
into one :class:`~abm.params.ParameterError` naming the key (``regimen.doses[0].unit``) and the allowed values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, model_validator

from abm.errors import ParameterError
from abm.params import Params
from abm.params.core import Group, Layer, P, build, read_toml
from abm.therapy import pk as _pk

if TYPE_CHECKING:  # pragma: no cover
    from abm.params import DrugPK

MIN_PER_DAY = 1440.0

RouteName = Literal["iv", "infusion", "sc"]
UnitName = Literal[_pk.UNITS]  # type: ignore[valid-type]


class DoseBlock(Group):
    """One dosing block: a drug, route and dose, repeated at a fixed interval or in a weekly pattern."""

    drug: str = P("il2", "-", "the drug dosed: a key of the parameter tree's pk (il2, ifna, drug by default)")
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
    """An adoptive transfer of LAK cells, dosed as the clinic doses it: cells per infusion into the patient. The
    simulated lesion receives its share (docs/model.md, adoptive transfer): dose x lak.homing_fraction x (lesion
    tumour cells / patient.tumour_burden_cells)."""

    day: float = P(0.0, "day", "days from the start of the run", ge=0, le=3660)
    cells_per_infusion: float = P(
        0.0, "cells", "LAK cells infused into the patient (Rosenberg: about 1e10 per infusion)", ge=0, le=1e13
    )
    note: str = P("", "-", "free text")


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
    cells: float
    index: int
    note: str = ""


class Regimen(Group):
    """A whole regimen; ``Regimen()`` is untreated."""

    description: str = P("untreated", "-", "what this regimen is")
    doses: list[DoseBlock] = Field(default_factory=list, description="dosing blocks")
    transfers: list[Transfer] = Field(default_factory=list, description="adoptive LAK transfers")
    dose_scale: dict[str, Annotated[float, Field(ge=0, le=1e6)]] = Field(
        default_factory=dict, description="multiplier of every dose of a drug (for dose-response sweeps; default 1)"
    )
    shift_days: dict[str, Annotated[float, Field(ge=-3660, le=3660)]] = Field(
        default_factory=dict,
        description="days by which every dose of a drug moves (for schedule-order sweeps; default 0); a dose moved "
        "before day 0 is not given",
    )

    # ---- loading
    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, source: str = "<regimen>", params: Params | None = None) -> Regimen:
        """Validate the ``[regimen]`` table (the dict under ``regimen``) and check its drugs, routes and units
        against ``params.pk`` (default ``Params()``); every problem becomes one ParameterError naming the key."""
        doc = build(RegimenDoc, [Layer(source, {"regimen": data or {}})], source)
        check_regimen(doc.regimen, _default_params(params).pk, lambda path: source)
        return doc.regimen

    @classmethod
    def from_toml(cls, path: str | Path) -> Regimen:
        """Read the ``[regimen]`` table of a TOML file (a file without one is untreated)."""
        path = Path(path)
        data = read_toml(path)
        table = data.get("regimen", {})
        if not isinstance(table, dict):
            raise ParameterError(f"{path}: key 'regimen' must be a table ([regimen])")
        return cls.from_dict(table, source=str(path))

    def scale(self, drug: str) -> float:
        """The dose multiplier of ``drug`` (1 unless ``dose_scale`` names it)."""
        return self.dose_scale.get(drug, 1.0)

    def shift_min(self, drug: str) -> float:
        """Minutes by which every dose of ``drug`` moves (0 unless ``shift_days`` names it)."""
        return self.shift_days.get(drug, 0.0) * MIN_PER_DAY

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
        order = {d: i for i, d in enumerate(params.pk)}
        out = []
        for b, block in enumerate(self.doses):
            units = params.species[block.drug].units
            scale = self.scale(block.drug)
            dose = block.dose * scale
            if dose <= 0.0:  # a block scaled to zero (a single-agent arm of a combination grid) is not given
                continue
            mol = _pk.dose_to_mol(block.drug, dose, block.unit, params.pk, params.patient, block.duration_h)
            amount = _pk.mol_to_plasma_amount(mol, units)
            shift = self.shift_min(block.drug)
            for t0, cycle in block.times_min():
                t = t0 + shift
                if 0.0 <= t < end:
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
        out.sort(key=lambda d: (d.time_min, order[d.drug], d.route, d.block))
        return out

    def expand_transfers(self, days: float) -> list[ScheduledTransfer]:
        """Every transfer due in ``[0, days)``, sorted by time."""
        end = days * MIN_PER_DAY
        out = [
            ScheduledTransfer(tr.day * MIN_PER_DAY, tr.cells_per_infusion, i, tr.note)
            for i, tr in enumerate(self.transfers)
            if tr.day * MIN_PER_DAY < end
        ]
        out.sort(key=lambda s: (s.time_min, s.index))
        return out


def _default_params(params: Params | None) -> Params:
    return params if params is not None else Params()


class RegimenDoc(Group):
    """A ``[regimen]`` table on its own (so that error messages name ``regimen.*`` keys)."""

    regimen: Regimen = Field(default_factory=Regimen)


def _choices(names) -> str:
    q = [repr(n) for n in names]
    return q[0] if len(q) == 1 else ", ".join(q[:-1]) + " or " + q[-1]


def _because(where: Callable[[tuple[str, ...]], str], dose: tuple[str, ...], pk: tuple[str, ...], what: str) -> str:
    """When another layer than the dose's set the PK key that took the choice away, name it too."""
    src = where(pk)
    return "" if src == where(dose) else f" ({src}: key '{'.'.join(pk)}' = 0 leaves the drug {what})"


def check_regimen(regimen: Regimen, pk: dict[str, DrugPK], where: Callable[[tuple[str, ...]], str]) -> None:
    """Check each dose block's drug, route and unit against the PK models (``params.pk``), and the dose_scale and
    shift_days keys;
    raise one ParameterError listing every problem, each naming its source (``where(key path)``) and key."""
    lines = []
    for i, block in enumerate(regimen.doses):
        path = ("regimen", "doses", str(i))
        key = ".".join(path)
        d = pk.get(block.drug)
        if d is None:
            lines.append(
                f"{where((*path, 'drug'))}: key '{key}.drug': invalid choice (got {block.drug!r}); "
                f"allowed: {_choices(pk)}"
            )
            continue
        routes = _pk.routes_for(d)
        if block.route not in routes:
            lines.append(
                f"{where((*path, 'route'))}: key '{key}': route {block.route!r} is not available for drug "
                f"{block.drug!r}; allowed routes: {', '.join(routes)}"
                + _because(where, (*path, "route"), ("pk", block.drug, "sc_absorption_half_life_min"), "no s.c. model")
            )
        units = _pk.units_for(d)
        if block.unit not in units:
            lines.append(
                f"{where((*path, 'unit'))}: key '{key}': unit {block.unit!r} is not valid for drug {block.drug!r}; "
                f"allowed units: {', '.join(units)}"
                + _because(where, (*path, "unit"), ("pk", block.drug, "iu_per_mg"), "no IU units")
            )
    for table in ("dose_scale", "shift_days"):
        for drug in getattr(regimen, table):
            if drug not in pk:
                lines.append(
                    f"{where(('regimen', table, drug))}: key 'regimen.{table}.{drug}': unknown drug; "
                    f"allowed: {_choices(pk)}"
                )
    if lines:
        raise ParameterError("\n".join(lines))


def check_days(days: float) -> float:
    if not (isinstance(days, int | float) and math.isfinite(days) and days >= 0):
        raise ParameterError(f"days must be a finite number >= 0 (got {days!r})")
    return float(days)
