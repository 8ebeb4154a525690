"""An exclusive, crash-safe claim on a file: :class:`FileLock`.

The lock is a small JSON file (``pid``, ``host``, process start time, ``since``, ``what``) that appears atomically
with its content: it is written under a private temporary name, locked with ``flock``, then hard-linked to the lock
name (``link`` fails if the name exists, on local file systems and NFS alike). The holder keeps the ``flock`` for as
long as it holds the lock; the kernel drops it when the process dies, however it dies.

A newcomer that finds the lock file tries ``flock`` on it: if that fails, a live process holds it and the newcomer
raises :class:`~abm.io.errors.OutputLockedError` naming the holder. If it succeeds, the holder is dead (SIGKILL,
power loss); on the same host this is confirmed from the recorded pid and its start time (so a reused pid is not
mistaken for the holder), and the stale file is removed and the claim retried. A lock recorded by another host is
never broken automatically (``flock`` is not reliable across hosts on every network file system): the message says
which host and pid hold it and that the file may be deleted if no run is writing.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import FULL_ERRNOS, DiskFullError, OutputLockedError, OutputPathError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["FileLock", "read_lock"]


def _proc_start(pid: int) -> str | None:
    """Start time of a process in clock ticks since boot (Linux /proc), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    try:
        fields = data[data.rindex(")") + 2 :].split()
        if fields[0] == "Z":  # a zombie has exited
            return "zombie"
        return fields[19]
    except (ValueError, IndexError):
        return None


def pid_alive(pid: int, start: str | None = None) -> bool:
    """Whether process ``pid`` (started at ``start``, if recorded) is alive on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's live process
    now = _proc_start(pid)
    if now == "zombie":
        return False
    if start is not None and now is not None and now != start:
        return False  # the pid was reused by another process
    return True


def read_lock(path: str | os.PathLike) -> dict[str, Any] | None:
    """The holder recorded in a lock file (``pid``, ``host``, ``since``, ...), or None if absent or unreadable."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read(65536).decode("utf-8"))
    except (OSError, ValueError):
        return None


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "an unknown writer"
    what = info.get("what") or "a writer"
    return f"{what} (pid {info.get('pid')} on host {info.get('host')}, since {info.get('since')})"


def _try_flock(fd: int) -> bool | None:
    """Take an exclusive flock without waiting: True if taken, False if held elsewhere, None if unsupported."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        return None  # ENOLCK, EOPNOTSUPP, EINVAL: the file system has no flock


class FileLock:
    """An exclusive claim on ``target``, held through the lock file ``lock`` (``NAME.lock`` by convention).

    ``what`` describes the holder in the error a second claimant sees (e.g. ``"abm run writing run.h5"``).
    Use :meth:`acquire` / :meth:`release`, or as a context manager.
    """

    def __init__(self, lock: str | os.PathLike, target: str | os.PathLike | None = None, what: str = "") -> None:
        self.path = Path(lock)
        self.target = Path(target) if target is not None else self.path
        self.what = what
        self._fd: int | None = None
        self._ino: tuple[int, int] | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FileLock:
        if self._fd is not None:
            return self
        host = socket.gethostname()
        info = {
            "pid": os.getpid(),
            "host": host,
            "start": _proc_start(os.getpid()),
            "since": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "what": self.what,
            "target": str(self.target),
        }
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as e:
            raise OutputPathError(
                f"{self.target}: cannot create the lock file {self.path} ({e.strerror or e})", self.target
            ) from None
        try:
            try:
                os.write(fd, json.dumps(info).encode("utf-8"))
                os.fsync(fd)
            except OSError as e:
                cls = DiskFullError if e.errno in FULL_ERRNOS else OutputPathError
                raise cls(
                    f"{self.target}: cannot write the lock file {self.path} ({e.strerror or e})", self.target, e.errno
                ) from None
            _try_flock(fd)
            for _ in range(5):
                try:
                    os.link(tmp, self.path)
                    break
                except FileExistsError:
                    if not self._break_if_stale(host):
                        raise OutputLockedError(self._locked_message(), self.target) from None
                except OSError as e:
                    if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                        raise OutputPathError(
                            f"{self.target}: cannot create the lock file {self.path} ({e.strerror or e})", self.target
                        ) from None
                    # no hard links here (some FUSE or SMB mounts): an exclusive create, content written after
                    if self._create_exclusive(info, host):
                        os.close(fd)
                        fd = -1
                        return self
                    raise OutputLockedError(self._locked_message(), self.target) from None
            else:
                raise OutputLockedError(self._locked_message(), self.target)
            st = os.fstat(fd)
            self._fd, self._ino = fd, (st.st_dev, st.st_ino)
            fd = -1
            return self
        finally:
            if fd >= 0:
                os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def _create_exclusive(self, info: dict[str, Any], host: str) -> bool:
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if not self._break_if_stale(host):
                    return False
                continue
            _try_flock(fd)
            os.write(fd, json.dumps(info).encode("utf-8"))
            st = os.fstat(fd)
            self._fd, self._ino = fd, (st.st_dev, st.st_ino)
            return True
        return False

    def _locked_message(self) -> str:
        info = read_lock(self.path)
        msg = f"{self.target}: another writer holds it: {_describe(info)}; lock file {self.path}"
        if info and info.get("host") not in (None, socket.gethostname()):
            msg += " (if no run is writing this file any more, delete the lock file)"
        return msg

    def _break_if_stale(self, host: str) -> bool:
        """Remove the lock file if its holder is dead; True means "try again"."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        try:
            got = _try_flock(fd)
            if got is False:
                return False  # a live process holds it
            try:
                info = json.loads(os.read(fd, 65536).decode("utf-8"))
            except (OSError, ValueError):
                info = None
            if info is None:
                # empty or garbled: a holder between create and write (no-link fallback), or one that died there
                age = time.time() - os.fstat(fd).st_mtime
                if got is None or age < 10.0:
                    return False
            elif info.get("host") != host:
                return False  # never break another host's lock
            elif pid_alive(int(info.get("pid", -1)), info.get("start")):
                return False
            # stale: remove it, but only if the name still points at the file we examined
            try:
                st_now = os.stat(self.path)
            except FileNotFoundError:
                return True
            st = os.fstat(fd)
            if (st_now.st_dev, st_now.st_ino) != (st.st_dev, st.st_ino):
                return True
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            return True
        finally:
            os.close(fd)

    def release(self) -> None:
        """Give the claim up (idempotent): remove the lock file if it is still ours, then drop the flock."""
        if self._fd is None:
            return
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._ino:
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
