"""Numba threads that fit the machine: the threading layer, its wait policy and the thread count, set in one place.

Results never depend on any of this (every parallel loop is bit-identical for any thread count, docs/model.md); only
the wall time does. What was measured (docs/performance.md, "Threads"):

- Numba picks the OpenMP layer (GNU libgomp) when TBB is absent. libgomp's default wait policy lets an idle worker
  spin for about 300,000 pause instructions; on a machine whose cores are shared with other jobs a spinning worker
  competes with the thread doing the work and a parallel region then waits up to a scheduler time slice for its
  team: 2-thread regions cost 0.8-15 ms each instead of ~20 us, and whole steps ran 10-50x slower than on one
  thread.
- ``OMP_WAIT_POLICY=PASSIVE`` (idle workers sleep at once), the first cure, has its own cost: waking a sleeping
  worker costs about 55 us per parallel region on this VM (a halted virtual CPU has to be woken), which is more
  than a region of a 200^2-400^2 lattice saves, so 2 threads were no faster than 1 there (0.88-0.99x at 400^2).
- So abm now sets ``GOMP_SPINCOUNT=10000``: a worker spins briefly (long enough to catch the next region of the same
  solve) and then sleeps. On a quiet machine 2 threads then pay (400^2 whole step 1.53x instead of 0.88x); on a
  machine with no free core a short spin still loses to one thread, and that case is left to :class:`StepThreads`,
  which measures it.
- The workqueue layer has no spinning either, but costs ~100 us per region even on one thread, and it cannot be
  entered from two Python threads at once; TBB is not installed here (``pip install tbb`` to try it).
- ``KMP_BLOCKTIME`` is the Intel/LLVM OpenMP runtime's equivalent of the spin count; set to 0 (no effect on libgomp).

:func:`configure` runs when :mod:`abm` is imported, before Numba starts its threads, and only fills in what the
user has not set: ``GOMP_SPINCOUNT=10000``, ``KMP_BLOCKTIME=0`` and the layer priority omp, tbb, workqueue;
:func:`fit_to_cpus` (when the kernels load) caps the threads in use at the CPUs this process may run on
(``os.sched_getaffinity``, not the machine's count).
Small regions run on one thread whatever the count (the size thresholds of :mod:`abm.kernels.fields` and
:mod:`abm.kernels.coupled`). :func:`set_threads` is ``abm run --threads N``. Unless the user chose a thread count,
each model's steps run on the count that :class:`StepThreads` finds fastest on this machine now (1 or all),
re-measured as the run goes.
"""

from __future__ import annotations

import os
import sys
import time

DEFAULTS = {"GOMP_SPINCOUNT": "10000", "KMP_BLOCKTIME": "0", "NUMBA_THREADING_LAYER_PRIORITY": "omp tbb workqueue"}


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

    global _USER_THREADS
    n = int(n)
    if n < 1:
        raise UsageError(f"--threads must be >= 1, got {n}")
    _USER_THREADS = True  # a chosen count is kept: no StepThreads tuning
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


class StepThreads:
    """The thread count for one model's steps, chosen by measuring them: results are bit-identical for any count
    (docs/model.md), so only the wall time is at stake, and only the machine knows which count is faster now (a
    second core is worth ~1.5x when free and costs 2-3x when another job holds it).

    Active when the user chose no count (no ``NUMBA_NUM_THREADS``, no ``--threads``/:func:`set_threads`, no
    ``ABM_THREAD_TUNING=0`` or ``ABM_THREAD_DEFAULTS=0``), more than one thread is available and nobody lowered it
    before the model was built; if someone changes the count during the run (``numba.set_num_threads``), tuning
    stops and their choice stays. Otherwise the steps run on the faster of 1 and all threads: after a warm-up step,
    one step on each; then the current choice, with one step on the other count every ``probe_every`` steps
    (doubled, up to ``MAX_PROBE``, each time the probe loses, so a settled choice costs under 1%). The choice's time
    is an exponential average; a probe's replaces the other count's."""

    WARMUP_STEPS = 1
    FIRST_PROBE = 16
    MAX_PROBE = 512
    SMOOTHING = 0.3

    def __init__(self) -> None:
        import numba

        self.full = numba.get_num_threads()
        self.active = (
            not _USER_THREADS
            and os.environ.get("ABM_THREAD_TUNING") != "0"
            and os.environ.get("ABM_THREAD_DEFAULTS") != "0"
            and self.full > 1
            and self.full >= min(numba.config.NUMBA_NUM_THREADS, usable_cpus())
        )
        self.choice = self.full
        self.mean_s: dict[int, float] = {}
        self.steps = 0
        self.probe_every = self.FIRST_PROBE
        self.next_probe = 0
        self._set = self.full
        self._t0 = 0.0
        self._running = self.full

    def before_step(self) -> None:
        if not self.active:
            return
        import numba

        if numba.get_num_threads() != self._set:  # someone else chose a count: theirs stays
            self.active = False
            return
        n = self.choice
        if self.steps >= self.WARMUP_STEPS:
            untried = [k for k in (1, self.full) if k not in self.mean_s]
            if untried:
                n = untried[0]
            elif self.steps >= self.next_probe:
                n = 1 if self.choice == self.full else self.full
        if n != self._set:
            numba.set_num_threads(n)
            self._set = n
        self._running = n
        self._t0 = time.perf_counter()

    def after_step(self) -> None:
        if not self.active:
            return
        dt = time.perf_counter() - self._t0
        n = self._running
        self.steps += 1
        if self.steps <= self.WARMUP_STEPS:
            return  # first calls load kernels
        old = self.mean_s.get(n)
        # the choice's time is smoothed; a probe replaces the other count's (its old time is stale)
        self.mean_s[n] = dt if old is None or n != self.choice else old + self.SMOOTHING * (dt - old)
        if len(self.mean_s) < 2:
            return
        best = min(self.mean_s, key=self.mean_s.__getitem__)
        if n != self.choice:  # a probe (or the first measurement of the other count)
            if best == n:
                self.choice = n
                self.probe_every = self.FIRST_PROBE
            else:
                self.probe_every = min(2 * self.probe_every, self.MAX_PROBE)
            self.next_probe = self.steps + self.probe_every
        elif best != self.choice:
            self.choice = best
            self.next_probe = self.steps + self.probe_every

    def restore(self) -> None:
        """Give the caller back the count it had (after a batch of steps), so that a model tuned down to 1 thread does
        not leave the next model in the process, or other Numba code, on 1 thread."""
        if self.active and self._set != self.full:
            import numba

            numba.set_num_threads(self.full)
            self._set = self.full

    def describe(self) -> str:
        if not self.active:
            return "fixed"
        times = ", ".join(f"{k} thread(s) {1e3 * v:.2f} ms" for k, v in sorted(self.mean_s.items()))
        return f"tuned: {self.choice} thread(s) ({times} per step)"


def describe() -> str:
    """One line: threads in use, the layer (once threads have started) and the wait policy."""
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        layer = "not started"
    return (
        f"{numba.get_num_threads()} of {numba.config.NUMBA_NUM_THREADS} Numba threads, layer {layer}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
        f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset')}"
    )
