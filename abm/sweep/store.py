"""The store of a sweep (or a virtual trial): ``DIR/sweep.sqlite``, the source of truth, and its export ``sweep.h5``.

**The store** is an SQLite database in WAL mode, written only by the sweep driver, one transaction per change (a
run started, a result, a worker death), each committed with ``synchronous=FULL``: a driver killed at any instant
(SIGKILL included) leaves a database that opens, holds every result recorded before the kill, and resumes. Schema
(version 1)::

    meta(key TEXT PRIMARY KEY, value TEXT)      JSON values: format, schema_version, kind ("sweep" | "trial"),
                                                name, spec_json, spec_text, fingerprint, parameters, design,
                                                analysis, abm_version, git_hash, created
    runs(run_id TEXT PRIMARY KEY,               "p0003r011" (sweep); a patient id (trial)
         ordinal INTEGER UNIQUE,                position in the design
         point INTEGER, replicate INTEGER,      design point and replicate (a trial: arm and patient index)
         seed INTEGER,                          the run's own seed
         design TEXT,                           JSON object: parameter (or covariate) -> value
         status TEXT,                           pending | running | done | failed
         attempts INTEGER,                      times a worker started it
         deaths INTEGER,                        times the worker running it died (the only thing charged to it)
         error TEXT,                            why it failed (its exception and traceback, or its worker's deaths)
         elapsed_s REAL,                        wall time of the last attempt
         summary TEXT,                          JSON object: the run's summary (NaN and None kept)
         worker TEXT,                           host:pid of the worker that ran it last
         started_at TEXT, finished_at TEXT)     UTC, ISO 8601

A run is ``pending`` until a worker starts it (``running``), then ``done`` or ``failed``. A resumed sweep reruns
every run that is not ``done``: ``running`` rows (the previous driver died while they ran) and ``failed`` ones.

**The export** ``DIR/sweep.h5`` keeps the layout of format ``abm-sweep`` 1 (below) for tools that read it; it is
written from the store when the driver stops (finished, interrupted or failed), to a temporary name, fsynced and
renamed, so it is whole or absent. :func:`read_sweep` reads the store when there is one, else a ``sweep.h5`` (an
export copied elsewhere, or a directory written by abm before the store existed).

Layout of ``sweep.h5`` (format ``abm-sweep``, version 1)::

    /                   attrs: format, format_version, name, spec_json, spec_text, fingerprint, abm_version,
                               git_hash, created, parameters (the varied keys), design, analysis, exported_from
    /design/run_id      (n_runs,) str        /design/point, /design/replicate (n_runs,) int64
    /design/seed        (n_runs,) int64      /design/values (n_runs, n_parameters) float64, attrs parameters
    /summary/run_id     (n_done,) str; /summary/<metric> one column per summary key (float64, or str for RECIST
                        categories); /summary/elapsed_s
    /failures/run_id, /failures/error (str), /failures/attempts (int64)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from abm.params import ParameterError

FORMAT = "abm-sweep"
FORMAT_VERSION = 1
STORE_FORMAT = "abm-run-store"
SCHEMA_VERSION = 1
STORE_NAME = "sweep.sqlite"
EXPORT_NAME = "sweep.h5"
LOCK_NAME = "sweep.lock"
STATUSES = ("pending", "running", "done", "failed")
STR = h5py.string_dtype()

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    run_id      TEXT PRIMARY KEY,
    ordinal     INTEGER NOT NULL UNIQUE,
    point       INTEGER,
    replicate   INTEGER,
    seed        INTEGER NOT NULL,
    design      TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    deaths      INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    elapsed_s   REAL,
    summary     TEXT,
    worker      TEXT,
    started_at  TEXT,
    finished_at TEXT
);
CREATE INDEX runs_by_status ON runs (status);
"""


class StoreError(ParameterError):
    """The store cannot be used: not an abm store, damaged, from a newer abm, or locked by another driver."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, allow_nan=True, sort_keys=True, default=_plain)


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"cannot store {type(v).__name__} {v!r} in a run summary")


@dataclass(frozen=True)
class RunRecord:
    """What the store knows of one run before it runs."""

    run_id: str
    ordinal: int
    seed: int
    design: Mapping[str, Any]
    point: int | None = None
    replicate: int | None = None


def worker_id(pid: int | None = None) -> str:
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


class RunStore:
    """A run store (SQLite, WAL). Create with :meth:`create`, open with :meth:`open`; close with :meth:`close`.

    Every method that changes a run is one transaction.
    """

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self._db = db

    # ------------------------------------------------------------------------------------------ opening
    @staticmethod
    def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
        if readonly:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0, isolation_level=None)
        else:
            db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout = 30000")
        if not readonly:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":  # a file system without the shared memory WAL needs: still atomic
                db.execute("PRAGMA journal_mode = DELETE")
            db.execute("PRAGMA synchronous = FULL")
        return db

    @classmethod
    def create(cls, path: str | os.PathLike, meta: Mapping[str, Any], runs: Sequence[RunRecord]) -> RunStore:
        """Create the store atomically: built under a temporary name, committed, then renamed into place."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
            p.unlink(missing_ok=True)
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode = DELETE")  # one self-contained file to rename
            db.execute("PRAGMA synchronous = FULL")
            db.executescript(_SCHEMA)
            db.execute("BEGIN")
            head = {"format": STORE_FORMAT, "schema_version": SCHEMA_VERSION, "created": _now(), **meta}
            db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, _dumps(v)) for k, v in head.items()])
            db.executemany(
                "INSERT INTO runs (run_id, ordinal, point, replicate, seed, design) VALUES (?, ?, ?, ?, ?, ?)",
                [(r.run_id, r.ordinal, r.point, r.replicate, int(r.seed), _dumps(dict(r.design))) for r in runs],
            )
            db.execute("COMMIT")
        except BaseException:
            db.close()
            tmp.unlink(missing_ok=True)
            raise
        db.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        return cls.open(path)

    @classmethod
    def open(cls, path: str | os.PathLike, readonly: bool = False) -> RunStore:
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"{path}: no run store")
        try:
            db = cls._connect(path, readonly=readonly)
            rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
            db.execute("SELECT count(*) FROM runs").fetchone()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{path}: not a readable abm run store ({e})") from None
        fmt = json.loads(rows.get("format", "null"))
        if fmt != STORE_FORMAT:
            db.close()
            raise StoreError(f"{path}: not an abm run store (format {fmt!r})")
        version = json.loads(rows.get("schema_version", "0"))
        if version > SCHEMA_VERSION:
            db.close()
            raise StoreError(
                f"{path}: written by a newer abm (store schema {version}; this abm reads {SCHEMA_VERSION})"
            )
        return cls(path, db)

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            finally:
                self._db = None  # type: ignore[assignment]

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self) -> None:
        """SQLite's own consistency check; raises :class:`StoreError` if the database is damaged."""
        res = self._db.execute("PRAGMA integrity_check").fetchall()
        if [tuple(r) for r in res] != [("ok",)]:
            raise StoreError(f"{self.path}: damaged: {'; '.join(str(tuple(r)) for r in res[:5])}")

    # ------------------------------------------------------------------------------------------ reading
    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM meta").fetchall()}

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for status, n in self._db.execute("SELECT status, count(*) FROM runs GROUP BY status"):
            out[status] = n
        return out

    def run_ids(self, statuses: Iterable[str] | None = None) -> list[str]:
        if statuses is None:
            cur = self._db.execute("SELECT run_id FROM runs ORDER BY ordinal")
        else:
            st = list(statuses)
            q = f"SELECT run_id FROM runs WHERE status IN ({','.join('?' * len(st))}) ORDER BY ordinal"
            cur = self._db.execute(q, st)
        return [r[0] for r in cur]

    def rows(self) -> list[dict[str, Any]]:
        """Every run, in design order, with ``design`` and ``summary`` decoded."""
        out = []
        for r in self._db.execute("SELECT * FROM runs ORDER BY ordinal"):
            d = dict(r)
            d["design"] = json.loads(d["design"])
            d["summary"] = json.loads(d["summary"]) if d["summary"] is not None else None
            out.append(d)
        return out

    def row(self, run_id: str) -> dict[str, Any]:
        r = self._db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if r is None:
            raise KeyError(run_id)
        d = dict(r)
        d["design"] = json.loads(d["design"])
        d["summary"] = json.loads(d["summary"]) if d["summary"] is not None else None
        return d

    # ------------------------------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT; rolled back if anything raises)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _change(self, sql: str, args: tuple, run_id: str) -> None:
        with self._tx() as db:
            cur = db.execute(sql, args)
            if cur.rowcount != 1:
                raise KeyError(f"{self.path}: no run {run_id!r}")

    def mark_running(self, run_id: str, worker: str) -> None:
        """A worker started the run: ``running``, attempts + 1."""
        self._change(
            "UPDATE runs SET status = 'running', attempts = attempts + 1, worker = ?, started_at = ?, "
            "finished_at = NULL WHERE run_id = ?",
            (worker, _now(), run_id),
            run_id,
        )

    def record_done(self, run_id: str, summary: Mapping[str, Any], elapsed_s: float) -> None:
        self._change(
            "UPDATE runs SET status = 'done', summary = ?, elapsed_s = ?, error = NULL, finished_at = ? "
            "WHERE run_id = ?",
            (_dumps(dict(summary)), _real(elapsed_s), _now(), run_id),
            run_id,
        )

    def record_failed(self, run_id: str, error: str, elapsed_s: float = math.nan) -> None:
        self._change(
            "UPDATE runs SET status = 'failed', error = ?, elapsed_s = ?, finished_at = ? WHERE run_id = ?",
            (str(error), _real(elapsed_s), _now(), run_id),
            run_id,
        )

    def record_death(self, run_id: str, error: str, retry: bool) -> None:
        """The worker running ``run_id`` died: deaths + 1; back to ``pending`` (``retry``) or ``failed``."""
        self._change(
            "UPDATE runs SET deaths = deaths + 1, status = ?, error = ?, finished_at = ? WHERE run_id = ?",
            ("pending" if retry else "failed", str(error), _now(), run_id),
            run_id,
        )

    def requeue(self, run_ids: Iterable[str]) -> int:
        """Back to ``pending`` without charging anything (their worker never ran them, or the driver stopped)."""
        ids = list(run_ids)
        if not ids:
            return 0
        with self._tx() as db:
            cur = db.executemany(
                "UPDATE runs SET status = 'pending' WHERE run_id = ? AND status = 'running'", [(i,) for i in ids]
            )
        return cur.rowcount

    def reset_running(self) -> int:
        """At resume: runs a dead driver left ``running`` go back to ``pending`` (not charged)."""
        with self._tx() as db:
            cur = db.execute("UPDATE runs SET status = 'pending' WHERE status = 'running'")
        return cur.rowcount

    # ------------------------------------------------------------------------------------------ tables
    def tables(self) -> dict[str, Any]:
        """``design``, ``summary`` (done runs joined with the design, sorted by run id), ``failures``, ``runs``
        (every run with its status) as pandas DataFrames, plus ``parameters``, ``spec``, ``attrs``."""
        import pandas as pd

        meta = self.meta()
        keys = list(meta.get("parameters") or [])
        rows = self.rows()
        design = pd.DataFrame(
            {
                "run_id": pd.Series([r["run_id"] for r in rows], dtype=object),
                "point": np.array([_int(r["point"]) for r in rows], dtype=np.int64),
                "replicate": np.array([_int(r["replicate"]) for r in rows], dtype=np.int64),
                "seed": np.array([r["seed"] for r in rows], dtype=np.int64),
            }
        )
        for k in keys:
            design[k] = np.array([_float(r["design"].get(k)) for r in rows], dtype=np.float64)
        done = [r for r in rows if r["status"] == "done"]
        cols: dict[str, Any] = {"run_id": [r["run_id"] for r in done]}
        names = sorted({k for r in done for k in r["summary"]} | {"elapsed_s"})  # columns in the order sweep.h5 has
        for k in names:
            if k == "elapsed_s":
                cols[k] = np.array([_float(r["elapsed_s"]) for r in done], dtype=np.float64)
                continue
            vals = [r["summary"].get(k) for r in done]
            if any(isinstance(v, str) for v in vals):  # RECIST categories
                cols[k] = np.array(["" if v is None else str(v) for v in vals], dtype=object)
            else:
                cols[k] = np.array([_float(v) for v in vals], dtype=np.float64)
        summary = pd.DataFrame(cols)
        summary = summary.drop(columns=[c for c in summary.columns if c in design.columns and c != "run_id"])
        summary = design.merge(summary, on="run_id", how="inner").sort_values("run_id").reset_index(drop=True)
        failed = [r for r in rows if r["status"] == "failed"]
        failures = pd.DataFrame(
            {
                "run_id": pd.Series([r["run_id"] for r in failed], dtype=object),
                "error": pd.Series([r["error"] or "" for r in failed], dtype=object),
                "attempts": np.array([max(1, r["attempts"]) for r in failed], dtype=np.int64),
            }
        )
        status = pd.DataFrame(
            {
                c: [r[c] for r in rows]
                for c in ("run_id", "status", "attempts", "deaths", "error", "elapsed_s", "worker", "started_at")
            }
        )
        attrs = {k: (v if isinstance(v, str | int | float | bool) else json.dumps(v)) for k, v in meta.items()}
        return {
            "design": design,
            "summary": summary,
            "failures": failures.sort_values("run_id").reset_index(drop=True),
            "runs": status,
            "parameters": keys,
            "spec": json.loads(meta["spec_json"]) if "spec_json" in meta else {},
            "attrs": attrs,
            "path": self.path,
        }

    def export_h5(self, path: str | os.PathLike | None = None) -> Path:
        """Write ``sweep.h5`` (format ``abm-sweep`` 1) from the store: temporary name, fsync, rename."""
        out = Path(path) if path is not None else self.path.with_name(EXPORT_NAME)
        t = self.tables()
        meta = self.meta()
        keys = t["parameters"]
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            with h5py.File(tmp, "w") as f:
                attrs = {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "parameters": json.dumps(keys),
                    "exported_from": STORE_NAME,
                    "exported": _now(),
                }
                for k in ("name", "spec_json", "spec_text", "fingerprint", "abm_version", "git_hash", "created"):
                    attrs[k] = str(meta.get(k, ""))
                for k in ("analysis", "design"):
                    attrs[k] = str(meta.get(k, ""))
                f.attrs.update(attrs)
                d = f.create_group("design")
                dz = t["design"]
                d["run_id"] = np.array(list(dz["run_id"]), dtype=object).astype(STR)
                for c in ("point", "replicate", "seed"):
                    d[c] = dz[c].to_numpy(np.int64)
                vals = np.column_stack([dz[k].to_numpy(float) for k in keys]) if keys else np.zeros((len(dz), 0))
                v = d.create_dataset("values", data=vals.reshape(len(dz), len(keys)))
                v.attrs["parameters"] = json.dumps(keys)
                s = f.create_group("summary")
                sz = t["summary"]
                s["run_id"] = np.array(list(sz["run_id"]), dtype=object).astype(STR)
                skip = set(dz.columns) - {"run_id"}
                for c in sz.columns:
                    if c in skip or c == "run_id":
                        continue
                    col = sz[c]
                    if col.dtype == object:
                        s[c] = np.array([str(x) for x in col], dtype=object).astype(STR)
                    else:
                        s[c] = col.to_numpy(np.float64)
                fl = f.create_group("failures")
                fz = t["failures"]
                fl["run_id"] = np.array(list(fz["run_id"]), dtype=object).astype(STR)
                fl["error"] = np.array(list(fz["error"]), dtype=object).astype(STR)
                fl["attempts"] = fz["attempts"].to_numpy(np.int64)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, out)
            _fsync_dir(out.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return out


def _real(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _float(v: Any) -> float:
    if v is None or isinstance(v, str):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _int(v: Any) -> int:
    return -1 if v is None else int(v)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------- the sweep face
def sweep_meta(spec: Any) -> dict[str, Any]:
    """What a sweep's store records about its definition."""
    from abm.provenance import abm_version, git_hash

    return {
        "kind": "sweep",
        "name": spec.name,
        "spec_json": spec.to_json(),
        "spec_text": spec.text,
        "fingerprint": spec.fingerprint(),
        "parameters": list(spec.keys),
        "design": spec.design,
        "analysis": spec.analysis,
        "abm_version": abm_version(),
        "git_hash": git_hash(),
    }


def sweep_records(spec: Any, runs: Sequence[Any]) -> list[RunRecord]:
    keys = list(spec.keys)
    return [
        RunRecord(r.run_id, i, int(r.seed), dict(zip(keys, r.values, strict=True)), r.point, r.replicate)
        for i, r in enumerate(runs)
    ]


def import_legacy(h5_path: Path, store_path: Path, spec: Any, runs: Sequence[Any]) -> RunStore:
    """Build a store from a ``sweep.h5`` written by abm before the store existed (its finished runs are kept, its
    failed ones rerun). A damaged file is refused with a clear message."""
    try:
        with h5py.File(h5_path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise StoreError(f"{h5_path}: not an abm sweep file")
            fp = f.attrs.get("fingerprint")
            fp = fp.decode() if isinstance(fp, bytes) else fp
            s = f["summary"]
            ids = [x.decode() if isinstance(x, bytes) else x for x in s["run_id"][:]]
            cols = {}
            for k in s:
                if k == "run_id":
                    continue
                a = s[k][:]
                if len(a) != len(ids):
                    raise ValueError(f"summary column {k} has {len(a)} rows, run_id {len(ids)}")
                cols[k] = [x.decode() if isinstance(x, bytes) else x.item() if hasattr(x, "item") else x for x in a]
    except StoreError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise StoreError(
            f"{h5_path}: this sweep was written by an older abm (sweep.h5 only) and the file is damaged ({e}); "
            "its finished runs cannot be recovered: start the sweep again in a new --out directory"
        ) from None
    if fp != spec.fingerprint():
        raise StoreError(
            f"{h5_path}: this sweep was started from a different definition (or without/with --quick); resume it "
            "with the same sweep file and options, or use a new --out"
        )
    store = RunStore.create(store_path, {**sweep_meta(spec), "imported_from": EXPORT_NAME}, sweep_records(spec, runs))
    known = {r.run_id for r in runs}
    elapsed = cols.pop("elapsed_s", [math.nan] * len(ids))
    for i, rid in enumerate(ids):
        if rid in known:
            summ = {
                k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in ((k, c[i]) for k, c in cols.items())
            }
            store.mark_running(rid, "legacy")
            store.record_done(rid, summ, elapsed[i])
    return store


def _open_for_reading(p: Path) -> RunStore:
    try:
        return RunStore.open(p)
    except StoreError:
        return RunStore.open(p, readonly=True)


def read_sweep(path: str | os.PathLike) -> dict[str, Any]:
    """Read a sweep directory (its store ``sweep.sqlite``, else its ``sweep.h5``) or either file.

    Returns ``design``, ``summary`` (joined with the design, sorted by run id), ``failures`` as pandas DataFrames,
    plus ``parameters``, ``spec`` (dict), ``attrs`` and ``path``; from a store also ``runs`` (every run's status,
    attempts and deaths). Reading a store while its sweep runs is safe (WAL readers see the last commit).
    """
    p = Path(path)
    if p.is_dir():
        if (p / STORE_NAME).is_file():
            p = p / STORE_NAME
        else:
            p = p / EXPORT_NAME
    if p.suffix == ".sqlite" or p.name == STORE_NAME:
        with _open_for_reading(p) as store:
            return store.tables()
    if not p.exists():
        raise ParameterError(f"{p}: no sweep file (run `abm sweep SWEEP.toml --out DIR` first)")
    return _read_h5(p)


def _strs(a: np.ndarray) -> np.ndarray:
    return np.array([x.decode() if isinstance(x, bytes) else x for x in a], dtype=object)


def _read_h5(p: Path) -> dict[str, Any]:
    import pandas as pd

    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise ParameterError(f"{p}: not a readable sweep file ({e})") from None
    try:
        with f:
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
            lengths = {len(v) for v in cols.values()}
            if len(lengths) > 1:
                raise ParameterError(f"{p}: damaged: summary columns have different lengths {sorted(lengths)}")
            summary = pd.DataFrame(cols)
            fl = f["failures"]
            failures = pd.DataFrame(
                {"run_id": _strs(fl["run_id"][:]), "error": _strs(fl["error"][:]), "attempts": fl["attempts"][:]}
            )
    except ParameterError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise ParameterError(f"{p}: damaged sweep file ({e})") from None
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
