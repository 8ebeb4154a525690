"""Output and input paths of trajectory files: what may be written or read, and the names a writer uses.

A writer of ``NAME`` uses, next to it:

- ``NAME.<pid>-<hex8>.partial``: its private partial file (no two writers ever share one);
- ``NAME.lock``: the exclusive claim on ``NAME`` (see :mod:`abm.io.locking`);
- ``NAME.<pid>-<hex8>.reserve``: a few MB of disk held back so that the writer can always close cleanly when the
  disk fills up (removed when it closes).

:func:`check_output_path` refuses, before any work, every output path that cannot end as a regular file:
an existing file without overwrite, a directory, a device, a FIFO, a socket (or a symlink to one), a missing or
read-only directory. :func:`check_input_path` refuses to open anything but a regular file (opening a FIFO would block
for ever).
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from pathlib import Path

from .errors import InputPathError, OutputExistsError, OutputPathError
from .schema import PARTIAL_SUFFIX

__all__ = [
    "LOCK_SUFFIX",
    "RESERVE_SUFFIX",
    "check_input_path",
    "check_output_path",
    "find_partials",
    "lock_path",
    "new_token",
    "partial_path",
]

LOCK_SUFFIX = ".lock"
RESERVE_SUFFIX = ".reserve"
_TOKEN = r"\d+-[0-9a-f]{8}"


def new_token() -> str:
    """``<pid>-<8 hex digits>``: unique among the writers of one host at one time."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def private_partial(path: Path, token: str) -> Path:
    return path.with_name(f"{path.name}.{token}{PARTIAL_SUFFIX}")


def reserve_path(path: Path, token: str) -> Path:
    return path.with_name(f"{path.name}.{token}{RESERVE_SUFFIX}")


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of an output ``NAME``: ``NAME.lock``."""
    p = Path(path)
    return p.with_name(p.name + LOCK_SUFFIX)


def _siblings(path: Path, suffix: str) -> list[Path]:
    """``NAME<suffix>`` (the 1.0 writer's name) and every ``NAME.<token><suffix>``, newest first."""
    pat = re.compile(rf"^{re.escape(path.name)}(\.{_TOKEN})?{re.escape(suffix)}$")
    try:
        names = [e for e in os.scandir(path.parent if str(path.parent) else ".") if pat.match(e.name)]
    except OSError:
        return []
    found = []
    for e in names:
        try:
            found.append((e.stat(follow_symlinks=False).st_mtime_ns, Path(e.path)))
        except OSError:  # removed while we looked
            continue
    return [p for _, p in sorted(found, key=lambda t: (t[0], str(t[1])), reverse=True)]


def find_partials(path: str | os.PathLike) -> list[Path]:
    """Every partial file of ``NAME`` (interrupted, killed or still running writers), newest first."""
    return _siblings(Path(path), PARTIAL_SUFFIX)


def stale_reserves(path: Path) -> list[Path]:
    return _siblings(path, RESERVE_SUFFIX)


def partial_path(path: str | os.PathLike) -> Path:
    """The partial file a reader of ``NAME`` should look at: the newest ``NAME.<pid>-<hex>.partial`` (or a 1.0
    writer's ``NAME.partial``) when one exists, else ``NAME.partial`` (which then does not exist).

    ``partial_path(p).exists()`` therefore tells whether an unfinished run of ``p`` left a file.
    """
    found = find_partials(path)
    if found:
        return found[0]
    p = Path(path)
    return p.with_name(p.name + PARTIAL_SUFFIX)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_output_path(path: str | os.PathLike, overwrite: bool = False, *, check_partials: bool = True) -> Path:
    """Check, before a run starts, that ``path`` can be written as a trajectory file; return the path to write.

    A symlink to a regular file resolves to its target (the target is replaced, the link kept). Raises
    :class:`~abm.io.errors.OutputExistsError` if the file exists (or an interrupted run left a partial file of it)
    and ``overwrite`` is False; :class:`~abm.io.errors.OutputPathError` if it is (or links to) a directory, a
    device, a FIFO or a socket, if its directory is missing, not a directory or not writable. Every message names
    the path. Does not take the lock: another writer may still claim the file first
    (:class:`~abm.io.errors.OutputLockedError` from the writer).
    """
    raw = os.fspath(path)
    if not isinstance(raw, str):
        raw = os.fsdecode(raw)
    if not raw.strip():
        raise OutputPathError("empty output path", raw)
    if raw.endswith(os.sep) or (os.altsep and raw.endswith(os.altsep)):
        raise OutputPathError(f"{raw}: names a directory; give a file name such as {raw.rstrip('/')}/run.h5", raw)
    p = Path(raw)
    try:
        st = os.stat(p)  # follows symlinks: a link to a device is a device
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise OutputPathError(f"{p}: a component of the path is not a directory", p) from None
    except OSError as e:
        raise OutputPathError(f"{p}: cannot inspect the output path ({e.strerror or e})", p) from None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            what = _kind(st.st_mode)
            via = f" (through the symlink {p} -> {os.readlink(p)})" if p.is_symlink() else ""
            raise OutputPathError(
                f"{p}: is {what}{via}, not a regular file; abm writes trajectories only to regular files"
                + ("; choose a file name inside it" if stat.S_ISDIR(st.st_mode) else ""),
                p,
            )
        if not overwrite:
            raise OutputExistsError(
                f"{p}: the output file exists; pass overwrite=True (CLI: --overwrite) to replace it when the new run "
                "completes, or choose another output path",
                p,
            )
    if p.is_symlink():
        p = Path(os.path.realpath(p))
    parent = p.parent if str(p.parent) else Path(".")
    try:
        pst = os.stat(parent)
    except FileNotFoundError:
        raise OutputPathError(f"{p}: the directory {parent} does not exist", p) from None
    except OSError as e:
        raise OutputPathError(f"{p}: cannot inspect the directory {parent} ({e.strerror or e})", p) from None
    if not stat.S_ISDIR(pst.st_mode):
        raise OutputPathError(f"{p}: {parent} is not a directory", p)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{p}: the directory {parent} is not writable", p)
    if check_partials and not overwrite:
        left = [q for q in find_partials(p)]
        if left:
            raise OutputExistsError(
                f"{p}: an unfinished run left {left[0].name} (in {parent}); read it with abm.io.load({str(p)!r}), "
                "delete it, or pass overwrite=True (CLI: --overwrite)",
                left[0],
            )
    return p


def check_input_path(path: str | os.PathLike) -> Path:
    """Refuse to open anything but a regular file (checked with ``stat``, so a FIFO never blocks); return it."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise InputPathError(f"{p}: cannot read ({e.strerror or e})", p) from None
    if not stat.S_ISREG(st.st_mode):
        raise InputPathError(f"{p}: is {_kind(st.st_mode)}, not a regular file; it cannot be an abm trajectory", p)
    return p
