"""Every code block of README.md and docs/*.md is run, or says why not.

A block is classified by an HTML comment on the line just above its opening fence, ``<!-- snippet: KIND -->``:

- ``run``: python blocks are executed in a fresh directory holding a small ``run.h5`` (il2_ifna, 40 x 40 sites,
  one day, seed 3); toml blocks are parsed (and, for a sweep definition, validated and designed); shell blocks are
  run line by line, each line an ``abm`` command run in-process, ``abm run`` made small (the tiny lattice of
  tests/conftest.py appended, ``--days`` at most 1). Python and toml blocks run without a marker. Every line of a
  shell block is parsed by abm's argument parser; the slow commands (``plot``, ``animate``, ...: matplotlib takes
  several seconds even on a tiny run) run only in the slow suite.
- ``script``: a python block that is a script: importing it again under another name (as worker processes do)
  must run nothing; the slow suite also runs it as ``python script.py`` with its sweep made tiny.
- ``skip (reason)``: deliberately long, or needs a cluster; python ones must still compile, and their ``abm``
  lines must parse.
- ``text (what)``: not code (a diagram, a layout, program output).

A shell or unlabelled block without a marker fails the inventory test, so a new one must be classified. ``abm``
commands quoted inline in the text (``abm plot RUN.h5 --kind snapshot ...``) are parsed too, and the slow suite runs
those of ``plot``, ``compare`` and ``animate`` on copies of the small run. A ``python -m MODULE`` or
``python SCRIPT.py`` named anywhere must name a module or script the repository has.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

import abm
from tests.conftest import TINY_SETS

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"^<!--\s*snippet:\s*(run|script|skip|text)\s*(?:\((.+)\))?\s*-->\s*$")
FENCE = re.compile(r"^```(\S*)\s*$")
RUN_SETS = [*TINY_SETS, "init.ctl_cells=20", "init.nk_cells=10", "init.immune_within_um=60"]


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    kind: str | None
    reason: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks() -> list[Block]:
    out = []
    for path in FILES:
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            m = FENCE.match(lines[i])
            if not m:
                i += 1
                continue
            start, lang = i, m.group(1)
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            mk = MARKER.match(lines[start - 1]) if start else None
            kind, reason = (mk.group(1), mk.group(2)) if mk else (None, None)
            if kind is None and lang in ("python", "toml"):
                kind = "run"
            out.append(Block(path, start + 1, lang, "\n".join(lines[start + 1 : j]) + "\n", kind, reason))
            i = j + 1
    return out


BLOCKS = blocks()


def of(kind: str, *langs: str) -> list:
    return [pytest.param(b, id=b.id) for b in BLOCKS if b.kind == kind and (not langs or b.lang in langs)]


def test_every_block_is_classified():
    assert len(BLOCKS) >= 20
    for b in BLOCKS:
        assert b.kind is not None, f"{b.id}: a ```{b.lang} block without <!-- snippet: ... --> above it"
        if b.kind in ("skip", "text"):
            assert b.reason, f"{b.id}: '{b.kind}' needs a reason in parentheses"
        if b.kind == "script":
            assert b.lang == "python", b.id
        if b.kind == "run":
            assert b.lang in ("python", "toml", "bash", "sh", "shell"), b.id
    counts = {k: sum(b.kind == k for b in BLOCKS) for k in ("run", "script", "skip", "text")}
    assert counts["run"] >= 8 and counts["script"] >= 1, counts


# ------------------------------------------------------------------------------------------------ python blocks
@pytest.fixture(scope="module")
def run_h5(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("snippets") / "run.h5"
    abm.run("il2_ifna", out=path, seed=3, days=1.0, snapshot_every_min=360.0, sets=RUN_SETS)
    return path


@pytest.fixture
def in_fresh_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scenarios").symlink_to(ROOT / "scenarios")
    return tmp_path


@pytest.mark.parametrize("block", of("run", "python"))
def test_python_block_runs(block, run_h5, in_fresh_dir, capsys):
    shutil.copy(run_h5, in_fresh_dir / "run.h5")
    try:
        exec(compile(block.code, block.id, "exec"), {"__name__": "__snippet__"})
    except ModuleNotFoundError as e:  # an optional extra that is not installed here
        pytest.skip(f"{block.id} needs {e.name}")
    printed = capsys.readouterr().out
    assert not re.search(r"\bb'", printed), f"{block.id} printed bytes: {printed}"


@pytest.mark.parametrize("block", of("skip", "python"))
def test_skipped_python_block_compiles(block):
    ast.parse(block.code, block.id)
    if "Client(" in block.code or "Cluster(" in block.code:
        assert 'if __name__ == "__main__":' in block.code, f"{block.id}: a script that starts workers needs a guard"


# --------------------------------------------------------------------------------------------------- toml blocks
@pytest.mark.parametrize("block", of("run", "toml"))
def test_toml_block_is_valid(block):
    raw = tomllib.loads(block.code)
    if "sweep" in raw:
        from abm.sweep import SweepSpec, expand

        for quick in (False, True):
            spec = SweepSpec.from_dict(raw, source=block.id, quick=quick, base_dir=str(ROOT / "scenarios" / "sweeps"))
            assert expand(spec), block.id


# ------------------------------------------------------------------------------------------------ script blocks
TINY_SWEEP = f"""
import dataclasses as _dc
import abm.sweep.design as _design

_load = _design.SweepSpec.load.__func__


def _tiny(cls, path, quick=False):  # test harness: the documented sweep, made tiny (2 levels per key, 1 replicate)
    s = _load(cls, path, quick)
    params = [_dc.replace(p, values=(p.grid_values()[0], p.grid_values()[-1]), low=None, high=None, num=None)
              for p in s.parameters]
    return _dc.replace(s, sets=[*s.sets, *{RUN_SETS[:3]!r}, "run.days=0.5"], replicates=1, parameters=params)


_design.SweepSpec.load = classmethod(_tiny)
"""


@pytest.mark.parametrize("block", of("script"))
def test_script_block_does_nothing_when_imported_again(block, in_fresh_dir):
    """Worker processes (Dask's LocalCluster, multiprocessing's spawn) import the main script as ``__mp_main__``:
    the script must do its work only under ``__main__``."""
    script = in_fresh_dir / "script.py"
    script.write_text(TINY_SWEEP + block.code)
    before = set(in_fresh_dir.iterdir())
    code = f"import runpy; runpy.run_path({str(script)!r}, run_name='__mp_main__')"
    out = subprocess.run([sys.executable, "-c", code], cwd=in_fresh_dir, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert set(in_fresh_dir.iterdir()) == before, f"{block.id}: importing the script again ran it"


@pytest.mark.slow
@pytest.mark.parametrize("block", of("script"))
def test_script_block_runs_as_a_script(block, in_fresh_dir):
    script = in_fresh_dir / "script.py"
    script.write_text(TINY_SWEEP + block.code)
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, str(script)], cwd=in_fresh_dir, capture_output=True, text=True, env=env, timeout=900
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert list(in_fresh_dir.glob("runs/*/analysis/*")), sorted(map(str, in_fresh_dir.rglob("*")))[:20]


# ------------------------------------------------------------------------------------------------- shell blocks
SLOW_COMMANDS = {"plot", "animate", "compare", "serve", "sweep", "analyze"}
"""Subcommands that take more than a few seconds even on a tiny run (matplotlib, many runs): the default suite
only parses them; the slow suite runs them."""


def command_lines(code: str) -> list[str]:
    """The commands of a shell block: comments and blank lines dropped, ``a; b`` split."""
    out = []
    for ln in code.splitlines():
        ln = ln.split(" #", 1)[0].strip()
        if ln and not ln.startswith("#"):
            out += [c.strip() for c in ln.split(";") if c.strip()]
    return out


def tiny_command(line: str) -> list[str]:
    """An ``abm`` command line as argv for :func:`abm.cli.main`, ``abm run`` made small."""
    argv = shlex.split(line, comments=True)
    assert argv and argv[0] == "abm", f"only abm commands run here, not {line!r}"
    argv = argv[1:]
    if argv[0] == "run":
        if "--days" in argv:
            k = argv.index("--days") + 1
            argv[k] = str(min(float(argv[k]), 1.0))
        else:
            argv += ["--days", "1"]
        argv += [a for s in RUN_SETS for a in ("--set", s)]
    return argv


def parses(line: str) -> None:
    """The command line is one the ``abm`` parser accepts (placeholders ``...`` and ``[optional]`` read as given)."""
    from abm.cli import build_parser

    argv = shlex.split(line.replace("...", "FILE").replace("[", "").replace("]", ""))
    assert argv[0] == "abm", line
    try:
        args = build_parser().parse_args(argv[1:])
    except SystemExit as e:  # argparse's error (printed on stderr): an unknown option, a missing argument, ...
        raise AssertionError(f"abm cannot parse {line!r} (exit {e.code})") from None
    assert getattr(args, "func", None), f"{line!r} names no command"


def run_shell_block(block: Block, capsys, slow: bool) -> int:
    from abm.cli import main

    lines = command_lines(block.code)
    assert lines
    ran = 0
    for line in lines:
        parses(line)
        if tiny_command(line)[0] in SLOW_COMMANDS and not slow:
            continue
        rc = main(tiny_command(line))
        out = capsys.readouterr()
        assert rc == 0, f"{block.id}: {line!r} exited {rc}: {out.err[-2000:]}"
        if line.startswith("abm info"):
            assert "overrides" in out.out and "length" in out.out
        ran += 1
    return ran


@pytest.mark.parametrize("block", of("run", "bash", "sh", "shell"))
def test_shell_block_runs(block, in_fresh_dir, capsys):
    """Every line parses; every line that is not a slow command runs (in order, in one fresh directory)."""
    assert run_shell_block(block, capsys, slow=False) >= 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "block",
    [
        b
        for b in of("run", "bash", "sh", "shell")
        if any(tiny_command(c)[0] in SLOW_COMMANDS for c in command_lines(b.values[0].code))
    ],
)
def test_shell_block_runs_every_line(block, in_fresh_dir, capsys):
    run_shell_block(block, capsys, slow=True)


@pytest.mark.parametrize("block", of("skip"))
def test_abm_lines_of_other_blocks_parse(block):
    """A block that is not run still shows ``abm`` commands the parser accepts (options spelled as abm has them)."""
    for line in command_lines(block.code):
        if line.startswith("abm "):
            parses(line)


INLINE = re.compile(r"`(abm [a-z]+ [^`]+)`")


def inline_commands() -> list:
    out = []
    for path in FILES:
        for i, text in enumerate(path.read_text().splitlines(), 1):
            out += [pytest.param(m, id=f"{path.relative_to(ROOT)}:{i}") for m in INLINE.findall(text)]
    return out


@pytest.mark.parametrize("line", inline_commands())
def test_inline_abm_commands_parse(line):
    """Commands quoted in running text (``abm plot RUN.h5 --kind snapshot ...``) are ones abm accepts."""
    parses(line)


RUNNABLE_INLINE = {"plot", "compare", "animate"}
"""Inline commands that run on the small run file (``RUN.h5``, ``A.h5``, ``B.h5`` all copies of it); ``serve``
starts a server and ``sweep``/``analyze`` name placeholders (``FILE``, ``DIR``), so those are only parsed."""


@pytest.mark.slow
@pytest.mark.parametrize(
    "line", [p for p in inline_commands() if shlex.split(p.values[0])[1] in RUNNABLE_INLINE and "[" not in p.values[0]]
)
def test_inline_abm_commands_run(line, run_h5, in_fresh_dir, capsys):
    from abm.cli import main

    for name in ("RUN.h5", "A.h5", "B.h5"):
        shutil.copy(run_h5, in_fresh_dir / name)
    argv = shlex.split(line.replace(" ...", ""))[1:]
    if "--time" in argv:  # the small run is one day long
        k = argv.index("--time") + 1
        argv[k] = str(min(float(argv[k]), 1.0))
    rc = main(argv)
    err = capsys.readouterr().err
    if rc == 2 and "optional package" in err:
        pytest.skip(err.strip())
    assert rc == 0, err[-2000:]
    assert len(set(in_fresh_dir.iterdir())) > 4, "the command wrote nothing"


PYTHON_COMMAND = re.compile(r"\bpython (?:-m ([A-Za-z_][\w.]*)|([\w/.-]+\.py))")


def python_commands() -> list:
    out = []
    for path in FILES:
        for i, text in enumerate(path.read_text().splitlines(), 1):
            for module, script in PYTHON_COMMAND.findall(text):
                out.append(pytest.param(module, script, id=f"{path.relative_to(ROOT)}:{i}:{module or script}"))
    return out


@pytest.mark.parametrize(("module", "script"), python_commands())
def test_python_commands_name_what_the_repository_has(module, script, monkeypatch):
    """``python -m benchmarks``, ``python docs/make_model_table.py``, ...: the module or script (from the clone's
    root) exists. (What they do is tested where they are: tests/test_docs.py runs make_model_table, the golden and
    benchmark modules have their own tests.)"""
    import importlib.util

    if script:
        # a script the page itself gives (a block opening with "# NAME.py") is the reader's to save
        given = {b.code.split()[1] for b in BLOCKS if b.code.startswith("# ") and b.code.split()[1].endswith(".py")}
        assert (ROOT / script).is_file() or script in given, script
    else:
        monkeypatch.syspath_prepend(str(ROOT))
        assert importlib.util.find_spec(module) is not None, module
