"""Checkpoints: the whole state of a run in one HDF5 file, to continue it bit for bit or to start a new run from it.

A checkpoint is written from the state record, not field by field: every attribute of the model (``vars(model)``)
that is not rebuilt from the scenario (:data:`MODEL_DERIVED`), every field of the dataclasses and named tuples it
holds (``SimState``, ``CellArrays``...), the therapy's state (``vars(therapy)`` less :data:`THERAPY_DERIVED`: dose and
transfer queue positions, the PK ``Terms`` of every drug, toxicity, course flags, totals, events) and the in-memory
recorder (every observable of every step so far). A field that a later model issue adds is saved and restored
without an edit here; one whose type cannot be stored (not an array, number, string, JSON-able container, named
tuple, dataclass or dict of those) stops the checkpoint with :class:`CheckpointError` naming it, so that it is
added to the derived lists or made storable, never silently dropped. No pickle: arrays are datasets, scalars and
plain containers JSON (floats by ``repr``, exact), classes are rebuilt only from ``abm`` modules.

The moment of a checkpoint is a step boundary: the model has advanced ``step`` steps and every report due before
``step`` has been delivered (the reports of ``step`` itself are not). Resuming builds the model from the recorded
scenario layers and seed, restores the state in place, replays what the first run wrote (the observables from the
recorder, the snapshots from its partial trajectory file) into a new trajectory through the same reporter, and
runs on from ``step``; the result equals the uninterrupted run bit for bit (the ``status`` attribute says that it
was resumed). Layout and rules: ``docs/output-format.md``, section Checkpoints.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import random
import warnings
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from abm.errors import ParameterError, UsageError
from abm.io.integrity import frame_crc32
from abm.params.core import Layer
from abm.provenance import abm_version, git_hash
from abm.scenario import Scenario

FORMAT_NAME = "abm-checkpoint"
FORMAT_VERSION = "1.1"
SUFFIX = ".ckpt.h5"

MODEL_DERIVED = frozenset(
    {
        # rebuilt from the scenario by Model.__init__
        "scenario",
        "params",
        "geometry",
        "rules",
        "exchange",
        "_exchanged",
        "solver",
        "species",
        "_permeability",
        "dt_min",
        "n_steps",
        "observer",
        "observable_specs",
        "observable_units",
        "datacollector",
        # caches and Mesa's plumbing (methods, agent registries: abm keeps no Mesa agents)
        "_observed",
        "_user_step",
        "step",
        "_agents",
        "_agents_by_type",
        "_all_agents",
        # wall-clock measurements, not state: a resumed run measures its own thread count (abm.threads)
        "_threads",
        # the blocks schedule's layout and per-step buffers: rebuilt from the scenario, no state across steps
        "_blocks",
        # saved on their own
        "therapy",
    }
)
"""Model attributes not stored: rebuilt identically from the scenario, or stored apart (the therapy)."""

MODEL_CLOCK = frozenset({"step_index", "steps", "running", "plasma", "toxicity", "doses_given", "doses_held", "events"})
"""Model attributes a new run from a checkpoint does not take: its clock and what the earlier therapy made."""

THERAPY_DERIVED = frozenset(
    {"regimen", "params", "days", "dt", "species", "schedule", "transfers", "_dose_steps", "_transfer_steps"}
)
"""Therapy attributes rebuilt from the regimen (the schedule and its steps)."""

_COMPRESS_BYTES = 1 << 16


class CheckpointError(RuntimeError):
    """A state attribute that cannot be checkpointed (a programming error, found by tests/test_checkpoint.py)."""


def checkpoint_path(out: str | os.PathLike) -> Path:
    """The checkpoint of an output ``NAME.h5``: ``NAME.ckpt.h5`` beside it."""
    p = Path(out)
    stem = p.name[: -len(".h5")] if p.name.endswith(".h5") else p.name
    return p.with_name(stem + SUFFIX)


# ------------------------------------------------------------------------------------------------ the tree
def _json_default(v: Any) -> Any:
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    raise TypeError(type(v).__name__)


def _jsonable(v: Any) -> str | None:
    try:
        return json.dumps(v, default=_json_default, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        return None


def _is_namedtuple(v: Any) -> bool:
    return isinstance(v, tuple) and hasattr(type(v), "_fields")


def _class_name(v: Any) -> str:
    t = type(v)
    return f"{t.__module__}:{t.__qualname__}"


def _items(obj: Any, skip: frozenset[str] = frozenset()) -> Iterable[tuple[str, Any]]:
    if _is_namedtuple(obj):
        return zip(obj._fields, obj, strict=True)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return ((f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init)
    if isinstance(obj, dict):
        return ((str(k), v) for k, v in obj.items())
    return ((k, v) for k, v in vars(obj).items() if k not in skip)


def write_tree(group: h5py.Group, obj: Any, where: str, skip: frozenset[str] = frozenset()) -> None:
    """Store ``obj``'s state under ``group``: arrays as datasets, objects as subgroups, the rest as JSON."""
    group.attrs["class"] = _class_name(obj)
    group.attrs["kind"] = (
        "namedtuple"
        if _is_namedtuple(obj)
        else "dataclass"
        if dataclasses.is_dataclass(obj)
        else "dict"
        if isinstance(obj, dict)
        else "object"
    )
    scalars: dict[str, Any] = {}
    for name, v in _items(obj, skip):
        here = f"{where}.{name}"
        if isinstance(v, np.ndarray):
            if v.dtype.kind not in "biuf":
                raise CheckpointError(f"{here}: arrays of dtype {v.dtype} cannot be checkpointed")
            kw = {"compression": "gzip", "compression_opts": 1} if v.nbytes > _COMPRESS_BYTES and v.ndim else {}
            group.create_dataset(name, data=v, **kw)
        elif isinstance(v, np.generic):
            scalars[name] = ["np", v.dtype.str, v.item() if v.dtype.kind != "f" else float(v)]
        elif isinstance(v, np.random.Generator):
            scalars[name] = ["generator", v.bit_generator.state]
        elif isinstance(v, random.Random):
            scalars[name] = ["random", v.getstate()]
        elif v is None or isinstance(v, bool | int | float | str):
            scalars[name] = ["py", v]
        elif _is_namedtuple(v) or dataclasses.is_dataclass(v):
            write_tree(group.create_group(name), v, here)
        elif isinstance(v, dict | list | tuple) and _jsonable(v) is not None:
            scalars[name] = ["json", v, type(v).__name__]
        elif isinstance(v, dict) and all(isinstance(k, str) for k in v):
            write_tree(group.create_group(name), v, here)
        else:
            raise CheckpointError(
                f"{here}: a {type(v).__name__} cannot be checkpointed; store state as arrays, numbers, strings, "
                "named tuples, dataclasses or dicts of those, or list the attribute in abm.checkpoint's derived "
                "attributes if the scenario rebuilds it"
            )
    group.attrs["scalars"] = json.dumps(scalars, default=_json_default, allow_nan=True)


def _scalar(tag: list[Any]) -> Any:
    kind = tag[0]
    if kind == "py":
        return tag[1]
    if kind == "np":
        return np.dtype(tag[1]).type(tag[2])
    if kind == "json":
        return tuple(tag[1]) if tag[2] == "tuple" else tag[1]
    raise ValueError(f"unknown scalar kind {kind!r}")


def _rebuild(group: h5py.Group) -> Any:
    """A fresh object from a stored subgroup (only classes of abm modules are made)."""
    kind = group.attrs["kind"]
    values = {name: _read_value(group, name) for name in _names(group)}
    if kind == "dict":
        return values
    mod, _, qual = str(group.attrs["class"]).partition(":")
    if not (mod == "abm" or mod.startswith("abm.")):
        raise UsageError(f"{group.file.filename}: refuses to build class {mod}:{qual} (not an abm class)")
    cls: Any = importlib.import_module(mod)
    for part in qual.split("."):
        cls = getattr(cls, part)
    return cls(**values)


def _names(group: h5py.Group) -> list[str]:
    return list(group.keys()) + list(json.loads(group.attrs["scalars"]))


def _read_value(group: h5py.Group, name: str) -> Any:
    if name in group:
        item = group[name]
        return item[()] if isinstance(item, h5py.Dataset) else _rebuild(item)
    tag = json.loads(group.attrs["scalars"])[name]
    if tag[0] in ("generator", "random"):
        raise ValueError(f"{name}: a generator is restored in place only")
    return _scalar(tag)


def restore_tree(obj: Any, group: h5py.Group, where: str, only: frozenset[str] | None = None) -> Any:
    """Put the state stored in ``group`` into ``obj`` (arrays copied in place, keeping every view of them valid);
    return ``obj`` or, for an immutable one that had to change, its replacement."""
    scalars = json.loads(group.attrs["scalars"])
    changes: dict[str, Any] = {}
    immutable = _is_namedtuple(obj) or (
        dataclasses.is_dataclass(obj) and getattr(obj, "__dataclass_params__").frozen  # noqa: B009
    )
    for name in _names(group):
        if only is not None and name not in only:
            continue
        here = f"{where}.{name}"
        cur = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        if name in group and isinstance(group[name], h5py.Dataset):
            arr = group[name][()]
            if isinstance(cur, np.ndarray) and cur.shape == np.shape(arr) and cur.dtype == arr.dtype and cur.ndim:
                np.copyto(cur, arr)
                continue
            new: Any = arr
        elif name in group:
            sub = group[name]
            if cur is not None and _class_name(cur) == sub.attrs["class"] and not isinstance(cur, dict):
                new = restore_tree(cur, sub, here)
                if new is cur:
                    continue
            elif isinstance(cur, dict) and sub.attrs["kind"] == "dict":
                restore_tree(cur, sub, here)
                continue
            else:
                new = _rebuild(sub)
        else:
            tag = scalars[name]
            if tag[0] == "generator":
                cur.bit_generator.state = tag[1]
                continue
            if tag[0] == "random":
                cur.setstate(_tuples(tag[1]))
                continue
            new = _scalar(tag)
            if type(cur) is type(new) and cur == new:
                continue
        if isinstance(obj, dict):
            obj[name] = new
        elif immutable:
            changes[name] = new
        else:
            setattr(obj, name, new)
    if changes:
        return obj._replace(**changes) if _is_namedtuple(obj) else dataclasses.replace(obj, **changes)
    return obj


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


# ----------------------------------------------------------------------------------------------- the file
def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _layers_json(layers: Iterable[Layer]) -> str:
    return json.dumps(
        [{"source": la.source, "kind": la.kind, "data": la.data} for la in layers],
        default=_json_default,
        allow_nan=True,
    )


class Checkpointer:
    """Writes the checkpoints of one run: every ``every`` steps (0: none), at the last step when ``final``, and
    at an interruption (:meth:`save`, called by :func:`abm.simulation.run`). ``path`` is replaced atomically each
    time (written beside it, fsynced, renamed)."""

    def __init__(self, path: str | os.PathLike, every: int = 0, final: bool = False, start: int = 0) -> None:
        self.path = Path(path)
        self.every = max(0, int(every))
        self.final = bool(final)
        self.start = int(start)
        self.written: Path | None = None
        self.out: Path | None = None
        self.overwrite = False
        self.origin: dict[str, Any] | None = None

    def next_step(self, last: int, n_steps: int) -> int | None:
        """The next step after ``last`` at which a checkpoint is due (None: none before the end)."""
        if self.every:
            k = (last // self.every + 1) * self.every
            if k < n_steps:
                return k
        return n_steps if self.final and last < n_steps else None

    def due(self, step: int, n_steps: int) -> bool:
        if step <= self.start:
            return False
        return bool(self.every and step % self.every == 0 and step < n_steps) or (self.final and step == n_steps)

    def save(self, sim: Any) -> Path:
        """The state of ``sim`` (a :class:`abm.simulation.Simulation`) at the current step boundary."""
        from abm.reporters import RecorderReporter, TrajectoryReporter  # noqa: PLC0415 - reporters import abm.io

        model = sim.model
        rec = next((r for r in sim.reporters if isinstance(r, RecorderReporter)), None)
        traj = next((r for r in sim.reporters if isinstance(r, TrajectoryReporter)), None)
        partial = traj.writer.partial_path if traj is not None and traj.writer is not None else None
        if partial is not None:
            _fsync(partial)  # the snapshots before this step are on disk before the checkpoint says so
        sc = model.scenario
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with h5py.File(tmp, "w") as f:
                a = f.attrs
                a["format_name"] = FORMAT_NAME
                a["format_version"] = FORMAT_VERSION
                a["created"] = _utc_now()
                a["abm_version"] = abm_version()
                a["git_hash"] = git_hash()
                a["step"] = int(model.step_index)
                a["n_steps"] = int(sim.n_steps)
                a["complete"] = bool(model.step_index >= sim.n_steps)
                a["seed"] = str(model.seed)
                a["scenario_name"] = sc.name
                a["scenario_source"] = sc.source
                a["scenario_layers"] = _layers_json(sc.layers)
                a["scenario_text"] = sc.text
                a["resolved_json"] = json.dumps(sc.resolved(), sort_keys=True, allow_nan=True)
                a["origin_json"] = json.dumps(getattr(sc, "origin", None), allow_nan=True)
                a["out"] = os.path.abspath(self.out) if self.out else ""  # a resume may start elsewhere
                a["overwrite"] = bool(self.overwrite)
                a["partial"] = os.path.abspath(partial) if partial else ""
                a["snapshot_every"] = int(traj.snapshot_every) if traj is not None else 0
                a["checkpoint_every"] = int(self.every)
                write_tree(f.create_group("model"), model, "model", MODEL_DERIVED)
                if model.therapy is not None:
                    write_tree(f.create_group("therapy"), model.therapy, "therapy", THERAPY_DERIVED)
                if rec is not None:
                    write_tree(f.create_group("recorder"), rec, "recorder")
                if partial is not None:  # format 1.1: what each frame of the partial file was when written
                    g = f.create_group("partial_crc32")
                    for path, crcs in traj.writer.frame_crc32.items():
                        g.create_dataset(path.lstrip("/"), data=np.asarray(crcs, dtype=np.uint32))
            _fsync(tmp)
            os.replace(tmp, self.path)
            _fsync(self.path.parent if str(self.path.parent) else Path("."))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.written = self.path
        return self.path

    def try_save(self, sim: Any, when: str) -> Path | None:
        """:meth:`save`, turning a failure into a warning (a run is not lost because its checkpoint failed)."""
        try:
            return self.save(sim)
        except (OSError, CheckpointError, ValueError, TypeError) as e:
            warnings.warn(f"{self.path}: the checkpoint {when} was not written: {e}", RuntimeWarning, stacklevel=2)
            return None


class Checkpoint:
    """A checkpoint file read back (:func:`read`): its attributes, the scenario it records, and restore methods."""

    def __init__(self, path: Path, attrs: dict[str, Any]) -> None:
        self.path = path
        self.attrs = attrs
        self.step = int(attrs["step"])
        self.n_steps = int(attrs["n_steps"])
        self.seed = int(attrs["seed"])
        self.complete = bool(attrs["complete"])
        self.out = Path(attrs["out"]) if attrs["out"] else None
        self.partial = Path(attrs["partial"]) if attrs["partial"] else None
        self.overwrite = bool(attrs["overwrite"])
        self.snapshot_every = int(attrs["snapshot_every"])
        self.checkpoint_every = int(attrs["checkpoint_every"])
        self.resolved = json.loads(attrs["resolved_json"])
        self.origin = json.loads(attrs["origin_json"])

    # ---- the scenario
    def scenario(self) -> Scenario:
        """The scenario of the checkpointed run, rebuilt from its recorded layers (no file is read again) and
        checked against the recorded resolved parameters."""
        layers = [Layer(d["source"], d["data"], d["kind"]) for d in json.loads(self.attrs["scenario_layers"])]
        sc = Scenario.from_layers(layers, source=self.attrs["scenario_source"], text=self.attrs["scenario_text"])
        if self.origin is not None:
            sc = dataclasses.replace(sc, origin=self.origin)
        now = json.loads(json.dumps(sc.resolved(), sort_keys=True, allow_nan=True))
        if now != self.resolved:
            keys = ", ".join(differences(self.resolved, now)[:5])
            raise ParameterError(
                f"{self.path}: the checkpoint's parameters no longer resolve to the same values with abm "
                f"{abm_version()} (keys {keys}); resume it with the abm that wrote it ({self.attrs['abm_version']})"
            )
        return sc

    # ---- restoring
    def restore_model(self, model: Any, clock: bool = True) -> None:
        """Put the checkpointed state into ``model`` (built from :meth:`scenario` and the seed). ``clock=False``:
        the tissue only, for a new run from the checkpoint (no step count, plasma, toxicity, events or therapy)."""
        keep = None
        with h5py.File(self.path, "r") as f:
            g = f["model"]
            if not clock:
                keep = frozenset(_names(g)) - MODEL_CLOCK - {"seed", "_seed", "rng", "random", "_rng"}
            restore_tree(model, g, "model", only=keep)
            if clock and "therapy" in f:
                if model.therapy is None:
                    raise ParameterError(f"{self.path}: the checkpoint holds a therapy state but the model has none")
                restore_tree(model.therapy, f["therapy"], "therapy")
        model._observed = None

    def restore_recorder(self, rec: Any) -> None:
        with h5py.File(self.path, "r") as f:
            if "recorder" in f:
                restore_tree(rec, f["recorder"], "recorder")

    def recorded(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """(observable names, steps, times, rows) of the recorder, rows before :attr:`step`."""
        with h5py.File(self.path, "r") as f:
            g = f["recorder"]
            n = int(json.loads(g.attrs["scalars"])["n_rows"][1])
            names = json.loads(g.attrs["scalars"])["names"][1]
            steps, time, rows = g["_steps"][:n], g["_time"][:n], g["_rows"][:n]
        keep = steps < self.step
        return names, steps[keep], time[keep], rows[keep]

    def replay(self, traj: Any, species: list[str]) -> int:
        """Write what the first run wrote before :attr:`step` into ``traj`` (a started TrajectoryReporter): every
        observable row from the recorder and every snapshot from the partial trajectory. Returns the snapshots."""
        from abm.simulation import Frame  # noqa: PLC0415 - abm.simulation imports this module

        names, steps, times, rows = self.recorded()
        want = [int(s) for s in steps if self.snapshot_every and s % self.snapshot_every == 0]
        frames: dict[int, Any] = {}
        cells: dict[int, Any] = {}
        if want:
            frames, cells = self._snapshots(want, species)
        for i, s in enumerate(steps):
            obs = {k: rows[i, j] for j, k in enumerate(names)}
            traj.report(Frame(int(s), float(times[i]), obs, frames.get(int(s)), None, None, cells.get(int(s))))
        return len(frames)

    def _crc_check(self, p: Path) -> Any:
        """A check ``(dataset, frame index, values)`` that raises UsageError when a frame read from the partial file
        ``p`` differs from what the writer wrote (its CRC-32 as the checkpoint recorded it; format 1.1)."""
        with h5py.File(self.path, "r") as f:
            crcs: dict[str, np.ndarray] = {}
            if "partial_crc32" in f:
                f["partial_crc32"].visititems(
                    lambda name, obj: crcs.__setitem__("/" + name, obj[:]) if isinstance(obj, h5py.Dataset) else None
                )

        def check(ds: Any, k: int, values: np.ndarray) -> None:
            want = crcs.get(ds.name)
            if want is not None and k < len(want) and frame_crc32(values) != int(want[k]):
                raise UsageError(
                    f"{p}: frame {k} of {ds.name} differs from what the first run wrote (CRC-32 recorded in the "
                    f"checkpoint {self.path}); the partial file was damaged after the checkpoint, so the run cannot "
                    "be resumed into the same file (start it again)"
                )

        return check

    @staticmethod
    def _cell_frames(f: Any, want: list[int], check: Any) -> dict[int, Any]:
        """The per-cell table of each wanted step that the partial file holds (format 1.2; none in older files)."""
        if "particles/cells" not in f:
            return {}
        g = f["particles/cells"]
        index = {int(s): i for i, s in enumerate(g["step"][:])}
        start, count = g["start"][:], g["count"][:]
        out = {}
        for s in want:
            if s in index:
                k = index[s]
                out[s] = _cell_frame_columns(g, int(start[k]), int(count[k]), check=lambda ds, v, k=k: check(ds, k, v))
        return out

    def _snapshots(self, want: list[int], species: list[str]) -> tuple[dict[int, Any], dict[int, Any]]:
        from abm.simulation import Snapshot  # noqa: PLC0415

        p = self.partial
        check = self._crc_check(p) if p is not None else None
        if p is None or not p.is_file():
            raise UsageError(
                f"{self.path}: the trajectory it continues ({p}) is gone; it holds the snapshots before step "
                f"{self.step}, so the run cannot be resumed into the same file (start it again)"
            )
        try:
            with h5py.File(p, "r") as f:
                ct = f["particles/lattice/cell_type"]
                have = {int(s): i for i, s in enumerate(ct["step"][:])}
                missing = [s for s in want if s not in have]
                if missing:
                    raise UsageError(
                        f"{p}: lacks the snapshot of step {missing[0]} that the checkpoint {self.path} needs "
                        f"(it holds {len(have)}); the run cannot be resumed into the same file"
                    )
                out = {}
                for s in want:
                    i = have[s]
                    frames = {"": ct["value"], **{sp: f["fields"][sp]["value"] for sp in species}}
                    read = {sp: ds[i] for sp, ds in frames.items()}
                    for sp, ds in frames.items():
                        check(ds, i, read[sp])
                    out[s] = Snapshot(read.pop("").reshape(-1), {sp: v.reshape(-1) for sp, v in read.items()})
                return out, self._cell_frames(f, want, check)
        except (OSError, KeyError) as e:
            raise UsageError(f"{p}: cannot read the snapshots the checkpoint {self.path} needs ({e})") from None


def _cell_frame_columns(g: Any, start: int, count: int, check: Any = None) -> dict[str, np.ndarray]:
    """One frame of a per-cell table, keyed as :data:`~abm.kernels.records.CellArrays` (what a Frame carries);
    ``check(dataset, values)`` sees every column read."""
    rows = slice(start, start + count)
    cols = {name: g[name][rows] for name in g if name not in ("step", "time", "start", "count")}
    if check is not None:
        for name, values in cols.items():
            check(g[name], values)
    out = {name: cols[name] for name in ("id", "site", "mhc", "age_min", "kills", "timer_min", "exposure_min")}
    # format 1.3 added the sensitisation column; a 1.2 table had none (no cell was sensitised then)
    out["sensitisation"] = cols["sensitisation"] if "sensitisation" in cols else np.zeros(count, np.float32)
    out["ctype"] = cols["type"]
    return out


def read(path: str | os.PathLike) -> Checkpoint:
    """Open a checkpoint (or find the one of an output or partial file); UsageError (exit 2) if it is not one."""
    p = find(path)
    try:
        with h5py.File(p, "r") as f:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            if attrs.get("format_name") != FORMAT_NAME:
                raise UsageError(f"{p}: not an abm checkpoint (format {attrs.get('format_name')!r})")
            if str(attrs.get("format_version", "")).split(".")[0] != FORMAT_VERSION.split(".")[0]:
                raise UsageError(f"{p}: checkpoint format {attrs.get('format_version')} is not readable here")
            if "model" not in f:
                raise UsageError(f"{p}: the checkpoint has no model state")
    except OSError as e:
        raise UsageError(f"{p}: not a readable checkpoint ({e})") from None
    if attrs.get("abm_version") != abm_version():
        raise UsageError(
            f"{p}: written by abm {attrs.get('abm_version')}, this is abm {abm_version()}; a run resumes only with "
            "the abm that started it"
        )
    return Checkpoint(p, attrs)


def find(path: str | os.PathLike) -> Path:
    """``path`` itself when it is a checkpoint; for an output ``NAME.h5`` or its partial file
    ``NAME.h5.<pid>-<hex>.partial``, ``NAME.ckpt.h5``."""
    p = Path(path)
    name = p.name
    if name.endswith(".partial"):
        parts = name[: -len(".partial")].rsplit(".", 1)
        p = p.with_name(parts[0])
    if not p.name.endswith(SUFFIX):
        p = checkpoint_path(p)
    if not p.is_file():
        raise UsageError(f"{path}: no checkpoint found (looked for {p})")
    return p


def differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Key paths where two JSON trees differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    same = a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    return [] if same else [prefix[:-1] or "(top level)"]


def derived_seed(ck: Checkpoint) -> int:
    """The seed of a new run from ``ck`` when none is given: spawned from the checkpoint's seed and step, so the
    new run's draws (keyed by seed and step from 0) do not repeat the first run's."""
    words = np.random.SeedSequence([ck.seed, ck.step, 0x636B7074]).generate_state(2, np.uint32)
    return int(words[0]) | (int(words[1]) << 32)


def check_compatible(ck: Checkpoint, scenario: Scenario) -> None:
    """A new run from ``ck`` may change the regimen and the run settings, nothing else (ParameterError naming the
    source and the key of each difference)."""
    keys = differences(ck.resolved["params"], json.loads(json.dumps(scenario.params.model_dump(mode="json"))))
    if keys:
        lines = [
            f"{scenario.source_of(tuple(k.split('.')))}: key '{k}': differs from the checkpoint {ck.path} (a run "
            "from a checkpoint may change only [regimen] and [run])"
            for k in keys[:10]
        ]
        raise ParameterError("\n".join(lines))
