"""Read-outs of a virtual trial: the per-patient table, each arm's rates with exact intervals, paired comparisons
between arms, and the model set beside the clinic's figures.

Conventions (docs/trials.md, "Read-outs"):

- Denominator: every patient whose run finished (intention to treat); a patient not evaluable for response
  (``NE``: no measurable lesion at baseline, or no assessment late enough) counts as a non-responder, as in the
  trials' "assessable patients" when every patient is assessable. ``n_evaluable`` says how many were.
- ORR = confirmed CR + PR; CR rate; PR; SD; PD; DLT rate (a course stopped at the dose-limiting threshold). Each is
  k/n with the exact Clopper-Pearson 95% interval and the Wilson score interval (``scipy.stats.binomtest``).
- Doses delivered: the mean doses given per patient (BCa bootstrap, ``scipy.stats.bootstrap``), and the delivered
  fraction = doses given / doses due while on study, summed over patients, with a BCa interval resampling patients
  (doses of one patient are not independent, so a binomial interval over doses would be too narrow).
- Progression-free survival (``pfs.csv``): Kaplan-Meier by arm of the day of RECIST progression, censored at the
  last assessment, with pointwise log-log (Greenwood) 95% bands (``scipy.stats.ecdf``) and the median with its
  Brookmeyer-Crowley interval. The model has no deaths: this is the time to progression; there is no OS.
- Paired comparison of arms A and B on the same patients: the exact McNemar test (two-sided binomial test of the
  discordant pairs, ``binomtest(b, b + c, 1/2)``), and the difference of rates A - B with a paired BCa bootstrap
  interval.
- Beside the clinic: the clinic's k/n with its exact interval, the model's, Fisher's exact test of the two, and
  the model's 95% posterior-predictive interval for the count a trial of the clinic's size would see (a
  beta-binomial: Jeffreys posterior Beta(k + 1/2, n - k + 1/2) of the model's rate; ``scipy.stats.betabinom``);
  ``consistent`` says whether the clinic's count falls inside it.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from abm.errors import ParameterError
from abm.sweep.analysis import bca_mean_ci
from abm.sweep.store import STORE_NAME, RunStore, StoreError
from abm.trial.spec import ENDPOINT_LABELS, TrialDoc

CONF = 0.95
N_BOOT = 2000
RESPONSES = ("CR", "PR", "SD", "PD", "NE")
MIN_ARM = 17  # a 95% exact interval is narrower than +-0.25 from 17 patients (abm.sweep.analysis.min_replicates)


# ------------------------------------------------------------------------------------------------ reading
def read_trial(path: str | Path) -> dict[str, Any]:
    """A trial directory (or its store): ``patients`` (one row per run, finished or not, with its status, the
    patient's parameters and its read-outs), ``doc`` (the :class:`TrialDoc`), ``meta``, ``path``."""
    import pandas as pd

    p = Path(path)
    store_path = p / STORE_NAME if p.is_dir() else p
    try:
        store = RunStore.open(store_path, readonly=True)
    except StoreError as e:
        raise ParameterError(f"{p}: no virtual trial here ({e})") from None
    with store:
        meta = store.meta()
        if meta.get("kind") != "trial":
            raise ParameterError(f"{store_path}: not a virtual trial (kind {meta.get('kind')!r})")
        rows = store.rows()
    spec = json.loads(meta["spec_json"])
    spec.pop("quick", None)
    doc = TrialDoc.model_validate(spec)
    arms = [a.name for a in doc.arms]
    out = []
    for r in rows:
        d = {
            "run_id": r["run_id"],
            "arm": arms[r["point"]],
            "patient": int(r["replicate"]),
            "seed": int(r["seed"]),
            "status": r["status"],
            "attempts": r["attempts"],
            "elapsed_s": r["elapsed_s"],
        }
        d.update(r["design"])
        if r["summary"]:
            d.update({k: v for k, v in r["summary"].items() if k != "seed"})
        out.append(d)
    df = pd.DataFrame(out)
    return {"patients": df, "doc": doc, "meta": meta, "path": store_path}


def done(df):
    return df[df["status"] == "done"].copy()


# ------------------------------------------------------------------------------------------------ intervals
def proportion(k: int, n: int, conf: float = CONF) -> dict[str, float]:
    """k/n with its exact (Clopper-Pearson) and Wilson intervals (``scipy.stats.binomtest``)."""
    from scipy import stats

    if n <= 0:
        return {"k": int(k), "n": int(n), "rate": math.nan, "lo": math.nan, "hi": math.nan}
    t = stats.binomtest(int(k), int(n))
    ex = t.proportion_ci(confidence_level=conf, method="exact")
    wi = t.proportion_ci(confidence_level=conf, method="wilson")
    return {
        "k": int(k),
        "n": int(n),
        "rate": k / n,
        "lo": float(ex.low),
        "hi": float(ex.high),
        "wilson_lo": float(wi.low),
        "wilson_hi": float(wi.high),
    }


def ratio_of_sums_ci(num: np.ndarray, den: np.ndarray, conf: float = CONF, seed: int = 0) -> tuple[float, float, float]:
    """sum(num) / sum(den) with a BCa interval resampling the pairs (patients)."""
    from scipy import stats

    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    ok = np.isfinite(num) & np.isfinite(den)
    num, den = num[ok], den[ok]
    if den.sum() <= 0:
        return math.nan, math.nan, math.nan
    r = float(num.sum() / den.sum())
    if len(num) < 2:
        return r, math.nan, math.nan
    if np.ptp(num / np.where(den > 0, den, 1)) == 0 and np.ptp(den) == 0:
        return r, r, r

    def stat(a, b, axis=-1):
        return a.sum(axis=axis) / b.sum(axis=axis)

    res = stats.bootstrap(
        (num, den),
        stat,
        paired=True,
        vectorized=True,
        confidence_level=conf,
        method="BCa",
        n_resamples=N_BOOT,
        rng=seed,
    )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        res = stats.bootstrap(
            (num, den),
            stat,
            paired=True,
            vectorized=True,
            confidence_level=conf,
            method="percentile",
            n_resamples=N_BOOT,
            rng=seed,
        )
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return r, lo, hi


def paired_difference_ci(x: np.ndarray, y: np.ndarray, conf: float = CONF, seed: int = 0) -> tuple[float, float, float]:
    """mean(x - y) for paired 0/1 outcomes with a paired BCa bootstrap interval (the value itself when every
    difference is the same)."""
    from scipy import stats

    d = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    if len(d) == 0:
        return math.nan, math.nan, math.nan
    m = float(d.mean())
    if len(d) < 2:
        return m, math.nan, math.nan
    if np.ptp(d) == 0:
        return m, m, m
    res = stats.bootstrap((d,), np.mean, confidence_level=conf, method="BCa", n_resamples=N_BOOT, rng=seed)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        res = stats.bootstrap((d,), np.mean, confidence_level=conf, method="percentile", n_resamples=N_BOOT, rng=seed)
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return m, lo, hi


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Exact McNemar test of paired binary outcomes: b = A yes / B no, c = A no / B yes; two-sided
    ``scipy.stats.binomtest(b, b + c, 0.5)`` (p = 1 without discordant pairs)."""
    from scipy import stats

    a = np.asarray(a, dtype=bool)
    b_ = np.asarray(b, dtype=bool)
    n10 = int(np.sum(a & ~b_))
    n01 = int(np.sum(~a & b_))
    p = float(stats.binomtest(n10, n10 + n01, 0.5).pvalue) if n10 + n01 else 1.0
    return {"both": int(np.sum(a & b_)), "a_only": n10, "b_only": n01, "neither": int(np.sum(~a & ~b_)), "p": p}


# ------------------------------------------------------------------------------------------------ read-outs
def endpoint_flags(g) -> dict[str, np.ndarray]:
    br = g["best_response"].astype(str).to_numpy()
    return {
        "orr": np.isin(br, ("CR", "PR")),
        "cr_rate": br == "CR",
        "pr_rate": br == "PR",
        "sd_rate": br == "SD",
        "pd_rate": br == "PD",
        "ne_rate": br == "NE",
        "dlt_rate": g["dose_limiting_toxicity"].astype(float).to_numpy() > 0,
    }


def arm_table(data: dict[str, Any]):
    """One row per arm: n, n evaluable, the rates (k, rate, exact and Wilson intervals), doses delivered, median
    best change, median time to response, median progression-free time (Kaplan-Meier) and progressions."""
    import pandas as pd

    doc: TrialDoc = data["doc"]
    df = done(data["patients"])
    rows = []
    for arm in doc.arms:
        g = df[df["arm"] == arm.name]
        n = len(g)
        row: dict[str, Any] = {"arm": arm.name, "label": arm.title, "scenario": arm.scenario, "n": n}
        row["n_planned"] = int((data["patients"]["arm"] == arm.name).sum())
        row["n_evaluable"] = int(g["evaluable"].astype(bool).sum()) if n else 0
        flags = endpoint_flags(g) if n else {}
        for name, x in flags.items():
            pr = proportion(int(x.sum()), n)
            row |= {
                f"{name}_k": pr["k"],
                name: pr["rate"],
                f"{name}_lo": pr["lo"],
                f"{name}_hi": pr["hi"],
                f"{name}_wilson_lo": pr.get("wilson_lo", math.nan),
                f"{name}_wilson_hi": pr.get("wilson_hi", math.nan),
            }
        if n:
            m, lo, hi = bca_mean_ci(g["doses_given"].to_numpy(float))
            row |= {"doses_given_mean": m, "doses_given_lo": lo, "doses_given_hi": hi}
            m, lo, hi = bca_mean_ci(g["doses_held"].to_numpy(float))
            row |= {"doses_held_mean": m, "doses_held_lo": lo, "doses_held_hi": hi}
            r, lo, hi = ratio_of_sums_ci(g["doses_given"].to_numpy(float), g["doses_due_on_study"].to_numpy(float))
            row |= {"delivered_fraction": r, "delivered_fraction_lo": lo, "delivered_fraction_hi": hi}
            row["doses_scheduled"] = float(g["doses_scheduled"].max())
            row["best_change_median_pct"] = float(np.nanmedian(g["best_change_pct"].to_numpy(float)))
            ttr = g["time_to_response_day"].to_numpy(float)
            row["time_to_response_median_day"] = float(np.nanmedian(ttr)) if np.isfinite(ttr).any() else math.nan
            km = kaplan_meier(*pfs_times(g))
            row |= {"pfs_median_day": km["median"], "pfs_median_lo": km["median_lo"], "pfs_median_hi": km["median_hi"]}
            row["progressions"] = int(km["events"].sum())
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_table(data: dict[str, Any], pairs: list[tuple[str, str]] | None = None):
    """Paired comparisons A vs B (patients finished in both arms): for ORR, CR and DLT, the discordant pairs, the
    exact McNemar p and the difference A - B with a paired bootstrap interval."""
    import pandas as pd

    doc: TrialDoc = data["doc"]
    df = done(data["patients"])
    names = [a.name for a in doc.arms]
    if pairs is None:
        pairs = [tuple(p) for p in doc.trial.compare] or [
            (names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))
        ]
    rows = []
    for a, b in pairs:
        ga = df[df["arm"] == a].set_index("patient")
        gb = df[df["arm"] == b].set_index("patient")
        both = ga.index.intersection(gb.index)
        ga, gb = ga.loc[both].sort_index(), gb.loc[both].sort_index()
        fa, fb = (endpoint_flags(ga), endpoint_flags(gb)) if len(both) else ({}, {})
        for ep in ("orr", "cr_rate", "dlt_rate"):
            row = {"arm_a": a, "arm_b": b, "endpoint": ep, "n_pairs": int(len(both))}
            if len(both):
                t = mcnemar_exact(fa[ep], fb[ep])
                d, lo, hi = paired_difference_ci(fa[ep], fb[ep])
                row |= {
                    "rate_a": float(fa[ep].mean()),
                    "rate_b": float(fb[ep].mean()),
                    "diff": d,
                    "diff_lo": lo,
                    "diff_hi": hi,
                    **{f"pairs_{k}": v for k, v in t.items() if k != "p"},
                    "mcnemar_p": t["p"],
                }
            rows.append(row)
    return pd.DataFrame(rows)


def clinical_table(data: dict[str, Any], arms=None):
    """Each clinical figure beside the model's: both rates with exact intervals, Fisher's exact p, and the
    model's 95% posterior-predictive interval of the count in a trial of the clinic's size."""
    import pandas as pd
    from scipy import stats

    doc: TrialDoc = data["doc"]
    arms = arm_table(data) if arms is None else arms
    by = arms.set_index("arm")
    rows = []
    for c in doc.clinical:
        a = by.loc[c.arm]
        km, nm = int(a.get(f"{c.endpoint}_k", 0)), int(a["n"])
        obs = proportion(c.k, c.n)
        mod = proportion(km, nm)
        row = {
            "arm": c.arm,
            "endpoint": c.endpoint,
            "population": c.population,
            "source": c.source,
            "clinic_k": c.k,
            "clinic_n": c.n,
            "clinic_rate": obs["rate"],
            "clinic_lo": obs["lo"],
            "clinic_hi": obs["hi"],
            "model_k": km,
            "model_n": nm,
            "model_rate": mod["rate"],
            "model_lo": mod["lo"],
            "model_hi": mod["hi"],
        }
        if nm:
            row["fisher_p"] = float(stats.fisher_exact([[km, nm - km], [c.k, c.n - c.k]]).pvalue)
            lo, hi = stats.betabinom.interval(CONF, c.n, km + 0.5, nm - km + 0.5)
            row |= {"predicted_k_lo": int(lo), "predicted_k_hi": int(hi)}
            row["consistent"] = bool(lo <= c.k <= hi)
        rows.append(row)
    return pd.DataFrame(rows)


def pfs_times(g) -> tuple[np.ndarray, np.ndarray]:
    """(day, progressed) per patient: the day of RECIST progression, else censored at the last assessment (a
    patient never assessed at day 0)."""
    prog = g["progressed"].astype(bool).to_numpy()
    ttp = g["time_to_progression_day"].to_numpy(float)
    last = np.nan_to_num(g["last_assessment_day"].to_numpy(float), nan=0.0)
    return np.where(prog, ttp, last), prog


def kaplan_meier(t: np.ndarray, event: np.ndarray, conf: float = CONF) -> dict[str, Any]:
    """Kaplan-Meier survival of ``t`` (``event`` False: right-censored) with pointwise log-log (Greenwood) bands
    (``scipy.stats.ecdf`` on ``CensoredData``), the at-risk and event counts at each distinct time, and the median
    with its Brookmeyer-Crowley interval (NaN: not reached)."""
    from scipy import stats

    t, event = np.asarray(t, float), np.asarray(event, bool)
    res = stats.ecdf(stats.CensoredData(uncensored=t[event], right=t[~event]))
    days = res.sf.quantiles
    s = res.sf.probabilities
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # "undefined at some observations": where S is 1 or 0
        try:
            ci = res.sf.confidence_interval(conf, method="log-log")
            lo, hi = ci.low.evaluate(days), ci.high.evaluate(days)
        except ValueError:
            lo, hi = np.full(days.shape, np.nan), np.full(days.shape, np.nan)
    # where the estimate is 1 (no event yet) the log-log band is undefined: the band is the estimate itself there
    lo, hi = np.where(s >= 1.0, 1.0, lo), np.where(s >= 1.0, 1.0, hi)
    at_risk = np.array([(t >= d).sum() for d in days], dtype=int)
    events = np.array([(event & (t == d)).sum() for d in days], dtype=int)

    def first_below(x: np.ndarray) -> float:
        i = np.flatnonzero(np.nan_to_num(x, nan=1.0) <= 0.5)
        return float(days[i[0]]) if len(i) else math.nan

    return {
        "day": days,
        "survival": s,
        "lo": lo,
        "hi": hi,
        "at_risk": at_risk,
        "events": events,
        "median": first_below(s),
        "median_lo": first_below(lo),
        "median_hi": first_below(hi),
    }


def pfs_table(data: dict[str, Any]):
    """Progression-free survival by arm (Kaplan-Meier): one row per arm and distinct day (day 0 first) with the
    number at risk, progressions, the estimate and its 95% band. The model has no deaths, so this is the time to
    RECIST progression (TTP), censored at the last assessment; there is no overall survival."""
    import pandas as pd

    df = done(data["patients"])
    rows = []
    for arm in data["doc"].arms:
        g = df[df["arm"] == arm.name]
        if not len(g):
            continue
        km = kaplan_meier(*pfs_times(g))
        rows.append(
            {"arm": arm.name, "day": 0.0, "at_risk": len(g), "events": 0, "survival": 1.0, "lo": 1.0, "hi": 1.0}
        )
        for i, d in enumerate(km["day"]):
            rows.append(
                {
                    "arm": arm.name,
                    "day": float(d),
                    "at_risk": int(km["at_risk"][i]),
                    "events": int(km["events"][i]),
                    "survival": float(km["survival"][i]),
                    "lo": float(km["lo"][i]),
                    "hi": float(km["hi"][i]),
                }
            )
    return pd.DataFrame(rows, columns=["arm", "day", "at_risk", "events", "survival", "lo", "hi"])


# ------------------------------------------------------------------------------------------------ report
def _pct(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{100 * x:.1f}%"


def _days(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:g}"


def _ci(r: float, lo: float, hi: float) -> str:
    return f"{_pct(r)} [{_pct(lo)}, {_pct(hi)}]"


def warnings_for(arms) -> list[str]:
    out = []
    for _, a in arms.iterrows():
        if a["n"] < MIN_ARM:
            out.append(
                f"arm {a['arm']}: {a['n']} patients; a 95% exact interval is wider than +-25 points below {MIN_ARM} "
                "(a pipeline check, not a result)"
            )
        if a["n"] < a["n_planned"]:
            out.append(f"arm {a['arm']}: {a['n_planned'] - a['n']} of {a['n_planned']} patients not finished")
    return out


def report(data: dict[str, Any], arms, comps, clin, warn: list[str]) -> str:
    doc: TrialDoc = data["doc"]
    meta = data["meta"]
    t = doc.trial
    lines = [f"# Virtual trial {t.name}", "", t.description, ""]
    lines += [
        f"- population: {t.population or '-'}; patients per arm: {t.patients}; root seed {t.seed}; "
        f"cohort {meta.get('cohort_source', t.cohort)}",
        f"- definition: {meta.get('spec_source', '?')}; abm {meta.get('abm_version', '?')}, git "
        f"{meta.get('git_hash') or '-'}",
        f"- RECIST 1.1 at visits: {_visits(doc)}; measure: {doc.recist.measure}",
        "",
    ]
    if warn:
        lines += ["**Warnings**", ""] + [f"- {w}" for w in warn] + [""]
    lines += [
        "## Arms (exact 95% intervals)",
        "",
        "| arm | n | ORR | CR | PR | PD | DLT | doses given / patient | delivered |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for _, a in arms.iterrows():
        if not a["n"]:
            lines.append(f"| {a['label']} | 0 | | | | | | | |")
            continue
        lines.append(
            f"| {a['label']} | {a['n']} | {a['orr_k']} ({_ci(a['orr'], a['orr_lo'], a['orr_hi'])}) | "
            f"{a['cr_rate_k']} ({_ci(a['cr_rate'], a['cr_rate_lo'], a['cr_rate_hi'])}) | {a['pr_rate_k']} | "
            f"{a['pd_rate_k']} | {a['dlt_rate_k']} ({_ci(a['dlt_rate'], a['dlt_rate_lo'], a['dlt_rate_hi'])}) | "
            f"{a['doses_given_mean']:.1f} [{a['doses_given_lo']:.1f}, {a['doses_given_hi']:.1f}] | "
            f"{_ci(a['delivered_fraction'], a['delivered_fraction_lo'], a['delivered_fraction_hi'])} |"
        )
    lines += [
        "",
        "## Progression-free (Kaplan-Meier, pfs.csv)",
        "",
        "Time to RECIST progression, censored at the last assessment; the model has no deaths, so this is the time to "
        "progression and there is no overall survival. Median with its Brookmeyer-Crowley 95% interval (log-log "
        "band); '-' where not reached within follow-up.",
        "",
        "| arm | n | progressions | median PFS, days |",
        "| --- | --- | --- | --- |",
    ]
    for _, a in arms.iterrows():
        if a["n"]:
            lines.append(
                f"| {a['label']} | {a['n']} | {a['progressions']} | {_days(a['pfs_median_day'])} "
                f"[{_days(a['pfs_median_lo'])}, {_days(a['pfs_median_hi'])}] |"
            )
    if len(clin):
        lines += [
            "",
            "## Beside the clinic",
            "",
            "| arm | endpoint | population | clinic | model | Fisher p | model's 95% predictive count | consistent |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for _, c in clin.iterrows():
            pred = f"{c['predicted_k_lo']}-{c['predicted_k_hi']} of {c['clinic_n']}" if "predicted_k_lo" in c else "-"
            lines.append(
                f"| {c['arm']} | {ENDPOINT_LABELS[c['endpoint']]} | {c['population']} | "
                f"{c['clinic_k']}/{c['clinic_n']} "
                f"({_ci(c['clinic_rate'], c['clinic_lo'], c['clinic_hi'])}) | {c['model_k']}/{c['model_n']} "
                f"({_ci(c['model_rate'], c['model_lo'], c['model_hi'])}) | {c.get('fisher_p', math.nan):.3g} | "
                f"{pred} | {c.get('consistent', '-')} |"
            )
    if len(comps):
        lines += [
            "",
            "## Paired comparisons (same patients, same seeds)",
            "",
            "| A vs B | endpoint | pairs | A | B | A - B [95% paired bootstrap] | A only / B only | exact McNemar p |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for _, c in comps.iterrows():
            if not c["n_pairs"]:
                continue
            lines.append(
                f"| {c['arm_a']} vs {c['arm_b']} | {ENDPOINT_LABELS[c['endpoint']]} | {c['n_pairs']} | "
                f"{_pct(c['rate_a'])} | {_pct(c['rate_b'])} | {100 * c['diff']:+.1f} [{100 * c['diff_lo']:+.1f}, "
                f"{100 * c['diff_hi']:+.1f}] points | {c['pairs_a_only']} / {c['pairs_b_only']} | "
                f"{c['mcnemar_p']:.3g} |"
            )
    lines += ["", "## Cohort", "", "| parameter | distribution | source |", "| --- | --- | --- |"]
    for r in doc.cohort.describe_rows():
        lines.append(f"| `{r['parameter']}` | {r['distribution']} | {r['source']} |")
    return "\n".join(lines) + "\n"


def _visits(doc: TrialDoc) -> str:
    r = doc.recist
    weeks = ", ".join(f"{d / 7:g}" for d in r.scheduled_days())
    conf = f"confirmation >= {r.confirm_min_weeks:g} weeks later" + (" (scan scheduled)" if r.confirmation_scan else "")
    return f"weeks {weeks}; {conf}; SD from week {r.sd_min_weeks:g}"


def analyze_trial(trial_dir: str | Path, out: str | Path, prefix: str = "", quiet: bool = False) -> list[Path]:
    """Write the trial's tables (CSV), its figures (PNG: the clinic's four and the Kaplan-Meier curves) and
    ``report.md`` into ``out``; return the paths."""
    from abm.trial import figures

    data = read_trial(trial_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    pts = data["patients"]
    p = out / f"{prefix}patients.csv"
    pts.to_csv(p, index=False)
    written.append(p)
    if done(pts).empty:
        raise ParameterError(f"{data['path']}: no finished patients to analyse")
    arms = arm_table(data)
    comps = comparison_table(data)
    clin = clinical_table(data, arms)
    pfs = pfs_table(data)
    for name, t in (("arms", arms), ("comparisons", comps), ("clinical", clin), ("pfs", pfs)):
        if len(t):
            p = out / f"{prefix}{name}.csv"
            t.to_csv(p, index=False)
            written.append(p)
    warn = warnings_for(arms)
    if warn and not quiet:
        for w in warn:
            print(f"abm analyze: warning: {w}", file=sys.stderr)
    written.append(figures.waterfall(data, out / f"{prefix}waterfall.png"))
    written.append(figures.swimmer(data, out / f"{prefix}swimmer.png"))
    written.append(figures.spider(data, out / f"{prefix}spider.png"))
    written.append(figures.forest(data, arms, clin, out / f"{prefix}forest.png"))
    written.append(figures.pfs(data, pfs, out / f"{prefix}pfs.png"))
    p = out / f"{prefix}report.md"
    p.write_text(report(data, arms, comps, clin, warn))
    written.append(p)
    return written
