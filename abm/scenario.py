"""A Scenario: the parameter tree, a regimen and run settings, loaded from TOML, validated and fully resolved.

A scenario file has a ``[scenario]`` table (name, description, ``inherits``), a ``[run]`` table (days, seed,
snapshot interval), a ``[regimen]`` table (see :mod:`abm.therapy.regimen`), and any parameter groups of
:class:`abm.params.Params` at the top level (``[ctl]``, ``[patient]``, ``[species.il2]``...). ``inherits`` names
another scenario; the child's keys override the parent's, tables merge key by key and lists are replaced whole.

What ``inherits`` may name (:func:`find_parent`): a ``.toml`` regular file, given as a path relative to the
inheriting file (``base``, ``base.toml``, ``../common/base.toml``), or as a name or relative path inside a directory
of ``ABM_SCENARIO_PATH`` or the shipped ``scenarios/`` (``untreated``), without leaving that directory. Absolute
paths, other suffixes, directories, devices and FIFOs are refused, and a chain has at most
:data:`MAX_INHERITS` files.

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
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from pydantic import Field, field_validator

from abm import limits
from abm.errors import ParameterError
from abm.params import Params
from abm.params.core import (
    Group,
    Layer,
    P,
    defaults_of,
    merge,
    read_toml_text,
    set_layer,
    set_layers,
    validate_merged,
)
from abm.therapy import Therapy
from abm.therapy.regimen import Regimen, check_regimen

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
"""Shipped scenarios (the repository's ``scenarios/``); ``ABM_SCENARIO_PATH`` adds directories before it."""

SECTIONS = ("scenario", "run", "regimen")

MAX_INHERITS = 32
"""Files in one inheritance chain (the shipped ones use 3)."""

MAX_NAME = 128


class ScenarioMeta(Group):
    name: str = P("default", "-", "short name of the scenario")
    description: str = P("", "-", "one line saying what the scenario is")
    inherits: str = P("", "-", "scenario this one extends: a shipped name or a path relative to this file")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        # the name is the default output file name (abm run writes NAME.h5): it must not steer the path
        if not v or len(v) > MAX_NAME:
            raise ValueError(f"a scenario name has 1 to {MAX_NAME} characters (got {len(v)})")
        bad = [c for c in v if c in "/\\" or not c.isprintable()]
        if bad or v.startswith(".") or v != v.strip():
            raise ValueError(
                f"invalid scenario name {v!r}: no '/', '\\', control characters, leading dot or padding (it names "
                "the output file)"
            )
        return v


class RunSettings(Group):
    days: float = P(28.0, "day", "simulated time", gt=0, le=3650)
    seed: int | None = P(None, "-", "seed of every random draw (none: drawn fresh and recorded)", ge=0, lt=2**64)
    snapshot_every_min: float = P(
        1440.0, "min", "interval between lattice and field snapshots in the output", gt=0, le=3650 * 1440
    )


class ScenarioDoc(Params):
    """Everything a scenario file can hold: the parameter groups at the top level and three sections."""

    scenario: ScenarioMeta = Field(default_factory=ScenarioMeta)
    run: RunSettings = Field(default_factory=RunSettings)
    regimen: Regimen = Field(default_factory=Regimen)


def search_path() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("ABM_SCENARIO_PATH", "").split(os.pathsep) if p]
    return extra + [SCENARIO_DIR]


def _is_regular(p: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(p).st_mode)
    except (OSError, ValueError):
        return False


def find_scenario(name: str | os.PathLike, relative_to: Path | None = None) -> Path:
    """A scenario file from a path, or from a shipped name (``high_dose_il2`` or ``high_dose_il2.toml``).

    With ``relative_to`` (the directory of an inheriting file) the name is what ``inherits`` says: see
    :func:`find_parent`."""
    if relative_to is not None:
        return find_parent(str(name), relative_to)
    if isinstance(name, str) and ("\0" in name or not name.strip()):
        raise ParameterError(f"{name!r}: not a scenario name or path")
    p = Path(name)
    if p.name in ("", ".", ".."):
        raise ParameterError(f"{name}: names a directory, not a scenario file")
    candidates = [p]
    for d in search_path():
        candidates += [d / p, d / p.with_suffix(".toml")]
    for c in candidates:
        if _is_regular(c):
            return c.resolve()
    if p.exists():
        raise ParameterError(f"{name}: not a regular file; a scenario is a .toml file")
    _not_found(name, p)


def find_parent(name: str, relative_to: Path) -> Path:
    """The file an ``inherits = name`` names, from a file in ``relative_to``: a ``.toml`` regular file relative
    to that directory, or inside a directory of :func:`search_path` (without leaving it). Absolute paths and other
    suffixes are refused."""
    if "\0" in name or not name.strip():
        raise ParameterError(f"{name!r}: not a scenario name or path")
    p = Path(name)
    if p.is_absolute() or name.startswith("~"):
        raise ParameterError(
            f"{name}: an absolute path; inherits names a scenario relative to this file, or a name in "
            f"{', '.join(str(d) for d in search_path())}"
        )
    if p.name in ("", ".", ".."):
        raise ParameterError(f"{name}: names a directory; inherits names a .toml file")
    if p.suffix not in ("", ".toml"):
        raise ParameterError(f"{name}: inherits names a .toml file (got the suffix {p.suffix!r})")
    names = [p] if p.suffix == ".toml" else [p.with_name(p.name + ".toml"), p]
    for q in names:
        c = relative_to / q
        if c.suffix == ".toml" and _is_regular(c):
            return c.resolve()
    for d in search_path():
        root = d.resolve() if d.is_dir() else None
        if root is None:
            continue
        for q in names:
            c = (d / q).resolve()
            if c.suffix == ".toml" and c.is_relative_to(root) and _is_regular(c):
                return c
    for q in names:
        if (relative_to / q).exists():
            raise ParameterError(f"{relative_to / q}: not a regular .toml file")
    _not_found(name, p)


def _not_found(name: str | os.PathLike, p: Path) -> NoReturn:
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
        if len(seen) >= MAX_INHERITS:
            raise ParameterError(
                f"{seen[-1]}: key 'scenario.inherits': the inheritance chain from {seen[0]} is longer than "
                f"{MAX_INHERITS} files"
            )
        seen.append(path)
        raw, text = read_toml_text(path)
        chain.append((path, raw, text))
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
    origin: dict[str, Any] | None = None
    """Where a run of it starts when not from t = 0: the checkpoint of another run (``abm run --from-checkpoint``)."""

    @property
    def name(self) -> str:
        return self.meta.name

    def source_of(self, path: Iterable[Any]) -> str:
        """The file or ``--set`` that set the key at ``path`` (the scenario's source when no layer set it)."""
        return merge(self.layers, base_source=self.source or "<scenario>").source_of(path)

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
        limits.check_scenario(doc.run, params, doc.regimen, merged.source_of)
        return cls(doc.scenario, doc.run, params, doc.regimen, source, text, layers)

    @classmethod
    def default(cls) -> Scenario:
        return cls.from_layers([], source="<default>")

    @classmethod
    def load(
        cls,
        name: str | os.PathLike,
        sets: Iterable[str] | None = None,
        values: Mapping[str, Any] | None = None,
        layers: Iterable[Layer] = (),
    ) -> Scenario:
        """A scenario file (a shipped name or a path), with ``--set`` strings, typed ``values`` and further
        ``layers`` (each naming its source, e.g. ``--days 3``) on top."""
        path = find_scenario(name)
        files, text = read_chain(path)
        extra = set_layers(sets or []) + value_layers(values or {}) + list(layers)
        return cls.from_layers([*files, *extra], source=str(path), text=text)

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
            **({"origin": self.origin} if self.origin is not None else {}),
        }
