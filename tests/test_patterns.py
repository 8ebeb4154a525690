"""Clinical patterns, first pass (docs/model.md, brief s1): the default virtual patient on a 150 x 150 lattice
(outcomes do not depend on the box: docs/validation.md, tissue-size check), several seeds, four weeks, the runs
spread over two worker processes. Slow (about 20 CPU-minutes): run with ``pytest -m slow tests/test_patterns.py -s``
to see the table of outcomes.

Patterns checked:

* untreated: the tumour grows (final burden above the initial one) for every seed;
* high-dose i.v. IL-2: a partial response or better at some time (best_response CR or PR) for every seed, while
  toxicity holds some doses (doses_held > 0);
* IL-2 + IFN-alpha (Atzpodien, s.c.) does at least as well as either drug alone: its seed-mean relative tumour AUC
  (tumour cell-days over initial cells x days) is at most ``COMBO_MARGIN`` above each comparator's seed-mean.
  Comparators: the shipped monotherapies (low-dose s.c. IL-2, IFN-alpha) and the combination's own components
  (the Atzpodien schedule with the other drug's doses scaled to zero).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SEEDS = (1, 2, 3)
DAYS = 28.0
LATTICE = ["lattice.nx=150", "lattice.ny=150"]
COMBO_MARGIN = 0.05
"""Allowed excess of the combination's mean relative AUC over a comparator's, as a fraction (5 %): seed noise."""

ARMS = {
    "untreated": ("untreated", []),
    "high_dose_il2": ("high_dose_il2", []),
    "low_dose_sc_il2": ("low_dose_sc_il2", []),
    "ifna": ("ifna", []),
    "il2_ifna": ("il2_ifna", []),
    "il2_ifna:il2_only": ("il2_ifna", ["regimen.dose_scale.ifna=0"]),
    "il2_ifna:ifna_only": ("il2_ifna", ["regimen.dose_scale.il2=0"]),
}
KEYS = (
    "tumour_cells_initial",
    "tumour_cells_final",
    "tumour_cells_min",
    "tumour_auc_relative",
    "max_shrinkage",
    "time_to_eradication_day",
    "best_response",
    "doses_given",
    "doses_held",
    "toxicity_max",
)


def _one(job: tuple[str, list[str], int]) -> dict:
    import abm

    name, sets, seed = job
    s = abm.run(name, days=DAYS, seed=seed, sets=LATTICE + sets).summary
    return {k: s[k] for k in KEYS}


@pytest.fixture(scope="module")
def outcomes() -> dict[tuple[str, int], dict]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    keys = [(arm, seed) for arm in ARMS for seed in SEEDS]
    jobs = [(ARMS[arm][0], ARMS[arm][1], seed) for arm, seed in keys]
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # two single-threaded workers fill two cores; inherited
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as ex:
        out = dict(zip(keys, ex.map(_one, jobs), strict=True))
    print(f"\nclinical patterns: default patient, 150x150, {DAYS:g} days")
    print(f"{'arm':20s} seed " + " ".join(f"{k[:12]:>12s}" for k in KEYS))
    for (arm, seed), s in out.items():
        cells = " ".join(f"{v:12.3f}" if isinstance(v, float) else f"{v!s:>12s}" for v in s.values())
        print(f"{arm:20s} {seed:4d} {cells}")
    return out


def mean_of(outcomes, arm: str, key: str) -> float:
    return float(np.mean([outcomes[arm, s][key] for s in SEEDS]))


def test_untreated_tumour_grows(outcomes):
    for seed in SEEDS:
        s = outcomes["untreated", seed]
        assert s["tumour_cells_final"] > s["tumour_cells_initial"], f"seed {seed}: {s}"


def test_high_dose_il2_partial_response_with_held_doses(outcomes):
    for seed in SEEDS:
        s = outcomes["high_dose_il2", seed]
        assert s["best_response"] in ("CR", "PR"), f"seed {seed}: best response {s['best_response']}: {s}"
        assert s["doses_held"] > 0, f"seed {seed}: no dose held for toxicity: {s}"


# Against the shipped low-dose s.c. IL-2 regimen (a different, earlier-starting IL-2 schedule: daily from day 1
# against the Atzpodien IL-2 from day 3) the combination did worse while IFN-alpha had no measurable effect
# (relative AUC 0.232 against 0.190, 150^2, 28 days, seeds 1-3). With the IFN-alpha mechanisms of docs/model.md 7.11
# this comparison passes (it was a strict xfail and XPASSed: 150^2, 28 d, seeds 1-3, 18.7 min at load 4-7), so it is
# asserted with the like-for-like ones.
@pytest.mark.parametrize(
    "alone",
    ["low_dose_sc_il2", "ifna", "il2_ifna:il2_only", "il2_ifna:ifna_only"],
)
def test_il2_ifna_at_least_as_good_as_either_alone(outcomes, alone):
    combo = mean_of(outcomes, "il2_ifna", "tumour_auc_relative")
    mono = mean_of(outcomes, alone, "tumour_auc_relative")
    assert combo <= mono * (1.0 + COMBO_MARGIN), f"il2_ifna mean relative AUC {combo:.3f} vs {alone} {mono:.3f}"
    combo_final = mean_of(outcomes, "il2_ifna", "tumour_cells_final")
    mono_final = mean_of(outcomes, alone, "tumour_cells_final")
    assert combo_final <= mono_final * (1.0 + COMBO_MARGIN), (
        f"il2_ifna mean final tumour cells {combo_final:.0f} vs {alone} {mono_final:.0f}"
    )
