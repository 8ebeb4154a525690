"""Sweep definitions (TOML) and their designs: full grid, Latin hypercube, Sobol and Morris (through SALib).

A sweep file::

    [sweep]
    name = "il2_dose_response"
    description = "..."
    base = "high_dose_il2"              # a shipped scenario name or a path relative to this file
    sets = ["lattice.nx=100", "run.days=28"]   # overrides applied to the base before the varied parameters
    design = "grid"                     # grid | lhs | sobol | morris
    samples = 64                        # lhs: points; sobol: base sample N (N*(k+2) points); morris: trajectories
    morris_levels = 4
    replicates = 8                      # runs (seeds) per design point
    seed = 20261126                     # root seed: every run's seed is spawned from it (numpy SeedSequence)
    metrics = ["best_response", ...]    # summary keys kept in sweep.h5 (default: all)
    keep_trajectories = false           # write DIR/runs/<run_id>.h5 for every run
    analysis = "dose_response"          # dose_response | combination | sensitivity (default from the design)

    [parameters."regimen.dose_scale.il2"]   # any key of the parameter tree or of the regimen
    values = [0, 0.01, 0.1, 1]              # grid: explicit values ...
    # low = 0.01, high = 2, num = 8, scale = "log"   # ... or a range (grid: num levels; lhs/sobol/morris: bounds)

    [quick]                             # --quick: a few-minute version; any [sweep] key, plus parameters
    replicates = 2
    sets = ["lattice.nx=60"]            # appended to sweep.sets
    [quick.parameters."regimen.dose_scale.il2"]
    values = [0, 0.1, 1]
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from abm.kernels import portable as pm
from abm.params import ParameterError, read_toml

DESIGNS = ("grid", "lhs", "sobol", "morris")
ANALYSES = ("dose_response", "combination", "sensitivity", "none")
SWEEP_KEYS = (
    "name",
    "description",
    "base",
    "sets",
    "design",
    "samples",
    "morris_levels",
    "replicates",
    "seed",
    "metrics",
    "keep_trajectories",
    "analysis",
    "max_retries",
)
PARAM_KEYS = ("values", "low", "high", "num", "scale")
SEED_MASK = 2**63 - 1  # seeds are stored as int64 in HDF5 and accepted by the parameter tree (< 2**64)


@dataclass(frozen=True)
class ParamSpec:
    """One varied parameter: explicit values, or a range [low, high] (linear or log) with ``num`` grid levels."""

    key: str
    values: tuple[float, ...] | None = None
    low: float | None = None
    high: float | None = None
    num: int | None = None
    scale: str = "linear"

    def grid_values(self) -> list[float]:
        if self.values is not None:
            return list(self.values)
        if self.scale == "log":
            return [float(v) for v in np.geomspace(self.low, self.high, self.num)]
        return [float(v) for v in np.linspace(self.low, self.high, self.num)]

    def bounds(self) -> tuple[float, float]:
        if self.low is not None:
            return float(self.low), float(self.high)
        return float(min(self.values)), float(max(self.values))

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        """Map samples in [0, 1] onto the range (uniform in log space when ``scale = "log"``)."""
        lo, hi = self.bounds()
        if self.scale == "log":
            return pm.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        return lo + u * (hi - lo)


@dataclass
class SweepSpec:
    """A validated sweep definition (see the module docstring for the TOML layout)."""

    name: str
    base: str
    parameters: list[ParamSpec]
    description: str = ""
    sets: list[str] = field(default_factory=list)
    design: str = "grid"
    samples: int = 16
    morris_levels: int = 4
    replicates: int = 1
    seed: int = 0
    metrics: list[str] | None = None
    keep_trajectories: bool = False
    analysis: str = ""
    max_retries: int = 2
    source: str = "<sweep>"
    base_dir: str = "."
    quick: bool = False
    text: str = ""

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path, quick: bool = False) -> SweepSpec:
        """Read and validate a sweep TOML; ``quick`` applies its ``[quick]`` table."""
        p = Path(path)
        if not p.is_file():
            raise ParameterError(f"{p}: sweep file not found")
        raw = read_toml(p)
        spec = cls.from_dict(raw, source=str(p), quick=quick, base_dir=str(p.resolve().parent))
        spec.text = p.read_text()
        return spec

    @classmethod
    def from_dict(
        cls, raw: dict[str, Any], source: str = "<sweep>", quick: bool = False, base_dir: str = "."
    ) -> SweepSpec:
        raw = copy.deepcopy(raw)
        _check(raw, ("sweep", "parameters", "quick"), source, "the top level")
        sw = raw.get("sweep")
        if not isinstance(sw, dict):
            raise ParameterError(f"{source}: missing table [sweep] (with at least 'name' and 'base')")
        _check(sw, SWEEP_KEYS, source, "sweep")
        params = raw.get("parameters", {})
        if quick:
            q = raw.get("quick")
            if not isinstance(q, dict):
                raise ParameterError(f"{source}: --quick asks for a [quick] table, and this file has none")
            _check(q, SWEEP_KEYS + ("parameters",), source, "quick")
            q = dict(q)
            qparams = q.pop("parameters", {})
            qsets = q.pop("sets", [])
            sw = {**sw, **q}
            sw["sets"] = list(sw.get("sets", [])) + list(qsets)
            params = {**params, **qparams}
        for k in ("name", "base"):
            if not isinstance(sw.get(k), str) or not sw[k]:
                raise ParameterError(f"{source}: key 'sweep.{k}' is required and must be a non-empty string")
        design = sw.get("design", "grid")
        if design not in DESIGNS:
            raise ParameterError(f"{source}: key 'sweep.design' = {design!r}; allowed: {', '.join(DESIGNS)}")
        for k, lo in (("replicates", 1), ("samples", 1), ("morris_levels", 2), ("max_retries", 0)):
            v = sw.get(k)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < lo or v > 10**6):
                raise ParameterError(f"{source}: key 'sweep.{k}' = {v!r}; allowed: an integer in [{lo}, 1000000]")
        seed = sw.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
            raise ParameterError(f"{source}: key 'sweep.seed' = {seed!r}; allowed: an integer in [0, 2**63)")
        analysis = sw.get("analysis", "")
        if analysis and analysis not in ANALYSES:
            raise ParameterError(f"{source}: key 'sweep.analysis' = {analysis!r}; allowed: {', '.join(ANALYSES)}")
        sets = sw.get("sets", [])
        if not isinstance(sets, list) or not all(isinstance(s, str) and "=" in s for s in sets):
            raise ParameterError(f"{source}: key 'sweep.sets' must be a list of 'key=value' strings")
        metrics = sw.get("metrics")
        if metrics is not None and (not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics)):
            raise ParameterError(f"{source}: key 'sweep.metrics' must be a list of summary key names")
        if not isinstance(params, dict) or not params:
            raise ParameterError(f"{source}: table [parameters] must name at least one parameter to vary")
        pspecs = [_param(k, v, source, design) for k, v in params.items()]
        spec = cls(
            name=sw["name"],
            base=sw["base"],
            parameters=pspecs,
            description=sw.get("description", ""),
            sets=list(sets),
            design=design,
            samples=sw.get("samples", 16),
            morris_levels=sw.get("morris_levels", 4),
            replicates=sw.get("replicates", 1),
            seed=seed,
            metrics=metrics,
            keep_trajectories=bool(sw.get("keep_trajectories", False)),
            analysis=analysis or _default_analysis(design, len(pspecs)),
            max_retries=sw.get("max_retries", 2),
            source=source,
            base_dir=base_dir,
            quick=quick,
        )
        spec.validate_scenario()
        return spec

    def validate_scenario(self) -> None:
        """Check, before any work starts, that the base scenario loads and every varied key is accepted."""
        sc = self.base_scenario()
        for p in self.parameters:
            lo, hi = p.bounds()
            for v in (lo, hi):
                try:
                    sc.with_overrides([format_set(p.key, v)])
                except ParameterError as e:
                    raise ParameterError(f"{self.source}: key 'parameters.\"{p.key}\"': {e}") from None

    def base_scenario(self):
        from abm.scenario import Scenario, find_scenario

        try:
            path = find_scenario(self.base, relative_to=Path(self.base_dir))
            return Scenario.load(path, sets=self.sets)
        except ParameterError as e:
            raise ParameterError(f"{self.source}: key 'sweep.base'/'sweep.sets': {e}") from None

    def base_path(self) -> str:
        from abm.scenario import find_scenario

        return str(find_scenario(self.base, relative_to=Path(self.base_dir)))

    def to_json(self) -> str:
        d = {k: getattr(self, k) for k in (*SWEEP_KEYS, "quick")}
        d["parameters"] = [
            p.__dict__ | {"values": list(p.values) if p.values is not None else None} for p in self.parameters
        ]
        return json.dumps(d, sort_keys=True)

    def fingerprint(self) -> str:
        """A hash of what defines the runs (a resumed sweep must match it)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.parameters]


def _check(d: dict[str, Any], allowed: tuple[str, ...], source: str, where: str) -> None:
    for k in d:
        if k not in allowed:
            near = difflib.get_close_matches(k, allowed, n=2, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
            raise ParameterError(f"{source}: unknown key '{k}' in {where}{hint} Valid keys: {', '.join(allowed)}.")


def _param(key: str, v: Any, source: str, design: str) -> ParamSpec:
    where = f'parameters."{key}"'
    if not isinstance(v, dict):
        raise ParameterError(f"{source}: key '{where}' must be a table with 'values' or 'low'/'high'")
    _check(v, PARAM_KEYS, source, where)
    scale = v.get("scale", "linear")
    if scale not in ("linear", "log"):
        raise ParameterError(f"{source}: key '{where}.scale' = {scale!r}; allowed: linear, log")
    if "values" in v:
        vals = v["values"]
        if (
            not isinstance(vals, list)
            or not vals
            or not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in vals)
        ):
            raise ParameterError(f"{source}: key '{where}.values' must be a non-empty list of finite numbers")
        if design != "grid" and "low" not in v:
            if len(vals) < 2:
                raise ParameterError(f"{source}: key '{where}': design {design!r} needs a range (low, high)")
        return ParamSpec(key, values=tuple(float(x) for x in vals), scale=scale)
    if "low" not in v or "high" not in v:
        raise ParameterError(f"{source}: key '{where}' needs 'values' or both 'low' and 'high'")
    lo, hi = v["low"], v["high"]
    if not all(isinstance(x, int | float) and math.isfinite(x) for x in (lo, hi)) or not lo < hi:
        raise ParameterError(f"{source}: key '{where}': need finite low < high, got low={lo!r}, high={hi!r}")
    if scale == "log" and lo <= 0:
        raise ParameterError(f"{source}: key '{where}': a log scale needs low > 0, got {lo!r}")
    num = v.get("num")
    if design == "grid" and (not isinstance(num, int) or num < 1 or num > 10**5):
        raise ParameterError(f"{source}: key '{where}.num' = {num!r}; a grid range needs an integer in [1, 100000]")
    return ParamSpec(key, low=float(lo), high=float(hi), num=num, scale=scale)


def _default_analysis(design: str, k: int) -> str:
    if design in ("sobol", "morris", "lhs"):
        return "sensitivity"
    return "dose_response" if k == 1 else "combination" if k == 2 else "none"


def format_set(key: str, value: float) -> str:
    """A ``key=value`` override; an integer-valued parameter keeps its integer form."""
    v = float(value)
    return f"{key}={int(v)}" if v.is_integer() and abs(v) < 2**53 else f"{key}={v!r}"


# ---------------------------------------------------------------------------------------------- designs
def design_points(spec: SweepSpec) -> np.ndarray:
    """The design's points, shaped (n_points, n_parameters), in a fixed order that depends only on the spec."""
    k = len(spec.parameters)
    if spec.design == "grid":
        return np.array(list(itertools.product(*[p.grid_values() for p in spec.parameters])), dtype=float)
    if spec.design == "lhs":
        rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(2**31 - 1,)))
        n = spec.samples
        u = (np.argsort(rng.random((k, n)), axis=1).T + rng.random((n, k))) / n
        return np.column_stack([p.from_unit(u[:, j]) for j, p in enumerate(spec.parameters)])
    problem = salib_problem(spec)
    if spec.design == "sobol":
        from SALib.sample import sobol

        u = sobol.sample(
            problem,
            spec.samples,
            calc_second_order=False,
            scramble=True,
            seed=int(np.random.SeedSequence(spec.seed).generate_state(1)[0]),
        )
    else:
        from SALib.sample import morris

        u = morris.sample(
            problem,
            spec.samples,
            num_levels=spec.morris_levels,
            seed=int(np.random.SeedSequence(spec.seed).generate_state(1)[0]),
        )
    return np.column_stack([p.from_unit(u[:, j]) for j, p in enumerate(spec.parameters)])


def salib_problem(spec: SweepSpec) -> dict[str, Any]:
    """The SALib problem in unit coordinates (log-scaled parameters are sampled uniformly in log space)."""
    k = len(spec.parameters)
    return {"num_vars": k, "names": spec.keys, "bounds": [[0.0, 1.0]] * k}


def run_seed(root: int, point: int, replicate: int) -> int:
    """The seed of one run, spawned from the root seed by (point, replicate) alone: independent of worker count,
    completion order and the rest of the design."""
    ss = np.random.SeedSequence(root, spawn_key=(point, replicate))
    return int(ss.generate_state(1, np.uint64)[0]) & SEED_MASK


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: what a worker needs, as plain picklable data."""

    run_id: str
    point: int
    replicate: int
    seed: int
    values: tuple[float, ...]
    base: str
    sets: tuple[str, ...]
    metrics: tuple[str, ...] | None = None
    out: str | None = None


def expand(spec: SweepSpec, out_dir: str | Path | None = None) -> list[RunSpec]:
    """Every run of the sweep: design points x replicates, with ids ``p<point>r<replicate>`` and spawned seeds."""
    pts = design_points(spec)
    base = spec.base_path()
    runs = []
    width = max(4, len(str(len(pts))))
    for i, row in enumerate(pts):
        sets = tuple(spec.sets) + tuple(format_set(p.key, v) for p, v in zip(spec.parameters, row, strict=True))
        for r in range(spec.replicates):
            rid = f"p{i:0{width}d}r{r:03d}"
            out = str(Path(out_dir) / "runs" / f"{rid}.h5") if (spec.keep_trajectories and out_dir) else None
            runs.append(
                RunSpec(
                    rid,
                    i,
                    r,
                    run_seed(spec.seed, i, r),
                    tuple(float(x) for x in row),
                    base,
                    sets,
                    tuple(spec.metrics) if spec.metrics else None,
                    out,
                )
            )
    return runs
