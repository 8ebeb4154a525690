"""Observables: what is measured every step (docs/model.md, section 4) and the per-run outcome (RECIST-like).

The per-step schema is declared up front from the parameters (:func:`observable_specs`), so an output file's
layout is fixed before the first step. :func:`run_outcome` works on plain arrays and so applies equally to a model
in memory and to a trajectory read back from disk.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from abm.kernels import cells as K
from abm.kernels.observe import caliper_directions, field_stats, tumour_geometry
from abm.kernels.records import LesionScratch
from abm.params import Params, ResponseParams


@dataclass(frozen=True)
class Observable:
    name: str
    units: str
    description: str


COUNTER_UNITS = "cells/step"
_COUNTER_DOCS = {
    "divisions_tumour": "tumour cell divisions this step",
    "divisions_tumour_blocked": "tumour divisions that found no free neighbour (contact inhibition)",
    "divisions_ctl": "IL-2-driven CTL divisions",
    "kills_ctl": "tumour cells killed by CTL",
    "kills_nk": "tumour cells killed by NK cells",
    "kills_lak": "tumour cells killed by LAK cells",
    "kills_drug": "cycling tumour cells killed by the cytotoxic drug",
    "deaths_tumour_spontaneous": "spontaneous tumour cell deaths",
    "deaths_ctl_natural": "CTL deaths at the end of their lifespan",
    "deaths_ctl_aicd": "CTL activation-induced cell deaths",
    "deaths_nk_natural": "NK natural deaths",
    "deaths_lak_natural": "LAK natural deaths",
    "deaths_lak_withdrawal": "LAK deaths from IL-2 withdrawal",
    "lak_conversions": "NK cells that became LAK cells",
    "recruited_ctl": "CTL entering from vessels",
    "recruited_nk": "NK cells entering from vessels",
    "transferred_lak": "LAK cells placed by adoptive transfer",
    "transfer_failed": "transferred LAK cells that found no free site",
    "ctl_exhausted": "CTL reaching their kill limit (exhausted)",
    "ctl_engaged": "CTL engaged with a tumour cell this step",
    "deaths_ctl_drug": "cycling CTL killed by the cytotoxic drug",
}


def observable_specs(p: Params) -> list[Observable]:
    """Every per-step observable, in a fixed order, with units."""
    ndim = 2 if p.lattice.nz == 1 else 3
    out = [Observable(f"n_{t}", "cells", f"number of {t} cells") for t in ("tumour", "ctl", "nk", "lak")]
    if ndim == 2:
        out.append(Observable("tumour_area_mm2", "mm^2", "tumour area (cells x site area)"))
    else:
        out.append(Observable("tumour_volume_mm3", "mm^3", "tumour volume (cells x site volume)"))
    out += [
        Observable("tumour_equivalent_diameter_mm", "mm", "diameter of the disc/ball of the tumour's area/volume"),
        Observable("tumour_longest_diameter_mm", "mm", "longest caliper diameter over every tumour cell"),
        Observable(
            "tumour_lesion_diameter_mm",
            "mm",
            "longest caliper diameter of the lesion: tumour cells with at "
            "least response.lesion_min_tumour_neighbours tumour neighbours (the RECIST measure)",
        ),
    ]
    out += [Observable(name, COUNTER_UNITS, _COUNTER_DOCS[name]) for name in K.COUNTER_NAMES]
    for sp in p.species_names:
        u = p.species[sp].units
        out += [
            Observable(f"{sp}_mean", u, f"{sp} mean over the lattice"),
            Observable(f"{sp}_max", u, f"{sp} maximum over the lattice"),
            Observable(f"{sp}_tumour_mean", u, f"{sp} mean over sites holding tumour cells (nan without tumour)"),
            Observable(f"plasma_{sp}", u, f"{sp} plasma concentration, averaged over the step"),
        ]
    out += [
        Observable("toxicity", "-", "systemic toxicity score at the end of the step"),
        Observable("doses_given", "doses/step", "doses given this step"),
        Observable("doses_held", "doses/step", "scheduled doses held for toxicity this step"),
    ]
    return out


class Observer:
    """Computes the per-step observables from the state; scratch arrays are allocated once."""

    def __init__(self, p: Params, lattice) -> None:
        self.p = p
        self.lattice = lattice
        self.ndim = lattice.ndim
        self.directions = caliper_directions(self.ndim)
        n_lines = lattice.ny * lattice.nz
        self._scratch = LesionScratch(
            *(np.empty(n_lines, dtype=np.int64) for _ in range(4)), np.empty((n_lines, 4), dtype=np.float64)
        )
        self._geo = lattice.geometry()
        self._min_nb = p.response.lesion_min_tumour_neighbours
        self._types = np.zeros(K.N_TYPES, dtype=np.int64)
        self._fields = np.zeros((len(p.species_names), 3))
        self.species = p.species_names

    def measure(
        self,
        state,
        counters: np.ndarray,
        plasma: np.ndarray,
        toxicity: float,
        doses_given: int,
        doses_held: int,
    ) -> dict[str, float]:
        c = state.cells
        h_mm = self.lattice.spacing_um * 1e-3
        nt, longest, lesion = tumour_geometry(
            c, state.occupancy, self._geo, self._min_nb, self.directions, self._scratch
        )
        K.count_types(c, self._types)
        out: dict[str, float] = {
            "n_tumour": float(self._types[K.TUMOUR]),
            "n_ctl": float(self._types[K.CTL]),
            "n_nk": float(self._types[K.NK]),
            "n_lak": float(self._types[K.LAK]),
        }
        if self.ndim == 2:
            area = nt * h_mm**2
            out["tumour_area_mm2"] = area
            out["tumour_equivalent_diameter_mm"] = 2.0 * math.sqrt(area / math.pi)
        else:
            vol = nt * h_mm**3
            out["tumour_volume_mm3"] = vol
            out["tumour_equivalent_diameter_mm"] = (6.0 * vol / math.pi) ** (1.0 / 3.0)
        out["tumour_longest_diameter_mm"] = longest * h_mm
        out["tumour_lesion_diameter_mm"] = lesion * h_mm
        for k, name in enumerate(K.COUNTER_NAMES):
            out[name] = float(counters[k])
        field_stats(state.conc, c, self._fields)
        for k, sp in enumerate(self.species):
            out[f"{sp}_mean"] = float(self._fields[k, 0])
            out[f"{sp}_max"] = float(self._fields[k, 1])
            out[f"{sp}_tumour_mean"] = float(self._fields[k, 2])
            out[f"plasma_{sp}"] = float(plasma[k])
        out["toxicity"] = float(toxicity)
        out["doses_given"] = float(doses_given)
        out["doses_held"] = float(doses_held)
        return out


# ----------------------------------------------------------------------------------------------- run outcome
RESPONSES = ("CR", "PR", "SD", "PD")  # best first


def classify(diameter: np.ndarray, n_tumour: np.ndarray, r: ResponseParams) -> np.ndarray:
    """RECIST-like response at every time point, from the lesion diameter and the tumour cell count:
    CR when the tumour is gone; PR at >= 30% shrinkage from baseline; PD at >= 20% growth over the nadir so far
    (baseline included); SD otherwise. Returns an array of 'CR' / 'PR' / 'SD' / 'PD' (the baseline reads 'SD')."""
    d = np.asarray(diameter, dtype=float)
    n = np.asarray(n_tumour, dtype=float)
    if d.size == 0:
        return np.array([], dtype="<U2")
    base = d[0]
    nadir = np.minimum.accumulate(d)
    out = np.full(d.shape, "SD", dtype="<U2")
    if base > 0:
        # growth over the nadir; once the lesion measure has vanished (nadir 0) only its reappearance is progression
        out[(d > nadir) & (d >= (1.0 + r.progression_growth) * nadir)] = "PD"
        out[d <= (1.0 - r.partial_response_shrinkage) * base] = "PR"
    out[n <= r.complete_response_cells] = "CR"
    return out


def best_overall_response(time_min: np.ndarray, resp: np.ndarray, r: ResponseParams) -> str:
    """RECIST 1.1 best overall response over the evaluations after baseline: CR if any, else PR if any, else SD
    if no progression was seen before ``r.stable_disease_min_days`` (SD must last that long), else PD."""
    t = np.asarray(time_min, dtype=float)
    after = t > t[0]
    if not np.any(after):
        return "NA"
    seen = resp[after]
    if np.any(seen == "CR"):
        return "CR"
    if np.any(seen == "PR"):
        return "PR"
    early = seen[(t[after] - t[0]) / 1440.0 < r.stable_disease_min_days]
    return "PD" if np.any(early == "PD") else ("SD" if np.any(seen == "SD") else "PD")


def run_outcome(
    time_min: np.ndarray,
    diameter: np.ndarray,
    n_tumour: np.ndarray,
    r: ResponseParams,
) -> dict[str, float | str]:
    """Per-run summary from the lesion diameter series: final and best response, times to regression and
    eradication, tumour AUC."""
    t = np.asarray(time_min, dtype=float)
    n = np.asarray(n_tumour, dtype=float)
    resp = classify(diameter, n, r)
    if t.size == 0:
        return {"response": "NA", "best_response": "NA"}
    best = best_overall_response(t, resp, r)
    d = np.asarray(diameter, dtype=float)
    regress = np.flatnonzero((d <= (1.0 - r.partial_response_shrinkage) * d[0]) | (n <= r.complete_response_cells))
    erad = np.flatnonzero(n <= r.complete_response_cells)
    days = t / 1440.0
    auc = float(np.trapezoid(n, days)) if n.size > 1 else 0.0
    span = days[-1] - days[0]
    return {
        "response": str(resp[-1]),
        "best_response": str(best),
        "time_to_regression_day": float(days[regress[0]]) if regress.size else math.nan,
        "time_to_eradication_day": float(days[erad[0]]) if erad.size else math.nan,
        "tumour_auc_cell_days": auc,
        "tumour_auc_relative": auc / (n[0] * span) if n[0] > 0 and span > 0 else math.nan,
        "tumour_cells_initial": float(n[0]),
        "tumour_cells_final": float(n[-1]),
        "tumour_cells_min": float(n.min()),
        "longest_diameter_initial_mm": float(d[0]),
        "longest_diameter_final_mm": float(d[-1]),
        "longest_diameter_nadir_mm": float(d.min()),
        "max_shrinkage": float(1.0 - d.min() / d[0]) if d[0] > 0 else math.nan,
        "days": float(span),
    }


SUMMARY_TOTALS = (
    "kills_ctl",
    "kills_nk",
    "kills_lak",
    "kills_drug",
    "divisions_tumour",
    "recruited_ctl",
    "recruited_nk",
    "lak_conversions",
    "transferred_lak",
    "deaths_ctl_aicd",
    "deaths_ctl_drug",
)


def run_summary(
    series: dict[str, np.ndarray], events: list[dict[str, Any]], r: ResponseParams, seed: int
) -> dict[str, Any]:
    """The per-run outcome (RECIST-like) plus totals of doses, toxicity events, kills and recruitment, from the
    per-step observable series (``time_min`` included) and the therapy events."""
    a = series
    out: dict[str, Any] = dict(run_outcome(a["time_min"], a["tumour_lesion_diameter_mm"], a["n_tumour"], r))
    kinds = Counter(e["kind"] for e in events)
    dlt = [e for e in events if e["kind"] == "toxicity_dlt"]
    out.update(
        doses_given=int(kinds.get("dose_given", 0)),
        doses_held=int(kinds.get("dose_held", 0)),
        doses_cancelled=int(kinds.get("dose_cancelled", 0)),
        dose_limiting_toxicity=bool(dlt),
        dlt_day=float(dlt[0]["time_min"]) / 1440.0 if dlt else math.nan,
        toxicity_max=float(np.max(a["toxicity"])) if len(a["toxicity"]) else 0.0,
        seed=int(seed),
    )
    for name in SUMMARY_TOTALS:
        out[f"total_{name}"] = int(np.sum(a[name]))
    for kind in ("ctl", "nk", "lak"):
        out[f"max_n_{kind}"] = float(np.max(a[f"n_{kind}"]))
    return out
