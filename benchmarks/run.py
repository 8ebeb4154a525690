"""The abm benchmark suite, one entry point: ``python -m benchmarks [--quick] [--json PATH] [--plot]``.

Sections (every figure is measured in this run; nothing is typed in):

1. ``abm_vs_reference``: abm.Model (arrays + Numba) against the plain-Mesa reference (abm.reference) on the same
   scenario, lattice, seed and number of steps: agent updates per second (cells alive at the start of each step,
   summed over steps, divided by wall time of the whole step loop) and the ratio.
2. ``fields``: the field solver against memory-copy bandwidth, through benchmarks/fields.py.
3. ``threads``: 1 -> 2 Numba threads for the field solver and for whole model steps (fields + cells), with a check
   that the results are bit-identical.
4. ``scaling``: time per step and peak memory (ru_maxrss of a fresh subprocess per case) of whole model steps for
   2D 100^2 .. 2000^2 and 3D 50^3 .. 200^3, the tumour a ball/disc of a fixed fraction of the lattice; the log-log
   slope of time per step against sites says whether growth is linear.
5. ``physicell``: the PhysiCell-sized case, 3D 75^3 with ~26,000 tumour cells, 21 simulated days on 2 threads: run
   in full (``--quick``: 20 steps and the extrapolation to 21 days, flagged as such).
6. ``threads`` (model rows) and ``busy``: whole model steps at 2D 400^2 and 3D 75^3 on 1 and 2 threads, a fresh
   process each, final states compared by sha256; then the same while another process keeps one core busy, with
   the default settings and with the OpenMP runtime's own (spinning) wait policy beside them.
7. ``big``: 3D 200^3 for 21 days on 2 threads (extrapolated from measured steps unless ``--big-full``), peak RSS.
8. ``trial``: patients per hour of the shipped high-dose IL-2 trial (default lesion) on 2 worker processes.

The load average is printed at the start and at the end: on a shared machine the figures move with it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import abm  # noqa: E402  (first: its thread defaults apply before Numba starts threads, abm/threads.py)

SPACING_UM = 20.0
TUMOUR_FRACTION = 0.25  # tumour radius as a fraction of the lattice side, for the scaling cases
PHYSICELL_CELLS = 26_000
PHYSICELL_DAYS = 21.0


# ------------------------------------------------------------------------------------------- helpers
def _sets_for(n: int, ndim: int, extra: list[str] | None = None) -> list[str]:
    sets = [
        f"lattice.nx={n}",
        f"lattice.ny={n}",
        f"lattice.nz={n if ndim == 3 else 1}",
        f"init.tumour_radius_um={TUMOUR_FRACTION * n * SPACING_UM}",
    ]
    return sets + list(extra or [])


def _time_model(model, n_steps: int) -> tuple[float, int]:
    """Seconds for ``n_steps`` steps and the agent updates done (cells alive at the start of each step)."""
    updates = 0
    t0 = time.perf_counter()
    for _ in range(n_steps):
        updates += _n_cells(model)
        model.step()
    return time.perf_counter() - t0, updates


def _n_cells(model) -> int:
    if hasattr(model, "state"):
        return int(model.state.cells.n[0])
    return model.n_agents()


# ------------------------------------------------------------------------------------------- 1. abm vs reference
def bench_vs_reference(quick: bool) -> dict:
    import numba

    from abm.reference import ReferenceModel

    n = 100 if quick else 200
    steps = 10 if quick else 30
    sets = [
        f"lattice.nx={n}",
        f"lattice.ny={n}",
        f"init.tumour_radius_um={0.3 * n * SPACING_UM:g}",
        "init.ctl_cells=200",
        "init.nk_cells=100",
        "init.immune_within_um=200",
    ]
    numba.set_num_threads(1)  # both single-threaded: the comparison is about the rules' implementation
    warm = abm.Model("untreated", seed=1, sets=sets)
    warm.step()
    m = abm.Model("untreated", seed=1, sets=sets)
    t_abm, u_abm = _time_model(m, steps)
    r = ReferenceModel("untreated", seed=1, sets=sets)
    t_ref, u_ref = _time_model(r, steps)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    row = {
        "lattice": f"2D {n}x{n}",
        "steps": steps,
        "cells_initial": _n_cells(abm.Model("untreated", seed=1, sets=sets)),
        "abm_s_per_step": t_abm / steps,
        "ref_s_per_step": t_ref / steps,
        "abm_updates_per_s": u_abm / t_abm,
        "ref_updates_per_s": u_ref / t_ref,
    }
    row["ratio"] = row["abm_updates_per_s"] / row["ref_updates_per_s"]
    return row


# ------------------------------------------------------------------------------------------- 2. fields
def bench_fields(quick: bool) -> list[dict]:
    import numba

    from benchmarks import fields as bf

    cases = [("2D 1000x1000", (1000, 1000, 1)), ("3D 75^3", (75, 75, 75))]
    if not quick:
        cases.append(("3D 150^3", (150, 150, 150)))
    rows = []
    ns = len(bf.D_UM2_PER_MIN)
    for name, shape in cases:
        solver, args = bf.make_case(shape)
        bw = bf.copy_bandwidth(args[0].nbytes)
        numba.set_num_threads(1)
        sec = bf.time_steps(solver, args, min_time=0.2 if quick else 1.0, repeats=2 if quick else 3)
        ups = solver.n_sites * ns / sec
        bound = bw / bf.bytes_per_update(solver.ndim, ns)
        rows.append(
            {
                "grid": name,
                "threads": 1,
                "seconds_per_step": sec,
                "updates_per_s": ups,
                "copy_bandwidth_bytes_per_s": bw,
                "bandwidth_bound_updates_per_s": bound,
                "fraction_of_bound": ups / bound,
            }
        )
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return rows


# ------------------------------------------------------------------------------------------- 3. threads
def bench_threads(quick: bool) -> list[dict]:
    import numba

    from benchmarks import fields as bf

    rows = []
    if numba.config.NUMBA_NUM_THREADS < 2:
        return rows
    # field solver alone
    shape = (500, 500, 1) if quick else (1000, 1000, 1)
    k = 5 if quick else 20
    out = {}
    for nt in (1, 2):
        numba.set_num_threads(nt)
        solver, args = bf.make_case(shape)
        solver.step(*args)  # warm-up
        solver, args = bf.make_case(shape)
        t0 = time.perf_counter()
        for _ in range(k):
            solver.step(*args)
        out[nt] = ((time.perf_counter() - t0) / k, args[0].copy())
    rows.append(
        {
            "what": f"fields 2D {shape[0]}^2",
            "s_1thr": out[1][0],
            "s_2thr": out[2][0],
            "speedup": out[1][0] / out[2][0],
            "identical": bool(np.array_equal(out[1][1], out[2][1])),
        }
    )
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return rows


# ------------------------------------------------------------------------------------------- 4./5. subprocess cases
def _worker(spec: dict) -> dict:
    """Run in a fresh process: build the model, warm up one step, time ``steps`` steps; report peak RSS."""
    import tracemalloc

    import numba

    if spec.get("threads"):
        from abm.threads import set_threads

        set_threads(int(spec["threads"]))  # a chosen count: not tuned (abm.threads.StepThreads)
    tiny = abm.Model(
        spec.get("scenario", "untreated"), seed=1, sets=_sets_for(20, 3 if "lattice.nz=1" not in spec["sets"] else 2)
    )
    tiny.step()  # loads the compiled kernels, so neither the timings nor the memory below include it
    del tiny
    rss_base = _vm_hwm_mb()
    tracemalloc.start()  # numpy reports its buffers to tracemalloc: the model's own peak, without the runtime
    t0 = time.perf_counter()
    m = abm.Model(spec.get("scenario", "untreated"), seed=spec.get("seed", 1), sets=spec["sets"])
    t_init = time.perf_counter() - t0
    m.step()  # warm-up step
    model_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    if spec.get("advance"):  # the engine alone (abm.Simulation between reports): no observation
        t0 = time.perf_counter()
        m.advance(spec["steps"])
        t, updates = time.perf_counter() - t0, 0
    else:
        t, updates = _time_model(m, spec["steps"])
    return {
        "threads": numba.get_num_threads(),
        "threading": threads_line(),
        "state_sha256": state_hash(m),
        "sites": m.state.lattice.n_sites,
        "cells": _n_cells(m),
        "init_s": t_init,
        "s_per_step": t / spec["steps"],
        "steps": spec["steps"],
        "updates": updates,
        "peak_rss_mb": _vm_hwm_mb(),
        "rss_after_import_mb": rss_base,
        "model_peak_mb": model_peak,
    }


def _vm_hwm_mb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it is not inherited across exec), MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return math.nan


def state_hash(m) -> str:
    """sha256 of everything a step changes: occupancy, fields and the live part of every per-cell array."""
    import hashlib

    h = hashlib.sha256()
    h.update(m.state.occupancy.tobytes())
    h.update(m.state.conc.tobytes())
    c = m.state.cells
    n = int(c.n[0])
    for name in c._fields:
        if name not in ("n", "next_id"):
            h.update(np.ascontiguousarray(getattr(c, name)[:n]).tobytes())
    return h.hexdigest()


def threads_line() -> str:
    from abm.threads import describe

    return describe()


def _in_subprocess(spec: dict, timeout: float, env: dict | None = None) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.run", "--worker", json.dumps(spec)]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for k, v in (env or {}).items():
        if v is None:
            full_env.pop(k, None)
        else:
            full_env[k] = v
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False, env=full_env)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_scaling(quick: bool, threads: int | None) -> list[dict]:
    sizes2 = (100, 200, 500) if quick else (100, 200, 500, 1000, 2000)
    sizes3 = (50, 75) if quick else (50, 75, 100, 150, 200)
    rows = []
    for ndim, sizes in ((2, sizes2), (3, sizes3)):
        for n in sizes:
            sites = n**ndim
            steps = max(3, min(50, int(2e6 / sites)))
            r = _in_subprocess({"sets": _sets_for(n, ndim), "steps": steps, "threads": threads}, timeout=1800)
            r.update({"case": f"{ndim}D {n}^{ndim}", "ndim": ndim, "n": n})
            rows.append(r)
    return rows


def scaling_slopes(rows: list[dict]) -> dict[str, float]:
    """Log-log slope of seconds per step against sites, per dimension (1 = linear)."""
    out = {}
    for ndim in (2, 3):
        pts = [(r["sites"], r["s_per_step"]) for r in rows if r.get("ndim") == ndim and "s_per_step" in r]
        if len(pts) >= 2:
            x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
            out[f"{ndim}D"] = float(np.polyfit(x, y, 1)[0])
            big = [p for p in pts if p[0] >= 1e5]
            if len(big) >= 2:
                xb, yb = np.log([p[0] for p in big]), np.log([p[1] for p in big])
                out[f"{ndim}D_large"] = float(np.polyfit(xb, yb, 1)[0])
    return out


def bench_physicell(quick: bool, threads: int | None, full: bool = False) -> dict:
    steps = int(round(PHYSICELL_DAYS * 1440.0 / 10.0)) if full else (20 if quick else 144)
    sets = ["lattice.nx=75", "lattice.ny=75", "lattice.nz=75", f"init.tumour_cells={PHYSICELL_CELLS}"]
    r = _in_subprocess({"sets": sets, "steps": steps, "threads": threads}, timeout=3600)
    if "s_per_step" in r:
        total_steps = int(round(PHYSICELL_DAYS * 1440.0 / 10.0))
        r["days"] = PHYSICELL_DAYS
        r["measured_days"] = steps * 10.0 / 1440.0
        r["wall_s_21_days"] = r["s_per_step"] * total_steps + r["init_s"]
        r["extrapolated"] = steps < total_steps
    return r


# ------------------------------------------------------------------------------------------- 6. threads that fit
OLD_DEFAULTS = {  # the OpenMP runtime's own defaults (idle workers spin), as before abm/threads.py
    "ABM_THREAD_DEFAULTS": "0",
    "OMP_WAIT_POLICY": None,
    "GOMP_SPINCOUNT": None,
    "KMP_BLOCKTIME": None,
    "NUMBA_THREADING_LAYER_PRIORITY": None,
}
THREAD_CASES = (("2D 400^2", 400, 2), ("3D 75^3", 75, 3))
CELL_SCHEDULES = ("sequential", "blocks")  # time.cell_schedule: blocks runs the cell step in parallel


def _thread_case_sets(n: int, ndim: int) -> list[str]:
    return _sets_for(n, ndim, ["init.ctl_cells=400", "init.nk_cells=200", "init.immune_within_um=300"])


def _best_of(specs: dict[str, tuple[dict, dict | None]], rounds: int) -> dict[str, dict]:
    """Each spec run ``rounds`` times in a fresh process, the specs interleaved round by round (so a change of the
    machine's load hits all of them alike); per spec the fastest round, with every round's state hash."""
    best: dict[str, dict] = {}
    for _ in range(rounds):
        for key, (spec, env) in specs.items():
            r = _in_subprocess(spec, 3600, env=env)
            if "error" in r:
                return {"error": r["error"]}
            hashes = best.get(key, {}).get("hashes", set()) | {r["state_sha256"]}
            if key not in best or r["s_per_step"] < best[key]["s_per_step"]:
                best[key] = r
            best[key]["hashes"] = hashes
    return best


def bench_model_threads(quick: bool) -> list[dict]:
    """Whole model steps (therapy, fields, cells, recruitment, observation) on 1 and 2 threads, a fresh process
    each, interleaved rounds (best of 2), the final states compared by sha256."""
    steps = 5 if quick else 15
    rows = []
    for (name, n, ndim), schedule in itertools.product(THREAD_CASES, CELL_SCHEDULES):
        sets = _thread_case_sets(n, ndim) + [f"time.cell_schedule={schedule}"]
        spec = {"sets": sets, "steps": steps}
        res = _best_of({nt: ({**spec, "threads": nt}, None) for nt in (1, 2)}, 1 if quick else 2)
        what = f"model steps {name}, {schedule} cells"
        if "error" in res:
            rows.append({"what": what, "error": res["error"]})
            continue
        rows.append(
            {
                "what": what,
                "steps": steps,
                "s_1thr": res[1]["s_per_step"],
                "s_2thr": res[2]["s_per_step"],
                "speedup": res[1]["s_per_step"] / res[2]["s_per_step"],
                "identical": len(res[1]["hashes"] | res[2]["hashes"]) == 1,
                "threading": res[2]["threading"],
            }
        )
    return rows


def bench_busy(quick: bool) -> dict:
    """The same whole steps while another process keeps one core busy: 1 thread, 2 threads, the default settings
    (no thread option at all) and the OpenMP runtime's own defaults (spinning idle workers); interleaved rounds,
    best of 3 per setting. 40 steps, so that the default's two measuring steps (one on each count,
    abm.threads.StepThreads) are 5% of the timed steps (in a 28-day run of 4,032 steps, with the later probes,
    under 1%)."""
    steps = 5 if quick else 40
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    rows = []
    try:
        time.sleep(0.5)
        for name, n, ndim in THREAD_CASES:
            spec = {"sets": _thread_case_sets(n, ndim), "steps": steps}
            res = _best_of(
                {
                    "1 thread": ({**spec, "threads": 1}, None),
                    "2 threads": ({**spec, "threads": 2}, None),
                    "default": (spec, None),
                    "omp defaults": (spec, OLD_DEFAULTS),
                },
                1 if quick else 3,
            )
            if "error" in res:
                rows.append({"what": f"model steps {name}", "error": res["error"]})
                continue
            t = {k: r["s_per_step"] for k, r in res.items()}
            best = min(t["1 thread"], t["2 threads"])
            rows.append(
                {
                    "what": f"model steps {name}",
                    "s": t,
                    "default_over_best": t["default"] / best,
                    "default_threads": res["default"]["threads"],
                    "identical": len(set().union(*(r["hashes"] for r in res.values()))) == 1,
                }
            )
    finally:
        busy.kill()  # the process started above, by its handle
        busy.wait()
    return {"load_during": load_line(), "rows": rows}


def bench_big(quick: bool, full: bool) -> dict:
    """3D 200^3 for 21 days on 2 threads: wall time (measured in full with --big-full, else extrapolated from the
    measured steps, flagged) and the process's peak memory."""
    total = int(round(PHYSICELL_DAYS * 1440.0 / 10.0))
    steps = total if full else (3 if quick else 10)
    r = _in_subprocess({"sets": _sets_for(200, 3), "steps": steps, "threads": 2, "advance": True}, 7200)
    if "s_per_step" in r:
        r["wall_s_21_days"] = r["s_per_step"] * total + r["init_s"]
        r["extrapolated"] = steps < total
    return r


def _patient(task) -> dict:
    from abm.trial.runner import execute_patient

    return execute_patient(task)  # a failed patient is a result, as in the trial runner


def _warm_worker(_: int) -> None:
    """Load the compiled kernels in a worker (a tiny model, one step), then hold it a moment so that the two warm-up
    tasks land on the two workers."""
    import abm as _abm
    from abm.threads import set_threads

    set_threads(1)  # as the trial runner's workers: one thread each
    _abm.Model("high_dose_il2", seed=1, sets=_sets_for(20, 2)).advance(1)
    time.sleep(1.0)


def bench_trial(quick: bool) -> dict:
    """Trial throughput: patients of the shipped high-dose IL-2 trial (default lesion, its RECIST visits and
    early stop) run in 2 worker processes of one thread each, patients per hour of wall time (kernels loaded first)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from abm.trial.runner import tasks
    from abm.trial.spec import TrialSpec

    n = 2 if quick else 4
    ts = tasks(TrialSpec.load("atkins1999_hd_il2"))[:n]
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as ex:
        list(ex.map(_warm_worker, range(2)))
        t0 = time.perf_counter()
        out = list(ex.map(_patient, ts))
        wall = time.perf_counter() - t0
    each = [o["elapsed_s"] for o in out]
    failed = [o["run_id"] for o in out if not o["ok"]]
    return {
        "failed": failed,
        "first_error": next((o["error"].splitlines()[0] for o in out if not o["ok"]), ""),
        "patients": n,
        "workers": 2,
        "wall_s": wall,
        "patients_per_hour": n / wall * 3600.0,
        "mean_s": float(np.mean(each)),
    }


def load_line() -> str:
    a, b, c = os.getloadavg()
    return f"load average {a:.2f}, {b:.2f}, {c:.2f}"


# ------------------------------------------------------------------------------------------- output
def _fmt(x: float, unit: str = "") -> str:
    return f"{x:.3g}{unit}" if isinstance(x, (int, float)) and math.isfinite(x) else str(x)


def print_report(res: dict) -> None:
    print(f"abm benchmark suite ({'quick' if res['quick'] else 'full'}); {res['machine']}")
    v = res.get("abm_vs_reference")
    if v:
        print("\n## abm vs plain-Mesa reference (same scenario, lattice, seed, steps; 1 thread each)")
        print(
            f"{'lattice':<14}{'steps':>6}{'cells':>8}{'abm ms/step':>13}{'ref ms/step':>13}{'abm upd/s':>12}"
            f"{'ref upd/s':>12}{'ratio':>8}"
        )
        print(
            f"{v['lattice']:<14}{v['steps']:>6}{v['cells_initial']:>8}{v['abm_s_per_step'] * 1e3:>13.3g}"
            f"{v['ref_s_per_step'] * 1e3:>13.4g}{v['abm_updates_per_s']:>12.3e}{v['ref_updates_per_s']:>12.3e}"
            f"{v['ratio']:>7.0f}x"
        )
    if res.get("fields"):
        print("\n## field solver vs memory-copy bandwidth (3 species, 1 thread; benchmarks/fields.py)")
        print(f"{'grid':<14}{'ms/step':>10}{'updates/s':>12}{'copy GB/s':>11}{'bound upd/s':>13}{'of bound':>10}")
        for r in res["fields"]:
            print(
                f"{r['grid']:<14}{r['seconds_per_step'] * 1e3:>10.2f}{r['updates_per_s']:>12.3e}"
                f"{r['copy_bandwidth_bytes_per_s'] / 1e9:>11.2f}{r['bandwidth_bound_updates_per_s']:>13.3e}"
                f"{r['fraction_of_bound']:>10.1%}"
            )
    rows = list(res.get("threads") or []) + list(res.get("model_threads") or [])
    if rows:
        print("\n## thread scaling 1 -> 2 (bit-identical results required; model steps: a fresh process per case)")
        print(f"{'what':<26}{'ms 1 thr':>10}{'ms 2 thr':>10}{'speedup':>9}{'identical':>11}  target")
        for r in rows:
            if "error" in r:
                print(f"{r['what']:<26} failed: {r['error']}")
                continue
            target = ">= 1.7x" if r["what"].startswith("model") else ""
            print(
                f"{r['what']:<26}{r['s_1thr'] * 1e3:>10.3g}{r['s_2thr'] * 1e3:>10.3g}{r['speedup']:>9.2f}"
                f"{str(r['identical']):>11}  {target}"
            )
    b = res.get("busy")
    if b:
        print(f"\n## one core kept busy by another process ({b['load_during']} at the end); ms per whole step")
        print(
            f"{'what':<26}{'1 thread':>10}{'2 threads':>10}{'default':>10}{'omp defaults':>14}"
            f"{'default/best':>14}{'identical':>11}  target"
        )
        for r in b["rows"]:
            if "error" in r:
                print(f"{r['what']:<26} failed: {r['error']}")
                continue
            t = r["s"]
            print(
                f"{r['what']:<26}{t['1 thread'] * 1e3:>10.3g}{t['2 threads'] * 1e3:>10.3g}{t['default'] * 1e3:>10.3g}"
                f"{t['omp defaults'] * 1e3:>14.3g}{r['default_over_best']:>14.2f}{str(r['identical']):>11}  <= 1.2"
            )
        print(
            "(default: no thread option, abm's settings, the count measured per run; omp defaults: the OpenMP "
            "runtime's own wait policy)"
        )
    if res.get("scaling"):
        print(
            f"\n## cost growth with size (whole model steps, fresh process per case, {res['sub_threads']} thread(s); "
            "model MB = tracemalloc peak of the model's arrays, RSS MB = process peak incl. Python/Numba/LLVM)"
        )
        print(
            f"{'case':<14}{'sites':>11}{'cells':>10}{'ms/step':>10}{'ns/site/step':>14}{'init s':>8}"
            f"{'model MB':>10}{'RSS MB':>8}"
        )
        for r in res["scaling"]:
            if "error" in r:
                print(f"{r['case']:<14} failed: {r['error']}")
                continue
            print(
                f"{r['case']:<14}{r['sites']:>11}{r['cells']:>10}{r['s_per_step'] * 1e3:>10.3g}"
                f"{r['s_per_step'] / r['sites'] * 1e9:>14.3g}{r['init_s']:>8.2f}{r['model_peak_mb']:>10.0f}"
                f"{r['peak_rss_mb']:>8.0f}"
            )
        for k, s in res.get("scaling_slopes", {}).items():
            verdict = "about linear" if 0.85 <= s <= 1.15 else ("sub-linear" if s < 0.85 else "super-linear")
            print(f"log-log slope of time/step vs sites, {k}: {s:.2f} ({verdict})")
    p = res.get("physicell")
    if p:
        print("\n## PhysiCell-sized case: 3D 75^3, ~26,000 tumour cells, 21 days")
        if "error" in p:
            print(f"failed: {p['error']}")
        else:
            tag = (
                f"EXTRAPOLATED from {p['steps']} measured steps ({p['measured_days']:.2f} days)"
                if p["extrapolated"]
                else "measured"
            )
            print(
                f"cells {p['cells']}, {p['s_per_step'] * 1e3:.3g} ms/step, init {p['init_s']:.2f} s, "
                f"model peak {p['model_peak_mb']:.0f} MB (process RSS {p['peak_rss_mb']:.0f} MB); "
                f"21 days: {p['wall_s_21_days']:.1f} s ({tag}); {p.get('threads', '?')} thread(s); target <= 20 s on 2"
            )


def print_extra(res: dict) -> None:
    big = res.get("big")
    if big:
        print("\n## 3D 200^3, 21 days, 2 threads (untreated; the engine alone, as between reports)")
        if "error" in big:
            print(f"failed: {big['error']}")
        else:
            tag = f"EXTRAPOLATED from {big['steps']} measured steps" if big["extrapolated"] else "measured"
            print(
                f"cells {big['cells']}, {big['s_per_step'] * 1e3:.3g} ms/step, init {big['init_s']:.2f} s; 21 days: "
                f"{big['wall_s_21_days'] / 60:.2f} min ({tag}); process peak RSS {big['peak_rss_mb']:.0f} MB; "
                "targets <= 5 min, <= 1.5 GB"
            )
    tr = res.get("trial")
    if tr:
        print("\n## trial throughput (atkins1999_hd_il2 patients, default lesion, 2 workers x 1 thread)")
        print(
            f"{tr['patients']} patients in {tr['wall_s']:.1f} s (mean {tr['mean_s']:.1f} s each): "
            f"{tr['patients_per_hour']:.0f} patients per hour"
            + (f"; {len(tr['failed'])} failed ({', '.join(tr['failed'])}: {tr['first_error']})" if tr["failed"] else "")
        )


def plot_scaling(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for ndim, marker in ((2, "o"), (3, "s")):
        pts = sorted((r["sites"], r["s_per_step"]) for r in rows if r.get("ndim") == ndim and "s_per_step" in r)
        if pts:
            ax.loglog([p[0] for p in pts], [p[1] * 1e3 for p in pts], marker=marker, label=f"{ndim}D")
    xs = np.array([min(r["sites"] for r in rows if "sites" in r), max(r["sites"] for r in rows if "sites" in r)])
    big = [r for r in rows if "s_per_step" in r]
    if big:
        ref = max(big, key=lambda r: r["sites"])
        ax.loglog(xs, ref["s_per_step"] * 1e3 * xs / ref["sites"], "k:", label="linear")
    ax.set_xlabel("lattice sites")
    ax.set_ylabel("wall time per step (ms)")
    ax.set_title("abm: time per 10-min step vs lattice size")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--quick", action="store_true", help="smaller cases and shorter timings")
    parser.add_argument(
        "--plot",
        nargs="?",
        const=ROOT / "docs" / "figures" / "perf_scaling.png",
        type=Path,
        help="write the time-per-step plot (default docs/figures/perf_scaling.png)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=["reference", "fields", "threads", "busy", "scaling", "physicell", "big", "trial"],
        help="run only these sections (repeatable)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="Numba threads in the scaling/PhysiCell subprocesses (default 1: see docs/performance.md)",
    )
    parser.add_argument(
        "--physicell-full",
        action="store_true",
        help="with --quick: run all 21 simulated days of the PhysiCell-sized case (the full suite always does)",
    )
    parser.add_argument(
        "--big-full", action="store_true", help="run all 21 days of the 3D 200^3 case instead of extrapolating"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.worker:
        print(json.dumps(_worker(json.loads(opts.worker))))
        return 0
    import numba

    only = set(opts.only or ["reference", "fields", "threads", "busy", "scaling", "physicell", "big", "trial"])
    res: dict = {
        "load_start": load_line(),
        "quick": opts.quick,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numba "
        f"{numba.__version__} ({numba.config.NUMBA_NUM_THREADS} threads), Python "
        f"{platform.python_version()}",
    }
    sections = [
        ("reference", "abm_vs_reference", lambda: bench_vs_reference(opts.quick)),
        ("fields", "fields", lambda: bench_fields(opts.quick)),
        ("threads", "threads", lambda: bench_threads(opts.quick)),
        ("threads", "model_threads", lambda: bench_model_threads(opts.quick)),
        ("busy", "busy", lambda: bench_busy(opts.quick)),
        ("scaling", "scaling", lambda: bench_scaling(opts.quick, opts.threads)),
        ("physicell", "physicell", lambda: bench_physicell(opts.quick, 2, not opts.quick or opts.physicell_full)),
        ("big", "big", lambda: bench_big(opts.quick, opts.big_full)),
        ("trial", "trial", lambda: bench_trial(opts.quick)),
    ]
    res["sub_threads"] = opts.threads
    for section, key, fn in sections:
        if section not in only:
            continue
        try:
            res[key] = fn()
        except Exception as e:  # one failed section must not lose the others' measurements
            res.setdefault("errors", {})[key] = f"{type(e).__name__}: {e}"
        if key == "scaling" and "scaling" in res:
            res["scaling_slopes"] = scaling_slopes(res["scaling"])
    res["load_end"] = load_line()
    print_report(res)
    print_extra(res)
    for key, err in res.get("errors", {}).items():
        print(f"\n{key}: failed: {err}")
    print(f"\nload at start: {res['load_start']}; at end: {res['load_end']}")
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps(res, indent=2))
    if opts.plot and res.get("scaling"):
        plot_scaling(res["scaling"], opts.plot)
        print(f"\nwrote {opts.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
