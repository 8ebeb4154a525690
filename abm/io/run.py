"""A run read back as typed data: the trajectory plus its resolved scenario and parameter tree (:func:`load_run`)."""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abm.params import Params

from .reader import Trajectory
from .reader import load as load_trajectory


@dataclass
class Run(Trajectory):
    """A :class:`Trajectory` with the run's resolved scenario (``resolved``: scenario, run, regimen, params as
    stored) and its parameter tree (``params``; None if the stored tree no longer validates, e.g. a file from an
    older abm whose keys have since moved)."""

    resolved: dict[str, Any] = field(default_factory=dict)
    params: Params | None = None


def load_run(path: str | Path) -> Run:
    """Read a run written by :func:`abm.run` (or its ``.partial`` after a crash) as a :class:`Run`."""
    t = load_trajectory(path)
    resolved = json.loads(t.parameters_json) if t.parameters_json else {}
    params = None
    if "params" in resolved:
        try:
            params = Params.model_validate(resolved["params"])
        except ValueError as e:
            warnings.warn(f"{t.path}: the stored parameter tree does not validate with this abm ({e})", stacklevel=2)
    base = {f.name: getattr(t, f.name) for f in dataclasses.fields(Trajectory)}
    return Run(**base, resolved=resolved, params=params)
