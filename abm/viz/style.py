"""Shared look of every abm figure: the Okabe-Ito palette, lattice extents, scale bars, field norms, time picking.

Nothing here touches a model: the inputs are a loaded run (:func:`abm.load`) or plain arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision deficiencies.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}

# cell-type codes are those of abm.kernels.cells (EMPTY, TUMOUR, CTL, NK, LAK = 0..4); VESSEL_CODE is a
# display-only code for vessel sites (vessels are not cells and are not stored in the cell-type frames)
EMPTY, TUMOUR, CTL, NK, LAK = 0, 1, 2, 3, 4
VESSEL_CODE = 5
CELL_COLOURS = {
    EMPTY: "#FFFFFF",
    TUMOUR: OKABE_ITO["orange"],
    CTL: OKABE_ITO["blue"],
    NK: OKABE_ITO["bluish_green"],
    LAK: OKABE_ITO["reddish_purple"],
    VESSEL_CODE: OKABE_ITO["black"],
}
CELL_LABELS = {TUMOUR: "tumour", CTL: "CTL", NK: "NK", LAK: "LAK", VESSEL_CODE: "vessel"}
CELL_OBSERVABLE = {TUMOUR: "n_tumour", CTL: "n_ctl", NK: "n_nk", LAK: "n_lak"}
# drawing priority in a projection: a site column shows its highest-priority occupant (immune over tumour)
PROJECTION_PRIORITY = (EMPTY, TUMOUR, NK, CTL, LAK, VESSEL_CODE)

SPECIES_LABELS = {"il2": "IL-2", "ifna": "IFN-alpha", "drug": "drug", "cxcl10": "CXCL10"}
SPECIES_COLOURS = {
    "il2": OKABE_ITO["blue"],
    "ifna": OKABE_ITO["bluish_green"],
    "drug": OKABE_ITO["vermillion"],
    "cxcl10": OKABE_ITO["sky_blue"],
}
SPECIES_CMAPS = {"il2": "Blues", "ifna": "Greens", "drug": "Oranges", "cxcl10": "Purples"}
KILLER_COLOURS = {
    "ctl": CELL_COLOURS[CTL],
    "nk": CELL_COLOURS[NK],
    "lak": CELL_COLOURS[LAK],
    "drug": OKABE_ITO["vermillion"],
}
# distinct line colours for several runs side by side
RUN_COLOURS = (
    OKABE_ITO["blue"],
    OKABE_ITO["vermillion"],
    OKABE_ITO["bluish_green"],
    OKABE_ITO["orange"],
    OKABE_ITO["reddish_purple"],
    OKABE_ITO["sky_blue"],
    OKABE_ITO["black"],
    OKABE_ITO["yellow"],
)

LENGTH_UNITS = {"mm": 1e-3, "um": 1.0}  # factor from micrometres
MIN_PER_DAY = 1440.0
LOG_DYNAMIC_RANGE = 1e4  # a log colour scale spans at most this factor below its maximum
MIN_LOG_SPAN = 10.0  # ... and at least this factor (one decade)


def fmt_amount(x: float) -> str:
    """A dose or concentration for a label: 720,000 and 3,600 with thousands separators, 0.05 and 7.2 with three
    significant digits."""
    x = float(x)
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def use_agg() -> None:
    """Select the non-interactive backend unless one was chosen already (figures are written to files)."""
    import matplotlib

    matplotlib.use("Agg", force=False)


def cell_cmap():
    from matplotlib.colors import BoundaryNorm, ListedColormap

    codes = sorted(CELL_COLOURS)
    cmap = ListedColormap([CELL_COLOURS[k] for k in codes], name="abm_cells")
    norm = BoundaryNorm(np.arange(-0.5, len(codes) + 0.5), cmap.N)
    return cmap, norm


def check_units(units: str) -> float:
    if units not in LENGTH_UNITS:
        raise ValueError(f"units={units!r}: allowed length units are {sorted(LENGTH_UNITS)}")
    return LENGTH_UNITS[units]


def extent(nx: int, ny: int, spacing_um: float, units: str) -> tuple[float, float, float, float]:
    f = check_units(units) * spacing_um
    return (0.0, nx * f, 0.0, ny * f)


def scenario_name(run: Any) -> str:
    return str(run.attrs.get("scenario_name", "") or run.path.stem)


def run_params(run: Any):
    """The run's parameter tree (``run.params`` when the reader provides it, else parsed from the file)."""
    p = getattr(run, "params", None)
    if p is not None:
        return p
    from abm.params import Params

    return Params.from_json(run.parameters_json)


def snapshot_index(run: Any, time_day: float | None) -> int:
    """The snapshot nearest ``time_day`` (the last one when ``None``)."""
    n = run.n_snapshots
    if n == 0:
        raise ValueError(f"{run.path}: the run has no lattice snapshots (run with snapshot_every_min > 0)")
    if time_day is None:
        return n - 1
    t = np.asarray(run.snapshot_time_min) / MIN_PER_DAY
    if not np.isfinite(time_day) or time_day < 0 or time_day > t[-1] + 1e-9:
        raise ValueError(f"{run.path}: time {time_day} days is outside the snapshots, allowed 0 to {t[-1]:g} days")
    return int(np.argmin(np.abs(t - time_day)))


def tumour_at_snapshots(run: Any) -> np.ndarray:
    """Tumour-cell count at each snapshot, from the per-step observables (no frame is read)."""
    steps = np.asarray(run.steps)
    n = np.asarray(run.observables.get("n_tumour", np.zeros(len(steps))), dtype=float)
    if steps.size == 0:
        return np.zeros(run.n_snapshots)
    j = np.clip(np.searchsorted(steps, np.asarray(run.snapshot_steps)), 0, steps.size - 1)
    return n[j]


def informative_snapshot(run: Any) -> tuple[int, str]:
    """The snapshot a run's overview should show, and why: the last one, unless the tumour is gone by then (a
    complete response leaves an empty lattice); then the last snapshot that still has tumour cells."""
    n = run.n_snapshots
    if n == 0:
        raise ValueError(f"{run.path}: the run has no lattice snapshots (run with snapshot_every_min > 0)")
    tum = tumour_at_snapshots(run)
    if tum[-1] > 0 or not np.any(tum > 0):
        return n - 1, ""
    i = int(np.flatnonzero(tum > 0)[-1])
    gone = float(run.snapshot_time_min[i + 1]) / MIN_PER_DAY
    return i, f"last snapshot with tumour cells; none from day {gone:.2f}"


def vessel_mask(run: Any) -> np.ndarray:
    """Boolean mask shaped ``run.grid_shape``: True on vessel sites (flat index x + nx*(y + ny*z))."""
    nx, ny, nz = run.shape_xyz
    m = np.zeros(nx * ny * nz, dtype=bool)
    m[np.asarray(run.vessel_sites, dtype=np.int64)] = True
    return m.reshape(run.grid_shape)


def display_codes(cell_type: np.ndarray, vessels: np.ndarray | None) -> np.ndarray:
    """Cell-type frame with vessel sites set to :data:`VESSEL_CODE` (uint8)."""
    out = np.asarray(cell_type, dtype=np.uint8).copy()
    if vessels is not None:
        out[vessels] = VESSEL_CODE
    return out


def project_codes(codes: np.ndarray, axis: int = 0) -> np.ndarray:
    """Projection of a 3D code frame along ``axis``: each column shows its highest-priority occupant."""
    rank = np.zeros(max(CELL_COLOURS) + 1, dtype=np.uint8)
    for r, code in enumerate(PROJECTION_PRIORITY):
        rank[code] = r
    top = rank[codes].max(axis=axis)
    return np.asarray(PROJECTION_PRIORITY, dtype=np.uint8)[top]


def field_is_empty(values) -> bool:
    """True when a field holds no positive value anywhere (e.g. a drug never given): there is no range to show."""
    arrs = [np.asarray(v, dtype=np.float64) for v in (values if isinstance(values, list) else [values])]
    return not any(a.size and np.nanmax(a) > 0 for a in arrs)


def field_norm(values, log: bool, vmax: float | None = None, vmin_pos: float | None = None):
    """A colour norm for concentration data: linear from 0, or logarithmic from max(smallest positive value,
    max / LOG_DYNAMIC_RANGE) to the maximum, and always at least MIN_LOG_SPAN wide (so a near-uniform field is
    drawn near-uniform, not stretched over the colour map to magnify noise). ``vmax`` and ``vmin_pos`` give the
    range directly (e.g. over every frame of a film). An all-zero field has no range: test it with
    :func:`field_is_empty` and draw it as empty; here it gets an arbitrary 0-1 scale."""
    from matplotlib.colors import LogNorm, Normalize

    arrs = [np.asarray(v, dtype=np.float64).ravel() for v in (values if isinstance(values, list) else [values])]
    allv = np.concatenate(arrs) if arrs else np.zeros(1)
    top = float(np.nanmax(allv)) if vmax is None and allv.size else float(vmax or 0.0)
    if not np.isfinite(top) or top <= 0:
        top = 1.0
    if log:
        if vmin_pos is None:
            pos = allv[allv > 0]
            vmin_pos = float(pos.min()) if pos.size else top / LOG_DYNAMIC_RANGE
        lo = min(max(float(vmin_pos), top / LOG_DYNAMIC_RANGE), top / MIN_LOG_SPAN)
        return LogNorm(vmin=lo, vmax=top, clip=True)
    return Normalize(vmin=0.0, vmax=top)


def empty_field_note(ax, name: str, units: str = "") -> None:
    """Say on ``ax`` that a field is zero everywhere (instead of inventing a colour range for it)."""
    label = SPECIES_LABELS.get(name, name)
    ax.text(
        0.5,
        0.5,
        f"no {label} in the tissue\n(0 {units} everywhere)".replace(" )", ")"),
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=9,
        color="0.25",
        bbox={"facecolor": "white", "edgecolor": "0.6", "alpha": 0.85},
        gid="empty-field-note",
    )


def add_scale_bar(ax, width_data: float, units: str) -> None:
    """A scale bar of a round length near a fifth of ``width_data`` (in ``units``) in the lower right."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    target = width_data / 5.0
    if target <= 0:
        return
    mag = 10 ** np.floor(np.log10(target))
    length = max(m * mag for m in (1, 2, 5) if m * mag <= target)
    label = f"{length:g} {'µm' if units == 'um' else units}"
    bar = AnchoredSizeBar(
        ax.transData,
        length,
        label,
        "lower right",
        pad=0.3,
        color="black",
        frameon=True,
        size_vertical=width_data / 150.0,
        fontproperties={"size": 8},
    )
    bar.patch.set_alpha(0.7)
    ax.add_artist(bar)


def cell_legend_handles(include_vessel: bool = True):
    from matplotlib.patches import Patch

    codes = [TUMOUR, CTL, NK, LAK] + ([VESSEL_CODE] if include_vessel else [])
    return [Patch(facecolor=CELL_COLOURS[c], edgecolor="0.3", label=CELL_LABELS[c]) for c in codes]


def field_label(run_or_units: Any, name: str) -> str:
    units = run_or_units if isinstance(run_or_units, str) else run_or_units.field_units.get(name, "")
    return f"{SPECIES_LABELS.get(name, name)} ({units})"


def tidy_colourbar(cb) -> None:
    """Readable tick labels on a colour bar: plain numbers; a log range of two decades or less gets five labelled
    ticks."""
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fmt = FuncFormatter(lambda x, _pos: f"{x:.4g}")
    norm = cb.mappable.norm
    if isinstance(norm, LogNorm) and norm.vmax / norm.vmin <= 100.0:
        cb.set_ticks(np.geomspace(norm.vmin, norm.vmax, 5))
    cb.ax.yaxis.set_major_formatter(fmt)
    cb.ax.yaxis.set_minor_formatter(NullFormatter())
