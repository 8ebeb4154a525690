"""Read an abm trajectory file back: :func:`load` and :class:`Trajectory`.

Needs nothing but h5py and numpy (xarray only for :meth:`Trajectory.to_xarray`, pandas only for the per-cell
DataFrames of :meth:`Trajectory.cells`). Everything small is read eagerly into plain Python/numpy data; snapshot
frames and per-cell tables are read on demand (the file is reopened per call, so a :class:`Trajectory` holds no open
file and pickles).
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from .errors import DamagedTrajectoryError, NotATrajectoryError, TrajectoryIOError, TrajectoryReadError
from .integrity import _short, read_error, verify_manifest
from .paths import check_input_path, find_partials
from .schema import (
    CELL_TABLE,
    EVENT_COLUMNS,
    EVENT_COLUMNS_ADDED,
    FORMAT_NAME,
    FORMAT_VERSION,
    PARTIAL_SUFFIX,
    REQUIRED_LATTICE_ATTRS,
    REQUIRED_LAYOUT,
    WRITE_FAILED,
    format_major,
    format_minor,
    from_h5_value,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas
    import xarray

__all__ = ["Trajectory", "load", "verify"]

_CELL_TYPE = "particles/lattice/cell_type"


@dataclass
class Trajectory:
    """One run read back from a trajectory file (plain data; frames are read lazily by index).

    Times are in minutes throughout; ``steps`` count model steps.
    """

    path: Path
    attrs: dict[str, Any]
    complete: bool
    status: str
    format_version: str
    parameters_json: str
    scenario_toml: str
    shape_xyz: tuple[int, int, int]
    spacing_um: float
    dt_min: float
    vessel_sites: np.ndarray
    cell_type_codes: dict[str, int]
    observables: dict[str, np.ndarray]
    observable_units: dict[str, str]
    observable_descriptions: dict[str, str]
    steps: np.ndarray
    time_min: np.ndarray
    snapshot_steps: np.ndarray
    snapshot_time_min: np.ndarray
    species: list[str]
    field_units: dict[str, str]
    events: list[dict[str, Any]] = dc_field(default_factory=list)
    summary: dict[str, Any] = dc_field(default_factory=dict)
    #: what was checked when the file was read: "manifest" (1.1 on, closed by its writer: every attribute, string
    #: and small dataset matched its digest), "chunks only" (1.1 on, not closed, e.g. killed: Fletcher-32 on read
    #: only), "none" (format 1.0: no checksums)
    integrity: str = "none"
    #: units of each summary value (format 1.2 on; {} for older files)
    summary_units: dict[str, str] = dc_field(default_factory=dict)
    #: the per-cell table (format 1.2 on): step, time (min), first row and row count of each of its frames, and
    #: the units of each column; empty for older files
    cell_steps: np.ndarray = dc_field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    cell_time_min: np.ndarray = dc_field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    cell_start: np.ndarray = dc_field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    cell_count: np.ndarray = dc_field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    cell_units: dict[str, str] = dc_field(default_factory=dict)

    @property
    def seed(self) -> int | None:
        """The run's seed as an int (stored as an unsigned 64-bit attribute from format 1.2 on, as text before)."""
        s = self.attrs.get("seed")
        if s is None or isinstance(s, bool):
            return None
        try:
            return int(s)
        except (TypeError, ValueError):
            return None

    @property
    def n_snapshots(self) -> int:
        return int(self.snapshot_steps.shape[0])

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Stored frame shape: ``(nz, ny, nx)`` in 3D, ``(ny, nx)`` in 2D."""
        nx, ny, nz = self.shape_xyz
        return (nz, ny, nx) if nz > 1 else (ny, nx)

    @property
    def grid_dims(self) -> tuple[str, ...]:
        return ("z", "y", "x") if self.shape_xyz[2] > 1 else ("y", "x")

    def _index(self, i: int) -> int:
        n = self.n_snapshots
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"snapshot index {i} out of range for {n} snapshots")
        return j

    def _read_frames(self, group: str, sel) -> np.ndarray:
        check_input_path(self.path)
        try:
            with h5py.File(self.path, "r") as f:
                try:
                    return f[group]["value"][sel]
                except (OSError, RuntimeError, KeyError, ValueError) as e:
                    raise read_error(e, self.path, f"/{group}/value[{sel}]") from None
        except TrajectoryIOError:
            raise
        except OSError as e:
            raise _open_error(e, self.path) from None

    def cell_type(self, i: int) -> np.ndarray:
        """Cell-type codes (uint8) of snapshot ``i``, shaped ``grid_shape``."""
        return self._read_frames(_CELL_TYPE, self._index(i))

    def field(self, name: str, i: int) -> np.ndarray:
        """Field ``name`` (float32, species units) of snapshot ``i``, shaped ``grid_shape``."""
        if name not in self.species:
            raise KeyError(f"no field {name!r}; species: {self.species}")
        return self._read_frames(f"fields/{name}", self._index(i))

    def cell_types(self) -> np.ndarray:
        """All cell-type frames, ``(n_snapshots, *grid_shape)``."""
        return self._read_frames(_CELL_TYPE, slice(0, self.n_snapshots))

    def fields(self, name: str) -> np.ndarray:
        """All frames of field ``name``, ``(n_snapshots, *grid_shape)``."""
        if name not in self.species:
            raise KeyError(f"no field {name!r}; species: {self.species}")
        return self._read_frames(f"fields/{name}", slice(0, self.n_snapshots))

    # ---------------------------------------------------------------------------------------- per-cell tables
    @property
    def has_cells(self) -> bool:
        """Whether the file holds per-cell tables (abm writes them from format 1.2 on, one per snapshot)."""
        return bool(self.cell_units)

    @property
    def n_cell_frames(self) -> int:
        return int(self.cell_steps.shape[0])

    def _no_cells(self) -> LookupError:
        return LookupError(
            f"{self.path}: no per-cell tables (format {self.format_version}); abm writes them from format 1.2 on"
        )

    def _cell_rows(self, sel: slice) -> dict[str, np.ndarray]:
        check_input_path(self.path)
        try:
            with h5py.File(self.path, "r") as f:
                g = f[CELL_TABLE]
                out = {}
                for name in self.cell_units:
                    try:
                        out[name] = g[name][sel]
                    except (OSError, RuntimeError, KeyError, ValueError) as e:
                        raise read_error(e, self.path, f"/{CELL_TABLE}/{name}[{sel.start}:{sel.stop}]") from None
                return out
        except TrajectoryIOError:
            raise
        except OSError as e:
            raise _open_error(e, self.path) from None

    def _cell_frame(self, i: int) -> int:
        if not self.has_cells:
            raise self._no_cells()
        n = self.n_cell_frames
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"cell-table index {i} out of range for {n} frames")
        return j

    def cell_arrays(self, i: int) -> dict[str, np.ndarray]:
        """The per-cell table of snapshot ``i`` as a dict of numpy arrays, one per column (no pandas needed).

        Columns (``cell_units`` gives each one's units): ``id``, ``type`` (code, see ``cell_type_codes``),
        ``site`` (flat index), ``x``, ``y``, ``z`` (um), ``mhc``, ``age_min``, ``kills``, ``timer_min``,
        ``exposure_min``, ``sensitisation`` (format 1.3 on). Raises ``LookupError`` for a file without per-cell
        tables (format 1.0, 1.1).
        """
        j = self._cell_frame(i)
        a = int(self.cell_start[j])
        return self._cell_rows(slice(a, a + int(self.cell_count[j])))

    def cell_frame_at(self, day: float) -> int:
        """Index of the per-cell table nearest to ``day`` (simulated days)."""
        if not self.has_cells:
            raise self._no_cells()
        if self.n_cell_frames == 0:
            raise IndexError(f"{self.path}: the per-cell table has no frames")
        return int(np.argmin(np.abs(self.cell_time_min - float(day) * 1440.0)))

    def _frame(self, cols: dict[str, np.ndarray]) -> pandas.DataFrame:
        import pandas as pd

        df = pd.DataFrame(cols)
        if "type" in df:
            codes = sorted(self.cell_type_codes.items(), key=lambda kv: kv[1])
            lut = np.full(256, -1, dtype=np.int64)  # code -> category position (-1: unknown code, read as NaN)
            lut[[c for _, c in codes]] = np.arange(len(codes))
            df["type_name"] = pd.Categorical.from_codes(
                lut[df["type"].to_numpy(dtype=np.int64)], categories=[n for n, _ in codes]
            )
        df.attrs["units"] = dict(self.cell_units)
        return df

    def cells(self, i: int) -> pandas.DataFrame:
        """The per-cell table of snapshot ``i`` as a pandas DataFrame: one row per live cell, the columns of
        :meth:`cell_arrays` plus ``type_name`` (categorical). ``df.attrs`` holds ``step``, ``time_min`` and the
        column ``units``. Needs pandas (``python -m pip install -e ".[sweep]"``); :meth:`cell_arrays` does not."""
        j = self._cell_frame(i)
        df = self._frame(self.cell_arrays(j))
        df.attrs.update(step=int(self.cell_steps[j]), time_min=float(self.cell_time_min[j]))
        return df

    def cells_at(self, day: float) -> pandas.DataFrame:
        """:meth:`cells` of the snapshot nearest to ``day`` (its time is in ``df.attrs["time_min"]``)."""
        return self.cells(self.cell_frame_at(day))

    def all_cells(self) -> pandas.DataFrame:
        """Every per-cell table in one DataFrame, with ``step`` and ``time_min`` columns first: one row per cell per
        snapshot, so ``df[df.id == k]`` follows cell ``k`` through the run. Needs pandas."""
        if not self.has_cells:
            raise self._no_cells()
        n = int(self.cell_start[-1] + self.cell_count[-1]) if self.n_cell_frames else 0
        cols = self._cell_rows(slice(0, n))
        reps = self.cell_count
        lead = {"step": np.repeat(self.cell_steps, reps), "time_min": np.repeat(self.cell_time_min, reps)}
        rows = np.concatenate([np.arange(a, a + c) for a, c in zip(self.cell_start, reps)]) if n else np.zeros(0, int)
        df = self._frame({**lead, **{k: v[rows] for k, v in cols.items()}})
        df.attrs["units"] = {"step": "1", "time_min": "min", **self.cell_units}
        return df

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        """Events of one kind, e.g. ``"dose_given"``."""
        return [e for e in self.events if e["kind"] == kind]

    def to_xarray(self) -> xarray.Dataset:
        """Everything as one :class:`xarray.Dataset` (reads all frames into memory).

        Observables are on dimension ``time`` (minutes, coordinate ``step`` alongside); snapshots (``cell_type``
        and one variable per species) on ``("snapshot_time", ["z",] "y", "x")`` with ``snapshot_time`` in minutes
        and ``x``/``y``/``z`` lattice-site positions in micrometres. Root attributes become dataset attributes.
        An observable whose name clashes with a snapshot variable gets the suffix ``_obs``.
        """
        import xarray as xr

        h = self.spacing_um
        coords: dict[str, Any] = {
            "time": ("time", self.time_min, {"units": "min"}),
            "step": ("time", self.steps),
            "snapshot_time": ("snapshot_time", self.snapshot_time_min, {"units": "min"}),
            "snapshot_step": ("snapshot_time", self.snapshot_steps),
        }
        for dim, n in zip(self.grid_dims, self.grid_shape):
            coords[dim] = (dim, np.arange(n, dtype=np.float64) * h, {"units": "um"})
        sdims = ("snapshot_time", *self.grid_dims)
        flags = sorted(self.cell_type_codes.items(), key=lambda kv: kv[1])
        data: dict[str, Any] = {
            "cell_type": (
                sdims,
                self.cell_types(),
                {
                    "units": "1",
                    "flag_values": np.array([c for _, c in flags], dtype=np.uint8),
                    "flag_meanings": " ".join(n.replace(" ", "_") for n, _ in flags),
                },
            ),
        }
        for name in self.species:
            data[name] = (sdims, self.fields(name), {"units": self.field_units[name]})
        for name, values in self.observables.items():
            key = f"{name}_obs" if name in data or name in coords else name
            data[key] = (
                "time",
                values,
                {"units": self.observable_units[name], "description": self.observable_descriptions[name]},
            )
        # netCDF-friendly attrs: no None, bools as 0/1
        attrs = {k: (int(v) if isinstance(v, bool) else v) for k, v in self.attrs.items() if v is not None}
        return xr.Dataset(data, coords=coords, attrs=attrs)


def _resolve(path: str | os.PathLike) -> Path:
    p = Path(path)
    if os.path.lexists(p):
        return check_input_path(p)
    found = find_partials(p)
    if found:
        partial = found[0]
        more = f" ({len(found) - 1} older partial file(s) also there)" if len(found) > 1 else ""
        warnings.warn(f"{p} does not exist; reading the unfinished {partial}{more}", RuntimeWarning, stacklevel=3)
        return check_input_path(partial)
    raise FileNotFoundError(f"no trajectory at {p} (nor an unfinished {p.name}.<pid>-<hex>{PARTIAL_SUFFIX})")


def _open_error(e: BaseException, p: Path) -> TrajectoryReadError:
    msg = str(e)
    if "unable to lock file" in msg.lower():
        return TrajectoryReadError(
            f"{p}: is open for writing by another process (HDF5 file lock); try again when the run has finished", p
        )
    if "file signature not found" in msg.lower():
        return NotATrajectoryError(f"{p}: not an HDF5 file (and so not an {FORMAT_NAME} file)", p)
    if "truncated file" in msg.lower():
        return DamagedTrajectoryError(f"{p}: damaged: the file is truncated (shorter than HDF5 recorded)", p)
    return DamagedTrajectoryError(f"{p}: cannot be opened as HDF5: damaged or truncated ({_short(e)})", p)


def _root_attrs(f: h5py.File, p: Path) -> dict[str, Any]:
    try:
        raw = {k: f.attrs[k] for k in f.attrs.keys()}
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise read_error(e, p, "the root attributes") from None
    name = from_h5_value(raw.get("format_name"))
    if name != FORMAT_NAME:
        raise NotATrajectoryError(f"{p} is not an {FORMAT_NAME} file (format_name={name!r})", p)
    version = from_h5_value(raw.get("format_version"))
    if not isinstance(version, str) or not re.fullmatch(r"\d+\.\d+", version):
        raise DamagedTrajectoryError(
            f"{p}: damaged: root attribute format_version is {version!r}, expected a 'MAJOR.MINOR' string", p
        )
    if format_major(version) != format_major(FORMAT_VERSION):
        raise NotATrajectoryError(
            f"{p} has format_version {version}; this reader handles {FORMAT_VERSION.split('.')[0]}.x", p
        )
    # typed attributes: a string "False" must never read as complete
    c = raw.get("complete")
    if c is None:
        raise DamagedTrajectoryError(f"{p}: damaged or not written by abm: no root attribute 'complete'", p)
    if not isinstance(c, np.bool_ | bool):
        raise DamagedTrajectoryError(
            f"{p}: damaged or not written by abm: root attribute 'complete' is {type(c).__name__} {c!r}, "
            "expected a boolean",
            p,
        )
    status = from_h5_value(raw.get("status"))
    if status is None:
        raise DamagedTrajectoryError(f"{p}: damaged or not written by abm: no root attribute 'status'", p)
    if not isinstance(status, str):
        raise DamagedTrajectoryError(f"{p}: damaged: root attribute 'status' is {status!r}, expected a string", p)
    return {k: from_h5_value(v) for k, v in raw.items()}


def _check_layout_(f: h5py.File, p: Path, version: str) -> None:
    missing = []

    def kind(name: str) -> str | None:
        try:
            obj = f.get(name)
        except (OSError, RuntimeError, KeyError, ValueError) as e:
            raise read_error(e, p, f"/{name}") from None
        if obj is None:
            return None
        return "group" if isinstance(obj, h5py.Group) else "dataset"

    for req in REQUIRED_LAYOUT:
        want = "group" if req.endswith("/") else "dataset"
        name = req.rstrip("/")
        if kind(name) != want:
            missing.append(f"/{name} ({want})")
    for group in ("observables", "fields"):
        if kind(group) == "group":
            for k in f[group]:
                for col in ("step", "time", "value"):
                    if kind(f"{group}/{k}/{col}") != "dataset":
                        missing.append(f"/{group}/{k}/{col} (dataset)")
    if kind("events") == "group":
        for col in _event_columns(version):
            if kind(f"events/{col}") != "dataset":
                missing.append(f"/events/{col} (dataset)")
    if kind(CELL_TABLE) == "group":
        for col in ("step", "time", "start", "count"):
            if kind(f"{CELL_TABLE}/{col}") != "dataset":
                missing.append(f"/{CELL_TABLE}/{col} (dataset)")
    if kind("lattice") == "group":
        for a in REQUIRED_LATTICE_ATTRS:
            if a not in f["lattice"].attrs:
                missing.append(f"attribute /lattice@{a}")
    if missing:
        raise DamagedTrajectoryError(
            f"{p}: damaged or incomplete {FORMAT_NAME} {version} file: missing {', '.join(missing)}", p
        )


def _check_layout(f: h5py.File, p: Path, version: str) -> None:
    try:
        _check_layout_(f, p, version)
    except TrajectoryIOError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise read_error(e, p, "the file's layout") from None


def _event_columns(version: str) -> dict[str, str]:
    """The event columns a file of ``version`` has."""
    out = dict(EVENT_COLUMNS)
    for col, (kind, since) in EVENT_COLUMNS_ADDED.items():
        if format_minor(version) >= format_minor(since):
            out[col] = kind
    return out


def _series(g: h5py.Group, n: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(step, time) of a step/time/value group, truncated to the length all three agree on."""
    m = min(g["step"].shape[0], g["time"].shape[0], g["value"].shape[0])
    if n is not None:
        m = min(m, n)
    return g["step"][:m], g["time"][:m], m


def load(path: str | os.PathLike) -> Trajectory:
    """Read a trajectory file (or the partial file of an unfinished or killed run).

    If ``path`` does not exist but a partial file of it does (``NAME.<pid>-<hex>.partial``, or a 1.0 writer's
    ``NAME.partial``), the newest is read (with a RuntimeWarning). After a crash, series are truncated to the rows
    every dataset of a group agrees on.

    Raises
    ------
    FileNotFoundError
        Neither the file nor a partial file of it exists.
    abm.io.errors.InputPathError
        The path is a directory, FIFO, device or socket (checked before opening: a FIFO never blocks).
    abm.io.errors.NotATrajectoryError
        Not HDF5, not an abm trajectory, or a format major version this reader does not handle.
    abm.io.errors.DamagedTrajectoryError, abm.io.errors.ChecksumError
        Missing groups or datasets, mistyped root attributes, unreadable metadata, or data that fail their checksum
        (the message names the file and the objects).
    """
    p = _resolve(path)
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise _open_error(e, p) from None
    with f:
        try:
            return _load_open(f, p)
        except TrajectoryIOError:
            raise
        except (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
            raise read_error(e, p, "the file") from None


def _load_open(f: h5py.File, p: Path) -> Trajectory:
    attrs = _root_attrs(f, p)
    version = attrs["format_version"]
    _check_layout(f, p, version)
    if verify_manifest(f, p):
        integrity = "manifest"
    elif version != "1.0" and attrs["status"] != "running" and not attrs["status"].startswith(WRITE_FAILED):
        raise DamagedTrajectoryError(
            f"{p}: damaged: the file was closed by its writer (status {attrs['status']!r}) but has no integrity "
            "manifest",
            p,
        )
    else:
        integrity = "none" if version == "1.0" else "chunks only"
    return _read(f, p, attrs, version, integrity)


def _read(f: h5py.File, p: Path, attrs: dict[str, Any], version: str, integrity: str) -> Trajectory:
    def rd(name: str, sel: Any = ()):
        try:
            return f[name][sel]
        except (OSError, RuntimeError, KeyError, ValueError) as e:
            raise read_error(e, p, f"/{name}") from None

    lat = f["lattice"]
    shape_xyz = tuple(int(s) for s in lat.attrs["shape_xyz"])
    if len(shape_xyz) != 3 or min(shape_xyz) < 1:
        raise DamagedTrajectoryError(f"{p}: damaged: /lattice@shape_xyz is {shape_xyz}", p)
    codes = {k: int(v) for k, v in lat["cell_type_codes"].attrs.items()}

    observables, units, descr = {}, {}, {}
    steps = np.zeros(0, dtype=np.int64)
    times = np.zeros(0, dtype=np.float64)
    obs = f["observables"]
    if len(obs):
        n = min(_series(obs[k])[2] for k in obs)
        first = next(iter(obs))
        steps = rd(f"observables/{first}/step", slice(0, n))
        times = rd(f"observables/{first}/time", slice(0, n))
        for k in obs:
            g = obs[k]
            observables[k] = rd(f"observables/{k}/value", slice(0, n))
            units[k] = from_h5_value(g["value"].attrs.get("units", ""))
            descr[k] = from_h5_value(g["value"].attrs.get("description", ""))

    snap_names = [_CELL_TYPE] + [f"fields/{k}" for k in f["fields"]]
    n_snap = min(_series(f[g])[2] for g in snap_names)
    snap_steps = rd(f"{_CELL_TYPE}/step", slice(0, n_snap))
    snap_times = rd(f"{_CELL_TYPE}/time", slice(0, n_snap))
    for g in snap_names[1:]:  # every snapshot group's step column is read (and so checksummed) too
        rd(f"{g}/step", slice(0, n_snap))
    species = list(f["fields"].keys())
    field_units = {k: from_h5_value(f["fields"][k]["value"].attrs.get("units", "")) for k in species}

    ev = f["events"]
    ev_cols = _event_columns(version)
    n_ev = min(ev[c].shape[0] for c in ev_cols)
    cols = {c: rd(f"events/{c}", slice(0, n_ev)) for c in ev_cols}
    events = []
    for i in range(n_ev):
        row = {}
        for c, kind in ev_cols.items():
            v = cols[c][i]
            key = "time_min" if c == "time" else c
            row[key] = {"int": int, "float": float, "str": lambda b: from_h5_value(b)}[kind](v)
        for c in EVENT_COLUMNS_ADDED:  # older files: the same keys, empty
            row.setdefault(c, "")
        events.append(row)

    summary = {k: from_h5_value(rd(f"summary/{k}")) for k in f["summary"]}
    summary_units = {
        k: from_h5_value(f["summary"][k].attrs["units"]) for k in f["summary"] if "units" in f["summary"][k].attrs
    }

    cell_meta = {
        c: np.zeros(0, dtype=np.float64 if c == "time" else np.int64) for c in ("step", "time", "start", "count")
    }
    cell_units: dict[str, str] = {}
    if CELL_TABLE in f:
        g = f[CELL_TABLE]
        names = [k for k in g if k not in cell_meta]
        cell_units = {k: from_h5_value(g[k].attrs.get("units", "")) for k in names}
        n_cf = min(g[c].shape[0] for c in cell_meta)
        meta = {c: rd(f"{CELL_TABLE}/{c}", slice(0, n_cf)) for c in cell_meta}
        # after a crash, keep only the frames whose rows every column holds
        n_rows = min((g[k].shape[0] for k in names), default=0)
        whole = meta["start"] + meta["count"] <= n_rows
        n_cf = int(np.argmin(whole)) if not whole.all() else n_cf
        cell_meta = {c: v[:n_cf] for c, v in meta.items()}

    return Trajectory(
        path=p,
        attrs=attrs,
        complete=bool(attrs["complete"]),
        status=str(attrs.get("status", "")),
        format_version=version,
        parameters_json=from_h5_value(rd("parameters/resolved_json")),
        scenario_toml=from_h5_value(rd("parameters/scenario_toml")),
        shape_xyz=shape_xyz,  # type: ignore[arg-type]
        spacing_um=float(lat.attrs["spacing_um"]),
        dt_min=float(lat.attrs["dt_min"]),
        vessel_sites=rd("lattice/vessel_sites"),
        cell_type_codes=codes,
        observables=observables,
        observable_units=units,
        observable_descriptions=descr,
        steps=steps,
        time_min=times,
        snapshot_steps=snap_steps,
        snapshot_time_min=snap_times,
        species=species,
        field_units=field_units,
        events=events,
        summary=summary,
        integrity=integrity,
        summary_units=summary_units,
        cell_steps=cell_meta["step"],
        cell_time_min=cell_meta["time"],
        cell_start=cell_meta["start"],
        cell_count=cell_meta["count"],
        cell_units=cell_units,
    )


def verify(path: str | os.PathLike) -> Trajectory:
    """Read a trajectory and every one of its snapshot frames, so that every checksum is tested; return it.

    Raises what :func:`load` raises; a damaged frame raises :class:`~abm.io.errors.ChecksumError` naming the dataset
    and frame.
    """
    t = load(path)
    try:
        f = h5py.File(t.path, "r")
    except OSError as e:
        raise _open_error(e, t.path) from None
    with f:
        for g in [_CELL_TYPE] + [f"fields/{k}" for k in t.species]:
            what = f"/{g}/value"
            try:
                ds = f[g]["value"]
                for i in range(ds.shape[0]):
                    what = f"/{g}/value frame {i}"
                    ds[i]
            except (OSError, RuntimeError, KeyError, ValueError) as e:
                raise read_error(e, t.path, what) from None
        for name in t.cell_units:
            what = f"/{CELL_TABLE}/{name}"
            try:
                ds = f[CELL_TABLE][name]
                chunk = ds.chunks[0] if ds.chunks else max(1, ds.shape[0])
                for a in range(0, ds.shape[0], chunk):
                    what = f"/{CELL_TABLE}/{name} rows {a}.."
                    ds[a : a + chunk]
            except (OSError, RuntimeError, KeyError, ValueError) as e:
                raise read_error(e, t.path, what) from None
    return t
