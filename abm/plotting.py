"""A first overview figure of a run read back from disk (the fuller visual layer is ``abm.viz``)."""

from __future__ import annotations

from typing import Any

import numpy as np

CELL_COLOURS = {0: "#ffffff", 1: "#E69F00", 2: "#0072B2", 3: "#009E73", 4: "#CC79A7"}  # Okabe-Ito
CELL_NAMES = {1: "tumour", 2: "CTL", 3: "NK", 4: "LAK"}


def overview_figure(run: Any):
    """Counts, plasma levels with doses, toxicity, and the final lattice with the IL-2 field."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    obs = run.observables
    t = np.asarray(run.time_min) / 1440.0
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)
    ax = axes[0, 0]
    for name, code in (("tumour", 1), ("ctl", 2), ("nk", 3), ("lak", 4)):
        ax.plot(t, obs[f"n_{name}"], color=CELL_COLOURS[code], label=CELL_NAMES[code])
    ax.set(xlabel="time (days)", ylabel="cells", title="cell counts", yscale="symlog")
    ax.legend(frameon=False)
    ax = axes[0, 1]
    for sp, colour in (("il2", "#0072B2"), ("ifna", "#009E73"), ("drug", "#D55E00")):
        key = f"plasma_{sp}"
        if key in obs and np.any(obs[key] > 0):
            ax.plot(t, obs[key], color=colour, label=f"{sp} ({run.observable_units.get(key, '')})")
    given = [e for e in run.events if e["kind"] == "dose_given"]
    held = [e for e in run.events if e["kind"] == "dose_held"]
    for evs, marker, label in ((given, "v", "dose given"), (held, "x", "dose held")):
        if evs:
            ax.plot(
                [e["time_min"] / 1440.0 for e in evs],
                np.full(len(evs), 1.0),
                marker,
                color="k",
                ls="",
                label=label,
                transform=ax.get_xaxis_transform(),
                clip_on=False,
                ms=4,
            )
    ax.set(xlabel="time (days)", ylabel="plasma concentration", title="plasma levels and doses", yscale="symlog")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False, fontsize=8)
    ax = axes[1, 0]
    ax.plot(t, obs["toxicity"], color="#CC79A7")
    ax.set(xlabel="time (days)", ylabel="score", title="systemic toxicity")
    ax2 = ax.twinx()
    ax2.plot(t, obs["tumour_lesion_diameter_mm"], color="#E69F00")
    ax2.set_ylabel("tumour lesion diameter (mm)", color="#E69F00")
    ax = axes[1, 1]
    if run.n_snapshots:
        ct = run.cell_type(-1)
        il2 = run.field("il2", -1)
        if ct.ndim == 3:  # 3D: the middle slice
            ct, il2 = ct[ct.shape[0] // 2], il2[il2.shape[0] // 2]
        ny, nx = ct.shape
        ext = (0, nx * run.spacing_um / 1000, 0, ny * run.spacing_um / 1000)
        im = ax.imshow(il2, origin="lower", extent=ext, cmap="Greys")
        fig.colorbar(im, ax=ax, label="IL-2 (pM)")
        cmap = ListedColormap([CELL_COLOURS[k] for k in range(5)])
        masked = np.ma.masked_where(ct == 0, ct)
        ax.imshow(masked, origin="lower", extent=ext, cmap=cmap, vmin=-0.5, vmax=4.5, interpolation="nearest")
        ax.set(xlabel="x (mm)", ylabel="y (mm)", title=f"lattice at day {run.snapshot_time_min[-1] / 1440.0:.1f}")
    name = run.attrs.get("scenario_name", "")
    fig.suptitle(f"{name}  (seed {run.attrs.get('seed', '?')})")
    return fig
