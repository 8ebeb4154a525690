"""Golden trajectories: short runs of every shipped scenario, fingerprinted bit for bit.

A refactor that claims not to change behaviour must reproduce these fingerprints exactly (tests/test_golden.py).
A change that *does* change behaviour (a new rule, a recalibration) regenerates them on purpose, in its own commit,
saying why::

    python -m tests.golden --update        # rewrite tests/golden/golden.json
    python -m tests.golden                 # compare and list what differs

Each case runs through :func:`abm.run` with an HDF5 output, then hashes (SHA-256) every per-step observable, the
final cell arrays, fields and occupancy, the event list, the summary and every dataset of the written file (not
the timestamps, versions or git hash in its attributes).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

GOLDEN_FILE = Path(__file__).resolve().parent / "golden" / "golden.json"

SMALL = [
    "lattice.nx=48",
    "lattice.ny=48",
    "init.tumour_radius_um=160",
    "run.snapshot_every_min=1440",
    "init.ctl_cells=10",
    "init.nk_cells=10",
    "init.immune_within_um=100",
    "patient.antigenicity=4",
]

# (case name, scenario, overrides, seed, days): every shipped scenario on a small 2D lattice, long enough for its
# schedule to act (5-FU starts in week 5), plus a 3D and a periodic case.
CASES: list[tuple[str, str, list[str], int, float]] = [
    ("untreated", "untreated", SMALL, 3, 10.0),
    ("high_dose_il2", "high_dose_il2", SMALL, 3, 10.0),
    ("low_dose_iv_il2", "low_dose_iv_il2", SMALL, 3, 10.0),
    ("low_dose_sc_il2", "low_dose_sc_il2", SMALL, 3, 10.0),
    ("ifna", "ifna", SMALL, 3, 10.0),
    ("il2_ifna", "il2_ifna", SMALL, 3, 10.0),
    ("il2_ifna_5fu", "il2_ifna_5fu", SMALL, 3, 31.0),
    ("lak_il2", "lak_il2", SMALL, 3, 6.0),
    ("ifna_5fu", "il2_ifna_5fu", SMALL + ["regimen.dose_scale.il2=0"], 4, 31.0),
    (
        "untreated_3d",
        "untreated",
        [
            "lattice.nx=20",
            "lattice.ny=20",
            "lattice.nz=20",
            "init.tumour_radius_um=80",
            "run.snapshot_every_min=720",
            "init.ctl_cells=30",
            "init.nk_cells=20",
        ],
        5,
        2.0,
    ),
    (
        "high_dose_periodic",
        "high_dose_il2",
        SMALL + ['lattice.boundary="periodic"', "init.nk_cells=40", "init.ctl_cells=40"],
        9,
        4.0,
    ),
]

_SKIP_ATTRS = {"created", "finished", "git_hash", "abm_version", "versions", "provenance"}


def _h(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:24]


def _arr(a) -> str:
    a = np.ascontiguousarray(np.asarray(a))
    return _h(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())


def _plain(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    if isinstance(v, float):
        return repr(v)
    return v


def _file_fingerprint(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            if name.startswith(("parameters/", "integrity/")):
                return  # the resolved JSON names the scenario source path; the manifest holds timestamps
            v = obj[()]
            if isinstance(v, bytes):
                v = v.decode()
            if isinstance(v, str):
                out[name] = _h(v.encode())
            elif isinstance(v, np.ndarray) and v.dtype.kind == "O":
                out[name] = _h(repr([x.decode() if isinstance(x, bytes) else x for x in v.tolist()]).encode())
            else:
                out[name] = _arr(v)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
        for k, v in sorted(f.attrs.items()):
            if k not in _SKIP_ATTRS and k != "scenario_source":
                out[f"@{k}"] = str(v)
    return out


def fingerprint(case: tuple[str, str, list[str], int, float]) -> dict[str, object]:
    import abm

    name, scenario, sets, seed, days = case
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / f"{name}.h5"
        res = abm.run(scenario, sets=list(sets), seed=seed, days=days, out=out)
        m = res.model
        s = m.state
        n = s.n_cells
        fp: dict[str, object] = {
            "observables": {k: _arr(np.asarray(v, dtype=np.float64)) for k, v in sorted(res.observables.items())},
            "cells": {name: _arr(np.asarray(getattr(s.cells, name))[:n]) for name in s.cells._fields if name != "n"},
            "occupancy": _arr(s.occupancy),
            "conc": _arr(s.conc),
            "events": _h(
                repr(
                    [
                        (e["kind"], e["step"], repr(e["time_min"]), e.get("drug"), repr(e.get("amount")))
                        for e in res.events
                    ]
                ).encode()
            ),
            "summary": {k: _plain(v) for k, v in sorted(res.summary.items())},
            "file": _file_fingerprint(res.path),
            "readable": {
                "n_cells": n,
                "n_tumour_final": float(res.observables["n_tumour"][-1]),
                "n_ctl_max": float(np.max(res.observables["n_ctl"])),
            },
        }
    return fp


def compare(expected: dict, got: dict, prefix: str = "") -> list[str]:
    """Paths at which two fingerprints differ (missing keys included)."""
    diffs = []
    for k in sorted(set(expected) | set(got)):
        a, b = expected.get(k, "<missing>"), got.get(k, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += compare(a, b, f"{prefix}{k}.")
        elif a != b:
            diffs.append(f"{prefix}{k}: expected {a!r}, got {b!r}")
    return diffs


def load_golden() -> dict[str, dict]:
    return json.loads(GOLDEN_FILE.read_text())


def main(argv: list[str]) -> int:
    update = "--update" in argv
    names = [a for a in argv if not a.startswith("--")]
    cases = [c for c in CASES if not names or c[0] in names]
    golden = load_golden() if GOLDEN_FILE.exists() else {}
    bad = 0
    for case in cases:
        fp = fingerprint(case)
        if update:
            golden[case[0]] = fp
            print(f"{case[0]}: recorded ({fp['readable']})")
            continue
        diffs = compare(golden.get(case[0], {}), fp)
        bad += bool(diffs)
        print(f"{case[0]}: {'OK' if not diffs else f'{len(diffs)} differences'}")
        for d in diffs[:20]:
            print("   ", d)
    if update:
        GOLDEN_FILE.parent.mkdir(exist_ok=True)
        GOLDEN_FILE.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
