"""Make the gallery figures and animation of docs/gallery.md from the shipped scenarios.

    python docs/make_gallery.py            # runs into a temporary directory, figures into docs/figures/
    python docs/make_gallery.py --keep DIR # keep the run files in DIR

Every run is small (a 60 x 60 lattice, a few days; a 24 x 24 x 16 lattice in 3D) so the whole script takes a few
minutes on a laptop. The figures are drawn from the run files, exactly as ``abm plot`` / ``abm compare`` /
``abm animate`` would.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import abm  # noqa: E402
from abm import viz  # noqa: E402

HERE = Path(__file__).resolve().parent
FIGURES = HERE / "figures"
SETS_2D = ["lattice.nx=60", "lattice.ny=60"]
SETS_3D = ["lattice.nx=24", "lattice.ny=24", "lattice.nz=16", "init.tumour_radius_um=120"]
DAYS = 5.0
DAYS_3D = 1.5
SNAPSHOT_MIN = 120.0
SEED = 1
COMPARED = ("untreated", "high_dose_il2", "low_dose_sc_il2", "il2_ifna", "lak_il2")
ANIMATED = "high_dose_il2"
ANIMATION_FPS = 8
ANIMATION_FRAMES = 31  # every 4 h of the 5 days: keeps the GIF small
DPI = 110


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="directory for the run files (default: a temporary directory)")
    ap.add_argument("--reuse", action="store_true", help="with --keep: reuse run files already there")
    args = ap.parse_args()
    FIGURES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        runs = {}
        for name in COMPARED:
            path = work / f"{name}.h5"
            if not (args.reuse and path.exists()):
                abm.run(
                    name, out=path, seed=SEED, days=DAYS, sets=SETS_2D, snapshot_every_min=SNAPSHOT_MIN, overwrite=True
                )
            runs[name] = abm.load(path)
            print(f"ran {name} ({time.perf_counter() - t0:.0f} s)")
        path3 = work / "il2_ifna_5fu_3d.h5"
        if not (args.reuse and path3.exists()):
            abm.run(
                "il2_ifna_5fu",
                out=path3,
                seed=SEED,
                days=DAYS_3D,
                sets=SETS_3D,
                snapshot_every_min=SNAPSHOT_MIN,
                overwrite=True,
            )
        run3 = abm.load(path3)
        print(f"ran il2_ifna_5fu in 3D ({time.perf_counter() - t0:.0f} s)")

        def save(fig, name: str) -> None:
            out = FIGURES / f"gallery_{name}.png"
            fig.savefig(out, dpi=DPI)
            plt.close(fig)
            print(f"wrote {out.relative_to(HERE.parent)}")

        hd = runs["high_dose_il2"]
        save(viz.dashboard_figure(hd), "dashboard_high_dose_il2")
        save(viz.dashboard_figure(runs["il2_ifna"]), "dashboard_il2_ifna")
        save(viz.snapshot_figure(hd, time_day=1.0, field="il2", log=True), "snapshot_il2")
        save(viz.snapshot_figure(runs["il2_ifna"], 0.5, field="ifna", overlay="contour"), "snapshot_ifna_contours")
        save(viz.fields_figure(runs["il2_ifna"], time_day=2.0, log=True), "fields")
        save(viz.slices_figure(run3, field="ifna", log=True), "slices_3d")  # (no 5-FU before week 5)
        save(viz.compare_figure([runs[n] for n in COMPARED]), "compare")
        t1 = time.perf_counter()
        viz.animate(
            hd,
            FIGURES / "gallery_animation.gif",
            field="il2",
            fps=ANIMATION_FPS,
            progress=False,
            max_frames=ANIMATION_FRAMES,
        )
        print(f"wrote docs/figures/gallery_animation.gif ({time.perf_counter() - t1:.1f} s)")
        print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
