"""Parameter sweeps: a TOML definition (:class:`SweepSpec`), its design (grid, LHS, Sobol, Morris), execution on
local processes or Dask with resume (:func:`run_sweep`), the run store ``sweep.sqlite`` and its export ``sweep.h5``
(:func:`read_sweep`, :class:`RunStore`) and the analyses (:mod:`abm.sweep.analysis`). See docs/sweeps.md."""

from abm.sweep.design import RunSpec, SweepSpec, design_points, expand, run_seed
from abm.sweep.runner import SweepError, SweepResult, execute, export_sweep, run_sweep
from abm.sweep.store import RunRecord, RunStore, StoreError, read_sweep

__all__ = [
    "RunRecord",
    "RunSpec",
    "RunStore",
    "StoreError",
    "SweepError",
    "SweepResult",
    "SweepSpec",
    "design_points",
    "execute",
    "expand",
    "export_sweep",
    "read_sweep",
    "run_seed",
    "run_sweep",
]
