"""The writer's file as HDF5 sees it: a file object on which a write never fails (:class:`GuardedFile`).

HDF5 cannot survive a failed write. After one (ENOSPC, EDQUOT, EFBIG, EIO), its metadata and chunk caches hold data
it can never write; every later flush fails again, and closing the file or the library's own clean-up at exit
crashes the process (h5py 3.16 / HDF5 2.0: a segfault in ``H5D_close`` at exit, even after a single failure).

So the writer does not let HDF5 see the failure. It opens the partial file through h5py's ``fileobj`` driver with
this object, which writes with ``pwrite`` (unbuffered, like HDF5's own sec2 driver, so a flushed file is on the
operating system's side and survives SIGKILL). When a write fails:

1. the error is recorded and ``on_error`` runs (the writer releases its disk reserve);
2. the write is retried once: with the reserve released it normally succeeds, and the file stays consistent;
3. if it fails again, this and every later write are kept in memory (an overlay that later reads see, so HDF5's
   view stays consistent) and :attr:`lost` is set; :meth:`replay` tries to write them when the file is closed.

Either way HDF5 is told every write succeeded, the writer stops at the first error (it checks :attr:`error` after
each operation), and the file is closed cleanly.

The callbacks of the ``fileobj`` driver are Python code running inside HDF5 calls, so a Python signal handler (Ctrl-C's
KeyboardInterrupt, the runner's SIGTERM handler) could raise *inside* HDF5, which HDF5 then takes for a failed write
(and the process segfaults later). :func:`deferred_signals` holds such signals while the writer is inside HDF5 and
delivers them when it is back in its own code, between two operations.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import threading
from collections.abc import Callable, Iterator

__all__ = ["GuardedFile", "deferred_signals"]

_DEFERRABLE = tuple(
    s
    for s in (
        getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGALRM", "SIGUSR1", "SIGUSR2")
    )
    if s is not None
)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold the signals that have a Python handler until the block ends, then run their handlers (main thread only;
    elsewhere Python never runs signal handlers, so there is nothing to hold)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old: dict[int, Callable] = {}

    def hold(signum, frame):
        pending.append(signum)

    for s in _DEFERRABLE:
        h = signal.getsignal(s)
        if callable(h):
            old[s] = h
            signal.signal(s, hold)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for s in pending:  # now outside HDF5: e.g. KeyboardInterrupt from Ctrl-C
            old[s](s, None)


class GuardedFile(io.RawIOBase):
    """A new file at ``path`` (created exclusively) for h5py's ``fileobj`` driver. See the module docstring."""

    def __init__(self, path: str | os.PathLike, on_error: Callable[[OSError], None] | None = None) -> None:
        super().__init__()
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        self._pos = 0
        self._size = 0  # logical size: what HDF5 believes the file holds
        self._on_error = on_error
        self.error: OSError | None = None
        self.lost = False
        self._overlay: list[tuple[int, bytes]] = []
        self._want_size: int | None = None

    # -- io.RawIOBase ----------------------------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self._pos = int(offset)
        elif whence == 1:
            self._pos += int(offset)
        else:
            self._pos = self._size + int(offset)
        return self._pos

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self._size - self._pos)
        pos = self._pos
        self._pos += size
        data = os.pread(self._fd, size, pos)
        if len(data) == size and not self._overlay:
            return data  # the usual case: one system call, no copy
        buf = bytearray(size)
        buf[: len(data)] = data
        got = len(data)
        while data and got < size:
            data = os.pread(self._fd, size - got, pos + got)
            buf[got : got + len(data)] = data
            got += len(data)
        # past the end of what reached the disk: zeros, as HDF5's sec2 driver reads them
        for addr, chunk in self._overlay:  # writes that never reached the disk, in order
            lo, hi = max(addr, pos), min(addr + len(chunk), pos + size)
            if lo < hi:
                buf[lo - pos : hi - pos] = chunk[lo - addr : hi - addr]
        return bytes(buf)

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def write(self, b) -> int:
        n = len(b)
        pos = self._pos
        self._pos += n
        if self._pos > self._size:
            self._size = self._pos
        if not self.lost:
            try:
                self._pwrite(b, pos)
                return n
            except OSError as e:
                self._failed(e)
                try:  # the reserve is released now: once more
                    self._pwrite(b, pos)
                    return n
                except OSError:
                    self.lost = True
        self._overlay.append((pos, bytes(b)))
        return n

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else int(size)
        self._size = size
        if not self.lost:
            try:
                os.ftruncate(self._fd, size)
                return size
            except OSError as e:
                self._failed(e)
                try:
                    os.ftruncate(self._fd, size)
                    return size
                except OSError:
                    self.lost = True
        self._want_size = size
        return size

    def flush(self) -> None:  # every write is already the operating system's (pwrite)
        return None

    def close(self) -> None:
        if self._fd >= 0:
            try:
                os.close(self._fd)
            finally:
                self._fd = -1
        super().close()

    # -- recovery --------------------------------------------------------------------------------------------------
    def _pwrite(self, data, pos: int) -> None:
        n = os.pwrite(self._fd, data, pos)
        if n == len(data):
            return
        view = memoryview(data)[n:]
        pos += n
        while view:
            n = os.pwrite(self._fd, view, pos)
            view = view[n:]
            pos += n

    def _failed(self, e: OSError) -> None:
        if self.error is None:
            self.error = e
            if self._on_error is not None:
                try:
                    self._on_error(e)
                except Exception:  # noqa: BLE001 - nothing may escape into HDF5
                    pass

    def replay(self) -> bool:
        """Write what the overlay holds (after the file was closed by HDF5); True if the file on disk is whole."""
        if not self.lost:
            return True
        try:
            for addr, data in self._overlay:
                self._pwrite(data, addr)
            if self._want_size is not None:
                os.ftruncate(self._fd, self._want_size)
        except OSError:
            return False
        self._overlay.clear()
        self.lost = False
        return True
