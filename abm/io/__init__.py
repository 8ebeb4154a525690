"""The abm HDF5 trajectory format: schema and version, writing (:class:`TrajectoryWriter`) and reading (:func:`load`).

Knows nothing about the model; a reporter on the model side adapts a run to this API. Layout, locks, partial files,
checksums and what each failure leaves behind: ``docs/output-format.md``.
"""

from .errors import (
    ChecksumError,
    DamagedTrajectoryError,
    DiskFullError,
    InputPathError,
    NotATrajectoryError,
    OutputExistsError,
    OutputLockedError,
    OutputPathError,
    TrajectoryIOError,
    TrajectoryReadError,
    WriteError,
)
from .locking import FileLock
from .paths import check_input_path, check_output_path, find_partials, lock_path, partial_path
from .reader import Trajectory, load, verify
from .run import Run, load_run
from .schema import FORMAT_NAME, FORMAT_VERSION, ObservableSpec, SpeciesSpec
from .trajectory import IncompleteRunWarning, TrajectoryWriter

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ChecksumError",
    "DamagedTrajectoryError",
    "DiskFullError",
    "FileLock",
    "IncompleteRunWarning",
    "InputPathError",
    "NotATrajectoryError",
    "ObservableSpec",
    "Run",
    "OutputExistsError",
    "OutputLockedError",
    "OutputPathError",
    "SpeciesSpec",
    "Trajectory",
    "TrajectoryIOError",
    "TrajectoryReadError",
    "TrajectoryWriter",
    "WriteError",
    "check_input_path",
    "check_output_path",
    "find_partials",
    "load",
    "load_run",
    "lock_path",
    "partial_path",
    "verify",
]
