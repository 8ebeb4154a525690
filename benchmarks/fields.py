"""Benchmark the field solver: the split step against memory bandwidth, and the coupled step beside it.

Run ``python benchmarks/fields.py [--json PATH] [--quick] [--only split,coupled,model]``. Prints three tables:

1. ``split``: for 2D 1000x1000 and 3D 75^3 and 150^3 grids with 3 species (D = 6000, 3600, 18000 um^2/min,
   h = 20 um, dt = 10 min, realistic decay/uptake/sources and 2% vessel sites), the throughput of the split step on
   1 and 2 threads, the memory-copy bandwidth measured in the same run, and the fraction of the bandwidth bound.
2. ``coupled``: the same grids, ms per step with every species split (old) and with IL-2 coupled (new,
   ``coupled=[True, False, False]``), the ratio and the conjugate-gradient iterations per step.
3. ``model``: whole ``abm.Model`` steps at 2D 200x200 and 3D 75^3 with immune cells and plasma IL-2 of 300 pM (so
   there is uptake and secretion), old solver vs the coupled one (same constructor arguments plus ``coupled``),
   fields alone and the whole step, timed in alternating blocks on the same evolving model, with the load average.

Bytes per voxel-species update (the scheme's minimal traffic, each array read or written once per sweep):

- reaction + x sweep (fused): read c (8), uptake (4), source (4), write c (8), plus the uint8 vessel mask shared by
  all species (1/n_species); the x line stays in L1 between the forward and backward Thomas passes;
- y sweep: read c (8) + write c (8) (a block of columns stays in L2 between its forward and backward pass);
- z sweep (3D only): read c (8) + write c (8).

Memory-copy bandwidth counts read + write bytes (2 x array size per copy) of ``np.copyto(dst, src)`` on one thread
and of a Numba ``prange`` copy on several, best of 7, on an array of the same byte size as the concentrations.
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
    from abm.field_solver import FieldSolver
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from abm.field_solver import FieldSolver

D_UM2_PER_MIN = (6000.0, 3600.0, 18000.0)  # IL-2 100, IFN-alpha 60, drug 300 um^2/s
DECAY_PER_MIN = (0.00168, 0.00385, 0.0058)  # half-lives ~7 h, 3 h, 2 h
BIOFVM_PER_THREAD = 3.2e7  # voxel-species updates / s / thread on 75^3 (reference figure from the brief)


def bytes_per_update(ndim: int, n_species: int) -> float:
    x_sweep = 8 + 4 + 4 + 8 + 1.0 / n_species
    return x_sweep + 16.0 + (16.0 if ndim == 3 else 0.0)


def copy_bandwidth(nbytes: int, repeats: int = 7) -> float:
    """Best-of-``repeats`` bytes moved per second (read + write) by np.copyto of an array of ``nbytes``."""
    src = np.random.default_rng(0).random(nbytes // 8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * src.nbytes / best


@numba.njit(parallel=True)
def _parallel_copy(dst, src):
    n = src.shape[0]
    nt = numba.get_num_threads()
    chunk = (n + nt - 1) // nt
    for t in numba.prange(nt):
        lo = t * chunk
        hi = min(n, lo + chunk)
        for i in range(lo, hi):
            dst[i] = src[i]


def parallel_copy_bandwidth(nbytes: int, threads: int, repeats: int = 7) -> float:
    """As :func:`copy_bandwidth`, but copying with ``threads`` Numba threads (for the multi-thread bound)."""
    numba.set_num_threads(threads)
    src = np.random.default_rng(0).random(nbytes // 8)
    dst = np.empty_like(src)
    _parallel_copy(dst, src)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        _parallel_copy(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * src.nbytes / best


def make_case(shape: tuple[int, int, int], seed: int = 0, coupled: bool | list[bool] = False, rtol: float = 1e-8):
    ns = len(D_UM2_PER_MIN)
    solver = FieldSolver(shape, 20.0, 10.0, D_UM2_PER_MIN, DECAY_PER_MIN, coupled=coupled, rtol=rtol)
    n = solver.n_sites
    rng = np.random.default_rng(seed)
    conc = rng.random((ns, n)) * 10.0
    occupied = rng.random(n) < 0.5
    uptake = np.zeros((ns, n), dtype=np.float32)
    uptake[0, occupied] = 1.2  # IL-2 receptor uptake, 1/min per occupied site
    uptake[1, occupied] = 0.01
    uptake[2, occupied] = 0.05
    source = np.zeros((ns, n), dtype=np.float32)
    source[0, rng.random(n) < 0.02] = 5.0
    vessels = np.flatnonzero(rng.random(n) < 0.02).astype(np.int64)
    perm = np.array([0.1, 0.1, 0.5])
    plasma = np.array([40.0, 9.0, 100.0])
    return solver, (conc, uptake, source, vessels, perm, plasma)


def time_steps(solver: FieldSolver, args, min_time: float = 1.0, repeats: int = 3) -> float:
    """Best seconds per step over ``repeats`` runs of enough steps to take ``min_time``."""
    conc0 = args[0].copy()
    solver.step(*args)  # warm-up (compiles on first use)
    t0 = time.perf_counter()
    solver.step(*args)
    per = time.perf_counter() - t0
    nsteps = max(3, int(min_time / max(per, 1e-6)))
    best = np.inf
    for _ in range(repeats):
        args[0][...] = conc0
        t0 = time.perf_counter()
        for _ in range(nsteps):
            solver.step(*args)
        best = min(best, (time.perf_counter() - t0) / nsteps)
    return best


def load() -> str:
    a, b, c = os.getloadavg()
    return f"load {a:.2f} {b:.2f} {c:.2f}"


def split_table(cases, threads, min_time: float) -> list[dict]:
    ns = len(D_UM2_PER_MIN)
    rows = []
    header = (
        f"{'grid':<14}{'thr':>4}{'ms/step':>10}{'updates/s':>12}{'per thread':>12}{'xBioFVM/thr':>12}"
        f"{'B/update':>10}{'copy GB/s':>11}{'bound upd/s':>13}{'of bound':>10}"
    )
    print(f"\n1. split step (every species), {load()}")
    print(header)
    print("-" * len(header))
    for name, shape in cases:
        solver, args = make_case(shape)
        nupd = solver.n_sites * ns
        bpu = bytes_per_update(solver.ndim, ns)
        bw1 = copy_bandwidth(args[0].nbytes)
        for nt in threads:
            bw = bw1 if nt == 1 else max(bw1, parallel_copy_bandwidth(args[0].nbytes, nt))
            numba.set_num_threads(nt)
            sec = time_steps(solver, args, min_time=min_time)
            ups = nupd / sec
            bound = bw / bpu
            row = {
                "grid": name,
                "shape_xyz": list(shape),
                "threads": nt,
                "seconds_per_step": sec,
                "updates_per_s": ups,
                "updates_per_s_per_thread": ups / nt,
                "ratio_to_biofvm_per_thread": ups / nt / BIOFVM_PER_THREAD,
                "bytes_per_update": bpu,
                "copy_bandwidth_bytes_per_s": bw,
                "bandwidth_bound_updates_per_s": bound,
                "fraction_of_bound": ups / bound,
                "load": os.getloadavg(),
            }
            rows.append(row)
            print(
                f"{name:<14}{nt:>4}{sec * 1e3:>10.2f}{ups:>12.3e}{ups / nt:>12.3e}{ups / nt / BIOFVM_PER_THREAD:>12.2f}"
                f"{bpu:>10.2f}{bw / 1e9:>11.2f}{bound:>13.3e}{ups / bound:>10.1%}"
            )
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    print(
        "B/update: bytes moved per voxel-species update (x sweep with fused reaction 24 + 1/n_species, y sweep 16, "
        "z sweep 16); copy GB/s counts read + write: np.copyto on 1 thread, a Numba prange copy on 2 (best of that and "
        "np.copyto); bound = copy bandwidth / B/update on the same thread count."
    )
    return rows


def _time_coupled(solver: FieldSolver, args, nsteps: int, repeats: int = 3) -> tuple[float, float]:
    """Best seconds per step over ``repeats`` runs of ``nsteps`` steps from the same start, and the mean CG
    iterations of species 0 per step (the fields evolve over the run, each step warm-starts from the last)."""
    conc0 = args[0].copy()
    solver.step(*args)  # compile
    best, its = np.inf, 0
    for _ in range(repeats):
        args[0][...] = conc0
        its = 0
        t0 = time.perf_counter()
        for _ in range(nsteps):
            solver.step(*args)
            its += int(solver.last_iterations[0])
        best = min(best, (time.perf_counter() - t0) / nsteps)
    args[0][...] = conc0
    return best, its / nsteps


def coupled_table(cases, threads, nsteps: int) -> list[dict]:
    """Fields alone on the synthetic cases: split (old) vs IL-2 coupled (new), same inputs, ms per step."""
    rows = []
    header = f"{'grid':<14}{'thr':>4}{'rtol':>8}{'old ms':>10}{'new ms':>10}{'new/old':>9}{'CG its':>8}  load"
    print(f"\n2. fields alone: split (old) vs IL-2 coupled (new), 3 species, {nsteps} steps from the same start")
    print(header)
    print("-" * len(header))
    for name, shape in cases:
        for nt in threads:
            numba.set_num_threads(nt)
            old, args = make_case(shape)
            t_old, _ = _time_coupled(old, args, nsteps)
            for rtol in (1e-6, 1e-4):
                new, args = make_case(shape, coupled=[True, False, False], rtol=rtol)
                t_new, its = _time_coupled(new, args, nsteps)
                rows.append(
                    {
                        "grid": name,
                        "threads": nt,
                        "rtol": rtol,
                        "old_seconds_per_step": t_old,
                        "new_seconds_per_step": t_new,
                        "ratio": t_new / t_old,
                        "cg_iterations_per_step": its,
                        "load": os.getloadavg(),
                    }
                )
                print(
                    f"{name:<14}{nt:>4}{rtol:>8.0e}{t_old * 1e3:>10.2f}{t_new * 1e3:>10.2f}{t_new / t_old:>9.2f}"
                    f"{its:>8.1f}  {load()}"
                )
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return rows


MODEL_CASES = [
    ("2D 200x200", ["lattice.nx=200", "lattice.ny=200", "init.ctl_cells=400", "init.nk_cells=400"]),
    (
        "3D 75^3",
        [
            "lattice.nx=75",
            "lattice.ny=75",
            "lattice.nz=75",
            "init.tumour_radius_um=300",
            "init.ctl_cells=2000",
            "init.nk_cells=2000",
        ],
    ),
]
PLASMA_PM = {"il2": 300.0, "ifna": 20.0}  # held in plasma (others 0): IL-2 uptake and secretion are active


def _hold_plasma(model) -> None:
    for k, name in enumerate(model.species):
        model.plasma[k] = PLASMA_PM.get(name, 0.0)


def _model_steps(model, solver, nsteps: int, il2: int) -> tuple[float, int]:
    """Seconds per whole model step with ``solver`` and the CG iterations of IL-2 per step."""
    model.solver = solver
    its = 0
    t0 = time.perf_counter()
    for _ in range(nsteps):
        _hold_plasma(model)
        model.step()
        its += int(solver.last_iterations[il2])
    return (time.perf_counter() - t0) / nsteps, its // nsteps


def _fields_alone(model, solver, nsteps: int) -> float:
    """Seconds per solver step on the model's current fields, uptake and sources (the fields are restored)."""
    s = model.state
    saved = s.conc.copy()
    t0 = time.perf_counter()
    for _ in range(nsteps):
        solver.step(s.conc, s.uptake, s.source, s.vessels, model._permeability, model.plasma)
    sec = (time.perf_counter() - t0) / nsteps
    s.conc[...] = saved
    return sec


def model_table(threads, quick: bool) -> list[dict]:
    """Whole model steps, old (split) vs new (IL-2 coupled), in alternating blocks on one evolving model."""
    import abm

    rows = []
    warm, block, repeats = (5, 3, 2) if quick else (20, 10, 3)
    header = (
        f"{'grid':<12}{'thr':>4}{'rtol':>8}{'fields old':>11}{'fields new':>11}{'step old':>10}{'step new':>10}"
        f"{'step new/old':>13}{'CG its':>8}  load"
    )
    print(
        "\n3. whole model step (ms), every species split (old) vs the model's schemes (new); best block of",
        block,
        "steps",
    )
    print(header)
    print("-" * len(header))
    for name, sets in MODEL_CASES:
        for nt in threads:
            numba.set_num_threads(nt)
            model = abm.Model(sets=sets, seed=1)
            il2 = model.species.index("il2")
            default = model.solver
            flags = list(default.coupled)  # the model's schemes (IL-2 and the chemokine coupled by default)

            def solver(coupled, rtol=1e-8, d=default):
                return FieldSolver(
                    d.shape_xyz,
                    d.spacing_um,
                    d.dt_min,
                    d.diffusion_um2_per_min,
                    d.decay_per_min,
                    periodic=d.periodic,
                    substeps=d.substeps,
                    coupled=coupled,
                    rtol=rtol,
                )

            old = solver(False)  # every species split: the step before the coupled scheme
            news = {rtol: solver(flags, rtol) for rtol in (1e-6, 1e-4)}
            _model_steps(model, old, warm, il2)  # immune cells spread, IL-2 enters from the vessels
            for new in news.values():
                _model_steps(model, new, 2, il2)  # compile and settle the coupled fields
            best: dict = {}
            for _ in range(repeats):
                for key, solver in [("old", old)] + list(news.items()):
                    f = _fields_alone(model, solver, block)
                    w, its = _model_steps(model, solver, block, il2)
                    b = best.setdefault(key, [np.inf, np.inf, 0])
                    b[0], b[1], b[2] = min(b[0], f), min(b[1], w), max(b[2], its)
            for rtol in news:
                fo, wo, _ = best["old"]
                fn, wn, its = best[rtol]
                rows.append(
                    {
                        "grid": name,
                        "threads": nt,
                        "rtol": rtol,
                        "fields_old_ms": fo * 1e3,
                        "fields_new_ms": fn * 1e3,
                        "step_old_ms": wo * 1e3,
                        "step_new_ms": wn * 1e3,
                        "step_ratio": wn / wo,
                        "cg_iterations": its,
                        "load": os.getloadavg(),
                    }
                )
                print(
                    f"{name:<12}{nt:>4}{rtol:>8.0e}{fo * 1e3:>11.2f}{fn * 1e3:>11.2f}{wo * 1e3:>10.2f}{wn * 1e3:>10.2f}"
                    f"{wn / wo:>13.2f}{its:>8}  {load()}"
                )
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    print("fields = FieldSolver.step alone on the model's state; step = Model.step (therapy, fields, cells,")
    print("recruitment, observation); CG its = IL-2 conjugate-gradient iterations per step (largest block mean).")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--quick", action="store_true", help="short timings (for smoke tests)")
    parser.add_argument("--only", default="split,coupled,model", help="comma-separated tables: split,coupled,model")
    parser.add_argument("--threads", default=None, help="comma-separated thread counts (default: 1 and 2)")
    opts = parser.parse_args(argv)
    only = set(opts.only.split(","))
    min_time = 0.2 if opts.quick else 1.5
    wanted = [int(t) for t in opts.threads.split(",")] if opts.threads else [1, 2]
    threads = [t for t in wanted if t <= numba.config.NUMBA_NUM_THREADS]
    cases = [("2D 1000x1000", (1000, 1000, 1)), ("3D 75^3", (75, 75, 75))]
    if not opts.quick:
        cases.append(("3D 150^3", (150, 150, 150)))
    ns = len(D_UM2_PER_MIN)
    print(f"field solver benchmark: {ns} species, h = 20 um, dt = 10 min, D = {D_UM2_PER_MIN} um^2/min")
    print(
        f"numba {numba.__version__}, {platform.processor() or platform.machine()}, threads available "
        f"{numba.config.NUMBA_NUM_THREADS}, {load()}"
    )
    out: dict = {"n_species": ns, "biofvm_per_thread": BIOFVM_PER_THREAD}
    if "split" in only:
        out["rows"] = split_table(cases, threads, min_time)
    if "coupled" in only:
        out["coupled"] = coupled_table(cases, threads, 3 if opts.quick else 10)
    if "model" in only:
        out["model"] = model_table(threads, opts.quick)
    if opts.json is not None:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
