"""Calibration of a cohort's distribution to one trial's read-outs: plausible patients, then selection by weights.

**Method** (the "virtual population" approach of QSP: Allen et al. 2016, CPT Pharmacometrics Syst Pharmacol 5:140,
plausible patients then selection; Schmidt et al. 2013, BMC Bioinformatics 14:221, prevalence weighting):

1. *Plausible patients.* A pool of ``calibration.pool`` virtual patients is simulated once on the trial's arm, each
   fitted parameter drawn from a broad *proposal* distribution ``g`` (``calibration.proposal``), every other
   parameter from the trial's cohort. The pool is an ordinary trial run (``DIR/pool``, resumable, on any executor).
2. *Selection by weights.* A candidate cohort ``q_theta`` (the trial's cohort with the fitted hyperparameters
   ``theta``, e.g. the median and CV of the antigenicity) gives pool patient ``i`` the importance weight
   ``w_i = prod_k q_theta,k(x_ik) / g_k(x_ik)``; the cohort's predicted CR and PR rates are the weighted means of the
   pool's outcomes. No new simulation is needed for any ``theta``.
3. *Fit.* ``theta`` maximises the likelihood of the clinic's counts: multinomial (CR, PR, neither) when CR and ORR
   are both targets, binomial otherwise (``scipy.optimize.minimize``, L-BFGS-B from a grid of starts, inside the
   bounds of ``calibration.parameters``).
4. *Intervals.* ``calibration.bootstrap`` refits, each on the pool resampled with replacement (the Monte Carlo error
   of a finite pool) and on clinic counts redrawn from the observed proportions (the trial's sampling error);
   95% percentile intervals of ``theta`` and of the fitted rates. The effective sample size of the weights (Kish,
   ``(sum w)^2 / sum w^2``) says how many pool patients carry the fit; below ``calibration.min_ess`` it warns: the
   fitted cohort then lies where the pool has few patients, and a larger or better-centred proposal is needed.

*Why not ABC-SMC (pyabc).* Every ABC particle needs a fresh simulated cohort: one SMC generation of 100 particles
on a 255-patient trial is 25,500 patient runs (days on this 2-core machine), and the fit needs several
generations. Reweighting one pool costs one cohort's worth of runs, reuses it for any ``theta`` (and for any other
trial with the same regimen), and its Monte Carlo error enters the intervals through the bootstrap. Its limit: the
fitted distribution must stay where the proposal has patients (the ESS check), and only independent parameters
(no copula correlation, not relative to another) can be fitted this way.

Outputs in ``DIR``: ``pool/`` (the pool's trial store), ``calibration.json`` (everything), ``fitted_cohort.toml``
(the trial's cohort with the fitted values and a ``[cohort.fit]`` record; a trial uses it with
``trial.cohort = "path/to/fitted_cohort.toml"``), ``calibration.md`` (the report) and ``calibration.png``.
"""

from __future__ import annotations

import itertools
import json
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from abm.errors import ParameterError
from abm.trial.analysis import proportion, read_trial
from abm.trial.cohort import CohortSpec, ParamDist
from abm.trial.spec import ENDPOINT_LABELS, CalibrationSpec, FitParam, TrialDoc, TrialSpec

CONF = 0.95


# ------------------------------------------------------------------------------------------------ the pool
def pool_spec(spec: TrialSpec) -> TrialSpec:
    """The plausible-patient pool: the calibration arm alone, the fitted parameters drawn from the proposal."""
    cal = _cal(spec)
    doc = spec.doc.model_copy(deep=True)
    arm = cal.arm or doc.arms[0].name
    cohort = doc.cohort.model_copy(deep=True)
    params = dict(cohort.parameters)
    for fp in cal.parameters:
        base = params[fp.key]
        prop = cal.proposal[fp.key]
        lo_b, hi_b = base.support
        lo_p, hi_p = prop.support
        if lo_p > lo_b + 1e-12 or hi_p < hi_b - 1e-12:
            raise ParameterError(
                f'{spec.source}: calibration.proposal."{fp.key}": its support [{lo_p:g}, {hi_p:g}] must cover the '
                f"cohort's [{lo_b:g}, {hi_b:g}] (a fitted cohort cannot put patients where the pool has none)"
            )
        if prop.model_dump(exclude={"source"}) != base.model_dump(exclude={"source"}):
            params[fp.key] = prop  # (a proposal that is the cohort's own distribution leaves the pool's draws alone)
    cohort = CohortSpec.model_validate(
        {**cohort.model_dump(), "parameters": {k: v.model_dump() for k, v in params.items()}}
    )
    data = doc.model_dump()
    data["cohort"] = cohort.model_dump()
    data["arms"] = [a.model_dump() for a in doc.arms if a.name == arm]
    data["clinical"] = [c.model_dump() for c in doc.clinical if c.arm == arm]
    data["trial"] |= {"name": f"{doc.trial.name}_pool", "patients": cal.pool, "seed": cal.seed, "compare": []}
    data["calibration"] = None
    pool = TrialSpec(
        TrialDoc.model_validate(data),
        source=spec.source,
        base_dir=spec.base_dir,
        text=spec.text,
        quick=spec.quick,
        cohort_source=f"{spec.cohort_source} (fitted parameters from calibration.proposal)",
    )
    pool.validate_scenarios()
    return pool


def _cal(spec: TrialSpec) -> CalibrationSpec:
    if spec.doc.calibration is None:
        raise ParameterError(f"{spec.source}: no [calibration] table: say what to fit (see docs/trials.md)")
    return spec.doc.calibration


# ------------------------------------------------------------------------------------------------ the fit
@dataclass
class Pool:
    """The pool's fitted-parameter values (n, k), outcomes, and the proposal's log density at each patient."""

    x: np.ndarray
    cr: np.ndarray
    pr: np.ndarray
    dlt: np.ndarray
    log_g: np.ndarray


@dataclass
class Targets:
    """The clinic's counts: multinomial (CR, PR, other) terms and binomial terms (endpoint, k, n)."""

    multinomial: list[tuple[int, int, int]]
    binomial: list[tuple[str, int, int]]


def targets_of(spec: TrialSpec) -> Targets:
    cal = _cal(spec)
    arm = cal.arm or spec.arms[0].name
    rows = [c for c in spec.doc.clinical if c.arm == arm and (not cal.population or c.population == cal.population)]
    multi, bino = [], []
    for pop in sorted({c.population for c in rows}):
        got = {c.endpoint: c for c in rows if c.population == pop and c.endpoint in cal.targets}
        if "orr" in got and "cr_rate" in got and got["orr"].n == got["cr_rate"].n:
            n = got["orr"].n
            multi.append((got["cr_rate"].k, got["orr"].k - got["cr_rate"].k, n))
            rest = [e for e in got if e not in ("orr", "cr_rate")]
        else:
            rest = list(got)
        bino += [(e, got[e].k, got[e].n) for e in rest]
    return Targets(multi, bino)


def _dist(base: ParamDist, fps: list[FitParam], theta: np.ndarray) -> ParamDist:
    d = base.model_dump()
    for fp, v in zip(fps, theta):
        d[fp.field] = float(v)
    return ParamDist.model_validate(d)


class Fitter:
    """Weights, predicted rates and the likelihood of the clinic's counts as functions of ``theta``."""

    def __init__(self, cohort: CohortSpec, fps: list[FitParam], pool: Pool, targets: Targets) -> None:
        self.cohort = cohort
        self.fps = fps
        self.pool = pool
        self.targets = targets
        self.keys = sorted({fp.key for fp in fps})

    # theta <-> the optimiser's coordinates (log scale where asked)
    def to_u(self, theta: np.ndarray) -> np.ndarray:
        return np.array([math.log(t) if fp.scale == "log" else t for fp, t in zip(self.fps, theta)])

    def from_u(self, u: np.ndarray) -> np.ndarray:
        return np.array([math.exp(v) if fp.scale == "log" else v for fp, v in zip(self.fps, u)])

    def bounds_u(self) -> list[tuple[float, float]]:
        return [(math.log(fp.low), math.log(fp.high)) if fp.scale == "log" else (fp.low, fp.high) for fp in self.fps]

    def log_weights(self, theta: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        p = self.pool
        lw = -p.log_g.copy() if idx is None else -p.log_g[idx]
        for j, key in enumerate(self.keys):
            fps = [fp for fp in self.fps if fp.key == key]
            vals = np.array([t for fp, t in zip(self.fps, theta) if fp.key == key])
            try:
                d = _dist(self.cohort.parameters[key], fps, vals)
            except Exception:  # noqa: BLE001 - a theta the distribution refuses (e.g. a median outside a truncation)
                return np.full(len(lw), -np.inf)
            x = p.x[:, j] if idx is None else p.x[idx, j]
            lw = lw + d.logpdf(x)
        return lw

    def rates(self, theta: np.ndarray, idx: np.ndarray | None = None) -> dict[str, float]:
        lw = self.log_weights(theta, idx)
        if not np.isfinite(lw).any():
            return {"cr_rate": math.nan, "pr_rate": math.nan, "orr": math.nan, "dlt_rate": math.nan, "ess": 0.0}
        w = np.exp(lw - lw[np.isfinite(lw)].max())
        w[~np.isfinite(w)] = 0.0
        w /= w.sum()
        sel = slice(None) if idx is None else idx
        cr = float(w @ self.pool.cr[sel])
        pr = float(w @ self.pool.pr[sel])
        return {
            "cr_rate": cr,
            "pr_rate": pr,
            "orr": cr + pr,
            "dlt_rate": float(w @ self.pool.dlt[sel]),
            "ess": float(1.0 / np.sum(w * w)),
        }

    def nll(self, theta: np.ndarray, targets: Targets | None = None, idx: np.ndarray | None = None) -> float:
        t = targets or self.targets
        r = self.rates(theta, idx)
        if not math.isfinite(r["orr"]):
            return 1e12
        eps = 1e-9
        out = 0.0
        for k_cr, k_pr, n in t.multinomial:
            pc, pp = min(max(r["cr_rate"], eps), 1 - eps), min(max(r["pr_rate"], eps), 1 - eps)
            po = min(max(1.0 - r["orr"], eps), 1 - eps)
            out -= k_cr * math.log(pc) + k_pr * math.log(pp) + (n - k_cr - k_pr) * math.log(po)
        for ep, k, n in t.binomial:
            p = min(max(r[ep], eps), 1 - eps)
            out -= k * math.log(p) + (n - k) * math.log1p(-p)
        return out

    def fit(
        self,
        targets: Targets | None = None,
        idx: np.ndarray | None = None,
        starts: int = 5,
        x0: np.ndarray | None = None,
    ) -> np.ndarray:
        """The maximum-likelihood theta: L-BFGS-B from the best points of a grid of ``starts`` per parameter, or
        from ``x0`` alone (a bootstrap refit starts at the estimate)."""
        from scipy import optimize

        b = self.bounds_u()

        def obj(u):
            return self.nll(self.from_u(u), targets, idx)

        if x0 is not None:
            pts = [tuple(self.to_u(np.asarray(x0, dtype=float)))]
        else:
            grids = [np.linspace(lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo), starts) for lo, hi in b]
            pts = list(itertools.product(*grids))
        vals = [obj(np.array(u)) for u in pts]
        order = np.argsort(vals)[:3]
        best_u, best = np.array(pts[order[0]]), vals[order[0]]
        for i in order:
            r = optimize.minimize(obj, np.array(pts[i]), method="L-BFGS-B", bounds=b)
            if r.fun < best:
                best_u, best = r.x, float(r.fun)
        return self.from_u(best_u)


def read_pool(pool_dir: Path, spec: TrialSpec) -> Pool:
    """The pool's finished patients: fitted-parameter values, outcomes and the proposal's log density."""
    cal = _cal(spec)
    data = read_trial(pool_dir)
    df = data["patients"]
    df = df[df["status"] == "done"]
    if df.empty:
        raise ParameterError(f"{pool_dir}: the pool has no finished patients")
    keys = sorted({fp.key for fp in cal.parameters})
    x = np.column_stack([df[k].to_numpy(float) for k in keys])
    log_g = np.zeros(len(df))
    for j, k in enumerate(keys):
        log_g += cal.proposal[k].logpdf(x[:, j])
    br = df["best_response"].astype(str).to_numpy()
    return Pool(
        x,
        (br == "CR").astype(float),
        (br == "PR").astype(float),
        df["dose_limiting_toxicity"].astype(float).to_numpy(),
        log_g,
    )


def _resample_targets(t: Targets, rng: np.random.Generator) -> Targets:
    multi = []
    for k_cr, k_pr, n in t.multinomial:
        c = rng.multinomial(n, [k_cr / n, k_pr / n, 1 - (k_cr + k_pr) / n])
        multi.append((int(c[0]), int(c[1]), n))
    return Targets(multi, [(e, int(rng.binomial(n, k / n)), n) for e, k, n in t.binomial])


def fit_pool(spec: TrialSpec, pool: Pool) -> dict[str, Any]:
    """The maximum-likelihood theta, the fitted rates, the ESS, and bootstrap percentile intervals."""
    cal = _cal(spec)
    targets = targets_of(spec)
    f = Fitter(spec.cohort, list(cal.parameters), pool, targets)
    theta = f.fit()
    r = f.rates(theta)
    rng = np.random.default_rng(np.random.SeedSequence(cal.seed, spawn_key=(7,)))
    boot_theta, boot_rates = [], []
    n = len(pool.cr)
    for _ in range(cal.bootstrap):
        idx = rng.integers(0, n, n)
        tb = _resample_targets(targets, rng)
        th = f.fit(tb, idx, x0=theta)
        boot_theta.append(th)
        boot_rates.append(f.rates(th))  # the fitted cohort's rates on the whole pool
    out: dict[str, Any] = {"theta": {fp.name: float(v) for fp, v in zip(cal.parameters, theta)}, "rates": r}
    q = [100 * (1 - CONF) / 2, 100 * (1 + CONF) / 2]
    if boot_theta:
        bt = np.array(boot_theta)
        out["theta_ci"] = {
            fp.name: [float(v) for v in np.percentile(bt[:, j], q)] for j, fp in enumerate(cal.parameters)
        }
        out["rates_ci"] = {
            k: [float(v) for v in np.nanpercentile([b[k] for b in boot_rates], q)]
            for k in ("orr", "cr_rate", "pr_rate", "dlt_rate")
        }
        out["bootstrap_theta"] = bt.tolist()
        at_edge = {
            fp.name: float(
                np.mean(
                    (np.abs(bt[:, j] - fp.low) < 1e-6 * max(1, abs(fp.low)))
                    | (np.abs(bt[:, j] - fp.high) < 1e-6 * max(1, abs(fp.high)))
                )
            )
            for j, fp in enumerate(cal.parameters)
        }
        out["bootstrap_at_bounds"] = at_edge
    out["nll"] = f.nll(theta)
    out["targets"] = {"multinomial": targets.multinomial, "binomial": targets.binomial}
    out["pool_n"] = int(n)
    out["pool_outcomes"] = {"CR": int(pool.cr.sum()), "PR": int(pool.pr.sum()), "DLT": int(pool.dlt.sum())}
    out["_fitter"] = f
    return out


def fit_checks(spec: TrialSpec, fit: dict[str, Any]) -> list[str]:
    """Warnings about a fit that does not do its job: an estimate on a bound of its box (the clinic's figures lie
    beyond what the parameter gives there), and fitted rates outside the clinic's exact 95% interval."""
    from scipy import stats

    out = []
    for fp in _cal(spec).parameters:
        v = fit["theta"][fp.name]
        for side, b in (("lower", fp.low), ("upper", fp.high)):
            if abs(v - b) <= 1e-6 * max(1.0, abs(b)):
                out.append(
                    f"{fp.name} = {v:.4g} is on the {side} bound of its fit ({b:g}): the clinic's figures lie beyond "
                    "what this parameter can give inside its box"
                )
    t = fit["targets"]
    checks = [("cr_rate", cr, n) for cr, _, n in t["multinomial"]]
    checks += [("orr", cr + pr, n) for cr, pr, n in t["multinomial"]]
    checks += [(e, k, n) for e, k, n in t["binomial"]]
    for e, k, n in checks:
        lo, hi = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=CONF, method="exact")
        got = fit["rates"][e]
        if not lo <= got <= hi:
            out.append(
                f"the fitted cohort's {ENDPOINT_LABELS[e]} is {100 * got:.1f}%, outside the clinic's {k}/{n} "
                f"({100 * lo:.1f}-{100 * hi:.1f}%): the fit does not reproduce the trial"
            )
    return out


def fitted_cohort(spec: TrialSpec, theta: dict[str, float], record: dict[str, Any]) -> CohortSpec:
    cal = _cal(spec)
    data = spec.cohort.model_dump()
    for fp in cal.parameters:
        d = data["parameters"][fp.key]
        d[fp.field] = theta[fp.name]
        d["source"] = f"fitted by abm calibrate to {spec.name} ({record.get('fitted_to', '')}); was: {d['source']}"
    data["name"] = f"{spec.cohort.name}_fitted_{spec.name}"
    data["description"] = f"{spec.cohort.description} -- fitted to {spec.name}"
    data["fit"] = record
    return CohortSpec.model_validate(data)


# ------------------------------------------------------------------------------------------------ the command
def calibrate(
    spec: TrialSpec | str | Path,
    out: str | Path,
    *,
    quick: bool = False,
    resume: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    dask_local: int | None = None,
    client: Any = None,
    progress: bool = True,
    cohort_out: str | Path | None = None,
    command: str = "",
    run_fn: Any = None,
) -> dict[str, Any]:
    """Simulate the pool (``out/pool``; ``resume`` finishes an interrupted one), fit, and write the fitted cohort,
    ``calibration.json``, ``calibration.md`` and ``calibration.png`` into ``out``. Returns the fit. ``run_fn``
    replaces the patient run (:func:`abm.trial.runner.execute_patient`; tests pass a made-up one)."""
    from abm.trial.runner import execute_patient, run_trial

    if not isinstance(spec, TrialSpec):
        spec = TrialSpec.load(spec, quick=quick)
    cal = _cal(spec)
    out = Path(out)
    pspec = pool_spec(spec)
    pool_dir = out / "pool"
    if (pool_dir / "sweep.sqlite").exists() and not resume:
        raise ParameterError(f"{out}: a calibration is already there; pass --resume to reuse or finish its pool")
    out.mkdir(parents=True, exist_ok=True)
    res = run_trial(
        pspec,
        pool_dir,
        workers=workers,
        scheduler=scheduler,
        dask_local=dask_local,
        client=client,
        resume=resume and (pool_dir / "sweep.sqlite").exists(),
        progress=progress,
        run_fn=run_fn or execute_patient,
    )
    pool = read_pool(pool_dir, spec)
    fit = fit_pool(spec, pool)
    fitter = fit.pop("_fitter")
    t = fit["targets"]
    fitted_to = "; ".join(
        [f"CR {a}/{n}, ORR {a + b}/{n}" for a, b, n in t["multinomial"]]
        + [f"{ENDPOINT_LABELS[e]} {k}/{n}" for e, k, n in t["binomial"]]
    )
    warnings = []
    if fit["rates"]["ess"] < cal.min_ess:
        warnings.append(
            f"the fitted weights' effective sample size is {fit['rates']['ess']:.1f} pool patients "
            f"(< {cal.min_ess:g}): "
            "the fitted cohort lies where the pool has few patients; enlarge the pool or centre the proposal there"
        )
    for name, frac in fit.get("bootstrap_at_bounds", {}).items():
        if frac > 0.05:
            warnings.append(
                f"{name}: {100 * frac:.0f}% of the bootstrap refits sit at a bound of the fit: the data do "
                "not bound it there (its interval is open at that end)"
            )
    warnings += fit_checks(spec, fit)
    if res.n_failed:
        warnings.append(f"{res.n_failed} pool patients failed and were left out")
    if len(pool.cr) < 100:
        warnings.append(f"a pool of {len(pool.cr)} patients: a pipeline check, not a calibration")
    record = {
        "method": "plausible patients (pool from the proposal) then selection by importance weights; ML fit; "
        "bootstrap of pool and clinic counts",
        "trial": spec.name,
        "fitted_to": fitted_to,
        "pool": int(len(pool.cr)),
        "ess": round(float(fit["rates"]["ess"]), 2),
        "quick": bool(spec.quick),
        "command": command,
    }
    for fp in cal.parameters:
        record[fp.name] = fit["theta"][fp.name]
        if "theta_ci" in fit:
            record[f"{fp.name} 95% interval"] = fit["theta_ci"][fp.name]
    cohort = fitted_cohort(spec, fit["theta"], record)
    paths = {"cohort": Path(cohort_out) if cohort_out else out / "fitted_cohort.toml"}
    paths["cohort"].parent.mkdir(parents=True, exist_ok=True)
    paths["cohort"].write_text(
        f"# Fitted by: {command or 'abm calibrate'}\n# {fit['pool_n']} pool patients; see calibration.md beside the "
        "pool for the fit and its intervals\n" + cohort.to_toml()
    )
    fit |= {
        "warnings": warnings,
        "record": record,
        "trial_source": spec.source,
        "pool_dir": str(pool_dir),
        "pool_elapsed_s": res.elapsed_s,
        "cohort_path": str(paths["cohort"]),
    }
    p = out / "calibration.json"
    p.write_text(json.dumps(fit, indent=1, default=float))
    paths["json"] = p
    paths["figure"] = plot_calibration(spec, fit, fitter, out / "calibration.png")
    paths["report"] = out / "calibration.md"
    paths["report"].write_text(calibration_report(spec, fit))
    for w in warnings:
        print(f"abm calibrate: warning: {w}", file=sys.stderr)
    fit["paths"] = {k: str(v) for k, v in paths.items()}
    return fit


def _fmt_ci(v: float, ci: list[float] | None, pct: bool = False) -> str:
    f = (lambda x: f"{100 * x:.1f}%") if pct else (lambda x: f"{x:.3g}")
    return f"{f(v)}" + (f" [{f(ci[0])}, {f(ci[1])}]" if ci else "")


def calibration_report(spec: TrialSpec, fit: dict[str, Any]) -> str:
    cal = _cal(spec)
    lines = [f"# Calibration of the cohort to {spec.name}", ""]
    if fit.get("record", {}).get("command"):
        lines += ["```", fit["record"]["command"], "```", ""]
    lines += [
        f"- method: {fit['record']['method']} ({cal.bootstrap} bootstrap refits; 95% percentile intervals)",
        f"- pool: {fit['pool_n']} patients from the proposal ({fit['pool_outcomes']['CR']} CR, "
        f"{fit['pool_outcomes']['PR']} PR, {fit['pool_outcomes']['DLT']} DLT), simulated in "
        f"{fit['pool_elapsed_s']:.0f} s",
        f"- fitted to: {fit['record']['fitted_to']}",
        f"- effective sample size of the fitted weights: {fit['rates']['ess']:.1f} patients",
        f"- fitted cohort: `{fit['cohort_path']}`",
        "",
    ]
    if fit["warnings"]:
        lines += ["**Warnings**", ""] + [f"- {w}" for w in fit["warnings"]] + [""]
    lines += ["| fitted | estimate [95%] | search range |", "| --- | --- | --- |"]
    for fp in cal.parameters:
        ci = fit.get("theta_ci", {}).get(fp.name)
        lines.append(f"| `{fp.name}` | {_fmt_ci(fit['theta'][fp.name], ci)} | [{fp.low:g}, {fp.high:g}] ({fp.scale}) |")
    lines += ["", "| read-out | clinic [exact 95%] | fitted cohort [95% bootstrap] |", "| --- | --- | --- |"]
    obs = _observed(fit)
    for ep in ("orr", "cr_rate", "pr_rate", "dlt_rate"):
        o = obs.get(ep)
        os_ = f"{o['k']}/{o['n']} ({_fmt_ci(o['rate'], [o['lo'], o['hi']], True)})" if o else "-"
        lines.append(
            f"| {ENDPOINT_LABELS[ep]} | {os_} | {_fmt_ci(fit['rates'][ep], fit.get('rates_ci', {}).get(ep), True)} |"
        )
    return "\n".join(lines) + "\n"


def _observed(fit: dict[str, Any]) -> dict[str, dict[str, float]]:
    obs: dict[str, dict[str, float]] = {}
    for k_cr, k_pr, n in fit["targets"]["multinomial"]:
        obs["cr_rate"] = proportion(k_cr, n)
        obs["pr_rate"] = proportion(k_pr, n)
        obs["orr"] = proportion(k_cr + k_pr, n)
    for e, k, n in fit["targets"]["binomial"]:
        obs[e] = proportion(k, n)
    return obs


def plot_calibration(spec: TrialSpec, fit: dict[str, Any], fitter: Fitter, path: Path) -> Path:
    """Left: the clinic's rates and the fitted cohort's, with intervals. Right (two fitted parameters): the deviance
    over the search range, the estimate and the bootstrap refits."""
    from abm.viz.style import OKABE_ITO, use_agg

    use_agg()
    import matplotlib.pyplot as plt

    cal = _cal(spec)
    two = len(cal.parameters) == 2
    fig, axs = plt.subplots(1, 2 if two else 1, figsize=(11 if two else 5.5, 4.2), squeeze=False)
    ax = axs[0, 0]
    obs = _observed(fit)
    eps = [e for e in ("orr", "cr_rate", "pr_rate", "dlt_rate") if e in obs or e in ("orr", "cr_rate")]
    for i, ep in enumerate(eps):
        if ep in obs:
            o = obs[ep]
            ax.errorbar(
                i - 0.12,
                100 * o["rate"],
                yerr=[[100 * (o["rate"] - o["lo"])], [100 * (o["hi"] - o["rate"])]],
                fmt="s",
                color=OKABE_ITO["vermillion"],
                mfc="white",
                capsize=3,
                label="clinic (exact 95%)" if i == 0 else None,
            )
        r = fit["rates"][ep]
        ci = fit.get("rates_ci", {}).get(ep)
        yerr = [[100 * (r - ci[0])], [100 * (ci[1] - r)]] if ci else None
        ax.errorbar(
            i + 0.12,
            100 * r,
            yerr=yerr,
            fmt="o",
            color=OKABE_ITO["blue"],
            capsize=3,
            label="fitted cohort (95% bootstrap)" if i == 0 else None,
        )
    ax.set_xticks(range(len(eps)))
    ax.set_xticklabels([ENDPOINT_LABELS[e] for e in eps])
    ax.set_ylabel("patients (%)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(f"{spec.name}: fit (pool {fit['pool_n']}, ESS {fit['rates']['ess']:.0f})", fontsize=9, loc="left")
    if two:
        ax = axs[0, 1]
        b = fitter.bounds_u()
        g0, g1 = (np.linspace(lo, hi, 41) for lo, hi in b)
        z = np.array([[fitter.nll(fitter.from_u(np.array([u0, u1]))) for u0 in g0] for u1 in g1])
        z = 2 * (z - np.nanmin(z))
        xs = np.array([fitter.from_u(np.array([u, b[1][0]]))[0] for u in g0])
        ys = np.array([fitter.from_u(np.array([b[0][0], u]))[1] for u in g1])
        cs = ax.contourf(xs, ys, np.minimum(z, 30), levels=[0, 2, 6, 10, 20, 30], cmap="Blues_r")
        ax.contour(xs, ys, z, levels=[5.99], colors="black", linewidths=0.8)
        fig.colorbar(cs, ax=ax, label="deviance (2 x NLL above its minimum)")
        bt = np.array(fit.get("bootstrap_theta", []))
        if len(bt):
            ax.plot(bt[:, 0], bt[:, 1], ".", ms=2, color=OKABE_ITO["orange"], alpha=0.6, label="bootstrap refits")
        th = [fit["theta"][fp.name] for fp in cal.parameters]
        ax.plot(*th, "*", color=OKABE_ITO["vermillion"], ms=11, mec="black", label="estimate")
        for fp, setter in zip(cal.parameters, (ax.set_xscale, ax.set_yscale)):
            if fp.scale == "log":
                setter("log")
        ax.set_xlabel(cal.parameters[0].name)
        ax.set_ylabel(cal.parameters[1].name)
        ax.legend(fontsize=7, frameon=False, loc="upper right")
        ax.set_title("deviance; black: 95% joint region (chi2_2), pool error not included", fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def command_line(argv: list[str]) -> str:
    return "abm " + " ".join(shlex.quote(a) for a in argv)


__all__ = ["Fitter", "calibrate", "fit_pool", "pool_spec", "read_pool", "targets_of"]
