"""Benchmark the field solver: voxel-species updates per second against this machine's memory bandwidth.

Run ``python benchmarks/fields.py [--json PATH] [--quick]``. Prints, for 2D 1000x1000 and 3D 75^3 and 150^3 grids
with 3 species (D = 6000, 3600, 18000 um^2/min, h = 20 um, dt = 10 min, realistic decay/uptake/sources and 2% vessel
sites), the throughput on 1 and 2 threads, the memory-copy bandwidth measured in the same run, and the fraction of
the bandwidth bound achieved.

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


def make_case(shape: tuple[int, int, int], seed: int = 0):
    ns = len(D_UM2_PER_MIN)
    solver = FieldSolver(shape, 20.0, 10.0, D_UM2_PER_MIN, DECAY_PER_MIN)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--quick", action="store_true", help="short timings (for smoke tests)")
    opts = parser.parse_args(argv)
    min_time = 0.2 if opts.quick else 1.5
    threads = [t for t in (1, 2) if t <= numba.config.NUMBA_NUM_THREADS]
    cases = [("2D 1000x1000", (1000, 1000, 1)), ("3D 75^3", (75, 75, 75)), ("3D 150^3", (150, 150, 150))]
    ns = len(D_UM2_PER_MIN)
    rows = []
    print(f"field solver benchmark: {ns} species, h = 20 um, dt = 10 min, D = {D_UM2_PER_MIN} um^2/min")
    print(
        f"numba {numba.__version__}, {platform.processor() or platform.machine()}, threads available "
        f"{numba.config.NUMBA_NUM_THREADS}"
    )
    header = (
        f"{'grid':<14}{'thr':>4}{'ms/step':>10}{'updates/s':>12}{'per thread':>12}{'xBioFVM/thr':>12}"
        f"{'B/update':>10}{'copy GB/s':>11}{'bound upd/s':>13}{'of bound':>10}"
    )
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
    if opts.json is not None:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(
            json.dumps({"n_species": ns, "biofvm_per_thread": BIOFVM_PER_THREAD, "rows": rows}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
