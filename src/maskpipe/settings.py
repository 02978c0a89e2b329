"""Typed, frozen params sections: every option and its default in one place.

A section of params.yaml is a frozen dataclass deriving from ``Section``. ``from_mapping``
refuses unknown keys (naming the nearest valid one), checks each value against the field's
annotation, and checks ranges and choices declared with ``option(...)``:

    @dataclass(frozen=True)
    class CropConfig(Section):
        padding: float = option(0.10, ge=0, le=2, doc="fraction of the box added on each side")

    CropConfig.from_mapping({"paddng": 0.1}, "crop")
    # ConfigError: params.yaml: crop.paddng: unknown key (did you mean 'padding'?)

Why not pydantic: five checks cover every params.yaml value, and a dataclass keeps the resolved
config a plain, picklable, ``asdict``-able record for checkpoints, artifacts and MLflow.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeVar, Union

T = TypeVar("T", bound="Section")
_MISSING = dataclasses.MISSING


class ConfigError(ValueError):
    """A params.yaml value a stage cannot use; the message names the key, e.g. crop.padding."""


def option(
    default: Any = _MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: typing.Iterable[Any] | None = None,
    doc: str = "",
) -> Any:
    """A dataclass field with its default, range (ge/gt/le/lt) and allowed values (choices).

    Mutable defaults (lists, dicts) are copied per instance.
    """
    meta = {
        "ge": ge,
        "gt": gt,
        "le": le,
        "lt": lt,
        "choices": tuple(choices) if choices is not None else None,
        "doc": doc,
    }
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def nearest(key: str, valid: typing.Iterable[str]) -> str | None:
    match = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.5)
    return match[0] if match else None


def unknown_key_message(
    where: str, key: str, valid: typing.Iterable[str], aliases: Mapping[str, str] | None = None
) -> str:
    """One line naming the key and the nearest valid one. ``aliases`` maps common other names to
    valid keys (learning_rate -> lr), so a misspelt alias points at the real key."""
    valid = sorted(valid)
    aliases = {a: k for a, k in (aliases or {}).items() if k in valid}
    near = nearest(key, [*valid, *aliases])
    near = aliases.get(near, near) if near else None
    hint = f"did you mean '{near}'?" if near else f"valid keys: {', '.join(valid)}"
    return f"params.yaml: {where}.{key}: unknown key ({hint})"


@dataclasses.dataclass(frozen=True)
class Section:
    """Base of every typed params section (see the module docstring)."""

    # keys a section tolerates without using them (e.g. documented for another stage)
    ignored_keys: ClassVar[tuple[str, ...]] = ()
    # keys that moved elsewhere: {old key: "where it lives now"}; named in the error
    moved_keys: ClassVar[dict[str, str]] = {}
    # other common names of keys, {alias: key}: an unknown key near an alias suggests the key
    key_aliases: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_mapping(cls: type[T], data: Mapping[str, Any] | None, where: str) -> T:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"params.yaml: {where}: expected a mapping of keys, got {_show(data)}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in cls.ignored_keys:
                continue
            if key in cls.moved_keys:
                raise ConfigError(f"params.yaml: {where}.{key}: moved to {cls.moved_keys[key]}")
            if key not in fields:
                raise ConfigError(unknown_key_message(where, key, fields, cls.key_aliases))
            values[key] = check_value(value, hints[key], f"{where}.{key}", fields[key].metadata)
        for name, f in fields.items():
            if name not in values and f.default is _MISSING and f.default_factory is _MISSING:
                raise ConfigError(f"params.yaml: {where}.{name}: missing (required)")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)


def _show(value: Any) -> str:
    kind = type(value).__name__
    return f"{value!r} (a {kind})" if isinstance(value, str) else repr(value)


def check_value(value: Any, annotation: Any, where: str, meta: Mapping[str, Any] | None = None) -> Any:
    """``value`` checked against ``annotation`` and the range/choices in ``meta``; returns it
    (lists become tuples only where the annotation says tuple; ints pass as floats)."""
    meta = meta or {}
    value = _check_type(value, annotation, where)
    choices = meta.get("choices")
    if choices is not None:
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if item not in choices:
                near = nearest(str(item), [str(c) for c in choices]) if isinstance(item, str) else None
                hint = f" (did you mean '{near}'?)" if near else ""
                raise ConfigError(
                    f"params.yaml: {where}: {item!r} is not one of {', '.join(map(str, choices))}{hint}"
                )
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        _check_range(value, where, meta)
    return value


def _check_range(value: float, where: str, meta: Mapping[str, Any]) -> None:
    ge, gt, le, lt = meta.get("ge"), meta.get("gt"), meta.get("le"), meta.get("lt")
    low = f">= {ge}" if ge is not None else f"> {gt}" if gt is not None else None
    high = f"<= {le}" if le is not None else f"< {lt}" if lt is not None else None
    ok = (
        (ge is None or value >= ge)
        and (gt is None or value > gt)
        and (le is None or value <= le)
        and (lt is None or value < lt)
    )
    if not ok:
        rng = " and ".join(x for x in (low, high) if x)
        raise ConfigError(f"params.yaml: {where}: must be {rng}, got {value!r}")


def _check_type(value: Any, ann: Any, where: str) -> Any:
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if ann is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, where)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        names = " or ".join(_type_name(a) for a in args)
        raise ConfigError(f"params.yaml: {where}: expected {names}, got {_show(value)}")
    if origin is Literal:
        if value not in args:
            near = nearest(str(value), [str(a) for a in args]) if isinstance(value, str) else None
            hint = f" (did you mean '{near}'?)" if near else ""
            raise ConfigError(
                f"params.yaml: {where}: {value!r} is not one of {', '.join(map(str, args))}{hint}"
            )
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"params.yaml: {where}: expected a list, got {_show(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"params.yaml: {where}: expected {len(args)} items, got {len(value)}")
            return tuple(
                _check_type(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item = args[0] if args else Any
        checked = [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(checked) if origin is tuple else checked
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"params.yaml: {where}: expected a mapping, got {_show(value)}")
        kt, vt = args or (Any, Any)
        return {_check_type(k, kt, f"{where}"): _check_type(v, vt, f"{where}.{k}") for k, v in value.items()}
    if isinstance(ann, type) and issubclass(ann, Section):
        return value if isinstance(value, ann) else ann.from_mapping(value, where)
    if ann is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"params.yaml: {where}: expected true or false, got {_show(value)}")
        return value
    if ann is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"params.yaml: {where}: expected an integer, got {_show(value)}")
        return value
    if ann is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"params.yaml: {where}: expected a number, got {_show(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"params.yaml: {where}: expected a finite number, got {value!r}")
        return float(value)
    if ann is str:
        if not isinstance(value, str):
            raise ConfigError(f"params.yaml: {where}: expected a string, got {_show(value)}")
        return value
    raise TypeError(f"{where}: unsupported annotation {ann!r}")  # a bug in a Section, not in params


def _type_name(ann: Any) -> str:
    if ann is float:
        return "a number"
    if ann is int:
        return "an integer"
    if ann is str:
        return "a string"
    if ann is bool:
        return "true/false"
    if typing.get_origin(ann) in (list, tuple):
        return "a list"
    return getattr(ann, "__name__", str(ann))
