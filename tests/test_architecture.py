"""The shape of the code, checked: imports run one way (no import circle in abm/), kernels take records (no more
than 8 arguments), kernels import nothing from abm outside abm.kernels, and no species row is hard-coded."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import numba

import abm
import abm.kernels

ROOT = Path(abm.__file__).resolve().parent
MAX_KERNEL_ARGS = 8


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, module_level_only: bool) -> set[str]:
    """abm modules imported by the file (resolving relative imports); with ``module_level_only``, ignore imports
    inside functions and ``if TYPE_CHECKING`` blocks (they cannot form a load-time circle)."""
    tree = ast.parse(path.read_text())
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out: set[str] = set()

    def visit(node, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) and module_level_only:
                continue
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test) and module_level_only:
                continue
            if isinstance(child, ast.Import):
                out.update(a.name for a in child.names if a.name.startswith("abm"))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    mod = f"{base}.{child.module}" if child.module else base
                else:
                    mod = child.module or ""
                if mod.startswith("abm"):
                    out.add(mod)
                    for a in child.names:  # `from abm import x` may import the submodule abm.x
                        if (ROOT.parent / Path(*f"{mod}.{a.name}".split("."))).with_suffix(".py").exists():
                            out.add(f"{mod}.{a.name}")
            visit(child, top)

    visit(tree, True)
    out.discard(me)
    return out


def _graph() -> dict[str, set[str]]:
    files = [p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts]
    mods = {_module_name(p): p for p in files}
    graph = {}
    for name, path in mods.items():
        deps = set()
        for d in _imports(path, module_level_only=True):
            # importing abm.a.b also runs abm and abm.a
            parts = d.split(".")
            deps.update(".".join(parts[:k]) for k in range(1, len(parts) + 1) if ".".join(parts[:k]) in mods)
        deps.discard(name)
        # a package's __init__ is run by importing any of its submodules, but that is not a cycle through it
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    return graph


def test_no_import_circle_in_abm():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                cycle = stack[stack.index(d) :] + [d]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if d not in state:
                dfs(d)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            dfs(n)


def test_kernels_import_nothing_else_from_abm():
    for path in (ROOT / "kernels").glob("*.py"):
        bad = {d for d in _imports(path, module_level_only=False) if not d.startswith("abm.kernels")}
        assert not bad, f"{path.name} imports {bad}"


def _kernels():
    for info in pkgutil.iter_modules(abm.kernels.__path__):
        mod = importlib.import_module(f"abm.kernels.{info.name}")
        for name, obj in vars(mod).items():
            if isinstance(obj, numba.core.registry.CPUDispatcher) and obj.py_func.__module__ == mod.__name__:
                yield f"{mod.__name__}.{name}", obj.py_func


# A Numba parallel loop cannot take a record that holds records (Tissue holds CellArrays, CellRules the per-type
# records), so the one kernel that runs the cell rules in a prange takes them flattened (abm/kernels/blocks.py).
PARALLEL_LOOP_BOUNDARY = {"abm.kernels.blocks._act_colour"}


def test_no_kernel_takes_more_than_eight_arguments():
    kernels = list(_kernels())
    assert len(kernels) > 15
    long = {name: len(inspect.signature(f).parameters) for name, f in kernels}
    long = {k: v for k, v in long.items() if v > MAX_KERNEL_ARGS and k not in PARALLEL_LOOP_BOUNDARY}
    assert not long, f"kernels with more than {MAX_KERNEL_ARGS} arguments (pass a record): {long}"


def test_no_species_row_hard_coded():
    """Kernels and the reference model read concentration rows through the species index, never a literal row."""
    pattern = re.compile(r"conc\[\s*\d|\b(IL2|IFNA|DRUG)\s*=\s*\d")
    for path in [*(ROOT / "kernels").glob("*.py"), ROOT / "reference" / "model.py"]:
        hits = [line for line in path.read_text().splitlines() if pattern.search(line)]
        assert not hits, f"{path.name}: {hits}"
