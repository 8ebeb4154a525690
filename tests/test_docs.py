"""docs/model.md describes the parameters the code has, and nothing it lacks."""

import importlib.util
from pathlib import Path

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
    rows = parameter_rows()
    assert len(rows) > 80
    for r in rows:
        assert r["description"], f"{r['name']} has no description"
        assert r["unit"], f"{r['name']} has no unit"


def test_table_lists_every_leaf_of_the_tree():
    names = {r["name"] for r in parameter_rows()}
    p = Params()
    for group, sub in p:
        if isinstance(sub, dict):
            for entry, sp in sub.items():
                for field in type(sp).model_fields:
                    assert f"{group}.{entry}.{field}" in names
        else:
            for field in type(sub).model_fields:
                assert f"{group}.{field}" in names
