"""A Scenario: the parameter tree, a regimen and run settings, loaded from TOML, validated and fully resolved.

A scenario file has a ``[scenario]`` table (name, description, ``inherits``), a ``[run]`` table (days, seed,
snapshot interval), a ``[regimen]`` table (see :mod:`abm.therapy.regimen`), and any parameter groups of
:class:`abm.params.Params` at the top level (``[ctl]``, ``[patient]``, ``[species.il2]``...). ``inherits`` names
another scenario (a shipped name or a path relative to this file); the child's keys override the parent's, tables
merge key by key and lists are replaced whole.

Loading happens in one pass in one direction: the inheritance chain is read (root first), overrides are added as
typed layers (``--set key.path=value`` strings are parsed once, keyword overrides are taken as they are), the layers
are merged remembering which source set each key, and the result is validated once
(:func:`abm.params.core.validate_merged`). An error names the file or ``--set`` that set the offending key.

Overrides use ``key.path=value``: ``run.days=7``, ``ctl.kill_prob=0.1``, ``regimen.dose_scale.il2=0.1``,
``regimen.doses.0.dose=72000`` (list items by index).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from abm.errors import ParameterError
from abm.params import Params
from abm.params.core import Group, Layer, P, defaults_of, merge, read_toml, set_layer, set_layers, validate_merged
from abm.therapy import Therapy
from abm.therapy.regimen import Regimen, check_regimen

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
"""Shipped scenarios (the repository's ``scenarios/``); ``ABM_SCENARIO_PATH`` adds directories before it."""

SECTIONS = ("scenario", "run", "regimen")


class ScenarioMeta(Group):
    name: str = P("default", "-", "short name of the scenario")
    description: str = P("", "-", "one line saying what the scenario is")
    inherits: str = P("", "-", "scenario this one extends: a shipped name or a path relative to this file")


class RunSettings(Group):
    days: float = P(28.0, "day", "simulated time", gt=0, le=3650)
    seed: int | None = P(None, "-", "seed of every random draw (none: drawn fresh and recorded)", ge=0, lt=2**64)
    snapshot_every_min: float = P(1440.0, "min", "interval between lattice and field snapshots in the output", gt=0)


class ScenarioDoc(Params):
    """Everything a scenario file can hold: the parameter groups at the top level and three sections."""

    scenario: ScenarioMeta = Field(default_factory=ScenarioMeta)
    run: RunSettings = Field(default_factory=RunSettings)
    regimen: Regimen = Field(default_factory=Regimen)


def search_path() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("ABM_SCENARIO_PATH", "").split(os.pathsep) if p]
    return extra + [SCENARIO_DIR]


def find_scenario(name: str | os.PathLike, relative_to: Path | None = None) -> Path:
    """A scenario file from a path, or from a shipped name (``high_dose_il2`` or ``high_dose_il2.toml``)."""
    p = Path(name)
    candidates = []
    if relative_to is not None and not p.is_absolute():
        candidates.append(relative_to / p)
        candidates.append(relative_to / p.with_suffix(".toml"))
    candidates.append(p)
    for d in search_path():
        candidates += [d / p, d / p.with_suffix(".toml")]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    known = shipped_names()
    near = difflib.get_close_matches(p.stem, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(near)}?" if near else ""
    raise ParameterError(
        f"{name}: scenario file not found (looked for it as a path and among the shipped scenarios in "
        f"{', '.join(str(d) for d in search_path())}).{hint} Shipped: {', '.join(known) or 'none'}."
    )


def shipped_names() -> list[str]:
    names = []
    for d in search_path():
        if d.is_dir():
            names += sorted(f.stem for f in d.glob("*.toml"))
    return names


def _inherits(raw: dict[str, Any], path: Path) -> str:
    meta = raw.get("scenario", {})
    if not isinstance(meta, dict):
        raise ParameterError(f"{path}: key 'scenario' must be a table ([scenario]), got {meta!r}")
    parent = meta.get("inherits", "")
    if not isinstance(parent, str):
        raise ParameterError(f"{path}: key 'scenario.inherits': wrong type (got {parent!r}); expected a string")
    return parent


def read_chain(path: Path) -> tuple[list[Layer], str]:
    """The layers of a scenario file and every file it inherits (root first) and their concatenated text."""
    chain: list[tuple[Path, dict[str, Any], str]] = []
    seen: list[Path] = []
    while True:
        if path in seen:
            raise ParameterError(f"{path}: scenario inheritance loops: {' -> '.join(str(p) for p in seen + [path])}")
        seen.append(path)
        raw = read_toml(path)
        chain.append((path, raw, path.read_text()))
        parent = _inherits(raw, path)
        if not parent:
            break
        try:
            path = find_scenario(parent, relative_to=path.parent)
        except ParameterError as e:
            raise ParameterError(f"{path}: key 'scenario.inherits': {e}") from None
    layers = []
    for i, (p, raw, _) in enumerate(reversed(chain)):
        if i < len(chain) - 1:  # a parent's inherits and description do not pass to its children
            meta = {k: v for k, v in raw.get("scenario", {}).items() if k not in ("inherits", "description")}
            raw = {**raw, "scenario": meta}
        layers.append(Layer(str(p), raw, "file"))
    if len(chain) == 1:
        text = chain[0][2]
    else:
        text = "\n".join(f"# ---- {p}\n{t}" for p, _, t in reversed(chain))
    return layers, text


def value_layers(values: Mapping[str, Any], origin: str = "") -> list[Layer]:
    """Typed overrides ``{"ctl.kill_prob": 0.1}`` (``__`` may stand for ``.``, as mesa.batch_run passes them)."""
    out = []
    for k, v in values.items():
        key = k.replace("__", ".")
        out.append(set_layer(key, v, f"{origin}{key}={v!r}"))
    return out


@dataclass(frozen=True)
class Scenario:
    """Parameters + regimen + run settings, validated; ``text`` keeps the TOML it came from, ``layers`` what it
    was built from (files root first, then overrides)."""

    meta: ScenarioMeta
    run: RunSettings
    params: Params
    regimen: Regimen
    source: str = ""
    text: str = ""
    layers: tuple[Layer, ...] = ()

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def overrides(self) -> list[str]:
        """The overrides applied on top of the scenario files, as ``key=value`` text, in order."""
        return [layer.source.removeprefix("--set ") for layer in self.layers if layer.kind in ("set", "value")]

    # ---------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_layers(cls, layers: Iterable[Layer], source: str = "<scenario>", text: str = "") -> Scenario:
        """Merge the layers over the defaults and validate once; every error names the layer that set the key."""
        layers = tuple(layers)
        merged = merge(layers, base_source=source, defaults=defaults_of(ScenarioDoc))
        doc = validate_merged(ScenarioDoc, merged)
        check_regimen(doc.regimen, doc.pk, merged.source_of)
        params = Params.model_validate({k: getattr(doc, k) for k in Params.model_fields})
        return cls(doc.scenario, doc.run, params, doc.regimen, source, text, layers)

    @classmethod
    def default(cls) -> Scenario:
        return cls.from_layers([], source="<default>")

    @classmethod
    def load(
        cls, name: str | os.PathLike, sets: Iterable[str] | None = None, values: Mapping[str, Any] | None = None
    ) -> Scenario:
        """A scenario file (a shipped name or a path), with ``--set`` strings and typed ``values`` on top."""
        path = find_scenario(name)
        layers, text = read_chain(path)
        extra = set_layers(sets or []) + value_layers(values or {})
        return cls.from_layers([*layers, *extra], source=str(path), text=text)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<scenario>", text: str = "") -> Scenario:
        return cls.from_layers([Layer(source, raw)], source=source, text=text)

    def with_overrides(self, sets: Iterable[str] = (), values: Mapping[str, Any] | None = None) -> Scenario:
        """A copy with ``key.path=value`` strings and typed ``values`` applied (one validation for all of them)."""
        extra = set_layers(sets) + value_layers(values or {})
        if not extra:
            return self
        return Scenario.from_layers([*self.layers, *extra], source=self.source, text=self.text)

    def with_params(self, params: Params) -> Scenario:
        return dataclasses.replace(self, params=params)

    def make_therapy(self):
        """The therapy driver for this scenario's regimen, or None when untreated."""
        r = self.regimen
        if r is None or (not r.doses and not r.transfers):
            return None
        return Therapy(r, self.params, self.run.days)

    def resolved(self) -> dict[str, Any]:
        """Everything that defines the run, as JSON-able data (what output files record)."""
        return {
            "scenario": self.meta.model_dump(mode="json"),
            "run": self.run.model_dump(mode="json"),
            "regimen": self.regimen.model_dump(mode="json") if self.regimen is not None else None,
            "params": self.params.model_dump(mode="json"),
        }
