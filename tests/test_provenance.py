"""What a run file records about how it was made (issue 17, provenance): the seed as an unsigned 64-bit integer,
library versions, the overrides, units on every summary value and on event doses and amounts, summary strings read
back as str, and ``abm info`` showing the overrides and the run's real length."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

import abm
from abm.cli import main
from abm.provenance import LIBRARIES, library_versions
from tests.conftest import TINY_SETS

SETS = [*TINY_SETS, "patient.mhc_baseline=0.5"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """``abm run lak_il2 --days 0.25 --seed 3 --set ...``, in-process: a LAK transfer and an IL-2 dose at day 0."""
    out = tmp_path_factory.mktemp("prov") / "run.h5"
    args = ["run", "lak_il2", "--days", "0.25", "--seed", "3", "--out", str(out), "--quiet"]
    assert main([*args, *[a for s in SETS for a in ("--set", s)]]) == 0
    return out


def test_seed_is_an_unsigned_64_bit_integer_attribute(cli_run):
    with h5py.File(cli_run, "r") as f:
        seed = f.attrs["seed"]
        assert isinstance(seed, np.integer) and seed == 3  # an integer, no longer the text "3"
    r = abm.load(cli_run)
    assert r.attrs["seed"] == 3 and isinstance(r.attrs["seed"], int) and r.seed == 3
    assert r.summary["seed"] == 3


@pytest.mark.filterwarnings("ignore::abm.io.IncompleteRunWarning")
@pytest.mark.parametrize("seed", [2**63, 2**64 - 1])
def test_seeds_of_the_whole_unsigned_range_round_trip(seed, tmp_path):
    out = tmp_path / "big.h5"
    abm.run("untreated", seed=seed, days=0.02, out=out, sets=TINY_SETS)
    with h5py.File(out, "r") as f:
        assert f.attrs["seed"].dtype == np.uint64 and int(f.attrs["seed"]) == seed
    assert abm.load(out).seed == seed


def test_library_versions_are_recorded(cli_run):
    with h5py.File(cli_run, "r") as f:
        stored = json.loads(f.attrs["versions"])
    assert stored == library_versions()
    for lib in ("python", "numpy", "numba", "h5py", "scipy"):
        assert stored[lib], lib
    assert stored["numpy"] == np.__version__ and stored["h5py"] == h5py.__version__
    assert set(stored) <= {"python", *LIBRARIES}


def test_overrides_are_recorded_in_order(cli_run):
    r = abm.load(cli_run)
    over = r.attrs["overrides"]
    assert over[: len(SETS)] == SETS
    assert "--days 0.25" in over  # each command-line layer recorded as the user wrote it


def test_no_overrides_is_an_empty_list(tmp_path):
    """A scenario file run as it is records ``overrides == []`` (not a missing or numeric attribute)."""
    small = tmp_path / "small.toml"
    small.write_text(
        '[scenario]\nname = "small"\ninherits = "untreated"\n'
        "[lattice]\nnx = 20\nny = 20\n[init]\ntumour_radius_um = 60\n[run]\ndays = 0.05\n"
    )
    sc = abm.Scenario.load(small)
    assert sc.overrides == []
    out = tmp_path / "plain.h5"
    abm.run(sc, out=out, seed=1)
    assert abm.load(out).attrs["overrides"] == []


def test_every_summary_dataset_has_units(cli_run):
    with h5py.File(cli_run, "r") as f:
        g = f["summary"]
        assert len(g) > 20
        for k in g:
            assert g[k].attrs.get("units", ""), f"/summary/{k} has no units"
            assert g[k].attrs.get("description", ""), f"/summary/{k} has no description"
        assert g["time_to_regression_day"].attrs["units"] == "day"
        assert g["longest_diameter_final_mm"].attrs["units"] == "mm"
        assert g["tumour_cells_final"].attrs["units"] == "cells"
    from abm.reporters import SUMMARY_UNITS

    r = abm.load(cli_run)
    assert set(r.summary_units) == set(r.summary) and set(r.summary) <= set(SUMMARY_UNITS)


def test_summary_units_cover_every_summary_key(cli_run):
    """SUMMARY_UNITS names no key the run summary does not have: a renamed key is caught here."""
    from abm.reporters import SUMMARY_UNITS

    assert set(abm.load(cli_run).summary) == set(SUMMARY_UNITS)


def test_event_doses_and_amounts_say_their_units(cli_run):
    with h5py.File(cli_run, "r") as f:
        ev = f["events"]
        for col in ("dose", "amount"):
            assert ev[col].attrs["units"] and ev[col].attrs["units_column"] in ev, col
        assert ev["time"].attrs["units"] == "min"
    r = abm.load(cli_run)
    doses = r.events_of("dose_given")
    transfers = r.events_of("transfer")
    assert doses and transfers
    for e in doses:
        assert e["drug"] == "il2" and e["unit"] == "IU/kg" and e["amount_unit"] == "pmol"
    for e in transfers:
        assert e["unit"] == "cells" and e["amount_unit"] == "cells" and e["amount"] == e["dose"]


def test_a_cytotoxic_dose_is_counted_in_umol():
    """The amount unit follows the dosed species' units (pM -> pmol, uM -> umol), as the PK counts it."""
    from abm.reporters import TrajectoryReporter
    from abm.therapy.pk import plasma_amount_unit

    rep = TrajectoryReporter("unused.h5", snapshot_every=1)
    rep._amount_units = {"il2": plasma_amount_unit("pM"), "drug": plasma_amount_unit("uM")}  # as begin() sets them
    assert rep._amount_unit({"kind": "dose_given", "drug": "drug"}) == "umol"
    assert rep._amount_unit({"kind": "dose_held", "drug": "il2"}) == "pmol"
    assert rep._amount_unit({"kind": "transfer", "drug": "lak"}) == "cells"
    assert rep._amount_unit({"kind": "toxicity_dlt", "drug": ""}) == ""


def test_summary_strings_read_back_as_str(cli_run):
    r = abm.load(cli_run)
    assert isinstance(r.summary["response"], str) and r.summary["response"] in ("CR", "PR", "SD", "PD")
    with h5py.File(cli_run, "r") as f:
        assert isinstance(f["summary/response"].asstr()[()], str)  # the plain-h5py spelling the docs use
        assert f["summary/response"][()].decode() == r.summary["response"]


def test_info_lists_the_overrides_and_the_real_length(cli_run, capsys):
    assert main(["info", str(cli_run)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "patient.mhc_baseline=0.5" in lines["overrides"] and "lattice.nx=40" in lines["overrides"]
    assert "0.25 days simulated of run.days = 0.25" in lines["length"]
    assert "set by --days" in lines["length"]
    assert "numpy" in lines["versions"]
    assert "tumour_cells_final" in lines and lines["tumour_cells_final"].endswith(" cells")


# ------------------------------------------------------------------------------------------------------ names
def _pyproject() -> dict:
    import tomllib
    from pathlib import Path

    return tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())


def test_the_distribution_name_is_not_the_unrelated_abm_on_the_index():
    """``abm`` on the public package index is another project (abstract modules); ours is ``abm-immuno``, checked
    absent from the index with ``pip index versions``. The import name stays ``abm``."""
    from abm.provenance import DIST_NAME

    project = _pyproject()["project"]
    assert project["name"] == DIST_NAME == "abm-immuno"
    assert all(not dep.startswith("abm[") for extra in project["optional-dependencies"].values() for dep in extra)
    assert "abm-immuno[dist,sweep,xarray,viz,lint]" in project["optional-dependencies"]["test"]
    assert project["scripts"] == {"abm": "abm.cli:entry"}  # main, then a quiet exit (abm.cli.entry)
    assert _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"] == ["abm*"]


def test_no_install_hint_names_the_unrelated_abm():
    """Every install hint the package prints installs an extra of the clone (``python -m pip install -e ".[viz]"``),
    never ``pip install 'abm[viz]'``, which would fetch the unrelated ``abm`` from the index."""
    import re
    from pathlib import Path

    pkg = Path(__file__).resolve().parent.parent / "abm"
    bad = [
        f"{p.relative_to(pkg.parent)}:{i}"
        for p in sorted(pkg.rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"pip install[^\n]*\babm\[", line)
    ]
    assert not bad, bad


def test_abm_version_is_the_projects_version():
    from abm import __version__
    from abm.provenance import abm_version

    assert abm_version() == __version__ == _pyproject()["project"]["version"]


@pytest.mark.slow
def test_an_editable_install_from_the_clone_is_abm_immuno(tmp_path):
    """``python -m pip install -e .`` (no dependencies) into a fresh virtual environment: the distribution is
    abm-immuno, its version the project's, and ``import abm`` finds this tree."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "-e", str(root)], check=True, timeout=600)
    out = subprocess.run(
        [
            str(py),
            "-c",
            "import importlib.metadata as m, importlib.util as u; "
            "print(m.version('abm-immuno')); print(u.find_spec('abm').origin)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        timeout=120,
    ).stdout.split()
    assert out == [_pyproject()["project"]["version"], str(root / "abm" / "__init__.py")]
