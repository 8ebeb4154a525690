"""Write an abm trajectory (HDF5, H5MD-like): :class:`TrajectoryWriter`.

The writer knows nothing about the model. A reporter on the model side declares the schema up front (observables,
species, cell-type codes, lattice) and then appends rows, snapshots and events. The layout is documented in
``docs/output-format.md``; :func:`abm.io.load` reads it back.

Crash safety: the file is written as ``NAME.partial`` and renamed to ``NAME`` by :meth:`TrajectoryWriter.close`.
Every snapshot and every event is followed by an HDF5 flush, so a process killed mid-run leaves a ``.partial``
that h5py can open, holding everything up to the last flush. ``complete`` (root attribute) tells whether the run
finished.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from .reader import Trajectory, load
from .schema import (
    EVENT_COLUMNS,
    EVENT_FIELDS,
    FORMAT_NAME,
    FORMAT_VERSION,
    H5MD_VERSION,
    PARTIAL_SUFFIX,
    RESERVED_ROOT_ATTRS,
    STR_DTYPE,
    ObservableSpec,
    SpeciesSpec,
    check_name,
    nan_if_none,
    to_h5_value,
)

__all__ = ["TrajectoryWriter", "Trajectory", "load", "partial_path"]

_OBS_CHUNK = 1024
_FRAME_META_CHUNK = 64
_EVENT_CHUNK = 64


def partial_path(path: str | os.PathLike) -> Path:
    """The in-progress name of a trajectory file: ``NAME.partial``."""
    p = Path(path)
    return p.with_name(p.name + PARTIAL_SUFFIX)


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _append_1d(ds: h5py.Dataset, values: np.ndarray) -> None:
    n0 = ds.shape[0]
    ds.resize((n0 + len(values),))
    ds[n0:] = values


class TrajectoryWriter:
    """Write one run to an HDF5 trajectory file.

    Parameters
    ----------
    path : str or os.PathLike
        Final file name. While writing, the file is ``path + ".partial"``.
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
        Replace an existing ``path`` (and a leftover ``path.partial``). Otherwise raise FileExistsError.
    compression : {"gzip", "lzf", None}
        Filter for snapshot frames; gzip (default, level ``compression_opts``) is readable by every HDF5 tool.
    compression_opts : int or None
        gzip level (default 4).
    observable_block : int
        Observable rows buffered in memory between writes (default 256); :meth:`flush` writes them at once.
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
        parameters_json: str,
        scenario_toml: str,
        creator: str = "abm",
        creator_version: str = "",
        overwrite: bool = False,
        compression: str | None = "gzip",
        compression_opts: int | None = 4,
        observable_block: int = 256,
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

        vessels = np.asarray(vessel_sites, dtype=np.int64).reshape(-1)
        if vessels.size and (vessels.min() < 0 or vessels.max() >= self._n_sites):
            raise ValueError(f"vessel_sites must be flat indices in [0, {self._n_sites}), got out-of-range values")

        clash = RESERVED_ROOT_ATTRS.intersection(attrs)
        if clash:
            raise ValueError(f"attrs may not use the reserved root attribute names {sorted(clash)}")
        root_attrs = {str(k): to_h5_value(v, f"attrs[{k!r}]") for k, v in attrs.items()}
        if compression not in ("gzip", "lzf", None):
            raise ValueError(f"compression must be 'gzip', 'lzf' or None, got {compression!r}")

        self._path = Path(path)
        self._partial = partial_path(self._path)
        self._overwrite = bool(overwrite)
        if not overwrite:
            if self._path.exists():
                raise FileExistsError(
                    f"{self._path} already exists; pass overwrite=True (CLI: --overwrite) to replace it, "
                    "or choose another output path"
                )
            if self._partial.exists():
                raise FileExistsError(
                    f"{self._partial} already exists: it is an interrupted run or another writer is using it; "
                    "delete it or pass overwrite=True"
                )

        # --- create the file -----------------------------------------------------------------------------------
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
        self._result: Path | None = None

        self._file = h5py.File(self._partial, "w")
        try:
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
            self._file.close()
            self._partial.unlink(missing_ok=True)
            raise

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
                "value", shape=(0,), maxshape=(None,), dtype=np.dtype(spec.dtype), chunks=(_OBS_CHUNK,)
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
        for col, kind in EVENT_COLUMNS.items():
            dtype = {"int": np.int64, "float": np.float64, "str": STR_DTYPE}[kind]
            ds = ev.create_dataset(col, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(_EVENT_CHUNK,))
            if col == "time":
                ds.attrs["units"] = "min"
                ds.make_scale("time")
                time = ds
        for col in EVENT_COLUMNS:
            if col != "time":
                ev[col].dims[0].attach_scale(time)

        f.create_group("summary", track_order=True)

    @staticmethod
    def _make_time(g: h5py.Group, chunk: int) -> h5py.Dataset:
        """``step`` and ``time`` (minutes) 1-D resizable datasets; ``time`` is the group's frame dimension scale."""
        time = g.create_dataset("time", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(chunk,))
        time.attrs["units"] = "min"
        time.make_scale("time")
        step = g.create_dataset("step", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(chunk,))
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
        )
        for i, s in enumerate(scales):
            val.dims[i].attach_scale(s)
        return val

    # ------------------------------------------------------------------------------------------------------------
    # appending
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"trajectory writer for {self._path} is closed")

    @property
    def path(self) -> Path:
        """Final file name (the file is ``partial_path`` until :meth:`close`)."""
        return self._path

    @property
    def partial_path(self) -> Path:
        return self._partial

    @property
    def n_snapshots(self) -> int:
        return self._n_snapshots

    @property
    def n_observable_rows(self) -> int:
        """Rows appended so far, written or still buffered."""
        return self._n_obs_written + len(self._obs_buf_step)

    @property
    def closed(self) -> bool:
        return self._closed

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
        steps = np.asarray(self._obs_buf_step, dtype=np.int64)
        times = np.asarray(self._obs_buf_time, dtype=np.float64)
        grp = self._file["observables"]
        for spec in self._obs_specs:
            g = grp[spec.name]
            _append_1d(g["value"], np.asarray(self._obs_buf[spec.name], dtype=np.dtype(spec.dtype)))
            _append_1d(g["time"], times)
            _append_1d(g["step"], steps)
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
        i = self._n_snapshots
        groups = [(self._file["particles/lattice/cell_type"], ct)]
        groups += [(self._file["fields"][s.name], data[s.name]) for s in self._species]
        for g, frame in groups:  # frames first, then step/time: a reader trusts the shortest
            val = g["value"]
            val.resize(i + 1, axis=0)
            val[i] = frame
        for g, _ in groups:
            _append_1d(g["time"], np.array([time_min], dtype=np.float64))
            _append_1d(g["step"], np.array([step], dtype=np.int64))
        self._n_snapshots = i + 1
        self._last_snap_step = step
        self.flush()

    def add_event(self, step: int, time_min: float, kind: str, **fields) -> None:
        """Append one event row (and flush). ``fields``: drug, route, unit, note (str); dose, amount (float)."""
        self._check_open()
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"event kind must be a non-empty string, got {kind!r}")
        unknown = set(fields) - set(EVENT_FIELDS)
        if unknown:
            raise TypeError(f"unknown event fields {sorted(unknown)}; allowed: {list(EVENT_FIELDS)}")
        row = {"step": int(step), "time": float(time_min), "kind": kind}
        for col in EVENT_FIELDS:
            v = fields.get(col)
            row[col] = nan_if_none(v) if EVENT_COLUMNS[col] == "float" else ("" if v is None else str(v))
        ev = self._file["events"]
        for col, kind_ in EVENT_COLUMNS.items():
            dtype = {"int": np.int64, "float": np.float64, "str": object}[kind_]
            _append_1d(ev[col], np.array([row[col]], dtype=dtype))
        self._file.flush()

    def write_summary(self, summary: Mapping[str, object]) -> None:
        """Store run-level scalars (float, int, str, bool or None) as scalar datasets in ``/summary``.

        May be called more than once; a repeated key replaces the earlier value.
        """
        self._check_open()
        g = self._file["summary"]
        converted = {check_name(str(k), "summary"): to_h5_value(v, f"summary[{k!r}]") for k, v in summary.items()}
        for k, v in converted.items():
            if k in g:
                del g[k]
            if isinstance(v, str):
                g.create_dataset(k, data=v, dtype=STR_DTYPE)
            else:
                g.create_dataset(k, data=v)
        self._file.flush()

    def flush(self) -> None:
        """Write buffered observable rows and flush the HDF5 file to disk."""
        self._check_open()
        self._write_observables()
        self._file.flush()

    # ------------------------------------------------------------------------------------------------------------
    # closing
    def close(self, complete: bool = True, status: str | None = None) -> Path:
        """Write what is buffered, mark the file, close it and rename ``NAME.partial`` to ``NAME``.

        Parameters
        ----------
        complete : bool
            True when the run finished; False on interruption (Ctrl-C, SIGTERM, an exception). Either way the file
            is renamed to ``NAME`` so the user finds it; the root attribute ``complete`` tells the truth.
        status : str, optional
            Free text stored in the root attribute ``status``; default ``"completed"`` or ``"incomplete"``.

        Returns
        -------
        Path
            The final file path. If ``NAME`` appeared during the run and ``overwrite`` is False, the file is left as
            ``NAME.partial`` (with a warning) and that path is returned. Calling close again returns the same path.
        """
        if self._closed:
            return self._result  # type: ignore[return-value]
        if status is None:
            status = "completed" if complete else "incomplete"
        self._closed = True
        try:
            try:
                self._write_observables()
            finally:
                self._file.attrs["complete"] = np.bool_(bool(complete))
                self._file.attrs["status"] = str(status)
                self._file.attrs["finished"] = _utc_now()
        finally:
            self._file.close()
            if self._path.exists() and not self._overwrite:
                warnings.warn(
                    f"{self._path} appeared while this run was writing; the output is left at {self._partial}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self._result = self._partial
            else:
                os.replace(self._partial, self._path)
                self._result = self._path
        return self._result

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close(complete=True)
        else:
            self.close(complete=False, status=repr(exc))
