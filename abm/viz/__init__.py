"""Figures, animations, run comparisons and an interactive page for abm runs.

Figure functions take a loaded run (:func:`abm.load`) and return a matplotlib Figure; they never touch a model::

    run = abm.load("high_dose_il2.h5")
    abm.viz.dashboard_figure(run).savefig("dashboard.png")
"""

from __future__ import annotations

from .animate import animate
from .figures import compare_figure, dashboard_figure, fields_figure, slices_figure, snapshot_figure
from .style import CELL_COLOURS, CELL_LABELS, OKABE_ITO

__all__ = [
    "CELL_COLOURS",
    "CELL_LABELS",
    "OKABE_ITO",
    "animate",
    "compare_figure",
    "dashboard_figure",
    "fields_figure",
    "slices_figure",
    "snapshot_figure",
]
