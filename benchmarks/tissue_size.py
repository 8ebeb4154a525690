"""The tissue-size check: the same lesion, untreated and under high-dose IL-2, on lattices of 150^2, 200^2 and 300^2
sites (3, 4 and 6 mm across), several seeds each, 28 days. The outcome of a lesion must not depend on how much empty
tissue is simulated around it.

    python benchmarks/tissue_size.py [--seeds 11 12 13 14] [--days 28] [--workers 2] [--quick]

Prints, per arm and size, the seed-mean relative tumour AUC and peak CTL count with 95% t intervals, and each
size's deviation from the 200^2 value. Targets (issue 12): AUC within 15% and peak CTL within 25% across the sizes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._runs import Case, load_line, mean_ci, run_cases  # noqa: E402

SIZES = (150, 200, 300)
ARMS = ("untreated", "high_dose_il2")
AUC_TARGET, CTL_TARGET = 0.15, 0.25


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13, 14])
    ap.add_argument("--days", type=float, default=28.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="2 seeds, 7 days (a smoke run, not the check)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra key=value for every run")
    a = ap.parse_args(argv)
    seeds, days = (a.seeds[:2], 7.0) if a.quick else (a.seeds, a.days)
    cases = [
        Case(f"{arm}@{n}", arm, (f"lattice.nx={n}", f"lattice.ny={n}", *a.sets), seed, days)
        for arm in ARMS
        for n in SIZES
        for seed in seeds
    ]
    start = load_line()
    t0 = time.perf_counter()
    rows = run_cases(cases, a.workers)
    wall = time.perf_counter() - t0
    print(
        f"tissue-size check: {len(cases)} runs, seeds {seeds}, {days:g} days, {a.workers} workers, "
        f"{wall / 60:.1f} min; {start} at start, {load_line()} at end"
    )
    if a.sets:
        print(f"extra overrides: {' '.join(a.sets)}")
    ok = True
    for arm in ARMS:
        print(f"\n{arm}")
        print(
            f"{'lattice':>9} {'mm':>4} {'relative AUC (95% CI)':>28} {'dev':>7} {'peak CTL (95% CI)':>24} {'dev':>7} "
            f"{'recruited CTL':>14} {'best responses':>20}"
        )
        by = {n: [r for r in rows if r["label"] == f"{arm}@{n}"] for n in SIZES}
        ref_auc = mean_ci([r["auc_relative"] for r in by[200]])[0]
        ref_ctl = mean_ci([r["peak_ctl"] for r in by[200]])[0]
        for n in SIZES:
            rs = by[n]
            auc = mean_ci([r["auc_relative"] for r in rs])
            ctl = mean_ci([r["peak_ctl"] for r in rs])
            rec = mean_ci([r["recruited_ctl"] for r in rs])[0]
            d_auc = auc[0] / ref_auc - 1 if ref_auc else float("nan")
            d_ctl = ctl[0] / ref_ctl - 1 if ref_ctl else float("nan")
            ok &= abs(d_auc) <= AUC_TARGET and abs(d_ctl) <= CTL_TARGET
            resp = ",".join(r["best_response"] for r in rs)
            print(
                f"{n:>5}^2 {n * 0.02:4.0f} {auc[0]:8.3f} [{auc[1]:7.3f}, {auc[2]:7.3f}] {d_auc:+7.1%} "
                f"{ctl[0]:7.1f} [{ctl[1]:6.1f}, {ctl[2]:6.1f}] {d_ctl:+7.1%} {rec:14.1f} {resp:>20}"
            )
    verdict = "met" if ok else "NOT met"
    print(f"\ntargets (AUC within {AUC_TARGET:.0%}, peak CTL within {CTL_TARGET:.0%} of the 200^2 value): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
