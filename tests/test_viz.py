"""abm.viz: figures, animations, the CLI sub-commands and the interactive page, on tiny 2D and 3D runs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

import abm  # noqa: E402
from abm import viz  # noqa: E402
from abm.viz import style as st  # noqa: E402

TINY_2D = ["lattice.nx=40", "lattice.ny=40", "init.tumour_radius_um=100"]
TINY_3D = ["lattice.nx=16", "lattice.ny=16", "lattice.nz=12", "init.tumour_radius_um=60"]
SNAP_MIN = 240.0
CELL_LEGEND = ["tumour", "CTL", "NK", "LAK", "vessel"]
MAGIC = {".png": b"\x89PNG", ".pdf": b"%PDF", ".svg": b"<?xml"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny 2D high-dose IL-2 run (1.5 days) and a tiny 3D IL-2 + IFN-alpha + 5-FU run (2.5 days: IFN-alpha from
    day 0, IL-2 from day 2, no 5-FU before week 5), on disk."""
    d = tmp_path_factory.mktemp("viz")
    abm.run("high_dose_il2", out=d / "r2.h5", seed=3, days=1.5, sets=TINY_2D, snapshot_every_min=SNAP_MIN)
    abm.run("il2_ifna_5fu", out=d / "r3.h5", seed=3, days=2.5, sets=TINY_3D, snapshot_every_min=SNAP_MIN)
    return abm.load(d / "r2.h5"), abm.load(d / "r3.h5")


CR_SETS = TINY_2D[:2] + [
    "init.tumour_radius_um=80",
    "ctl.recruit_per_vessel_per_day=5",
    "ctl.kill_prob=0.3",
    "nk.recruit_per_vessel_per_day=5",
    "nk.kill_prob=0.3",
]


@pytest.fixture(scope="module")
def cr_run(tmp_path_factory):
    """A tiny run that ends in a complete response (strong killers): tumour gone by day 0.23 of 2."""
    d = tmp_path_factory.mktemp("viz_cr")
    abm.run("high_dose_il2", out=d / "cr.h5", seed=3, days=2.0, sets=CR_SETS, snapshot_every_min=SNAP_MIN)
    run = abm.load(d / "cr.h5")
    assert run.summary["best_response"] == "CR" and run.observables["n_tumour"][-1] == 0
    return run


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def legend_texts(legend) -> list[str]:
    return [t.get_text() for t in legend.get_texts()]


def colourbar_labels(fig) -> list[str]:
    return [a.get_ylabel() for a in fig.axes if a.get_label() == "<colorbar>"]


def empty_notes(ax) -> list[str]:
    return [t.get_text() for t in ax.texts if t.get_gid() == "empty-field-note"]


def assert_saves(fig, tmp_path: Path, stem: str) -> None:
    for ext, magic in MAGIC.items():
        out = tmp_path / f"{stem}{ext}"
        fig.savefig(out, dpi=60)
        head = out.read_bytes()[:64]
        assert head.startswith(magic) or (ext == ".svg" and b"<svg" in out.read_bytes()[:2000]), (out, head)


# ---------------------------------------------------------------- 2D figures


def test_snapshot_2d_panels_legend_colourbar_and_formats(runs, tmp_path):
    r2, _ = runs
    fig = viz.snapshot_figure(r2, time_day=1.0, field="il2", log=True)
    main = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    assert len(main) == 1
    ax = main[0]
    assert legend_texts(ax.get_legend()) == CELL_LEGEND
    assert colourbar_labels(fig) == ["IL-2 (pM)"]
    field_img = ax.images[0]
    assert isinstance(field_img.norm, LogNorm)
    assert "day 1.00" in ax.get_title()
    assert ax.get_xlabel() == "x (mm)"
    # extent in mm: 40 sites of the lattice spacing
    assert ax.get_xlim()[1] == pytest.approx(40 * r2.spacing_um / 1000)
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    assert any(isinstance(a, AnchoredSizeBar) for a in ax.artists), "no scale bar"
    assert_saves(fig, tmp_path, "snapshot")


def test_snapshot_marks_vessels_and_cells_with_their_codes(runs):
    r2, _ = runs
    fig = viz.snapshot_figure(r2)  # no field: the only image is the cells
    ax = fig.axes[0]
    shown = np.ma.filled(ax.images[0].get_array(), st.EMPTY)
    ct = r2.cell_type(-1)
    vess = st.vessel_mask(r2)
    assert vess.sum() == len(r2.vessel_sites) > 0
    assert np.all(shown[vess] == st.VESSEL_CODE)
    assert np.array_equal(shown[~vess], ct[~vess])
    # the palette: tumour orange, vessel black (Okabe-Ito)
    cmap, norm = st.cell_cmap()
    assert matplotlib.colors.to_hex(cmap(norm(st.TUMOUR))) == "#e69f00"
    assert matplotlib.colors.to_hex(cmap(norm(st.VESSEL_CODE))) == "#000000"


def test_snapshot_units_contours_and_bad_input(runs):
    r2, _ = runs
    fig = viz.snapshot_figure(r2, 0.0, field="ifna", overlay="contour", units="um")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "x (µm)"
    assert ax.get_xlim()[1] == pytest.approx(40 * r2.spacing_um)
    # high-dose IL-2 gives no IFN-alpha: no made-up colour range, a note instead
    assert colourbar_labels(fig) == []
    assert empty_notes(ax) == ["no IFN-alpha in the tissue\n(0 pM everywhere)"]
    with pytest.raises(ValueError, match="no field .foo.; allowed: il2, ifna, drug, cxcl10"):
        viz.snapshot_figure(r2, field="foo")
    with pytest.raises(ValueError, match="outside the snapshots, allowed 0 to 1.5 days"):
        viz.snapshot_figure(r2, time_day=9.0)
    with pytest.raises(ValueError, match="allowed length units"):
        viz.snapshot_figure(r2, units="furlong")
    with pytest.raises(ValueError, match="overlay='blob'"):
        viz.snapshot_figure(r2, field="il2", overlay="blob")


def test_fields_panels_units_and_empty_fields(runs, tmp_path):
    r2, _ = runs
    fig = viz.fields_figure(r2, shared=True, log=False)
    main = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    assert [a.get_title() for a in main] == ["IL-2", "IFN-alpha", "drug", "CXCL10"]
    # high-dose IL-2 gives neither IFN-alpha nor drug: those panels are drawn empty with a note, no colour bar
    assert colourbar_labels(fig) == ["IL-2 (pM)", "CXCL10 (pM)"]
    assert empty_notes(main[0]) == []
    assert empty_notes(main[1]) == ["no IFN-alpha in the tissue\n(0 pM everywhere)"]
    assert empty_notes(main[2]) == ["no drug in the tissue\n(0 uM everywhere)"]
    assert len(main[1].images) == 0 and len(main[2].images) == 0
    i = r2.n_snapshots - 1
    assert main[0].images[0].norm.vmax == pytest.approx(float(r2.field("il2", i).max()), rel=1e-6)
    assert_saves(fig, tmp_path, "fields")


def test_fields_shared_scale_joins_panels_of_equal_units(runs):
    _, r3 = runs  # IL-2 + IFN-alpha + 5-FU: IL-2 and IFN-alpha both in pM
    i = r3.n_snapshots - 1
    mid = {n: r3.field(n, i)[r3.shape_xyz[2] // 2] for n in r3.species}
    assert mid["il2"].max() > 0 and mid["ifna"].max() > 0 and mid["drug"].max() == 0
    fig = viz.fields_figure(r3, shared=True)
    main = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    n_il2, n_ifna = (a.images[0].norm for a in main[:2])
    assert n_il2.vmax == n_ifna.vmax == pytest.approx(max(mid["il2"].max(), mid["ifna"].max()), rel=1e-6)
    assert len(main[2].images) == 0 and empty_notes(main[2])
    apart = viz.fields_figure(r3, shared=False)
    assert apart.axes[0].images[0].norm.vmax == pytest.approx(float(mid["il2"].max()), rel=1e-6)


def test_log_colour_scale_spans_at_least_a_decade():
    near_uniform = np.full((10, 10), 1.19)
    near_uniform[0, 0] = 1.165  # the 1.165-1.19 pM colour bar that magnified noise
    norm = st.field_norm(near_uniform, log=True)
    assert norm.vmax == pytest.approx(1.19) and norm.vmax / norm.vmin == pytest.approx(10.0)
    wide = np.geomspace(1e-9, 1e3, 100)
    norm = st.field_norm(wide, log=True)
    assert norm.vmax / norm.vmin == pytest.approx(st.LOG_DYNAMIC_RANGE)


def test_dashboard_panels_thresholds_and_dose_markers(runs, tmp_path):
    r2, _ = runs
    fig = viz.dashboard_figure(r2)
    titles = [a.get_title() for a in fig.axes]
    for t in (
        "cells by type",
        "tumour size (RECIST)",
        "plasma levels and doses",
        "systemic toxicity",
        "kills by killer",
    ):
        assert t in titles, titles
    ax = {a.get_title(): a for a in fig.axes}
    assert legend_texts(ax["cells by type"].get_legend()) == ["tumour", "CTL", "NK", "LAK"]
    recist = legend_texts(ax["tumour size (RECIST)"].get_legend())
    assert "partial response (-30% of baseline)" in recist and "progression (+20% over nadir)" in recist
    pat = r2.params.patient
    tox = ax["systemic toxicity"]
    hlines = sorted(line.get_ydata()[0] for line in tox.lines[1:3])
    assert hlines == [pat.toxicity_hold_threshold, pat.toxicity_dlt_threshold]
    assert legend_texts(ax["kills by killer"].get_legend()) == ["CTL", "NK", "LAK", "drug"]
    # every dose event is drawn in the strip above the plasma panel, given and held on rows of their own
    doses = ax["plasma levels and doses"]
    n_given, n_held = len(r2.events_of("dose_given")), len(r2.events_of("dose_held"))
    assert n_given > 0 and n_held > 0, "the tiny high-dose run should both give and hold doses"
    given = [li for li in doses.lines if li.get_gid() == "dose_given"]
    held = [li for li in doses.lines if li.get_gid() == "dose_held"]
    assert sum(len(li.get_xdata()) for li in given) == n_given
    assert sum(len(li.get_xdata()) for li in held) == n_held
    assert {li.get_ydata()[0] for li in given}.isdisjoint({li.get_ydata()[0] for li in held})
    assert given[0].get_marker() != held[0].get_marker()
    assert matplotlib.colors.to_hex(given[0].get_color()) != matplotlib.colors.to_hex(held[0].get_color())
    rows = [t.get_text() for t in doses.get_yticklabels()]
    assert f"IL-2 given ({n_given})" in rows and f"IL-2 held ({n_held})" in rows
    lo, hi = doses.get_ylim()
    for li in given + held:  # inside their own axes, not over the title
        assert li.get_transform() == doses.transData
        assert np.all((np.asarray(li.get_ydata()) > lo) & (np.asarray(li.get_ydata()) < hi))
    # the plasma axis: log, from four decades below the peak (not down to 1e-12 pM)
    plasma = next(a for a in fig.axes if a.get_ylabel() == "plasma (pM, log)")
    assert plasma.get_yscale() == "log"
    peak = float(np.max(r2.observables["plasma_il2"]))
    ymin, ymax = plasma.get_ylim()
    assert ymin == pytest.approx(peak / st.LOG_DYNAMIC_RANGE) and peak <= ymax <= 3 * peak
    assert legend_texts(plasma.get_legend()) == ["IL-2 (pM)"]
    # kills panel is cumulative: the last value is the run's total
    kills = ax["kills by killer"].lines[1].get_ydata()
    assert kills[-1] == pytest.approx(r2.summary["total_kills_nk"])
    # the lattice colour bar spans at least a decade
    cbar = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert len(cbar) == 1
    norm = [a for a in fig.axes if a.get_title().startswith("high_dose_il2: day")][0].images[0].norm
    assert norm.vmax / norm.vmin >= 10.0 - 1e-9
    assert_saves(fig, tmp_path, "dashboard")


def test_recist_panel_after_a_complete_response(cr_run):
    fig = viz.dashboard_figure(cr_run)
    ax = next(a for a in fig.axes if a.get_title() == "tumour size (RECIST)")
    t_cr = float(cr_run.summary["time_to_eradication_day"])
    t_end = float(cr_run.time_min[-1]) / 1440.0
    assert 0 < t_cr < t_end / 2
    # progression is not shaded once the tumour is gone (the nadir is then 0: every diameter would be "growth")
    prog = [c for c in ax.collections if c.get_gid() == "recist-progression"]
    assert len(prog) == 1
    xs = np.concatenate([p.vertices[:, 0] for p in prog[0].get_paths()])
    assert xs.max() <= t_cr + 1e-9
    # the complete response is shaded as such, from eradication to the end
    cr = [p for p in ax.patches if p.get_gid() == "recist-complete-response"]
    assert cr, "no complete-response span"
    x0 = min(p.get_x() for p in cr)
    x1 = max(p.get_x() + p.get_width() for p in cr)
    assert x0 == pytest.approx(t_cr) and x1 == pytest.approx(t_end)
    assert "complete response (no tumour cells)" in legend_texts(ax.get_legend())


def test_dashboard_lattice_after_a_complete_response_shows_the_tumour(cr_run):
    fig = viz.dashboard_figure(cr_run)
    tum = st.tumour_at_snapshots(cr_run)
    assert tum[-1] == 0 and tum.max() > 0
    i = int(np.flatnonzero(tum > 0)[-1])
    lat = next(a for a in fig.axes if a.get_title().startswith("high_dose_il2: day"))
    assert f"day {cr_run.snapshot_time_min[i] / 1440.0:.2f}" in lat.get_title()
    assert "last snapshot with tumour cells" in lat.get_title()
    cells = np.ma.filled(lat.images[-1].get_array(), st.EMPTY)
    assert np.count_nonzero(cells == st.TUMOUR) == int(tum[i])
    # an explicit time is honoured
    fig = viz.dashboard_figure(cr_run, time_day=2.0)
    lat = next(a for a in fig.axes if a.get_title().startswith("high_dose_il2: day"))
    assert lat.get_title() == "high_dose_il2: day 2.00"


# ---------------------------------------------------------------- 3D figures


def test_slices_3d_panels_legend_colourbar(runs, tmp_path):
    _, r3 = runs
    fig = viz.snapshot_figure(r3, field="ifna")  # a 3D run gives the slices figure
    main = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    titles = [a.get_title() for a in main]
    assert titles == [
        "xy slice, z = 6",
        "xz slice, y = 8",
        "yz slice, x = 8",
        "projection along z (immune over tumour)",
    ]
    assert legend_texts(fig.legends[0]) == CELL_LEGEND
    assert colourbar_labels(fig) == ["IFN-alpha (pM)"]
    assert main[1].get_ylabel() == "z (mm)"
    assert_saves(fig, tmp_path, "slices")
    # no 5-FU before week 5: the drug field is drawn as empty, not on an invented 0-1 scale
    fig = viz.snapshot_figure(r3, field="drug")
    main = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    assert colourbar_labels(fig) == [] and empty_notes(main[0]) == ["no drug in the tissue\n(0 uM everywhere)"]


def test_projection_puts_immune_cells_over_tumour():
    codes = np.zeros((3, 2, 2), dtype=np.uint8)
    codes[:, 0, 0] = [st.TUMOUR, st.CTL, st.TUMOUR]
    codes[:, 0, 1] = [st.EMPTY, st.TUMOUR, st.EMPTY]
    codes[:, 1, 0] = [st.NK, st.LAK, st.EMPTY]
    proj = st.project_codes(codes, axis=0)
    assert proj.tolist() == [[st.CTL, st.TUMOUR], [st.LAK, st.EMPTY]]


def test_dashboard_and_fields_on_3d(runs):
    _, r3 = runs
    fig = viz.dashboard_figure(r3)
    assert any(a.get_title().startswith("z projection") for a in fig.axes)
    fig = viz.fields_figure(r3)
    assert "z = 6 slice" in fig.get_suptitle()
    with pytest.raises(ValueError, match="needs a 3D run"):
        viz.slices_figure(runs[0])


# ---------------------------------------------------------------- comparison


def test_compare_shared_scales_and_aligned_time(runs, tmp_path):
    r2, r3 = runs
    fig = viz.compare_figure([r2, r3], ["hd", "combo"], field="il2")
    lattices = [a for a in fig.axes if a.get_title().startswith(("hd", "combo"))]
    assert len(lattices) == 2
    # aligned time: both lattices at the last time both runs reached (1.5 days)
    assert all("day 1.50" in a.get_title() for a in lattices)
    # one shared field colour scale
    norms = [a.images[0].norm for a in lattices]
    assert norms[0] is norms[1]
    assert colourbar_labels(fig) == ["IL-2 (pM)"]
    series = [a for a in fig.axes if a.get_xlabel() == "time (days)"]
    assert len(series) == 4
    assert legend_texts(series[0].get_legend()) == ["hd", "combo"]
    assert series[0].get_shared_x_axes().joined(series[0], series[3])
    assert_saves(fig, tmp_path, "compare")
    with pytest.raises(ValueError, match="1 labels for 2 runs"):
        viz.compare_figure([r2, r3], ["x"])


# ---------------------------------------------------------------- animation


def test_animation_colour_range_is_the_true_field_range(runs, tmp_path, monkeypatch):
    import sys

    animate_mod = sys.modules["abm.viz.animate"]  # (abm.viz.animate is also the name of the function)
    r2, r3 = runs
    allv = r2.fields("il2").astype(float)  # every frame, every row
    top, low = allv.max(), allv[allv > 0].min()
    assert top > 0
    norm = animate_mod.film_norm(r2, "il2", log=True)
    assert norm.vmax == pytest.approx(top, rel=1e-6)
    assert norm.vmin == pytest.approx(min(max(low, top / st.LOG_DYNAMIC_RANGE), top / 10), rel=1e-6)
    assert norm.vmax / norm.vmin >= 10.0 - 1e-9  # a log range never collapses to a point
    assert animate_mod.film_norm(r2, "il2", log=False).vmax == pytest.approx(top, rel=1e-6)
    # 3D: the whole volume of every frame, not the first rows of a few frames
    v3 = r3.fields("ifna")
    assert animate_mod.field_range(r3, "ifna")[0] == pytest.approx(float(v3.max()), rel=1e-6)
    # the film draws with that norm (over the frames it shows)
    seen = []
    real = animate_mod.draw_lattice

    def spy(*a, **k):
        seen.append(k.get("norm"))
        return real(*a, **k)

    monkeypatch.setattr(animate_mod, "draw_lattice", spy)
    viz.animate(r2, tmp_path / "c.gif", field="il2", progress=False, max_frames=3)
    shown = np.unique(np.linspace(0, r2.n_snapshots - 1, 3).round().astype(int))
    assert seen[0].vmax == pytest.approx(float(allv[shown].max()), rel=1e-6)
    # a field that is zero in every frame: no invented range
    assert animate_mod.film_norm(r2, "ifna", log=True) is None


def test_animation_gif_has_one_frame_per_snapshot(runs, tmp_path):
    from PIL import Image

    r2, _ = runs
    out = viz.animate(r2, tmp_path / "a.gif", field="il2", fps=5, progress=False)
    with Image.open(out) as im:
        assert im.n_frames == r2.n_snapshots
        assert im.info["duration"] == 200


def test_animation_mp4_frames_and_3d(runs, tmp_path):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    r2, r3 = runs
    out = viz.animate(r2, tmp_path / "a.mp4", fps=10, progress=False)
    n, _secs = imageio_ffmpeg.count_frames_and_secs(str(out))
    assert n == r2.n_snapshots
    out = viz.animate(r3, tmp_path / "b.mp4", field="il2", max_frames=2, progress=False)
    n, _secs = imageio_ffmpeg.count_frames_and_secs(str(out))
    assert n == 2
    with pytest.raises(ValueError, match="allowed animation formats are .mp4, .gif"):
        viz.animate(r2, tmp_path / "a.avi")
    with pytest.raises(ValueError, match="allowed range 0 < fps <= 120"):
        viz.animate(r2, tmp_path / "a.gif", fps=0)


# ---------------------------------------------------------------- CLI


def test_cli_plot_compare_animate(runs, tmp_path, capsys):
    from abm.cli import main

    r2, r3 = runs
    src = tmp_path / "run.h5"
    shutil.copy(r2.path, src)
    assert main(["plot", str(src)]) == 0
    assert (tmp_path / "run_dashboard.png").exists()
    assert f"wrote {tmp_path / 'run_dashboard.png'}" in capsys.readouterr().out
    assert (
        main(
            [
                "plot",
                str(src),
                "--kind",
                "snapshot",
                "--time",
                "0.5",
                "--field",
                "il2",
                "--log",
                "--out",
                str(tmp_path / "s.svg"),
            ]
        )
        == 0
    )
    assert (tmp_path / "s.svg").exists()
    assert main(["plot", str(src), "--kind", "fields", "--out", str(tmp_path / "f.pdf")]) == 0
    assert main(["compare", str(src), str(r3.path), "--out", str(tmp_path / "c.png"), "--labels", "a,b"]) == 0
    assert main(["animate", str(src), "--out", str(tmp_path / "m.gif"), "--quiet", "--fps", "4"]) == 0
    assert (tmp_path / "m.gif").exists()
    capsys.readouterr()
    assert main(["plot", str(src), "--field", "foo"]) == 2
    assert "no field 'foo'" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "missing.h5")]) == 2
    assert main(["plot", str(src), "--out", str(tmp_path / "x.jpg")]) == 2
    assert ".png, .pdf, .svg" in capsys.readouterr().err
    assert main(["animate", str(src), "--out", str(tmp_path / "m.avi")]) == 2


# Pillow is not on the list: matplotlib itself requires it (to write PNG), so it comes with the core dependencies
OPTIONAL = ("imageio", "imageio_ffmpeg", "solara", "pandas", "reacton", "ipywidgets", "ipyvuetify", "altair", "xarray")


@pytest.mark.slow  # a fresh interpreter with the extras hidden (12 s)
def test_viz_and_abm_plot_need_no_optional_extras(runs, tmp_path):
    """abm.viz, abm.viz.cli and `abm plot` (dashboard, snapshot, fields) and `abm compare` with none of the [viz]
    extras importable: they load imageio, solara and pandas only inside the functions that need them."""
    import sys

    r2, r3 = runs
    code = f"""
import importlib.abc, sys
BLOCKED = {OPTIONAL!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
sys.meta_path.insert(0, Block())
import abm.viz, abm.viz.cli
from abm.cli import main
out = {str(tmp_path)!r}
assert main(["plot", {str(r2.path)!r}, "--out", out + "/d.png"]) == 0
assert main(["plot", {str(r2.path)!r}, "--kind", "snapshot", "--field", "il2", "--out", out + "/s.png"]) == 0
assert main(["plot", {str(r3.path)!r}, "--kind", "fields", "--out", out + "/f.png"]) == 0
assert main(["compare", {str(r2.path)!r}, {str(r3.path)!r}, "--out", out + "/c.png"]) == 0
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
print("ok")
"""
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stdout + res.stderr
    for name in ("d", "s", "f", "c"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_serve_command_is_local_by_default():
    from abm.cli import build_parser
    from abm.viz.cli import serve_command

    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1"
    cmd, env = serve_command("untreated", ["lattice.nx=30"], args.host, args.port)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert env["ABM_SERVE_SCENARIO"] == "untreated"
    assert env["ABM_SERVE_LOOPBACK"] == "1"
    assert serve_command(None, None, "0.0.0.0", 8000)[1]["ABM_SERVE_LOOPBACK"] == "0"


# ---------------------------------------------------------------- interactive page

PAGE_SETS = ("lattice.nx=30", "lattice.ny=30")


def test_page_model_is_an_adapter_not_an_abm_model():
    import mesa

    from abm.viz.app import PageModel

    m = PageModel("il2_ifna", il2_dose_scale=0.5, ifna_on=False, seed=2, sets=PAGE_SETS)
    assert isinstance(m, mesa.Model) and not isinstance(m, abm.Model)
    assert isinstance(m.sim, abm.Model)  # composition: the page owns a model, it is not one
    assert m.scenario.regimen.scale("il2") == 0.5 and m.scenario.regimen.scale("ifna") == 0.0
    on = PageModel("il2_ifna", ifna_on=True, sets=PAGE_SETS)
    assert on.scenario.regimen.scale("ifna") == 1.0
    # many steps per call, no drawing: a day in one call, a frame's worth of hours in another
    n = m.run_to_day(1.0)
    assert 1.0 <= m.time_day < 1.0 + 1.0 / 24 and n == m.step_index == m.steps
    k = m.advance_hours(6)
    assert k >= 1 and m.time_day == pytest.approx(1.25, abs=1e-9)
    f = m.frame()
    assert f.step_index == m.step_index and f.time_day == m.time_day
    assert len(f.history["time_day"]) == m.step_index + 1
    assert f.history["time_day"][-1] == pytest.approx(m.time_day)
    assert f.codes.shape == (30, 30) and np.count_nonzero(f.codes == st.VESSEL_CODE) > 0
    assert f.counts == m.sim.counts()
    m.step()  # the frame is a copy: stepping on does not change it
    assert len(f.history["time_day"]) == m.step_index


def test_page_figures_plot_against_days_with_separate_plasma_and_toxicity_axes():
    from abm.viz.app import PageModel, lattice_figure, series_figure

    m = PageModel("il2_ifna", sets=PAGE_SETS)
    m.run_to_day(2.5)  # IFN-alpha from day 0, IL-2 from day 2
    fig = series_figure(m.frame())
    cells, plasma, tox = fig.axes[:3]
    assert tox.get_xlabel() == "time (days)" and cells.get_shared_x_axes().joined(cells, tox)
    assert cells.get_xlim()[1] == pytest.approx(2.5, abs=0.01)
    assert plasma.get_ylabel() == "plasma (pM, log)" and plasma.get_yscale() == "log"
    assert tox.get_ylabel() == "score (0-1)" and tox.get_yscale() == "linear"
    assert tox.get_ylim()[0] == 0 and tox.get_ylim()[1] >= 1.0
    assert {li.get_label() for li in plasma.get_lines()} == {"IL-2", "IFN-alpha"}
    assert not any(li.get_label() == "toxicity score" for li in plasma.get_lines())
    peak = max(m.frame().history["plasma_il2"].max(), m.frame().history["plasma_ifna"].max())
    assert plasma.get_ylim()[0] == pytest.approx(peak / st.LOG_DYNAMIC_RANGE)
    lat = lattice_figure(m.frame(), "drug")  # no 5-FU before week 5: drawn as empty, with a note
    assert empty_notes(lat.axes[0]) == ["no drug in the tissue\n(0 uM everywhere)"]
    chem = lattice_figure(m.frame(), "cxcl10")  # the tumour's chemokine is drawn (docs/model.md 7.6)
    assert empty_notes(chem.axes[0]) == [] and "CXCL10 (pM, log)" in chem.axes[-1].get_ylabel()
    with pytest.raises(ValueError, match="overlay='x': allowed il2, ifna, drug, cxcl10, none"):
        lattice_figure(m.frame(), "x")


def test_dose_label_in_clinical_units():
    from abm.viz.app import dose_label

    assert dose_label(abm.Scenario.load("high_dose_il2"), 0.5) == "360,000 IU/kg per dose"
    assert dose_label(abm.Scenario.load("il2_ifna"), 1.0) == "5 MIU/m2 / 10 MIU/m2 per dose"
    assert "no IL-2" in dose_label(abm.Scenario.load("untreated"), 1.0)


def test_page_headless_step_and_reset():
    solara = pytest.importorskip("solara")
    import ipyvuetify as v
    import ipywidgets

    from abm.viz.app import page_component

    Page = page_component("il2_ifna", list(PAGE_SETS))
    _box, rc = solara.render(Page(), handle_error=False)

    def status() -> str:
        texts = [
            w.children[0] for w in rc.find(v.Html).widgets if w.children and str(w.children[0]).startswith("step ")
        ]
        assert len(texts) == 1
        return texts[0]

    pictures = lambda: [bytes(w.value) for w in rc.find(ipywidgets.Image).widgets]  # noqa: E731
    assert status().startswith("step 0 - day 0.00")
    before = pictures()
    assert len(before) == 2
    rc.find(v.Btn, children=["Step"]).widget.click()  # one frame: 12 simulated hours, 72 steps of 10 min
    assert status().startswith("step 72 - day 0.50")
    after = pictures()
    assert after[0] != before[0] and after[1] != before[1]
    rc.find(v.Btn, children=["Reset"]).widget.click()
    assert status().startswith("step 0 ")


# ---------------------------------------------------------------- the page server and a real browser

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    """Every live process under ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _start_serve(tmp_path: Path, scenario: str, sets: tuple[str, ...]):
    import sys

    port = _free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed by the caller's finally
    cmd = [sys.executable, "-m", "abm.cli", "serve", scenario, "--port", str(port)]
    for s_ in sets:
        cmd += ["--set", s_]
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, port, log
        except OSError:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "abm serve did not start listening in 120 s"
            time.sleep(0.5)


def _stop_and_check_tree(server, port: int) -> None:
    import signal

    tree = _descendants(server.pid)
    assert tree, "abm serve should run the page server as a child"
    server.send_signal(signal.SIGTERM)
    rc = server.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in tree) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [p for p in tree if _alive(p)]
    for p in left:  # (do not leave them serving after a failure)
        os.kill(p, signal.SIGKILL)
    assert not left, "processes of the page server outlived SIGTERM to abm serve"
    assert rc == 128 + signal.SIGTERM
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


@pytest.mark.slow
def test_sigterm_to_abm_serve_stops_the_whole_server_tree(tmp_path):
    pytest.importorskip("solara")
    server, port, log = _start_serve(tmp_path, "untreated", PAGE_SETS)
    try:
        _stop_and_check_tree(server, port)
    finally:
        if server.poll() is None:
            server.kill()
        log.close()


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (apt-get install chromium chromium-driver)"
)
def test_page_in_browser_plays_a_week_fast_and_jumps(tmp_path):
    """The served page in headless Chromium: no warnings per page load, readable controls, a simulated week in
    well under a minute, jump to a day, and the server's whole tree gone after SIGTERM. Prints the speeds and
    saves a screenshot (ABM_PAGE_SCREENSHOT=path to keep one)."""
    pytest.importorskip("solara")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    server, port, log = _start_serve(tmp_path, "il2_ifna", ("lattice.nx=60", "lattice.ny=60"))
    opts = Options()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1500,1100"):
        opts.add_argument(a)
    driver = None
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        log.flush()
        mark = (tmp_path / "serve.log").stat().st_size
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 120, poll_frequency=0.2)

        def text(css: str) -> str:
            return " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, css))

        def day() -> float:
            s_ = text(".abm-status")
            return float(s_.split(" - day ")[1].split(" ")[0]) if " - day " in s_ else -1.0

        def button(label: str):
            found = [b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip().upper() == label]
            assert len(found) == 1, [b.text for b in driver.find_elements(By.TAG_NAME, "button")]
            return found[0]

        wait.until(lambda d: text(".abm-status").startswith("step 0 "))
        time.sleep(2.0)
        # no warnings (or tracebacks) printed by the server for a page load
        page_log = (tmp_path / "serve.log").read_text()[mark:]
        assert "Warning" not in page_log and "Traceback" not in page_log and "ERROR" not in page_log, page_log
        # readable controls: the dose slider is wide and shows its value, in the clinic's units too
        dose = driver.find_element(By.CSS_SELECTOR, ".abm-dose .v-slider")
        assert dose.size["width"] >= 200, dose.size
        assert "1.00 x label = 5 MIU/m2 / 10 MIU/m2 per dose" in text(".abm-dose-label")
        assert driver.find_element(By.CSS_SELECTOR, ".abm-dose .v-slider__thumb-label").text.strip() == "1"
        assert text(".abm-hours-label") == "simulated hours per frame: 12 h"
        # Step: one frame of 12 simulated hours
        pictures = lambda: [e.get_attribute("src") for e in driver.find_elements(By.CSS_SELECTOR, "img")]  # noqa: E731
        before = pictures()
        button("STEP").click()
        wait.until(lambda d: text(".abm-status").startswith("step 72 - day 0.50"))
        wait.until(lambda d: pictures() != before)
        # Play a simulated week
        t0 = time.perf_counter()
        button("PLAY").click()
        wait.until(lambda d: day() >= 7.5)
        week_s = time.perf_counter() - t0
        button("PAUSE").click()
        speed = text(".abm-speed")
        stopped_at = day()
        time.sleep(1.0)
        assert day() - stopped_at <= 0.5 + 1e-9  # at most the frame under way
        # jump to day 21 without drawing every step
        box = driver.find_element(By.CSS_SELECTOR, ".abm-jump input")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys("21", Keys.TAB)
        wait.until(lambda d: "GO TO DAY 21" in [b.text.strip().upper() for b in d.find_elements(By.TAG_NAME, "button")])
        t1 = time.perf_counter()
        button("GO TO DAY 21").click()
        wait.until(lambda d: text(".abm-message").startswith("ran to day 21.00"))
        wait.until(lambda d: day() >= 21.0)
        jump_s = time.perf_counter() - t1
        jump_msg = text(".abm-message")
        shot = Path(os.environ.get("ABM_PAGE_SCREENSHOT", tmp_path / "page.png"))
        driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:4] == b"\x89PNG"
        print(
            f"\npage: simulated week (day 0.5 -> 7.5) played in {week_s:.1f} s; page speed: {speed}; "
            f"jump to day 21: {jump_s:.1f} s in the browser ({jump_msg}); load {os.getloadavg()}; "
            f"screenshot {shot}"
        )
        assert week_s < 60.0, f"a simulated week took {week_s:.1f} s to play"
        assert jump_s < 60.0
    finally:
        if driver is not None:
            driver.quit()
        try:
            if server.poll() is None:
                _stop_and_check_tree(server, port)
        finally:
            if server.poll() is None:
                server.kill()
            log.close()
