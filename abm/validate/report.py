"""The validation suite's outputs: ``results.json`` (everything), ``table.csv`` and ``table.md`` (one row per
comparison), ``arms.csv`` (per-arm read-outs) and one figure per pattern (``P1.png`` ...)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from abm.validate.experiments import ARMS, UNTREATED, Pattern
from abm.validate.runner import SuiteRuns
from abm.validate.stats import DOES_NOT, EMERGES, arm_summary, compare, pattern_verdict

TABLE_COLUMNS = (
    "pattern",
    "comparison",
    "claim",
    "effect",
    "ci_lo",
    "ci_hi",
    "bca_lo",
    "bca_hi",
    "n_seeds",
    "rule",
    "verdict",
    "reading",
    "pattern_verdict",
    "seeds",
    "lattice",
    "days",
    "suite_wall_s",
    "runs_cpu_s",
    "load_start",
    "load_end",
    "command",
)


def rule_text(row: dict[str, Any]) -> str:
    """The verdict rule of a row in words ("CI > 0", "CI < 0.05", "Bliss: CI not < 0")."""
    ref = math.exp(row["margin"]) if row["stat"] == "log_ratio" else row["margin"]
    if row["expect"] == "above":
        return f"CI > {ref:g}"
    if row["expect"] == "below":
        return f"CI < {ref:g}"
    return "Bliss: CI not < 0"


def build_results(patterns: list[Pattern], suite: SuiteRuns, meta: dict[str, Any]) -> dict[str, Any]:
    """Every number the tables and figures show, as one JSON-able dictionary."""
    pats = []
    for p in patterns:
        rows = []
        for c in p.comparisons:
            try:
                row = compare(c, suite.runs)
            except KeyError as e:  # an arm with no completed run: the row says so
                row = {
                    "key": c.key,
                    "claim": c.claim,
                    "stat": c.stat,
                    "expect": c.expect,
                    "margin": c.margin,
                    "arms": list(c.arms),
                    "seeds": [],
                    "n": 0,
                    **dict.fromkeys(("effect", "lo", "hi", "bca_lo", "bca_hi"), math.nan),
                    "verdict": "undetermined",
                    "reading": f"not measured: {e.args[0]}",
                }
            ids = [f"{a}@s{s}" for a in set(c.arms) | {UNTREATED} for s in row["seeds"]]
            row["runs_cpu_s"] = float(sum(suite.elapsed_s.get(i, 0.0) for i in ids))
            row["rule"] = rule_text(row)
            rows.append(row)
        pats.append(
            {
                "key": p.key,
                "title": p.title,
                "claim": p.claim,
                "arms": list(p.arms),
                "verdict": pattern_verdict([r["verdict"] for r in rows]),
                "comparisons": rows,
            }
        )
    arms = {}
    for name in dict.fromkeys(a for p in patterns for a in (UNTREATED, *p.arms)):
        arm = ARMS[name]
        got = [suite.runs.get(name, {})[s] for s in sorted(suite.runs.get(name, {}))]
        arms[name] = {
            "scenario": arm.scenario,
            "sets": list(arm.sets),
            "description": arm.description,
            **(arm_summary(got) if got else {"n": 0}),
        }
    return {
        **meta,
        "wall_s": suite.wall_s,
        "workers": suite.workers,
        "load_start": list(suite.load_start),
        "load_end": list(suite.load_end),
        "patterns": pats,
        "arms": arms,
        "runs_done": sorted(f"{a}@s{s}" for a, d in suite.runs.items() for s in d),
        "failures": suite.failures,
        "runs": {a: {str(s): v for s, v in sorted(d.items())} for a, d in suite.runs.items()},
        "elapsed_s": suite.elapsed_s,
        "curves": {a: {str(s): v for s, v in sorted(d.items())} for a, d in suite.curves.items()},
    }


def _num(x: float, fmt: str = ".3g") -> str:
    return "nan" if x is None or not math.isfinite(x) else format(x, fmt)


def _load(x: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in x)


def table_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in res["patterns"]:
        for r in p["comparisons"]:
            out.append(
                {
                    "pattern": p["key"],
                    "comparison": r["key"],
                    "claim": r["claim"],
                    "effect": r["effect"],
                    "ci_lo": r["lo"],
                    "ci_hi": r["hi"],
                    "bca_lo": r["bca_lo"],
                    "bca_hi": r["bca_hi"],
                    "n_seeds": r["n"],
                    "rule": r["rule"],
                    "verdict": r["verdict"],
                    "reading": r["reading"],
                    "pattern_verdict": p["verdict"],
                    "seeds": " ".join(str(s) for s in r["seeds"]),
                    "lattice": res["lattice"],
                    "days": res["days"],
                    "suite_wall_s": round(res["wall_s"], 1),
                    "runs_cpu_s": round(r["runs_cpu_s"], 1),
                    "load_start": _load(res["load_start"]),
                    "load_end": _load(res["load_end"]),
                    "command": res["command"],
                }
            )
    return out


def table_markdown(res: dict[str, Any]) -> str:
    """The table as Markdown, headed by the command, size, run time and load that made it."""
    lines = [
        f"`{res['command']}`",
        "",
        f"abm {res['abm_version']} (git {res['git_hash'] or '-'}); default virtual patient; lattice "
        f"{res['lattice']} sites; {res['days']:g} days; seeds {', '.join(str(s) for s in res['seeds'])}; "
        f"{len(res['runs_done'])} runs in {res['wall_s'] / 60:.1f} min on {res['workers'] or 1} worker "
        f"process{'es' * ((res['workers'] or 1) > 1)}; load average {_load(res['load_start'])} at the start, "
        f"{_load(res['load_end'])} at the end.",
        "",
        "| pattern | comparison | effect [95% CI] | rule | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for p in res["patterns"]:
        for r in p["comparisons"]:
            eff = f"{_num(r['effect'])} [{_num(r['lo'])}, {_num(r['hi'])}]"
            v = f"**{r['verdict']}**" if r["verdict"] == EMERGES else r["verdict"]
            if r["expect"] == "bliss" or r["verdict"] not in (EMERGES, DOES_NOT):
                v += f" ({r['reading']})"
            lines.append(f"| {p['key']} | {r['key']}: {r['claim']} | {eff} | {r['rule']} | {v} |")
    lines += ["", "| pattern | verdict |", "| --- | --- |"]
    lines += [f"| {p['key']}: {p['title']} | {p['verdict']} |" for p in res["patterns"]]
    lines += [
        "",
        "| arm | scenario and overrides | relative AUC | final/initial | peak CTL | peak toxicity | CR+PR | CR "
        "| best responses |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, a in res["arms"].items():
        if not a.get("n"):
            lines.append(f"| {name} | {a['scenario']} {' '.join(a['sets'])} | (no run) | | | | | | |")
            continue

        def m(k: str, fmt: str = ".3g", a=a) -> str:
            return f"{_num(a[k]['mean'], fmt)} [{_num(a[k]['lo'], fmt)}, {_num(a[k]['hi'], fmt)}]"

        def prop(k: str, a=a) -> str:
            return f"{a[k]['k']}/{a[k]['n']} [{a[k]['lo']:.2f}, {a[k]['hi']:.2f}]"

        sets = " ".join(f"`{s}`" for s in a["sets"])
        lines.append(
            f"| {name} | {a['scenario']} {sets} | {m('tumour_auc_relative')} | {m('growth')} | "
            f"{m('max_n_ctl', '.0f')} | {m('toxicity_max', '.2f')} | {prop('responders')} | {prop('complete')} | "
            f"{','.join(a['best_responses'])} |"
        )
    if res["failures"]:
        lines += ["", "Failed runs:", ""]
        lines += [f"- {k}: {v.splitlines()[0]}" for k, v in res["failures"].items()]
    lines += [
        "",
        "Effects are seed means of paired per-seed values with 95% t intervals; E = 1 - AUC(arm) / AUC(untreated) "
        "of the same seed. Arm read-outs: seed means with BCa bootstrap 95% intervals; proportions: Wilson 95% "
        "intervals.",
    ]
    return "\n".join(lines) + "\n"


def write_tables(res: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "table.csv", out / "table.md", out / "arms.csv"]
    paths[0].write_text(json.dumps(res, indent=1, default=_json_default) + "\n")
    with paths[1].open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=TABLE_COLUMNS)
        w.writeheader()
        w.writerows(table_rows(res))
    paths[2].write_text(table_markdown(res))
    with paths[3].open("w", newline="") as fh:
        cols = ["arm", "scenario", "sets", "n"]
        keys = ("tumour_auc_relative", "growth", "max_n_ctl", "max_n_lak", "toxicity_max", "doses_held")
        props = ("responders", "complete", "eradicated", "dlt")
        cols += [f"{k}_{q}" for k in keys for q in ("mean", "lo", "hi")]
        cols += [f"{k}_{q}" for k in props for q in ("k", "rate", "lo", "hi")]
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for name, a in res["arms"].items():
            row = {"arm": name, "scenario": a["scenario"], "sets": " ".join(a["sets"]), "n": a["n"]}
            if a["n"]:
                row.update({f"{k}_{q}": a[k][q] for k in keys for q in ("mean", "lo", "hi")})
                row.update({f"{k}_{q}": a[k][q] for k in props for q in ("k", "rate", "lo", "hi")})
            w.writerow(row)
    return paths


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple | set):
        return list(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


# ------------------------------------------------------------------------------------------------ figures
def plot_pattern(res: dict[str, Any], key: str, path: Path, doses: tuple[tuple[str, float], ...] = ()) -> Path:
    """One pattern's figure: tumour burden over time per arm (seed mean, seeds faint), the comparisons with their
    intervals and rules, and for a dose-response pattern effect and toxicity against dose."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = next(q for q in res["patterns"] if q["key"] == key)
    n_panels = 3 if doses else 2
    fig, axes = plt.subplots(1, n_panels, figsize=(5.2 * n_panels, 4.2))
    ax = axes[0]
    for i, arm in enumerate(p["arms"]):
        colour = f"C{i}"
        curves = res["curves"].get(arm, {})
        rel = []
        for c in curves.values():
            y = np.asarray(c["n_tumour"], dtype=float)
            y = y / y[0] if y[0] > 0 else y
            ax.plot(c["day"], np.maximum(y, 1e-3), color=colour, alpha=0.25, lw=0.8)
            rel.append(y)
        if rel:
            n = min(len(r) for r in rel)
            day = next(iter(curves.values()))["day"][:n]
            ax.plot(day, np.maximum(np.mean([r[:n] for r in rel], axis=0), 1e-3), color=colour, lw=2, label=arm)
    ax.set_yscale("log")
    ax.set_xlabel("day")
    ax.set_ylabel("tumour cells / initial (seeds faint, mean bold)")
    ax.set_title(f"{key}: tumour burden")
    ax.legend(fontsize=7, loc="best")

    ax = axes[1]
    rows = p["comparisons"]
    for j, r in enumerate(rows):
        y = len(rows) - 1 - j
        colour = "tab:green" if r["verdict"] == EMERGES else ("tab:red" if r["verdict"] == DOES_NOT else "grey")
        if math.isfinite(r["lo"]) and math.isfinite(r["hi"]):
            ax.plot([r["lo"], r["hi"]], [y, y], color=colour, lw=2)
        ax.plot([r["effect"]], [y], "o", color=colour)
        ax.plot(r["per_seed"] if "per_seed" in r else [], [y + 0.15] * len(r.get("per_seed", [])), "k.", ms=3)
        ref = math.exp(r["margin"]) if r["stat"] == "log_ratio" else r["margin"]
        ax.plot([ref, ref], [y - 0.35, y + 0.35], color="k", lw=1, ls="--")
    ax.axvline(0, color="k", lw=0.5)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{r['key']} ({r['rule']})" for r in reversed(rows)], fontsize=8)
    ax.set_xlabel("effect, 95% t interval (dots: seeds; dashed: rule)")
    ax.set_title(f"{key}: {p['verdict']}")

    if doses:
        ax = axes[2]
        xs = [d for _, d in doses]
        e_rows, t_rows = [], []
        for arm, _ in doses:
            runs = res["runs"].get(arm, {})
            base = res["runs"].get(UNTREATED, {})
            e = [1 - runs[s]["tumour_auc_cell_days"] / base[s]["tumour_auc_cell_days"] for s in runs if s in base]
            e_rows.append(e)
            t_rows.append([runs[s]["toxicity_max"] for s in runs])
        _band(ax, xs, e_rows, "tab:blue", "E (burden removed)")
        ax.set_xscale("log")
        ax.set_xlabel("IL-2 dose, multiple of 720,000 IU/kg q8h")
        ax.set_ylabel("E = 1 - AUC / AUC(untreated)", color="tab:blue")
        ax2 = ax.twinx()
        _band(ax2, xs, t_rows, "tab:red", "peak toxicity score")
        ax2.set_ylabel("peak toxicity score (hold 0.5, DLT 1.0)", color="tab:red")
        ax.set_title(f"{key}: dose-response")
    fig.suptitle(f"{key}: {p['title']}  ({res['lattice']}, {res['days']:g} d, {len(res['seeds'])} seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _band(ax, xs: list[float], rows: list[list[float]], colour: str, label: str) -> None:
    from abm.sweep.analysis import mean_ci

    stats = [mean_ci(np.asarray(r)) for r in rows]
    m = [s[0] for s in stats]
    ax.plot(xs, m, "o-", color=colour, label=label)
    lo = [s[1] if math.isfinite(s[1]) else s[0] for s in stats]
    hi = [s[2] if math.isfinite(s[2]) else s[0] for s in stats]
    ax.fill_between(xs, lo, hi, color=colour, alpha=0.2)
    for x, r in zip(xs, rows, strict=True):
        ax.plot([x] * len(r), r, ".", color=colour, ms=3)


def write_report(
    patterns: list[Pattern], suite: SuiteRuns, meta: dict[str, Any], out: Path
) -> tuple[dict[str, Any], list[Path]]:
    """Tables and one figure per pattern into ``out``; returns the results and the paths written."""
    res = build_results(patterns, suite, meta)
    paths = write_tables(res, out)
    for p in patterns:
        paths.append(plot_pattern(res, p.key, out / f"{p.key}.png", p.doses))
    return res, paths
