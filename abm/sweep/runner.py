"""Running a sweep: the worker task, the executors (in-process, a local pool of worker processes, Dask) and the
resumable driver.

The driver is the only writer of the store ``DIR/sweep.sqlite`` (:mod:`abm.sweep.store`), one transaction per
event: a run started (with the worker that runs it), a result, a worker death. A driver killed at any instant
leaves a store that resumes: ``resume=True`` reruns every run that is not done (those left ``running`` by the dead
driver and those that failed), and because every seed comes from the design (``SeedSequence(root,
spawn_key=(point, replicate))``) a resumed sweep equals an uninterrupted one whatever the worker count, completion
order or number of interruptions. ``DIR/sweep.h5`` is exported from the store when the driver stops.

**Worker deaths are charged to the run that died only.** The local executor owns its worker processes (plain
subprocesses, not a ``ProcessPoolExecutor``, whose single death breaks the whole pool and fails every run in flight,
queued or not): it hands one run at a time to an idle worker, so it knows which run each worker is running; when a
worker dies (killed, out of memory, a segfault) only that run is charged a death and resubmitted (up to
``max_retries`` deaths), and a fresh worker takes its place. Runs waiting in the driver's queue are never touched.
With Dask, the scheduler reruns the tasks of a dead worker itself; only a ``KilledWorker`` (a task whose workers
died ``allowed-failures`` times) is charged by the driver.

**Workers die with their driver.** Each worker asks the kernel to kill it when the driver dies
(``prctl(PR_SET_PDEATHSIG, SIGKILL)`` on Linux) and watches its parent pid (everywhere); its stdin and stdout are
pipes to the driver and its stderr goes to ``DIR/logs/worker-<n>.log``, so a worker never holds the caller's
terminal or pipes. There is no multiprocessing resource tracker to leave behind.

A run that raises is a result, recorded as failed with its error, and the sweep goes on.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import math
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abm.params import ParameterError
from abm.sweep.design import RunSpec, SweepSpec, expand
from abm.sweep.store import (
    EXPORT_NAME,
    LOCK_NAME,
    STORE_NAME,
    RunStore,
    StoreError,
    import_legacy,
    sweep_meta,
    sweep_records,
    worker_id,
)

NUMBA_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


class SweepError(ParameterError):
    """A sweep that cannot start as asked (existing output without --resume, a different spec on resume, another
    driver running the same directory...)."""


@dataclass
class SweepResult:
    """What :func:`run_sweep` did. ``path`` is the store; ``export_path`` the ``sweep.h5`` written from it."""

    path: Path
    n_runs: int
    n_done: int
    n_failed: int
    n_skipped: int
    elapsed_s: float
    n_retried: int = 0
    n_requeued: int = 0
    n_reset: int = 0
    export_path: Path | None = None
    deaths: dict[str, int] = field(default_factory=dict)


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
@dataclass
class Event:
    """What an executor reports: ``started`` (value: worker id), ``result`` (value: the task's result dict),
    ``died`` (value: why; charged to the run) or ``requeue`` (value: why; not charged: the run never ran)."""

    kind: str
    run_id: str
    value: Any = None


def _failure(run_id: str, error: str, elapsed_s: float = math.nan) -> dict[str, Any]:
    return {"run_id": run_id, "ok": False, "elapsed_s": elapsed_s, "error": error}


class SerialExecutor:
    """In the driver's own process, one run at a time (debugging, and the reference in tests)."""

    kind = "serial"

    def __init__(self) -> None:
        self._queue: deque[tuple[Callable, RunSpec]] = deque()

    def submit(self, fn: Callable, run: RunSpec, attempt: int) -> None:
        self._queue.append((fn, run))

    def poll(self, timeout: float) -> list[Event]:
        if not self._queue:
            return []
        fn, run = self._queue.popleft()
        return [Event("started", run.run_id, worker_id()), Event("result", run.run_id, _call(fn, run))]

    def close(self) -> None:
        self._queue.clear()


def _call(fn: Callable, run: RunSpec) -> dict[str, Any]:
    """Run the task; a task that raises (instead of returning its error, as :func:`execute` does) is a failure."""
    t0 = time.perf_counter()
    try:
        res = fn(run)
    except Exception as e:  # noqa: BLE001
        return _failure(
            run.run_id, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}", time.perf_counter() - t0
        )
    if not isinstance(res, dict) or "ok" not in res:
        return _failure(
            run.run_id, f"the task returned {type(res).__name__}, not a result dict", time.perf_counter() - t0
        )
    return res


# ---------------------------------------------------------------- the local pool: worker processes the driver owns
_FRAME = struct.Struct(">Q")


def _dumps(obj: Any) -> bytes:
    try:
        import cloudpickle  # functions defined in __main__ or a test module travel by value
    except ImportError:  # pragma: no cover - cloudpickle comes with dask
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _send(fh: Any, obj: Any) -> None:
    data = _dumps(obj)
    fh.write(_FRAME.pack(len(data)) + data)
    fh.flush()


def _recv(fh: Any) -> Any:
    head = _read_exact(fh, _FRAME.size)
    if head is None:
        return None
    data = _read_exact(fh, _FRAME.unpack(head)[0])
    if data is None:
        return None
    return pickle.loads(data)


def _read_exact(fh: Any, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = fh.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _die_with_parent(ppid: int) -> None:
    """Exit as soon as the driver (``ppid``) is gone, however it went (SIGKILL included)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG: the kernel kills us with the parent
        except (OSError, AttributeError):
            pass
    if os.getppid() != ppid:  # it died before we asked
        os._exit(70)

    def watch() -> None:
        while True:
            time.sleep(0.25)
            if os.getppid() != ppid:
                os._exit(70)

    threading.Thread(target=watch, name="abm-parent-watch", daemon=True).start()


#: A worker's first lines: bound to the driver's life before anything slow (importing abm takes a second)
_BOOT = (
    "import os, sys\n"
    "if sys.platform.startswith('linux'):\n"
    "    import ctypes, signal\n"
    "    try:\n"
    "        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL), 0, 0, 0)\n"
    "    except (OSError, AttributeError):\n"
    "        pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(70)\n"
    "import abm.sweep.runner as r\n"
    "r._worker_main()\n"
)


def _worker_main() -> None:
    """A local pool worker: ``python -c _BOOT DRIVER_PID``.

    Reads tasks from stdin, writes results to its stdout (a pipe to the driver; the task's own prints go to stderr,
    the worker's log), one at a time; exits at EOF on stdin or when the driver dies.
    """
    _die_with_parent(int(sys.argv[1]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle (it stops the workers)
    proto_in = sys.stdin.buffer
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # print() in a task goes to the log, never into the protocol
    sys.stdin = io.TextIOWrapper(io.BytesIO(b""))
    init = _recv(proto_in)
    if init is None:
        return
    for p in reversed(init.get("sys_path", [])):
        if p not in sys.path:
            sys.path.insert(0, p)
    _single_thread()
    while True:
        msg = _recv(proto_in)
        if msg is None:
            return
        fn, run = msg
        res = _call(fn, run)
        try:
            _send(proto_out, ("result", run.run_id, res))
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            _send(proto_out, ("result", run.run_id, _failure(run.run_id, f"the result could not be sent: {e}")))


class _Worker:
    """One worker process of the local pool, and the run it is running (if any)."""

    def __init__(self, slot: int, log_dir: Path | None) -> None:
        import abm

        self.slot = slot
        env = dict(os.environ)
        env.update(NUMBA_ENV)  # before numba loads in the worker: N workers use N cores
        root = str(Path(abm.__file__).resolve().parents[1])  # this abm, not another installed copy
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.log_path = None
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            self.log_path = log_dir / f"worker-{slot}.log"
            err: Any = open(self.log_path, "ab")
        else:
            err = subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
                close_fds=True,
            )
        finally:
            if err is not subprocess.DEVNULL:
                err.close()
        self.run_id: str | None = None
        self.started = 0.0
        self._buf = bytearray()
        try:
            _send(self.proc.stdin, {"sys_path": [p for p in sys.path if p]})
        except OSError:
            pass  # it died at once: found at the next poll

    @property
    def pid(self) -> int:
        return self.proc.pid

    def fileno(self) -> int:
        return self.proc.stdout.fileno()

    def give(self, fn: Callable, run: RunSpec) -> bool:
        try:
            _send(self.proc.stdin, (fn, run))
        except OSError:  # it is dead: it never got the run
            return False
        self.run_id, self.started = run.run_id, time.monotonic()
        return True

    def read(self) -> tuple[list[Any], bool]:
        """Messages now readable, and whether the worker has gone (EOF)."""
        try:
            chunk = os.read(self.fileno(), 1 << 20)
        except OSError:
            chunk = b""
        if not chunk:
            return [], True
        self._buf += chunk
        out = []
        while len(self._buf) >= _FRAME.size:
            (n,) = _FRAME.unpack_from(self._buf)
            if len(self._buf) < _FRAME.size + n:
                break
            out.append(pickle.loads(bytes(self._buf[_FRAME.size : _FRAME.size + n])))
            del self._buf[: _FRAME.size + n]
        return out, False

    def death(self) -> str:
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
        tail = ""
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                with open(self.log_path, "rb") as f:
                    f.seek(max(0, os.path.getsize(self.log_path) - 600))
                    last = f.read().decode("utf-8", "replace").strip().splitlines()[-3:]
                if last:
                    tail = f"; its log {self.log_path} ends: " + " | ".join(last)
        return f"worker pid {self.pid} died ({how}) while running it{tail}"

    def stop(self, timeout: float = 3.0) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=timeout if self.run_id is None else 0.5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            self.proc.stdout.close()


class LocalExecutor:
    """``workers`` worker processes on this machine, owned by the driver; see the module docstring.

    Runs wait in the driver's queue until a worker is idle; a worker runs one at a time. A dead worker is replaced.
    """

    kind = "local"

    def __init__(self, workers: int | None = None, log_dir: str | os.PathLike | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self._queue: deque[tuple[Callable, RunSpec]] = deque()
        self._pool: list[_Worker | None] = [None] * self.workers
        self.started_workers = 0

    @property
    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._pool if w is not None]

    def submit(self, fn: Callable, run: RunSpec, attempt: int) -> None:
        self._queue.append((fn, run))

    def _dispatch(self, events: list[Event]) -> None:
        for slot, w in enumerate(self._pool):
            if not self._queue:
                return
            if w is not None and w.run_id is not None:
                continue
            if w is None or w.proc.poll() is not None:
                w = self._pool[slot] = _Worker(slot, self.log_dir)
                self.started_workers += 1
            fn, run = self._queue.popleft()
            if w.give(fn, run):
                events.append(Event("started", run.run_id, worker_id(w.pid)))
            else:  # the worker was already dead: the run goes back to the front, uncharged
                self._queue.appendleft((fn, run))
                w.death()
                self._pool[slot] = None

    def poll(self, timeout: float) -> list[Event]:
        events: list[Event] = []
        self._dispatch(events)
        live = [w for w in self._pool if w is not None]
        if not live:
            return events
        try:
            ready, _, _ = select.select(live, [], [], 0 if events else timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries select
            ready = []
        for w in ready:
            msgs, gone = w.read()
            for kind, rid, res in msgs:
                if kind == "result" and rid == w.run_id:
                    events.append(Event("result", rid, res))
                    w.run_id = None
            if gone:
                why = w.death()
                if w.run_id is not None:
                    events.append(Event("died", w.run_id, why))
                self._pool[w.slot] = None
        self._dispatch(events)
        return events

    def close(self) -> None:
        self._queue.clear()
        for w in self._pool:
            if w is not None:
                w.stop()
        self._pool = [None] * self.workers


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
        self._futures: dict[Any, str] = {}
        self._started: list[str] = []
        self._n = 0

    def submit(self, fn: Callable, run: RunSpec, attempt: int) -> None:
        self._n += 1
        key = f"abm-{run.run_id}-{attempt}-{self._n}-{self.tag}"
        fut = self.client.submit(fn, run, key=key, pure=False, retries=0)
        self._futures[fut] = run.run_id
        self._started.append(run.run_id)  # handed to the cluster (Dask does not say when a task starts)

    def poll(self, timeout: float) -> list[Event]:
        from concurrent.futures import CancelledError

        from distributed import KilledWorker
        from distributed import wait as dwait

        events = [Event("started", rid, "dask") for rid in self._started]
        self._started = []
        if not self._futures:
            return events
        try:
            done, _ = dwait(list(self._futures), timeout=0 if events else timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return events
        for fut in done:
            rid = self._futures.pop(fut)
            try:
                res = fut.result()
            except KilledWorker as e:  # the scheduler gave up: its workers kept dying while running it
                events.append(Event("died", rid, f"Dask: {e}"))
                continue
            except (CancelledError, OSError) as e:  # the cluster lost the task, not the run's fault
                events.append(Event("requeue", rid, f"{type(e).__name__}: {e}"))
                continue
            except Exception as e:  # noqa: BLE001 - the task itself raised
                res = _failure(rid, f"{type(e).__name__}: {e}")
            if not isinstance(res, dict) or "ok" not in res:
                res = _failure(rid, f"the task returned {type(res).__name__}, not a result dict")
            events.append(Event("result", rid, res))
        return events

    def close(self) -> None:
        for fut in list(self._futures):
            with contextlib.suppress(Exception):
                fut.cancel()
        self._futures.clear()
        for obj in self._own:
            try:
                obj.close()
            except Exception:  # noqa: BLE001 - closing a cluster that already went away must not hide the result
                pass


def make_executor(
    workers: int | None = None,
    scheduler: str | None = None,
    dask_local: int | None = None,
    client: Any = None,
    log_dir: str | os.PathLike | None = None,
):
    if sum(x is not None and x is not False for x in (workers, scheduler, dask_local, client)) > 1:
        raise SweepError("choose one of --workers, --dask-local and --scheduler")
    if client is not None or scheduler or dask_local:
        return DaskExecutor(scheduler=scheduler, local_workers=dask_local, client=client)
    if workers is not None and workers < 0:
        raise SweepError(f"--workers {workers}: allowed range is 0 (in-process) or more")
    return SerialExecutor() if workers == 0 else LocalExecutor(workers, log_dir=log_dir)


# ------------------------------------------------------------------------------------------------ the driver
@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a batch system ending the job) stops the driver like Ctrl-C: workers stopped, store consistent,
    export written (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _open_store(spec: SweepSpec, out: Path, runs: list[RunSpec], resume: bool) -> RunStore:
    """The sweep's store: created (new sweep), opened and checked (resume), or imported from a legacy sweep.h5."""
    path = out / STORE_NAME
    legacy = out / EXPORT_NAME
    if path.exists():
        if not resume:
            raise SweepError(f"{out}: a sweep is already there; pass --resume to finish it or choose another --out")
        try:
            store = RunStore.open(path)
        except StoreError as e:
            raise SweepError(str(e)) from None
        meta = store.meta()
        if meta.get("fingerprint") != spec.fingerprint():
            store.close()
            raise SweepError(
                f"{path}: this sweep was started from a different definition (or without/with --quick); resume it "
                "with the same sweep file and options, or use a new --out"
            )
        ids = set(store.run_ids())
        if ids != {r.run_id for r in runs}:
            store.close()
            raise SweepError(f"{path}: damaged: its runs do not match the sweep's design")
        return store
    if legacy.exists():
        if not resume:
            raise SweepError(f"{out}: a sweep is already there; pass --resume to finish it or choose another --out")
        try:
            return import_legacy(legacy, path, spec, runs)
        except StoreError as e:
            raise SweepError(str(e)) from None
    # a driver killed while it created the store leaves only its temporary file (the store is renamed into place
    # whole): that sweep never started, so --resume starts it. The driver lock is held: no one else is creating.
    stale = [p for p in out.iterdir() if p.name.startswith(f".{STORE_NAME}.")]
    if resume and any(p.name != LOCK_NAME and p not in stale for p in out.iterdir()):
        raise SweepError(f"{out}: --resume given but there is no sweep in it (no {STORE_NAME})")
    for p in stale:
        p.unlink(missing_ok=True)
    return RunStore.create(path, sweep_meta(spec), sweep_records(spec, runs))


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
    on_event: Callable[[Event], None] | None = None,
) -> SweepResult:
    """Run every run of a sweep (with ``resume``, every run of ``out`` not yet done) and record the results.

    ``workers`` processes on this machine (default: one per core; 0 runs in this process), or a Dask cluster:
    ``scheduler`` address, ``dask_local`` N local worker processes, or a ``client``. ``run_fn`` replaces the task
    (a picklable function of a :class:`RunSpec` returning what :func:`execute` returns). ``on_result`` sees every
    recorded result, ``on_event`` every executor event (after the store has recorded it).

    Raises :class:`SweepError` (a :class:`~abm.params.ParameterError`) before any run when the sweep cannot start:
    an existing sweep without ``resume``, a different definition, another driver running ``out``.
    """
    from abm.io import FileLock, OutputLockedError, OutputPathError

    if not isinstance(spec, SweepSpec):
        spec = SweepSpec.load(spec, quick=quick)
    out = Path(out)
    t0 = time.perf_counter()
    runs = expand(spec, out)
    by_id = {r.run_id: r for r in runs}
    if out.exists() and not out.is_dir():
        raise SweepError(f"{out}: --out must be a directory, and this is a file")
    if not resume:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SweepError(f"{out}: cannot create the output directory ({e.strerror or e})") from None
    elif not out.is_dir():
        raise SweepError(f"{out}: --resume given but there is no such directory")
    lock = FileLock(out / LOCK_NAME, out, what="an abm sweep driver")
    try:
        lock.acquire()
    except (OutputLockedError, OutputPathError) as e:
        raise SweepError(str(e)) from None
    store = None
    ex = None
    bar = None
    inflight: set[str] = set()
    res_ = SweepResult(out / STORE_NAME, len(runs), 0, 0, 0, 0.0)
    try:
        store = _open_store(spec, out, runs, resume)
        res_.n_reset = store.reset_running()  # a dead driver's runs in flight: back to pending, uncharged
        todo = store.run_ids(["pending", "failed"])
        res_.n_skipped = len(runs) - len(todo)
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(runs), initial=res_.n_skipped, desc=spec.name, unit="run", dynamic_ncols=True)
            bar.set_postfix(failed=0)
        deaths: Counter[str] = Counter()
        requeues: Counter[str] = Counter()
        with _sigterm_as_interrupt():
            if todo:
                ex = make_executor(
                    workers=workers, scheduler=scheduler, dask_local=dask_local, client=client, log_dir=out / "logs"
                )
                for rid in todo:
                    ex.submit(run_fn, by_id[rid], 0)
                    inflight.add(rid)
            while inflight:
                for ev in ex.poll(timeout=1.0):
                    rid = ev.run_id
                    res = None
                    if ev.kind == "started":
                        store.mark_running(rid, str(ev.value))
                    elif ev.kind == "result":
                        res = dict(ev.value)
                    elif ev.kind == "died":
                        deaths[rid] += 1
                        n = deaths[rid]
                        retry = n <= spec.max_retries
                        why = f"its worker died {n} time{'s' * (n > 1)} running it; last: {ev.value}"
                        store.record_death(rid, why, retry)
                        if retry:
                            res_.n_retried += 1
                            ex.submit(run_fn, by_id[rid], n)
                        else:
                            res = _failure(rid, why)
                            res["recorded"] = True
                    elif ev.kind == "requeue":
                        requeues[rid] += 1
                        store.requeue([rid])
                        res_.n_requeued += 1
                        if requeues[rid] <= 100:
                            ex.submit(run_fn, by_id[rid], deaths[rid])
                        else:
                            res = _failure(rid, f"the cluster lost it 100 times; last: {ev.value}")
                    if on_event is not None:
                        on_event(ev)
                    if res is None:
                        continue
                    res["run_id"] = rid
                    if res.get("ok"):
                        store.record_done(rid, res["summary"], res.get("elapsed_s", math.nan))
                        res_.n_done += 1
                    else:
                        if not res.pop("recorded", False):  # (a last death is recorded already)
                            store.record_failed(rid, res.get("error", "?"), res.get("elapsed_s", math.nan))
                        res_.n_failed += 1
                    res["attempts"] = store.row(rid)["attempts"]
                    inflight.discard(rid)
                    if on_result is not None:
                        on_result(res)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(failed=res_.n_failed, refresh=False)
    finally:
        if ex is not None:
            ex.close()
        if bar is not None:
            bar.close()
        if store is not None:
            with contextlib.suppress(Exception):
                store.requeue(inflight)  # stopped early: what was running goes back to pending
            try:
                res_.export_path = store.export_h5(out / EXPORT_NAME)
            except Exception as e:  # noqa: BLE001 - the store is the truth; a failed export must not hide the result
                print(f"abm sweep: could not export {out / EXPORT_NAME}: {e}", file=sys.stderr)
            store.close()
        lock.release()
    res_.deaths = dict(deaths)
    res_.elapsed_s = time.perf_counter() - t0
    return res_


def export_sweep(sweep_dir: str | Path) -> Path:
    """Write ``DIR/sweep.h5`` from ``DIR/sweep.sqlite`` now (e.g. after a driver was killed)."""
    d = Path(sweep_dir)
    with RunStore.open(d / STORE_NAME) as store:
        return store.export_h5(d / EXPORT_NAME)
