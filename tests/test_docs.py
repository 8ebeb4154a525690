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


# ------------------------------------------------------------------------------------------ citations of the brief
ROOT = DOCS.parent
_GONE = "SCIENCE" + ".md"  # the model brief's old file name: it is not in the repository (docs/model.md has it)


def _tracked_text_files():
    import subprocess

    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in out.split():
        p = ROOT / name
        if p.suffix in (".py", ".md", ".toml", ".txt", ".cfg", ".sh", "") and p.is_file():
            yield p


def test_docs_readme_and_parameters_cite_files_the_repository_has():
    """docs/, README.md, the parameter sources and the tests cite docs/model.md (which holds the brief) or the
    primary literature, never the brief's old file."""
    here = Path(__file__).resolve()
    files = [
        *DOCS.glob("*.md"),
        ROOT / "README.md",
        *(ROOT / "abm" / "params").glob("*.py"),
        *(ROOT / "tests").glob("*.py"),
    ]
    bad = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in files
        if p != here
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if _GONE in line
    ]
    assert not bad, bad
    assert not (ROOT / _GONE).exists()


def test_no_tracked_file_cites_the_old_brief():
    """No tracked file (code comments, scenarios, sweep files, benchmarks included) cites the brief's old file; every
    "brief sN" a tracked file cites is a section of docs/model.md's appendix."""
    import re

    here = Path(__file__).resolve()
    have = set(re.findall(r"^### Brief s(\d+)\.", (DOCS / "model.md").read_text(), flags=re.M))
    bad, missing = [], []
    for p in _tracked_text_files():
        if p == here:
            continue
        text = p.read_text(errors="replace")
        if _GONE in text:
            bad.append(str(p.relative_to(ROOT)))
        missing += [f"{p.relative_to(ROOT)}: brief s{m}" for m in re.findall(r"\bbrief s(\d+)", text) if m not in have]
    assert not bad, bad
    assert not missing, missing


def test_every_brief_section_a_parameter_cites_is_in_model_md():
    import re

    text = (DOCS / "model.md").read_text()
    have = set(re.findall(r"^### Brief s(\d+)\.", text, flags=re.M))
    cited = {m for r in parameter_rows(Params) for m in re.findall(r"brief s(\d+)", str(r["source"]))}
    assert cited and cited <= have, (cited, have)
    for p in DOCS.glob("*.md"):
        for m in re.findall(r"brief s(\d+)", p.read_text()):
            assert m in have, (p.name, m)
