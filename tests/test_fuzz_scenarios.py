"""A fuzzer of scenario files and ``--set`` strings (issue 16, item 6).

Hypothesis mutates the shipped scenario files (keys deleted, duplicated, renamed; wrong types; extreme numbers,
NaN and infinity; huge lists; unicode; binary bytes; deep nesting; ``inherits`` aimed anywhere) and writes
``--set`` strings (valid and invalid keys, unicode digits, TOML and non-TOML values). Each case goes through
``abm check`` in-process (:func:`abm.cli.main`): it must exit 0 or 2, never print a traceback, and a refusal must
name the file or ``--set`` and the key. Every accepted case then runs ``abm run`` for a few steps: it must exit 0
(a failure there is a "late failure") within the time limit (else a "hang").

Counts: the default suite runs a few dozen examples of each; the ``slow`` tests the issue's 1,000 scenarios and
500 ``--set`` strings, and print the tallies.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import signal
import time
import tomllib
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abm import limits
from abm.cli import main
from abm.params.core import all_keys
from abm.scenario import SCENARIO_DIR, Scenario, ScenarioDoc

SHIPPED = sorted(SCENARIO_DIR.glob("*.toml"))
TEXTS = {p.name: p.read_text() for p in SHIPPED}
DATA = {p.name: tomllib.loads(t) for p, t in zip(SHIPPED, TEXTS.values(), strict=True)}
KEYS = [k.replace("<entry>", "il2").replace("<i>", "0") for k in all_keys(ScenarioDoc)]
RUN_LIMIT_S = 60.0
RUN_MAX_BYTES = 300e6  # accepted cases larger than this are not run here (counted)

FILE_LEVEL = (  # refusals about a whole file, which name the file but no key
    "not valid TOML",
    "not UTF-8",
    "bytes; a scenario file",
    "not a regular file",
    "file not found",
)


# ------------------------------------------------------------------------------------------------ TOML out
def _key(k: str) -> str:
    return json.dumps(k, ensure_ascii=False)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(str(v))


def toml_doc(d: dict) -> str:
    return "\n".join(f"{_key(str(k))} = {toml_value(v)}" for k, v in d.items()) + "\n"


# ---------------------------------------------------------------------------------------------- mutations
EXTREME = [
    0,
    -1,
    1,
    2,
    10**9,
    2**63 - 1,
    -(2**63),
    0.0,
    -0.0,
    1e-300,
    5e-324,
    1e308,
    -1e308,
    math.nan,
    math.inf,
    -math.inf,
    0.5,
    4096,
    4097,
]
WEIRD_STRINGS = ["", " ", "../x", "/etc/passwd", "a/b", "ü²", "\u202e", "x" * 300, ".hidden", "C:\\x", "\x00"]
INHERITS = [
    "untreated",
    "high_dose_il2.toml",
    "../../../../etc/passwd",
    "/etc/hostname",
    "/dev/zero",
    "..",
    ".",
    "nonexistent",
    "scenarios/untreated.toml",
    "untreated.txt",
    "~/x.toml",
    "self.toml",
]

values = st.one_of(
    st.sampled_from(EXTREME),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(WEIRD_STRINGS),
    st.booleans(),
    st.lists(st.integers(-10, 10), max_size=5),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.builds(lambda: [{"drug": "il2"}]),  # a fresh list each time: mutations must not share objects
)


def _paths(d, prefix=()):
    out = []
    if isinstance(d, dict):
        for k, v in d.items():
            out.append((*prefix, k))
            out += _paths(v, (*prefix, k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out.append((*prefix, i))
            out += _paths(v, (*prefix, i))
    return out


def _get_parent(d, path):
    for p in path[:-1]:
        d = d[p]
    return d


@st.composite
def mutated_scenario(draw):
    """(file name, file bytes, what was done)."""
    name = draw(st.sampled_from(sorted(DATA)))
    kind = draw(
        st.sampled_from(
            ["tree", "tree", "tree", "tree", "text", "binary", "nest", "huge", "inherits", "unicode", "chain"]
        )
    )
    doc = json.loads(json.dumps(DATA[name]))
    done = [f"{name}:{kind}"]
    if kind == "tree":
        for _ in range(draw(st.integers(1, 4))):
            paths = _paths(doc)
            if not paths:
                break
            path = draw(st.sampled_from(paths))
            parent = _get_parent(doc, path)
            op = draw(st.sampled_from(["delete", "rename", "retype", "extreme", "duplicate"]))
            key = path[-1]
            done.append(f"{op} {'.'.join(map(str, path))}")
            if op == "delete":
                del parent[key]
            elif op == "rename" and isinstance(parent, dict):
                parent[key + draw(st.sampled_from(["_", "s", "x", "²", " "]))] = parent.pop(key)
            elif op == "duplicate" and isinstance(parent, dict):
                parent[draw(st.sampled_from(KEYS)).split(".")[-1]] = copy.deepcopy(parent[key])
            elif op == "extreme":
                parent[key] = draw(st.sampled_from(EXTREME))
            else:
                parent[key] = copy.deepcopy(draw(values))
        text = toml_doc(doc)
        if draw(st.booleans()):  # also set a valid key somewhere to an odd value
            k = draw(st.sampled_from(KEYS))
            text += f"{_key(k.split('.')[0])}.{'.'.join(_key(p) for p in k.split('.')[1:])} = " if "." in k else ""
            text += toml_value(draw(values)) + "\n" if "." in k else ""
        return name, text.encode(), done
    text = TEXTS[name]
    if kind == "text":
        lines = text.splitlines()
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        op = draw(st.sampled_from(["dup", "cut", "drop"]))
        if op == "dup":
            lines.insert(i, lines[i] if lines else "")
        elif op == "cut":
            lines = lines[:i]
            if lines:
                lines[-1] = lines[-1][: draw(st.integers(0, len(lines[-1])))]
        else:
            lines.pop(i) if lines else None
        done.append(f"{op} line {i}")
        return name, "\n".join(lines).encode(), done
    if kind == "binary":
        raw = bytearray(text.encode())
        junk = draw(st.binary(min_size=1, max_size=16))
        at = draw(st.integers(0, len(raw)))
        raw[at:at] = junk
        done.append(f"bytes {junk!r} at {at}")
        return name, bytes(raw), done
    if kind == "nest":
        depth = draw(st.integers(10, 3000))
        form = draw(st.sampled_from(["array", "inline", "dotted", "table"]))
        done.append(f"{form} nested {depth}")
        if form == "array":
            extra = "deep = " + "[" * depth + "1" + "]" * depth
        elif form == "inline":
            extra = "deep = " + "{a = " * depth + "1" + "}" * depth
        elif form == "dotted":
            extra = ".".join(["ctl"] + ["a"] * depth) + " = 1"
        else:
            extra = "[" + ".".join(["species"] + ["b"] * depth) + "]\nx = 1"
        return name, (text + "\n" + extra + "\n").encode(), done
    if kind == "huge":
        n = draw(st.sampled_from([1000, 100_000, 200_000]))
        field = draw(st.sampled_from(["weeks", "weekdays", "transfers", "doses"]))
        done.append(f"{field} x {n}")
        if field in ("weeks", "weekdays"):
            extra = (
                f'[[regimen.doses]]\ndrug = "ifna"\nroute = "sc"\ndose = 3\nunit = "MIU"\n{field} = '
                + toml_value(list(range(1, n + 1)))
                + ("\nweekdays = [1]" if field == "weeks" else "\nweeks = [1]")
            )
        elif field == "transfers":
            extra = "\n".join(
                f"[[regimen.transfers]]\nday = {i % 30}\ncells_per_infusion = 5e9" for i in range(n // 100)
            )
        else:
            extra = "\n".join(
                f'[[regimen.doses]]\ndrug = "il2"\ndose = 1\nunit = "IU/kg"\nstart_day = {i % 10}'
                for i in range(n // 1000)
            )
        return name, (text.replace("[[regimen.doses]]", "[[regimen.old]]") + "\n" + extra + "\n").encode(), done
    if kind == "inherits":
        target = draw(st.sampled_from(INHERITS))
        done.append(f"inherits {target}")
        body = f"[scenario]\nname = {json.dumps(name[:-5])}\ninherits = {json.dumps(target)}\n"
        if draw(st.booleans()):
            body += "[run]\ndays = 0.01\n"
        return name, body.encode(), done
    if kind == "chain":
        return name, b"CHAIN", done
    # unicode
    s = draw(st.text(min_size=1, max_size=30))
    where = draw(st.sampled_from(["name", "key", "value"]))
    done.append(f"unicode {where} {s!r}")
    if where == "name":
        doc.setdefault("scenario", {})["name"] = s
    elif where == "key":
        doc.setdefault("ctl", {})[s] = 1
    else:
        doc.setdefault("regimen", {})["description"] = s
    return name, toml_doc(doc).encode(), done


# ------------------------------------------------------------------------------------------------ one case
class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang


def _cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse's own usage errors (exit 2)
            rc = e.code if isinstance(e.code, int) else 2
    return rc, err.getvalue()


def check_refusal(msg: str, names: list[str], tally: Counter, what: str) -> None:
    assert "Traceback" not in msg, msg
    assert any(n in msg for n in names), f"{what}: the message names no file or --set: {msg}"
    if not any(p in msg for p in FILE_LEVEL):
        assert "key" in msg, f"{what}: the message names no key: {msg}"


def run_case(argv: list[str], names: list[str], tally: Counter, what: str, tmp: Path) -> None:
    """``abm check`` then, when it accepts, a few steps of ``abm run``."""
    t0 = time.monotonic()
    rc, msg = _cli(["check", *argv, "-q"])
    tally["checked"] += 1
    if time.monotonic() - t0 > RUN_LIMIT_S:
        tally["hangs (check)"] += 1
    assert rc in (0, 2), f"{what}: abm check exit {rc}: {msg}"
    assert "Traceback" not in msg, msg
    if rc == 2:
        tally["refused (exit 2)"] += 1
        check_refusal(msg, names, tally, what)
        return
    tally["accepted (exit 0)"] += 1
    sc = Scenario.load(argv[0], sets=[a.removeprefix("--set=") for a in argv if a.startswith("--set=")])
    if limits.estimate_memory(sc).total > RUN_MAX_BYTES:
        tally["accepted, too large to run here"] += 1
        return
    days = 3 * sc.params.time.dt_min / 1440.0
    out = tmp / "fuzz_out.h5"
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, RUN_LIMIT_S)
    t0 = time.monotonic()
    try:
        rc, msg = _cli(["run", *argv, "--days", repr(days), "--out", str(out), "--overwrite", "-q"])
    except Hang:
        rc, msg = -1, "hang"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    if rc == -1 or time.monotonic() - t0 > RUN_LIMIT_S:
        tally["hangs (run)"] += 1
    elif rc != 0:
        tally["late failures (run)"] += 1
    else:
        tally["ran a few steps (exit 0)"] += 1
    assert rc == 0, f"{what}: accepted by abm check, but abm run exit {rc}: {msg}"
    assert "Traceback" not in msg
    out.unlink(missing_ok=True)


def scenario_case(case, tmp: Path, tally: Counter) -> None:
    name, raw, done = case
    f = tmp / "fuzz.toml"
    if raw == b"CHAIN":  # a long inherits chain (the issue's 2,000 files), or a loop
        n = 40
        for i in range(n):
            (tmp / f"c{i}.toml").write_text(f'[scenario]\nname = "c{i}"\ninherits = "c{i + 1}"\n')
        (tmp / f"c{n}.toml").write_text('[scenario]\nname = "end"\ninherits = "untreated"\n')
        f = tmp / "c0.toml"
        tally["chains"] += 1
    else:
        f.write_bytes(raw)
    names = [str(f), str(SCENARIO_DIR), str(f.parent)]
    run_case([str(f)], names, tally, f"{done}", tmp)


# ------------------------------------------------------------------------------------------------- --set
key_parts = st.one_of(
    st.sampled_from(sorted({p for k in KEYS for p in k.split(".")})),
    st.sampled_from(["0", "1", "99", "²", "١", "-1", "", " ", "__", "il2", "lak", "<i>"]),
    st.text(max_size=6),
)
set_keys = st.one_of(
    st.sampled_from(KEYS),
    st.lists(key_parts, min_size=1, max_size=5).map(".".join),
    st.sampled_from(KEYS).map(lambda k: k + ".x"),
    st.integers(1, 200).map(lambda n: ".".join(["ctl"] * n)),
)
set_values = st.one_of(
    values.map(toml_value),
    st.text(max_size=30),
    st.sampled_from(["", "[", "{", "'", '"', "1e999", "0x10", "true", "nan", "-inf", "[[[[[1]]]]]", "{a=1}"]),
    st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),
    st.just("[{day=0.0,cells_per_infusion=1e13}]"),
    st.just("[{every_h=1e-9,count=100000,cycles=1000}]"),
)
plausible = st.tuples(
    st.sampled_from(KEYS),
    st.one_of(st.integers(0, 60).map(str), st.floats(0, 2).map(repr), st.sampled_from(["true", '"x"', "[]"])),
)
set_strings = st.one_of(
    st.tuples(set_keys, set_values).map(lambda kv: f"{kv[0]}={kv[1]}"),
    plausible.map(lambda kv: f"{kv[0]}={kv[1]}"),
    plausible.map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.text(max_size=40),
)


def set_case(s: str, tmp: Path, tally: Counter) -> None:
    if "\x00" in s:  # not a command-line string (argv cannot hold NUL)
        s = s.replace("\x00", "")
    run_case(["untreated", f"--set={s}"], ["--set"], tally, f"--set {s!r}", tmp)


# ------------------------------------------------------------------------------------------------ the tests
def fuzz(strategy, case, n: int, tmp: Path) -> Counter:
    tally: Counter = Counter()

    @settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def inner(x):
        for old in tmp.iterdir():
            old.unlink()
        case(x, tmp, tally)

    inner()
    return tally


def _report(what: str, tally: Counter) -> None:
    print(f"{what}: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items())))
    for bad in ("hangs (check)", "hangs (run)", "late failures (run)"):
        assert tally[bad] == 0, tally


@pytest.fixture
def scratch(tmp_path):
    d = tmp_path / "fuzz"
    d.mkdir()
    return d


def test_fuzzed_scenario_files_run_or_are_refused_naming_file_and_key(scratch):
    tally = fuzz(mutated_scenario(), scenario_case, 30, scratch)
    _report("scenario files (30)", tally)
    assert tally["checked"] >= 30 and tally["refused (exit 2)"] > 0


def test_fuzzed_set_strings_run_or_are_refused_naming_set_and_key(scratch):
    tally = fuzz(set_strings, set_case, 30, scratch)
    _report("--set strings (30)", tally)
    assert tally["checked"] >= 30 and tally["refused (exit 2)"] > 0


@pytest.mark.slow  # the issue's counts: 1,000 mutated scenarios (several minutes)
def test_thousand_fuzzed_scenario_files(scratch):
    tally = fuzz(mutated_scenario(), scenario_case, 1000, scratch)
    _report("scenario files (1,000)", tally)
    assert tally["checked"] >= 1000


@pytest.mark.slow  # the issue's counts: 500 --set strings
def test_five_hundred_fuzzed_set_strings(scratch):
    tally = fuzz(set_strings, set_case, 500, scratch)
    _report("--set strings (500)", tally)
    assert tally["checked"] >= 500


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--set", "regimen.doses.².dose=1"], "--set regimen.doses.².dose=1: key 'regimen.doses'"),
        (["--seed", "-1"], "--seed -1: key 'run.seed'"),
        (["--set", "time.dt_min=1e-300"], "key 'run.days'"),
        (
            ["--set", "regimen.transfers=[{day=0.0,cells_per_infusion=1e13}]"],
            "key 'regimen.transfers.0.cells_per_infusion'",
        ),
        (["--set", "regimen.doses=[{every_h=1e-9,count=100000,cycles=1000}]"], "key 'regimen.doses.0'"),
        (["--set", "init.ctl_cells=100000000"], "key 'init.ctl_cells'"),
        (["--set", "init.cell_capacity=1000000000"], "key 'init.cell_capacity'"),
        (["--set", "lattice.nx=4096", "--set", "lattice.ny=4096", "--set", "lattice.nz=4096"], "memory"),
        (["--set", "lattice.spacing_um=1e-300"], "key 'lattice.spacing_um'"),
        (["--set", "scenario.name=../x"], "key 'scenario.name'"),
        (["--set", "ctl.kill_prob=nan"], "not a finite number"),
        (  # a fuzzer find: an entry added by --set is named with its --set, not the file that set the table
            ["--set", "species.il2.cells.i.uptake_per_min=0"],
            "--set species.il2.cells.i.uptake_per_min=0: key 'species.il2.cells.i': unknown cell type 'i'",
        ),
    ],
)
def test_the_issues_reproduced_defects_exit_2_naming_the_key(argv, needle):
    rc, msg = _cli(["check", "untreated", *argv])
    assert rc == 2 and needle in msg and "Traceback" not in msg, msg


@pytest.mark.parametrize(
    "s, needle",
    [
        ("pk.il2.iu_per_mg=0", "(--set pk.il2.iu_per_mg=0: key 'pk.il2.iu_per_mg' = 0 leaves the drug no IU units)"),
        ("pk.il2.sc_absorption_half_life_min=0", "--set pk.il2.sc_absorption_half_life_min=0: key 'pk.il2.sc_"),
    ],
)
def test_a_pk_key_that_takes_a_dose_unit_or_route_away_is_named(s, needle):
    """A fuzzer find: the dose block is the file's, but the --set that removed its unit or route is named too."""
    rc, msg = _cli(["check", "low_dose_sc_il2", "--set", s])
    assert rc == 2 and "low_dose_sc_il2.toml: key 'regimen.doses.0'" in msg and needle in msg, msg


def test_memory_refusal_quotes_the_estimate_and_the_machine():
    rc, msg = _cli(["check", "untreated", "--set", "init.cell_capacity=1000000000"])
    assert rc == 2
    assert "needs about" in msg and "available" in msg and "--set init.cell_capacity=1000000000" in msg


def test_inherits_reads_only_toml_files_it_may(tmp_path):
    (tmp_path / "secret.toml").write_text('[scenario]\nname = "secret"\n')
    sub = tmp_path / "sub"
    sub.mkdir()
    for target, needle in [
        ("/etc/hostname", "absolute path"),
        (str(tmp_path / "secret.toml"), "absolute path"),
        ("../secret.txt", "names a .toml file"),
        ("~/x.toml", "absolute path"),
    ]:
        f = sub / "child.toml"
        f.write_text(f'[scenario]\nname = "c"\ninherits = {json.dumps(target)}\n')
        rc, msg = _cli(["check", str(f)])
        assert rc == 2 and str(f) in msg and "scenario.inherits" in msg and needle in msg, msg
    f.write_text('[scenario]\nname = "c"\ninherits = "../secret"\n')  # relative to the file: allowed
    assert _cli(["check", str(f), "-q"])[0] == 0


def test_binary_and_deep_files_exit_2_naming_the_file(tmp_path):
    f = tmp_path / "b.toml"
    f.write_bytes(b"\xff\xfe\x00binary")
    rc, msg = _cli(["check", str(f)])
    assert rc == 2 and str(f) in msg and "not UTF-8" in msg
    f.write_text("x = " + "[" * 5000 + "]" * 5000)
    rc, msg = _cli(["check", str(f)])
    assert rc == 2 and str(f) in msg
    f.write_text("[" + ".".join(["ctl"] * 100) + "]\n")
    rc, msg = _cli(["check", str(f)])
    assert rc == 2 and str(f) in msg and "nested more than" in msg


def test_a_two_thousand_file_chain_is_refused(tmp_path):
    for i in range(2000):
        (tmp_path / f"c{i}.toml").write_text(f'[scenario]\nname = "c{i}"\ninherits = "c{i + 1}"\n')
    rc, msg = _cli(["check", str(tmp_path / "c0.toml")])
    assert rc == 2 and "longer than 32 files" in msg and "scenario.inherits" in msg
