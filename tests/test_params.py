"""The parameter tree: defaults, TOML and key=value overrides, and every documented error case."""

import json

import pytest

from abm.params import ParameterError, Params, parse_set


def test_defaults_validate_and_round_trip_json():
    p = Params()
    q = Params.from_json(p.to_json())
    assert q == p
    assert json.loads(q.to_json()) == json.loads(p.to_json())
    assert p.species_names[:3] == ["il2", "ifna", "drug"]


def test_round_trip_keeps_every_override():
    p = Params.from_overrides(sets=["ctl.kill_prob=0.123456789", "lattice.nz=7", 'species.cxcl9.units="nM"'])
    q = Params.from_json(p.to_json())
    assert q == p and q.ctl.kill_prob == 0.123456789 and q.species["cxcl9"].units == "nM"
    assert q.species_names == ["il2", "ifna", "drug", "cxcl10", "cxcl9"]


def test_toml_overrides(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text("[ctl]\nkill_prob = 0.2\n[species.il2]\ndiffusion_um2_per_s = 50\n")
    p = Params.from_toml(f, sets=["ctl.max_kills=3"])
    assert p.ctl.kill_prob == 0.2 and p.species["il2"].diffusion_um2_per_s == 50 and p.ctl.max_kills == 3
    assert p.species["ifna"] == Params().species["ifna"]  # untouched entries keep their defaults


def test_unknown_key_names_file_key_and_nearest(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[ctl]\nkil_prob = 0.2\n")
    with pytest.raises(ParameterError) as e:
        Params.from_toml(f)
    msg = str(e.value)
    assert str(f) in msg and "'ctl.kil_prob'" in msg and "did you mean 'ctl.kill_prob'" in msg


def test_unknown_group_suggests_group():
    with pytest.raises(ParameterError, match=r"unknown key 'tumor'.*did you mean 'tumour'"):
        Params.from_overrides({"tumor": {"death_rate_per_day": 1}}, source="x.toml")


def test_out_of_range_names_range():
    with pytest.raises(ParameterError) as e:
        Params.from_overrides(sets=["ctl.kill_prob=1.5"])
    msg = str(e.value)
    assert "--set ctl.kill_prob=1.5" in msg and "'ctl.kill_prob'" in msg and "allowed range [0, 1]" in msg


def test_open_bound_shown():
    with pytest.raises(ParameterError, match=r"allowed range \(0, 60\] min"):
        Params.from_overrides(sets=["time.dt_min=0"])


def test_wrong_type_names_expected_type(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text('[ctl]\nmax_kills = 2.5\n[nk]\nkill_prob = "high"\n')
    with pytest.raises(ParameterError) as e:
        Params.from_toml(f)
    msg = str(e.value)
    assert "'ctl.max_kills'" in msg and "expected an integer" in msg
    assert "'nk.kill_prob'" in msg and "expected a number" in msg


def test_bool_is_not_a_number():
    with pytest.raises(ParameterError, match="expected a number"):
        Params.from_overrides(sets=["ctl.kill_prob=true"])


def test_invalid_choice_lists_choices():
    with pytest.raises(ParameterError, match="'closed' or 'periodic'"):
        Params.from_overrides(sets=['lattice.boundary="open"'])


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ParameterError, match="file not found"):
        Params.from_toml(tmp_path / "nope.toml")
    f = tmp_path / "broken.toml"
    f.write_text("[ctl\n")
    with pytest.raises(ParameterError, match="not valid TOML"):
        Params.from_toml(f)


def test_required_species_and_threshold_consistency():
    with pytest.raises(ParameterError):
        Params.from_overrides(sets=["patient.toxicity_dlt_threshold=0.1", "patient.toxicity_hold_threshold=0.5"])


def test_parse_set():
    assert parse_set("a.b=1") == ("a.b", 1)
    assert parse_set("a.b = 2.5") == ("a.b", 2.5)
    assert parse_set("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_set("a.b=closed") == ("a.b", "closed")
    with pytest.raises(ParameterError, match="expected key.path=value"):
        parse_set("novalue")


def test_assignment_is_validated():
    p = Params()
    with pytest.raises(ValueError):
        p.ctl.kill_prob = 2.0
