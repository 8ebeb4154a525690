"""Shared by the model-level studies (convergence, tissue size): run many short simulations in worker processes and
summarise them with seed means and 95% t intervals. Every number printed is measured in the run that prints it."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    """One simulation: a scenario, overrides (key=value strings), a seed and a length."""

    label: str
    scenario: str
    sets: tuple[str, ...]
    seed: int
    days: float


def _one(case: Case) -> dict:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import abm

    t0 = time.perf_counter()
    res = abm.run(case.scenario, sets=list(case.sets), seed=case.seed, days=case.days)
    s = res.summary
    o = res.observables
    return {
        "label": case.label,
        "seed": case.seed,
        "auc_relative": float(s["tumour_auc_relative"]),
        "peak_ctl": float(s["max_n_ctl"]),
        "final_tumour": float(s["tumour_cells_final"]),
        "best_response": s["best_response"],
        "recruited_ctl": float(s["total_recruited_ctl"]),
        "peak_il2_tumour_pM": float(np.nanmax(o["il2_tumour_mean"])) if "il2_tumour_mean" in o else math.nan,
        "wall_s": time.perf_counter() - t0,
    }


def run_cases(cases: Iterable[Case], workers: int) -> list[dict]:
    """Every case in ``workers`` processes (spawned, one Numba thread each), results in input order."""
    cases = list(cases)
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    if workers <= 1:
        return [_one(c) for c in cases]
    import multiprocessing as mp

    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
        return list(ex.map(_one, cases))


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and its 95% t interval (nan half-width for one value)."""
    x = np.asarray(values, dtype=float)
    m = float(x.mean())
    if x.size < 2 or float(x.std(ddof=1)) == 0.0:
        return m, m, m
    lo, hi = stats.t.interval(0.95, x.size - 1, loc=m, scale=stats.sem(x))
    return m, float(lo), float(hi)


def load_line() -> str:
    a, b, c = os.getloadavg()
    return f"load average {a:.2f}, {b:.2f}, {c:.2f}"
