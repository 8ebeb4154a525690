"""Running a virtual trial: one task per (arm, patient) on the sweep machinery's executors (local worker pool that
the driver owns, or Dask) and its SQLite run store, with resume.

Every patient is one run of the arm's scenario with the patient's parameters as typed overrides
(``Scenario.load(arm, values={"patient.antigenicity": 1.7, ...})``) and the patient's own seed, the same in every
arm (paired). The run carries a :class:`VisitReporter` that measures the lesion at the RECIST assessments (a
lattice snapshot at those steps only) and stops the simulation when the patient goes off study (progression, or
the schedule is over): a trial keeps no trajectory unless ``keep_trajectories`` (then every run goes to its end and
its file is whole).

The store (``DIR/sweep.sqlite``, :mod:`abm.sweep.store`, ``kind = "trial"``) has one row per patient and arm: run id
``<arm>.p<patient>``, ``point`` the arm's index, ``replicate`` the patient's index, ``seed`` the patient's seed,
``design`` the patient's parameter values, ``summary`` the per-patient read-outs (:func:`patient_summary`). The
driver is the store's only writer; a killed driver resumes with ``resume=True``; a worker's death is charged to the
patient it was running only (see :mod:`abm.sweep.runner`).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abm.errors import ParameterError
from abm.sweep.runner import Event, SweepError, _failure, _sigterm_as_interrupt, _single_thread, make_executor
from abm.sweep.store import EXPORT_NAME, LOCK_NAME, STORE_NAME, RunRecord, RunStore, StoreError
from abm.trial.recist import Assessor, Measurement, RecistParams, measure_lattice
from abm.trial.spec import TrialSpec

RUN_TOTALS = (
    "toxicity_max",
    "tumour_cells_initial",
    "tumour_cells_final",
    "tumour_cells_min",
    "max_n_ctl",
    "max_n_nk",
    "max_n_lak",
    "total_kills_ctl",
    "total_kills_nk",
    "total_kills_lak",
    "total_kills_drug",
    "total_deaths_ctl_aicd",
    "total_deaths_ctl_drug",
    "total_transferred_lak",
)


class TrialError(SweepError):
    """A trial that cannot start as asked (existing output without --resume, another definition on resume...)."""


class OffStudy(Exception):
    """Raised by :class:`VisitReporter` to end a run when its patient leaves the study."""


# ------------------------------------------------------------------------------------------------ the reporter
class VisitReporter:
    """Measures the lesion at every RECIST assessment (baseline at step 0, scheduled visits, confirmation scans)
    and feeds an :class:`~abm.trial.recist.Assessor`; with ``stop`` it ends the run (raising :class:`OffStudy`)
    once no further assessment is due. ``end`` holds the :class:`~abm.simulation.RunEnd` after the run."""

    def __init__(self, rule: RecistParams, stop: bool = True, course_end_day: float = 0.0) -> None:
        self.rule = rule
        self.stop = stop
        self.course_end_day = float(course_end_day)
        self.assessor = Assessor(rule)
        self.end: Any = None
        self.reason = ""
        self._day: float | None = 0.0
        self._step: int | None = 0
        self.stopped_day = math.nan

    def _needs(self) -> frozenset[str]:
        return frozenset({"observables", "snapshot"} if self.rule.measure == "fragments" else {"observables"})

    def describe_next_report(self, last_step: int) -> tuple[int, frozenset[str]]:
        if self._step is None:
            return max(1, self.n_steps - last_step), frozenset()
        return max(1, self._step - last_step), self._needs()

    def begin(self, info: Any) -> None:
        self.dt_min = float(info.dt_min)
        self.n_steps = int(info.n_steps)
        self.shape = tuple(info.shape_xyz)
        self.spacing_um = float(info.spacing_um)
        self.tumour_code = int(info.cell_type_codes["tumour"])
        self._plan()

    def _plan(self) -> None:
        d = None if self.assessor.done() else self.assessor.next_day()
        self._day = d
        self._step = None if d is None else int(round(d * 1440.0 / self.dt_min))
        if self._step is not None and self._step > self.n_steps:  # the run ends before it: no such assessment
            self._step = self._day = None

    def measure(self, frame: Any) -> Measurement:
        obs = frame.observables
        cells = int(round(obs["n_tumour"]))
        cal = float(obs["tumour_lesion_diameter_mm"])
        eq = float(obs["tumour_equivalent_diameter_mm"])
        if self.rule.measure == "fragments":
            m = measure_lattice(frame.snapshot.cell_type == self.tumour_code, self.shape, self.spacing_um, self.rule)
            return Measurement(m.sum_mm, m.cells, m.fragments, m.measurable, m.largest_mm, cal, eq)
        s = cal if self.rule.measure == "caliper" else eq
        return Measurement(s, cells, int(s > 0), int(s > 0), s, cal, eq)

    def _why(self) -> str:
        a = self.assessor
        if not a.evaluable:
            return "not evaluable (no measurable lesion at baseline)"
        if a.progressed and self.rule.off_study_at_progression:
            return "progression"
        if a.best_response() == "CR" and self.rule.stop_after_confirmed_cr:
            return "confirmed CR"
        return "assessments complete"

    def report(self, frame: Any) -> None:
        if self._step is None or frame.step != self._step:
            return
        if self._day is not None:
            self.assessor.add(float(self._day), self.measure(frame))
            self._plan()
        if not self.assessor.done():
            return
        self.reason = self._why()
        if not self.stop or frame.step >= self.n_steps:
            return
        # off study at progression at once (treatment stops in the clinic); otherwise not before the last
        # scheduled dose, so that the doses delivered are the whole course's: the run goes on to that step
        end_step = int(math.ceil(self.course_end_day * 1440.0 / self.dt_min - 1e-9))
        if self.reason != "progression" and frame.step < end_step:
            self._step, self._day = min(end_step, self.n_steps), None
            return
        self.stopped_day = frame.time_day
        raise OffStudy(self.reason)

    def close(self, end: Any) -> None:
        self.end = end
        if not math.isfinite(self.stopped_day) and hasattr(self, "dt_min"):
            self.stopped_day = end.last_step * self.dt_min / 1440.0


# ------------------------------------------------------------------------------------------------ the task
@dataclass(frozen=True)
class PatientTask:
    """One patient in one arm: what a worker needs, as plain picklable data."""

    run_id: str
    arm: str
    arm_index: int
    patient: int
    seed: int
    scenario: str
    sets: tuple[str, ...]
    values: tuple[tuple[str, float], ...]
    recist: str
    out: str | None = None
    stop_early: bool = True


def dose_counts(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Doses given, held and cancelled (in all and per drug), the DLT, and the days of holds and the DLT."""
    kinds = Counter(e["kind"] for e in events)
    out: dict[str, Any] = {
        "doses_given": int(kinds.get("dose_given", 0)),
        "doses_held": int(kinds.get("dose_held", 0)),
        "doses_cancelled": int(kinds.get("dose_cancelled", 0)),
    }
    for drug in sorted({str(e.get("drug", "")) for e in events if str(e["kind"]).startswith("dose_")} - {""}):
        out[f"doses_given_{drug}"] = sum(1 for e in events if e["kind"] == "dose_given" and e.get("drug") == drug)
    dlt = [e for e in events if e["kind"] == "toxicity_dlt"]
    out["dose_limiting_toxicity"] = bool(dlt)
    out["dlt_day"] = float(dlt[0]["time_min"]) / 1440.0 if dlt else math.nan
    given = [float(e["time_min"]) / 1440.0 for e in events if e["kind"] == "dose_given"]
    out["last_dose_day"] = max(given) if given else math.nan
    marks = [
        [round(float(e["time_min"]) / 1440.0, 4), "H" if e["kind"] == "dose_held" else "C"]
        for e in events
        if e["kind"] in ("dose_held", "dose_cancelled")
    ]
    out["dose_marks"] = json.dumps(marks)
    return out


def patient_summary(rep: VisitReporter, run_summary: dict[str, Any] | None, events: list[dict[str, Any]]) -> dict:
    """The per-patient row: RECIST read-outs, the assessments (JSON), doses and toxicity, and run totals."""
    out: dict[str, Any] = dict(rep.assessor.result())
    pts = [
        [p["day"], p["sum_mm"], p["change_pct"], p["response"], p["cells"], p["fragments"], p["scheduled"]]
        for p in rep.assessor.timepoints()
    ]
    out["assessments"] = json.dumps(pts)
    out["off_study"] = rep.reason or "end of run"
    out["stopped_day"] = float(rep.stopped_day)
    out.update(dose_counts(events))
    for k in RUN_TOTALS:
        v = (run_summary or {}).get(k)
        out[k] = float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan
    return out


def execute_patient(task: PatientTask) -> dict[str, Any]:
    """Run one patient in one arm; returns ``{"run_id", "ok", "summary" | "error", "elapsed_s"}`` (never raises for
    a failed simulation)."""
    _single_thread()
    t0 = time.perf_counter()
    try:
        import abm
        from abm.scenario import Scenario

        sc = Scenario.load(task.scenario, sets=list(task.sets), values=dict(task.values))
        rule = RecistParams.model_validate_json(task.recist)
        schedule = sc.regimen.expand(sc.run.days, sc.params)
        course_end = max((d.time_min + d.duration_min for d in schedule), default=0.0) / 1440.0
        rep = VisitReporter(rule, stop=task.stop_early and not task.out, course_end_day=course_end)
        out = None
        if task.out:
            out = Path(task.out)
            out.parent.mkdir(parents=True, exist_ok=True)
        try:
            res = abm.run(sc, seed=task.seed, out=out, overwrite=True, reporters=[rep])
            summary, events = res.summary, list(res.events)
        except OffStudy:
            summary, events = rep.end.summary, list(rep.end.events)
        summ = patient_summary(rep, summary, events)
        summ["seed"] = int(task.seed)
        summ["doses_scheduled"] = len(schedule)
        summ["course_end_day"] = float(course_end)
        on_study = rep.stopped_day * 1440.0 if math.isfinite(rep.stopped_day) else math.inf
        summ["doses_due_on_study"] = sum(1 for d in schedule if d.time_min <= on_study + 1e-6)
        return {"run_id": task.run_id, "ok": True, "summary": summ, "elapsed_s": time.perf_counter() - t0}
    except Exception as e:  # a run that raises is a result (recorded as failed), not a lost task
        return {
            "run_id": task.run_id,
            "ok": False,
            "elapsed_s": time.perf_counter() - t0,
            "error": f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}",
        }


# ------------------------------------------------------------------------------------------------ the design
def run_id(arm: str, patient: int, width: int = 4) -> str:
    return f"{arm}.p{patient:0{width}d}"


def tasks(spec: TrialSpec, out_dir: str | Path | None = None) -> list[PatientTask]:
    """Every (arm, patient) task, patient-major (patient 0 in every arm, then patient 1...), so an interrupted
    trial has its arms equally far along."""
    patients = spec.patients()
    width = max(4, len(str(len(patients))))
    recist = spec.recist.model_dump_json()
    keep = spec.doc.trial.keep_trajectories and out_dir is not None
    out = []
    for p in patients:
        for a, arm in enumerate(spec.arms):
            rid = run_id(arm.name, p.index, width)
            out.append(
                PatientTask(
                    rid,
                    arm.name,
                    a,
                    p.index,
                    p.seed,
                    spec.scenario_paths[arm.name],
                    tuple(spec.arm_sets(arm)),
                    tuple(sorted((k, float(v)) for k, v in p.values.items())),
                    recist,
                    str(Path(out_dir) / "runs" / f"{rid}.h5") if keep else None,
                )
            )
    return out


def trial_meta(spec: TrialSpec) -> dict[str, Any]:
    from abm.provenance import abm_version, git_hash

    return {
        "kind": "trial",
        "name": spec.name,
        "spec_json": spec.to_json(),
        "spec_text": spec.text,
        "spec_source": spec.source,
        "cohort_source": spec.cohort_source,
        "fingerprint": spec.fingerprint(),
        "parameters": list(spec.cohort.keys),
        "design": "cohort",
        "analysis": "trial",
        "arms": [a.name for a in spec.arms],
        "abm_version": abm_version(),
        "git_hash": git_hash(),
    }


def trial_records(spec: TrialSpec, ts: list[PatientTask]) -> list[RunRecord]:
    return [RunRecord(t.run_id, i, t.seed, dict(t.values), t.arm_index, t.patient) for i, t in enumerate(ts)]


def is_trial(path: str | Path) -> bool:
    """Whether ``path`` (a directory or its store) holds a virtual trial."""
    p = Path(path)
    p = p / STORE_NAME if p.is_dir() else p
    if not p.is_file() or p.suffix != ".sqlite":
        return False
    try:
        with RunStore.open(p, readonly=True) as s:
            return s.meta().get("kind") == "trial"
    except StoreError:
        return False


# ------------------------------------------------------------------------------------------------ the driver
@dataclass
class TrialResult:
    path: Path
    n_runs: int
    n_done: int = 0
    n_failed: int = 0
    n_skipped: int = 0
    n_retried: int = 0
    elapsed_s: float = 0.0


def _open_store(spec: TrialSpec, out: Path, ts: list[PatientTask], resume: bool) -> RunStore:
    path = out / STORE_NAME
    if path.exists():
        if not resume:
            raise TrialError(
                f"{out}: a trial or sweep is already there; pass --resume to finish it or use another --out"
            )
        try:
            store = RunStore.open(path)
        except StoreError as e:
            raise TrialError(str(e)) from None
        meta = store.meta()
        if meta.get("kind") != "trial" or meta.get("fingerprint") != spec.fingerprint():
            store.close()
            raise TrialError(
                f"{path}: this directory holds another trial (or a sweep, or this trial with/without --quick or "
                "another size); resume with the same trial file and options, or use a new --out"
            )
        if set(store.run_ids()) != {t.run_id for t in ts}:
            store.close()
            raise TrialError(f"{path}: damaged: its runs do not match the trial's design")
        return store
    if resume and any(p.name != LOCK_NAME for p in out.iterdir()):
        raise TrialError(f"{out}: --resume given but there is no trial in it (no {STORE_NAME})")
    return RunStore.create(path, trial_meta(spec), trial_records(spec, ts))


def run_trial(
    spec: TrialSpec | str | Path,
    out: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    dask_local: int | None = None,
    client: Any = None,
    resume: bool = False,
    quick: bool = False,
    progress: bool = True,
    run_fn: Callable[[PatientTask], dict[str, Any]] = execute_patient,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> TrialResult:
    """Run every (arm, patient) of a trial (with ``resume``, every one not yet done) and record the results in
    ``out/sweep.sqlite``. Executors as :func:`abm.sweep.run_sweep`: ``workers`` local processes (0: this process),
    ``dask_local`` N, ``scheduler`` an address, or a ``client``."""
    from abm.io import FileLock, OutputLockedError, OutputPathError

    if not isinstance(spec, TrialSpec):
        spec = TrialSpec.load(spec, quick=quick)
    out = Path(out)
    t0 = time.perf_counter()
    ts = tasks(spec, out)
    by_id = {t.run_id: t for t in ts}
    if out.exists() and not out.is_dir():
        raise TrialError(f"{out}: --out must be a directory, and this is a file")
    if not resume:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrialError(f"{out}: cannot create the output directory ({e.strerror or e})") from None
    elif not out.is_dir():
        raise TrialError(f"{out}: --resume given but there is no such directory")
    lock = FileLock(out / LOCK_NAME, out, what="an abm trial driver")
    try:
        lock.acquire()
    except (OutputLockedError, OutputPathError) as e:
        raise TrialError(str(e)) from None
    res_ = TrialResult(out / STORE_NAME, len(ts))
    store = ex = bar = None
    inflight: set[str] = set()
    try:
        store = _open_store(spec, out, ts, resume)
        store.reset_running()
        todo = store.run_ids(["pending", "failed"])
        res_.n_skipped = len(ts) - len(todo)
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(ts), initial=res_.n_skipped, desc=spec.name, unit="patient", dynamic_ncols=True)
        deaths: Counter[str] = Counter()
        requeues: Counter[str] = Counter()
        responders: Counter[str] = Counter()
        finished: Counter[str] = Counter()
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
                    res = _handle(ev, store, ex, run_fn, by_id, deaths, requeues, spec, res_)
                    if res is None:
                        continue
                    rid = ev.run_id
                    res["run_id"] = rid
                    if res.get("ok"):
                        store.record_done(rid, res["summary"], res.get("elapsed_s", math.nan))
                        res_.n_done += 1
                        arm = by_id[rid].arm
                        finished[arm] += 1
                        responders[arm] += bool(res["summary"].get("responder"))
                    else:
                        if not res.pop("recorded", False):
                            store.record_failed(rid, res.get("error", "?"), res.get("elapsed_s", math.nan))
                        res_.n_failed += 1
                    inflight.discard(rid)
                    if on_result is not None:
                        on_result(res)
                    if bar is not None:
                        bar.update(1)
                        orr = " ".join(f"{a}={responders[a]}/{finished[a]}" for a in sorted(finished))
                        bar.set_postfix_str(f"responders {orr}; failed {res_.n_failed}", refresh=False)
    finally:
        if ex is not None:
            ex.close()
        if bar is not None:
            bar.close()
        if store is not None:
            with contextlib.suppress(Exception):
                store.requeue(inflight)
            try:
                store.export_h5(out / EXPORT_NAME)
            except Exception as e:  # noqa: BLE001 - the store is the truth
                print(f"abm trial: could not export {out / EXPORT_NAME}: {e}", file=sys.stderr)
            store.close()
        lock.release()
    res_.elapsed_s = time.perf_counter() - t0
    return res_


def _handle(ev: Event, store, ex, run_fn, by_id, deaths, requeues, spec: TrialSpec, res_: TrialResult):
    """Record one executor event; return the run's result dict when it is finished (done or failed for good)."""
    rid = ev.run_id
    if ev.kind == "started":
        store.mark_running(rid, str(ev.value))
        return None
    if ev.kind == "result":
        return dict(ev.value)
    if ev.kind == "died":
        deaths[rid] += 1
        n = deaths[rid]
        retry = n <= spec.doc.trial.max_retries
        why = f"its worker died {n} time{'s' * (n > 1)} running it; last: {ev.value}"
        store.record_death(rid, why, retry)
        if retry:
            res_.n_retried += 1
            ex.submit(run_fn, by_id[rid], n)
            return None
        res = _failure(rid, why)
        res["recorded"] = True
        return res
    if ev.kind == "requeue":
        requeues[rid] += 1
        store.requeue([rid])
        if requeues[rid] <= 100:
            ex.submit(run_fn, by_id[rid], deaths[rid])
            return None
        return _failure(rid, f"the cluster lost it 100 times; last: {ev.value}")
    raise ParameterError(f"unknown executor event {ev.kind!r}")
