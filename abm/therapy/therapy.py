"""The therapy orchestrator: one call per agent step gives plasma levels, toxicity, doses and LAK transfers.

Within a step ``[t0, t1)`` everything happens in time order: the toxicity score is integrated up to each dose's
scheduled time, the dose is then given (score <= hold threshold), held (score > hold threshold) or cancelled
(course stopped), and a dose given adds its closed-form plasma curve. The score reaching the DLT threshold stops the
course: every later dose of every drug is cancelled, each at its own scheduled step. Adoptive transfers are given
on schedule whatever the score (a prepared cell product is not held back; documented choice). The plasma value
returned is the exact mean over the step of the superposed curves of all doses given so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from abm.therapy import pk as _pk
from abm.therapy.regimen import Regimen, ScheduledDose, ScheduledTransfer, check_days
from abm.therapy.toxicity import advance_toxicity

if TYPE_CHECKING:  # pragma: no cover
    from abm.params import Params

EVENT_KINDS = ("dose_given", "dose_held", "dose_cancelled", "transfer", "toxicity_dlt")
EVENT_KEYS = ("kind", "step", "time_min", "drug", "route", "dose", "unit", "amount", "note")


@dataclass
class TherapyStep:
    """What therapy contributes to one agent step.

    ``plasma``: float64 (n_species,) in ``params.species_names`` order, exact mean plasma concentration over the
    step (species units; 0 for species without a PK model). ``toxicity``: the score at the end of the step.
    ``events``: dicts with the keys of ``EVENT_KEYS``. Counts are for this step; ``course_stopped`` is the state
    at the end of the step.
    """

    plasma: np.ndarray
    toxicity: float
    lak_cells: float
    events: list[dict[str, Any]] = field(default_factory=list)
    doses_given: int = 0
    doses_held: int = 0
    course_stopped: bool = False
    doses_cancelled: int = 0


def _step_of(time_min: float, dt: float) -> int:
    """The agent step whose interval [k dt, (k+1) dt) holds ``time_min`` (robust to float round-off)."""
    return int(math.floor(time_min / dt + 1e-9))


class Therapy:
    """Plasma PK, dosing with toxicity holds and DLT stop, and LAK transfers for one run.

    Parameters
    ----------
    regimen : the regimen (``Regimen()`` is untreated).
    params : the parameter tree (patient, pk, toxicity, species units, time step).
    days : run length; doses and transfers at or after ``days`` are not scheduled.
    """

    def __init__(self, regimen: Regimen, params: Params, days: float) -> None:
        self.regimen = regimen
        self.params = params
        self.days = check_days(days)
        self.dt = float(params.time.dt_min)
        self.species = list(params.species_names)
        self.schedule: list[ScheduledDose] = regimen.expand(self.days, params)
        self.transfers: list[ScheduledTransfer] = regimen.expand_transfers(self.days)
        self._dose_steps = [_step_of(d.time_min, self.dt) for d in self.schedule]
        self._transfer_steps = [_step_of(t.time_min, self.dt) for t in self.transfers]
        self._next_dose = 0
        self._next_transfer = 0
        self._next_step = 0
        self._terms: dict[str, _pk.Terms] = {d: _pk.Terms.empty() for d in params.pk}
        self.toxicity = 0.0
        self.max_toxicity = 0.0
        self.course_stopped = False
        self.dlt_time_min: float | None = None
        self.events: list[dict[str, Any]] = []
        self.totals = {"doses_given": 0, "doses_held": 0, "doses_cancelled": 0, "lak_cells": 0.0}

    # ---- queries
    @property
    def hold_threshold(self) -> float:
        return self.params.patient.toxicity_hold_threshold

    @property
    def dlt_threshold(self) -> float:
        return self.params.patient.toxicity_dlt_threshold

    def plasma_at(self, t_min: float) -> np.ndarray:
        """Instantaneous plasma concentrations at ``t_min`` from the doses given so far (species order)."""
        return np.array([self._terms[s].value(t_min) if s in self._terms else 0.0 for s in self.species])

    def summary(self) -> dict[str, Any]:
        """Per-run totals: doses given/held/cancelled, LAK cells, DLT and its time, highest score."""
        return {
            **self.totals,
            "dlt": self.dlt_time_min is not None,
            "dlt_time_min": self.dlt_time_min,
            "max_toxicity": self.max_toxicity,
            "scheduled_doses": len(self.schedule),
        }

    # ---- the step
    def advance(self, step: int) -> TherapyStep:
        """Advance over ``[step dt, (step + 1) dt)``; call once per step, in order from 0."""
        if step != self._next_step:
            raise ValueError(
                f"Therapy.advance: expected step {self._next_step}, got {step} (call once per step, in order)"
            )
        self._next_step += 1
        t0, t1 = step * self.dt, (step + 1) * self.dt
        events: list[dict[str, Any]] = []
        counts = {"dose_given": 0, "dose_held": 0, "dose_cancelled": 0}

        # transfers first: they do not depend on the score
        lak = 0.0
        while self._next_transfer < len(self.transfers) and self._transfer_steps[self._next_transfer] <= step:
            tr = self.transfers[self._next_transfer]
            self._next_transfer += 1
            lak += tr.cells
            events.append(
                self._event(
                    "transfer",
                    step,
                    tr.time_min,
                    "lak",
                    "iv",
                    float(tr.cells),
                    "cells",
                    float(tr.cells),
                    tr.note or f"transfer {tr.index}",
                )
            )
        self.totals["lak_cells"] += lak

        t = t0
        while self._next_dose < len(self.schedule) and self._dose_steps[self._next_dose] <= step:
            td = max(self.schedule[self._next_dose].time_min, t0)
            self._integrate_toxicity(t, td, step, events)
            t = td
            while (
                self._next_dose < len(self.schedule)
                and self._dose_steps[self._next_dose] <= step
                and max(self.schedule[self._next_dose].time_min, t0) == td
            ):
                dose = self.schedule[self._next_dose]
                self._next_dose += 1
                if self.course_stopped:
                    kind, note = "dose_cancelled", f"course stopped by DLT at t = {self.dlt_time_min:g} min"
                elif self.toxicity > self.hold_threshold:
                    kind, note = "dose_held", f"toxicity {self.toxicity:.3f} > hold threshold {self.hold_threshold:g}"
                else:
                    kind, note = "dose_given", dose.note
                    self._give(dose, td)
                counts[kind] += 1
                events.append(
                    self._event(
                        kind, step, dose.time_min, dose.drug, dose.route, dose.dose, dose.unit, dose.amount, note
                    )
                )
        self._integrate_toxicity(t, t1, step, events)

        plasma = np.zeros(len(self.species))
        for i, s in enumerate(self.species):
            if s in self._terms:
                plasma[i] = self._terms[s].average(t0, t1)
                self._terms[s] = self._terms[s].prune(t1)

        self.totals["doses_given"] += counts["dose_given"]
        self.totals["doses_held"] += counts["dose_held"]
        self.totals["doses_cancelled"] += counts["dose_cancelled"]
        self.events.extend(events)
        return TherapyStep(
            plasma=plasma,
            toxicity=self.toxicity,
            lak_cells=lak,
            events=events,
            doses_given=counts["dose_given"],
            doses_held=counts["dose_held"],
            course_stopped=self.course_stopped,
            doses_cancelled=counts["dose_cancelled"],
        )

    def run(self, steps: int | None = None) -> list[TherapyStep]:
        """Advance through ``steps`` steps (default: the whole run) from the current step; for tests and reports."""
        if steps is None:
            steps = int(math.ceil(self.days * 1440.0 / self.dt - 1e-9)) - self._next_step
        return [self.advance(self._next_step) for _ in range(steps)]

    # ---- internals
    def _give(self, dose: ScheduledDose, t_min: float) -> None:
        terms = _pk.scheduled_dose_terms(dose.drug, dose.route, dose.amount, t_min, dose.duration_min, self.params.pk)
        self._terms[dose.drug] = _pk.Terms.concat([self._terms[dose.drug], terms])

    def _integrate_toxicity(self, ta: float, tb: float, step: int, events: list[dict[str, Any]]) -> None:
        if tb <= ta:
            return
        threshold = None if self.course_stopped else self.dlt_threshold
        s_before = self.toxicity
        self.toxicity, t_cross = advance_toxicity(
            self.toxicity, ta, tb, self._terms[self.params.toxicity.drug], self.params.toxicity, threshold
        )
        self.max_toxicity = max(self.max_toxicity, self.toxicity, s_before)
        if t_cross is not None and not self.course_stopped:
            self.course_stopped = True
            self.dlt_time_min = t_cross
            events.append(
                self._event(
                    "toxicity_dlt",
                    step,
                    t_cross,
                    "",
                    "",
                    0.0,
                    "",
                    0.0,
                    f"toxicity reached the DLT threshold {self.dlt_threshold:g}; course stopped",
                )
            )

    @staticmethod
    def _event(
        kind: str, step: int, time_min: float, drug: str, route: str, dose: float, unit: str, amount: float, note: str
    ) -> dict[str, Any]:
        return {
            "kind": kind,
            "step": step,
            "time_min": float(time_min),
            "drug": drug,
            "route": route,
            "dose": float(dose),
            "unit": unit,
            "amount": float(amount),
            "note": note,
        }
