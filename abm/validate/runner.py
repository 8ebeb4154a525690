"""Running the validation suite: every arm the chosen patterns need, on every seed, in worker processes.

The runs go through the sweep executors (:func:`abm.sweep.runner.make_executor`: a pool of single-threaded worker
processes owned by this process, or this process itself with ``workers=0``); a worker that dies has its run retried
once. Each task returns the run's summary and its tumour, CTL and LAK counts over time (thinned), nothing else: the
trajectories are not written.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abm.sweep.design import RunSpec
from abm.validate.experiments import ARMS, Pattern, arms_of

CURVE_POINTS = 120
"""Points kept of each run's tumour/CTL/LAK counts over time (for the figures)."""

MAX_DEATHS = 1
"""Retries of a run whose worker died (a run that raises is not retried: it fails the same way again)."""


@dataclass(frozen=True)
class Size:
    """What every arm runs at: a square lattice of ``size`` x ``size`` sites, ``days`` long, seeds 1..``seeds``."""

    size: int
    days: float
    seeds: int

    def sets(self) -> tuple[str, ...]:
        # one snapshot at most: the suite keeps no trajectories
        return (
            f"lattice.nx={self.size}",
            f"lattice.ny={self.size}",
            f"run.days={self.days:g}",
            f"run.snapshot_every_min={max(self.days, 1.0) * 1440:g}",
        )

    @property
    def seed_list(self) -> list[int]:
        return list(range(1, self.seeds + 1))


FULL = Size(150, 28.0, 6)
"""The full suite: 150 x 150 sites (3 mm; outcomes box-independent from here, docs/validation.md), 4 weeks, 6 seeds."""
QUICK = Size(60, 14.0, 3)
"""``--quick``: a pipeline check in minutes (1.2 mm, 2 weeks, 3 seeds); not a result."""


@dataclass
class SuiteRuns:
    """What :func:`run_suite` measured: ``runs[arm][seed]`` summaries, ``curves[arm][seed]``, failures, times."""

    runs: dict[str, dict[int, dict[str, Any]]]
    curves: dict[str, dict[int, dict[str, list[float]]]]
    failures: dict[str, str] = field(default_factory=dict)
    elapsed_s: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    load_start: tuple[float, float, float] = (math.nan,) * 3
    load_end: tuple[float, float, float] = (math.nan,) * 3
    workers: int = 0


def _plain(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item):
        v = v.item()
    return math.nan if v is None else v


def run_task(run: RunSpec) -> dict[str, Any]:
    """One run of one arm: its summary and thinned counts over time (``{"ok", "summary", "curve", ...}``)."""
    from abm.sweep.runner import _single_thread

    _single_thread()
    t0 = time.perf_counter()
    try:
        import numpy as np

        import abm

        res = abm.run(run.base, sets=list(run.sets), seed=run.seed)
        o = res.observables
        t = np.asarray(o["time_min"], dtype=float)
        idx = np.unique(np.linspace(0, len(t) - 1, min(CURVE_POINTS, len(t))).round().astype(int))
        curve = {"day": (t[idx] / 1440.0).tolist()}
        for k in ("n_tumour", "n_ctl", "n_lak"):
            curve[k] = np.asarray(o[k], dtype=float)[idx].tolist()
        summ = {k: _plain(v) for k, v in res.summary.items()}
        elapsed = time.perf_counter() - t0
        return {"run_id": run.run_id, "ok": True, "summary": summ, "curve": curve, "elapsed_s": elapsed}
    except Exception as e:  # a run that raises is a result (reported), not a lost suite
        import traceback

        return {
            "run_id": run.run_id,
            "ok": False,
            "elapsed_s": time.perf_counter() - t0,
            "error": f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}",
        }


def run_specs(patterns: list[Pattern], size: Size) -> list[RunSpec]:
    """Every (arm, seed) run the patterns need, ids ``ARM@sSEED``."""
    out = []
    for i, name in enumerate(arms_of(patterns)):
        arm = ARMS[name]
        for s in size.seed_list:
            out.append(RunSpec(f"{name}@s{s}", i, s, s, (), arm.scenario, arm.sets + size.sets()))
    return out


def check_specs(specs: list[RunSpec]) -> None:
    """Load and validate every arm's scenario with its overrides (and check the run fits this machine) before
    any run starts: a bad size or override is a :class:`~abm.params.ParameterError` naming the key."""
    from abm import limits
    from abm.scenario import Scenario

    seen = set()
    for r in specs:
        if (r.base, r.sets) in seen:
            continue
        seen.add((r.base, r.sets))
        limits.check_run(Scenario.load(r.base, sets=list(r.sets)))


def run_suite(
    patterns: list[Pattern],
    size: Size,
    *,
    workers: int | None = None,
    log_dir: str | Path | None = None,
    progress: bool = True,
    task: Callable[[RunSpec], dict[str, Any]] = run_task,
) -> SuiteRuns:
    """Run every arm the patterns need on every seed; ``workers`` processes (default: one per core; 0: here)."""
    from abm.sweep.runner import _failure, make_executor

    specs = run_specs(patterns, size)
    check_specs(specs)
    by_id = {r.run_id: r for r in specs}
    out = SuiteRuns({}, {})
    out.load_start = os.getloadavg()
    t0 = time.perf_counter()
    ex = make_executor(workers=workers, log_dir=log_dir)
    out.workers = getattr(ex, "workers", 0)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(specs), desc="abm validate", unit="run", dynamic_ncols=True, file=sys.stderr)
    deaths: dict[str, int] = {}
    inflight = set(by_id)
    try:
        for r in specs:
            ex.submit(task, r, 0)
        while inflight:
            for ev in ex.poll(timeout=1.0):
                rid = ev.run_id
                if ev.kind == "result":
                    res = ev.value
                elif ev.kind == "died":
                    deaths[rid] = deaths.get(rid, 0) + 1
                    if deaths[rid] <= MAX_DEATHS:
                        ex.submit(task, by_id[rid], deaths[rid])
                        continue
                    res = _failure(rid, f"its worker died {deaths[rid]} times; last: {ev.value}")
                elif ev.kind == "requeue":
                    ex.submit(task, by_id[rid], deaths.get(rid, 0))
                    continue
                else:
                    continue
                arm, seed = rid.rsplit("@s", 1)
                if res.get("ok"):
                    out.runs.setdefault(arm, {})[int(seed)] = res["summary"]
                    out.curves.setdefault(arm, {})[int(seed)] = res["curve"]
                else:
                    out.failures[rid] = str(res.get("error", "?"))
                out.elapsed_s[rid] = float(res.get("elapsed_s", math.nan))
                inflight.discard(rid)
                if bar is not None:
                    bar.update(1)
    finally:
        ex.close()
        if bar is not None:
            bar.close()
    out.wall_s = time.perf_counter() - t0
    out.load_end = os.getloadavg()
    return out
