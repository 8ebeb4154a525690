"""The machinery under the parameter tree: documented fields, layered overrides, key checks and error messages.

Everything that validates a scenario happens here, once: layers of nested data (a scenario file and the files it
inherits, then ``--set`` strings or keyword overrides, each a :class:`Layer` naming its source) are merged while
remembering which source set each key; the merged data is checked for unknown keys and validated by pydantic in
one pass; every problem becomes one :class:`~abm.errors.ParameterError` line naming the source that set the key,
the key path (``regimen.doses.0.unit``, as ``--set`` writes it), what was given and what is allowed.

This module imports nothing else from abm but :mod:`abm.errors`.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import os
import re
import stat
import tomllib
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

from abm.errors import ParameterError

__all__ = [
    "Group",
    "Layer",
    "P",
    "ParameterError",
    "all_keys",
    "build",
    "describe_range",
    "parameter_rows",
    "parse_set",
    "read_toml",
    "read_toml_text",
    "set_layer",
]


def P(
    default: Any,
    unit: str,
    doc: str,
    *,
    ge: float | None = None,
    le: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    symbol: str = "",
    source: str = "",
) -> Any:
    """A documented parameter field: default, unit, one-line description, bounds, symbol and source."""
    return Field(
        default,
        description=doc,
        ge=ge,
        le=le,
        gt=gt,
        lt=lt,
        json_schema_extra={"unit": unit, "symbol": symbol, "source": source},
    )


class Group(BaseModel):
    """Base of every parameter group: strict keys, values checked on assignment too, numbers finite (NaN and
    infinity are refused wherever a number goes)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)


MAX_DEPTH = 16
"""Tables and lists nest at most this deep in a layer (the tree itself nests 4 levels: species.il2.cells.ctl)."""

MAX_FILE_BYTES = 1 << 20
"""A scenario file is at most 1 MiB."""


def is_index(key: Any) -> bool:
    """A list index as ``--set`` writes it: ASCII digits only (``str.isdigit`` is also true for '²')."""
    return (
        isinstance(key, int)
        and not isinstance(key, bool)
        and key >= 0
        or (isinstance(key, str) and key.isascii() and key.isdigit())
    )


def check_depth(data: Any, source: str, limit: int = MAX_DEPTH) -> None:
    """Refuse data nested deeper than ``limit`` tables or lists (iteratively: no recursion), naming the key."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while stack:
        obj, path = stack.pop()
        if len(path) > limit:
            key = ".".join(path[: limit + 1])
            raise ParameterError(f"{source}: key '{key}...': nested more than {limit} tables or lists deep")
        if isinstance(obj, dict):
            stack.extend((v, (*path, str(k))) for k, v in obj.items())
        elif isinstance(obj, list):
            stack.extend((v, (*path, str(i))) for i, v in enumerate(obj))


# ------------------------------------------------------------------------------------------------- key paths
Path_ = tuple[str, ...]


def _strip_optional(ann: Any) -> Any:
    """``X | None`` -> X (other unions are left alone)."""
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return ann


def _annotated(ann: Any) -> tuple[Any, list[Any]]:
    """``Annotated[X, meta...]`` -> (X, [meta...]); anything else -> (ann, [])."""
    if typing.get_origin(ann) is typing.Annotated:
        base, *meta = typing.get_args(ann)
        return base, list(meta)
    return ann, []


@dataclass(frozen=True)
class Slot:
    """What a key path reaches: the annotation there, its field (if it is a model field) and bound metadata."""

    annotation: Any
    info: FieldInfo | None = None
    metadata: tuple[Any, ...] = ()
    kind: str = "value"  # model | dict | list | value


def _slot(ann: Any, info: FieldInfo | None = None) -> Slot:
    ann = _strip_optional(ann)
    ann, meta = _annotated(ann)
    ann = _strip_optional(ann)
    meta = tuple(meta) + (tuple(info.metadata) if info is not None else ())
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        kind = "model"
    elif typing.get_origin(ann) is dict:
        kind = "dict"
    elif typing.get_origin(ann) is list:
        kind = "list"
    else:
        kind = "value"
    return Slot(ann, info, meta, kind)


def child(slot: Slot, key: str) -> Slot | None:
    """The slot one key below ``slot`` (None if ``key`` is not valid there)."""
    if slot.kind == "model":
        f = slot.annotation.model_fields.get(key)
        return None if f is None else _slot(f.annotation, f)
    if slot.kind == "dict":
        return _slot(typing.get_args(slot.annotation)[1])
    if slot.kind == "list":
        return _slot(typing.get_args(slot.annotation)[0]) if is_index(key) else None
    return None


def slot_at(model: type[BaseModel], path: Iterable[Any]) -> Slot | None:
    s: Slot | None = _slot(model)
    for part in path:
        if s is None:
            return None
        s = child(s, str(part))
    return s


def all_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every leaf key path of a model class (dict entries shown as ``name.<entry>``, list items as ``name.<i>``)."""
    out: list[str] = []

    def walk(s: Slot, pre: str) -> None:
        if s.kind == "model":
            for name, f in s.annotation.model_fields.items():
                walk(_slot(f.annotation, f), f"{pre}{name}.")
        elif s.kind == "dict" and _slot(typing.get_args(s.annotation)[1]).kind == "model":
            walk(_slot(typing.get_args(s.annotation)[1]), f"{pre}<entry>.")
        elif s.kind == "list" and _slot(typing.get_args(s.annotation)[0]).kind == "model":
            walk(_slot(typing.get_args(s.annotation)[0]), f"{pre}<i>.")
        else:
            out.append(pre[:-1])

    walk(_slot(model), prefix)
    return out


# ------------------------------------------------------------------------------------------------ the layers
@dataclass(frozen=True)
class Layer:
    """Nested override data and the source it came from (a file path, ``--set k=v``, ``k=v`` keyword...).

    ``kind`` says what made it: ``file`` (a scenario file), ``set`` (a ``--set`` string), ``value`` (a typed
    override from Python) or ``data``."""

    source: str
    data: dict[str, Any]
    kind: str = "data"


def nest(key: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def set_layer(key: str, value: Any, source: str | None = None) -> Layer:
    """A layer that sets one dotted key (``regimen.doses.0.dose``) to a typed value."""
    if not key or any(not p for p in key.split(".")):
        raise ParameterError(f"{source or key}: empty key in {key!r}")
    return Layer(source or f"{key}={value!r}", nest(key, value), "value")


def parse_set(s: str) -> tuple[str, Any]:
    """``'ctl.kill_prob=0.1'`` -> ``('ctl.kill_prob', 0.1)``; the value is parsed as TOML, else kept as a string."""
    if not isinstance(s, str) or "=" not in s:
        raise ParameterError(f"--set {s!r}: expected key.path=value")
    key, raw = (t.strip() for t in s.split("=", 1))
    if not key or any(not p for p in key.split(".")):
        raise ParameterError(f"--set {s!r}: empty key")
    if "\n" in raw or "\r" in raw:
        raise ParameterError(f"--set {s!r}: the value spans lines; give one TOML value on one line")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    except RecursionError:
        raise ParameterError(f"--set {s!r}: key '{key}': the value nests too deeply") from None
    return key, value


def set_layers(sets: Iterable[str]) -> list[Layer]:
    """``--set`` strings -> layers, each naming its ``--set``."""
    out = []
    for s in sets:
        key, value = parse_set(s)
        out.append(Layer(f"--set {s}", nest(key, value), "set"))
    return out


@dataclass
class Merged:
    """The merged data of several layers and, per key path, the source that last set it."""

    data: dict[str, Any] = field(default_factory=dict)
    origin: dict[Path_, str] = field(default_factory=dict)
    base_source: str = "<parameters>"

    def source_of(self, path: Iterable[Any]) -> str:
        p = tuple(str(x) for x in path)
        for n in range(len(p), 0, -1):
            if p[:n] in self.origin:
                return self.origin[p[:n]]
        return self.base_source


def _record(origin: dict[Path_, str], path: Path_, source: str) -> None:
    for k in [k for k in origin if k[: len(path)] == path]:
        del origin[k]
    origin[path] = source


def _merge_value(base: Any, over: Any, path: Path_, source: str, origin: dict[Path_, str]) -> Any:
    """Tables merge key by key; a table of integer keys edits a list by index; anything else replaces."""
    if isinstance(over, dict) and isinstance(base, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge_value(base.get(k), v, (*path, str(k)), source, origin) if k in base else copy.deepcopy(v)
            if k not in base:
                _record(origin, (*path, str(k)), source)
        return out
    if isinstance(over, dict) and isinstance(base, list) and over and all(is_index(k) for k in over):
        out = list(base)
        for k, v in over.items():
            i = int(k)
            if i >= len(out):
                where = ".".join((*path, str(k)))
                raise ParameterError(
                    f"{source}: key '{where}': list index {i} out of range (the list has {len(out)} items)"
                )
            out[i] = _merge_value(out[i], v, (*path, str(i)), source, origin)
        return out
    _record(origin, path, source)
    return copy.deepcopy(over)


def merge(layers: Iterable[Layer], base_source: str = "<parameters>", defaults: dict[str, Any] | None = None) -> Merged:
    """Merge ``layers`` in order over ``defaults`` (the model's default values as data, which name no source:
    entries of dict-valued groups such as species keep every default key a layer does not set)."""
    m = Merged(data=copy.deepcopy(defaults or {}), base_source=base_source)
    for layer in layers:
        if not isinstance(layer.data, dict):
            raise ParameterError(f"{layer.source}: expected a table of keys, got {type(layer.data).__name__}")
        check_depth(layer.data, layer.source)
        for k, v in layer.data.items():
            if k in m.data:
                m.data[k] = _merge_value(m.data[k], v, (str(k),), layer.source, m.origin)
            else:
                m.data[k] = copy.deepcopy(v)
                _record(m.origin, (str(k),), layer.source)
    return m


# ------------------------------------------------------------------------------------------------- key checks
def _valid_here(slot: Slot) -> list[str]:
    return list(slot.annotation.model_fields) if slot.kind == "model" else []


def check_keys(model: type[BaseModel], merged: Merged) -> None:
    """Reject unknown keys before validation, naming the source, the key and the nearest valid keys."""
    leaves = all_keys(model)

    def walk(data: Any, slot: Slot, path: Path_) -> None:
        if slot.kind == "list" and isinstance(data, list):
            item = _slot(typing.get_args(slot.annotation)[0])
            for i, v in enumerate(data):
                walk(v, item, (*path, str(i)))
            return
        if not isinstance(data, dict) or slot.kind not in ("model", "dict"):
            return
        for k, v in data.items():
            sub = child(slot, str(k))
            if sub is None:
                here = ".".join((*path, str(k)))
                valid = _valid_here(slot)
                near = [".".join((*path, n)) for n in difflib.get_close_matches(str(k), valid, n=3, cutoff=0.5)]
                if not near:
                    near = difflib.get_close_matches(here, leaves, n=3, cutoff=0.6)
                hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else "."
                where = ".".join(path) or "the top level"
                raise ParameterError(
                    f"{merged.source_of((*path, str(k)))}: unknown key '{here}'{hint} "
                    f"Valid keys in {where}: {', '.join(valid)}."
                )
            walk(v, sub, (*path, str(k)))

    walk(merged.data, _slot(model), ())


# --------------------------------------------------------------------------------------------------- errors
def describe_range(slot_or_info: Any) -> str:
    """``allowed range [0, 1]`` (with the unit) from a field's bounds; '' when it has none."""
    if slot_or_info is None:
        return ""
    if isinstance(slot_or_info, Slot):
        meta, info = slot_or_info.metadata, slot_or_info.info
    else:
        meta, info = tuple(slot_or_info.metadata), slot_or_info
    lo = hi = None
    lo_c, hi_c = "[", "]"
    for m in meta:
        for attr in ("ge", "gt", "le", "lt"):
            val = getattr(m, attr, None)
            if val is None:
                continue
            if attr in ("ge", "gt"):
                lo, lo_c = val, ("[" if attr == "ge" else "(")
            else:
                hi, hi_c = val, ("]" if attr == "le" else ")")
    extra = info.json_schema_extra if info is not None and isinstance(info.json_schema_extra, dict) else {}
    unit = extra.get("unit", "")
    unit = "" if unit in ("", "-") else f" {unit}"
    if lo is None and hi is None:
        return ""
    lo_s = f"{lo_c}{lo}" if lo is not None else "(-inf"
    hi_s = f"{hi}{hi_c}" if hi is not None else "inf)"
    return f"allowed range {lo_s}, {hi_s}{unit}"


_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "string": "a string",
    "bool": "true or false",
    "list": "a list",
    "dict": "a table",
    "model": "a table",
}


def _expected_type(slot: Slot | None, err_type: str) -> str:
    if slot is not None and slot.kind in ("model", "dict"):
        return "a table"
    if slot is not None and slot.kind == "list":
        return "a list"
    if slot is not None and isinstance(slot.annotation, type):
        return _TYPE_WORDS.get(slot.annotation.__name__, slot.annotation.__name__)
    return _TYPE_WORDS.get(err_type.split("_")[0], err_type.split("_")[0])


def describe_error(err: dict[str, Any], slot: Slot | None) -> str:
    """One pydantic error as a sentence: what was wrong, what was given, what is allowed."""
    t = err["type"]
    given = err.get("input")
    given_s = f" (got {given!r})" if not isinstance(given, dict | list) else ""
    if t in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return f"value out of range{given_s}; {describe_range(slot)}"
    if t == "literal_error":
        expected = (err.get("ctx") or {}).get("expected", err["msg"])
        return f"invalid choice{given_s}; allowed: {expected}"
    if t == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    if t == "extra_forbidden":
        return "unknown key"
    if t == "missing":
        return "required key missing"
    if t == "finite_number":
        rng = describe_range(slot)
        return f"not a finite number{given_s}; NaN and infinity are not allowed" + (f"; {rng}" if rng else "")
    if t.endswith("_type") or t.endswith("_parsing") or t == "int_from_float":
        msg = f"wrong type{given_s}; expected {_expected_type(slot, t)}"
        rng = describe_range(slot)
        return msg + (f", {rng}" if rng else "")
    return err["msg"] + given_s


_KEY_IN_TEXT = re.compile(r"\b[A-Za-z_]\w*(?:\.\w+)+")
_QUOTED = re.compile(r"'([^'.]+)'")
_WORD = re.compile(r"\b[A-Za-z_]\w*\b")


def _named_key(err: dict[str, Any], loc: Path_, model: type[BaseModel], where: Callable[[Path_], str]) -> Path_:
    """A check across keys (a model validator) reports at its table; the key paths its message names say which
    keys, and the one a layer set names the source (``--set patient.toxicity_hold_threshold=2``)."""
    if err["type"] != "value_error":
        return loc
    msg = str(err.get("msg", ""))
    found = [(*loc, *m.split(".")) for m in _KEY_IN_TEXT.findall(msg)]
    found = [p for p in found if slot_at(model, p) is not None]
    if not found:
        # a check of a table's members names them bare (``phase_fractions must have ...``, ``unknown cell type
        # 'i'``): the one a later layer than the table's set (or added) names the source
        named = [(*loc, m) for m in [*_QUOTED.findall(msg), *_WORD.findall(msg)]]
        return next((p for p in named if where(p) != where(loc)), loc)
    base = where(())
    return next((p for p in found if where(p) != base), found[0])


def format_validation_error(e: ValidationError, model: type[BaseModel], where: Callable[[Path_], str]) -> str:
    lines = []
    for err in e.errors():
        loc = tuple(str(p) for p in err["loc"])
        at = _named_key(err, loc, model, where)
        key = ".".join(at) or "(top level)"
        lines.append(f"{where(at)}: key '{key}': {describe_error(err, slot_at(model, loc))}")
    return "\n".join(dict.fromkeys(lines))


def build(model: type[BaseModel], layers: Iterable[Layer], base_source: str = "<parameters>") -> Any:
    """Merge ``layers`` over ``model``'s defaults, check keys and validate once; errors name their source."""
    return validate_merged(model, merge(layers, base_source, defaults_of(model)))


def defaults_of(model: type[BaseModel]) -> dict[str, Any]:
    """The default instance of ``model`` as plain data (the base every layer merges over)."""
    return model().model_dump(mode="json")


def validate_merged(model: type[BaseModel], merged: Merged) -> Any:
    """Validate already merged data (keys checked here too)."""
    check_keys(model, merged)
    try:
        return model.model_validate(merged.data)
    except ValidationError as e:
        raise ParameterError(format_validation_error(e, model, merged.source_of)) from None


# --------------------------------------------------------------------------------------------------- files
def read_toml(path: Path) -> dict[str, Any]:
    """The TOML table of a scenario file (see :func:`read_toml_text`)."""
    return read_toml_text(path)[0]


def read_toml_text(path: Path) -> tuple[dict[str, Any], str]:
    """A scenario file read once: (its TOML table, its text). Only a regular file of at most
    :data:`MAX_FILE_BYTES`, UTF-8 text, valid TOML, nested at most :data:`MAX_DEPTH` deep; anything else is a
    ParameterError naming the file (and the key, where there is one)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ParameterError(f"{path}: file not found") from None
    except OSError as e:
        raise ParameterError(f"{path}: cannot read the scenario file ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ParameterError(f"{path}: not a regular file; a scenario is a .toml file")
    if st.st_size > MAX_FILE_BYTES:
        raise ParameterError(f"{path}: {st.st_size:,} bytes; a scenario file is at most {MAX_FILE_BYTES:,} bytes")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ParameterError(f"{path}: cannot read the scenario file ({e.strerror or e})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ParameterError(f"{path}: more than {MAX_FILE_BYTES:,} bytes; a scenario file is at most that")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ParameterError(
            f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at line {line}); a scenario file is TOML in UTF-8"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ParameterError(f"{path}: not valid TOML: {e}") from None
    except RecursionError:
        raise ParameterError(f"{path}: not valid TOML: arrays or inline tables nest too deeply") from None
    check_depth(data, str(path))
    return data, text


# ------------------------------------------------------------------------------------------------ documentation
def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def parameter_rows(model: type[BaseModel], instance: Any = None, prefix: str = "") -> list[dict[str, str]]:
    """One row per parameter (name, symbol, default, unit, range, description, source), in tree order; entries of
    dict fields (species, drugs) and their nested tables expand under their names."""
    instance = instance if instance is not None else model()
    rows = []
    for name, f in model.model_fields.items():
        value = getattr(instance, name)
        if isinstance(value, BaseModel):
            rows += parameter_rows(type(value), value, f"{prefix}{name}.")
            continue
        if isinstance(value, dict) and value and all(isinstance(v, BaseModel) for v in value.values()):
            for entry, sub in value.items():
                rows += parameter_rows(type(sub), sub, f"{prefix}{name}.{entry}.")
            continue
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        rows.append(
            {
                "name": prefix + name,
                "symbol": extra.get("symbol", ""),
                "default": _fmt(value) if not isinstance(value, dict) else json.dumps(value),
                "unit": extra.get("unit", ""),
                "range": describe_range(f).replace("allowed range ", ""),
                "description": f.description or "",
                "source": extra.get("source", ""),
            }
        )
    return rows
