"""Figures of a loaded run (:func:`abm.load`): lattice snapshots, field panels, a dashboard, 3D slices, comparisons.

Every function takes :class:`abm.io.Trajectory` objects (never a live model) and returns a
:class:`matplotlib.figure.Figure`; save it with ``fig.savefig("name.png" | ".pdf" | ".svg")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import style as st

OVERLAYS = ("heatmap", "contour")
FIELD_ALPHA = 0.7  # opacity of a field heat map drawn under the cells


def _check_field(run: Any, field: str | None) -> None:
    if field is not None and field not in run.species:
        raise ValueError(f"{run.path}: no field {field!r}; allowed: {', '.join(run.species)}")


def _check_overlay(overlay: str) -> None:
    if overlay not in OVERLAYS:
        raise ValueError(f"overlay={overlay!r}: allowed {', '.join(OVERLAYS)}")


def draw_lattice(
    ax,
    codes: np.ndarray,
    ext,
    *,
    field: np.ndarray | None = None,
    norm=None,
    cmap: str = "Blues",
    overlay: str = "heatmap",
) -> dict[str, Any]:
    """Draw one 2D code frame (with an optional field) on ``ax``; returns the artists, for animation updates.

    Empty sites are transparent over a white background, so a heat-map field shows through between cells.
    """
    ccmap, cnorm = st.cell_cmap()
    artists: dict[str, Any] = {}
    ax.set_facecolor("white")
    if field is not None and overlay == "heatmap":
        artists["field"] = ax.imshow(
            field,
            origin="lower",
            extent=ext,
            cmap=cmap,
            norm=norm,
            alpha=FIELD_ALPHA,
            interpolation="nearest",
            zorder=1,
        )
    artists["cells"] = ax.imshow(
        np.ma.masked_equal(codes, st.EMPTY),
        origin="lower",
        extent=ext,
        cmap=ccmap,
        norm=cnorm,
        interpolation="nearest",
        zorder=2,
    )
    if field is not None and overlay == "contour":
        ny, nx = field.shape
        x = np.linspace(ext[0], ext[1], nx, endpoint=False) + (ext[1] - ext[0]) / (2 * nx)
        y = np.linspace(ext[2], ext[3], ny, endpoint=False) + (ext[3] - ext[2]) / (2 * ny)
        levels = _contour_levels(norm, np.asarray(field, dtype=float))
        artists["field"] = ax.contour(
            x, y, np.asarray(field, dtype=float), levels=levels, cmap=cmap, norm=norm, linewidths=1.0, zorder=3
        )
        ax.clabel(artists["field"], fmt=lambda v: f"{v:.3g}", fontsize=6, inline=True)
    ax.set_xlim(ext[0], ext[1])
    ax.set_ylim(ext[2], ext[3])
    ax.set_aspect("equal")
    return artists


def _contour_levels(norm, field: np.ndarray | None = None) -> np.ndarray:
    """Contour levels within the field's own range (contours show its shape; the labels and the colour bar give
    the values): 7 levels, geometric on a log norm."""
    from matplotlib.colors import LogNorm

    lo, hi = norm.vmin, norm.vmax
    if field is not None and field.size:
        pos = field[field > 0]
        lo = max(float(pos.min()) if pos.size else lo, lo) if isinstance(norm, LogNorm) else float(field.min())
        hi = float(field.max())
    if not hi > lo:
        return np.array([hi])
    if isinstance(norm, LogNorm):
        return np.geomspace(lo, hi, 9)[1:-1]
    return np.linspace(lo, hi, 9)[1:-1]


def _field_colourbar(fig, ax, artists, run, field, norm, cmap):
    import matplotlib.cm as cm

    mappable = cm.ScalarMappable(norm=norm, cmap=cmap)
    cb = fig.colorbar(mappable, ax=ax, shrink=0.85, pad=0.02)
    cb.set_label(st.field_label(run, field))
    st.tidy_colourbar(cb)
    return cb


def snapshot_figure(
    run: Any,
    time_day: float | None = None,
    *,
    field: str | None = None,
    log: bool = False,
    overlay: str = "heatmap",
    units: str = "mm",
    ax=None,
    note: str = "",
):
    """The lattice at the snapshot nearest ``time_day`` (default: the last): cell types in the Okabe-Ito palette
    with a legend, vessels in black, axes in ``units`` ("mm" or "um"), a scale bar, and optionally one field
    (``"il2"``, ``"ifna"`` or ``"drug"``) as a translucent heat map or contours with a colour bar (``log=True``
    for a logarithmic scale). A 3D run gives :func:`slices_figure`. A field that is zero everywhere gets no
    made-up colour range: the cells are drawn alone with a note. ``note`` is added under the title.
    """
    st.use_agg()
    import matplotlib.pyplot as plt

    _check_field(run, field)
    _check_overlay(overlay)
    st.check_units(units)
    if run.shape_xyz[2] > 1:
        if ax is not None:
            raise ValueError("a 3D run needs a figure of its own (slices_figure); do not pass ax")
        return slices_figure(run, time_day, field=field, log=log, units=units)
    i = st.snapshot_index(run, time_day)
    nx, ny, _ = run.shape_xyz
    ext = st.extent(nx, ny, run.spacing_um, units)
    codes = st.display_codes(run.cell_type(i), st.vessel_mask(run))
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 5.2), layout="constrained")
    else:
        fig = ax.figure
    values = norm = None
    cmap = st.SPECIES_CMAPS.get(field or "", "Blues")
    empty = False
    if field is not None:
        values = run.field(field, i)
        empty = st.field_is_empty(values)
        if empty:  # nothing to scale: draw the cells alone and say so
            values = None
        else:
            norm = st.field_norm(values, log)
    arts = draw_lattice(ax, codes, ext, field=values, norm=norm, cmap=cmap, overlay=overlay)
    if values is not None:
        _field_colourbar(fig, ax, arts, run, field, norm, cmap)
    elif empty:
        st.empty_field_note(ax, field, run.field_units.get(field, ""))
    ax.legend(handles=st.cell_legend_handles(), loc="upper left", fontsize=8, framealpha=0.8, ncol=1)
    st.add_scale_bar(ax, ext[1], units)
    ax.set_xlabel(f"x ({'µm' if units == 'um' else units})")
    ax.set_ylabel(f"y ({'µm' if units == 'um' else units})")
    title = f"{st.scenario_name(run)}: day {run.snapshot_time_min[i] / st.MIN_PER_DAY:.2f}"
    ax.set_title(title + (f"\n({note})" if note else ""), fontsize=10 if note else None)
    return fig


def _mid_slices(arr: np.ndarray) -> dict[str, np.ndarray]:
    """Three orthogonal mid-slices of a (nz, ny, nx) array, each oriented (rows, cols) for imshow."""
    nz, ny, nx = arr.shape
    return {"xy": arr[nz // 2], "xz": arr[:, ny // 2, :], "yz": arr[:, :, nx // 2]}


def slices_figure(
    run: Any, time_day: float | None = None, *, field: str | None = None, log: bool = False, units: str = "mm"
):
    """A 3D run at one time: the xy, xz and yz mid-slices and a z-projection (immune cells drawn over tumour),
    in the same palette; an optional field heat map on the slices with one shared colour bar."""
    st.use_agg()
    import matplotlib.pyplot as plt

    _check_field(run, field)
    st.check_units(units)
    nx, ny, nz = run.shape_xyz
    if nz <= 1:
        raise ValueError(f"{run.path}: slices_figure needs a 3D run (lattice.nz > 1); use snapshot_figure")
    i = st.snapshot_index(run, time_day)
    codes = st.display_codes(run.cell_type(i), st.vessel_mask(run))
    h = run.spacing_um
    cmap = st.SPECIES_CMAPS.get(field or "", "Blues")
    fvals = run.field(field, i) if field is not None else None
    empty = fvals is not None and st.field_is_empty(fvals)
    if empty:
        fvals = None
    norm = st.field_norm(fvals, log) if fvals is not None else None
    cs = _mid_slices(codes)
    fs = _mid_slices(fvals) if fvals is not None else {}
    u = "µm" if units == "um" else units
    panels = {
        "xy": (cs["xy"], st.extent(nx, ny, h, units), ("x", "y"), f"xy slice, z = {nz // 2}"),
        "xz": (cs["xz"], st.extent(nx, nz, h, units), ("x", "z"), f"xz slice, y = {ny // 2}"),
        "yz": (cs["yz"], st.extent(ny, nz, h, units), ("y", "z"), f"yz slice, x = {nx // 2}"),
        "proj": (
            st.project_codes(codes, axis=0),
            st.extent(nx, ny, h, units),
            ("x", "y"),
            "projection along z (immune over tumour)",
        ),
    }
    fig, axes = plt.subplots(2, 2, figsize=(9.5, 8.5), layout="constrained")
    for ax, (key, (c, ext, (xl, yl), title)) in zip(axes.ravel(), panels.items()):
        draw_lattice(ax, c, ext, field=fs.get(key), norm=norm, cmap=cmap)
        ax.set(xlabel=f"{xl} ({u})", ylabel=f"{yl} ({u})", title=title)
        st.add_scale_bar(ax, ext[1], units)
    fig.legend(handles=st.cell_legend_handles(), loc="outside lower center", ncol=5, fontsize=9)
    if fvals is not None:
        _field_colourbar(fig, axes, None, run, field, norm, cmap)
    elif empty:
        st.empty_field_note(axes[0, 0], field, run.field_units.get(field, ""))
    fig.suptitle(f"{st.scenario_name(run)} (3D {nx}x{ny}x{nz}): day {run.snapshot_time_min[i] / st.MIN_PER_DAY:.2f}")
    return fig


def fields_figure(
    run: Any,
    time_day: float | None = None,
    *,
    shared: bool = False,
    log: bool = False,
    units: str = "mm",
    species: Sequence[str] | None = None,
):
    """One panel per species at the snapshot nearest ``time_day``, each with a colour bar in its units.
    ``shared=True`` gives every panel of the same units one colour scale. In 3D the xy mid-slice is shown."""
    st.use_agg()
    import matplotlib.pyplot as plt

    names = list(species) if species is not None else list(run.species)
    for n in names:
        _check_field(run, n)
    st.check_units(units)
    i = st.snapshot_index(run, time_day)
    nx, ny, nz = run.shape_xyz
    ext = st.extent(nx, ny, run.spacing_um, units)
    data = {}
    for n in names:
        v = run.field(n, i)
        data[n] = v[nz // 2] if v.ndim == 3 else v
    empty = {n: st.field_is_empty(data[n]) for n in names}
    norms = {n: st.field_norm(data[n], log) for n in names if not empty[n]}
    if shared:
        groups: dict[str, list[str]] = {}
        for n in names:
            if not empty[n]:
                groups.setdefault(run.field_units.get(n, ""), []).append(n)
        for members in groups.values():
            norm = st.field_norm([data[m] for m in members], log)
            for m in members:
                norms[m] = norm
    fig, axes = plt.subplots(1, len(names), figsize=(4.3 * len(names), 4.0), layout="constrained", squeeze=False)
    vess = st.vessel_mask(run)
    vess = vess[nz // 2] if vess.ndim == 3 else vess
    u = "µm" if units == "um" else units
    for ax, n in zip(axes[0], names):
        im = None
        if empty[n]:  # zero everywhere: no colour range to invent; say so
            ax.set_facecolor("white")
            ax.set_xlim(ext[0], ext[1])
            ax.set_ylim(ext[2], ext[3])
            ax.set_aspect("equal")
            st.empty_field_note(ax, n, run.field_units.get(n, ""))
        else:
            im = ax.imshow(
                data[n],
                origin="lower",
                extent=ext,
                cmap=st.SPECIES_CMAPS.get(n, "viridis"),
                norm=norms[n],
                interpolation="nearest",
            )
        if vess.any():
            ax.contour(
                vess.astype(float),
                levels=[0.5],
                colors=st.CELL_COLOURS[st.VESSEL_CODE],
                linewidths=0.6,
                extent=ext,
                origin="lower",
            )
        if im is not None:
            cb = fig.colorbar(im, ax=ax, shrink=0.85, pad=0.02)
            cb.set_label(st.field_label(run, n))
            st.tidy_colourbar(cb)
        ax.set(xlabel=f"x ({u})", ylabel=f"y ({u})", title=st.SPECIES_LABELS.get(n, n))
        st.add_scale_bar(ax, ext[1], units)
    where = f", z = {nz // 2} slice" if nz > 1 else ""
    fig.suptitle(
        f"{st.scenario_name(run)}: fields at day {run.snapshot_time_min[i] / st.MIN_PER_DAY:.2f}{where}"
        + (" (shared scales)" if shared else "")
    )
    return fig


# ---------------------------------------------------------------- time series


def _days(run: Any) -> np.ndarray:
    return np.asarray(run.time_min, dtype=float) / st.MIN_PER_DAY


def plot_counts(ax, run: Any, *, colour=None, label_prefix: str = "") -> None:
    t = _days(run)
    for code, key in st.CELL_OBSERVABLE.items():
        if key in run.observables:
            ax.plot(
                t,
                run.observables[key],
                color=colour or st.CELL_COLOURS[code],
                label=f"{label_prefix}{st.CELL_LABELS[code]}",
            )
    ax.set(xlabel="time (days)", ylabel="cells", title="cells by type", yscale="symlog")


def recist_status(d: np.ndarray, n_tumour: np.ndarray, resp) -> np.ndarray:
    """RECIST-like status at each time, by the rules the model classifies with (abm.observables): CR when no
    tumour cells are left (at most ``complete_response_cells``), PR at >= the shrinkage below baseline, PD at >= the
    growth over the running nadir (only while the nadir is positive: after the lesion has vanished there is no
    measurable disease to grow by a fraction), SD otherwise."""
    d = np.asarray(d, dtype=float)
    out = np.full(d.shape, "SD", dtype="<U2")
    if d.size == 0:
        return out
    nadir = np.minimum.accumulate(d)
    if d[0] > 0:
        out[(nadir > 0) & (d >= (1.0 + resp.progression_growth) * nadir)] = "PD"
        out[d <= (1.0 - resp.partial_response_shrinkage) * d[0]] = "PR"
    out[np.asarray(n_tumour, dtype=float) <= resp.complete_response_cells] = "CR"
    return out


def _spans(t: np.ndarray, mask: np.ndarray) -> list[tuple[float, float]]:
    """(start, end) times of the runs of True in ``mask`` (each run extends to the next sample)."""
    out = []
    idx = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    for s0, s1 in zip(idx[::2], idx[1::2]):
        out.append((float(t[s0]), float(t[min(s1, len(t) - 1)])))
    return out


def plot_diameter(ax, run: Any) -> None:
    """Lesion diameter with the RECIST bands: partial response at or below (1 - shrinkage) x baseline,
    progression at or above (1 + growth) x the running nadir while the nadir is positive, and the complete
    response (no tumour cells left) shaded as such (not as progression, though the nadir is then 0)."""
    t = _days(run)
    obs = run.observables
    key = "tumour_lesion_diameter_mm" if "tumour_lesion_diameter_mm" in obs else "tumour_longest_diameter_mm"
    d = np.asarray(obs[key], dtype=float)
    resp = st.run_params(run).response
    ax.plot(t, d, color=st.CELL_COLOURS[st.TUMOUR], label="lesion diameter (RECIST)")
    if key != "tumour_longest_diameter_mm":
        ax.plot(
            t,
            obs["tumour_longest_diameter_mm"],
            color=st.CELL_COLOURS[st.TUMOUR],
            lw=0.8,
            ls=":",
            label="all tumour cells",
        )
    if d.size:
        n_t = np.asarray(obs.get("n_tumour", np.ones_like(d)), dtype=float)
        status = recist_status(d, n_t, resp)
        cr = status == "CR"
        pr = (1.0 - resp.partial_response_shrinkage) * d[0]
        nadir = np.minimum.accumulate(d)
        pd_line = (1.0 + resp.progression_growth) * nadir
        every = np.asarray(obs.get("tumour_longest_diameter_mm", d), dtype=float)
        top = max(float(np.nanmax(d)), float(np.nanmax(pd_line)), float(np.nanmax(every)))
        top = top * 1.15 or 1.0
        ax.axhspan(
            0.0,
            pr,
            color=st.OKABE_ITO["bluish_green"],
            alpha=0.15,
            label=f"partial response (-{resp.partial_response_shrinkage:.0%} of baseline)",
        )
        ax.fill_between(
            t,
            pd_line,
            top,
            where=(nadir > 0) & ~cr,
            color=st.OKABE_ITO["vermillion"],
            alpha=0.15,
            lw=0,
            label=f"progression (+{resp.progression_growth:.0%} over nadir)",
            gid="recist-progression",
        )
        for k, (t0, t1) in enumerate(_spans(t, cr)):
            ax.axvspan(
                t0,
                t1 if t1 > t0 else t0 + 1e-3,
                color=st.OKABE_ITO["sky_blue"],
                alpha=0.3,
                lw=0,
                label="complete response (no tumour cells)" if k == 0 else None,
                gid="recist-complete-response",
            )
        ax.set_ylim(0.0, top)
    ax.set(xlabel="time (days)", ylabel="longest diameter (mm)", title="tumour size (RECIST)")
    ax.legend(fontsize=7, loc="upper left", framealpha=0.8)


DOSE_MARKERS = {"dose_given": ("v", "given"), "dose_held": ("X", "held"), "dose_cancelled": ("o", "cancelled")}


def plot_plasma(ax, run: Any) -> dict[str, Any]:
    """Plasma levels per species on a log axis that spans LOG_DYNAMIC_RANGE below each axis's peak (washout tails
    are not drawn down to 1e-12). A species in other units goes on a twin axis. Returns the axes by unit."""
    t = _days(run)
    axes_by_unit: dict[str, Any] = {}
    peak: dict[str, float] = {}
    handles = []
    for sp in run.species:
        key = f"plasma_{sp}"
        if key not in run.observables or not np.any(np.asarray(run.observables[key]) > 0):
            continue  # a species never given has nothing to show on a log axis
        unit = run.observable_units.get(key, "")
        if unit not in axes_by_unit:
            axes_by_unit[unit] = ax if not axes_by_unit else ax.twinx()
            axes_by_unit[unit].set_ylabel(f"plasma ({unit}, log)")
        a = axes_by_unit[unit]
        y = np.asarray(run.observables[key], dtype=float)
        peak[unit] = max(peak.get(unit, 0.0), float(np.nanmax(y)))
        (line,) = a.plot(
            t,
            np.where(y > 0, y, np.nan),
            color=st.SPECIES_COLOURS.get(sp),
            label=f"{st.SPECIES_LABELS.get(sp, sp)} ({unit})",
        )
        handles.append(line)
        a.set_yscale("log")
    for unit, a in axes_by_unit.items():
        a.set_ylim(peak[unit] / st.LOG_DYNAMIC_RANGE, peak[unit] * 2.0)
    ax.set_xlabel("time (days)")
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper right", framealpha=0.8)
    else:
        ax.text(0.5, 0.5, "no drug in plasma", transform=ax.transAxes, ha="center", va="center", color="0.3")
    return axes_by_unit


def plot_doses(ax, run: Any) -> list[str]:
    """Dose events as a strip of rows, one per drug and outcome: given (filled triangle in the drug's colour),
    held for toxicity (black cross) and cancelled (open circle), each row labelled with its count. Returns the
    row labels (top to bottom)."""
    rows = []
    for kind, (marker, word) in DOSE_MARKERS.items():
        evs = [e for e in run.events if e["kind"] == kind]
        for sp in sorted({e["drug"] for e in evs}):
            te = [e["time_min"] / st.MIN_PER_DAY for e in evs if e["drug"] == sp]
            rows.append((sp, kind, marker, word, te))
    rows.sort(key=lambda r: (r[0], list(DOSE_MARKERS).index(r[1])))
    labels = []
    for k, (sp, kind, marker, word, te) in enumerate(rows):
        y = len(rows) - 1 - k
        colour = st.SPECIES_COLOURS.get(sp, "k") if kind == "dose_given" else ("k" if kind == "dose_held" else "0.4")
        ax.plot(
            te,
            np.full(len(te), float(y)),
            marker,
            color=colour,
            ls="",
            mfc="none" if kind == "dose_cancelled" else colour,
            mew=1.0,
            ms=5 if kind == "dose_given" else 6,
            gid=kind,
            clip_on=False,  # a dose at day 0 sits on the left edge: draw it whole (it stays inside its row)
        )
        labels.append(f"{st.SPECIES_LABELS.get(sp, sp)} {word} ({len(te)})")
    ax.set_yticks(range(len(rows)), labels[::-1] if labels else [], fontsize=7)
    ax.set_ylim(-0.6, max(len(rows), 1) - 0.4)
    ax.tick_params(axis="x", labelbottom=False)
    if not rows:
        ax.set_yticks([])
        ax.text(0.5, 0.5, "no doses", transform=ax.transAxes, ha="center", va="center", fontsize=7, color="0.3")
    ax.grid(axis="x", color="0.9", lw=0.5)
    return labels


def plot_toxicity(ax, run: Any) -> None:
    t = _days(run)
    pat = st.run_params(run).patient
    ax.plot(t, run.observables["toxicity"], color=st.OKABE_ITO["reddish_purple"], label="toxicity score")
    ax.axhline(
        pat.toxicity_hold_threshold,
        color=st.OKABE_ITO["orange"],
        ls="--",
        label=f"hold threshold ({pat.toxicity_hold_threshold:g})",
    )
    ax.axhline(
        pat.toxicity_dlt_threshold,
        color=st.OKABE_ITO["vermillion"],
        ls=":",
        label=f"DLT threshold ({pat.toxicity_dlt_threshold:g})",
    )
    for e in run.events:
        if e["kind"] == "toxicity_dlt":
            ax.axvline(e["time_min"] / st.MIN_PER_DAY, color=st.OKABE_ITO["vermillion"], lw=1.5, label="DLT")
    ax.set(xlabel="time (days)", ylabel="score", title="systemic toxicity")
    ax.legend(fontsize=7, loc="upper left", framealpha=0.8)


def plot_kills(ax, run: Any) -> None:
    """Cumulative tumour-cell kills by killer (CTL, NK, LAK, drug)."""
    t = _days(run)
    for k, colour in st.KILLER_COLOURS.items():
        key = f"kills_{k}"
        if key in run.observables:
            ax.plot(t, np.cumsum(run.observables[key]), color=colour, label=k.upper() if k != "drug" else "drug")
    ax.set(xlabel="time (days)", ylabel="tumour cells killed (cumulative)", title="kills by killer")
    ax.legend(fontsize=7, loc="upper left", framealpha=0.8)


def dashboard_figure(run: Any, *, field: str | None = "il2", time_day: float | None = None):
    """A run over time: cells by type, tumour diameter with the RECIST bands, plasma levels (log, 4 decades) under
    a strip of dose events (given / held / cancelled in rows of their own), toxicity with its hold and DLT
    thresholds, cumulative kills by killer, and the lattice at ``time_day`` (default: the last snapshot, or after
    a complete response the last snapshot that still has tumour cells, so the panel shows the tumour, not an
    empty tissue)."""
    st.use_agg()
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(16, 9.5), layout="constrained")
    gs = fig.add_gridspec(2, 3)
    g_pl = gs[0, 2].subgridspec(2, 1, height_ratios=[1, 4], hspace=0.02)
    ax_counts, ax_diam = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1])
    ax_plasma = fig.add_subplot(g_pl[1])
    ax_doses = fig.add_subplot(g_pl[0], sharex=ax_plasma)
    ax_tox, ax_kills, ax_lat = fig.add_subplot(gs[1, 0]), fig.add_subplot(gs[1, 1]), fig.add_subplot(gs[1, 2])
    plot_counts(ax_counts, run)
    ax_counts.legend(fontsize=7, loc="upper left", framealpha=0.8)
    plot_diameter(ax_diam, run)
    plot_plasma(ax_plasma, run)
    plot_doses(ax_doses, run)
    ax_doses.set_title("plasma levels and doses")
    plot_toxicity(ax_tox, run)
    plot_kills(ax_kills, run)
    ax = ax_lat
    if run.n_snapshots:
        note = ""
        if time_day is None:
            i, note = st.informative_snapshot(run)
            time_day = float(run.snapshot_time_min[i]) / st.MIN_PER_DAY
        if run.shape_xyz[2] == 1:
            snapshot_figure(run, time_day, field=field, ax=ax, log=True, note=note)
        else:  # 3D: the z projection of the cells only
            i = st.snapshot_index(run, time_day)
            nx, ny, _ = run.shape_xyz
            codes = st.project_codes(st.display_codes(run.cell_type(i), st.vessel_mask(run)))
            draw_lattice(ax, codes, st.extent(nx, ny, run.spacing_um, "mm"))
            ax.legend(handles=st.cell_legend_handles(), loc="upper left", fontsize=7)
            title = f"z projection, day {run.snapshot_time_min[i] / st.MIN_PER_DAY:.2f}"
            ax.set(xlabel="x (mm)", ylabel="y (mm)", title=title + (f"\n({note})" if note else ""))
    else:
        ax.set_axis_off()
        ax.set_title("no lattice snapshots")
    t_end = max(_days(run)[-1], 1e-9) if len(run.time_min) else 1
    for a in (ax_counts, ax_diam, ax_plasma, ax_tox, ax_kills):
        a.set_xlim(0, t_end)
    s = run.summary
    outcome = f" - response {s['response']} (best {s.get('best_response', '?')})" if "response" in s else ""
    fig.suptitle(f"{st.scenario_name(run)} (seed {run.attrs.get('seed', '?')}){outcome}")
    return fig


# ---------------------------------------------------------------- comparison


def compare_figure(
    runs: Sequence[Any],
    labels: Sequence[str] | None = None,
    *,
    field: str | None = "il2",
    log: bool = True,
    time_day: float | None = None,
    units: str = "mm",
):
    """Several runs side by side on aligned time: top row, each run's lattice at the same time (default: the
    last time all runs reached) with one shared field colour scale; below, tumour cells, longest diameter,
    plasma IL-2 and toxicity with shared axes, one line per run."""
    st.use_agg()
    import matplotlib.pyplot as plt

    runs = list(runs)
    if not runs:
        raise ValueError("compare_figure needs at least one run")
    labels = list(labels) if labels is not None else [st.scenario_name(r) for r in runs]
    if len(labels) != len(runs):
        raise ValueError(f"{len(labels)} labels for {len(runs)} runs")
    for r in runs:
        _check_field(r, field)
    n = len(runs)
    have_snaps = all(r.n_snapshots for r in runs)
    if time_day is None and have_snaps:
        time_day = min(float(r.snapshot_time_min[-1]) for r in runs) / st.MIN_PER_DAY
    fig = plt.figure(figsize=(max(4.0 * n, 10.0), 9.5), layout="constrained")
    sub = fig.subfigures(2, 1, height_ratios=[1.1, 1.0])
    same_grid = len({(r.shape_xyz, r.spacing_um) for r in runs}) == 1
    top = sub[0].subplots(1, n, squeeze=False, sharex=same_grid, sharey=same_grid)[0]
    if have_snaps:
        idx = [st.snapshot_index(r, time_day) for r in runs]
        fvals = []
        for r, i in zip(runs, idx):
            if field is not None:
                v = r.field(field, i)
                fvals.append(v[v.shape[0] // 2] if v.ndim == 3 else v)
        empty = field is not None and st.field_is_empty(fvals)
        show = field is not None and not empty
        norm = st.field_norm(fvals, log) if show else None
        cmap = st.SPECIES_CMAPS.get(field or "", "Blues")
        for k, (ax, r, i) in enumerate(zip(top, runs, idx)):
            nx, ny, nz = r.shape_xyz
            codes = st.display_codes(r.cell_type(i), st.vessel_mask(r))
            codes = codes[nz // 2] if codes.ndim == 3 else codes
            ext = st.extent(nx, ny, r.spacing_um, units)
            draw_lattice(ax, codes, ext, field=fvals[k] if show else None, norm=norm, cmap=cmap)
            if empty:
                st.empty_field_note(ax, field, r.field_units.get(field, ""))
            ax.set_title(f"{labels[k]}\nday {r.snapshot_time_min[i] / st.MIN_PER_DAY:.2f}", fontsize=10)
            ax.set_xlabel(f"x ({'µm' if units == 'um' else units})")
            st.add_scale_bar(ax, ext[1], units)
        top[0].set_ylabel(f"y ({'µm' if units == 'um' else units})")
        if show:
            _field_colourbar(sub[0], top, None, runs[0], field, norm, cmap)
        sub[0].legend(handles=st.cell_legend_handles(), loc="outside lower center", ncol=5, fontsize=8)
    else:
        for ax in top:
            ax.set_axis_off()
    bottom = sub[1].subplots(1, 4, sharex=True)
    series = (
        ("n_tumour", "tumour cells", "symlog"),
        ("tumour_lesion_diameter_mm", "lesion diameter (mm)", None),
        ("plasma_il2", "plasma IL-2 (pM)", "log"),
        ("toxicity", "toxicity score", None),
    )
    for ax, (key, ylabel, scale) in zip(bottom, series):
        for k, r in enumerate(runs):
            if key not in r.observables:
                continue
            y = np.asarray(r.observables[key], dtype=float)
            if scale == "log":
                y = np.where(y > 0, y, np.nan)
            ax.plot(_days(r), y, color=st.RUN_COLOURS[k % len(st.RUN_COLOURS)], label=labels[k], lw=1.2)
        if scale == "log" and not np.all([np.all(np.isnan(li.get_ydata())) for li in ax.lines]):
            ax.set_yscale("log")
        elif scale == "symlog":
            ax.set_yscale("symlog")
        ax.set(xlabel="time (days)", ylabel=ylabel)
    pat = st.run_params(runs[0]).patient
    bottom[3].axhline(pat.toxicity_hold_threshold, color="0.4", ls="--", lw=0.8, label="hold threshold")
    bottom[3].axhline(pat.toxicity_dlt_threshold, color="0.4", ls=":", lw=0.8, label="DLT threshold")
    if time_day is not None:
        for ax in bottom:
            ax.axvline(time_day, color="0.6", lw=0.8)
    bottom[0].legend(fontsize=8, loc="best", framealpha=0.8)
    fig.suptitle("comparison: " + ", ".join(labels))
    return fig
