"""Running a sweep: the worker task, the local (process pool) and Dask executors, and the resumable driver.

The driver is the only writer of ``DIR/sweep.h5`` (see :mod:`abm.sweep.store`): it writes the design first, then
one summary row per finished run and one failure row per run that raised, each in its own short open-append-close
so a driver killed between runs leaves a consistent file. ``resume=True`` reads back the finished run ids and
submits only the rest; every run's seed comes from the design (``SeedSequence(root, spawn_key=(point,
replicate))``), so a resumed sweep equals an uninterrupted one whatever the worker count or completion order.

A run whose worker process dies (killed, out of memory) is resubmitted up to ``max_retries`` times; a run that
raises is recorded in ``failures`` with its error and the sweep goes on.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abm.params import ParameterError
from abm.sweep.design import RunSpec, SweepSpec, expand
from abm.sweep.store import SweepStore

NUMBA_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


class SweepError(ParameterError):
    """A sweep that cannot start as asked (existing output without --resume, a different spec on resume...)."""


@dataclass
class SweepResult:
    path: Path
    n_runs: int
    n_done: int
    n_failed: int
    n_skipped: int
    elapsed_s: float
    n_retried: int = 0


# ------------------------------------------------------------------------------------------------ the task
def _single_thread() -> None:
    """Numba single-threaded per worker: set before numba loads; if it already has, cap the threads in use."""
    if "numba" not in sys.modules:
        for k, v in NUMBA_ENV.items():
            os.environ.setdefault(k, v)
    else:
        import numba

        numba.set_num_threads(1)


def _plain(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item):
        v = v.item()
    if v is None:
        return math.nan
    return v


def execute(run: RunSpec) -> dict[str, Any]:
    """Run one sweep run and return ``{"run_id", "ok", "summary" | "error", "elapsed_s"}``; never raises for a
    failed simulation (its error text is returned), so only a dead worker loses a task."""
    _single_thread()
    t0 = time.perf_counter()
    try:
        import abm
        from abm.scenario import Scenario

        sc = Scenario.load(run.base, sets=list(run.sets))
        out = None
        if run.out:
            out = Path(run.out)
            out.parent.mkdir(parents=True, exist_ok=True)
        res = abm.run(sc, seed=run.seed, out=out, overwrite=True)
        summ = {k: _plain(v) for k, v in res.summary.items()}
        if run.metrics:
            missing = [m for m in run.metrics if m not in summ]
            if missing:
                raise KeyError(
                    f"metrics not in the run summary: {', '.join(missing)}; available: {', '.join(sorted(summ))}"
                )
            summ = {m: summ[m] for m in run.metrics}
        return {"run_id": run.run_id, "ok": True, "summary": summ, "elapsed_s": time.perf_counter() - t0}
    except Exception as e:  # a run that raises is a result (recorded as failed), not a lost task
        return {
            "run_id": run.run_id,
            "ok": False,
            "elapsed_s": time.perf_counter() - t0,
            "error": f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}",
        }


# ------------------------------------------------------------------------------------------------ executors
class LocalExecutor:
    """A pool of ``workers`` processes (spawned, Numba single-threaded); rebuilt when a worker dies."""

    kind = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None

    def _ensure(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing as mp

            old = {k: os.environ.get(k) for k in NUMBA_ENV}
            os.environ.update(NUMBA_ENV)  # inherited by the spawned workers (the driver's numba is unaffected)
            try:
                self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))
                # start every worker now, while the environment holds (the pool spawns one per busy submit)
                for f in [self._pool.submit(os.getpid) for _ in range(self.workers)]:
                    f.result()
            finally:
                for k, v in old.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
        return self._pool

    def submit(self, fn: Callable, run: RunSpec, attempt: int):
        pool = self._ensure()
        fut = pool.submit(fn, run)
        fut.abm_pool = pool  # which pool ran it: only a death in the current pool discards the current pool
        return fut

    def lost(self, exc: BaseException, fut: Any = None) -> bool:
        if isinstance(exc, BrokenProcessPool):
            if self._pool is not None and getattr(fut, "abm_pool", self._pool) is self._pool:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            return True
        return False

    def wait(self, futures, timeout: float | None = None):
        done, _ = wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)
        return done

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskExecutor:
    """Tasks on a Dask cluster: an existing scheduler (``tcp://HOST:PORT``), a fresh LocalCluster of N processes,
    or a ``distributed.Client`` passed in."""

    kind = "dask"

    def __init__(self, scheduler: str | None = None, local_workers: int | None = None, client: Any = None) -> None:
        from distributed import Client, LocalCluster

        self._own: list[Any] = []
        if client is not None:
            self.client = client
        elif scheduler:
            try:
                self.client = Client(scheduler, timeout="30s")
            except OSError as e:
                raise SweepError(f"--scheduler {scheduler}: cannot reach the Dask scheduler ({e})") from None
            self._own.append(self.client)
        else:
            cluster = LocalCluster(
                n_workers=local_workers or os.cpu_count() or 1,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                env=dict(NUMBA_ENV),
            )
            self.client = Client(cluster)
            self._own += [self.client, cluster]
        self.tag = f"{os.getpid()}-{time.time_ns()}"

    def submit(self, fn: Callable, run: RunSpec, attempt: int):
        return self.client.submit(fn, run, key=f"abm-{run.run_id}-{attempt}-{self.tag}", pure=False, retries=0)

    def lost(self, exc: BaseException, fut: Any = None) -> bool:
        from distributed import KilledWorker

        return isinstance(exc, KilledWorker | OSError)

    def wait(self, futures, timeout: float | None = None):
        from distributed import wait as dwait

        try:
            done, _ = dwait(list(futures), timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return set()
        return set(done)

    def close(self) -> None:
        for obj in self._own:
            try:
                obj.close()
            except Exception:  # closing a cluster that already went away must not hide the sweep's result
                pass


def make_executor(
    workers: int | None = None, scheduler: str | None = None, dask_local: int | None = None, client: Any = None
):
    if sum(x is not None and x is not False for x in (workers, scheduler, dask_local, client)) > 1:
        raise SweepError("choose one of --workers, --dask-local and --scheduler")
    if client is not None or scheduler or dask_local:
        return DaskExecutor(scheduler=scheduler, local_workers=dask_local, client=client)
    if workers is not None and workers < 0:
        raise SweepError(f"--workers {workers}: allowed range is 0 (in-process) or more")
    return SerialExecutor() if workers == 0 else LocalExecutor(workers)


class _Deferred:
    """A future that runs its task when its result is first asked for (so results are recorded one by one)."""

    def __init__(self, fn: Callable, run: RunSpec) -> None:
        self._fn, self._run, self._done, self._value = fn, run, False, None

    def result(self):
        if not self._done:
            self._value, self._done = self._fn(self._run), True
        return self._value


class SerialExecutor:
    """In the driver's own process, one run at a time (debugging, and the reference in tests)."""

    kind = "serial"

    def submit(self, fn: Callable, run: RunSpec, attempt: int):
        return _Deferred(fn, run)

    def lost(self, exc: BaseException, fut: Any = None) -> bool:
        return False

    def wait(self, futures, timeout: float | None = None):
        return {futures[0]} if futures else set()

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------------------ the driver
def run_sweep(
    spec: SweepSpec | str | Path,
    out: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    dask_local: int | None = None,
    client: Any = None,
    resume: bool = False,
    quick: bool = False,
    progress: bool = True,
    run_fn: Callable[[RunSpec], dict[str, Any]] = execute,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> SweepResult:
    """Run every run of a sweep (or, with ``resume``, those not yet in ``out/sweep.h5``) and record the results.

    ``workers`` processes on this machine (default: one per core; 0 runs in this process), or a Dask cluster:
    ``scheduler`` address, ``dask_local`` N local worker processes, or a ``client``. ``run_fn`` replaces the task
    (a picklable function of a :class:`RunSpec` returning what :func:`execute` returns).
    """
    if not isinstance(spec, SweepSpec):
        spec = SweepSpec.load(spec, quick=quick)
    out = Path(out)
    t0 = time.perf_counter()
    runs = expand(spec, out)
    store = SweepStore(out / "sweep.h5")
    if store.path.exists():
        if not resume:
            raise SweepError(
                f"{store.path}: a sweep is already there; pass --resume to finish it or choose another --out"
            )
        store.check_matches(spec)
    else:
        if resume and out.exists() and any(out.iterdir()):
            raise SweepError(f"{out}: --resume given but there is no sweep.h5 in it")
        out.mkdir(parents=True, exist_ok=True)
        store.create(spec, runs)
    finished = store.finished_ids()
    pending = [r for r in runs if r.run_id not in finished]
    n_skipped = len(runs) - len(pending)
    n_done = n_failed = n_retried = 0
    failed_before = store.n_failed()

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(runs), initial=n_skipped, desc=spec.name, unit="run", dynamic_ncols=True)
        bar.set_postfix(failed=0)
    if not pending:
        if bar is not None:
            bar.close()
        return SweepResult(store.path, len(runs), 0, 0, n_skipped, time.perf_counter() - t0)

    ex = make_executor(workers=workers, scheduler=scheduler, dask_local=dask_local, client=client)
    attempts = {r.run_id: 0 for r in pending}
    by_id = {r.run_id: r for r in pending}
    try:
        inflight = {ex.submit(run_fn, r, 0): r.run_id for r in pending}
        while inflight:
            for fut in ex.wait(list(inflight), timeout=5.0):
                rid = inflight.pop(fut)
                try:
                    res = fut.result()
                except BaseException as e:  # the worker died (or the cluster lost the task): retry
                    if isinstance(e, KeyboardInterrupt):
                        raise
                    if not ex.lost(e, fut):
                        res = {"run_id": rid, "ok": False, "elapsed_s": math.nan, "error": f"{type(e).__name__}: {e}"}
                    else:
                        attempts[rid] += 1
                        if attempts[rid] <= spec.max_retries:
                            n_retried += 1
                            # a broken local pool fails every run in flight: resubmit them all
                            inflight[ex.submit(run_fn, by_id[rid], attempts[rid])] = rid
                            continue
                        res = {
                            "run_id": rid,
                            "ok": False,
                            "elapsed_s": math.nan,
                            "error": f"worker died {attempts[rid]} times running it ({type(e).__name__}: {e})",
                        }
                res["attempts"] = attempts[rid] + 1
                if res.get("ok"):
                    store.append_summary(rid, res["summary"], res.get("elapsed_s", math.nan))
                    n_done += 1
                else:
                    store.append_failure(rid, res.get("error", "?"), res["attempts"])
                    n_failed += 1
                if on_result is not None:
                    on_result(res)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(failed=n_failed + failed_before, refresh=False)
    finally:
        ex.close()
        if bar is not None:
            bar.close()
    return SweepResult(store.path, len(runs), n_done, n_failed, n_skipped, time.perf_counter() - t0, n_retried)
