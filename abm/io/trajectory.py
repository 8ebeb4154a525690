"""Write an abm trajectory (HDF5, H5MD-like): :class:`TrajectoryWriter`.

The writer knows nothing about the model. A reporter on the model side declares the schema up front (observables,
species, cell-type codes, lattice) and then appends rows, snapshots and events. The layout is documented in
``docs/output-format.md``; :func:`abm.io.load` reads it back.

Safety (details in ``docs/output-format.md``):

- **Checked paths.** :func:`~abm.io.paths.check_output_path` refuses a directory, device, FIFO or socket (or a
  symlink to one), a missing or read-only directory, and an existing file without ``overwrite``, before anything is
  written.
- **One writer per file.** The writer claims ``NAME.lock`` (:mod:`abm.io.locking`); a second writer of the same
  file fails at once with :class:`~abm.io.errors.OutputLockedError` naming the first (pid, host). A lock left by a
  killed writer is recognised as stale and taken over.
- **A private partial file.** The run is written to ``NAME.<pid>-<hex>.partial``, flushed after the header, every
  snapshot, event and summary write. Only :meth:`TrajectoryWriter.close` with ``complete=True`` renames it to ``NAME``
  (atomically, after an fsync), so ``NAME``, when it exists, is always a complete run, and an earlier complete
  ``NAME`` is replaced only by a later complete one. An interrupted or failed run keeps its partial file.
- **A full disk** stops the writer at the first failed (or, from the free space, certainly failing) write with
  :class:`~abm.io.errors.DiskFullError` naming the file and ENOSPC. A reserve of disk held since the start
  (``NAME.<pid>-<hex>.reserve``) is released so that the partial file closes cleanly; nothing more is written.
- **Checksums.** Every chunked numeric dataset carries HDF5's Fletcher-32 filter, and ``close`` stores a manifest of
  SHA-256 digests of everything else (:mod:`abm.io.integrity`).
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from .errors import FULL_ERRNOS, DiskFullError, OutputExistsError, OutputPathError, TrajectoryIOError, WriteError
from .guarded import GuardedFile, deferred_signals
from .integrity import _short, errno_of, frame_crc32, write_manifest
from .locking import FileLock
from .paths import (
    check_output_path,
    find_partials,
    lock_path,
    new_token,
    partial_path,
    private_partial,
    reserve_path,
    stale_reserves,
)
from .reader import Trajectory, load
from .schema import (
    CELL_TABLE,
    EVENT_COLUMNS,
    EVENT_COLUMNS_ADDED,
    EVENT_FIELDS,
    EVENT_UNIT_COLUMNS,
    EVENT_UNITS,
    FORMAT_NAME,
    FORMAT_VERSION,
    FS_STRATEGY,
    H5MD_VERSION,
    LIBVER,
    RESERVED_ROOT_ATTRS,
    STR_DTYPE,
    WRITE_FAILED,
    ColumnSpec,
    ObservableSpec,
    SpeciesSpec,
    check_name,
    nan_if_none,
    to_h5_value,
)

__all__ = ["IncompleteRunWarning", "TrajectoryWriter", "Trajectory", "load", "partial_path"]

_OBS_CHUNK = 1024
_FRAME_META_CHUNK = 64
_EVENT_CHUNK = 64
_CELL_CHUNK = 8192  # rows per chunk of a per-cell column
_CHECK = {"fletcher32": True}
_MIB = 1 << 20


class IncompleteRunWarning(RuntimeWarning):
    """A run closed incomplete: says where its partial file is and that an earlier complete file is untouched."""


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _append_1d(ds: h5py.Dataset, values: np.ndarray) -> None:
    n0 = ds.shape[0]
    ds.resize((n0 + len(values),))
    ds[n0:] = values


def _fsync_path(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory
        pass
    finally:
        os.close(fd)


def _free_bytes(directory: Path) -> int | None:
    try:
        st = os.statvfs(directory)
    except (OSError, AttributeError):
        return None
    return int(st.f_bavail) * int(st.f_frsize)


def _make_reserve(path: Path, nbytes: int) -> None:
    """Hold ``nbytes`` of disk in ``path`` (real blocks: fallocate, else written bytes that do not compress)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, nbytes)
            return
        except (AttributeError, OSError) as e:
            if isinstance(e, OSError) and e.errno in FULL_ERRNOS:
                raise
        block = os.urandom(min(nbytes, _MIB))
        left = nbytes
        while left > 0:
            left -= os.write(fd, block[: min(left, len(block))])
    except BaseException:
        os.close(fd)
        fd = -1
        path.unlink(missing_ok=True)
        raise
    finally:
        if fd >= 0:
            os.close(fd)


class TrajectoryWriter:
    """Write one run to an HDF5 trajectory file.

    Parameters
    ----------
    path : str or os.PathLike
        Final file name ``NAME``. While writing, the file is ``NAME.<pid>-<hex>.partial`` (:attr:`partial_path`),
        and ``NAME.lock`` holds the claim on ``NAME``.
    shape_xyz : tuple of int
        Lattice shape ``(nx, ny, nz)``; ``nz == 1`` is a 2D run.
    spacing_um : float
        Lattice spacing, micrometres.
    dt_min : float
        Time step, minutes.
    observables : sequence of ObservableSpec
        Every observable the run will report, declared up front; each ``append_observables`` row must give all.
    species : sequence of SpeciesSpec
        Diffusing species stored with every snapshot; each ``append_snapshot`` must give all.
    cell_type_codes : mapping of str to int
        Meaning of the uint8 cell-type codes, e.g. ``{"empty": 0, "tumour": 1}``.
    cell_columns : sequence of ColumnSpec, optional
        Columns of the per-cell table (``/particles/cells``, one row per cell per :meth:`append_cells`; abm writes
        :data:`abm.io.schema.CELL_COLUMNS`). Empty (the default): the file has no per-cell table.
    vessel_sites : ndarray of int
        Flat lattice indices ``i = x + nx*(y + ny*z)`` of vessel sites.
    attrs : mapping
        Provenance stored as root attributes (abm_version, git_hash, seed, scenario_name, ...). Values: None, bool,
        int, float, str or 1-D lists of numbers or strings. ``None`` is stored as an HDF5 null and reads back None.
    parameters_json, scenario_toml : str
        The resolved parameter tree (JSON text) and the scenario file text.
    creator, creator_version : str
        Program that wrote the file (``/h5md/creator``).
    overwrite : bool
        Replace an existing ``NAME`` when (and only when) this run completes; also allows starting while an
        interrupted run's partial file exists (it is removed when this run completes). Without it, either raises
        :class:`~abm.io.errors.OutputExistsError` (a ``FileExistsError``) before anything is written.
    compression : {"gzip", "lzf", None}
        Filter for snapshot frames; gzip (default, level ``compression_opts``) is readable by every HDF5 tool.
    compression_opts : int or None
        gzip level (default 4).
    observable_block : int
        Observable rows buffered in memory between writes (default 256); :meth:`flush` writes them at once.
    lock : bool
        Claim ``NAME.lock`` (default True). Only for callers that hold an equivalent claim themselves.
    reserve_bytes : int, optional
        Disk space held back from the start so that the file can be closed cleanly on a full disk. Default: one
        frame per snapshot dataset (at most 1 MiB each), one observable block and 1 MiB, times 1.25 (1.4 MiB for a
        100 x 100 lattice with two species). 0 disables the reserve.
    check_free_space : bool
        Before each snapshot and observable block, compare its size with the free space of the file system and stop
        with :class:`~abm.io.errors.DiskFullError` before HDF5 hits ENOSPC (default True).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        shape_xyz: tuple[int, int, int],
        spacing_um: float,
        dt_min: float,
        observables: Sequence[ObservableSpec],
        species: Sequence[SpeciesSpec],
        cell_type_codes: Mapping[str, int],
        vessel_sites: np.ndarray,
        attrs: Mapping[str, object],
        cell_columns: Sequence[ColumnSpec] = (),
        parameters_json: str,
        scenario_toml: str,
        creator: str = "abm",
        creator_version: str = "",
        overwrite: bool = False,
        compression: str | None = "gzip",
        compression_opts: int | None = 4,
        observable_block: int = 256,
        lock: bool = True,
        reserve_bytes: int | None = None,
        check_free_space: bool = True,
    ) -> None:
        # --- validate everything before touching the disk -------------------------------------------------------
        shape = tuple(int(s) for s in shape_xyz)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape_xyz must be three positive ints (nx, ny, nz), got {shape_xyz!r}")
        nx, ny, nz = shape
        self._shape_xyz = shape
        self._spacing_um = float(spacing_um)
        self._n_sites = nx * ny * nz
        self._grid_shape = (nz, ny, nx) if nz > 1 else (ny, nx)
        self._grid_dims = ("z", "y", "x") if nz > 1 else ("y", "x")
        if not (float(spacing_um) > 0 and float(dt_min) > 0):
            raise ValueError(f"spacing_um and dt_min must be positive, got {spacing_um!r}, {dt_min!r}")

        self._obs_specs = list(observables)
        names = [check_name(o.name, "observable") for o in self._obs_specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate observable names in {names}")
        for o in self._obs_specs:
            try:
                np.dtype(o.dtype)
            except TypeError as exc:
                raise ValueError(f"observable {o.name!r}: unknown dtype {o.dtype!r}") from exc
        self._species = list(species)
        sp_names = [check_name(s.name, "species") for s in self._species]
        if len(set(sp_names)) != len(sp_names):
            raise ValueError(f"duplicate species names in {sp_names}")

        codes = {str(k): int(v) for k, v in cell_type_codes.items()}
        if any(not 0 <= v <= 255 for v in codes.values()) or len(set(codes.values())) != len(codes):
            raise ValueError(f"cell_type_codes must map names to distinct ints in 0..255, got {codes}")
        self._codes = codes

        self._cell_cols = list(cell_columns)
        col_names = [check_name(c.name, "cell column") for c in self._cell_cols]
        if len(set(col_names)) != len(col_names) or {"step", "time", "start", "count"} & set(col_names):
            raise ValueError(f"cell columns must be distinct and not step/time/start/count, got {col_names}")
        for c in self._cell_cols:
            try:
                np.dtype(c.dtype)
            except TypeError as exc:
                raise ValueError(f"cell column {c.name!r}: unknown dtype {c.dtype!r}") from exc
        self._cell_row_bytes = sum(np.dtype(c.dtype).itemsize for c in self._cell_cols)
        self._n_cell_frames = 0
        self._n_cell_rows = 0
        self._last_cells_step: int | None = None
        # CRC-32 of every frame as written, per dataset path (in order); a checkpoint keeps them so that a resume
        # can tell a frame of a killed writer's partial file that reads back but differs (abm.checkpoint)
        self._frame_crc: dict[str, list[int]] = {}

        vessels = np.asarray(vessel_sites, dtype=np.int64).reshape(-1)
        if vessels.size and (vessels.min() < 0 or vessels.max() >= self._n_sites):
            raise ValueError(f"vessel_sites must be flat indices in [0, {self._n_sites}), got out-of-range values")

        clash = RESERVED_ROOT_ATTRS.intersection(attrs)
        if clash:
            raise ValueError(f"attrs may not use the reserved root attribute names {sorted(clash)}")
        root_attrs = {str(k): to_h5_value(v, f"attrs[{k!r}]") for k, v in attrs.items()}
        if compression not in ("gzip", "lzf", None):
            raise ValueError(f"compression must be 'gzip', 'lzf' or None, got {compression!r}")

        self._comp = {}
        if compression == "gzip":
            self._comp = {"compression": "gzip", "compression_opts": compression_opts}
        elif compression == "lzf":
            self._comp = {"compression": "lzf"}
        self._block = max(1, int(observable_block))
        self._obs_buf_step: list[int] = []
        self._obs_buf_time: list[float] = []
        self._obs_buf: dict[str, list] = {n: [] for n in names}
        self._n_obs_written = 0
        self._n_snapshots = 0
        self._last_obs_step: int | None = None
        self._last_snap_step: int | None = None
        self._closed = False
        self._failed: TrajectoryIOError | None = None
        self._result: Path | None = None
        self._file: h5py.File | None = None
        self._fio: GuardedFile | None = None
        self._starting = True
        self._check_space = bool(check_free_space)
        self._frame_bytes = self._n_sites * (1 + 4 * len(self._species)) + 4096
        # an observable block may start a new chunk (1024 rows) in each of its 3 x n_observables datasets
        self._block_bytes = 3 * len(self._obs_specs) * _OBS_CHUNK * 8 + 4096
        if reserve_bytes is None:
            # what HDF5 may still hold in memory after a failed write: one chunk per frame dataset (chunks above the
            # 1 MiB chunk cache are written through), the observable block, and metadata
            cached = min(self._n_sites, _MIB) + len(self._species) * min(4 * self._n_sites, _MIB)
            cached += _CELL_CHUNK * self._cell_row_bytes
            reserve_bytes = int(1.25 * (cached + self._block_bytes + _MIB))
        self._reserve_bytes = max(0, int(reserve_bytes))

        # --- claim the target ---------------------------------------------------------------------------------
        self._overwrite = bool(overwrite)
        self._path = check_output_path(path, overwrite)
        self._token = new_token()
        self._partial = private_partial(self._path, self._token)
        self._reserve = reserve_path(self._path, self._token)
        argv0 = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
        self._lock = (
            FileLock(lock_path(self._path), self._path, what=f"a trajectory writer ({argv0})") if lock else None
        )
        if self._lock is not None:
            self._lock.acquire()
        try:
            # under the lock, the state of NAME and its leftovers is stable: check again
            check_output_path(self._path, overwrite)
            if self._lock is not None:
                for stale in stale_reserves(self._path):  # left by writers that were killed (we hold the lock)
                    stale.unlink(missing_ok=True)
            if self._reserve_bytes:
                try:
                    _make_reserve(self._reserve, self._reserve_bytes)
                except OSError as e:
                    raise self._io_error(e, "reserving disk space to start writing") from None
            try:
                self._fio = GuardedFile(self._partial, on_error=lambda e: self._release_reserve())
                with deferred_signals():
                    self._file = h5py.File(self._fio, "w", libver=LIBVER, fs_strategy=FS_STRATEGY)
            except (OSError, RuntimeError, ValueError) as e:
                raise self._io_error(e, "creating the file") from None
            with self._io("writing the header"):
                self._write_header(
                    root_attrs,
                    float(spacing_um),
                    float(dt_min),
                    vessels,
                    parameters_json,
                    scenario_toml,
                    creator,
                    creator_version,
                )
                self._file.flush()
        except BaseException:
            self._abandon()
            raise
        self._starting = False

    # ------------------------------------------------------------------------------------------------------------
    # failures
    def _io_error(self, e: BaseException, what: str) -> TrajectoryIOError:
        """The exception ``e`` (from h5py or the OS) as a :class:`WriteError` naming the file and the errno."""
        if isinstance(e, TrajectoryIOError):
            return e
        n = errno_of(e)
        where = self._partial if self._file is not None or what != "reserving disk space to start writing" else None
        if n in FULL_ERRNOS:
            name = _errno.errorcode.get(n, str(n))
            return DiskFullError(
                f"{self._path}: {os.strerror(n)} ({name}) while {what}"
                + (f" ({where.name})" if where else "")
                + f"; free space in {self._path.parent}: {_fmt_bytes(_free_bytes(self._path.parent))}",
                self._path,
                n,
            )
        return WriteError(f"{self._path}: writing failed while {what}: {_short(e)}", self._path, n)

    @contextlib.contextmanager
    def _io(self, what: str) -> Iterator[None]:
        """Run HDF5 writes; on the first failure stop for good (see :meth:`_stop`) and raise a clear error.

        A failed write reaches us through the guarded file (HDF5 is told it succeeded, see :mod:`abm.io.guarded`);
        anything h5py raises inside a write also stops the writer, since the file may then hold half of it.
        """
        if self._failed is not None:
            raise self._failed
        with deferred_signals():  # a signal is handled once HDF5 has returned, never inside it
            try:
                yield
            except Exception as e:  # noqa: BLE001
                err = self._io_error(e, what)
                self._stop(err)
                raise err from None
            if self._fio is not None and self._fio.error is not None:
                err = self._io_error(self._fio.error, what)
                self._stop(err)
                raise err

    def _ensure_space(self, nbytes: int, what: str) -> None:
        if not self._check_space:
            return
        free = _free_bytes(self._partial.parent)
        if free is not None and free < nbytes:
            err = DiskFullError(
                f"{self._path}: {os.strerror(_errno.ENOSPC)} (ENOSPC): {what} needs about {_fmt_bytes(nbytes)} and "
                f"{self._partial.parent} has {_fmt_bytes(free)} free",
                self._path,
                _errno.ENOSPC,
            )
            self._stop(err)
            raise err

    def _stop(self, err: TrajectoryIOError) -> None:
        """After a failed (or, from the free space, certainly failing) write: write nothing more of the run, release
        the reserve, close the file cleanly, keep any earlier file; later calls raise ``err`` again.

        HDF5 never saw the failure (:mod:`abm.io.guarded`), so it closes normally: what it still holds goes to disk
        through the space the reserve freed (or stays in the guarded file's overlay, which :meth:`_close_h5` tries
        once more). The partial file is kept when it is whole, removed when it cannot be.
        """
        if self._failed is not None:
            return
        self._failed = err
        self._release_reserve()
        kept = None
        with deferred_signals():
            kept = self._stop_file(err)
        self._closed = True
        if self._starting:  # the constructor failed: it removes the partial file (a header at most)
            self._result = None
            err.message += "; nothing was written"
        elif kept is not None and kept.exists():
            self._result = kept
            err.message += f"; the run so far is kept in {kept}"
        else:
            self._partial.unlink(missing_ok=True)
            self._result = None
            err.message += "; the partial file could not be saved and was removed"
        if self._path.exists():
            err.message += f"; the earlier {self._path.name} is untouched"
        if self._lock is not None:
            self._lock.release()

    def _stop_file(self, err: TrajectoryIOError) -> Path | None:
        kept = None
        if self._file is not None:
            try:
                f = self._file
                self._write_observables_now()
                f.attrs["complete"] = np.bool_(False)
                f.attrs["status"] = f"{WRITE_FAILED}{err}"[:2000]
                f.attrs["finished"] = _utc_now()
                write_manifest(f)
            except Exception:  # noqa: BLE001 - closing the file is what matters now
                pass
            if self._close_h5():
                kept = self._partial
        return kept

    def _close_h5(self) -> bool:
        """Close the HDF5 file and the guarded file object; True if the file on disk is whole."""
        whole = True
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # noqa: BLE001
                whole = False
            self._file = None
        if self._fio is not None:
            whole = self._fio.replay() and whole
            with contextlib.suppress(OSError):
                self._fio.close()
        return whole

    def _release_reserve(self) -> None:
        try:
            self._reserve.unlink(missing_ok=True)
        except OSError:
            pass

    def _abandon(self) -> None:
        """The constructor failed: remove everything this writer created (never anything else)."""
        with deferred_signals():
            self._close_h5()
        self._partial.unlink(missing_ok=True)  # a header at most: nothing of a run
        self._release_reserve()
        if self._lock is not None:
            self._lock.release()
        self._closed = True

    # ------------------------------------------------------------------------------------------------------------
    # layout
    def _write_header(
        self, root_attrs, spacing_um, dt_min, vessels, parameters_json, scenario_toml, creator, creator_version
    ) -> None:
        f = self._file
        f.attrs["format_name"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        for k, v in root_attrs.items():
            f.attrs[k] = v
        f.attrs["complete"] = np.bool_(False)
        f.attrs["status"] = "running"
        f.attrs["created"] = _utc_now()

        h5md = f.create_group("h5md")
        h5md.attrs["version"] = np.array(H5MD_VERSION, dtype=np.int32)
        cr = h5md.create_group("creator")
        cr.attrs["name"] = str(creator)
        cr.attrs["version"] = str(creator_version)

        par = f.create_group("parameters")
        par.create_dataset("resolved_json", data=str(parameters_json), dtype=STR_DTYPE)
        par.create_dataset("scenario_toml", data=str(scenario_toml), dtype=STR_DTYPE)
        par["resolved_json"].attrs["description"] = "resolved parameter tree, JSON"
        par["scenario_toml"].attrs["description"] = "scenario file text, TOML"

        nx, ny, nz = self._shape_xyz
        lat = f.create_group("lattice")
        lat.attrs["shape_xyz"] = np.array(self._shape_xyz, dtype=np.int64)
        lat.attrs["spacing_um"] = spacing_um
        lat.attrs["dt_min"] = dt_min
        lat.attrs["dims"] = np.int64(3 if nz > 1 else 2)
        lat.attrs["n_sites"] = np.int64(self._n_sites)
        lat.attrs["storage_dims"] = np.array(self._grid_dims, dtype=STR_DTYPE)
        lat.attrs["flat_index"] = "i = x + nx*(y + ny*z)"
        vs = lat.create_dataset("vessel_sites", data=vessels, dtype=np.int64)
        vs.attrs["description"] = "flat lattice indices i = x + nx*(y + ny*z) of vessel sites"
        vs.make_scale("vessel_sites")
        cg = lat.create_group("cell_type_codes")
        for name, code in self._codes.items():
            cg.attrs[name] = np.int64(code)

        obs = f.create_group("observables", track_order=True)
        for spec in self._obs_specs:
            g = obs.create_group(spec.name)
            time = self._make_time(g, _OBS_CHUNK)
            val = g.create_dataset(
                "value", shape=(0,), maxshape=(None,), dtype=np.dtype(spec.dtype), chunks=(_OBS_CHUNK,), **_CHECK
            )
            val.attrs["units"] = spec.units
            val.attrs["description"] = spec.description
            val.dims[0].attach_scale(time)

        ct = f.create_group("particles").create_group("lattice").create_group("cell_type")
        val = self._make_frames(ct, np.uint8)
        flags = sorted(self._codes.items(), key=lambda kv: kv[1])
        val.attrs["units"] = "1"
        val.attrs["description"] = "cell type code per lattice site; meanings in flag_values/flag_meanings"
        val.attrs["flag_values"] = np.array([c for _, c in flags], dtype=np.uint8)
        val.attrs["flag_meanings"] = " ".join(n.replace(" ", "_") for n, _ in flags)

        fields = f.create_group("fields", track_order=True)
        for sp in self._species:
            val = self._make_frames(fields.create_group(sp.name), np.float32)
            val.attrs["units"] = sp.units
            val.attrs["description"] = f"concentration of {sp.name}"

        ev = f.create_group("events", track_order=True)
        ev.attrs["description"] = "one row per event; absent strings are '' and absent numbers NaN"
        time = None
        for col, kind in self._event_columns().items():
            dtype = {"int": np.int64, "float": np.float64, "str": STR_DTYPE}[kind]
            check = {} if kind == "str" else _CHECK  # HDF5 filters cannot apply to variable-length strings
            ds = ev.create_dataset(col, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(_EVENT_CHUNK,), **check)
            if col in EVENT_UNITS:
                ds.attrs["units"] = EVENT_UNITS[col]
            if col in EVENT_UNIT_COLUMNS:
                ds.attrs["units_column"] = EVENT_UNIT_COLUMNS[col]
            if col == "time":
                ds.make_scale("time")
                time = ds
        for col in self._event_columns():
            if col != "time":
                ev[col].dims[0].attach_scale(time)

        if self._cell_cols:
            self._make_cell_table(f)

        f.create_group("summary", track_order=True)

    @staticmethod
    def _event_columns() -> dict[str, str]:
        return {**EVENT_COLUMNS, **{c: kind for c, (kind, _) in EVENT_COLUMNS_ADDED.items()}}

    def _make_cell_table(self, f: h5py.File) -> None:
        """``/particles/cells``: every frame's rows one after the other in one resizable dataset per column, and per
        frame ``step``, ``time``, ``start`` (first row) and ``count`` (rows)."""
        g = f["particles"].create_group("cells", track_order=True)
        g.attrs["description"] = (
            "one row per live cell per snapshot; the rows of frame k are start[k] .. start[k] + count[k] - 1 of "
            "every column"
        )
        time = self._make_time(g, _FRAME_META_CHUNK)
        for name, what in (("start", "first row of each frame"), ("count", "rows (cells) in each frame")):
            ds = g.create_dataset(
                name, shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(_FRAME_META_CHUNK,), **_CHECK
            )
            ds.attrs["units"] = "1"
            ds.attrs["description"] = what
            ds.dims[0].attach_scale(time)
        comp = dict(self._comp)
        if comp.get("compression") == "gzip":
            comp["shuffle"] = True
        flags = sorted(self._codes.items(), key=lambda kv: kv[1])
        for c in self._cell_cols:
            ds = g.create_dataset(
                c.name,
                shape=(0,),
                maxshape=(None,),
                dtype=np.dtype(c.dtype),
                chunks=(_CELL_CHUNK,),
                **comp,
                **_CHECK,
            )
            ds.attrs["units"] = c.units
            ds.attrs["description"] = c.description
            if c.name == "type":
                ds.attrs["flag_values"] = np.array([v for _, v in flags], dtype=np.uint8)
                ds.attrs["flag_meanings"] = " ".join(n.replace(" ", "_") for n, _ in flags)

    @staticmethod
    def _make_time(g: h5py.Group, chunk: int) -> h5py.Dataset:
        """``step`` and ``time`` (minutes) 1-D resizable datasets; ``time`` is the group's frame dimension scale."""
        time = g.create_dataset("time", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(chunk,), **_CHECK)
        time.attrs["units"] = "min"
        time.make_scale("time")
        step = g.create_dataset("step", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(chunk,), **_CHECK)
        step.attrs["units"] = "1"
        step.dims[0].attach_scale(time)
        return time

    def _make_frames(self, g: h5py.Group, dtype) -> h5py.Dataset:
        """A snapshot group: step/time, x/y(/z) coordinates in um, and ``value`` (frame, [z,] y, x)."""
        time = self._make_time(g, _FRAME_META_CHUNK)
        nx, ny, nz = self._shape_xyz
        scales = [time]
        for dim, n in zip(self._grid_dims, self._grid_shape):
            c = g.create_dataset(dim, data=np.arange(n, dtype=np.float64) * self._spacing_um)
            c.attrs["units"] = "um"
            c.attrs["description"] = f"{dim} position of the lattice site (index * spacing_um)"
            c.make_scale(dim)
            scales.append(c)
        comp = dict(self._comp)
        if dtype == np.float32 and comp.get("compression") == "gzip":
            comp["shuffle"] = True
        val = g.create_dataset(
            "value",
            shape=(0, *self._grid_shape),
            maxshape=(None, *self._grid_shape),
            dtype=dtype,
            chunks=(1, *self._grid_shape),
            **comp,
            **_CHECK,
        )
        for i, s in enumerate(scales):
            val.dims[i].attach_scale(s)
        return val

    # ------------------------------------------------------------------------------------------------------------
    # appending
    def _check_open(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closed:
            raise RuntimeError(f"trajectory writer for {self._path} is closed")

    @property
    def path(self) -> Path:
        """Final file name (the run is in :attr:`partial_path` until :meth:`close` completes it)."""
        return self._path

    @property
    def partial_path(self) -> Path:
        """This writer's private partial file, ``NAME.<pid>-<hex>.partial``."""
        return self._partial

    @property
    def lock_path(self) -> Path:
        return lock_path(self._path)

    @property
    def frame_crc32(self) -> dict[str, list[int]]:
        """CRC-32 (:func:`~abm.io.integrity.frame_crc32`) of every snapshot frame and per-cell frame written, keyed
        by dataset path (``/fields/il2/value``, ``/particles/cells/id``...), in frame order."""
        return {k: list(v) for k, v in self._frame_crc.items()}

    @property
    def n_snapshots(self) -> int:
        return self._n_snapshots

    @property
    def n_cell_frames(self) -> int:
        return self._n_cell_frames

    @property
    def n_observable_rows(self) -> int:
        """Rows appended so far, written or still buffered."""
        return self._n_obs_written + len(self._obs_buf_step)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def failed(self) -> TrajectoryIOError | None:
        """The write error that stopped this writer, or None."""
        return self._failed

    def append_observables(self, step: int, time_min: float, values: Mapping[str, float]) -> None:
        """Append one row: every declared observable at ``step`` (time ``time_min`` minutes).

        Rows are buffered and written every ``observable_block`` rows and on :meth:`flush`/:meth:`close`.
        """
        self._check_open()
        step = int(step)
        if self._last_obs_step is not None and step <= self._last_obs_step:
            raise ValueError(f"observable steps must increase: got {step} after {self._last_obs_step}")
        keys = set(values)
        if keys != self._obs_buf.keys():
            missing = sorted(self._obs_buf.keys() - keys)
            extra = sorted(keys - self._obs_buf.keys())
            raise KeyError(f"observable row at step {step}: missing {missing}, undeclared {extra}")
        self._obs_buf_step.append(step)
        self._obs_buf_time.append(float(time_min))
        for k, v in values.items():
            self._obs_buf[k].append(v)
        self._last_obs_step = step
        if len(self._obs_buf_step) >= self._block:
            self._write_observables()

    def _write_observables(self) -> None:
        k = len(self._obs_buf_step)
        if k == 0:
            return
        self._ensure_space(self._block_bytes + 65536, f"writing {k} observable rows")
        with self._io(f"writing {k} observable rows"):
            self._write_observables_now()

    def _write_observables_now(self) -> None:
        k = len(self._obs_buf_step)
        if k == 0:
            return
        steps = np.asarray(self._obs_buf_step, dtype=np.int64)
        times = np.asarray(self._obs_buf_time, dtype=np.float64)
        grp = self._file["observables"]
        for spec in self._obs_specs:
            g = grp[spec.name]
            _append_1d(g["value"], np.asarray(self._obs_buf[spec.name], dtype=np.dtype(spec.dtype)))
            _append_1d(g["time"], times)
            _append_1d(g["step"], steps)
        for spec in self._obs_specs:
            self._obs_buf[spec.name].clear()
        self._obs_buf_step.clear()
        self._obs_buf_time.clear()
        self._n_obs_written += k

    def _grid(self, arr, what: str, dtype) -> np.ndarray:
        a = np.asarray(arr)
        if a.size != self._n_sites:
            raise ValueError(
                f"{what}: expected {self._n_sites} sites (shape_xyz={self._shape_xyz}), got shape {a.shape}"
            )
        if a.ndim > 1 and a.shape not in (self._grid_shape, (1, *self._grid_shape)):
            raise ValueError(f"{what}: shaped arrays must be {self._grid_shape} (z, y, x order), got {a.shape}")
        if dtype == np.uint8 and a.dtype != np.uint8:
            if a.dtype.kind not in "iub" or (a.size and (a.min() < 0 or a.max() > 255)):
                raise ValueError(f"{what}: cell types must be integer codes in 0..255, got dtype {a.dtype}")
        return a.astype(dtype, copy=False).reshape(self._grid_shape)

    def append_snapshot(
        self, step: int, time_min: float, cell_type: np.ndarray, fields: Mapping[str, np.ndarray]
    ) -> None:
        """Append one frame: cell types (uint8) and every declared species field (stored float32); then flush.

        Arrays may be flat ``(n_sites,)`` with ``i = x + nx*(y + ny*z)`` or shaped ``(nz, ny, nx)`` / ``(ny, nx)``.
        """
        self._check_open()
        step = int(step)
        if self._last_snap_step is not None and step <= self._last_snap_step:
            raise ValueError(f"snapshot steps must increase: got {step} after {self._last_snap_step}")
        declared = {s.name for s in self._species}
        if set(fields) != declared:
            raise KeyError(
                f"snapshot at step {step}: missing fields {sorted(declared - set(fields))}, "
                f"undeclared {sorted(set(fields) - declared)}"
            )
        ct = self._grid(cell_type, "cell_type", np.uint8)
        data = {name: self._grid(fields[name], f"field {name!r}", np.float32) for name in declared}
        self._ensure_space(self._frame_bytes + self._block_bytes, f"writing the snapshot at step {step}")
        i = self._n_snapshots
        with self._io(f"writing the snapshot at step {step}"):
            groups = [(self._file["particles/lattice/cell_type"], ct)]
            groups += [(self._file["fields"][s.name], data[s.name]) for s in self._species]
            for g, frame in groups:  # frames first, then step/time: a reader trusts the shortest
                val = g["value"]
                val.resize(i + 1, axis=0)
                val[i] = frame
                self._frame_crc.setdefault(val.name, []).append(frame_crc32(frame))
            for g, _ in groups:
                _append_1d(g["time"], np.array([time_min], dtype=np.float64))
                _append_1d(g["step"], np.array([step], dtype=np.int64))
        self._n_snapshots = i + 1
        self._last_snap_step = step
        self.flush()

    def append_cells(self, step: int, time_min: float, columns: Mapping[str, np.ndarray]) -> None:
        """Append one frame of the per-cell table: every declared column, all of one length (the cells); then flush.

        Raises ``ValueError`` when the writer was created without ``cell_columns``.
        """
        self._check_open()
        if not self._cell_cols:
            raise ValueError("this writer has no per-cell table (created without cell_columns)")
        step = int(step)
        if self._last_cells_step is not None and step <= self._last_cells_step:
            raise ValueError(f"cell-table steps must increase: got {step} after {self._last_cells_step}")
        declared = [c.name for c in self._cell_cols]
        if set(columns) != set(declared):
            raise KeyError(
                f"cell table at step {step}: missing columns {sorted(set(declared) - set(columns))}, "
                f"undeclared {sorted(set(columns) - set(declared))}"
            )
        data = {
            c.name: np.asarray(columns[c.name]).reshape(-1).astype(np.dtype(c.dtype), copy=False)
            for c in self._cell_cols
        }
        lengths = {len(v) for v in data.values()}
        if len(lengths) != 1:
            raise ValueError(f"cell table at step {step}: columns of different lengths {sorted(lengths)}")
        n = lengths.pop()
        self._ensure_space(n * self._cell_row_bytes + self._block_bytes, f"writing the cell table at step {step}")
        start = self._n_cell_rows
        with self._io(f"writing the cell table at step {step}"):
            g = self._file[CELL_TABLE]
            for name, values in data.items():  # rows first, then the frame index: a reader trusts what is whole
                _append_1d(g[name], values)
                self._frame_crc.setdefault(g[name].name, []).append(frame_crc32(values))
            _append_1d(g["start"], np.array([start], dtype=np.int64))
            _append_1d(g["count"], np.array([n], dtype=np.int64))
            _append_1d(g["time"], np.array([time_min], dtype=np.float64))
            _append_1d(g["step"], np.array([step], dtype=np.int64))
        self._n_cell_rows = start + n
        self._n_cell_frames += 1
        self._last_cells_step = step
        self.flush()

    def add_event(self, step: int, time_min: float, kind: str, **fields) -> None:
        """Append one event row (and flush). ``fields``: drug, route, unit, amount_unit, note (str); dose, amount
        (float)."""
        self._check_open()
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"event kind must be a non-empty string, got {kind!r}")
        unknown = set(fields) - set(EVENT_FIELDS)
        if unknown:
            raise TypeError(f"unknown event fields {sorted(unknown)}; allowed: {list(EVENT_FIELDS)}")
        row = {"step": int(step), "time": float(time_min), "kind": kind}
        for col in EVENT_FIELDS:
            v = fields.get(col)
            row[col] = nan_if_none(v) if self._event_columns()[col] == "float" else ("" if v is None else str(v))
        self._ensure_space(65536, f"writing a {kind} event")
        with self._io(f"writing a {kind} event at step {step}"):
            ev = self._file["events"]
            for col, kind_ in self._event_columns().items():
                dtype = {"int": np.int64, "float": np.float64, "str": object}[kind_]
                _append_1d(ev[col], np.array([row[col]], dtype=dtype))
            self._file.flush()

    def write_summary(
        self,
        summary: Mapping[str, object],
        units: Mapping[str, str] | None = None,
        descriptions: Mapping[str, str] | None = None,
    ) -> None:
        """Store run-level scalars (float, int, str, bool or None) as scalar datasets in ``/summary``, each with a
        ``units`` attribute (``units[key]``: ``"1"`` for dimensionless values, strings and flags; ``""`` when the
        caller gave none) and, where given, a ``description``.

        May be called more than once; a repeated key replaces the earlier value.
        """
        self._check_open()
        units = dict(units or {})
        descriptions = dict(descriptions or {})
        converted = {check_name(str(k), "summary"): to_h5_value(v, f"summary[{k!r}]") for k, v in summary.items()}
        self._ensure_space(65536, "writing the summary")
        with self._io("writing the summary"):
            g = self._file["summary"]
            for k, v in converted.items():
                if k in g:
                    del g[k]
                if isinstance(v, str):
                    ds = g.create_dataset(k, data=v, dtype=STR_DTYPE)
                else:
                    ds = g.create_dataset(k, data=v)
                ds.attrs["units"] = str(units.get(k, ""))
                if descriptions.get(k):
                    ds.attrs["description"] = str(descriptions[k])
            self._file.flush()

    def flush(self) -> None:
        """Write buffered observable rows and flush the HDF5 file to disk."""
        self._check_open()
        self._write_observables()
        with self._io("flushing"):
            self._file.flush()

    # ------------------------------------------------------------------------------------------------------------
    # closing
    def close(self, complete: bool = True, status: str | None = None) -> Path | None:
        """Write what is buffered, mark the file and close it; a complete run then becomes ``NAME``.

        Parameters
        ----------
        complete : bool
            True when the run finished: the partial file is fsynced and renamed to ``NAME`` (replacing an earlier
            ``NAME`` only if ``overwrite`` was given). False on interruption (Ctrl-C, SIGTERM, an exception): the
            file is marked ``complete = False`` and stays at :attr:`partial_path`; an earlier ``NAME`` is left
            untouched (an :class:`IncompleteRunWarning` says where the partial file is).
        status : str, optional
            Free text stored in the root attribute ``status``; default ``"completed"`` or ``"incomplete"``.

        Returns
        -------
        Path or None
            Where the run is: ``NAME``, or the partial file (incomplete runs; a complete run when ``NAME`` appeared
            meanwhile without ``overwrite``). None only if a write error left nothing that could be saved. Calling
            close again returns the same path. After a write error (:attr:`failed`), close does nothing more.
        """
        if self._closed:
            return self._result
        with deferred_signals():  # close happens whole; a signal that arrives meanwhile is handled after it
            return self._close(complete, status)

    def _close(self, complete: bool, status: str | None) -> Path | None:
        if status is None:
            status = "completed" if complete else "incomplete"
        try:
            f = self._file
            self._write_observables_now()  # no free-space check here: the reserve is there for this
            f.attrs["complete"] = np.bool_(bool(complete))
            f.attrs["status"] = str(status)
            f.attrs["finished"] = _utc_now()
            write_manifest(f)
        except Exception as e:  # noqa: BLE001 - h5py failing: keep what is whole, leave no lock or reserve
            whole = self._close_h5()
            if not whole:
                self._partial.unlink(missing_ok=True)
            self._finish(self._partial if whole and self._partial.exists() else None)
            if not isinstance(e, TrajectoryIOError):
                raise self._io_error(e, "closing the file") from None
            raise
        whole = self._close_h5()
        error = self._fio.error if self._fio is not None else None
        if not whole:
            self._partial.unlink(missing_ok=True)
            self._finish(None)
            err = self._io_error(error or OSError(_errno.EIO, "write failed"), "closing the file")
            err.message += (
                "; the run could not be saved (its last writes were refused) and its partial file was removed"
            )
            if self._path.exists():
                err.message += f"; the earlier {self._path.name} is untouched"
            self._failed = err
            raise err
        if error is not None:
            warnings.warn(
                f"{self._path}: {error.strerror or error} while closing; the disk reserve held enough to finish",
                RuntimeWarning,
                stacklevel=3,
            )
        if not complete:
            self._finish(self._partial)
            msg = f"{self._path}: the run did not complete ({status}); what it wrote is in {self._partial}"
            if self._path.exists():
                msg += f"; the earlier {self._path.name} is untouched"
            warnings.warn(msg, IncompleteRunWarning, stacklevel=3)
            return self._result
        try:
            self._result = self._publish()
        finally:
            self._finish(self._result)
        return self._result

    def _publish(self) -> Path:
        """Put the closed, complete partial file in place as ``NAME``; return where it ended up."""
        _fsync_path(self._partial)
        try:
            check_output_path(self._path, self._overwrite, check_partials=False)
        except OutputExistsError:
            warnings.warn(
                f"{self._path} appeared while this run was writing; the output is left at {self._partial}",
                RuntimeWarning,
                stacklevel=3,
            )
            return self._partial
        except OutputPathError as e:
            raise OutputPathError(f"{e}; the complete run is kept in {self._partial}", self._path) from None
        try:
            if self._overwrite:
                os.replace(self._partial, self._path)
            else:
                try:  # atomic "create if absent": a file that appeared since the check is not replaced
                    os.link(self._partial, self._path)
                    os.unlink(self._partial)
                except FileExistsError:
                    warnings.warn(
                        f"{self._path} appeared while this run was writing; the output is left at {self._partial}",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                    return self._partial
                except OSError as e:
                    if e.errno not in (_errno.EPERM, _errno.ENOTSUP, _errno.EOPNOTSUPP, _errno.EXDEV, _errno.EMLINK):
                        raise
                    os.replace(self._partial, self._path)  # no hard links here; we hold the lock on NAME
        except OSError as e:
            raise WriteError(
                f"{self._path}: the run completed but could not be renamed into place ({e.strerror or e}); "
                f"it is kept in {self._partial}",
                self._path,
                e.errno,
            ) from None
        _fsync_path(self._path.parent, directory=True)
        if self._overwrite:  # interrupted runs of NAME are superseded by this complete one
            for old in find_partials(self._path):
                with contextlib.suppress(OSError):
                    old.unlink()
        return self._path

    def _finish(self, result: Path | None) -> None:
        self._closed = True
        self._result = result
        self._release_reserve()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close(complete=True)
        else:
            self.close(complete=False, status=repr(exc))


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover
