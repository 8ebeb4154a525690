"""Sweep analyses: dose-response (response, tumour burden and toxicity vs dose in the clinic's units; Emax/Hill fits
with ED50 and TD50, the therapeutic index TD50/ED50, and the MTD), combination grids (Bliss-independence and
highest-single-agent excess) and global sensitivity (Sobol indices, Morris mu*/sigma, or rank correlations for a
Latin hypercube).

Every function takes the dictionary :func:`abm.sweep.store.read_sweep` returns; :func:`analyze` writes the tables
(CSV), figures (PNG) and a short report (Markdown) of the analysis the sweep names (``sweep.analysis``).

Conventions: a *responder* is a run whose best response is CR or PR (RECIST-like, on the lesion diameter); a
*DLT* is a run whose course stopped at the dose-limiting toxicity threshold. Intervals are 95%:

- proportions (response, CR, PD and DLT rates): exact Clopper-Pearson (``scipy.stats.binomtest``), so 0/4 gives
  [0, 0.60], never [0, 0];
- the tumour AUC relative to untreated (a ratio of two positive means): a t interval on the log scale by the delta
  method, including the control's own spread (it cannot go negative);
- means of non-negative quantities (peak toxicity, doses held and given): BCa bootstrap (``scipy.stats.bootstrap``),
  which stays within the range the data can reach;
- ED50 and TD50: profile likelihood of a binomial Emax (Hill) model; the therapeutic index TD50/ED50: the ratio of
  the two 97.5% profile intervals (Bonferroni, so at least 95% jointly); the burden ED50: least squares
  (``scipy.optimize.curve_fit``), t interval on log ED50;
- combination excesses: BCa bootstrap over replicates within cells for the burden effect, and Jeffreys-prior
  posterior draws (Beta(k + 1/2, n - k + 1/2) per cell) for the responder rate.

A sweep whose levels (or cells) have fewer replicates than give a 95% Clopper-Pearson half-width under 0.25 for a
proportion at its widest (17 runs) is flagged as too small to read: the warning is printed and written into the
report.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from abm.params import ParameterError

Z95 = 1.959963984540054
CONF = 0.95
DLT_LIMIT = 0.33  # MTD: the highest dose whose dose-limiting rate stays below this (docs/model.md, brief s4)
N_BOOT = 2000
RESPONDERS = ("CR", "PR")
MAX_HALF_WIDTH = 0.25  # a sweep is readable when a proportion's 95% interval is narrower than +-0.25 at worst
HILL_SLOPE_BOUNDS = (0.2, 50.0)  # Hill coefficient range searched by the fits (50: a step between two levels)
ED_GRID_DECADES = 2.0  # the profile of ED50/TD50 is searched this many decades beyond the tested doses
PROFILE_POINTS = 241  # grid points of log ED50 for the profile likelihood
TI_REFERENCE = (
    "TI = TD50/ED50 (Muller PY, Milton MN. The determination and interpretation of the therapeutic index in drug "
    "development. Nat Rev Drug Discov 2012;11:751-761); toxic endpoint: the dose-limiting-toxicity rate"
)


# ------------------------------------------------------------------------------------------------ statistics
def wilson(k: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n."""
    if n <= 0:
        return math.nan, math.nan
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def proportion_ci(k: int, n: int, conf: float = CONF) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a proportion k/n, from ``scipy.stats.binomtest``."""
    from scipy import stats

    if n <= 0:
        return math.nan, math.nan
    ci = stats.binomtest(int(round(k)), int(n)).proportion_ci(confidence_level=conf, method="exact")
    return float(ci.low), float(ci.high)


def min_replicates(max_half_width: float = MAX_HALF_WIDTH, conf: float = CONF) -> int:
    """The fewest runs per level for which every Clopper-Pearson interval (any k of n) is narrower than
    +-``max_half_width`` (17 for +-0.25 at 95%)."""
    for n in range(1, 2000):
        widest = max(proportion_ci(k, n, conf)[1] - proportion_ci(k, n, conf)[0] for k in range(n // 2, n // 2 + 2))
        if widest / 2 < max_half_width:
            return n
    raise ValueError(f"no n below 2000 reaches a half-width of {max_half_width}")


def mean_ci(x: np.ndarray) -> tuple[float, float, float]:
    """Mean and t-based 95% interval (nan interval for fewer than 2 values)."""
    from scipy import stats

    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if len(x) < 2:
        return m, math.nan, math.nan
    h = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return m, m - h, m + h


def bca_mean_ci(x: np.ndarray, conf: float = CONF, seed: int = 0) -> tuple[float, float, float]:
    """Mean and BCa bootstrap interval (``scipy.stats.bootstrap``); the interval stays within the data's range, so
    a non-negative quantity never gets a negative bound. All values equal: the interval is that value; fewer than
    2 values: nan."""
    from scipy import stats

    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if len(x) < 2:
        return m, math.nan, math.nan
    if np.ptp(x) == 0:
        return m, m, m
    r = stats.bootstrap((x,), np.mean, confidence_level=conf, method="BCa", n_resamples=N_BOOT, rng=seed)
    lo, hi = float(r.confidence_interval.low), float(r.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):  # BCa undefined (e.g. one value differs): percentile
        r = stats.bootstrap((x,), np.mean, confidence_level=conf, method="percentile", n_resamples=N_BOOT, rng=seed)
        lo, hi = float(r.confidence_interval.low), float(r.confidence_interval.high)
    return m, lo, hi


def ratio_of_means_ci(x: np.ndarray, ref: np.ndarray | None, conf: float = CONF) -> tuple[float, float, float]:
    """mean(x) / mean(ref) with a t interval on the log scale (delta method: var log mean = s^2 / (n mean^2),
    summed over the two independent groups, Welch-Satterthwaite degrees of freedom). ``ref=None`` gives the
    reference group against its own mean (ratio 1, the interval its own uncertainty). Positive means only."""
    from scipy import stats

    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    groups = [x] if ref is None else [x, np.asarray(ref, dtype=float)[np.isfinite(ref)]]
    means = [float(g.mean()) if len(g) else math.nan for g in groups]
    r = means[0] / means[1] if ref is not None else 1.0
    if not all(m > 0 for m in means):
        return r, math.nan, math.nan
    comps = [(float(g.var(ddof=1)) / (len(g) * m * m), len(g) - 1) for g, m in zip(groups, means) if len(g) >= 2]
    if len(comps) != len(groups):
        return r, math.nan, math.nan
    var = sum(c for c, _ in comps)
    if var == 0:
        return r, r, r
    df = var**2 / sum(c * c / d for c, d in comps)
    h = float(stats.t.ppf(0.5 + conf / 2, df)) * math.sqrt(var)
    return r, r * math.exp(-h), r * math.exp(h)


def _responder(df) -> np.ndarray:
    return df["best_response"].isin(RESPONDERS).to_numpy(dtype=float)


def _need(df, cols: list[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ParameterError(f"{what} needs the summary metrics {', '.join(missing)}; add them to sweep.metrics")


# ------------------------------------------------------------------------------------------------ dose units
def dose_units(spec: dict[str, Any] | None, key: str) -> dict[str, Any]:
    """What the varied key means in the clinic's units, from the sweep's base scenario.

    For ``regimen.dose_scale.<drug>`` whose base regimen gives the drug at one dose (``regimen.doses`` blocks with
    ``.drug``, ``.dose``, ``.unit``), the dose per administration is scale x that dose: returns ``factor``,
    ``unit`` and an axis ``label``. With several doses (e.g. 10 and 5 MIU/m2 on different days) the scale stays the
    axis, labelled with the doses it multiplies; any other key is labelled with itself."""
    out: dict[str, Any] = {"key": key, "factor": None, "unit": "", "label": key, "label_dose": ""}
    drug = key.removeprefix("regimen.dose_scale.") if key.startswith("regimen.dose_scale.") else None
    if drug is None or not spec or not spec.get("base"):
        return out
    try:
        import abm

        sc = abm.Scenario.load(spec["base"])
    except Exception:  # noqa: BLE001 - a base moved or renamed since the sweep ran: keep the raw key
        return out
    blocks = [b for b in getattr(sc.regimen, "doses", []) if getattr(b, "drug", None) == drug]
    doses = sorted({(float(b.dose), str(b.unit)) for b in blocks})
    name = {"il2": "IL-2", "ifna": "IFN-alpha"}.get(drug, drug)
    route = sorted({str(getattr(b, "route", "")) for b in blocks} - {""})
    how = f" {'/'.join(route)}" if route else ""
    if len(doses) == 1:
        d, u = doses[0]
        out |= {"factor": d, "unit": u, "label": f"{name}{how} dose per administration ({u})"}
        out["label_dose"] = f"{d:,.6g} {u}"
    elif doses:
        lab = " / ".join(f"{d:,.6g} {u}" for d, u in doses)
        out |= {"label": f"{name} dose (x the label doses {lab})", "label_dose": lab}
    return out


# ------------------------------------------------------------------------------------------------ dose-response
def dose_response_table(data: dict[str, Any], key: str | None = None):
    """One row per dose level: responders (ORR), CR, PD and DLT rates with exact intervals; tumour AUC relative to
    the untreated level (dose 0; else the run's AUC relative to its initial burden) with a log-scale interval;
    peak toxicity score, doses held and given with BCa intervals; ``dose_clinical`` in the base regimen's unit
    where it has one (``t.attrs["units"]``)."""
    import pandas as pd

    df = data["summary"]
    key = key or data["parameters"][0]
    _need(
        df,
        [
            "best_response",
            "tumour_auc_cell_days",
            "toxicity_max",
            "doses_held",
            "doses_given",
            "dose_limiting_toxicity",
        ],
        "the dose-response analysis",
    )
    control = df[df[key] == 0]
    ctrl_auc = control["tumour_auc_cell_days"].to_numpy(dtype=float)
    have_ref = len(control) > 0 and float(np.nanmean(ctrl_auc)) > 0
    units = dose_units(data.get("spec"), key)
    rows = []
    for dose, g in df.groupby(key, sort=True):
        n = len(g)
        resp = _responder(g)
        cr = (g["best_response"] == "CR").to_numpy(dtype=float)
        pdr = (g["best_response"] == "PD").to_numpy(dtype=float)
        dlt = g["dose_limiting_toxicity"].to_numpy(dtype=float)
        row = {"dose": float(dose), "n": n}
        if units["factor"] is not None:
            row["dose_clinical"] = float(dose) * units["factor"]
        for name, x in (("orr", resp), ("cr_rate", cr), ("pd_rate", pdr), ("dlt_rate", dlt)):
            lo, hi = proportion_ci(x.sum(), n)
            row |= {name: x.mean(), f"{name}_k": int(x.sum()), f"{name}_lo": lo, f"{name}_hi": hi}
        auc = g["tumour_auc_cell_days"].to_numpy(dtype=float)
        if have_ref:
            m, lo, hi = ratio_of_means_ci(auc, None if dose == 0 else ctrl_auc)
        else:
            m, lo, hi = ratio_of_means_ci(g["tumour_auc_relative"].to_numpy(dtype=float), np.ones(2))
        row |= {"auc_rel_untreated": m, "auc_rel_untreated_lo": lo, "auc_rel_untreated_hi": hi}
        for name in ("toxicity_max", "doses_held", "doses_given"):
            m, lo, hi = bca_mean_ci(g[name].to_numpy(dtype=float))
            row |= {name: m, f"{name}_lo": lo, f"{name}_hi": hi}
        rows.append(row)
    t = pd.DataFrame(rows)
    t.attrs["key"] = key
    t.attrs["units"] = units
    t.attrs["auc_reference"] = "untreated (dose 0) mean AUC" if have_ref else "initial burden x days"
    return t


def mtd(table, limit: float = DLT_LIMIT) -> tuple[float, bool]:
    """The maximum tolerated dose: the highest level such that it and every lower level have a DLT rate below
    ``limit``. Returns (dose, reached): ``reached`` is False when even the top level stays below the limit."""
    t = table.sort_values("dose")
    ok = (t["dlt_rate"] < limit).to_numpy()
    if not ok[0]:
        return math.nan, True
    first_bad = np.argmin(ok) if not ok.all() else len(ok)
    return float(t["dose"].iloc[first_bad - 1]), bool(first_bad < len(ok))


# ------------------------------------------------------------------------------------------------ Emax / Hill
def hill(d: np.ndarray, e0: float, emax: float, ed50: float, h: float) -> np.ndarray:
    """The Emax (Hill) model e0 + (emax - e0) d^h / (d^h + ed50^h)."""
    d = np.asarray(d, dtype=float)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        frac = np.where(d > 0, 1.0 / (1.0 + (ed50 / np.where(d > 0, d, 1.0)) ** h), 0.0)
    return e0 + (emax - e0) * frac


def _binom_nll(p: np.ndarray, k: np.ndarray, n: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.sum(k * np.log(p) + (n - k) * np.log1p(-p)))


def fit_quantal_hill(doses, k, n, *, e0: float = 0.0, emax: float | None = None, conf: float = CONF) -> dict[str, Any]:
    """Maximum-likelihood Emax model of a quantal (responder / DLT) rate: k[i] of n[i] at doses[i] ~ Binomial(n,
    hill(d)). ``e0`` fixed; ``emax`` fixed (1 for a toxic endpoint: everyone has a DLT at a high enough dose) or
    free in [0, 1]. ED50 is the half-maximal dose; its ``conf`` interval is the profile likelihood (deviance <=
    chi2_1 quantile) over a grid ED_GRID_DECADES beyond the tested doses; a bound at the grid's edge is returned
    as 0 or inf (``lo_open`` / ``hi_open``): the data do not bound it there."""
    from scipy import optimize, stats

    d = np.asarray(doses, dtype=float)
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    pos = d[d > 0]
    out: dict[str, Any] = {"ed50": math.nan, "lo": math.nan, "hi": math.nan, "h": math.nan, "emax": math.nan}
    out |= {"e0": e0, "lo_open": False, "hi_open": False, "n_levels": int(len(d)), "converged": False}
    if len(pos) < 2 or n.sum() == 0:
        out["note"] = "fewer than two positive doses"
        return out
    lg_lo, lg_hi = (
        math.log(pos.min()) - ED_GRID_DECADES * math.log(10),
        math.log(pos.max()) + ED_GRID_DECADES * math.log(10),
    )
    lh_lo, lh_hi = (math.log(b) for b in HILL_SLOPE_BOUNDS)
    # the likelihood on a grid (log ED50 x log h x Emax), vectorised: its minimum over (h, Emax) at each ED50 is
    # the profile; the global minimum, refined by L-BFGS-B, the estimate
    lg = np.linspace(lg_lo, lg_hi, PROFILE_POINTS)
    lh = np.linspace(lh_lo, lh_hi, 41)
    em = np.linspace(0.0, 1.0, 101)[1:] if emax is None else np.array([float(emax)])
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        ld = np.log(np.where(d > 0, d, 1.0))
        z = (lg[:, None, None] - ld[None, None, :]) * np.exp(lh)[None, :, None]  # (ED50, h, dose)
        frac = np.where(d[None, None, :] > 0, 1.0 / (1.0 + np.exp(np.clip(z, -700, 700))), 0.0)
    p = e0 + (em[None, None, :, None] - e0) * frac[:, :, None, :]  # (ED50, h, Emax, dose)
    p = np.clip(p, 1e-12, 1 - 1e-12)
    nll_grid = -(k * np.log(p) + (n - k) * np.log1p(-p)).sum(axis=-1)
    prof = nll_grid.min(axis=(1, 2))
    i0, j0, m0 = np.unravel_index(int(np.argmin(nll_grid)), nll_grid.shape)

    def nll(theta):
        ed_, h_ = math.exp(theta[0]), math.exp(theta[1])
        em_ = float(np.clip(theta[2], 0.0, 1.0)) if emax is None else float(emax)
        return _binom_nll(hill(d, e0, em_, ed_, h_), k, n)

    x0 = [lg[i0], lh[j0], em[m0]]
    bounds = [(lg_lo, lg_hi), (lh_lo, lh_hi), (0.0, 1.0) if emax is None else (em[0], em[0])]
    r = optimize.minimize(nll, x0, method="L-BFGS-B", bounds=bounds)
    theta = r.x if r.fun <= nll_grid[i0, j0, m0] else np.array(x0)
    best_nll = min(float(r.fun), float(nll_grid[i0, j0, m0]))
    out |= {"ed50": math.exp(theta[0]), "h": math.exp(theta[1]), "emax": float(theta[2]), "converged": True}
    out["nll"] = best_nll
    crit = float(stats.chi2.ppf(conf, 1)) / 2.0
    idx = np.flatnonzero(prof - best_nll <= crit)
    if idx.size:
        out["lo"] = 0.0 if idx[0] == 0 else float(math.exp(lg[idx[0]]))
        out["hi"] = math.inf if idx[-1] == len(lg) - 1 else float(math.exp(lg[idx[-1]]))
        out["lo_open"], out["hi_open"] = bool(idx[0] == 0), bool(idx[-1] == len(lg) - 1)
    return out


def fit_burden_emax(doses, effect) -> dict[str, Any]:
    """Least-squares Emax model (``scipy.optimize.curve_fit``) of the per-run burden effect 1 - AUC/AUC_untreated
    against dose, e0 = 0: Emax, ED50 (half-maximal dose) with a t interval on log ED50 from the fit's covariance,
    and the Hill coefficient."""
    from scipy import optimize, stats

    d = np.asarray(doses, dtype=float)
    y = np.asarray(effect, dtype=float)
    ok = np.isfinite(y)
    d, y = d[ok], y[ok]
    out = {"emax": math.nan, "ed50": math.nan, "lo": math.nan, "hi": math.nan, "h": math.nan, "converged": False}
    pos = np.unique(d[d > 0])
    if len(pos) < 2 or len(y) < 4:  # (three parameters: the untreated level and two doses at least)
        return out

    def f(x, emax, lg, h):
        return hill(x, 0.0, emax, math.exp(lg), h)

    lg0 = math.log(float(np.median(pos)))
    try:
        popt, pcov = optimize.curve_fit(
            f,
            d,
            y,
            p0=[min(max(float(y.max()), 0.1), 0.99), lg0, 1.0],
            bounds=([0.0, math.log(pos.min()) - 5, HILL_SLOPE_BOUNDS[0]], [1.0, math.log(pos.max()) + 5, 20.0]),
            maxfev=20000,
        )
    except (RuntimeError, ValueError):
        return out
    se = math.sqrt(pcov[1, 1]) if np.all(np.isfinite(pcov)) else math.nan
    tq = float(stats.t.ppf(0.975, max(len(y) - 3, 1)))
    out |= {"emax": float(popt[0]), "ed50": math.exp(popt[1]), "h": float(popt[2]), "converged": True}
    if math.isfinite(se):
        with np.errstate(over="ignore"):  # an unidentified ED50 (se huge): the interval is (0, inf)
            out |= {"lo": float(np.exp(popt[1] - tq * se)), "hi": float(np.exp(popt[1] + tq * se))}
    return out


def burden_fit(data: dict[str, Any], table) -> dict[str, Any]:
    """:func:`fit_burden_emax` of the per-run burden effect 1 - AUC/mean AUC_untreated on the levels up to the
    plateau of the smallest mean AUC (:func:`rising_limb`); nan when the sweep has no untreated level."""
    key = table.attrs["key"]
    df = data["summary"]
    ctrl = df[df[key] == 0]["tumour_auc_cell_days"].to_numpy(float)
    if not len(ctrl) or not np.nanmean(ctrl) > 0:
        return {"ed50": math.nan, "lo": math.nan, "hi": math.nan, "emax": math.nan, "h": math.nan}
    limb, falls = rising_limb(table, "auc_rel_untreated", lower_is_better=True)
    top = float(limb["dose"].iloc[-1])
    sub = df[df[key] <= top]
    fit = fit_burden_emax(sub[key].to_numpy(float), 1 - sub["tumour_auc_cell_days"].to_numpy(float) / ctrl.mean())
    fit["falls_above"] = top if falls else math.nan
    return fit


def rising_limb(table, col: str = "orr", lower_is_better: bool = False):
    """The levels an Emax model describes: up to the last level whose ``col`` still lies within the 95% interval
    of the best level (the plateau), stopping at the first level outside it. Where the effect falls at higher
    doses (the response through AICD here), the fall is reported, not fitted. Returns (levels, falls)."""
    t = table.sort_values("dose").reset_index(drop=True)
    v = t[col].to_numpy(dtype=float)
    best = int(np.argmin(v) if lower_is_better else np.argmax(v))
    lo, hi = (t[f"{col}_lo"].iloc[best], t[f"{col}_hi"].iloc[best]) if f"{col}_lo" in t else (v[best], v[best])
    last = best
    for i in range(best + 1, len(t)):
        if not (lo <= v[i] <= hi):
            break
        last = i
    return t.iloc[: last + 1], bool(last < len(t) - 1)


def therapeutic_index(table, conf: float = CONF) -> dict[str, Any]:
    """ED50, TD50 and the therapeutic index TD50/ED50 (see :data:`TI_REFERENCE`), all in the table's dose unit.

    Efficacy: the responder rate, binomial Emax model (e0 = the untreated level's rate, Emax free) on the rising
    limb; ED50 is its half-maximal dose. Toxicity: the DLT rate, binomial Emax model with e0 = 0 and Emax = 1, so
    TD50 is the dose at which half the runs have a dose-limiting toxicity. Intervals: 97.5% profile likelihood for
    each, and for TI the ratio of their bounds (Bonferroni: at least 95% jointly). TD50 is *not estimable* when the
    DLT rate never reaches 50% (then only TI > TD50_lower / ED50_upper is reported), ED50 when no level responds.
    """
    t = table.sort_values("dose")
    n = t["n"].to_numpy(float)
    each = 1 - (1 - conf) / 2  # Bonferroni: two intervals
    out: dict[str, Any] = {"definition": TI_REFERENCE}
    ctrl = t[t["dose"] == 0]
    e0 = float(ctrl["orr"].iloc[0]) if len(ctrl) else 0.0
    limb, falls = rising_limb(t, "orr")
    eff_ok = (t["orr"] > e0).any()
    if eff_ok:
        ed = fit_quantal_hill(limb["dose"], limb["orr_k"], limb["n"], e0=e0, emax=None, conf=each)
    else:
        ed = {"ed50": math.nan, "lo": math.nan, "hi": math.nan, "note": "no level has more responders than untreated"}
    ed["falls_above"] = float(limb["dose"].iloc[-1]) if falls else math.nan
    tox = fit_quantal_hill(t["dose"], t["dlt_rate_k"], n, e0=0.0, emax=1.0, conf=each)
    tox["estimable"] = bool((t["dlt_rate"] >= 0.5).any())
    out["ed50"], out["td50"] = ed, tox
    if not eff_ok or not math.isfinite(ed.get("ed50", math.nan)):
        out |= {"ti": math.nan, "ti_lo": math.nan, "ti_hi": math.nan, "status": "not estimable: no ED50"}
    elif not tox["estimable"]:
        lo = tox["lo"] / ed["hi"] if ed["hi"] > 0 else math.nan
        out |= {"ti": math.nan, "ti_lo": lo, "ti_hi": math.inf}
        out["status"] = (
            f"not estimable: the DLT rate never reaches 50% (top dose {t['dose'].max():g}), so TD50 and TI have only "
            f"lower bounds (TI > {lo:.3g})"
        )
    else:
        lo = tox["lo"] / ed["hi"] if ed["hi"] > 0 else 0.0
        hi = tox["hi"] / ed["lo"] if ed["lo"] > 0 else math.inf
        out |= {"ti": tox["ed50"] / ed["ed50"], "ti_lo": lo, "ti_hi": hi, "status": "estimated"}
    return out


def small_sweep_warnings(counts, what: str = "level") -> list[str]:
    """Warnings for groups (dose levels, grid cells) with fewer runs than :func:`min_replicates` needs."""
    need = min_replicates()
    counts = np.asarray(counts, dtype=int)
    if counts.size == 0 or counts.min() >= need:
        return []
    lo, hi = proportion_ci(counts.min() // 2, counts.min())
    return [
        f"too small to read: {counts.min()} replicates per {what} (fewest); a response rate's 95% exact interval "
        f"is then up to +-{(hi - lo) / 2:.2f} wide (e.g. {counts.min() // 2}/{counts.min()}: [{lo:.2f}, {hi:.2f}]). "
        f"Rule: at least {need} runs per {what} keep every interval of a proportion under +-{MAX_HALF_WIDTH}. "
        f"Read rates and differences between {what}s as indications only, or run more replicates."
    ]


def _dose_axis(ax, doses: np.ndarray) -> tuple[np.ndarray, Any]:
    """Log dose axis with 0 drawn half a decade left of the lowest positive dose."""
    pos = doses[doses > 0]
    if len(pos) == 0:
        return doses, None
    zero_at = pos.min() / 10**0.5
    x = np.where(doses > 0, doses, zero_at)
    ax.set_xscale("log")
    return x, zero_at


def plot_dose_response(
    table, path: Path, label: str | None = None, title: str = "", ti: dict | None = None, burden: dict | None = None
) -> Path:
    """Four panels against dose in the clinic's units (log axis; the untreated level drawn at the left, marked 0):
    responder and CR rates with exact intervals and the Emax fit (ED50), tumour AUC relative to untreated,
    peak toxicity and doses held, and the DLT rate with its fit (TD50) and the MTD limit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from abm.viz.style import OKABE_ITO as OI

    t = table.sort_values("dose")
    units = t.attrs.get("units") or {}
    f = units.get("factor") or 1.0
    xlabel = label or units.get("label") or t.attrs.get("key", "dose")
    doses = t["dose"].to_numpy() * f
    ti = ti if ti is not None else therapeutic_index(t)
    fig, axs = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    m, reached = mtd(t)
    x, zero_at = _dose_axis(axs[0, 0], doses)
    for ax in axs.flat:
        if zero_at is not None:
            ax.set_xscale("log")
        if math.isfinite(m):
            ax.axvline(
                m * f, color=OI["vermillion"], ls="--", lw=1, label=f"MTD{'' if reached else ' (not reached: >= top)'}"
            )

    def band(ax, col, color, lab, marker="o"):
        ax.plot(x, t[col], marker + "-", color=color, label=lab)
        if f"{col}_lo" in t:
            ax.fill_between(x, t[f"{col}_lo"], t[f"{col}_hi"], color=color, alpha=0.2, lw=0)

    pos = doses[doses > 0]
    smooth = np.geomspace(pos.min(), pos.max(), 200) if len(pos) else np.array([])

    def fit_line(ax, fit, color, e0, emax, name):
        ed50 = fit.get("ed50", math.nan)
        if not math.isfinite(ed50) or not len(smooth):
            return
        lim = smooth[smooth <= fit["falls_above"] * f] if math.isfinite(fit.get("falls_above", math.nan)) else smooth
        ax.plot(lim, hill(lim / f, e0, emax, ed50, fit["h"]), color=color, lw=1.2, ls="-.", label=f"Emax fit: {name}")
        lo = max(fit["lo"] * f, smooth.min() / 10**0.25)  # an open bound is drawn to the axis edge
        hi = min(fit["hi"] * f, smooth.max() * 10**0.25)
        y = e0 + (emax - e0) / 2
        ax.errorbar(
            [ed50 * f], [y], xerr=[[ed50 * f - lo], [hi - ed50 * f]], fmt="D", color=color, ms=5, capsize=3, lw=1.2
        )

    ed, td = ti["ed50"], ti["td50"]
    band(axs[0, 0], "orr", OI["blue"], "responders (CR+PR)")
    band(axs[0, 0], "cr_rate", OI["reddish_purple"], "CR", marker="s")
    if math.isfinite(ed.get("ed50", math.nan)):
        fit_line(axs[0, 0], ed, OI["blue"], ed["e0"], ed["emax"], f"ED50 {_fmt_ci(ed, f)}")
    axs[0, 0].set_ylabel("fraction of runs [exact 95% CI]")
    axs[0, 0].set_ylim(-0.03, 1.03)
    axs[0, 0].set_title("response (RECIST best response)")
    band(axs[0, 1], "auc_rel_untreated", OI["orange"], "tumour AUC / untreated")
    if burden is not None and math.isfinite(burden.get("ed50", math.nan)) and len(smooth):
        top = burden.get("falls_above", math.nan)
        lim = smooth[smooth <= top * f] if math.isfinite(top) else smooth
        axs[0, 1].plot(
            lim,
            1 - hill(lim / f, 0.0, burden["emax"], burden["ed50"], burden["h"]),
            color=OI["orange"],
            ls="-.",
            lw=1.2,
            label=f"Emax fit: burden ED50 {_fmt_ci(burden, f)}",
        )
    axs[0, 1].set_ylabel("tumour AUC / untreated [95% CI, log-scale]")
    axs[0, 1].set_ylim(bottom=0)
    axs[0, 1].set_title("tumour burden")
    band(axs[1, 0], "toxicity_max", OI["reddish_purple"], "peak toxicity score [BCa 95% CI]")
    ax2 = axs[1, 0].twinx()
    ax2.plot(x, t["doses_held"], "s--", color="0.4", label="doses held (mean)")
    ax2.set_ylabel("doses held (mean)")
    ax2.set_ylim(0, max(1.0, float(np.nanmax(t["doses_held"])) * 1.1))
    axs[1, 0].set_ylabel("peak toxicity score (0-1+)")
    axs[1, 0].set_ylim(bottom=0)
    axs[1, 0].set_title("toxicity")
    band(axs[1, 1], "dlt_rate", OI["vermillion"], "dose-limiting toxicity")
    if td.get("estimable") and math.isfinite(td.get("ed50", math.nan)):
        fit_line(axs[1, 1], td | {"falls_above": math.nan}, OI["vermillion"], 0.0, 1.0, f"TD50 {_fmt_ci(td, f)}")
    axs[1, 1].axhline(DLT_LIMIT, color="k", lw=0.5)
    axs[1, 1].set_ylim(-0.03, 1.03)
    axs[1, 1].set_ylabel("DLT rate [exact 95% CI]")
    axs[1, 1].set_title("dose-limiting events")
    if zero_at is not None:
        for ax in axs[1]:
            ax.set_xlabel(xlabel)
        for ax in axs.flat:
            ax.set_xlim(zero_at / 10**0.25, pos.max() * 10**0.25)
        for ax in axs[1]:
            ax.annotate(
                "untreated",
                (zero_at, 0),
                xycoords=("data", "axes fraction"),
                xytext=(0, -26),
                textcoords="offset points",
                ha="center",
                fontsize=7,
                color="0.3",
            )
    for ax in axs.flat:
        ax.legend(fontsize=7, loc="best")
    n_min = int(t["n"].min())
    unit = units.get("unit") or f"x {t.attrs.get('key', 'dose')}"
    ed_txt = f"ED50 {_fmt_ci(ed, f, unit)}" if math.isfinite(ed.get("ed50", math.nan)) else "ED50 not estimable"
    td_txt = f"TD50 {_fmt_ci(td, f, unit)}" if td.get("estimable") else "TD50 not estimable (DLT < 50%)"
    ti_txt = (
        f"TI = TD50/ED50 = {_ci_text(ti['ti'], ti['ti_lo'], ti['ti_hi'])}"
        if math.isfinite(ti.get("ti", math.nan))
        else f"TI {ti.get('status', 'not estimable')}"
    )
    ti_txt = f"{ed_txt};  {td_txt};  {ti_txt}  (97.5% profile likelihood each)"
    fig.suptitle(
        (title or f"dose-response, {n_min} replicates per level")
        + ("  (too few to read: see report)" if small_sweep_warnings(t["n"]) else "")
        + f"\n{ti_txt}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt_ci(fit: dict[str, Any], factor: float = 1.0, unit: str = "") -> str:
    """``ED50 [lo, hi]`` in display units; an open bound reads < or >."""

    def g(v):
        return "inf" if v == math.inf else _num(v * factor)

    lo = "0" if fit.get("lo_open") else g(fit["lo"])
    hi = "inf" if fit.get("hi_open") else g(fit["hi"])
    return f"{g(fit['ed50'])} [{lo}, {hi}]{(' ' + unit) if unit else ''}"


# ------------------------------------------------------------------------------------------------ combination
def _cell_values(df, ka: str, kb: str, col_fn) -> tuple[np.ndarray, np.ndarray, dict[tuple[int, int], np.ndarray]]:
    a_levels = np.sort(df[ka].unique())
    b_levels = np.sort(df[kb].unique())
    cells = {}
    for (a, b), g in df.groupby([ka, kb]):
        cells[(int(np.searchsorted(a_levels, a)), int(np.searchsorted(b_levels, b)))] = col_fn(g)
    return a_levels, b_levels, cells


def combination_grid(data: dict[str, Any], n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Bliss-independence excess E_AB - (E_A + E_B - E_A E_B) and highest-single-agent excess E_AB - max(E_A, E_B)
    over a two-parameter grid whose lowest level of each parameter is 0 (the single agents), for two effects:

    - the responder rate: cell rates with exact (Clopper-Pearson) intervals; the excesses' intervals from
      ``n_boot`` draws of every cell's rate from its Jeffreys posterior Beta(k + 1/2, n - k + 1/2) (so 0/4 in
      every cell gives an interval around 0, not [0, 0]);
    - the burden effect 1 - AUC/AUC_untreated (cell means clipped to [0, 1]): BCa bootstrap intervals
      (``scipy.stats.bootstrap``) resampling the replicates within each of the cells involved, the untreated
      control's included.
    """
    import pandas as pd

    df = data["summary"]
    ka, kb = data["parameters"][:2]
    _need(df, ["best_response", "tumour_auc_cell_days"], "the combination analysis")
    if (df[ka].min() != 0) or (df[kb].min() != 0):
        raise ParameterError(f"the combination analysis needs 0 among the levels of {ka} and {kb} (single agents)")
    ctrl = df[(df[ka] == 0) & (df[kb] == 0)]
    if ctrl.empty:
        raise ParameterError("the combination analysis needs the 0 x 0 (untreated) cell")
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"keys": (ka, kb)}
    rows: dict[tuple[int, int], dict[str, Any]] = {}

    # responder rate
    a_lv, b_lv, kcells = _cell_values(df, ka, kb, lambda g: _responder(g))
    na, nb = len(a_lv), len(b_lv)
    rate = np.full((na, nb), np.nan)
    draws = np.full((n_boot, na, nb), np.nan)
    rate_ci = np.full((2, na, nb), np.nan)
    counts = np.zeros((na, nb), dtype=int)
    for (i, j), v in kcells.items():
        k, n = float(v.sum()), len(v)
        counts[i, j] = n
        rate[i, j] = k / n
        rate_ci[:, i, j] = proportion_ci(k, n)
        draws[:, i, j] = rng.beta(k + 0.5, n - k + 0.5, size=n_boot)

    def excess(e):
        ea, eb = e[..., :, :1], e[..., :1, :]
        return e - (ea + eb - ea * eb), e - np.maximum(ea, eb)

    bliss, hsa = excess(rate)
    db, dh = excess(draws)
    out["orr"] = {
        "a_levels": a_lv,
        "b_levels": b_lv,
        "effect": rate,
        "bliss": bliss,
        "hsa": hsa,
        "effect_ci": rate_ci,
        "bliss_ci": np.nanpercentile(db, [2.5, 97.5], axis=0),
        "hsa_ci": np.nanpercentile(dh, [2.5, 97.5], axis=0),
        "method": "exact (cells); Jeffreys posterior draws (excesses)",
    }
    for i in range(na):
        out["orr"]["bliss_ci"][:, i, 0] = 0.0 if np.isfinite(bliss[i, 0]) else np.nan  # single agents: 0 by definition
        out["orr"]["hsa_ci"][:, i, 0] = 0.0 if np.isfinite(hsa[i, 0]) else np.nan
    out["orr"]["bliss_ci"][:, 0, :] = np.where(np.isfinite(bliss[0]), 0.0, np.nan)
    out["orr"]["hsa_ci"][:, 0, :] = np.where(np.isfinite(hsa[0]), 0.0, np.nan)

    # burden effect, BCa over the replicates of the cells each quantity depends on
    _, _, auc = _cell_values(df, ka, kb, lambda g: g["tumour_auc_cell_days"].to_numpy(float))
    c00 = auc[(0, 0)]
    eff = np.full((na, nb), np.nan)
    res = {q: np.full((na, nb), np.nan) for q in ("effect", "bliss", "hsa")}
    cis = {q: np.full((2, na, nb), np.nan) for q in ("effect", "bliss", "hsa")}

    def e_of(x, c, axis=-1):
        return np.clip(1 - np.mean(x, axis=axis) / np.mean(c, axis=axis), 0, 1)

    def bliss_stat(x, xa, xb, c, axis=-1):
        e, ea, eb = e_of(x, c, axis), e_of(xa, c, axis), e_of(xb, c, axis)
        return e - (ea + eb - ea * eb)

    def hsa_stat(x, xa, xb, c, axis=-1):
        return e_of(x, c, axis) - np.maximum(e_of(xa, c, axis), e_of(xb, c, axis))

    for (i, j), v in auc.items():
        eff[i, j] = float(e_of(v, c00))
        res["effect"][i, j] = eff[i, j]
        cis["effect"][:, i, j] = _bca((v, c00), e_of, n_boot, seed, eff[i, j]) if (i, j) != (0, 0) else (0.0, 0.0)
    for (i, j), v in auc.items():
        if i == 0 or j == 0:
            for q in ("bliss", "hsa"):
                res[q][i, j] = 0.0
                cis[q][:, i, j] = 0.0
            continue
        if (i, 0) not in auc or (0, j) not in auc:
            continue
        samples = (v, auc[(i, 0)], auc[(0, j)], c00)
        res["bliss"][i, j] = float(bliss_stat(*samples))
        res["hsa"][i, j] = float(hsa_stat(*samples))
        cis["bliss"][:, i, j] = _bca(samples, bliss_stat, n_boot, seed, res["bliss"][i, j])
        cis["hsa"][:, i, j] = _bca(samples, hsa_stat, n_boot, seed, res["hsa"][i, j])
    out["burden_effect"] = {
        "a_levels": a_lv,
        "b_levels": b_lv,
        **res,
        **{f"{q}_ci": cis[q] for q in cis},
        "method": "BCa bootstrap over replicates within cells",
    }
    out["counts"] = counts
    for name in ("orr", "burden_effect"):
        g = out[name]
        for i in range(na):
            for j in range(nb):
                r = rows.setdefault((i, j), {ka: a_lv[i], kb: b_lv[j], "n": int(counts[i, j])})
                for q in ("effect", "bliss", "hsa"):
                    r[f"{name}_{q}"] = g[q][i, j]
                    r[f"{name}_{q}_lo"] = g[f"{q}_ci"][0, i, j]
                    r[f"{name}_{q}_hi"] = g[f"{q}_ci"][1, i, j]
    out["table"] = pd.DataFrame(list(rows.values()))
    return out


def _bca(samples, statistic, n_boot: int, seed: int, point: float) -> tuple[float, float]:
    """A BCa interval of ``statistic(*samples)`` resampling each sample on its own; (point, point) when no sample
    varies; the percentile interval where BCa is undefined."""
    import warnings

    from scipy import stats

    if all(np.ptp(s) == 0 for s in samples):
        return point, point
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa's "cannot be calculated" on near-degenerate data: fall back
            r = stats.bootstrap(
                samples, statistic, method=method, n_resamples=n_boot, rng=seed, vectorized=True, paired=False
            )
        lo, hi = float(r.confidence_interval.low), float(r.confidence_interval.high)
        if math.isfinite(lo) and math.isfinite(hi):
            return lo, hi
    return math.nan, math.nan


def plot_combination(
    grid: dict[str, Any], path: Path, effect: str = "burden_effect", labels: dict[str, str] | None = None
) -> Path:
    """The two effects (rows) as heat maps of the effect, the Bliss excess and the HSA excess, each cell annotated
    with its mean and 95% interval; axes labelled with ``labels`` (e.g. the dose in the clinic's terms)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ka, kb = grid["keys"]
    fig, axs = plt.subplots(2, 3, figsize=(15, 9))
    for r, name in enumerate(("orr", effect)):
        g = grid[name]
        for c, (q, cmap, title) in enumerate(
            (
                ("effect", "viridis", "effect"),
                ("bliss", "RdBu_r", "Bliss excess"),
                ("hsa", "RdBu_r", "excess over highest single agent"),
            )
        ):
            ax = axs[r, c]
            m = g[q]
            lo, hi = g[f"{q}_ci"]
            v = 1.0
            if q == "effect":
                im = ax.imshow(m, origin="lower", cmap=cmap, vmin=0, vmax=1, aspect="auto")
            else:
                v = np.nanmax(np.abs(m)) or 1.0
                im = ax.imshow(m, origin="lower", cmap=cmap, vmin=-v, vmax=v, aspect="auto")
            for i in range(m.shape[0]):
                for j in range(m.shape[1]):
                    if not np.isfinite(m[i, j]):
                        continue
                    sig = q != "effect" and (lo[i, j] > 0 or hi[i, j] < 0)
                    ax.text(
                        j,
                        i,
                        f"{m[i, j]:+.2f}\n[{lo[i, j]:+.2f}, {hi[i, j]:+.2f}]"
                        if q != "effect"
                        else f"{m[i, j]:.2f}\n[{lo[i, j]:.2f}, {hi[i, j]:.2f}]",
                        ha="center",
                        va="center",
                        fontsize=6.5,
                        fontweight="bold" if sig else "normal",
                        color=_text_colour(m[i, j], q, v if q != "effect" else 1.0),
                    )
            ax.set_xticks(range(len(g["b_levels"])), [f"{v:g}" for v in g["b_levels"]])
            ax.set_yticks(range(len(g["a_levels"])), [f"{v:g}" for v in g["a_levels"]])
            ax.set_xlabel((labels or {}).get(kb, kb), fontsize=8)
            ax.set_ylabel((labels or {}).get(ka, ka), fontsize=8)
            lab = "responders (CR+PR)" if name == "orr" else "1 - AUC/AUC_untreated"
            ax.set_title(f"{title}: {lab}", fontsize=9)
            fig.colorbar(im, ax=ax, shrink=0.8).set_label("fraction" if q == "effect" else "excess (fraction)")
    n_min = int(np.min(grid["counts"][grid["counts"] > 0])) if "counts" in grid else 0
    warn = "  TOO FEW REPLICATES TO READ (see report)" if small_sweep_warnings([n_min], "cell") else ""
    fig.suptitle(
        f"{ka} x {kb}: mean [95% interval] - responders: exact / Jeffreys; burden: BCa bootstrap; "
        f"bold = excludes 0; {n_min} replicates per cell{warn}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _text_colour(value: float, q: str, scale: float) -> str:
    """Black or white cell text, whichever reads on the cell's colour (viridis: dark low; RdBu: dark ends)."""
    if q == "effect":
        return "k" if value > 0.6 else "w"
    return "w" if abs(value) > 0.6 * scale else "k"


# ------------------------------------------------------------------------------------------------ sensitivity
SENS_METRICS = ("tumour_auc_relative", "max_shrinkage", "toxicity_max", "responder")


def _to_unit(spec_param: dict[str, Any], x: np.ndarray) -> np.ndarray:
    if spec_param.get("low") is not None:
        lo, hi = spec_param["low"], spec_param["high"]
    else:
        lo, hi = min(spec_param["values"]), max(spec_param["values"])
    if spec_param.get("scale") == "log":
        return (np.log(x) - np.log(lo)) / (np.log(hi) - np.log(lo))
    return (x - lo) / (hi - lo)


def sensitivity_table(data: dict[str, Any], metrics: tuple[str, ...] = SENS_METRICS):
    """Sobol S1/ST (design sobol), Morris mu*/sigma (design morris) or Spearman rank correlation (design lhs, or
    grid) of each metric's replicate mean on each parameter, with 95% intervals."""
    import pandas as pd
    from scipy import stats

    spec = data["spec"]
    keys = data["parameters"]
    design = data["design"]
    df = data["summary"].copy()
    if "best_response" in df:
        df["responder"] = _responder(df)
    metrics = tuple(m for m in metrics if m in df.columns)
    pts = design.groupby("point")[keys].first().sort_index()
    means = df.groupby("point")[list(metrics)].mean().reindex(pts.index)
    problem = {"num_vars": len(keys), "names": keys, "bounds": [[0.0, 1.0]] * len(keys)}
    rows = []
    for m in metrics:
        y = means[m].to_numpy(dtype=float)
        if spec["design"] in ("sobol", "morris") and not np.isfinite(y).all():
            raise ParameterError(
                f"sensitivity of {m}: {int((~np.isfinite(y)).sum())} design points have no "
                f"result (failed or not run); finish the sweep (--resume) first"
            )
        if spec["design"] == "sobol":
            from SALib.analyze import sobol

            if np.ptp(y) == 0:
                r = {
                    "S1": np.zeros(len(keys)),
                    "S1_conf": np.zeros(len(keys)),
                    "ST": np.zeros(len(keys)),
                    "ST_conf": np.zeros(len(keys)),
                }
            else:
                r = sobol.analyze(problem, y, calc_second_order=False, seed=int(spec["seed"]) % 2**32)
            for j, k in enumerate(keys):
                rows.append(
                    {
                        "metric": m,
                        "parameter": k,
                        "S1": r["S1"][j],
                        "S1_conf": r["S1_conf"][j],
                        "ST": r["ST"][j],
                        "ST_conf": r["ST_conf"][j],
                    }
                )
        elif spec["design"] == "morris":
            from SALib.analyze import morris

            x = np.column_stack([_to_unit(p, pts[p["key"]].to_numpy(float)) for p in spec["parameters"]])
            r = morris.analyze(problem, x, y, num_levels=spec["morris_levels"], seed=int(spec["seed"]) % 2**32)
            for j, k in enumerate(keys):
                rows.append(
                    {
                        "metric": m,
                        "parameter": k,
                        "mu_star": r["mu_star"][j],
                        "mu_star_conf": r["mu_star_conf"][j],
                        "sigma": r["sigma"][j],
                    }
                )
        else:
            ok = np.isfinite(y)
            for k in keys:
                rho = stats.spearmanr(pts[k].to_numpy(float)[ok], y[ok]).statistic if ok.sum() > 2 else math.nan
                n = ok.sum()
                h = Z95 / math.sqrt(n - 3) if n > 3 else math.nan
                lo, hi = (
                    (math.tanh(math.atanh(rho) - h), math.tanh(math.atanh(rho) + h)) if abs(rho) < 1 else (rho, rho)
                )
                rows.append({"metric": m, "parameter": k, "spearman": rho, "spearman_lo": lo, "spearman_hi": hi})
    return pd.DataFrame(rows)


def plot_sensitivity(table, design: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(table["metric"]))
    fig, axs = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 4.5), sharey=True, squeeze=False)
    for ax, m in zip(axs[0], metrics, strict=True):
        t = table[table["metric"] == m]
        y = np.arange(len(t))
        if design == "sobol":
            ax.barh(y - 0.2, t["S1"], 0.4, xerr=t["S1_conf"], label="first order S1")
            ax.barh(y + 0.2, t["ST"], 0.4, xerr=t["ST_conf"], label="total order ST")
            ax.set_xlabel("Sobol index")
        elif design == "morris":
            ax.barh(y - 0.2, t["mu_star"], 0.4, xerr=t["mu_star_conf"], label="mu*")
            ax.barh(y + 0.2, t["sigma"], 0.4, label="sigma")
            ax.set_xlabel("Morris elementary effects (unit range)")
        else:
            err = np.vstack([t["spearman"] - t["spearman_lo"], t["spearman_hi"] - t["spearman"]])
            ax.barh(y, t["spearman"], 0.6, xerr=err, label="Spearman rho")
            ax.set_xlabel("rank correlation")
        ax.set_yticks(y, list(t["parameter"]), fontsize=7)
        ax.axvline(0, color="k", lw=0.5)
        ax.set_title(m, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"global sensitivity ({design}), 95% intervals")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------ entry point
def _num(x: float) -> str:
    """720,000 or 36,000 with separators; 0.05 or 7.2 to three significant digits."""
    return f"{x:,.0f}" if math.isfinite(x) and abs(x) >= 1000 else f"{x:.3g}"


def _ci_text(v: float, lo: float, hi: float, fmt: str = ".3g") -> str:
    def g(x):
        return "inf" if x == math.inf else ("nan" if not math.isfinite(x) else _num(x))

    return f"{g(v)} [{g(lo)}, {g(hi)}]"


def dose_response_readouts(t) -> dict[str, Any]:
    """The headline numbers of a dose-response table, in the table's clinical unit where it has one."""
    units = t.attrs.get("units") or {}
    f = units.get("factor") or 1.0
    unit = units.get("unit") or f"x {t.attrs.get('key', 'dose')}"
    m, reached = mtd(t)
    ti = therapeutic_index(t)
    ed, td = ti["ed50"], ti["td50"]
    sweep_warnings = small_sweep_warnings(t["n"])
    if math.isfinite(ed.get("falls_above", math.nan)):
        sweep_warnings.append(
            f"the response rate falls above {_num(ed['falls_above'] * f)} {unit} (below the best level's 95% "
            f"interval at the next level); the Emax model (ED50) is fitted to the doses up to it only"
        )
    return {
        "parameter": t.attrs.get("key", ""),
        "dose_unit": unit,
        "dose_factor": f,
        "mtd": m * f if math.isfinite(m) else m,
        "mtd_limit_reached": reached,
        "dlt_limit": DLT_LIMIT,
        "ed50": ed.get("ed50", math.nan) * f,
        "ed50_lo": ed.get("lo", math.nan) * f,
        "ed50_hi": ed.get("hi", math.nan) * f,
        "ed50_emax": ed.get("emax", math.nan),
        "ed50_hill": ed.get("h", math.nan),
        "td50": td.get("ed50", math.nan) * f if td.get("estimable") else math.nan,
        "td50_lo": td.get("lo", math.nan) * f,
        "td50_hi": td.get("hi", math.nan) * f if td.get("estimable") else math.inf,
        "td50_hill": td.get("h", math.nan),
        "therapeutic_index": ti["ti"],
        "therapeutic_index_lo": ti["ti_lo"],
        "therapeutic_index_hi": ti["ti_hi"],
        "therapeutic_index_status": ti["status"],
        "therapeutic_index_definition": TI_REFERENCE,
        "auc_reference": t.attrs.get("auc_reference", ""),
        "min_replicates_per_level": int(t["n"].min()),
        "replicates_needed": min_replicates(),
        "warnings": " | ".join(sweep_warnings),
        "_ti": ti,
    }


def _report(path: Path, data: dict[str, Any], kind: str, lines: list[str], warn: list[str]) -> Path:
    spec = data.get("spec", {})
    head = [
        f"# Analysis of sweep {spec.get('name', '?')} ({kind})",
        "",
        f"Base scenario `{spec.get('base', '?')}`, {len(data['summary'])} finished runs, "
        f"{len(data['failures'])} failed; varied: {', '.join(data['parameters'])}.",
        "",
    ]
    if warn:
        head += ["## Warnings", ""] + [f"- **{w}**" for w in warn] + [""]
    path.write_text("\n".join(head + lines) + "\n")
    return path


def analyze(sweep_dir: str | Path, out: str | Path, prefix: str = "", quiet: bool = False) -> list[Path]:
    """Write the tables (CSV), figures (PNG) and report (``report.md``) of the sweep's analysis into ``out``;
    return the paths. A sweep too small to read is warned about on stderr (unless ``quiet``) and in the report."""
    from abm.sweep.store import read_sweep

    data = read_sweep(sweep_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    runs = out / f"{prefix}runs.csv"
    data["summary"].to_csv(runs, index=False)
    written.append(runs)
    if len(data["failures"]):
        p = out / f"{prefix}failures.csv"
        data["failures"].to_csv(p, index=False)
        written.append(p)
    if data["summary"].empty:
        raise ParameterError(f"{data['path']}: no finished runs to analyse")
    kind = data["spec"].get("analysis") or "none"
    warn: list[str] = []
    lines: list[str] = []
    if kind == "dose_response":
        import pandas as pd

        t = dose_response_table(data)
        r = dose_response_readouts(t)
        ti = r.pop("_ti")
        bf = burden_fit(data, t)
        f = r["dose_factor"]
        r |= {"burden_ed50": bf["ed50"] * f, "burden_ed50_lo": bf["lo"] * f, "burden_ed50_hi": bf["hi"] * f}
        r |= {"burden_emax": bf["emax"], "burden_hill": bf["h"]}
        limb = bf.get("falls_above", math.nan)
        warn = [w for w in r["warnings"].split(" | ") if w]
        p = out / f"{prefix}dose_response.csv"
        t.to_csv(p, index=False)
        written.append(p)
        p = out / f"{prefix}dose_response_summary.csv"
        pd.DataFrame([r]).to_csv(p, index=False)
        written.append(p)
        written.append(plot_dose_response(t, out / f"{prefix}dose_response.png", ti=ti, burden=bf))
        u = r["dose_unit"]
        lines = [
            "## Read-outs",
            "",
            f"- dose unit: {u} ({t.attrs['units']['label']})",
            f"- ED50 (half-maximal responder rate, Emax {r['ed50_emax']:.2f}, Hill {r['ed50_hill']:.2g}; 97.5% "
            f"profile likelihood): {_ci_text(r['ed50'], r['ed50_lo'], r['ed50_hi'])} {u}",
            f"- burden ED50 (least-squares Emax of 1 - AUC/AUC_untreated per run, Emax {r['burden_emax']:.2f}, "
            f"Hill {r['burden_hill']:.2g}; 95% t on log ED50"
            + (f"; fitted up to {_num(limb * f)} {u}, where the burden is lowest" if math.isfinite(limb) else "")
            + f"): {_ci_text(r['burden_ed50'], r['burden_ed50_lo'], r['burden_ed50_hi'])} {u}",
            "- TD50 (50% dose-limiting toxicity; 97.5% profile likelihood): "
            + (
                f"{_ci_text(r['td50'], r['td50_lo'], r['td50_hi'])} {u}"
                if math.isfinite(r["td50"])
                else f"not estimable (DLT rate below 50% at every dose; TD50 > {r['td50_lo']:.3g} {u})"
            ),
            "- therapeutic index TD50/ED50 (>= 95% jointly): "
            + (
                _ci_text(r["therapeutic_index"], r["therapeutic_index_lo"], r["therapeutic_index_hi"])
                if math.isfinite(r["therapeutic_index"])
                else r["therapeutic_index_status"]
            ),
            f"- MTD (highest level with it and every lower level below {DLT_LIMIT:.0%} DLT): "
            + (f"{_num(r['mtd'])} {u}" if math.isfinite(r["mtd"]) else "none (the lowest level is not tolerated)")
            + ("" if r["mtd_limit_reached"] else " (not reached: the top level is tolerated)"),
            "",
            f"Definition: {TI_REFERENCE}.",
            "",
            "Intervals: rates exact Clopper-Pearson; AUC ratio log-scale t (delta method); means BCa bootstrap.",
        ]
    elif kind == "combination":
        g = combination_grid(data, seed=int(data["spec"]["seed"]) % 2**32)
        p = out / f"{prefix}combination.csv"
        g["table"].to_csv(p, index=False)
        labels = {k: dose_units(data.get("spec"), k)["label"] for k in g["keys"]}
        warn = small_sweep_warnings(g["counts"][g["counts"] > 0], "cell")
        written += [p, plot_combination(g, out / f"{prefix}combination.png", labels=labels)]
        lines = [
            "## Methods",
            "",
            "- responder rate: cells exact Clopper-Pearson; Bliss/HSA excesses from Jeffreys-posterior draws",
            "- burden effect 1 - AUC/AUC_untreated: BCa bootstrap over replicates within the cells involved",
        ]
    elif kind == "sensitivity":
        t = sensitivity_table(data)
        p = out / f"{prefix}sensitivity.csv"
        t.to_csv(p, index=False)
        written += [p, plot_sensitivity(t, data["spec"]["design"], out / f"{prefix}sensitivity.png")]
    if kind in ("dose_response", "combination"):
        written.append(_report(out / f"{prefix}report.md", data, kind, lines, warn))
    if warn and not quiet:
        for w in warn:
            print(f"abm analyze: warning: {w}", file=sys.stderr)
    return written
