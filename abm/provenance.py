"""What every output records about how it was made: the abm version, the git commit of the source tree, the
versions of the libraries that shape results, and the overrides applied on top of the scenario files."""

from __future__ import annotations

import functools
import platform
import subprocess
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

LIBRARIES = ("numpy", "numba", "llvmlite", "scipy", "h5py", "pydantic", "mesa")
"""Libraries whose versions are recorded (they can change numbers or file layout)."""


DIST_NAME = "abm-immuno"
"""The distribution name (pyproject.toml ``[project] name``); the package imports as ``abm``. The name ``abm`` on
the public package index belongs to an unrelated project."""


@functools.cache
def abm_version() -> str:
    """The version of the abm that is running: the source tree's pyproject.toml when abm runs from a clone (installed
    editable or not, so a tree imported through ``PYTHONPATH`` reports its own version), else the installed
    distribution's metadata, else ``0.0.0+unknown``."""
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
        if project.get("name") == DIST_NAME and project.get("version"):
            return str(project["version"])
    except (OSError, ValueError):
        pass
    try:
        return version(DIST_NAME)
    except PackageNotFoundError:
        return "0.0.0+unknown"


@functools.cache
def git_hash() -> str:
    """The git commit of the abm source tree, or '' when it is not a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.cache
def library_versions() -> dict[str, str]:
    """``{"python": ..., "numpy": ..., ...}`` for the libraries in :data:`LIBRARIES` that are installed."""
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = version(lib)
        except PackageNotFoundError:
            continue
    return out


def provenance(scenario: Any = None) -> dict[str, Any]:
    """abm version, git hash, library versions and (given a scenario) the overrides applied on top of its files."""
    out: dict[str, Any] = {"abm_version": abm_version(), "git_hash": git_hash(), "versions": library_versions()}
    if scenario is not None:
        out["overrides"] = list(scenario.overrides)
    return out
