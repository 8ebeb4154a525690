"""Virtual patients and cohorts: a cohort is a documented distribution over patient-level parameters; a virtual
patient is one draw from it; N patients are drawn from one seed (docs/model.md, brief s9).

A cohort file (``scenarios/trials/cohorts/*.toml``)::

    [cohort]
    name = "default"
    description = "..."
    [cohort.parameters."patient.antigenicity"]       # any key of the scenario (normally of the patient group)
    dist = "lognormal"                                # lognormal | normal | logitnormal | uniform | fixed
    median = 1.0
    cv = 0.5
    low = 0.05                                        # truncation (lognormal, normal); support (logitnormal, uniform)
    high = 20.0
    source = "estimate: ..."                          # required: a citation, or "estimate" and why
    [cohort.parameters."patient.toxicity_dlt_threshold"]
    relative_to = "patient.toxicity_hold_threshold"   # the draw multiplies that parameter's drawn value
    ...
    [[cohort.correlations]]                           # Gaussian copula: correlation of the normal scores
    a = "patient.weight_kg"
    b = "patient.surface_area_m2"
    rho = 0.9
    source = "..."

Distributions (``low``/``high`` truncate; the density is renormalised inside them):

- ``lognormal``: ``median`` and ``cv`` (the coefficient of variation of the distribution itself:
  sigma = sqrt(log(1 + cv^2)));
- ``normal``: ``mean`` and ``sd``;
- ``logitnormal``: on the open interval (low, high) (default (0, 1)): logit((x - low) / (high - low)) is normal
  with its centre at the logit of ``median`` and standard deviation ``sd``;
- ``uniform``: on [low, high];
- ``fixed``: ``value``.

**Draws.** Patient ``i``'s value of parameter ``key`` comes from its own normal score
``z = N(0, 1)`` drawn from ``SeedSequence(seed, spawn_key=(i, key_id(key)))`` (``key_id``: the first 4 bytes of the
key's SHA-256), mixed by the Cholesky factor of the correlation matrix, and sent through the marginal's quantile
function: ``x = F^-1(Phi(z))``. So patient ``i`` is the same whatever the cohort size (adding patients keeps the
first ones), adding or removing an uncorrelated parameter leaves the others' draws unchanged, and a fitted cohort
that changes one marginal gives every patient the same quantile of it (common random numbers). The run seed of
patient ``i`` is ``SeedSequence(seed, spawn_key=(i, SEED_STREAM))``; every arm of a trial gives patient ``i`` the same
parameters and the same seed (a paired design).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator
from scipy import special, stats

from abm.errors import ParameterError
from abm.kernels import portable as pm
from abm.params.core import Group, Layer, P, build, read_toml

DISTS = ("lognormal", "normal", "logitnormal", "uniform", "fixed")
SEED_STREAM = 2**32 - 1  # spawn_key (i, SEED_STREAM): patient i's run seed (key ids are < 2**32 - 1)
SEED_MASK = 2**63 - 1
COHORT_DIR = Path(__file__).resolve().parents[2] / "scenarios" / "trials" / "cohorts"

_KEYS = {
    "lognormal": {"median", "cv"},
    "normal": {"mean", "sd"},
    "logitnormal": {"median", "sd"},
    "uniform": {"low", "high"},
    "fixed": {"value"},
}
_OPTIONAL = {"lognormal": {"low", "high"}, "normal": {"low", "high"}, "logitnormal": {"low", "high"}}


class ParamDist(Group):
    """The distribution of one patient parameter across a cohort."""

    dist: Literal["lognormal", "normal", "logitnormal", "uniform", "fixed"] = P("lognormal", "-", "distribution")
    median: float | None = P(None, "-", "median (lognormal, logitnormal)")
    cv: float | None = P(None, "-", "coefficient of variation (lognormal)", gt=0, le=20)
    mean: float | None = P(None, "-", "mean (normal)")
    sd: float | None = P(None, "-", "standard deviation (normal; logitnormal: of the logit)", gt=0)
    low: float | None = P(None, "-", "lower truncation bound (uniform, logitnormal: support)")
    high: float | None = P(None, "-", "upper truncation bound (uniform, logitnormal: support)")
    value: float | None = P(None, "-", "the value (fixed)")
    relative_to: str = P("", "-", "the draw multiplies this other parameter's drawn value")
    source: str = P("", "-", "where the distribution comes from: a citation, or 'estimate: why'")

    @model_validator(mode="after")
    def _consistent(self) -> ParamDist:
        given = {k for k in ("median", "cv", "mean", "sd", "low", "high", "value") if getattr(self, k) is not None}
        need = _KEYS[self.dist]
        missing = need - given
        if missing:
            raise ValueError(f"dist {self.dist!r} needs {', '.join(sorted(missing))}")
        extra = given - need - _OPTIONAL.get(self.dist, set())
        if extra:
            raise ValueError(
                f"dist {self.dist!r} takes {', '.join(sorted(need | _OPTIONAL.get(self.dist, set())))}; "
                f"{', '.join(sorted(extra))} does not apply"
            )
        if not self.source.strip():
            raise ValueError("source is required: a citation, or 'estimate: ...' saying why")
        lo = -math.inf if self.low is None else self.low
        hi = math.inf if self.high is None else self.high
        if not lo < hi:
            raise ValueError(f"need low < high (got low={self.low}, high={self.high})")
        if self.dist == "lognormal":
            if self.median is None or self.median <= 0:
                raise ValueError(f"a lognormal median must be > 0 (got {self.median})")
            if hi <= 0:
                raise ValueError("a lognormal's truncation must reach above 0")
        if self.dist == "logitnormal":
            a, b = (0.0 if self.low is None else self.low), (1.0 if self.high is None else self.high)
            if not a < (self.median or 0) < b:
                raise ValueError(f"a logitnormal median must lie inside ({a}, {b}) (got {self.median})")
        if self.dist in ("lognormal", "normal"):
            centre = self.median if self.dist == "lognormal" else self.mean
            if centre is not None and not lo <= centre <= hi:
                raise ValueError(f"the centre {centre} lies outside the truncation [{self.low}, {self.high}]")
        return self

    # ------------------------------------------------------------------------------------------ the marginal
    # lognormal, normal and logitnormal are a normal distribution of y = log x, x, logit((x - a) / (b - a)): the
    # density, the truncation window and the quantiles are computed on that scale (scipy.special's ndtr and ndtri;
    # tests/test_cohort.py checks them against scipy.stats)
    def _normal(self) -> tuple[float, float]:
        """(mean, SD) of the normal variable y."""
        if self.dist == "lognormal":
            return math.log(self.median), math.sqrt(math.log1p(self.cv**2))
        if self.dist == "normal":
            return float(self.mean), float(self.sd)
        a, b = self.support
        return float(special.logit((self.median - a) / (b - a))), float(self.sd)

    def _to_y(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.dist == "lognormal":
                return pm.log(x)
            if self.dist == "logitnormal":
                a, b = self.support
                return special.logit(np.clip((x - a) / (b - a), 0.0, 1.0))
        return x

    def _from_y(self, y: np.ndarray) -> np.ndarray:
        if self.dist == "lognormal":
            return pm.exp(y)
        if self.dist == "logitnormal":
            a, b = self.support
            return a + (b - a) * special.expit(y)
        return y

    @property
    def support(self) -> tuple[float, float]:
        if self.dist == "logitnormal":
            return (0.0 if self.low is None else self.low), (1.0 if self.high is None else self.high)
        if self.dist == "fixed":
            return float(self.value), float(self.value)
        lo = -math.inf if self.low is None else self.low
        hi = math.inf if self.high is None else self.high
        if self.dist == "lognormal":
            lo = max(lo, 0.0)
        return lo, hi

    def _window(self) -> tuple[float, float]:
        """(F(low), F(high)) of the untruncated distribution: the truncation window in probability."""
        if self.dist in ("uniform", "logitnormal"):
            return 0.0, 1.0
        mu, sd = self._normal()
        lo, hi = self.support
        y = self._to_y(np.array([lo, hi], dtype=float))
        f = special.ndtr((y - mu) / sd)
        return (
            float(f[0]) if lo > -math.inf and not (self.dist == "lognormal" and lo <= 0) else 0.0,
            float(f[1]) if math.isfinite(hi) else 1.0,
        )

    def ppf(self, u: np.ndarray) -> np.ndarray:
        """Quantiles of the (truncated) marginal at probabilities ``u`` in (0, 1)."""
        u = np.asarray(u, dtype=float)
        if self.dist == "fixed":
            return np.full(u.shape, float(self.value))
        lo, hi = self.support
        if self.dist == "uniform":
            return lo + u * (hi - lo)
        f_lo, f_hi = self._window()
        mu, sd = self._normal()
        x = self._from_y(mu + sd * special.ndtri(f_lo + u * (f_hi - f_lo)))
        return np.clip(x, lo, hi)

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        """Log density of the (truncated) marginal at ``x`` (-inf outside its support)."""
        x = np.asarray(x, dtype=float)
        if self.dist == "fixed":
            return np.where(x == self.value, 0.0, -np.inf)
        lo, hi = self.support
        inside = (x >= lo) & (x <= hi)
        if self.dist == "uniform":
            return np.where(inside, -math.log(hi - lo), -np.inf)
        mu, sd = self._normal()
        f_lo, f_hi = self._window()
        with np.errstate(divide="ignore", invalid="ignore"):
            y = self._to_y(x)
            out = -0.5 * ((y - mu) / sd) ** 2 - math.log(sd * math.sqrt(2 * math.pi)) - math.log(f_hi - f_lo)
            if self.dist == "lognormal":
                out = out - y  # dy/dx = 1/x
            elif self.dist == "logitnormal":
                a, b = self.support
                s_ = (x - a) / (b - a)
                out = out - pm.log((b - a) * s_ * (1 - s_))
        return np.where(inside & np.isfinite(out), out, -np.inf)

    def centre(self) -> float:
        """The median of the marginal (its value at u = 1/2)."""
        return float(self.ppf(np.array([0.5]))[0])

    def describe(self) -> str:
        if self.dist == "lognormal":
            s = f"lognormal, median {self.median:g}, CV {self.cv:g}"
        elif self.dist == "normal":
            s = f"normal, mean {self.mean:g}, SD {self.sd:g}"
        elif self.dist == "logitnormal":
            a, b = self.support
            s = f"logit-normal on ({a:g}, {b:g}), median {self.median:g}, SD of logit {self.sd:g}"
        elif self.dist == "uniform":
            s = f"uniform on [{self.low:g}, {self.high:g}]"
        else:
            s = f"fixed at {self.value:g}"
        if self.dist in ("lognormal", "normal") and (self.low is not None or self.high is not None):
            s += f", truncated to [{'' if self.low is None else f'{self.low:g}'}, "
            s += f"{'' if self.high is None else f'{self.high:g}'}]"
        if self.relative_to:
            s += f", times {self.relative_to}"
        return s


class Correlation(Group):
    """Correlation of two parameters' normal scores (a Gaussian copula)."""

    a: str = P("", "-", "first parameter key")
    b: str = P("", "-", "second parameter key")
    rho: float = P(0.0, "-", "correlation of the normal scores", gt=-1, lt=1)
    source: str = P("", "-", "where the correlation comes from")


class CohortSpec(Group):
    """A cohort: one documented distribution per patient parameter, and the correlations between them."""

    name: str = P("cohort", "-", "short name")
    description: str = P("", "-", "one line saying what the cohort is")
    parameters: dict[str, ParamDist] = Field(default_factory=dict, description="parameter key -> distribution")
    correlations: list[Correlation] = Field(default_factory=list, description="Gaussian-copula correlations")
    fit: dict[str, Any] = Field(default_factory=dict, description="how a fitted cohort was fitted (abm calibrate)")

    @model_validator(mode="after")
    def _consistent(self) -> CohortSpec:
        keys = set(self.parameters)
        for k, d in self.parameters.items():
            if d.relative_to:
                if d.relative_to not in keys:
                    raise ValueError(f"parameters.{k!r}.relative_to = {d.relative_to!r} is not a cohort parameter")
                if self.parameters[d.relative_to].relative_to:
                    raise ValueError(f"parameters.{k!r}.relative_to: {d.relative_to!r} is itself relative")
        seen = set()
        for i, c in enumerate(self.correlations):
            for end in (c.a, c.b):
                if end not in keys:
                    raise ValueError(f"correlations.{i}: {end!r} is not a cohort parameter")
            if c.a == c.b:
                raise ValueError(f"correlations.{i}: a parameter cannot be correlated with itself")
            pair = frozenset((c.a, c.b))
            if pair in seen:
                raise ValueError(f"correlations.{i}: the pair {c.a}, {c.b} is given twice")
            seen.add(pair)
            if "fixed" in (self.parameters[c.a].dist, self.parameters[c.b].dist):
                raise ValueError(f"correlations.{i}: a fixed parameter cannot be correlated")
        if self.correlations:
            try:
                pm.cholesky(self.correlation_matrix())
            except np.linalg.LinAlgError:
                raise ValueError("the correlations do not form a positive-definite matrix") from None
        return self

    @property
    def keys(self) -> list[str]:
        return sorted(self.parameters)

    def correlation_matrix(self) -> np.ndarray:
        keys = self.keys
        r = np.eye(len(keys))
        for c in self.correlations:
            i, j = keys.index(c.a), keys.index(c.b)
            r[i, j] = r[j, i] = c.rho
        return r

    def centre(self) -> dict[str, float]:
        """Every parameter at its median (relative ones multiplied out): the cohort's typical patient."""
        raw = {k: d.centre() for k, d in self.parameters.items()}
        return {k: raw[k] * (raw[d.relative_to] if d.relative_to else 1.0) for k, d in self.parameters.items()}

    def describe_rows(self) -> list[dict[str, str]]:
        return [
            {"parameter": k, "distribution": self.parameters[k].describe(), "source": self.parameters[k].source}
            for k in self.keys
        ]

    def to_toml(self) -> str:
        """The cohort as a TOML file that :func:`load_cohort` reads back."""
        lines = ["[cohort]", f"name = {_q(self.name)}", f"description = {_q(self.description)}", ""]
        for k in self.keys:
            d = self.parameters[k]
            lines.append(f"[cohort.parameters.{_q(k)}]")
            lines.append(f"dist = {_q(d.dist)}")
            for f in ("median", "cv", "mean", "sd", "low", "high", "value"):
                v = getattr(d, f)
                if v is not None:
                    lines.append(f"{f} = {float(v)!r}")
            if d.relative_to:
                lines.append(f"relative_to = {_q(d.relative_to)}")
            lines.append(f"source = {_q(d.source)}")
            lines.append("")
        for c in self.correlations:
            lines += ["[[cohort.correlations]]", f"a = {_q(c.a)}", f"b = {_q(c.b)}", f"rho = {float(c.rho)!r}"]
            lines += [f"source = {_q(c.source)}", ""]
        if self.fit:
            lines.append("[cohort.fit]")
            for k, v in self.fit.items():
                lines.append(f"{_q(k)} = {_toml_value(v)}")
            lines.append("")
        return "\n".join(lines)


def _q(s: str) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_q(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return _q(str(v))


class CohortDoc(Group):
    cohort: CohortSpec = Field(default_factory=CohortSpec)


# ------------------------------------------------------------------------------------------------ loading
def find_cohort(name: str, relative_to: Path | None = None) -> Path:
    """A cohort file from a path (relative to ``relative_to`` first) or a shipped name (``default``)."""
    p = Path(name)
    cands = []
    if relative_to is not None and not p.is_absolute():
        cands += [relative_to / p, relative_to / p.with_suffix(".toml")]
    cands += [p, COHORT_DIR / p, COHORT_DIR / p.with_suffix(".toml")]
    for c in cands:
        if c.is_file():
            return c.resolve()
    shipped = sorted(f.stem for f in COHORT_DIR.glob("*.toml")) if COHORT_DIR.is_dir() else []
    raise ParameterError(f"{name}: cohort file not found (shipped cohorts: {', '.join(shipped) or 'none'})")


def cohort_layers(path: str | Path) -> list[Layer]:
    path = Path(path)
    return [Layer(str(path), read_toml(path), "file")]


def load_cohort(path: str | Path) -> CohortSpec:
    """Read and validate a cohort file; errors name the file and the key."""
    path = find_cohort(str(path))
    return build(CohortDoc, cohort_layers(path), str(path)).cohort


# ------------------------------------------------------------------------------------------------ drawing
def key_id(key: str) -> int:
    """A stable 32-bit id of a parameter key (its stream in the draws)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % SEED_STREAM


def normal_scores(keys: Sequence[str], seed: int, patients: Sequence[int]) -> np.ndarray:
    """Independent standard-normal scores, one per (patient, key), each from its own spawned stream: 53 bits of
    ``SeedSequence(seed, spawn_key=(patient, key_id(key)))`` as a uniform in (0, 1), through the normal quantile."""
    bits = np.empty((len(patients), len(keys)), dtype=np.uint64)
    ids = [key_id(k) for k in keys]
    for a, i in enumerate(patients):
        for b, kid in enumerate(ids):
            bits[a, b] = np.random.SeedSequence(int(seed), spawn_key=(int(i), kid)).generate_state(1, np.uint64)[0]
    u = ((bits >> np.uint64(11)).astype(float) + 0.5) * 2.0**-53
    return stats.norm.ppf(u)


def patient_seed(seed: int, patient: int) -> int:
    """The run seed of patient ``patient`` (shared by every arm)."""
    ss = np.random.SeedSequence(int(seed), spawn_key=(int(patient), SEED_STREAM))
    return int(ss.generate_state(1, np.uint64)[0]) & SEED_MASK


@dataclass(frozen=True)
class Patient:
    """One virtual patient: its index in the cohort, its run seed and its parameter values."""

    index: int
    seed: int
    values: Mapping[str, float]


def draw(cohort: CohortSpec, n: int, seed: int, start: int = 0) -> list[Patient]:
    """Patients ``start .. start + n - 1`` of the cohort drawn from ``seed``."""
    keys = cohort.keys
    idx = list(range(int(start), int(start) + int(n)))
    if not keys:
        return [Patient(i, patient_seed(seed, i), {}) for i in idx]
    z = normal_scores(keys, seed, idx)
    if cohort.correlations:
        z = pm.matmul_t(z, pm.cholesky(cohort.correlation_matrix()))
    u = np.clip(stats.norm.cdf(z), 1e-15, 1 - 1e-15)
    raw = {k: cohort.parameters[k].ppf(u[:, j]) for j, k in enumerate(keys)}
    out = []
    for a, i in enumerate(idx):
        vals = {}
        for k in keys:
            d = cohort.parameters[k]
            v = float(raw[k][a]) * (float(raw[d.relative_to][a]) if d.relative_to else 1.0)
            vals[k] = v
        out.append(Patient(i, patient_seed(seed, i), vals))
    return out


def raw_values(cohort: CohortSpec, key: str, values: Mapping[str, float]) -> float:
    """A patient's draw of ``key`` before any ``relative_to`` multiplication."""
    d = cohort.parameters[key]
    v = float(values[key])
    return v / float(values[d.relative_to]) if d.relative_to else v


def check_cohort(cohort: CohortSpec, scenario: Any, source: str) -> None:
    """Every cohort key at its median and at its finite bounds (the others at their medians, relative parameters
    multiplied out) is accepted by ``scenario`` (a Scenario). Raises ParameterError naming the source and key.

    Three validations when all is well (every key at its median, at its lower bound, at its upper bound); only when
    one fails is each key probed alone, to name it."""
    raw0 = {k: d.centre() for k, d in cohort.parameters.items()}

    def bounds(d: ParamDist) -> list[float]:
        return [b for b in d.support if math.isfinite(b) and d.dist in ("lognormal", "normal", "uniform")]

    def values(raw: dict[str, float]) -> dict[str, float]:
        return {q: raw[q] * (raw[e.relative_to] if e.relative_to else 1.0) for q, e in cohort.parameters.items()}

    def ok(raw: dict[str, float]) -> bool:
        try:
            scenario.with_overrides(values=values(raw))
        except ParameterError:
            return False
        return True

    lows = {k: (bounds(d) or [raw0[k]])[0] for k, d in cohort.parameters.items()}
    highs = {k: (bounds(d) or [raw0[k]])[-1] for k, d in cohort.parameters.items()}
    if ok(raw0) and ok({**raw0, **lows}) and ok({**raw0, **highs}):
        return
    for k, d in cohort.parameters.items():
        for v in [raw0[k], *bounds(d)]:
            try:
                scenario.with_overrides(values=values({**raw0, k: v}))
            except ParameterError as e:
                raise ParameterError(f"{source}: key 'cohort.parameters.\"{k}\"' (draw {v:g}): {e}") from None
    raise ParameterError(f"{source}: the cohort's parameters at their bounds together are refused by the scenario")
