"""The run store (abm.sweep.store): schema and transitions, crash safety under SIGKILL at random instants, the
atomic export, reading legacy sweep.h5 directories, and refusing what is not a store."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

import abm
from abm.sweep import RunRecord, RunStore, StoreError, SweepError, expand, read_sweep, run_sweep
from abm.sweep.store import EXPORT_NAME, STORE_NAME, sweep_meta, sweep_records

sys.path.insert(0, str(Path(__file__).parent))
from test_sweep import tiny_spec  # noqa: E402

REPO = str(Path(abm.__file__).resolve().parents[1])
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([REPO, str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
}


def records(n: int) -> list[RunRecord]:
    return [RunRecord(f"r{i:03d}", i, 1000 + i, {"dose": 0.1 * i}, point=i // 2, replicate=i % 2) for i in range(n)]


def summary_of(i: int) -> dict:
    return {"best_response": ["CR", "PR", "SD", "PD"][i % 4], "auc": i / 3, "n": i, "dlt": bool(i % 2), "ttp": None}


def test_schema_and_transitions(tmp_path):
    path = tmp_path / STORE_NAME
    store = RunStore.create(path, {"kind": "trial", "parameters": ["dose"], "fingerprint": "f"}, records(4))
    assert store.meta()["kind"] == "trial" and store.meta()["schema_version"] == 1
    assert store.counts() == {"pending": 4, "running": 0, "done": 0, "failed": 0}
    cols = [r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(runs)")]
    assert cols[:6] == ["run_id", "ordinal", "point", "replicate", "seed", "design"]
    assert {"status", "attempts", "deaths", "error", "elapsed_s", "summary", "worker"} <= set(cols)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    store.mark_running("r000", "host:1")
    store.record_done("r000", summary_of(0), 1.5)
    store.mark_running("r001", "host:2")
    store.record_death("r001", "worker died", retry=True)
    store.mark_running("r001", "host:3")
    store.record_failed("r001", "ValueError: bad")
    store.mark_running("r002", "host:4")
    assert store.counts() == {"pending": 1, "running": 1, "done": 1, "failed": 1}
    assert store.reset_running() == 1  # a dead driver's run in flight: pending again, not charged
    r0, r1, r2 = store.row("r000"), store.row("r001"), store.row("r002")
    assert r0["status"] == "done" and r0["summary"] == summary_of(0) and r0["attempts"] == 1
    assert r1["status"] == "failed" and r1["attempts"] == 2 and r1["deaths"] == 1 and r1["error"] == "ValueError: bad"
    assert r2["status"] == "pending" and r2["deaths"] == 0
    with pytest.raises(sqlite3.IntegrityError):  # the status is checked by the schema itself
        store._change("UPDATE runs SET status = 'finished' WHERE run_id = ?", ("r003",), "r003")
    with pytest.raises(KeyError):
        store.record_done("nope", {}, 0.0)
    store.check()
    store.close()


def test_creation_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / STORE_NAME

    def boom(*a, **k):
        raise RuntimeError("killed mid-creation")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(RuntimeError):
        RunStore.create(path, {"parameters": []}, records(3))
    monkeypatch.undo()
    assert not path.exists()  # never a half-made store under the real name
    RunStore.create(path, {"parameters": []}, records(3)).close()
    assert [p.name for p in tmp_path.iterdir()] == [STORE_NAME]


def test_tables_keep_read_sweeps_shape(tmp_path):
    spec = tiny_spec()
    runs = expand(spec)
    store = RunStore.create(tmp_path / STORE_NAME, sweep_meta(spec), sweep_records(spec, runs))
    for i, r in enumerate(runs[:4]):
        store.mark_running(r.run_id, "w")
        store.record_done(r.run_id, summary_of(i), 0.5)
    store.mark_running(runs[4].run_id, "w")
    store.record_failed(runs[4].run_id, "boom")
    t = store.tables()
    assert list(t["design"].columns) == ["run_id", "point", "replicate", "seed", "regimen.dose_scale.il2"]
    s = t["summary"]
    assert list(s["run_id"]) == [r.run_id for r in runs[:4]]
    assert s["best_response"].dtype == object and list(s["best_response"]) == ["CR", "PR", "SD", "PD"]
    assert s["auc"].dtype == np.float64 and s["dlt"].dtype == np.float64 and math.isnan(s["ttp"].iloc[0])
    assert list(t["failures"]["run_id"]) == [runs[4].run_id] and t["failures"]["attempts"].iloc[0] == 1
    assert t["spec"]["name"] == "tiny" and t["parameters"] == ["regimen.dose_scale.il2"]
    assert list(t["runs"]["status"]) == ["done"] * 4 + ["failed", "pending"]

    # the export reads back as the same tables (the old sweep.h5 layout)
    exported = store.export_h5()
    store.close()
    h = read_sweep(exported)
    for k in ("design", "summary", "failures"):
        pd.testing.assert_frame_equal(h[k], t[k], check_dtype=False)
    assert h["attrs"]["format"] == "abm-sweep" and h["attrs"]["exported_from"] == STORE_NAME
    assert not list(tmp_path.glob(".*tmp"))


WRITER = textwrap.dedent("""
    import sys, time
    from abm.sweep.store import RunStore
    from test_store import summary_of
    store = RunStore.open(sys.argv[1])
    print("OPEN", flush=True)
    for rid in store.run_ids(["pending", "failed"]):
        i = int(rid[1:])
        store.mark_running(rid, "writer")
        if i % 7 == 3:
            store.record_failed(rid, "x" * 5000)
        else:
            store.record_done(rid, {**summary_of(i), "blob": "y" * 20000}, 0.1)
""")


@pytest.mark.parametrize("kills", [4])
def test_sigkill_at_random_instants_leaves_a_store_that_opens_and_resumes(tmp_path, kills):
    """A writer recording results as fast as it can, SIGKILLed at random instants: every kill leaves a store that
    passes SQLite's integrity check, every recorded row is whole, and resuming loses nothing."""
    path = tmp_path / STORE_NAME
    n = 150
    RunStore.create(path, {"parameters": ["dose"]}, records(n)).close()
    rng = random.Random(7)
    seen_done = 0
    for _ in range(kills):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, env=ENV, text=True)
        assert p.stdout.readline().strip() == "OPEN"
        time.sleep(rng.uniform(0.0, 0.15))
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
        with RunStore.open(path) as store:
            store.check()
            rows = store.rows()
            done = [r for r in rows if r["status"] == "done"]
            assert len(done) >= seen_done  # nothing committed is ever lost
            seen_done = len(done)
            for r in done:
                i = int(r["run_id"][1:])
                assert r["summary"] == {**summary_of(i), "blob": "y" * 20000}
            for r in rows:
                if r["status"] == "failed":
                    assert r["error"] == "x" * 5000
            store.reset_running()
    # the last writer finishes the rest (failed rows are rerun, as a resumed sweep does)
    subprocess.run([sys.executable, "-c", WRITER, str(path)], check=True, env=ENV, capture_output=True)
    with RunStore.open(path) as store:
        c = store.counts()
        assert c["running"] == 0 and c["pending"] == 0 and c["done"] + c["failed"] == n
        assert c["failed"] == sum(1 for i in range(n) if i % 7 == 3)
    print(f"store SIGKILLed {kills} times mid-write: 0 damaged, 0 lost ({seen_done} done before the last writer)")


def test_readers_see_the_last_commit_while_the_driver_writes(tmp_path):
    spec = tiny_spec()
    runs = expand(spec)
    store = RunStore.create(tmp_path / STORE_NAME, sweep_meta(spec), sweep_records(spec, runs))
    store.mark_running(runs[0].run_id, "w")
    store.record_done(runs[0].run_id, summary_of(0), 0.1)
    store._db.execute("BEGIN IMMEDIATE")  # the driver in the middle of its next transaction
    store._db.execute("UPDATE runs SET status = 'running' WHERE run_id = ?", (runs[1].run_id,))
    data = read_sweep(tmp_path)
    assert list(data["summary"]["run_id"]) == [runs[0].run_id] and (data["runs"]["status"] == "running").sum() == 0
    store._db.execute("ROLLBACK")
    store.close()


def test_not_a_store_and_newer_stores_are_refused(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(StoreError, match="not a readable abm run store"):
        RunStore.open(junk)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).executescript("CREATE TABLE meta (key TEXT, value TEXT); CREATE TABLE runs (x);")
    with pytest.raises(StoreError, match="not an abm run store"):
        RunStore.open(other)
    newer = tmp_path / "newer.sqlite"
    RunStore.create(newer, {"parameters": []}, records(1)).close()
    db = sqlite3.connect(newer)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer abm"):
        RunStore.open(newer)


# ------------------------------------------------------------------------------------------ legacy directories
def fake_run(run):
    """A fast stand-in for a simulation (deterministic in the run's seed and parameters)."""
    return {"run_id": run.run_id, "ok": True, "elapsed_s": 0.0, "summary": {"score": run.seed % 997 + run.values[0]}}


def _legacy_dir(tmp_path: Path, n_done: int) -> Path:
    """A sweep directory as abm wrote it before the store: only sweep.h5."""
    out = tmp_path / "legacy"
    out.mkdir()
    spec = tiny_spec()
    runs = expand(spec)
    store = RunStore.create(out / STORE_NAME, sweep_meta(spec), sweep_records(spec, runs))
    for r in runs[:n_done]:
        store.mark_running(r.run_id, "w")
        store.record_done(r.run_id, fake_run(r)["summary"], 0.0)
    store.export_h5()
    store.close()
    (out / STORE_NAME).unlink()
    return out


def test_legacy_directory_reads_and_resumes(tmp_path):
    out = _legacy_dir(tmp_path, 3)
    assert len(read_sweep(out)["summary"]) == 3  # read from sweep.h5
    with pytest.raises(SweepError, match="--resume"):
        run_sweep(tiny_spec(), out, workers=0, progress=False, run_fn=fake_run)
    res = run_sweep(tiny_spec(), out, workers=0, resume=True, progress=False, run_fn=fake_run)
    assert (res.n_done, res.n_skipped) == (3, 3) and (out / STORE_NAME).exists()
    data = read_sweep(out)
    assert data["attrs"]["imported_from"] == EXPORT_NAME
    ref = {r.run_id: fake_run(r)["summary"]["score"] for r in expand(tiny_spec())}
    assert dict(zip(data["summary"]["run_id"], data["summary"]["score"])) == pytest.approx(ref)


def test_damaged_legacy_directory_is_refused_clearly(tmp_path):
    out = _legacy_dir(tmp_path, 3)
    with h5py.File(out / EXPORT_NAME, "r+") as f:  # what a driver killed mid-append left (issue 16)
        short = f["summary/score"][:2]
        del f["summary/score"]
        f["summary/score"] = short
    with pytest.raises(SweepError, match=r"older abm.*damaged.*summary column score has 2 rows.*new --out"):
        run_sweep(tiny_spec(), out, workers=0, resume=True, progress=False, run_fn=fake_run)
    with pytest.raises(abm.params.ParameterError, match="damaged: summary columns have different lengths"):
        read_sweep(out)
    assert not (out / STORE_NAME).exists()


def test_a_second_driver_on_one_directory_is_refused(tmp_path):
    from abm.io import FileLock

    out = tmp_path / "s"
    out.mkdir()
    with FileLock(out / "sweep.lock", out, what="an abm sweep driver"):
        with pytest.raises(SweepError, match=rf"another writer holds it: an abm sweep driver \(pid {os.getpid()}"):
            run_sweep(tiny_spec(), out, workers=0, progress=False, run_fn=fake_run)
    res = run_sweep(tiny_spec(), out, workers=0, progress=False, run_fn=fake_run)
    assert res.n_done == 6 and not (out / "sweep.lock").exists()
    assert json.loads(json.dumps(res.deaths)) == {}
