"""Benchmark the cell rules: agent updates per second, without and with the field solver, on 1 and 2 threads.

Run ``python benchmarks/cells.py [--json PATH] [--quick]``.

An *agent update* is one cell advanced by one step; throughput = (sum over timed steps of the live cells at the
start of the step) / wall seconds. Two measures per case:

- ``cells only``: the kernels of step 3-4 of a model step (docs/model.md, section 3) called directly in a loop -
  :func:`abm.kernels.cells.step_cells`, :func:`recruit`, :func:`compact` - with the fields frozen at their state
  after warm-up (no IL-2 exchange fill, no solver, no observation);
- ``full step``: ``model.step()`` (therapy, uptake/secretion, field solver for all 3 species, cells, recruitment,
  then Mesa's data collection, which observes).

Cases: the default 2D 200x200 lattice with a large tumour (radius 1,480 um, ~17,000 cells) plus 1,000 CTL and
500 NK; a 3D 75^3 lattice with 24,000 tumour cells, 1,500 CTL and 500 NK (~26,000 cells). The cell loop is serial by
design (see abm.kernels.cells), so threads only help the field solver; both counts are measured anyway.

Then the 3D case under the IL-2 + IFN-alpha scenario (``il2_ifna``: IL-2 and IFN-alpha doses; the model always
carries 3 species, the drug field stays zero but is solved) is timed for N days of full steps and the 21-day wall
time is extrapolated linearly from the measured per-step time (clearly marked "extrapolated" in the output).

Every figure printed is measured in this run; nothing is typed in. Targets for context (from the project brief):
>= 1e7 agent updates/s per core for cell rules; a 21-day 3D run under 5 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numba
import numpy as np

try:
    import abm
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import abm
from abm.kernels import cells as K
from abm.kernels.records import StepKey

TARGET_UPDATES_PER_CORE = 1e7
TARGET_21D_S = 300.0

CASES = {
    "2D 200x200": [
        "lattice.nx=200",
        "lattice.ny=200",
        "init.tumour_radius_um=1480",
        "init.ctl_cells=1000",
        "init.nk_cells=500",
        "init.immune_within_um=200",
    ],
    "3D 75^3": [
        "lattice.nx=75",
        "lattice.ny=75",
        "lattice.nz=75",
        "init.tumour_cells=24000",
        "init.ctl_cells=1500",
        "init.nk_cells=500",
        "init.immune_within_um=100",
    ],
}


def _cells_only(m: abm.Model, steps: int) -> tuple[float, int]:
    """Time ``steps`` calls of step_cells + recruit + compact on the model's state; (seconds, agent updates)."""
    s = m.state
    counters = K.empty_counters()
    tr = m.trafficking()
    updates = 0
    k0 = m.step_index
    t0 = time.perf_counter()
    for k in range(k0, k0 + steps):
        updates += int(s.cells.n[0])
        counters[:] = 0
        key = StepKey(np.uint64(m.seed), np.int64(k))
        K.step_cells(s.tissue, m.geometry, m.rules, key, counters, m.scratch)
        K.recruit(s.tissue, m.geometry, tr, key, counters, m.scratch)
        K.compact(s.cells, s.occupancy)
    return time.perf_counter() - t0, updates


def _full(m: abm.Model, steps: int) -> tuple[float, int]:
    updates = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        updates += int(m.state.cells.n[0])
        m.step()
    return time.perf_counter() - t0, updates


def bench_case(name: str, sets: list[str], threads: int, steps: int, warmup: int) -> dict:
    numba.set_num_threads(threads)
    m = abm.Model(sets=sets, seed=1)
    m.plasma[:3] = [200.0, 10.0, 0.0]  # some IL-2 and IFN-alpha so every rule branch runs
    for _ in range(warmup):
        m.step()
    n_cells = m.state.n_cells
    t_c, u_c = _cells_only(m, steps)
    t_f, u_f = _full(m, steps)
    return {
        "case": name,
        "threads": threads,
        "cells": n_cells,
        "steps": steps,
        "cells_only_updates_per_s": u_c / t_c,
        "cells_only_s_per_step": t_c / steps,
        "full_updates_per_s": u_f / t_f,
        "full_s_per_step": t_f / steps,
    }


def bench_21_days(threads: int, days: float) -> dict:
    numba.set_num_threads(threads)
    m = abm.Model("il2_ifna", sets=CASES["3D 75^3"], seed=1)
    m.step()  # compile / cache load outside the timing
    steps = m.steps_for_days(days)
    n0 = m.state.n_cells
    t0 = time.perf_counter()
    for _ in range(steps):
        m.step()
    t = time.perf_counter() - t0
    total_steps = m.steps_for_days(21.0)
    return {
        "scenario": "il2_ifna",
        "lattice": "75^3",
        "threads": threads,
        "cells_start": n0,
        "cells_end": m.state.n_cells,
        "species_solved": list(m.species),
        "measured_days": days,
        "measured_steps": steps,
        "measured_s": t,
        "s_per_step": t / steps,
        "extrapolated_21_day_s": t / steps * total_steps if steps < total_steps else None,
        "measured_21_day_s": t if steps >= total_steps else None,
        "plasma_il2_max_seen": float(m.plasma[0]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--quick", action="store_true", help="fewer steps (a smoke run; noisier figures)")
    ap.add_argument(
        "--days",
        type=float,
        default=None,
        help="days of the 3D il2_ifna run to time (default 1, quick 0.25); 21 times it in full",
    )
    args = ap.parse_args(argv)
    steps, warmup = (10, 3) if args.quick else (40, 10)
    days = args.days if args.days is not None else (0.25 if args.quick else 1.0)
    max_threads = numba.config.NUMBA_NUM_THREADS
    threads = [t for t in (1, 2) if t <= max_threads]

    rows = []
    for name, sets in CASES.items():
        for t in threads:
            rows.append(bench_case(name, sets, t, steps, warmup))
            r = rows[-1]
            print(f"  measured {name} threads={t}: {r['cells']} cells", file=sys.stderr, flush=True)
    long_runs = [bench_21_days(t, days) for t in threads]

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(
        f"abm cell benchmark  (host {platform.node()}, {os.cpu_count()} CPUs, numba {numba.__version__}, "
        f"{steps} timed steps after {warmup} warm-up; load average at end {load[0]:.1f}, {load[1]:.1f}, "
        f"{load[2]:.1f} - other work on the machine slows every figure, most of all the 2-thread ones)"
    )
    print(
        f"{'case':<12} {'thr':>3} {'cells':>7} {'cells-only upd/s':>17} {'ms/step':>8} {'full-step upd/s':>16} "
        f"{'ms/step':>8}"
    )
    for r in rows:
        print(
            f"{r['case']:<12} {r['threads']:>3} {r['cells']:>7} {r['cells_only_updates_per_s']:>17.3e} "
            f"{1e3 * r['cells_only_s_per_step']:>8.2f} {r['full_updates_per_s']:>16.3e} "
            f"{1e3 * r['full_s_per_step']:>8.2f}"
        )
    print(f"target: >= {TARGET_UPDATES_PER_CORE:.0e} agent updates/s per core (cell rules; the cell loop is serial)")
    for lr in long_runs:
        if lr["measured_21_day_s"] is not None:
            what = f"21-day run measured: {lr['measured_21_day_s']:.1f} s"
        else:
            what = (
                f"21-day run EXTRAPOLATED from {lr['measured_days']:g} measured days ({lr['measured_steps']} "
                f"steps, {lr['measured_s']:.1f} s): {lr['extrapolated_21_day_s']:.1f} s"
            )
        print(
            f"3D 75^3 il2_ifna, threads={lr['threads']}, {lr['cells_start']}->{lr['cells_end']} cells, species "
            f"solved {lr['species_solved']}: {1e3 * lr['s_per_step']:.1f} ms/step; {what} "
            f"(target < {TARGET_21D_S:.0f} s)"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "host": platform.node(),
                    "cpus": os.cpu_count(),
                    "numba": numba.__version__,
                    "quick": args.quick,
                    "steps": steps,
                    "warmup": warmup,
                    "loadavg": list(load),
                    "cases": rows,
                    "long_runs": long_runs,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
