"""Conjugate-gradient iterations of the coupled IL-2 solve per agent step against ``time.field_rtol``, on a real
run (high-dose IL-2 by default): the counts are deterministic; the wall times are indicative only (one run each).

    python benchmarks/rtol_iterations.py [--scenario high_dose_il2] [--size 150] [--days 4] [--seed 11]
        [--rtol 1e-6 1e-5 1e-4 1e-3]

The iteration count sets most of a step's cost (docs/solver.md, "Performance"); a looser rtol changes every
trajectory, so a new default needs benchmarks/convergence.py re-run at it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import abm  # noqa: E402
from abm.scenario import Scenario  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="high_dose_il2")
    ap.add_argument("--size", type=int, default=150)
    ap.add_argument("--days", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--rtol", type=float, nargs="+", default=[1e-6, 1e-5, 1e-4, 1e-3])
    a = ap.parse_args(argv)
    print(
        f"{a.scenario}, {a.size}^2, {a.days:g} days, seed {a.seed}; load average "
        + " ".join(f"{v:.2f}" for v in os.getloadavg())
    )
    print("| time.field_rtol | CG iterations per step, mean (max) | wall time (s) |")
    print("| --- | --- | --- |")
    for rtol in a.rtol:
        sets = [f"lattice.nx={a.size}", f"lattice.ny={a.size}", f"time.field_rtol={rtol}"]
        m = abm.Model(Scenario.load(a.scenario, sets=sets), seed=a.seed)
        its = []
        t0 = time.perf_counter()
        for _ in range(m.steps_for_days(a.days)):
            m.advance(1)
            its.append(int(m.solver.last_iterations.sum()))
        its = np.array(its)
        print(f"| {rtol:g} | {its.mean():.2f} ({its.max()}) | {time.perf_counter() - t0:.1f} |", flush=True)
    print("load average at end " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
