"""The ``abm`` command: run every shipped scenario end to end on a tiny lattice, then info and plot on the output;
``abm scenarios``; exit codes (2 for user mistakes, with a message and no traceback; 1 for a failed run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import abm
import abm.io
from abm.cli import main
from abm.scenario import Scenario
from tests.conftest import SHIPPED, TINY_SETS

TINY_ARGS = [a for s in TINY_SETS for a in ("--set", s)]
CLI_DAYS = "2"  # covers LAK transfers (days 0 and 1) and the first doses of every regimen

# The default suite runs four scenarios that between them cover every drug (IL-2, IFN-alpha, 5-FU), every route
# (i.v. bolus, s.c.), adoptive transfer and two- and three-level inheritance; the other four are marked slow.
FAST_CLI = ("untreated", "high_dose_il2", "il2_ifna_5fu", "lak_il2")
CLI_SCENARIOS = [n if n in FAST_CLI else pytest.param(n, marks=pytest.mark.slow) for n in SHIPPED]


def abm_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "abm.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


# ------------------------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("name", CLI_SCENARIOS)
def test_run_info_plot_every_shipped_scenario(name, tmp_path, capsys):
    """In-process (abm.cli.main) so the Numba kernels load once for all of them."""
    out = tmp_path / f"{name}.h5"
    rc = main(["run", name, "--out", str(out), "--days", CLI_DAYS, "--seed", "1", *TINY_ARGS])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert f"wrote {out}" in captured.out and f"scenario {name}, seed 1" in captured.out
    assert out.exists() and not abm.io.find_partials(out)

    run = abm.load(out)
    assert run.complete and run.attrs["scenario_name"] == name
    assert run.shape_xyz == (40, 40, 1)
    assert run.time_min[-1] == float(CLI_DAYS) * 1440.0
    treated = name != "untreated"
    assert (run.summary["doses_given"] > 0) == treated, run.summary["doses_given"]
    if name == "lak_il2":
        assert run.summary["total_transferred_lak"] > 0

    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert f"scenario    {name}" in info
    assert "complete    True" in info
    assert f"doses_given                {run.summary['doses_given']}" in info

    png = tmp_path / f"{name}.png"
    assert main(["plot", str(out), "--out", str(png)]) == 0
    capsys.readouterr()
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_run_with_overwrite_and_default_output_name(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["run", "untreated", "--days", "0.2", "--quiet", *TINY_ARGS]
    assert main(args) == 0
    assert (tmp_path / "untreated.h5").exists()  # default name: SCENARIO.h5 in the current directory
    assert capsys.readouterr().out == ""  # --quiet
    assert main(args) == 2  # exists now
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--seed", "9"]) == 0
    assert str(abm.load(tmp_path / "untreated.h5").attrs["seed"]) == "9"


def test_scenarios_lists_all_eight_with_descriptions():
    r = abm_cli("scenarios")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    listed = {ln.split()[0]: ln.split(None, 1)[1].strip() for ln in lines}
    assert sorted(listed) == sorted(SHIPPED)
    for name, desc in listed.items():
        assert desc == Scenario.load(name).meta.description
        assert "invalid" not in desc


# ------------------------------------------------------------------------------------------------ user mistakes
def assert_usage_error(r: subprocess.CompletedProcess, *fragments: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    assert "error:" in r.stderr
    for f in fragments:
        assert f in r.stderr, (f, r.stderr)


def test_unknown_key_exits_2_naming_key_and_nearest(tmp_path):
    r = abm_cli("run", "untreated", "--out", str(tmp_path / "x.h5"), "--set", "ctl.kil_prob=0.1")
    assert_usage_error(r, "ctl.kil_prob", "did you mean 'ctl.kill_prob'")
    assert not (tmp_path / "x.h5").exists() and not abm.io.find_partials(tmp_path / "x.h5")


def test_bad_value_exits_2_naming_the_range(tmp_path):
    r = abm_cli("run", "untreated", "--out", str(tmp_path / "x.h5"), "--set", "ctl.kill_prob=1.5")
    assert_usage_error(r, "ctl.kill_prob", "[0, 1]")
    assert not (tmp_path / "x.h5").exists()


def test_bad_value_in_scenario_file_exits_2_naming_the_file(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text(
        '[scenario]\nname = "mine"\ninherits = "untreated"\n[[regimen.doses]]\ndrug = "il2"\n'
        'dose = 5\nunit = "MIU/week"\n'
    )
    r = abm_cli("run", str(f), "--out", str(tmp_path / "x.h5"))
    assert_usage_error(r, str(f), "regimen.doses.0.unit", "MIU/week")


def test_missing_scenario_file_exits_2_suggesting_names(tmp_path):
    r = abm_cli("run", "high_dose_il", "--out", str(tmp_path / "x.h5"))
    assert_usage_error(r, "high_dose_il", "not found", "high_dose_il2")


def test_existing_output_without_overwrite_exits_2(tmp_path):
    out = tmp_path / "taken.h5"
    out.write_bytes(b"precious")
    r = abm_cli("run", "untreated", "--out", str(out), "--days", "0.1", *TINY_ARGS)
    assert_usage_error(r, str(out), "--overwrite")
    assert out.read_bytes() == b"precious"


def test_info_and_plot_on_a_missing_file_exit_2(tmp_path, capsys):
    for cmd in ("info", "plot"):
        assert main([cmd, str(tmp_path / "nope.h5")]) == 2
        err = capsys.readouterr().err
        assert "nope.h5" in err and "Traceback" not in err


def test_info_on_a_file_that_is_not_a_trajectory_exits_2(tmp_path, capsys):
    f = tmp_path / "junk.h5"
    f.write_bytes(b"not hdf5 at all")
    assert main(["info", str(f)]) == 2
    assert "junk.h5" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- a failed run
def test_run_failure_exits_1_without_traceback(tmp_path, capsys, monkeypatch):
    from abm.model import Model

    real_step = Model._step_dynamics

    def step(self):
        if self.step_index == 3:
            raise FloatingPointError("non-finite IL-2 field")
        return real_step(self)

    monkeypatch.setattr(Model, "_step_dynamics", step)
    out = tmp_path / "fail.h5"
    rc = main(["run", "untreated", "--out", str(out), "--days", "0.5", "--quiet", *TINY_ARGS])
    err = capsys.readouterr().err
    assert rc == 1
    assert "failed: FloatingPointError: non-finite IL-2 field" in err and "Traceback" not in err
    run = abm.load(out)  # what was computed is kept, marked incomplete
    assert run.complete is False and "failed at step 3" in run.status


def test_missing_optional_package_names_the_extra(monkeypatch, capsys):
    import abm.cli as cli

    def needs_salib(args):
        raise ModuleNotFoundError("No module named 'SALib'", name="SALib")

    monkeypatch.setattr(cli, "cmd_scenarios", needs_salib)
    assert cli.main(["scenarios"]) == 2
    err = capsys.readouterr().err
    assert "optional package 'SALib'" in err and 'python -m pip install -e ".[sweep]"' in err and "Traceback" not in err
    assert "abm[" not in err  # "abm" on the public index is another project


def test_a_missing_plugin_is_an_error(monkeypatch):
    import abm.cli as cli

    monkeypatch.setattr(cli, "PLUGINS", (*cli.PLUGINS, "abm.no_such_plugin"))
    with pytest.raises(ModuleNotFoundError, match="abm.no_such_plugin"):
        cli.build_parser()


def test_a_sigint_during_interpreter_shutdown_prints_no_traceback():
    # the CI failure this guards: a signal sent as `abm run` finished landed in logging's atexit handler
    code = (
        "import atexit, os, signal, sys\n"
        "atexit.register(lambda: os.kill(os.getpid(), signal.SIGINT))\n"
        "from abm.cli import entry\n"
        "sys.exit(entry(['scenarios']))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr and "untreated" in r.stdout, r.stderr
