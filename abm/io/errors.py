"""Errors raised by :mod:`abm.io`. Every message names the file and says what is wrong.

All derive from :class:`TrajectoryIOError` (an :class:`OSError`), so a caller can catch the family at once; each
carries ``path``. The hierarchy::

    TrajectoryIOError (OSError)
      OutputPathError              a bad output path, refused before any work (the CLI maps it to exit code 2)
        OutputExistsError          ... the file exists and overwrite was not asked for (also a FileExistsError)
        OutputLockedError          ... another writer holds the target (its lock file names pid and host)
      InputPathError               a path to read that is not a regular file (directory, FIFO, device, socket)
      WriteError                   writing failed (the earlier complete file, if any, is untouched)
        DiskFullError              ... no space left on the device (errno ENOSPC) or a file-size limit
      TrajectoryReadError          the file cannot be read as an abm trajectory (also a ValueError)
        NotATrajectoryError        ... not an abm-trajectory file, or a major version this reader does not handle
        DamagedTrajectoryError     ... an abm file with missing parts, mistyped attributes or unreadable metadata
          ChecksumError            ... stored data fail their checksum (Fletcher-32 or the metadata digest)
"""

from __future__ import annotations

import errno as _errno
import os
from pathlib import Path

__all__ = [
    "ChecksumError",
    "DamagedTrajectoryError",
    "DiskFullError",
    "InputPathError",
    "NotATrajectoryError",
    "OutputExistsError",
    "OutputLockedError",
    "OutputPathError",
    "TrajectoryIOError",
    "TrajectoryReadError",
    "WriteError",
]


class TrajectoryIOError(OSError):
    """Base of the abm.io errors; ``str(e)`` is the full message, ``e.path`` the file concerned."""

    def __init__(self, message: str, path: str | os.PathLike | None = None, errno: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = Path(path) if path is not None else None
        if errno is not None:
            self.errno = errno

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # picklable (sweep workers return errors across processes)
        return (self.__class__, (self.message, self.path, self.errno))


class OutputPathError(TrajectoryIOError):
    """The output path cannot be written: a directory, a device, a FIFO, a missing or read-only directory..."""


class OutputExistsError(OutputPathError, FileExistsError):
    """The output file (or an interrupted run's partial file) exists and overwrite was not asked for."""

    def __init__(self, message: str, path: str | os.PathLike | None = None, errno: int | None = None) -> None:
        super().__init__(message, path, _errno.EEXIST if errno is None else errno)


class OutputLockedError(OutputPathError):
    """Another writer (another ``abm run``, a sweep worker) holds the target's lock file."""


class InputPathError(TrajectoryIOError):
    """A path given to a reader is not a regular file (reading a FIFO would block, a device never ends)."""


class WriteError(TrajectoryIOError):
    """Writing the trajectory failed; the writer stopped, closed its partial file and kept any earlier file."""


class DiskFullError(WriteError):
    """No space left on the device (ENOSPC), a quota (EDQUOT) or a file-size limit (EFBIG)."""


class TrajectoryReadError(TrajectoryIOError, ValueError):
    """The file cannot be read as an abm trajectory."""


class NotATrajectoryError(TrajectoryReadError):
    """Not an abm trajectory (another HDF5 file, or not HDF5), or a format major version this reader does not know."""


class DamagedTrajectoryError(TrajectoryReadError):
    """An abm trajectory with missing groups or datasets, mistyped root attributes or unreadable metadata."""


class ChecksumError(DamagedTrajectoryError):
    """Stored data do not match their checksum: the file was damaged after it was written."""


#: errno values that mean "the device (or a limit) is full"
FULL_ERRNOS = frozenset(e for e in (getattr(_errno, n, None) for n in ("ENOSPC", "EDQUOT", "EFBIG")) if e is not None)
