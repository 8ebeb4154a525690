"""Read an abm trajectory file back: :func:`load` and :class:`Trajectory`.

Needs nothing but h5py and numpy (xarray only for :meth:`Trajectory.to_xarray`). Everything small is read eagerly
into plain Python/numpy data; snapshot frames are read on demand (the file is reopened per call, so a
:class:`Trajectory` holds no open file and pickles).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from .schema import EVENT_COLUMNS, FORMAT_NAME, FORMAT_VERSION, PARTIAL_SUFFIX, format_major, from_h5_value

if TYPE_CHECKING:  # pragma: no cover
    import xarray

__all__ = ["Trajectory", "load"]

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
        with h5py.File(self.path, "r") as f:
            return f[group]["value"][sel]

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
    if p.exists():
        return p
    partial = p.with_name(p.name + PARTIAL_SUFFIX)
    if partial.exists():
        warnings.warn(f"{p} does not exist; reading the unfinished {partial}", RuntimeWarning, stacklevel=3)
        return partial
    raise FileNotFoundError(f"no trajectory at {p} (nor {partial.name})")


def _series(g: h5py.Group, n: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(step, time) of a step/time/value group, truncated to the length all three agree on."""
    m = min(g["step"].shape[0], g["time"].shape[0], g["value"].shape[0])
    if n is not None:
        m = min(m, n)
    return g["step"][:m], g["time"][:m], m


def load(path: str | os.PathLike) -> Trajectory:
    """Read a trajectory file (or its ``NAME.partial`` from an unfinished or killed run).

    If ``path`` does not exist but ``path.partial`` does, the partial file is read (with a RuntimeWarning).
    After a crash, series are truncated to the rows every dataset of a group agrees on.
    """
    p = _resolve(path)
    with h5py.File(p, "r") as f:
        attrs = {k: from_h5_value(v) for k, v in f.attrs.items()}
        name = attrs.get("format_name")
        if name != FORMAT_NAME:
            raise ValueError(f"{p} is not an {FORMAT_NAME} file (format_name={name!r})")
        version = str(attrs.get("format_version", ""))
        if format_major(version) != format_major(FORMAT_VERSION):
            raise ValueError(f"{p} has format_version {version}; this reader handles {FORMAT_VERSION.split('.')[0]}.x")

        par = f["parameters"]
        lat = f["lattice"]
        shape_xyz = tuple(int(s) for s in lat.attrs["shape_xyz"])
        codes = {k: int(v) for k, v in lat["cell_type_codes"].attrs.items()}

        observables, units, descr = {}, {}, {}
        steps = np.zeros(0, dtype=np.int64)
        times = np.zeros(0, dtype=np.float64)
        obs = f["observables"]
        if len(obs):
            n = min(_series(obs[k])[2] for k in obs)
            steps, times, _ = _series(obs[next(iter(obs))], n)
            for k in obs:
                g = obs[k]
                observables[k] = g["value"][:n]
                units[k] = from_h5_value(g["value"].attrs.get("units", ""))
                descr[k] = from_h5_value(g["value"].attrs.get("description", ""))

        snap_groups = [f[_CELL_TYPE]] + [f["fields"][k] for k in f["fields"]]
        n_snap = min(_series(g)[2] for g in snap_groups)
        snap_steps, snap_times, _ = _series(f[_CELL_TYPE], n_snap)
        species = list(f["fields"].keys())
        field_units = {k: from_h5_value(f["fields"][k]["value"].attrs.get("units", "")) for k in species}

        ev = f["events"]
        n_ev = min(ev[c].shape[0] for c in EVENT_COLUMNS)
        cols = {c: ev[c][:n_ev] for c in EVENT_COLUMNS}
        events = []
        for i in range(n_ev):
            row = {}
            for c, kind in EVENT_COLUMNS.items():
                v = cols[c][i]
                key = "time_min" if c == "time" else c
                row[key] = {"int": int, "float": float, "str": lambda b: from_h5_value(b)}[kind](v)
            events.append(row)

        summary = {k: from_h5_value(f["summary"][k][()]) for k in f["summary"]}

        return Trajectory(
            path=p,
            attrs=attrs,
            complete=bool(attrs.get("complete", False)),
            status=str(attrs.get("status", "")),
            format_version=version,
            parameters_json=from_h5_value(par["resolved_json"][()]),
            scenario_toml=from_h5_value(par["scenario_toml"][()]),
            shape_xyz=shape_xyz,  # type: ignore[arg-type]
            spacing_um=float(lat.attrs["spacing_um"]),
            dt_min=float(lat.attrs["dt_min"]),
            vessel_sites=lat["vessel_sites"][()],
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
        )
