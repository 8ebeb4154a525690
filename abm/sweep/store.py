"""``sweep.h5``: the design table, the summary table (one row per finished run) and the failures table.

Layout (format ``abm-sweep``, version 1)::

    /                   attrs: format, format_version, name, spec_json, spec_text, fingerprint, abm_version,
                               git_hash, created, parameters (the varied keys)
    /design/run_id      (n_runs,) str        /design/point, /design/replicate (n_runs,) int64
    /design/seed        (n_runs,) int64      /design/values (n_runs, n_parameters) float64, attrs parameters
    /summary/run_id     (n_done,) str, growing; /summary/<metric> one column per summary key (float64, or str
                        for RECIST categories); /summary/elapsed_s
    /failures/run_id, /failures/error (str), /failures/attempts (int64)

Only the sweep driver writes it, each row in its own open-append-close, so a killed driver leaves whole rows.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from abm.params import ParameterError
from abm.sweep.design import RunSpec, SweepSpec

FORMAT = "abm-sweep"
FORMAT_VERSION = 1
STR = h5py.string_dtype()


def _open(path: Path, mode: str, tries: int = 50):
    """Open, retrying while another process (a reader) holds the HDF5 lock."""
    for i in range(tries):
        try:
            return h5py.File(path, mode)
        except (BlockingIOError, OSError):
            if i == tries - 1:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


def _col(n: int, dtype) -> dict[str, Any]:
    return dict(shape=(n,), maxshape=(None,), dtype=dtype, chunks=(256,))


class SweepStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # ------------------------------------------------------------------------------------------ writing
    def create(self, spec: SweepSpec, runs: list[RunSpec]) -> None:
        from abm import __version__
        from abm.provenance import git_hash

        tmp = self.path.with_suffix(".h5.partial")
        with h5py.File(tmp, "w") as f:
            f.attrs.update(
                format=FORMAT,
                format_version=FORMAT_VERSION,
                name=spec.name,
                spec_json=spec.to_json(),
                spec_text=spec.text,
                fingerprint=spec.fingerprint(),
                abm_version=__version__,
                git_hash=git_hash(),
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                parameters=json.dumps(spec.keys),
                analysis=spec.analysis,
                design=spec.design,
            )
            d = f.create_group("design")
            d["run_id"] = np.array([r.run_id for r in runs], dtype=object).astype(STR)
            d["point"] = np.array([r.point for r in runs], dtype=np.int64)
            d["replicate"] = np.array([r.replicate for r in runs], dtype=np.int64)
            d["seed"] = np.array([r.seed for r in runs], dtype=np.int64)
            v = d.create_dataset(
                "values", data=np.array([r.values for r in runs], dtype=float).reshape(len(runs), len(spec.keys))
            )
            v.attrs["parameters"] = json.dumps(spec.keys)
            s = f.create_group("summary")
            s.create_dataset("run_id", **_col(0, STR))
            fl = f.create_group("failures")
            fl.create_dataset("run_id", **_col(0, STR))
            fl.create_dataset("error", **_col(0, STR))
            fl.create_dataset("attempts", **_col(0, np.int64))
        tmp.replace(self.path)

    def append_summary(self, run_id: str, summary: dict[str, Any], elapsed_s: float) -> None:
        row = dict(summary)
        row["elapsed_s"] = elapsed_s
        with _open(self.path, "a") as f:
            g = f["summary"]
            n = g["run_id"].shape[0]
            for k, v in row.items():
                if k not in g:
                    dtype = STR if isinstance(v, str) else np.float64
                    g.create_dataset(k, **_col(n, dtype))
                    if dtype is not STR:
                        g[k][:] = np.nan
            for k in g:
                ds = g[k]
                ds.resize((n + 1,))
                v = run_id if k == "run_id" else row.get(k)
                if ds.dtype.kind in "OSU" or h5py.check_string_dtype(ds.dtype):
                    ds[n] = "" if v is None else str(v)
                else:
                    ds[n] = math.nan if v is None or isinstance(v, str) else float(v)

    def append_failure(self, run_id: str, error: str, attempts: int) -> None:
        with _open(self.path, "a") as f:
            g = f["failures"]
            n = g["run_id"].shape[0]
            for k, v in (("run_id", run_id), ("error", error), ("attempts", attempts)):
                g[k].resize((n + 1,))
                g[k][n] = v

    # ------------------------------------------------------------------------------------------ reading
    def check_matches(self, spec: SweepSpec) -> None:
        with _open(self.path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise ParameterError(f"{self.path}: not an abm sweep file")
            fp = f.attrs.get("fingerprint")
        if fp != spec.fingerprint():
            raise ParameterError(
                f"{self.path}: this sweep was started from a different definition (or without/with"
                f" --quick); resume it with the same sweep file and options, or use a new --out"
            )

    def finished_ids(self) -> set[str]:
        with _open(self.path, "r") as f:
            ids = [x.decode() if isinstance(x, bytes) else x for x in f["summary/run_id"][:]]
            ids += [x.decode() if isinstance(x, bytes) else x for x in f["failures/run_id"][:]]
        return set(ids)

    def n_failed(self) -> int:
        with _open(self.path, "r") as f:
            return int(f["failures/run_id"].shape[0])


def _strs(a: np.ndarray) -> np.ndarray:
    return np.array([x.decode() if isinstance(x, bytes) else x for x in a], dtype=object)


def read_sweep(path: str | Path) -> dict[str, Any]:
    """Read a sweep directory (or its ``sweep.h5``): ``design``, ``summary`` (joined with the design, sorted by
    run id), ``failures`` as pandas DataFrames, plus ``parameters``, ``spec`` (dict), ``attrs``."""
    import pandas as pd

    p = Path(path)
    if p.is_dir():
        p = p / "sweep.h5"
    if not p.exists():
        raise ParameterError(f"{p}: no sweep file (run `abm sweep SWEEP.toml --out DIR` first)")
    with _open(p, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise ParameterError(f"{p}: not an abm sweep file")
        keys = json.loads(f.attrs["parameters"])
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        d = f["design"]
        design = pd.DataFrame(
            {
                "run_id": _strs(d["run_id"][:]),
                "point": d["point"][:],
                "replicate": d["replicate"][:],
                "seed": d["seed"][:],
            }
        )
        vals = d["values"][:]
        for j, k in enumerate(keys):
            design[k] = vals[:, j]
        s = f["summary"]
        cols = {}
        for k in s:
            a = s[k][:]
            cols[k] = _strs(a) if h5py.check_string_dtype(s[k].dtype) else a
        summary = pd.DataFrame(cols)
        fl = f["failures"]
        failures = pd.DataFrame(
            {"run_id": _strs(fl["run_id"][:]), "error": _strs(fl["error"][:]), "attempts": fl["attempts"][:]}
        )
    # the run's own seed column repeats the design's; keep one
    summary = summary.drop(columns=[c for c in summary.columns if c in design.columns and c != "run_id"])
    summary = design.merge(summary, on="run_id", how="inner").sort_values("run_id").reset_index(drop=True)
    return {
        "design": design,
        "summary": summary,
        "failures": failures.sort_values("run_id").reset_index(drop=True),
        "parameters": keys,
        "spec": json.loads(attrs["spec_json"]),
        "attrs": attrs,
        "path": p,
    }
