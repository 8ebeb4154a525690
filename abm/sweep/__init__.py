"""Parameter sweeps: a TOML definition (:class:`SweepSpec`), its design (grid, LHS, Sobol, Morris), execution on
local processes or Dask with resume (:func:`run_sweep`), the ``sweep.h5`` store (:func:`read_sweep`) and the
analyses (:mod:`abm.sweep.analysis`). See docs/sweeps.md."""

from abm.sweep.design import RunSpec, SweepSpec, design_points, expand, run_seed
from abm.sweep.runner import SweepError, SweepResult, execute, run_sweep
from abm.sweep.store import read_sweep

__all__ = [
    "RunSpec",
    "SweepError",
    "SweepResult",
    "SweepSpec",
    "design_points",
    "execute",
    "expand",
    "read_sweep",
    "run_seed",
    "run_sweep",
]
