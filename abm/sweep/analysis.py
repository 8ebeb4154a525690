"""Sweep analyses: dose-response (response, tumour burden and toxicity vs dose; therapeutic index and MTD),
combination grids (Bliss-independence and highest-single-agent excess with bootstrap intervals) and global
sensitivity (Sobol indices, Morris mu*/sigma, or rank correlations for a Latin hypercube).

Every function takes the dictionary :func:`abm.sweep.store.read_sweep` returns; :func:`analyze` writes the tables
(CSV) and figures (PNG) of the analysis the sweep names (``sweep.analysis``).

Conventions: a *responder* is a run whose best response is CR or PR (RECIST-like, on the longest diameter); a
*DLT* is a run whose course stopped at the dose-limiting toxicity threshold. Rates carry Wilson 95% intervals,
means t-based 95% intervals over replicates, and combination excesses percentile intervals from a bootstrap that
resamples replicates within every grid cell.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from abm.params import ParameterError

Z95 = 1.959963984540054
DLT_LIMIT = 0.33  # MTD: the highest dose whose dose-limiting rate stays below this (SCIENCE.md s4)
N_BOOT = 2000
RESPONDERS = ("CR", "PR")


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


def _responder(df) -> np.ndarray:
    return df["best_response"].isin(RESPONDERS).to_numpy(dtype=float)


def _need(df, cols: list[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ParameterError(f"{what} needs the summary metrics {', '.join(missing)}; add them to sweep.metrics")


# ------------------------------------------------------------------------------------------------ dose-response
def dose_response_table(data: dict[str, Any], key: str | None = None):
    """One row per dose level: responders (ORR), CR and PD rates, tumour AUC relative to the untreated level (dose
    0, else to the initial burden), toxicity score, doses held, DLT rate, each with its 95% interval."""
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
    ref = float(control["tumour_auc_cell_days"].mean()) if len(control) else math.nan
    rows = []
    for dose, g in df.groupby(key, sort=True):
        n = len(g)
        resp = _responder(g)
        cr = (g["best_response"] == "CR").to_numpy(dtype=float)
        pdr = (g["best_response"] == "PD").to_numpy(dtype=float)
        dlt = g["dose_limiting_toxicity"].to_numpy(dtype=float)
        auc = (
            g["tumour_auc_cell_days"].to_numpy(dtype=float) / ref
            if math.isfinite(ref)
            else g["tumour_auc_relative"].to_numpy(dtype=float)
        )
        row = {"dose": float(dose), "n": n}
        for name, x in (("orr", resp), ("cr_rate", cr), ("pd_rate", pdr), ("dlt_rate", dlt)):
            lo, hi = wilson(x.sum(), n)
            row |= {name: x.mean(), f"{name}_lo": lo, f"{name}_hi": hi}
        for name, x in (
            ("auc_rel_untreated", auc),
            ("toxicity_max", g["toxicity_max"]),
            ("doses_held", g["doses_held"]),
            ("doses_given", g["doses_given"]),
        ):
            m, lo, hi = mean_ci(np.asarray(x, dtype=float))
            row |= {name: m, f"{name}_lo": lo, f"{name}_hi": hi}
        rows.append(row)
    t = pd.DataFrame(rows)
    t.attrs["key"] = key
    t.attrs["auc_reference"] = "untreated (dose 0) mean AUC" if math.isfinite(ref) else "initial burden x days"
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


def therapeutic_index(table) -> tuple[float, str, Any]:
    """The dose that maximises response per unit toxicity among the treated levels.

    Response is the responder rate (ORR); when no level has responders, the tumour-burden effect
    1 - AUC/AUC_untreated is used. Toxicity is the mean peak toxicity score. Returns (dose, measure, series of
    the index per level)."""
    t = table[table["dose"] > 0].sort_values("dose")
    if t.empty:
        return math.nan, "", None
    if (t["orr"] > 0).any():
        eff, measure = t["orr"], "ORR / mean peak toxicity"
    else:
        eff, measure = (1 - t["auc_rel_untreated"]).clip(lower=0), "(1 - AUC/AUC_untreated) / mean peak toxicity"
    tox = t["toxicity_max"].clip(lower=1e-12)
    ti = eff / tox
    return float(t["dose"].iloc[int(np.argmax(ti.to_numpy()))]), measure, ti


def _dose_axis(ax, doses: np.ndarray) -> tuple[np.ndarray, Any]:
    """Log dose axis with 0 drawn half a decade left of the lowest positive dose."""
    pos = doses[doses > 0]
    if len(pos) == 0:
        return doses, None
    zero_at = pos.min() / 10**0.5
    x = np.where(doses > 0, doses, zero_at)
    ax.set_xscale("log")
    return x, zero_at


def plot_dose_response(table, path: Path, label: str = "dose", title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = table.sort_values("dose")
    doses = t["dose"].to_numpy()
    fig, axs = plt.subplots(2, 2, figsize=(10, 7.5), sharex=True)
    m, reached = mtd(t)
    ti_dose, measure, _ = therapeutic_index(t)
    for ax in axs.flat:
        x, zero_at = _dose_axis(ax, doses)
        if math.isfinite(m):
            ax.axvline(m, color="tab:red", ls="--", lw=1, label=f"MTD{'' if reached else ' (not reached: >= top)'}")
        if math.isfinite(ti_dose):
            ax.axvline(ti_dose, color="tab:green", ls=":", lw=1.5, label="best response / toxicity")

    def band(ax, col, color, lab):
        ax.plot(x, t[col], "o-", color=color, label=lab)
        if f"{col}_lo" in t:
            ax.fill_between(x, t[f"{col}_lo"], t[f"{col}_hi"], color=color, alpha=0.2)

    band(axs[0, 0], "orr", "tab:blue", "responders (CR+PR)")
    band(axs[0, 0], "cr_rate", "tab:purple", "CR")
    axs[0, 0].set_ylabel("fraction of runs")
    axs[0, 0].set_ylim(-0.03, 1.03)
    axs[0, 0].set_title("response (RECIST best response)")
    band(axs[0, 1], "auc_rel_untreated", "tab:brown", "tumour AUC / untreated")
    axs[0, 1].set_ylabel("tumour AUC relative to untreated")
    axs[0, 1].set_title("tumour burden")
    band(axs[1, 0], "toxicity_max", "tab:orange", "peak toxicity score")
    ax2 = axs[1, 0].twinx()
    ax2.plot(x, t["doses_held"], "s--", color="tab:gray", label="doses held")
    ax2.set_ylabel("doses held (mean)")
    axs[1, 0].set_ylabel("peak toxicity score")
    axs[1, 0].set_title("toxicity")
    band(axs[1, 1], "dlt_rate", "tab:red", "dose-limiting toxicity")
    axs[1, 1].axhline(DLT_LIMIT, color="k", lw=0.5)
    axs[1, 1].set_ylim(-0.03, 1.03)
    axs[1, 1].set_ylabel("DLT rate")
    axs[1, 1].set_title("dose-limiting events")
    for ax in axs[1]:
        ax.set_xlabel(label + " (leftmost point: 0)")
    for ax in axs.flat:
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title or f"dose-response, {int(t['n'].iloc[0])} replicates per level; 95% intervals")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    the responder rate and the tumour-burden effect 1 - AUC/AUC_untreated (cell means clipped to [0, 1]). Intervals: 95%
    percentile bootstrap over replicates, resampled within every cell."""
    import pandas as pd

    df = data["summary"]
    ka, kb = data["parameters"][:2]
    _need(df, ["best_response", "tumour_auc_cell_days"], "the combination analysis")
    if (df[ka].min() != 0) or (df[kb].min() != 0):
        raise ParameterError(f"the combination analysis needs 0 among the levels of {ka} and {kb} (single agents)")
    ctrl = df[(df[ka] == 0) & (df[kb] == 0)]
    if ctrl.empty:
        raise ParameterError("the combination analysis needs the 0 x 0 (untreated) cell")
    ref = float(ctrl["tumour_auc_cell_days"].mean())
    rng = np.random.default_rng(seed)
    effects = {
        "orr": lambda g: _responder(g),
        "burden_effect": lambda g: 1 - g["tumour_auc_cell_days"].to_numpy(float) / ref,
    }
    rows: dict[tuple[int, int], dict[str, Any]] = {}
    out: dict[str, Any] = {"keys": (ka, kb)}
    for name, fn in effects.items():
        a_lv, b_lv, cells = _cell_values(df, ka, kb, fn)
        na, nb = len(a_lv), len(b_lv)
        mean = np.full((na, nb), np.nan)
        boot = np.full((n_boot, na, nb), np.nan)
        for (i, j), v in cells.items():
            mean[i, j] = v.mean()
            boot[:, i, j] = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
        # a fractional effect lives in [0, 1]: clip the cell means (not single runs, so the control stays at 0)
        mean, boot = np.clip(mean, 0, 1), np.clip(boot, 0, 1)

        def excess(e):
            ea, eb = e[..., :, :1], e[..., :1, :]
            return e - (ea + eb - ea * eb), e - np.maximum(ea, eb)

        bliss, hsa = excess(mean)
        bb, bh = excess(boot)
        res = {
            "a_levels": a_lv,
            "b_levels": b_lv,
            "effect": mean,
            "bliss": bliss,
            "hsa": hsa,
            "effect_ci": np.nanpercentile(boot, [2.5, 97.5], axis=0),
            "bliss_ci": np.nanpercentile(bb, [2.5, 97.5], axis=0),
            "hsa_ci": np.nanpercentile(bh, [2.5, 97.5], axis=0),
        }
        out[name] = res
        for i in range(na):
            for j in range(nb):
                r = rows.setdefault((i, j), {ka: a_lv[i], kb: b_lv[j], "n": len(cells.get((i, j), []))})
                for q in ("effect", "bliss", "hsa"):
                    r[f"{name}_{q}"] = res[q][i, j]
                    r[f"{name}_{q}_lo"] = res[f"{q}_ci"][0, i, j]
                    r[f"{name}_{q}_hi"] = res[f"{q}_ci"][1, i, j]
    out["table"] = pd.DataFrame(list(rows.values()))
    return out


def plot_combination(grid: dict[str, Any], path: Path, effect: str = "burden_effect") -> Path:
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
                        color="k" if q != "effect" else "w",
                    )
            ax.set_xticks(range(len(g["b_levels"])), [f"{v:g}" for v in g["b_levels"]])
            ax.set_yticks(range(len(g["a_levels"])), [f"{v:g}" for v in g["a_levels"]])
            ax.set_xlabel(kb)
            ax.set_ylabel(ka)
            lab = "responders (CR+PR)" if name == "orr" else "1 - AUC/AUC_untreated"
            ax.set_title(f"{title}: {lab}", fontsize=9)
            fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle("IL-2 x IFN-alpha grid: mean [95% bootstrap interval over replicates]; bold = interval excludes 0")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
def analyze(sweep_dir: str | Path, out: str | Path, prefix: str = "") -> list[Path]:
    """Write the tables (CSV) and figures (PNG) of the sweep's analysis into ``out``; return the paths."""
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
    if kind == "dose_response":
        t = dose_response_table(data)
        m, reached = mtd(t)
        ti, measure, series = therapeutic_index(t)
        if series is not None:
            t["therapeutic_index"] = t["dose"].map(
                dict(zip(t[t["dose"] > 0].sort_values("dose")["dose"], series, strict=True))
            )
        p = out / f"{prefix}dose_response.csv"
        t.to_csv(p, index=False)
        written.append(p)
        p = out / f"{prefix}dose_response_summary.csv"
        import pandas as pd

        pd.DataFrame(
            [
                {
                    "parameter": t.attrs["key"],
                    "mtd": m,
                    "mtd_limit_reached": reached,
                    "dlt_limit": DLT_LIMIT,
                    "best_therapeutic_index_dose": ti,
                    "therapeutic_index_measure": measure,
                    "auc_reference": t.attrs["auc_reference"],
                }
            ]
        ).to_csv(p, index=False)
        written.append(p)
        written.append(plot_dose_response(t, out / f"{prefix}dose_response.png", label=t.attrs["key"]))
    elif kind == "combination":
        g = combination_grid(data, seed=int(data["spec"]["seed"]) % 2**32)
        p = out / f"{prefix}combination.csv"
        g["table"].to_csv(p, index=False)
        written += [p, plot_combination(g, out / f"{prefix}combination.png")]
    elif kind == "sensitivity":
        t = sensitivity_table(data)
        p = out / f"{prefix}sensitivity.csv"
        t.to_csv(p, index=False)
        written += [p, plot_sensitivity(t, data["spec"]["design"], out / f"{prefix}sensitivity.png")]
    return written
