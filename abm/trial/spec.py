"""The trial definition (``TRIAL.toml``), validated with the project's layered validation (errors name the file
and the key), and resolved into one task per (arm, patient).

Layout (docs/trials.md has the whole schema)::

    [trial]
    name = "atkins1999_hd_il2"
    description = "..."
    population = "metastatic RCC"
    patients = 255
    seed = 19990701
    cohort = "default"                 # a cohort file (path relative to this file, or a shipped name)
    sets = ["lattice.nx=100"]          # overrides of every arm's scenario
    compare = [["lak_il2", "hd_il2"]]  # paired comparisons (default: every pair of arms)
    keep_trajectories = false
    max_retries = 2

    [cohort.parameters."patient.antigenicity"]   # optional: changes to the cohort file's distributions
    cv = 0.8

    [recist]                           # abm.trial.recist.RecistParams
    visit_every_weeks = 8

    [[arms]]
    name = "hd_il2"
    scenario = "high_dose_il2"
    label = "High-dose IL-2"
    sets = []

    [[clinical]]                       # the clinic's figures set beside the model's
    arm = "hd_il2"
    endpoint = "orr"                   # orr | cr_rate | pr_rate | dlt_rate
    k = 37
    n = 255
    population = "RCC"
    source = "..."

    [calibration]                      # abm calibrate (abm.trial.calibrate)
    ...

    [quick]                            # --quick: patients, sets (appended), recist and calibration changes
    patients = 6
    sets = ["lattice.nx=40"]
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from abm.errors import ParameterError
from abm.params.core import Group, Layer, P, build, read_toml, set_layer
from abm.trial.cohort import CohortSpec, ParamDist, Patient, check_cohort, draw, find_cohort
from abm.trial.recist import RecistParams

ENDPOINTS = ("orr", "cr_rate", "pr_rate", "dlt_rate")
ENDPOINT_LABELS = {"orr": "ORR", "cr_rate": "CR", "pr_rate": "PR", "dlt_rate": "DLT"}
TRIAL_DIR = Path(__file__).resolve().parents[2] / "scenarios" / "trials"
QUICK_KEYS = ("patients", "sets", "recist", "calibration", "description")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")


class TrialMeta(Group):
    name: str = P("trial", "-", "short name")
    description: str = P("", "-", "one line saying what the trial is")
    population: str = P("", "-", "who the virtual patients stand for (e.g. metastatic RCC)")
    patients: int = P(20, "patients", "patients per arm (every arm treats the same patients)", ge=1, le=10**6)
    seed: int = P(0, "-", "root seed of the cohort draws and of every patient's run seed", ge=0, lt=2**63)
    cohort: str = P("default", "-", "cohort file: a path relative to the trial file, or a shipped name")
    sets: list[str] = P([], "-", "key=value overrides of every arm's scenario (lattice size, ...)")
    compare: list[list[str]] = P([], "-", "pairs of arms to compare (default: every pair)")
    keep_trajectories: bool = P(False, "-", "write every patient's trajectory to DIR/runs/<run_id>.h5")
    max_retries: int = P(2, "-", "resubmissions of a patient whose worker died", ge=0, le=100)


class Arm(Group):
    name: str = P("", "-", "short name (letters, digits, _ and -)")
    scenario: str = P("", "-", "the regimen: a shipped scenario name or a path relative to the trial file")
    label: str = P("", "-", "what figures call the arm")
    sets: list[str] = P([], "-", "key=value overrides of this arm's scenario")

    @model_validator(mode="after")
    def _named(self) -> Arm:
        if not _NAME.match(self.name):
            raise ValueError(f"arm name {self.name!r}: letters, digits, _ and - only, starting with a letter")
        if not self.scenario:
            raise ValueError("an arm needs a scenario")
        return self

    @property
    def title(self) -> str:
        return self.label or self.name


class ClinicalFigure(Group):
    arm: str = P("", "-", "the arm this figure stands beside")
    endpoint: Literal["orr", "cr_rate", "pr_rate", "dlt_rate"] = P("orr", "-", "what was counted")
    k: int = P(0, "patients", "patients with the endpoint", ge=0)
    n: int = P(1, "patients", "patients evaluated", ge=1)
    population: str = P("", "-", "e.g. RCC or melanoma")
    source: str = P("", "-", "the publication")
    note: str = P("", "-", "free text")

    @model_validator(mode="after")
    def _counts(self) -> ClinicalFigure:
        if self.k > self.n:
            raise ValueError(f"k = {self.k} is more than n = {self.n}")
        if not self.source.strip():
            raise ValueError("a clinical figure needs its source")
        return self

    @property
    def rate(self) -> float:
        return self.k / self.n


class FitParam(Group):
    key: str = P("", "-", "a cohort parameter, e.g. patient.antigenicity")
    field: Literal["median", "cv", "mean", "sd"] = P("median", "-", "which property of its distribution is fitted")
    low: float = P(0.0, "-", "lower bound of the fit")
    high: float = P(1.0, "-", "upper bound of the fit")
    scale: Literal["log", "linear"] = P("log", "-", "the fit searches this scale")

    @model_validator(mode="after")
    def _range(self) -> FitParam:
        if not self.low < self.high:
            raise ValueError(f"need low < high (got {self.low}, {self.high})")
        if self.scale == "log" and self.low <= 0:
            raise ValueError("a log scale needs low > 0")
        return self

    @property
    def name(self) -> str:
        return f"{self.key}:{self.field}"


class CalibrationSpec(Group):
    arm: str = P("", "-", "the arm whose read-outs are fitted (default: the first)")
    population: str = P("", "-", "use the clinical figures of this population only (default: all of the arm's)")
    targets: list[Literal["orr", "cr_rate", "pr_rate", "dlt_rate"]] = P(["orr", "cr_rate"], "-", "fitted endpoints")
    pool: int = P(400, "patients", "plausible patients simulated from the proposal", ge=2, le=10**6)
    seed: int = P(1, "-", "seed of the pool (its patients) and of the bootstrap", ge=0, lt=2**63)
    bootstrap: int = P(400, "-", "bootstrap refits for the intervals", ge=0, le=100000)
    min_ess: float = P(30.0, "patients", "warn when the fitted weights' effective sample size is below this", ge=0)
    parameters: list[FitParam] = Field(default_factory=list, description="what is fitted")
    proposal: dict[str, ParamDist] = Field(
        default_factory=dict, description="the distribution the pool draws each fitted parameter from"
    )


class TrialDoc(Group):
    trial: TrialMeta = Field(default_factory=TrialMeta)
    cohort: CohortSpec = Field(default_factory=CohortSpec)
    recist: RecistParams = Field(default_factory=RecistParams)
    arms: list[Arm] = Field(default_factory=list)
    clinical: list[ClinicalFigure] = Field(default_factory=list)
    calibration: CalibrationSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TrialDoc:
        if not self.arms:  # (the defaults have none; a trial file without arms is refused after the merge)
            return self
        names = [a.name for a in self.arms]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"arm names must be unique (repeated: {', '.join(dup)})")
        for i, c in enumerate(self.clinical):
            if c.arm not in names:
                raise ValueError(f"clinical.{i}.arm = {c.arm!r} is not an arm; arms: {', '.join(names)}")
        for pair in self.trial.compare:
            if len(pair) != 2 or pair[0] == pair[1] or any(p not in names for p in pair):
                raise ValueError(f"trial.compare: {pair!r} must name two different arms of {', '.join(names)}")
        cal = self.calibration
        if cal is not None:
            if cal.arm and cal.arm not in names:
                raise ValueError(f"calibration.arm = {cal.arm!r} is not an arm; arms: {', '.join(names)}")
            arm = cal.arm or names[0]
            rows = [c for c in self.clinical if c.arm == arm and (not cal.population or c.population == cal.population)]
            missing = [t for t in cal.targets if not any(c.endpoint == t for c in rows)]
            if missing:
                raise ValueError(f"calibration.targets: no clinical figure for arm {arm!r}: {', '.join(missing)}")
            corr = {c.a for c in self.cohort.correlations} | {c.b for c in self.cohort.correlations}
            refs = {d.relative_to for d in self.cohort.parameters.values()}
            for i, fp in enumerate(cal.parameters):
                d = self.cohort.parameters.get(fp.key)
                if d is None:
                    raise ValueError(f"calibration.parameters.{i}.key = {fp.key!r} is not a cohort parameter")
                if getattr(d, fp.field) is None:
                    raise ValueError(f"calibration.parameters.{i}: a {d.dist} distribution has no {fp.field}")
                if fp.key in corr or d.relative_to or fp.key in refs:
                    raise ValueError(
                        f"calibration.parameters.{i}: {fp.key} is correlated with, or relative to, another "
                        "parameter; only an independent parameter can be fitted by reweighting"
                    )
                if fp.key not in cal.proposal:
                    raise ValueError(f"calibration.proposal needs a distribution for {fp.key}")
            if not cal.parameters:
                raise ValueError("calibration.parameters: name at least one parameter to fit")
        return self


@dataclass
class TrialSpec:
    """A validated trial: the document, where it came from, and its resolved arms and cohort."""

    doc: TrialDoc
    source: str = "<trial>"
    base_dir: str = "."
    text: str = ""
    quick: bool = False
    cohort_source: str = ""
    scenario_paths: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path, quick: bool = False, values: dict[str, Any] | None = None) -> TrialSpec:
        """Read and validate a trial TOML (a path, or a shipped name under scenarios/trials); ``quick`` applies
        its ``[quick]`` table; ``values`` are typed overrides of the document (``{"trial.patients": 10}``)."""
        p = find_trial(path)
        raw = read_toml(p)
        spec = cls.from_dict(raw, source=str(p), quick=quick, base_dir=str(p.parent), values=values)
        spec.text = p.read_text()
        return spec

    @classmethod
    def from_dict(
        cls,
        raw: dict[str, Any],
        source: str = "<trial>",
        quick: bool = False,
        base_dir: str = ".",
        values: dict[str, Any] | None = None,
    ) -> TrialSpec:
        raw = copy.deepcopy(raw)
        q = raw.pop("quick", None)
        tr = raw.get("trial", {})
        if not isinstance(tr, dict):
            raise ParameterError(f"{source}: key 'trial' must be a table ([trial])")
        cname = (values or {}).get("trial.cohort", tr.get("cohort", "default"))
        if not isinstance(cname, str):
            raise ParameterError(f"{source}: key 'trial.cohort': wrong type (got {cname!r}); expected a string")
        try:
            cpath = find_cohort(cname, relative_to=Path(base_dir))
        except ParameterError as e:
            raise ParameterError(f"{source}: key 'trial.cohort': {e}") from None
        craw = read_toml(cpath)
        layers = [Layer(str(cpath), {"cohort": craw.get("cohort", {})} if "cohort" in craw else craw, "file")]
        layers.append(Layer(source, raw, "file"))
        if quick:
            if not isinstance(q, dict):
                raise ParameterError(f"{source}: --quick asks for a [quick] table, and this file has none")
            for k in q:
                if k not in QUICK_KEYS:
                    raise ParameterError(f"{source}: unknown key 'quick.{k}'; valid keys: {', '.join(QUICK_KEYS)}")
            over: dict[str, Any] = {"trial": {}}
            if "patients" in q:
                over["trial"]["patients"] = q["patients"]
            if "description" in q:
                over["trial"]["description"] = q["description"]
            if "sets" in q:
                if not isinstance(q["sets"], list):
                    raise ParameterError(f"{source}: key 'quick.sets' must be a list of key=value strings")
                over["trial"]["sets"] = list(tr.get("sets", [])) + list(q["sets"])
            for k in ("recist", "calibration"):
                if k in q:
                    over[k] = q[k]
            layers.append(Layer(f"{source} [quick]", over, "file"))
        if values:
            layers += [set_layer(k, v, f"{k}={v!r}") for k, v in values.items()]
        doc = build(TrialDoc, layers, source)
        if not doc.arms:
            raise ParameterError(f"{source}: a trial needs at least one [[arms]] table (name, scenario)")
        for s in doc.trial.sets + [s for a in doc.arms for s in a.sets]:
            if not isinstance(s, str) or "=" not in s:
                raise ParameterError(f"{source}: overrides must be 'key=value' strings (got {s!r})")
        spec = cls(doc, source=source, base_dir=base_dir, quick=quick, cohort_source=str(cpath))
        spec.validate_scenarios()
        return spec

    def validate_scenarios(self) -> None:
        """Before any work: every arm's scenario loads with the trial's overrides, and accepts the cohort."""
        from abm.scenario import find_scenario

        for i, arm in enumerate(self.doc.arms):
            try:
                path = find_scenario(arm.scenario, relative_to=Path(self.base_dir))
            except ParameterError as e:
                raise ParameterError(f"{self.source}: key 'arms.{i}.scenario': {e}") from None
            self.scenario_paths[arm.name] = str(path)
            sc = self.scenario(arm)
            check_cohort(self.doc.cohort, sc, self.cohort_source)

    # ------------------------------------------------------------------------------------------ resolved
    @property
    def name(self) -> str:
        return self.doc.trial.name

    @property
    def arms(self) -> list[Arm]:
        return list(self.doc.arms)

    @property
    def cohort(self) -> CohortSpec:
        return self.doc.cohort

    @property
    def recist(self) -> RecistParams:
        return self.doc.recist

    @property
    def run_days(self) -> float:
        """How long every run lasts: to the last possible assessment (a confirmation after the last visit)."""
        return float(self.recist.last_day)

    def arm_sets(self, arm: Arm) -> list[str]:
        return [*self.doc.trial.sets, *arm.sets, f"run.days={self.run_days!r}"]

    def scenario(self, arm: Arm, values: dict[str, float] | None = None):
        """The arm's scenario with the trial's overrides (and a patient's values)."""
        from abm.scenario import Scenario

        path = self.scenario_paths.get(arm.name)
        try:
            return Scenario.load(path or arm.scenario, sets=self.arm_sets(arm), values=values or {})
        except ParameterError as e:
            raise ParameterError(f"{self.source}: arm {arm.name!r}: {e}") from None

    def patients(self) -> list[Patient]:
        return draw(self.cohort, self.doc.trial.patients, self.doc.trial.seed)

    def comparisons(self) -> list[tuple[str, str]]:
        if self.doc.trial.compare:
            return [(a, b) for a, b in self.doc.trial.compare]
        names = [a.name for a in self.arms]
        return [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]

    def to_json(self) -> str:
        d = self.doc.model_dump(mode="json")
        d["quick"] = self.quick
        return json.dumps(d, sort_keys=True)

    def fingerprint(self) -> str:
        """A hash of what defines the runs (a resumed trial must match it)."""
        d = json.loads(self.to_json())
        d.pop("clinical", None)  # the clinic's figures and the calibration settings do not change the runs
        d.pop("calibration", None)
        d["trial"].pop("description", None)
        d["trial"].pop("compare", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def find_trial(name: str | Path) -> Path:
    """A trial file from a path, or a shipped name (``atkins1999_hd_il2`` in scenarios/trials)."""
    p = Path(name)
    for c in (p, TRIAL_DIR / p, TRIAL_DIR / p.with_suffix(".toml")):
        if c.is_file():
            return c.resolve()
    shipped = sorted(f.stem for f in TRIAL_DIR.glob("*.toml")) if TRIAL_DIR.is_dir() else []
    raise ParameterError(f"{name}: trial file not found (shipped trials: {', '.join(shipped) or 'none'})")
