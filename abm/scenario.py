"""A Scenario: the parameter tree, a regimen and run settings, loaded from TOML, validated and fully resolved.

A scenario file has a ``[scenario]`` table (name, description, ``inherits``), a ``[run]`` table (days, seed,
snapshot interval), a ``[regimen]`` table (see :mod:`abm.therapy.regimen`), and any parameter groups of
:class:`abm.params.Params` at the top level (``[ctl]``, ``[patient]``, ``[species.il2]``...). ``inherits`` names
another scenario (a shipped name or a path relative to this file); the child's keys override the parent's, tables
merge key by key and lists are replaced whole.

Overrides use ``key.path=value``: ``run.days=7``, ``ctl.kill_prob=0.1``, ``regimen.dose_scale.il2=0.1``,
``regimen.doses.0.dose=72000`` (list items by index).
"""

from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from abm.params import (
    Group,
    P,
    ParameterError,
    Params,
    all_keys,
    check_keys,
    format_validation_error,
    parse_set,
    read_toml,
)

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


def _merge(base: Any, over: Any) -> Any:
    """Deep merge: tables merge key by key, a dict with integer-string keys edits a list by index, anything else
    replaces."""
    if isinstance(over, dict) and isinstance(base, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base.get(k), v) if k in base else copy.deepcopy(v)
        return out
    if isinstance(over, dict) and isinstance(base, list) and all(str(k).isdigit() for k in over):
        out = list(base)
        for k, v in over.items():
            i = int(k)
            if i >= len(out):
                raise ParameterError(f"list index {i} out of range (the list has {len(out)} items)")
            out[i] = _merge(out[i], v)
        return out
    return copy.deepcopy(over)


def _nest(key: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


class Scenario(BaseModel):
    """Parameters + regimen + run settings, validated; ``text`` keeps the TOML it came from."""

    model_config = {"arbitrary_types_allowed": True}

    meta: ScenarioMeta = Field(default_factory=ScenarioMeta)
    run: RunSettings = Field(default_factory=RunSettings)
    params: Params = Field(default_factory=Params)
    regimen: Any = None
    source: str = ""
    text: str = ""
    raw: dict[str, Any] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.meta.name

    # ---------------------------------------------------------------------------------------------- loading
    @classmethod
    def default(cls) -> Scenario:
        return cls.from_dict({}, source="<default>")

    @classmethod
    def load(cls, name: str | os.PathLike, sets: list[str] | None = None) -> Scenario:
        path = find_scenario(name)
        raw, text = _load_chain(path, [])
        sc = cls.from_dict(raw, source=str(path), text=text)
        return sc.with_overrides(sets) if sets else sc

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<scenario>", text: str = "") -> Scenario:
        from abm.therapy.regimen import Regimen

        raw = copy.deepcopy(raw)
        _check_top_level(raw, source)
        meta = _validate(ScenarioMeta, raw.get("scenario", {}), source, "scenario")
        run = _validate(RunSettings, raw.get("run", {}), source, "run")
        regimen = _validate(Regimen, raw.get("regimen", {}), source, "regimen")
        pdata = {k: v for k, v in raw.items() if k not in SECTIONS}
        params = Params.from_overrides(pdata, source=source)
        return cls(meta=meta, run=run, params=params, regimen=regimen, source=source, text=text, raw=raw)

    def with_overrides(self, sets: list[str]) -> Scenario:
        """A copy with ``key.path=value`` overrides (parameters, ``run.*``, ``regimen.*``, ``scenario.*``)."""
        raw = copy.deepcopy(self.raw)
        for s in sets:
            key, value = parse_set(s)
            try:
                _check_top_level({key.split(".")[0]: None}, "--set " + s)
                if key.split(".")[0] not in SECTIONS:
                    check_keys(_nest(key, value), Params, "--set " + s)
                raw = _merge(raw, _nest(key, value))
                Scenario.from_dict(raw, source="--set " + s)
            except ParameterError as e:
                msg = str(e)
                raise ParameterError(msg if msg.startswith(f"--set {s}") else f"--set {s}: {msg}") from None
        return Scenario.from_dict(raw, source=self.source, text=self.text)

    def with_params(self, params: Params) -> Scenario:
        return self.model_copy(update={"params": params})

    def make_therapy(self):
        """The therapy driver for this scenario's regimen, or None when untreated."""
        from abm.therapy import Therapy

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


def _load_chain(path: Path, seen: list[Path]) -> tuple[dict[str, Any], str]:
    if path in seen:
        chain = " -> ".join(str(p) for p in seen + [path])
        raise ParameterError(f"{path}: scenario inheritance loops: {chain}")
    raw = read_toml(path)
    text = path.read_text()
    parent_name = raw.get("scenario", {}).get("inherits", "")
    if parent_name:
        try:
            parent_path = find_scenario(parent_name, relative_to=path.parent)
        except ParameterError as e:
            raise ParameterError(f"{path}: key 'scenario.inherits': {e}") from None
        parent_raw, parent_text = _load_chain(parent_path, seen + [path])
        parent_raw.get("scenario", {}).pop("inherits", None)
        parent_raw.get("scenario", {}).pop("description", None)
        raw = _merge(parent_raw, raw)
        text = f"# ---- inherited from {parent_path}\n{parent_text}\n# ---- {path}\n{text}"
    return raw, text


def _check_top_level(raw: dict[str, Any], source: str) -> None:
    valid = list(SECTIONS) + list(Params.model_fields)
    for k in raw:
        if k not in valid:
            near = difflib.get_close_matches(k, valid, n=3, cutoff=0.5)
            near += [n for n in difflib.get_close_matches(k, all_keys(Params), n=2, cutoff=0.6) if n not in near]
            hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
            raise ParameterError(f"{source}: unknown top-level key '{k}'{hint} Valid tables: {', '.join(valid)}.")


def _validate(model: type[BaseModel], data: Any, source: str, section: str) -> Any:
    if not isinstance(data, dict):
        raise ParameterError(f"{source}: key '{section}' must be a table, got {data!r}")
    from pydantic import ValidationError

    _check_section_keys(data, model, source, section)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        if section == "regimen":
            import re

            from abm.therapy.regimen import format_regimen_error

            # list items as --set writes them: regimen.doses.0.unit
            _raise(re.sub(r"\[(\d+)\]", r".\1", format_regimen_error(e, source)))
        msg = format_validation_error(e, model, source)
        return _raise(msg.replace(f"{source}: key '", f"{source}: key '{section}.", -1))


def _check_section_keys(data: dict[str, Any], model: type[BaseModel], source: str, section: str) -> None:
    try:
        check_keys(data, model, source)
    except ParameterError as e:
        raise ParameterError(
            str(e)
            .replace(f"{source}: unknown key '", f"{source}: unknown key '{section}.", 1)
            .replace("did you mean '", f"did you mean '{section}.")
            .replace("Valid keys in the top level", f"Valid keys in {section}")
        ) from None


def _raise(msg: str):
    raise ParameterError(msg)
