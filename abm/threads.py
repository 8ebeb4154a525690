"""Numba threads that fit the machine: the threading layer, its wait policy and the thread count, set in one place.

Results never depend on any of this (every parallel loop is bit-identical for any thread count, docs/model.md); only
the wall time does. What was measured (docs/performance.md, "Threads"):

- Numba picks the OpenMP layer (GNU libgomp) when TBB is absent. libgomp's default wait policy lets an idle worker
  spin; on a machine whose cores are shared with other jobs a spinning worker competes with the thread doing the work
  and a parallel region then waits up to a scheduler time slice for its team: 2-thread regions cost 0.8-15 ms
  each instead of ~20 us, and whole steps ran 10-50x slower than on one thread. ``OMP_WAIT_POLICY=PASSIVE`` (idle
  workers sleep at once) removes that: 2 threads are then never much slower than 1, busy machine or not.
- The workqueue layer has no spinning either, but costs ~100 us per region even on one thread, and it cannot be
  entered from two Python threads at once; TBB is not installed here (``pip install tbb`` to try it).
- ``KMP_BLOCKTIME`` is the Intel/LLVM OpenMP runtime's equivalent of the wait policy; set to 0 for the same reason
  (no effect on libgomp).

:func:`configure` runs when :mod:`abm` is imported, before Numba starts its threads, and only fills in what the
user has not set: ``OMP_WAIT_POLICY=PASSIVE``, ``KMP_BLOCKTIME=0`` and the layer priority omp, tbb, workqueue;
:func:`fit_to_cpus` (when the kernels load) caps the threads in use at the CPUs this process may run on
(``os.sched_getaffinity``, not the machine's count).
Small regions run on one thread whatever the count (the size thresholds of :mod:`abm.kernels.fields` and
:mod:`abm.kernels.coupled`). :func:`set_threads` is ``abm run --threads N``.
"""

from __future__ import annotations

import os
import sys

DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0", "NUMBA_THREADING_LAYER_PRIORITY": "omp tbb workqueue"}


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def configure() -> None:
    """Fill in the runtime defaults above (each only if unset; none with ``ABM_THREAD_DEFAULTS=0``, which the
    benchmarks use to measure the runtime's own defaults). Effective only before Numba launches its threads (the
    OpenMP runtime reads its environment when it is loaded); later it changes nothing."""
    global _USER_THREADS
    _USER_THREADS = "NUMBA_NUM_THREADS" in os.environ
    if os.environ.get("ABM_THREAD_DEFAULTS") == "0":
        return
    for k, v in DEFAULTS.items():
        os.environ.setdefault(k, v)


_USER_THREADS = False


def fit_to_cpus() -> None:
    """Use no more threads than the CPUs this process may run on (Numba's default pool is the machine's count).
    Called once when the kernels load; only ever lowers the count, and not when the user chose one. (The pool size
    is not put in the environment, so worker processes that default to one thread still do.)"""
    if _USER_THREADS or os.environ.get("ABM_THREAD_DEFAULTS") == "0":
        return
    import numba

    n = usable_cpus()
    if numba.get_num_threads() > n:
        numba.set_num_threads(n)


def set_threads(n: int) -> None:
    """Use ``n`` Numba threads from now on (``abm run --threads N``). Before Numba is loaded this sets the pool size
    itself; afterwards ``n`` may not exceed the pool (``NUMBA_NUM_THREADS``, default: the usable CPUs)."""
    from abm.errors import UsageError

    n = int(n)
    if n < 1:
        raise UsageError(f"--threads must be >= 1, got {n}")
    if "numba" not in sys.modules:
        os.environ["NUMBA_NUM_THREADS"] = str(n)
        return
    import numba

    if n > numba.config.NUMBA_NUM_THREADS:
        raise UsageError(
            f"--threads {n}: this process has a pool of {numba.config.NUMBA_NUM_THREADS} Numba threads "
            "(set NUMBA_NUM_THREADS before starting Python for more)"
        )
    numba.set_num_threads(n)


def describe() -> str:
    """One line: threads in use, the layer (once threads have started) and the wait policy."""
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        layer = "not started"
    return (
        f"{numba.get_num_threads()} of {numba.config.NUMBA_NUM_THREADS} Numba threads, layer {layer}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    )
