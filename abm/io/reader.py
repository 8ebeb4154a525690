"""Read an abm trajectory file back: :func:`load` and :class:`Trajectory`.

Needs nothing but h5py and numpy (xarray only for :meth:`Trajectory.to_xarray`). Everything small is read eagerly
into plain Python/numpy data; snapshot frames are read on demand (the file is reopened per call, so a
:class:`Trajectory` holds no open file and pickles).
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
    EVENT_COLUMNS,
    FORMAT_NAME,
    FORMAT_VERSION,
    PARTIAL_SUFFIX,
    REQUIRED_LATTICE_ATTRS,
    REQUIRED_LAYOUT,
    WRITE_FAILED,
    format_major,
    from_h5_value,
)

if TYPE_CHECKING:  # pragma: no cover
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
    #: what was checked when the file was read: "manifest" (1.1, closed by its writer: every attribute, string and
    #: small dataset matched its digest), "chunks only" (1.1 not closed, e.g. killed: Fletcher-32 on read only),
    #: "none" (format 1.0: no checksums)
    integrity: str = "none"

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
        for col in EVENT_COLUMNS:
            if kind(f"events/{col}") != "dataset":
                missing.append(f"/events/{col} (dataset)")
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
    n_ev = min(ev[c].shape[0] for c in EVENT_COLUMNS)
    cols = {c: rd(f"events/{c}", slice(0, n_ev)) for c in EVENT_COLUMNS}
    events = []
    for i in range(n_ev):
        row = {}
        for c, kind in EVENT_COLUMNS.items():
            v = cols[c][i]
            key = "time_min" if c == "time" else c
            row[key] = {"int": int, "float": float, "str": lambda b: from_h5_value(b)}[kind](v)
        events.append(row)

    summary = {k: from_h5_value(rd(f"summary/{k}")) for k in f["summary"]}

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
    return t
