"""Per-seed statistics, their 95% intervals and the verdicts of the validation suite.

The interval of a comparison is the t interval of the mean of its per-seed values (paired across arms by seed,
which share their random streams), from :func:`abm.sweep.analysis.mean_ci`; the BCa bootstrap interval
(:func:`abm.sweep.analysis.bca_mean_ci`) is recorded beside it. With the handful of seeds the suite runs, BCa is
known to undercover (its acceleration and bias terms are estimated from the same few values), so the verdict uses
the t interval. Log ratios are averaged on the log scale and reported back as a ratio (a geometric mean).
Proportions per arm (responders, complete responses, eradications) get Wilson intervals
(:func:`abm.sweep.analysis.wilson`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from abm.sweep.analysis import bca_mean_ci, mean_ci, wilson
from abm.validate.experiments import UNTREATED, Comparison

EMERGES, DOES_NOT, UNDETERMINED = "emerges", "does not emerge", "undetermined"


def metric(summary: Mapping[str, Any], name: str) -> float:
    """A run's read-out: a summary key, or ``growth`` (final / initial tumour cells)."""
    if name == "growth":
        return float(summary["tumour_cells_final"]) / float(summary["tumour_cells_initial"])
    return float(summary[name])


def per_seed(cmp: Comparison, runs: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> tuple[list[int], np.ndarray]:
    """The comparison's value for every seed that every arm involved (and the untreated arm, for E) completed.

    ``runs[arm][seed]`` is the run summary. Returns the seeds and the values (signed, offset) in seed order."""
    need = set(cmp.arms) | ({UNTREATED} if cmp.metric == "effect" else set())
    missing = [a for a in need if a not in runs]
    if missing:
        raise KeyError(f"{cmp.key}: no runs of arm(s) {', '.join(sorted(missing))}")
    seeds = sorted(set.intersection(*(set(runs[a]) for a in need)))

    def m(arm: str, seed: int) -> float:
        if cmp.metric == "effect":
            return 1.0 - metric(runs[arm][seed], "tumour_auc_cell_days") / metric(
                runs[UNTREATED][seed], "tumour_auc_cell_days"
            )
        return metric(runs[arm][seed], cmp.metric)

    vals = []
    for s in seeds:
        x = [m(a, s) for a in cmp.arms]
        if cmp.stat == "value":
            v = x[0]
        elif cmp.stat == "diff":
            v = x[0] - x[1]
        elif cmp.stat == "log_ratio":
            v = math.log(x[0] / x[1]) if x[0] > 0 and x[1] > 0 else math.nan
        elif cmp.stat == "bliss":
            v = x[0] - (x[1] + x[2] - x[1] * x[2])
        else:
            raise ValueError(f"{cmp.key}: unknown statistic {cmp.stat!r}")
        vals.append(cmp.sign * (v - cmp.offset))
    return seeds, np.asarray(vals, dtype=float)


def interval(values: Sequence[float], log: bool = False) -> dict[str, float]:
    """Mean with its 95% t interval and BCa interval; ``log``: the values are logs, all reported as ratios."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    m, lo, hi = mean_ci(x)
    _, blo, bhi = bca_mean_ci(x) if len(x) else (math.nan, math.nan, math.nan)
    out = {"n": int(len(x)), "effect": m, "lo": lo, "hi": hi, "bca_lo": blo, "bca_hi": bhi}
    if log:
        out = {k: (math.exp(v) if k != "n" and math.isfinite(v) else v) for k, v in out.items()}
    return out


def verdict(cmp: Comparison, ci: Mapping[str, float]) -> tuple[str, str]:
    """``(verdict, reading)`` of a comparison from its interval (rules in :mod:`abm.validate.experiments`)."""
    lo, hi = ci["lo"], ci["hi"]
    ref = math.exp(cmp.margin) if cmp.stat == "log_ratio" else cmp.margin
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return UNDETERMINED, "no interval (fewer than 2 seeds)"
    if cmp.expect == "above":
        ok = lo > ref
        return (EMERGES if ok else DOES_NOT), (f"interval above {ref:g}" if ok else f"interval reaches {ref:g}")
    if cmp.expect == "below":
        ok = hi < ref
        return (EMERGES if ok else DOES_NOT), (f"interval below {ref:g}" if ok else f"interval reaches {ref:g}")
    if cmp.expect == "bliss":
        if lo > 0:
            return EMERGES, "synergy (interval above 0)"
        if hi < 0:
            return DOES_NOT, "antagonism (interval below 0)"
        return EMERGES, "consistent with independence (interval contains 0)"
    raise ValueError(f"{cmp.key}: unknown verdict rule {cmp.expect!r}")


def pattern_verdict(verdicts: Sequence[str]) -> str:
    """A pattern emerges when every comparison does; partly when some do; undetermined when one cannot tell."""
    if any(v == UNDETERMINED for v in verdicts):
        return UNDETERMINED
    n = sum(v == EMERGES for v in verdicts)
    if n == len(verdicts):
        return EMERGES
    if n == 0:
        return DOES_NOT
    return f"partly ({n} of {len(verdicts)})"


def compare(cmp: Comparison, runs: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> dict[str, Any]:
    """Everything a table row needs about one comparison."""
    seeds, vals = per_seed(cmp, runs)
    ci = interval(vals, log=cmp.stat == "log_ratio")
    v, reading = verdict(cmp, ci)
    return {
        "key": cmp.key,
        "claim": cmp.claim,
        "stat": cmp.stat,
        "metric": cmp.metric,
        "arms": list(cmp.arms),
        "expect": cmp.expect,
        "margin": cmp.margin,
        "seeds": seeds,
        "per_seed": [float(math.exp(x)) if cmp.stat == "log_ratio" else float(x) for x in vals],
        **ci,
        "verdict": v,
        "reading": reading,
    }


RESPONDERS = ("CR", "PR")


def arm_summary(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Seed means of the main read-outs of one arm with BCa intervals (non-negative quantities: the interval stays
    within the data's range), and its proportions with Wilson intervals."""
    n = len(summaries)
    out: dict[str, Any] = {"n": n}
    for key in ("tumour_auc_relative", "growth", "max_n_ctl", "max_n_lak", "toxicity_max", "doses_held"):
        vals = [metric(s, key) for s in summaries]
        m, lo, hi = bca_mean_ci(np.asarray(vals))
        out[key] = {"mean": m, "lo": lo, "hi": hi}
    for name, hit in (
        ("responders", lambda s: s["best_response"] in RESPONDERS),
        ("complete", lambda s: s["best_response"] == "CR"),
        ("eradicated", lambda s: math.isfinite(float(s["time_to_eradication_day"]))),
        ("dlt", lambda s: bool(s["dose_limiting_toxicity"])),
    ):
        k = sum(bool(hit(s)) for s in summaries)
        lo, hi = wilson(k, n)
        out[name] = {"k": k, "n": n, "rate": k / n if n else math.nan, "lo": lo, "hi": hi}
    out["best_responses"] = [str(s["best_response"]) for s in summaries]
    return out
