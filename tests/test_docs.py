"""docs/model.md describes the parameters the code has, and nothing it lacks."""

import importlib.util
from pathlib import Path

from pydantic import BaseModel

from abm.params import Params, parameter_rows

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _make_table():
    spec = importlib.util.spec_from_file_location("make_model_table", DOCS / "make_model_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_model_md_parameter_table_is_current():
    mod = _make_table()
    text = (DOCS / "model.md").read_text()
    assert mod.render(text) == text, "docs/model.md is stale: run python docs/make_model_table.py"


def test_every_parameter_has_unit_and_description():
    rows = parameter_rows(Params)
    assert len(rows) > 80
    for r in rows:
        assert r["description"], f"{r['name']} has no description"
        assert r["unit"], f"{r['name']} has no unit"


def _leaves(obj, prefix=""):
    """Every leaf key of a parameter instance, entries of dict-valued groups (species, pk, cells) expanded."""
    for name, value in obj:
        if isinstance(value, BaseModel):
            yield from _leaves(value, f"{prefix}{name}.")
        elif isinstance(value, dict) and value and all(isinstance(v, BaseModel) for v in value.values()):
            for entry, sub in value.items():
                yield from _leaves(sub, f"{prefix}{name}.{entry}.")
        else:
            yield prefix + name


def test_table_lists_every_leaf_of_the_tree():
    names = {r["name"] for r in parameter_rows(Params)}
    leaves = set(_leaves(Params()))
    assert leaves == names
    assert "species.il2.cells.ctl.secretion_molecules_per_s" in names and "pk.il2.half_lives_min" in names
