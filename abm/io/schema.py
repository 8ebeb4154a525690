"""Schema of the abm trajectory file: format name and version, declared specs, layout names, value conversion.

This module (like all of :mod:`abm.io`) knows nothing about the model. It only describes what a trajectory
file holds and how Python values map to HDF5 attributes and datasets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

FORMAT_NAME = "abm-trajectory"
FORMAT_VERSION = "1.3"
H5MD_VERSION = (1, 1)
PARTIAL_SUFFIX = ".partial"
#: HDF5 file-format versions the writer uses: from 1.8 on, the superblock and object headers carry checksums
#: (readable by HDF5 >= 1.8). Not "v110": its superblock marks a file open for writing, so the partial file of a killed
#: writer would not open without ``h5clear``.
LIBVER = ("v108", "latest")
#: HDF5 file-space strategy of the writer: "none", every allocation at the end of the file and space that HDF5 frees
#: (the old copy of a compressed chunk that grew, e.g. the last chunk of a per-cell column) never reused while the
#: file is open. With HDF5's default ("fsm", free space reused), a writer killed between two flushes could leave the
#: last flushed index pointing at a chunk whose space held newer data: that frame failed its Fletcher-32 check and a
#: resume could not replay it (seen in 12 of 40 SIGKILLs of a writer). The cost is the freed copies: a few per cent
#: of a file (docs/output-format.md).
FS_STRATEGY = "none"

#: Root attributes written by the writer itself; a caller's ``attrs`` may not use these names.
RESERVED_ROOT_ATTRS = frozenset({"format_name", "format_version", "complete", "status", "created", "finished"})

#: What a reader requires of every 1.x file (groups end in "/"); per-observable and per-species groups must each
#: hold step, time and value. Format 1.1 adds Fletcher-32 on chunked numeric datasets and /integrity/manifest
#: (written when the writer closes the file).
REQUIRED_LAYOUT = (
    "h5md/",
    "parameters/resolved_json",
    "parameters/scenario_toml",
    "lattice/",
    "lattice/vessel_sites",
    "lattice/cell_type_codes/",
    "observables/",
    "particles/lattice/cell_type/step",
    "particles/lattice/cell_type/time",
    "particles/lattice/cell_type/value",
    "fields/",
    "events/",
    "summary/",
)
REQUIRED_LATTICE_ATTRS = ("shape_xyz", "spacing_um", "dt_min")

#: Prefix of the ``status`` of a file whose writer stopped on a write error (a full disk): such a file may lack the
#: integrity manifest (HDF5 was failing), like the partial file of a killed run (status "running").
WRITE_FAILED = "write failed: "

#: Event table columns, in order, with their on-disk kind ("int", "float", "str"). Every 1.x file has these.
EVENT_COLUMNS: dict[str, str] = {
    "step": "int",
    "time": "float",
    "kind": "str",
    "drug": "str",
    "route": "str",
    "dose": "float",
    "unit": "str",
    "amount": "float",
    "note": "str",
}
#: Event columns added by a minor version (column -> (kind, first version)); older files lack them and read "".
EVENT_COLUMNS_ADDED: dict[str, tuple[str, str]] = {"amount_unit": ("str", "1.2")}
#: Optional event fields accepted by ``add_event(**fields)``; absent strings are "" and absent numbers NaN.
EVENT_FIELDS = ("drug", "route", "dose", "unit", "amount", "amount_unit", "note")
#: ``units`` of the numeric event columns (format 1.2 on). A dose's unit and an amount's unit differ from row to row
#: (IU/kg or MIU/m^2 or mg/m^2; pmol or umol or cells), so their ``units`` names the column that holds them, which is
#: also the ``units_column`` attribute.
EVENT_UNITS: dict[str, str] = {
    "step": "1",
    "time": "min",
    "dose": "per row: see /events/unit",
    "amount": "per row: see /events/amount_unit",
}
EVENT_UNIT_COLUMNS = {"dose": "unit", "amount": "amount_unit"}

#: The per-cell table: one row per live cell per snapshot, every snapshot's rows one after the other.
CELL_TABLE = "particles/cells"

STR_DTYPE = h5py.string_dtype("utf-8")


@dataclass(frozen=True)
class ObservableSpec:
    """A per-step scalar time series declared before the run starts.

    Parameters
    ----------
    name : str
        Dataset group name under ``/observables`` (no ``/``).
    units : str
        Units of the values, e.g. ``"cells"``, ``"pM"``, ``"1"``.
    dtype : str
        numpy dtype name of the stored values (default ``"float64"``).
    description : str
        Free text, stored as the ``description`` attribute.
    """

    name: str
    units: str
    dtype: str = "float64"
    description: str = ""


@dataclass(frozen=True)
class ColumnSpec:
    """A column of the per-cell table (format 1.2): name, numpy dtype name, units and a description."""

    name: str
    dtype: str
    units: str
    description: str = ""


#: The per-cell table abm writes at every snapshot. Positions are those of the cell's lattice site, in micrometres
#: (``index * spacing_um``, as the ``x``/``y``/``z`` coordinates of the snapshot frames; z is 0 in 2D).
CELL_COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("id", "int64", "1", "stable cell id: assigned at birth, kept for life (also through NK -> LAK)"),
    ColumnSpec("type", "uint8", "1", "cell type code (/lattice/cell_type_codes)"),
    ColumnSpec("site", "int64", "1", "flat lattice index i = x + nx*(y + ny*z) of the cell's site"),
    ColumnSpec("x", "float64", "um", "x position of the cell's site (index * spacing_um)"),
    ColumnSpec("y", "float64", "um", "y position of the cell's site (index * spacing_um)"),
    ColumnSpec("z", "float64", "um", "z position of the cell's site (index * spacing_um; 0 in 2D)"),
    ColumnSpec("mhc", "float32", "1", "MHC-I level m (tumour cells; 0 for immune cells)"),
    ColumnSpec("age_min", "float32", "min", "time since the cell appeared (reset when an NK cell becomes LAK)"),
    ColumnSpec("kills", "int16", "1", "tumour cells this cell has killed (reset when an NK cell becomes LAK)"),
    ColumnSpec("timer_min", "float32", "min", "CTL activation window still open (IL-2 secretion, proliferation)"),
    ColumnSpec("exposure_min", "float32", "min", "NK cell: cumulative time above the LAK-conversion IL-2 threshold"),
    ColumnSpec("sensitisation", "float32", "1", "tumour cell: IFN-alpha sensitisation to NK/LAK lysis, 0-1 [1.3]"),
)


@dataclass(frozen=True)
class SpeciesSpec:
    """A diffusing species whose field is stored with every snapshot, e.g. ``SpeciesSpec("il2", "pM")``."""

    name: str
    units: str


def check_name(name: str, what: str) -> str:
    """Validate a name used as an HDF5 group name; return it."""
    if not isinstance(name, str) or not name or "/" in name or name in (".", "..") or name != name.strip():
        raise ValueError(f"invalid {what} name {name!r}: must be a non-empty string without '/' or padding")
    return name


def to_h5_value(value: Any, where: str) -> Any:
    """Convert a Python value to something h5py stores as an attribute or scalar dataset.

    ``None`` becomes an HDF5 empty (null) value, which reads back as ``None`` through :func:`from_h5_value`.
    Strings are stored as UTF-8 variable-length strings; integers as int64, or uint64 for [2**63, 2**64) (seeds).
    """
    if value is None:
        return h5py.Empty("f8")
    if isinstance(value, (bool, np.bool_)):
        return np.bool_(value)
    if isinstance(value, (int, np.integer)):
        # int64 where it fits (every value written so far); a seed may use the full unsigned 64-bit range
        v = int(value)
        if -(2**63) <= v < 2**63:
            return np.int64(v)
        if 2**63 <= v < 2**64:
            return np.uint64(v)
        raise TypeError(f"{where}: integer {v} does not fit in 64 bits (signed or unsigned)")
    if isinstance(value, (float, np.floating)):
        return np.float64(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        arr = np.asarray(value)
        if arr.ndim == 1 and arr.dtype.kind in "biuf":
            return arr
        if arr.ndim == 1 and arr.dtype.kind == "U":
            return np.array([str(v) for v in arr], dtype=STR_DTYPE)
    raise TypeError(
        f"{where}: cannot store value {value!r} of type {type(value).__name__}; "
        "use None, bool, int, float, str or a 1-D list of numbers or strings"
    )


def from_h5_value(value: Any) -> Any:
    """Convert an attribute or scalar dataset value read by h5py back to a plain Python value."""
    if isinstance(value, h5py.Empty):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return from_h5_value(value[()])
        if value.dtype.kind in "OS":
            return [v.decode("utf-8") if isinstance(v, bytes) else v for v in value.tolist()]
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def format_minor(version: str) -> tuple[int, int]:
    """``(major, minor)`` of a ``"MAJOR.MINOR"`` format version string."""
    major, _, minor = str(version).partition(".")
    return int(major), int(minor or 0)


def format_major(version: str) -> int:
    """Major part of a ``"MAJOR.MINOR"`` format version string."""
    try:
        return int(str(version).split(".")[0])
    except ValueError as exc:  # pragma: no cover - only for corrupt files
        raise ValueError(f"unreadable format_version {version!r}") from exc


def nan_if_none(value: Any) -> float:
    """Event numeric fields: ``None`` means absent (NaN)."""
    return math.nan if value is None else float(value)
