"""RECIST 1.1 as trials apply it, at scheduled imaging visits, on a simulated lesion (docs/trials.md, "Response").

**What is measured.** At baseline (day 0, the start of treatment) and at each assessment the lesion is measured
as the *sum of the longest diameters of its fragments* (RECIST 1.1 s4.3: "when a target lesion fragments, the
longest diameters of the fragmented portions are added"). A fragment is a group of tumour cells no further apart
than ``merge_distance_um`` of free space (what imaging would not resolve as separate); its longest diameter is the
largest centre-to-centre distance between two of its cells plus one cell diameter (the convention of the run's
caliper observables). Fragments shorter than ``measurable_min_mm`` are not measurable: they add nothing to the
sum, but while any tumour cell remains the response is not complete. (``measure = "caliper"`` uses the run's
``tumour_lesion_diameter_mm`` instead, one caliper across every fragment, and ``"equivalent"`` the diameter of a
disc/ball of the tumour's area/volume.)

**Time-point response** at an assessment, in this order: CR if at most ``complete_response_cells`` tumour cells
remain; PD if a CR was seen before (the lesion reappeared), or if the sum is at least ``1 + progression`` times
the nadir (the smallest sum so far, baseline included) *and* at least ``progression_min_increase_mm`` above it;
PR if the sum is at most ``1 - partial_response`` times the baseline sum; SD otherwise.

**The 5 mm floor.** RECIST asks a progression to add 5 mm as well as 20%, because +20% of a small lesion lies within
CT measurement error. A simulated lesion is 0.1-1 mm across, so 5 mm would forbid progression altogether; the
measurement error here is the lattice: a caliper moves by one site (20 um) as single cells divide or die at its
ends. The stand-in is ``progression_min_increase_mm`` = 0.1 mm (5 sites), and the same size is the smallest
measurable fragment (``measurable_min_mm``). Both are parameters.

**Visits.** Scheduled assessments at ``first_visit_week`` and then every ``visit_every_weeks`` (or the explicit
``visit_weeks``) up to ``follow_up_weeks``. A PR or CR is confirmed by a repeat assessment at least
``confirm_min_weeks`` later; with ``confirmation_scan`` an extra assessment is scheduled exactly that long after a
response when the next visit would come later (as trial protocols do), also after the last scheduled visit.

**Best overall response** (RECIST 1.1 s4.4, confirmation required), over the assessments up to the first PD:
CR if a CR is followed, at the first assessment at least ``confirm_min_weeks`` later, by CR with only CRs between;
else PR the same way with PR or CR; else SD if some assessment at or after ``sd_min_weeks`` was not PD; else PD if a
PD was seen; else NE (not evaluable: no measurable lesion at baseline, or no assessment late enough).
``best_response_unconfirmed`` applies the same order without confirmation (what a single scan would say).

Off study: with ``off_study_at_progression`` a patient leaves the study at the first PD (assessments and, in a run,
the simulation stop there: the best overall response is settled by then), as trial patients stop protocol
treatment at progression; with ``stop_after_confirmed_cr`` also once a CR is confirmed (nothing later can change
the best response; the response duration is then censored at the confirmation).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import model_validator

from abm.params.core import Group, P

RESPONSES = ("CR", "PR", "SD", "PD", "NE")  # best first
DAY = 7.0  # days per week


class RecistParams(Group):
    """How response is assessed (RECIST 1.1 at scheduled visits)."""

    visit_every_weeks: float = P(8.0, "week", "interval between scheduled assessments", gt=0, le=520)
    first_visit_week: float | None = P(
        None, "week", "first scheduled assessment (default: one visit interval after baseline)", gt=0, le=520
    )
    visit_weeks: list[float] | None = P(None, "week", "explicit assessment weeks (replace the regular schedule)")
    follow_up_weeks: float = P(16.0, "week", "scheduled assessments end here", gt=0, le=520)
    confirm_min_weeks: float = P(
        4.0,
        "week",
        "a response is confirmed by an assessment at least this much later",
        ge=0,
        le=520,
        source="RECIST 1.1 s4.4: no less than 4 weeks",
    )
    confirmation_scan: bool = P(True, "-", "schedule a confirmatory assessment confirm_min_weeks after a response")
    sd_min_weeks: float = P(
        6.0,
        "week",
        "stable disease must be seen at or after this time",
        ge=0,
        le=520,
        source="RECIST 1.1 s4.4: a minimum interval set by the protocol, commonly 6-8 weeks",
    )
    partial_response: float = P(0.30, "-", "shrinkage of the sum from baseline for PR", gt=0, lt=1, source="RECIST 1.1")
    progression: float = P(0.20, "-", "growth of the sum over the nadir for PD", gt=0, le=10, source="RECIST 1.1")
    progression_min_increase_mm: float = P(
        0.1,
        "mm",
        "PD also needs the sum this much above the nadir (stands in for RECIST's 5 mm)",
        ge=0,
        le=100,
        source="choice: 5 lattice sites, the measurement noise of a simulated caliper",
    )
    measurable_min_mm: float = P(
        0.1,
        "mm",
        "fragments shorter than this are not measurable (not in the sum)",
        ge=0,
        le=100,
        source="choice: the same 5 sites",
    )
    merge_distance_um: float = P(
        40.0,
        "um",
        "tumour cells separated by at most this much free space belong to one fragment",
        ge=0,
        le=1e4,
        source="choice: 2 sites, below what imaging resolves relative to a lesion's size",
    )
    measure: Literal["fragments", "caliper", "equivalent"] = P(
        "fragments", "-", "what is summed: fragment diameters (RECIST), one caliper, or the equivalent diameter"
    )
    complete_response_cells: int = P(0, "cells", "tumour cells at or below which a response is complete", ge=0)
    off_study_at_progression: bool = P(True, "-", "assessments (and the run) stop at the first PD")
    stop_after_confirmed_cr: bool = P(
        True, "-", "assessments (and the run) stop once a CR is confirmed (the best response cannot change)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> RecistParams:
        if self.visit_weeks is not None:
            if not self.visit_weeks or any(not (0 < w <= 520) for w in self.visit_weeks):
                raise ValueError("visit_weeks must be a non-empty list of weeks in (0, 520]")
            if sorted(set(self.visit_weeks)) != list(self.visit_weeks):
                raise ValueError("visit_weeks must increase")
        if self.scheduled_days() == []:
            raise ValueError(
                f"no assessment is scheduled within follow_up_weeks = {self.follow_up_weeks:g} "
                f"(first visit at week {self.first_week:g})"
            )
        return self

    @property
    def first_week(self) -> float:
        if self.visit_weeks:
            return float(self.visit_weeks[0])
        return float(self.first_visit_week if self.first_visit_week is not None else self.visit_every_weeks)

    def scheduled_days(self) -> list[float]:
        """The scheduled assessment days (baseline excluded), up to the follow-up."""
        end = self.follow_up_weeks * DAY + 1e-9
        if self.visit_weeks is not None:
            return [w * DAY for w in self.visit_weeks if w * DAY <= end]
        out, w = [], self.first_week
        while w * DAY <= end:
            out.append(w * DAY)
            w += self.visit_every_weeks
        return out

    @property
    def confirm_days(self) -> float:
        return self.confirm_min_weeks * DAY

    @property
    def last_day(self) -> float:
        """The last day an assessment can happen (a confirmation scan after the last visit included)."""
        last = self.scheduled_days()[-1]
        return last + (self.confirm_days if self.confirmation_scan else 0.0)


@dataclass(frozen=True)
class Measurement:
    """One assessment of the lesion: the sum used by RECIST, and what it is made of."""

    sum_mm: float
    cells: int
    fragments: int = 0
    measurable: int = 0
    largest_mm: float = 0.0
    caliper_mm: float = math.nan
    equivalent_mm: float = math.nan


@dataclass(frozen=True)
class TimePoint:
    day: float
    sum_mm: float
    change_pct: float
    response: str
    cells: int
    fragments: int
    scheduled: bool


@dataclass
class Assessor:
    """RECIST 1.1 at visits, one assessment at a time (a run's reporter and the tests drive the same class)."""

    rule: RecistParams
    baseline: Measurement | None = None
    points: list[TimePoint] = field(default_factory=list)
    _pending_confirm: float | None = None
    _visits: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._visits = self.rule.scheduled_days()

    # ------------------------------------------------------------------------------------------ state
    @property
    def evaluable(self) -> bool:
        """Measurable disease at baseline."""
        return self.baseline is not None and self.baseline.sum_mm > 0

    @property
    def progressed(self) -> bool:
        return any(p.response == "PD" for p in self.points)

    @property
    def nadir(self) -> float:
        assert self.baseline is not None
        return min([self.baseline.sum_mm] + [p.sum_mm for p in self.points])

    def done(self) -> bool:
        """No further assessment: off study (PD), not evaluable, or the schedule is over."""
        if self.baseline is not None and not self.evaluable:
            return True
        if self.progressed and self.rule.off_study_at_progression:
            return True
        if self.rule.stop_after_confirmed_cr and self.points and self.best_response() == "CR":
            return True
        return self.next_day() is None

    def next_day(self) -> float | None:
        """The day of the next assessment (None when there is none)."""
        if self.baseline is None:
            return 0.0
        last = self.points[-1].day if self.points else 0.0
        cands = [d for d in self._visits if d > last + 1e-9]
        if self._pending_confirm is not None and self._pending_confirm > last + 1e-9:
            cands.append(self._pending_confirm)
        return min(cands) if cands else None

    # ------------------------------------------------------------------------------------------ assessing
    def add(self, day: float, m: Measurement) -> str:
        """Record the assessment on ``day``; returns its time-point response ('BL' for the baseline)."""
        r = self.rule
        if self.baseline is None:
            self.baseline = m
            return "BL"
        base = self.baseline.sum_mm
        nadir = self.nadir
        if m.cells <= r.complete_response_cells:
            resp = "CR"
        elif any(p.response == "CR" for p in self.points):
            resp = "PD"  # reappearance after a complete response
        elif m.sum_mm >= (1 + r.progression) * nadir and m.sum_mm - nadir >= r.progression_min_increase_mm - 1e-12:
            resp = "PD"
        elif m.sum_mm <= (1 - r.partial_response) * base:
            resp = "PR"
        else:
            resp = "SD"
        if resp == "CR":
            change = -100.0
        else:
            change = 100.0 * (m.sum_mm / base - 1.0) if base > 0 else math.nan
        scheduled = any(abs(day - d) < 1e-6 for d in self._visits)
        self.points.append(TimePoint(day, m.sum_mm, change, resp, m.cells, m.fragments, scheduled))
        if self._pending_confirm is not None and day >= self._pending_confirm - 1e-9:
            self._pending_confirm = None
        if r.confirmation_scan and resp in ("PR", "CR") and self._pending_confirm is None:
            want = day + r.confirm_days
            settled = self.best_response() == "CR" or (resp == "PR" and self.best_response() == "PR")
            if not settled and want <= r.last_day + 1e-9:
                nxt = [d for d in self._visits if d > day + 1e-9]
                if r.confirm_days > 0 and (not nxt or nxt[0] > want + 1e-9):
                    self._pending_confirm = want
        return resp

    # ------------------------------------------------------------------------------------------ read-outs
    def _on_study(self) -> list[TimePoint]:
        """Assessments up to and including the first PD."""
        out = []
        for p in self.points:
            out.append(p)
            if p.response == "PD":
                break
        return out

    def _confirmed_start(self, level: str) -> TimePoint | None:
        """The first assessment that starts a confirmed response at ``level`` (CR: CR only; PR: PR or CR)."""
        ok = ("CR",) if level == "CR" else ("PR", "CR")
        pts = self._on_study()
        for i, p in enumerate(pts):
            if p.response not in ok:
                continue
            for q in pts[i + 1 :]:
                if q.response not in ok:
                    break
                if q.day - p.day >= self.rule.confirm_days - 1e-9:
                    return p
        return None

    def best_response(self, confirmed: bool = True) -> str:
        if not self.evaluable:
            return "NE"
        pts = self._on_study()
        if confirmed:
            if self._confirmed_start("CR") is not None:
                return "CR"
            if self._confirmed_start("PR") is not None:
                return "PR"
        else:
            seen = {p.response for p in pts}
            if "CR" in seen:
                return "CR"
            if "PR" in seen:
                return "PR"
        if any(p.response != "PD" and p.day >= self.rule.sd_min_weeks * DAY - 1e-9 for p in pts):
            return "SD"
        if any(p.response == "PD" for p in pts):
            return "PD"
        return "NE"

    def result(self) -> dict[str, Any]:
        """The per-patient read-outs (days from the start of treatment; NaN where there is no such event)."""
        pts = self._on_study()
        pr = self._confirmed_start("PR")
        cr = self._confirmed_start("CR")
        pd_ = next((p for p in pts if p.response == "PD"), None)
        last = pts[-1].day if pts else 0.0
        changes = [p.change_pct for p in pts if math.isfinite(p.change_pct)]
        out: dict[str, Any] = {
            "evaluable": bool(self.evaluable),
            "best_response": self.best_response(True),
            "best_response_unconfirmed": self.best_response(False),
            "responder": self.best_response(True) in ("CR", "PR"),
            "best_change_pct": float(min(changes)) if changes else math.nan,
            "baseline_sum_mm": float(self.baseline.sum_mm) if self.baseline is not None else math.nan,
            "baseline_cells": int(self.baseline.cells) if self.baseline is not None else 0,
            "time_to_response_day": float(pr.day) if pr is not None else math.nan,
            "time_to_cr_day": float(cr.day) if cr is not None else math.nan,
            "progressed": pd_ is not None,
            "time_to_progression_day": float(pd_.day) if pd_ is not None else math.nan,
            "last_assessment_day": float(last),
            "n_assessments": len(pts),
        }
        if pr is not None:
            end = pd_.day if pd_ is not None else last
            out["duration_of_response_day"] = float(end - pr.day)
            out["response_ongoing"] = pd_ is None
        else:
            out["duration_of_response_day"] = math.nan
            out["response_ongoing"] = False
        return out

    def timepoints(self) -> list[dict[str, Any]]:
        return [asdict(p) for p in self.points]


# ---------------------------------------------------------------------------------------------- made-up series
def assess_series(
    day: np.ndarray,
    sum_mm: np.ndarray,
    cells: np.ndarray,
    rule: RecistParams,
    fragments: np.ndarray | None = None,
) -> Assessor:
    """RECIST at visits on a given series (days, sums, tumour cells), as a run's reporter would take it: each
    assessment reads the first sample at or after its day (samples end: the assessments stop)."""
    day = np.asarray(day, dtype=float)
    sum_mm = np.asarray(sum_mm, dtype=float)
    cells = np.asarray(cells)
    a = Assessor(rule)
    while not a.done():
        d = a.next_day()
        i = int(np.searchsorted(day, d - 1e-9))
        if i >= len(day):
            break
        frag = int(fragments[i]) if fragments is not None else int(sum_mm[i] > 0)
        a.add(d, Measurement(float(sum_mm[i]), int(cells[i]), frag, frag, float(sum_mm[i])))
    return a


# ---------------------------------------------------------------------------------------------- the lattice
def measure_lattice(
    tumour: np.ndarray, shape_xyz: tuple[int, int, int], spacing_um: float, rule: RecistParams
) -> Measurement:
    """The RECIST measurement of a lattice: ``tumour`` is a flat boolean array of the sites holding tumour cells
    (site = x + nx * (y + ny * z)). Fragments are merged across gaps of at most ``rule.merge_distance_um``."""
    from scipy import ndimage

    nx, ny, nz = shape_xyz
    mask = np.asarray(tumour, dtype=bool).reshape(nz, ny, nx)
    cells = int(mask.sum())
    h_mm = spacing_um * 1e-3
    if cells == 0:
        return Measurement(0.0, 0, 0, 0, 0.0)
    if nz == 1:
        mask = mask[0]
    full = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    if rule.merge_distance_um > 0:
        # sites within half the bridged distance (plus half a cell) of a tumour cell: two cells whose free gap is
        # at most merge_distance_um share a region
        dist = ndimage.distance_transform_edt(~mask, sampling=spacing_um)
        region = dist <= 0.5 * (rule.merge_distance_um + spacing_um) + 1e-9
        labels, n = ndimage.label(region, structure=full)
        labels = np.where(mask, labels, 0)
    else:
        labels, n = ndimage.label(mask, structure=full)
    coords = np.argwhere(labels > 0)
    lab = labels[labels > 0]
    order = np.argsort(lab, kind="stable")
    coords, lab = coords[order], lab[order]
    bounds = np.flatnonzero(np.diff(lab)) + 1
    diam = []
    for pts in np.split(coords, bounds):
        diam.append(_longest(pts.astype(float)) * h_mm + h_mm)
    diam = np.array(diam)
    measurable = diam >= rule.measurable_min_mm - 1e-12
    return Measurement(
        sum_mm=float(diam[measurable].sum()),
        cells=cells,
        fragments=int(len(diam)),
        measurable=int(measurable.sum()),
        largest_mm=float(diam.max()),
    )


def _longest(pts: np.ndarray) -> float:
    """The largest distance between two of ``pts`` (in sites), through their convex hull when there are many."""
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import pdist

    if len(pts) < 2:
        return 0.0
    if len(pts) > 64:
        try:
            pts = pts[ConvexHull(pts).vertices]
        except (QhullError, ValueError):  # collinear or flat: every point
            pass
    return float(pdist(pts).max())
