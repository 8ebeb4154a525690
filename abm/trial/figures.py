"""The clinic's figures of a virtual trial, from its store: waterfall (best change per patient), swimmer (time on
study with responses, progression, DLT and held doses), spider (change at each assessment) and forest (each arm's
ORR, CR and DLT rates with exact intervals beside the clinical figures); and the Kaplan-Meier progression-free curves.

Colours are the Okabe-Ito palette (:mod:`abm.viz.style`); responses are confirmed RECIST 1.1 best overall responses
(:mod:`abm.trial.recist`); changes are of the sum of fragment diameters from baseline, in percent.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from abm.trial.spec import ENDPOINT_LABELS
from abm.viz.style import OKABE_ITO, use_agg

RESPONSE_COLOURS = {
    "CR": OKABE_ITO["blue"],
    "PR": OKABE_ITO["sky_blue"],
    "SD": OKABE_ITO["orange"],
    "PD": OKABE_ITO["vermillion"],
    "NE": "#999999",
}
RESPONSE_NAMES = {"CR": "complete", "PR": "partial", "SD": "stable", "PD": "progressive", "NE": "not evaluable"}
WATERFALL_TOP = 100.0  # bars above +100% are cut there and marked (their value printed)
SWIMMER_MAX = 60  # patients per swimmer panel; above it, responders first, the rest summarised


def _done(data: dict[str, Any]):
    df = data["patients"]
    return df[df["status"] == "done"].copy()


def _arms(data: dict[str, Any]):
    return [(a.name, a.title) for a in data["doc"].arms]


def _legend(ax, present) -> None:
    from matplotlib.patches import Patch

    handles = [
        Patch(color=RESPONSE_COLOURS[r], label=f"{r} ({RESPONSE_NAMES[r]})") for r in RESPONSE_COLOURS if r in present
    ]
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="lower left", frameon=False, title="best response", title_fontsize=7)


def waterfall(data: dict[str, Any], path: Path) -> Path:
    """Best change from baseline per patient (one bar each, sorted), coloured by the best overall response."""
    use_agg()
    import matplotlib.pyplot as plt

    df = _done(data)
    arms = _arms(data)
    r = data["doc"].recist
    fig, axs = plt.subplots(len(arms), 1, figsize=(9, 2.8 * len(arms) + 0.6), squeeze=False)
    for ax, (name, title) in zip(axs[:, 0], arms):
        g = df[df["arm"] == name].copy()
        g["v"] = g["best_change_pct"].astype(float)
        g = g.sort_values("v", ascending=False, na_position="first")
        v = g["v"].to_numpy()
        br = g["best_response"].astype(str).to_numpy()
        x = np.arange(len(g))
        shown = np.where(np.isfinite(v), np.minimum(v, WATERFALL_TOP), 0.0)
        ax.bar(x, shown, width=0.85, color=[RESPONSE_COLOURS.get(b, "#999999") for b in br], edgecolor="none")
        for i in np.flatnonzero(np.isfinite(v) & (v > WATERFALL_TOP)):
            ax.annotate(f"{v[i]:.0f}%", (x[i], WATERFALL_TOP), ha="center", va="bottom", fontsize=6, rotation=90)
        for i in np.flatnonzero(~np.isfinite(v)):
            ax.annotate("NE", (x[i], 0), ha="center", va="bottom", fontsize=6)
        ax.axhline(-100 * r.partial_response, color="0.3", ls="--", lw=0.8)
        ax.axhline(100 * r.progression, color="0.3", ls=":", lw=0.8)
        ax.axhline(0, color="0.2", lw=0.6)
        ax.text(
            len(g) - 0.5,
            -100 * r.partial_response,
            f"PR: -{100 * r.partial_response:g}% from baseline",
            ha="right",
            va="bottom",
            fontsize=7,
            color="0.3",
        )
        ax.text(
            len(g) - 0.5,
            100 * r.progression,
            f"+{100 * r.progression:g}% (PD is judged over the nadir)",
            ha="right",
            va="bottom",
            fontsize=7,
            color="0.3",
        )
        k = int(np.isin(br, ("CR", "PR")).sum())
        ax.set_title(f"{title}: ORR {k}/{len(g)}", fontsize=10, loc="left")
        ax.set_ylim(-105, WATERFALL_TOP + 15)
        ax.set_xlim(-0.8, max(len(g), 1) - 0.2)
        ax.set_xticks([])
        ax.set_ylabel("best change in the sum\nof diameters (%)", fontsize=8)
        _legend(ax, set(br))
    axs[-1, 0].set_xlabel(f"patients, sorted (bars above +{WATERFALL_TOP:g}% cut there, value printed)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def swimmer(data: dict[str, Any], path: Path) -> Path:
    """Time on study per patient (weeks): the bar's colour is the best response; markers: response (confirmed)
    start, CR start, progression, DLT, held doses; an arrow marks a response still ongoing at the last assessment."""
    use_agg()
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    df = _done(data)
    arms = _arms(data)
    panels = []
    for name, title in arms:
        g = df[df["arm"] == name].copy()
        g["resp"] = g["best_response"].isin(["CR", "PR"])
        g = g.sort_values(["resp", "stopped_day"], ascending=[False, False])
        note = ""
        if len(g) > SWIMMER_MAX:
            keep = g[g["resp"]].head(SWIMMER_MAX)
            rest = g.drop(keep.index)
            note = (
                f"; {len(rest)} other patients not drawn (median time on study "
                f"{np.nanmedian(rest['stopped_day'].to_numpy(float)) / 7:.1f} weeks)"
            )
            g = keep
        panels.append((title, g.iloc[::-1], note))
    heights = [max(len(g), 3) * 0.16 + 1.0 for _, g, _ in panels]
    fig, axs = plt.subplots(
        len(panels), 1, figsize=(9, sum(heights) + 0.8), squeeze=False, gridspec_kw={"height_ratios": heights}
    )
    tmax = max([float(np.nanmax(g["stopped_day"].to_numpy(float))) / 7 for _, g, _ in panels if len(g)] + [1.0])
    for ax, (title, g, note) in zip(axs[:, 0], panels):
        y = np.arange(len(g))
        stop = g["stopped_day"].to_numpy(float) / 7
        br = g["best_response"].astype(str).to_numpy()
        ax.barh(y, stop, height=0.7, color=[RESPONSE_COLOURS.get(b, "#999999") for b in br], edgecolor="none")
        ttr = g["time_to_response_day"].to_numpy(float) / 7
        tcr = g["time_to_cr_day"].to_numpy(float) / 7
        ttp = g["time_to_progression_day"].to_numpy(float) / 7
        dlt = g["dlt_day"].to_numpy(float) / 7
        ax.plot(ttr, y, ">", color="black", ms=4, ls="none")
        ax.plot(tcr, y, "*", color="white", mec="black", mew=0.5, ms=7, ls="none")
        ax.plot(ttp, y, "X", color="black", ms=5, ls="none")
        ax.plot(dlt, y, "D", color=OKABE_ITO["reddish_purple"], ms=4, ls="none")
        for yi, marks in zip(y, g["dose_marks"].astype(str)):
            try:
                held = [m[0] / 7 for m in json.loads(marks) if m[1] == "H"]
            except (ValueError, TypeError):
                held = []
            if held:
                ax.plot(held, [yi] * len(held), "|", color="0.25", ms=4, mew=0.6, ls="none")
        ongoing = g["response_ongoing"].astype(bool).to_numpy()
        for yi, s in zip(y[ongoing], stop[ongoing]):
            ax.annotate("", (s + 0.04 * tmax, yi), (s, yi), arrowprops={"arrowstyle": "->", "lw": 0.8})
        ax.set_yticks(y)
        ax.set_yticklabels([f"p{int(p)}" for p in g["patient"]], fontsize=5 if len(g) > 30 else 7)
        ax.set_xlim(0, tmax * 1.08)
        ax.set_title(f"{title}: {len(g)} patients{note}", fontsize=9, loc="left")
        ax.set_ylim(-0.8, max(len(g), 1) - 0.2)
    axs[-1, 0].set_xlabel("weeks from the start of treatment (bar: time on study)")
    handles = [
        Line2D([], [], marker=">", color="black", ls="none", label="confirmed response starts"),
        Line2D([], [], marker="*", color="white", mec="black", ls="none", ms=8, label="CR starts"),
        Line2D([], [], marker="X", color="black", ls="none", label="progression"),
        Line2D([], [], marker="D", color=OKABE_ITO["reddish_purple"], ls="none", label="DLT (course stopped)"),
        Line2D([], [], marker="|", color="0.25", ls="none", label="dose held"),
        Line2D([], [], marker=r"$\rightarrow$", color="black", ls="none", ms=9, label="response ongoing"),
    ]
    present = set(_done(data)["best_response"].astype(str))
    from matplotlib.patches import Patch

    handles += [Patch(color=RESPONSE_COLOURS[r], label=r) for r in RESPONSE_COLOURS if r in present]
    fig.legend(handles=handles, loc="upper center", ncol=6, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (sum(heights) + 0.8)))
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def spider(data: dict[str, Any], path: Path) -> Path:
    """Change from baseline of the sum of diameters at each assessment, one line per patient, coloured by the best
    overall response."""
    use_agg()
    import matplotlib.pyplot as plt

    df = _done(data)
    arms = _arms(data)
    r = data["doc"].recist
    fig, axs = plt.subplots(1, len(arms), figsize=(4.6 * len(arms) + 0.6, 4.2), squeeze=False, sharey=True)
    ymax = 0.0
    for ax, (name, title) in zip(axs[0], arms):
        g = df[df["arm"] == name]
        for br, s in zip(g["best_response"].astype(str), g["assessments"].astype(str)):
            try:
                pts = json.loads(s)
            except (ValueError, TypeError):
                continue
            t = [0.0] + [p[0] / 7 for p in pts]
            v = [0.0] + [p[2] if p[2] is not None else math.nan for p in pts]
            ymax = max([ymax] + [x for x in v if math.isfinite(x)])
            ax.plot(t, v, "-o", ms=2.5, lw=0.8, alpha=0.75, color=RESPONSE_COLOURS.get(br, "#999999"))
        ax.axhline(-100 * r.partial_response, color="0.3", ls="--", lw=0.8)
        ax.axhline(100 * r.progression, color="0.3", ls=":", lw=0.8)
        ax.axhline(0, color="0.2", lw=0.6)
        ax.set_title(f"{title} (n = {len(g)})", fontsize=9, loc="left")
        ax.set_xlabel("weeks from the start of treatment")
        _legend(ax, set(g["best_response"].astype(str)))
    axs[0, 0].set_ylabel("change in the sum of diameters\nfrom baseline (%)")
    axs[0, 0].set_ylim(-105, max(30.0, ymax * 1.08))
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def forest(data: dict[str, Any], arms, clin, path: Path) -> Path:
    """Each arm's ORR, CR and DLT rates (filled circles, exact 95% intervals) with the clinic's figures for the
    same arm and endpoint beside them (open squares, exact 95% intervals)."""
    use_agg()
    import matplotlib.pyplot as plt

    rows = []  # (label, rate, lo, hi, kind)
    for _, a in arms.iterrows():
        for ep in ("orr", "cr_rate", "dlt_rate"):
            if a["n"]:
                rows.append(
                    (
                        f"{a['label']}: {ENDPOINT_LABELS[ep]}, model ({a[f'{ep}_k']}/{a['n']})",
                        a[ep],
                        a[f"{ep}_lo"],
                        a[f"{ep}_hi"],
                        "model",
                    )
                )
            for _, c in clin[(clin["arm"] == a["arm"]) & (clin["endpoint"] == ep)].iterrows() if len(clin) else []:
                who = f"{c['population']}, " if c["population"] else ""
                src = c["source"].split(":")[0]
                rows.append(
                    (
                        f"    clinic: {who}{src} ({c['clinic_k']}/{c['clinic_n']})",
                        c["clinic_rate"],
                        c["clinic_lo"],
                        c["clinic_hi"],
                        "clinic",
                    )
                )
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(rows) + 1.3))
    y = np.arange(len(rows))[::-1]
    for yi, (_, rate, lo, hi, kind) in zip(y, rows):
        col = OKABE_ITO["blue"] if kind == "model" else OKABE_ITO["vermillion"]
        ax.plot([100 * lo, 100 * hi], [yi, yi], color=col, lw=1.6)
        ax.plot(
            100 * rate, yi, "o" if kind == "model" else "s", color=col, mfc=col if kind == "model" else "white", ms=6
        )
    ax.set_yticks(y)
    ax.set_yticklabels([r[0] for r in rows], fontsize=7)
    hi = max([100 * r[3] for r in rows if math.isfinite(r[3])] + [10.0])
    ax.set_xlim(0, min(100.0, hi * 1.08) if hi < 92 else 100.0)
    ax.set_xlabel("patients with the endpoint (%), exact 95% interval")
    ax.grid(axis="x", color="0.9")
    from matplotlib.lines import Line2D

    ax.legend(
        handles=[
            Line2D([], [], marker="o", color=OKABE_ITO["blue"], label="virtual trial"),
            Line2D([], [], marker="s", color=OKABE_ITO["vermillion"], mfc="white", label="clinical trial"),
        ],
        fontsize=8,
        loc="lower right",
        frameon=False,
    )
    ax.set_title(f"{data['doc'].trial.name}: model beside the clinic", fontsize=10, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def pfs(data: dict[str, Any], table, path: Path) -> Path:
    """Kaplan-Meier progression-free curves by arm (``analysis.pfs_table``: steps with the 95% log-log band shaded,
    censoring ticks). The model has no deaths: this is the time to RECIST progression."""
    use_agg()
    import matplotlib.pyplot as plt

    cycle = [OKABE_ITO[c] for c in ("blue", "vermillion", "bluish_green", "orange", "reddish_purple", "sky_blue")]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for (name, title), col in zip(_arms(data), cycle * 4):
        g = table[table["arm"] == name]
        if not len(g):
            continue
        d = g["day"].to_numpy(float) / 7
        ax.step(d, 100 * g["survival"], where="post", color=col, lw=1.5, label=f"{title} (n = {g['at_risk'].iloc[0]})")
        ax.fill_between(d, 100 * g["lo"], 100 * g["hi"], step="post", color=col, alpha=0.15, lw=0)
        cens = (g["events"] == 0).to_numpy() & (g["day"] > 0).to_numpy()
        ax.plot(d[cens], 100 * g["survival"].to_numpy()[cens], "|", color=col, ms=7)
    ax.set_ylim(0, 102)
    ax.set_xlabel("weeks from the start of treatment")
    ax.set_ylabel("progression-free (%)")
    ax.legend(fontsize=8, frameon=False, loc="lower left")
    ax.set_title(f"{data['doc'].trial.name}: time to RECIST progression (Kaplan-Meier)", fontsize=10, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
