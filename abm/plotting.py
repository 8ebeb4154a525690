"""Deprecated: the overview figure is :func:`abm.viz.dashboard_figure` (``abm plot``). Kept as a re-export until
the fallback ``plot`` command of :mod:`abm.cli` goes; ``abm.viz`` needs only matplotlib, h5py and numpy."""

from __future__ import annotations

from abm.viz.figures import dashboard_figure as overview_figure
from abm.viz.style import CELL_COLOURS
from abm.viz.style import CELL_LABELS as CELL_NAMES

__all__ = ["CELL_COLOURS", "CELL_NAMES", "overview_figure"]
