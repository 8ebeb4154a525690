"""Scenarios: every shipped one loads; inheritance; errors name the file, key and allowed range; --set overrides;
resolved() round-trips through JSON."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from abm.params import ParameterError, Params
from abm.scenario import RunSettings, Scenario, ScenarioMeta, shipped_names
from abm.therapy.regimen import Regimen
from tests.conftest import SHIPPED


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# ------------------------------------------------------------------------------------------------ shipped scenarios
def test_shipped_names_are_the_eight():
    assert sorted(shipped_names()) == sorted(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_scenario_loads(name):
    sc = Scenario.load(name)
    assert sc.name == name
    assert sc.meta.description, f"{name} has no description"
    assert sc.run.days > 0
    assert isinstance(sc.params, Params)
    assert isinstance(sc.regimen, Regimen)
    assert sc.text.strip(), "the scenario text is kept"
    assert Path(sc.source).name == f"{name}.toml"
    treated = name != "untreated"
    assert (sc.make_therapy() is not None) == treated
    assert bool(sc.regimen.doses or sc.regimen.transfers) == treated


def test_shipped_scenarios_load_by_path_and_with_suffix():
    by_name = Scenario.load("ifna")
    by_suffix = Scenario.load("ifna.toml")
    by_path = Scenario.load(Path(by_name.source))
    assert by_name.resolved() == by_suffix.resolved() == by_path.resolved()


# ------------------------------------------------------------------------------------------------------ inheritance
def test_shipped_inheritance_chain_and_list_replacement():
    base = Scenario.load("untreated")
    hd = Scenario.load("high_dose_il2")
    low = Scenario.load("low_dose_iv_il2")  # inherits high_dose_il2, replaces its doses list
    lak = Scenario.load("lak_il2")  # inherits high_dose_il2 -> untreated
    # everything not overridden comes down the chain unchanged
    assert hd.params == base.params
    assert lak.params == base.params and lak.run == base.run
    # the child's list replaces the parent's (one block of 72,000 IU/kg, not the parent's block plus it)
    assert [d.dose for d in hd.regimen.doses] == [720000.0]
    assert [d.dose for d in low.regimen.doses] == [72000.0]
    # a grandchild keeps the parent's doses and adds its own transfers
    assert lak.regimen.doses == hd.regimen.doses
    assert [t.cells_per_infusion for t in lak.regimen.transfers] == [2e10, 2e10, 2e10]
    assert not hd.regimen.transfers
    # the description is the child's own, not inherited
    assert lak.meta.description != hd.meta.description


@pytest.fixture
def family(tmp_path):
    """grandparent (two dose blocks, ctl tuned) <- parent (one block, seed) <- child (one ctl key, in a subdir)."""
    write(
        tmp_path / "grandparent.toml",
        """
        [scenario]
        name = "grandparent"
        description = "the root"
        inherits = "untreated"
        [run]
        days = 10
        seed = 11
        [ctl]
        kill_prob = 0.2
        max_kills = 7
        [[regimen.doses]]
        drug = "il2"
        dose = 1000
        unit = "IU/kg"
        [[regimen.doses]]
        drug = "ifna"
        route = "sc"
        dose = 3
        unit = "MIU/m2"
        weeks = [1]
        weekdays = [1, 3]
    """,
    )
    write(
        tmp_path / "parent.toml",
        """
        [scenario]
        name = "parent"
        inherits = "grandparent.toml"
        [run]
        seed = 22
        [[regimen.doses]]
        drug = "ifna"
        route = "sc"
        dose = 9
        unit = "MIU/m2"
        weeks = [2]
        weekdays = [5]
    """,
    )
    (tmp_path / "sub").mkdir()
    write(
        tmp_path / "sub" / "child.toml",
        """
        [scenario]
        name = "child"
        inherits = "../parent"
        [ctl]
        max_kills = 3
    """,
    )
    return tmp_path


def test_child_overrides_parent_keys_and_replaces_lists(family):
    gp = Scenario.load(family / "grandparent.toml")
    p = Scenario.load(family / "parent.toml")
    c = Scenario.load(family / "sub" / "child.toml")
    untreated = Scenario.load("untreated")
    assert len(gp.regimen.doses) == 2
    # list replaced whole: one block, the parent's
    assert [(d.drug, d.dose, d.weeks, d.weekdays) for d in p.regimen.doses] == [("ifna", 9.0, [2], [5])]
    assert c.regimen.doses == p.regimen.doses
    # scalar keys: the nearest definition wins, tables merge key by key
    assert (gp.run.seed, p.run.seed, c.run.seed) == (11, 22, 22)
    assert gp.run.days == p.run.days == c.run.days == 10
    assert (gp.params.ctl.max_kills, p.params.ctl.max_kills, c.params.ctl.max_kills) == (7, 7, 3)
    assert gp.params.ctl.kill_prob == p.params.ctl.kill_prob == c.params.ctl.kill_prob == 0.2
    # keys set nowhere in the family come from the shipped root
    assert c.params.lattice == untreated.params.lattice
    assert c.params.ctl.lifespan_days == untreated.params.ctl.lifespan_days
    assert c.name == "child"
    assert "grandparent" in c.text and "max_kills = 3" in c.text


def test_inheritance_loop_is_an_error_naming_the_files(tmp_path):
    write(tmp_path / "a.toml", '[scenario]\nname = "a"\ninherits = "b.toml"\n')
    write(tmp_path / "b.toml", '[scenario]\nname = "b"\ninherits = "c"\n')
    write(tmp_path / "c.toml", '[scenario]\nname = "c"\ninherits = "a"\n')
    with pytest.raises(ParameterError) as e:
        Scenario.load(tmp_path / "a.toml")
    msg = str(e.value)
    assert "loop" in msg
    for f in ("a.toml", "b.toml", "c.toml"):
        assert f in msg, msg


def test_self_inheritance_is_a_loop(tmp_path):
    write(tmp_path / "me.toml", '[scenario]\nname = "me"\ninherits = "me.toml"\n')
    with pytest.raises(ParameterError, match=r"loop.*me\.toml"):
        Scenario.load(tmp_path / "me.toml")


def test_missing_parent_names_the_child_file_and_key(tmp_path):
    f = write(tmp_path / "orphan.toml", '[scenario]\nname = "o"\ninherits = "high_dose_il3"\n')
    with pytest.raises(ParameterError) as e:
        Scenario.load(f)
    msg = str(e.value)
    assert str(f) in msg and "scenario.inherits" in msg and "high_dose_il3" in msg
    assert "high_dose_il2" in msg  # the near name is suggested


# ----------------------------------------------------------------------------------------------------------- errors
def load_error(tmp_path: Path, body: str) -> str:
    f = write(tmp_path / "bad.toml", '[scenario]\nname = "bad"\ninherits = "untreated"\n' + textwrap.dedent(body))
    with pytest.raises(ParameterError) as e:
        Scenario.load(f)
    msg = str(e.value)
    assert str(f) in msg, f"the message does not name the file: {msg}"
    return msg


def test_unknown_parameter_key_names_file_key_and_nearest(tmp_path):
    msg = load_error(tmp_path, "[ctl]\nkil_prob = 0.1\n")
    assert "ctl.kil_prob" in msg
    assert "did you mean 'ctl.kill_prob'" in msg


def test_unknown_table_names_file_and_nearest(tmp_path):
    msg = load_error(tmp_path, "[ctll]\nkill_prob = 0.1\n")
    assert "'ctll'" in msg and "'ctl'" in msg


def test_unknown_run_key_names_nearest(tmp_path):
    msg = load_error(tmp_path, "[run]\ndayz = 3\n")
    assert "run.dayz" in msg
    assert re.search(r"did you mean '(run\.)?days'", msg), msg


def test_unknown_regimen_table_key_names_nearest(tmp_path):
    msg = load_error(tmp_path, '[regimen]\ndescriptio = "x"\n')
    assert "regimen.descriptio" in msg
    assert re.search(r"did you mean '(regimen\.)?description'", msg), msg


def test_unknown_dose_block_key_is_named(tmp_path):
    msg = load_error(tmp_path, '[[regimen.doses]]\ndrug = "il2"\ndose = 1\nunit = "IU/kg"\ndoze = 2\n')
    assert re.search(r"regimen\.doses(\.0|\[0\])\.doze", msg) and "unknown key" in msg


def test_unknown_dose_block_key_names_nearest(tmp_path):
    msg = load_error(tmp_path, '[[regimen.doses]]\ndrug = "il2"\ndose = 1\nunit = "IU/kg"\ndoze = 2\n')
    assert re.search(r"did you mean '(regimen\.doses\.0\.)?dose'", msg), msg


def test_value_out_of_range_names_the_range(tmp_path):
    msg = load_error(tmp_path, "[ctl]\nkill_prob = 1.5\n")
    assert "ctl.kill_prob" in msg and "1.5" in msg
    assert "[0, 1]" in msg


def test_run_value_out_of_range_names_the_range(tmp_path):
    msg = load_error(tmp_path, "[run]\ndays = -2\n")
    assert "run.days" in msg and "(0, 3650]" in msg


def test_wrong_type_is_named(tmp_path):
    msg = load_error(tmp_path, '[ctl]\nkill_prob = "often"\n')
    assert "ctl.kill_prob" in msg and "wrong type" in msg and "often" in msg


def test_bad_dose_unit_lists_the_allowed_units(tmp_path):
    msg = load_error(tmp_path, '[[regimen.doses]]\ndrug = "il2"\ndose = 1\nunit = "furlongs"\n')
    assert re.search(r"regimen\.doses(\.0|\[0\])\.unit", msg) and "furlongs" in msg
    assert "iu/kg" in msg.lower() and "miu/m2" in msg.lower()


def test_bad_drug_lists_the_allowed_drugs(tmp_path):
    msg = load_error(tmp_path, '[[regimen.doses]]\ndrug = "aspirin"\ndose = 1\nunit = "IU/kg"\n')
    assert re.search(r"regimen\.doses(\.0|\[0\])\.drug", msg) and "aspirin" in msg
    for d in ("il2", "ifna", "drug"):
        assert f"'{d}'" in msg


def test_toml_syntax_error_names_the_file(tmp_path):
    f = write(tmp_path / "broken.toml", "[ctl\nkill_prob = 0.1\n")
    with pytest.raises(ParameterError, match="broken.toml"):
        Scenario.load(f)


def test_missing_scenario_file_names_it_and_suggests_near_names():
    with pytest.raises(ParameterError) as e:
        Scenario.load("high_dos_il2")
    msg = str(e.value)
    assert "high_dos_il2" in msg and "not found" in msg
    assert "Did you mean high_dose_il2" in msg


def test_missing_scenario_path_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "x.toml"
    with pytest.raises(ParameterError, match="not found") as e:
        Scenario.load(missing)
    assert str(missing) in str(e.value)


# ------------------------------------------------------------------------------------------------- --set overrides
def test_set_overrides_params_run_and_regimen():
    base = Scenario.load("high_dose_il2")
    sc = Scenario.load(
        "high_dose_il2",
        sets=[
            "ctl.kill_prob=0.1",
            "species.il2.decay_per_s=5e-5",
            "run.days=2",
            "run.seed=5",
            "regimen.dose_scale.il2=0.1",
            "regimen.doses.0.dose=72000",
            "regimen.doses.0.unit=MIU/m2",
            "scenario.description=edited",
        ],
    )
    assert sc.params.ctl.kill_prob == 0.1
    assert sc.params.species["il2"].decay_per_s == 5e-5
    assert (sc.run.days, sc.run.seed) == (2.0, 5)
    assert sc.regimen.scale("il2") == 0.1
    d = sc.regimen.doses[0]
    assert (d.dose, d.unit) == (72000.0, "MIU/m2")
    b = base.regimen.doses[0]
    assert (d.every_h, d.count, d.cycles, d.rest_days) == (b.every_h, b.count, b.cycles, b.rest_days)  # item kept
    assert sc.meta.description == "edited"
    # nothing else changed, and the original is untouched
    undo = [
        f"ctl.kill_prob={base.params.ctl.kill_prob!r}",
        f"species.il2.decay_per_s={base.params.species['il2'].decay_per_s!r}",
    ]
    assert sc.params.replace(*undo) == base.params
    assert sc.run.snapshot_every_min == base.run.snapshot_every_min
    assert base.params.ctl.kill_prob != 0.1 and b.dose == 720000.0 and base.regimen.scale("il2") == 1.0


def test_with_overrides_equals_load_with_sets():
    sets = ["lattice.nx=40", "run.days=3", "regimen.doses.0.count=3"]
    a = Scenario.load("lak_il2", sets=sets)
    b = Scenario.load("lak_il2").with_overrides(sets)
    assert a.resolved() == b.resolved()
    assert a.params.lattice.nx == 40 and a.run.days == 3 and a.regimen.doses[0].count == 3


def test_set_unknown_key_names_the_set_and_nearest():
    with pytest.raises(ParameterError) as e:
        Scenario.load("untreated", sets=["ctl.kil_prob=0.1"])
    msg = str(e.value)
    assert "--set ctl.kil_prob=0.1" in msg and "did you mean 'ctl.kill_prob'" in msg


def test_set_out_of_range_names_the_range():
    with pytest.raises(ParameterError) as e:
        Scenario.load("untreated", sets=["ctl.kill_prob=2"])
    msg = str(e.value)
    assert "--set ctl.kill_prob=2" in msg and "[0, 1]" in msg


def test_set_bad_regimen_value_is_named():
    with pytest.raises(ParameterError) as e:
        Scenario.load("high_dose_il2", sets=["regimen.doses.0.route=oral"])
    msg = str(e.value)
    assert re.search(r"regimen\.doses(\.0|\[0\])\.route", msg) and "oral" in msg and "'sc'" in msg


def test_set_without_equals_is_an_error():
    with pytest.raises(ParameterError, match="key.path=value"):
        Scenario.load("untreated", sets=["ctl.kill_prob"])


def test_set_list_index_out_of_range_names_the_set():
    with pytest.raises(ParameterError) as e:
        Scenario.load("high_dose_il2", sets=["regimen.doses.5.dose=1"])
    msg = str(e.value)
    assert "index 5" in msg and "1 items" in msg
    assert "--set regimen.doses.5.dose=1" in msg


def test_set_list_index_out_of_range_is_an_error():
    with pytest.raises(ParameterError, match=r"index 5 out of range \(the list has 1 items\)"):
        Scenario.load("high_dose_il2", sets=["regimen.doses.5.dose=1"])


# ---------------------------------------------------------------------------------------------------- resolved()
@pytest.mark.parametrize("name", SHIPPED)
def test_resolved_round_trips_through_json(name):
    sc = Scenario.load(name, sets=["run.seed=3", "ctl.kill_prob=0.25"])
    r = sc.resolved()
    back = json.loads(json.dumps(r))
    assert back == r
    assert set(back) == {"scenario", "run", "regimen", "params"}
    assert Params.model_validate(back["params"]) == sc.params
    assert Regimen.model_validate(back["regimen"]) == sc.regimen
    assert RunSettings.model_validate(back["run"]) == sc.run
    assert ScenarioMeta.model_validate(back["scenario"]) == sc.meta
    # and a Scenario rebuilt from it is the same scenario
    again = Scenario.from_dict(
        {**back["params"], "scenario": back["scenario"], "run": back["run"], "regimen": back["regimen"]}
    )
    assert again.resolved() == r
    assert Params.from_json(sc.params.to_json()) == sc.params


# --------------------------------------------------------------------------------------------- typed overrides
def test_typed_values_are_taken_as_they_are():
    text = 'a "quoted" description = with = signs'
    sc = Scenario.load(
        "untreated", values={"ctl.kill_prob": 0.123456789123, "scenario.description": text, "run.seed": 2**64 - 1}
    )
    assert sc.params.ctl.kill_prob == 0.123456789123
    assert sc.meta.description == text
    assert sc.run.seed == 2**64 - 1
    assert sc.overrides == ["ctl.kill_prob=0.123456789123", f"scenario.description={text!r}", f"run.seed={2**64 - 1}"]


def test_value_errors_name_the_override_that_set_the_key():
    with pytest.raises(ParameterError) as e:
        Scenario.load("untreated", values={"ctl__kill_prob": 2})
    assert str(e.value).startswith("ctl.kill_prob=2: key 'ctl.kill_prob': value out of range")


def test_one_error_per_problem_each_naming_its_source(tmp_path):
    f = write(tmp_path / "two.toml", '[scenario]\nname = "two"\ninherits = "untreated"\n[ctl]\nkill_prob = 3\n')
    with pytest.raises(ParameterError) as e:
        Scenario.load(f, sets=["nk.kill_prob=-1"])
    lines = str(e.value).splitlines()
    assert any(line.startswith(f"{f}: key 'ctl.kill_prob'") for line in lines), lines
    assert any(line.startswith("--set nk.kill_prob=-1: key 'nk.kill_prob'") for line in lines), lines


def test_a_new_drug_is_data(tmp_path):
    """A second cytotoxic drug given by a TOML block (a species to diffuse in, a PK model, a dose block)."""
    f = write(
        tmp_path / "cis.toml",
        """
        [scenario]
        name = "cis"
        inherits = "untreated"
        [lattice]
        nx = 30
        ny = 30
        [species.cisplatin]
        units = "uM"
        diffusion_um2_per_s = 200.0
        decay_per_s = 1e-4
        vessel_permeability_per_min = 0.5
        [pk.cisplatin]
        molar_mass_g_per_mol = 300.05
        volume_l = 20.0
        half_lives_min = [20.0, 1440.0]
        phase_fractions = [0.8]
        [[regimen.doses]]
        drug = "cisplatin"
        route = "iv"
        dose = 100
        unit = "mg/m2"
        duration_min = 60
        """,
    )
    from abm import Model

    sc = Scenario.load(f)
    m = Model(sc, seed=1)
    m.advance(12)
    row = m.species.index("cisplatin")
    assert m.plasma[row] > 0 and m.state.conc[row].max() > 0
    assert [e["drug"] for e in m.events if e["kind"] == "dose_given"] == ["cisplatin"]
    with pytest.raises(ParameterError, match=r"key 'regimen\.doses\.0': unit 'IU/kg' is not valid for drug"):
        Scenario.load(f, sets=["regimen.doses.0.unit=IU/kg"])
    with pytest.raises(ParameterError, match=r"route 'sc' is not available for drug 'cisplatin'"):
        Scenario.load(f, sets=["regimen.doses.0.route=sc", "regimen.doses.0.duration_min=0"])
