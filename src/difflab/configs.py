"""Typed, frozen config dataclasses: build from dicts with validation, override by dotted keys, save as JSON.

Every config field carries `metadata={"help": ...}` so that `difflab config` can document each key.
Discrete choices are `Literal[...]` and are validated here, with the valid values in the error.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from difflab.errors import UserError

T = TypeVar("T")


def field(default: Any = dataclasses.MISSING, *, help: str, default_factory: Any = dataclasses.MISSING):
    """A dataclass field that carries its documentation."""
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is tuple:
        args = get_args(tp)
        return f"tuple[{_type_name(args[0])}, ...]" if len(args) == 2 and args[1] is Ellipsis else str(tp)
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; convert lists to tuples and ints to floats."""
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise UserError(f"config key '{key}' must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except UserError:
                continue
        raise UserError(f"config key '{key}' must be {_type_name(tp)}; got {value!r}")
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key '{key}' must be a list ({_type_name(tp)}); got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], key) for v in value)
        if len(args) != len(value):
            raise UserError(f"config key '{key}' must have {len(args)} entries; got {value!r}")
        return tuple(_convert(v, a, key) for v, a in zip(value, args))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}' must be a mapping of {tp.__name__} fields; got {value!r}")
        return from_dict(tp, value, prefix=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"config key '{key}' must be true or false; got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise UserError(f"config key '{key}' must be an integer; got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # NaN and inf parse as JSON numbers but are never a sensible setting
                raise UserError(f"config key '{key}' must be a finite number; got {value!r}")
            return float(value)
        raise UserError(f"config key '{key}' must be a number; got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise UserError(f"config key '{key}' must be a string; got {value!r}")
    raise TypeError(f"unsupported config annotation {tp!r} for '{key}'")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build the dataclass `cls` from a (possibly partial) dict; unknown keys list the valid ones."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"'{prefix}.{unknown[0]}'" if prefix else f"'{unknown[0]}'"
        valid = ", ".join(sorted(fields))
        raise UserError(f"unknown config key {where}; valid keys{' under ' + repr(prefix) if prefix else ''}: {valid}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _convert(value, hints[name], key)
    try:
        return cls(**kwargs)
    except UserError:
        raise
    except (TypeError, ValueError) as e:
        raise UserError(f"invalid config{' ' + repr(prefix) if prefix else ''}: {e}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def apply_overrides(cfg: T, items: "list[str] | tuple[str, ...]") -> T:
    """A copy of `cfg` with every 'key=value' item (e.g. 'train.lr=1e-4') set, validated once at the end.

    Values are parsed as JSON when they can be (numbers, true/false, null, lists); a string-typed key
    keeps the raw text (so a data name like '2024' stays a string). Setting all keys before validating
    lets interdependent keys (widths and heads, channels and a condition) change together in any order.
    """
    if not items:
        return cfg
    types_ = {key: typ for key, typ, _ in describe(type(cfg))}
    data = to_dict(cfg)
    for item in items:
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise UserError(f"--set expects key=value (e.g. train.steps=100); got '{item}'")
        parts = key.split(".")
        node = data
        for n, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                where = ".".join(parts[:n])
                valid = ", ".join(sorted(node)) if isinstance(node, dict) else ""
                raise UserError(f"unknown config key '{key}'; valid keys{' under ' + repr(where) if where else ''}: {valid}")
            if n < len(parts) - 1:
                node = node[part]
        if isinstance(node[parts[-1]], dict):
            raise UserError(f"config key '{key}' is a section; set one of its keys: {', '.join(sorted(node[parts[-1]]))}")
        if types_.get(key) == "str":
            value: Any = raw
        else:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
        node[parts[-1]] = value
    return from_dict(type(cfg), data)


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, type, help) for every leaf field of `cls`, recursively."""
    rows = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe(tp, key))
        else:
            rows.append((key, _type_name(tp), f.metadata.get("help", "")))
    return rows


def load_json(cls: type[T], path: str | Path) -> T:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}; give a preset name or an existing JSON file") from None
    except json.JSONDecodeError as e:
        raise UserError(f"config file {path} is not valid JSON ({e.msg} at line {e.lineno}); fix the file") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a JSON object; got {type(data).__name__}")
    return from_dict(cls, data)


def flatten_dict(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1}} -> {'train.lr': 1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        out.update(flatten_dict(v, key) if isinstance(v, dict) else {key: v})
    return out
