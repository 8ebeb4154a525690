"""The abm HDF5 trajectory format: schema and version, writing (:class:`TrajectoryWriter`) and reading (:func:`load`).

Knows nothing about the model; a reporter on the model side adapts a run to this API. Layout:
``docs/output-format.md``.
"""

from .reader import Trajectory, load
from .run import Run, load_run
from .schema import FORMAT_NAME, FORMAT_VERSION, ObservableSpec, SpeciesSpec
from .trajectory import TrajectoryWriter, partial_path

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ObservableSpec",
    "Run",
    "SpeciesSpec",
    "Trajectory",
    "TrajectoryWriter",
    "load",
    "load_run",
    "partial_path",
]
