"""A policy kind's options: its class's dataclass fields, read as their annotations say.

Standard library only: gpupool.policies.schema wraps each option in a pydantic
field whose check is :func:`convert`, and gpupool.policies.document lists them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from gpupool import limits

MISSING = object()  # what convert returns for a value that is not of the annotation


def option_fields(cls: type) -> dict[str, tuple[Any, bool]]:
    """Option name -> (annotated type, required) for a dataclass policy class."""
    if not dataclasses.is_dataclass(cls):
        return {}
    hints = typing.get_type_hints(cls)
    spec = {}
    for f in dataclasses.fields(cls):
        if f.name == "params" or not f.init:
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        spec[f.name] = (hints.get(f.name, Any), required)
    return spec


def convert(value: Any, annotation: Any) -> Any:
    """``value`` as an instance of ``annotation``, or MISSING if it is not one.

    Handles what policy options need: bool, int, float (ints accepted), str,
    Literal, unions with None, tuple[X, ...], Mapping/dict[K, V], Any.
    """
    if annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return value if value in args else MISSING
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            converted = convert(value, arg)
            if converted is not MISSING:
                return converted
        return MISSING
    if annotation is type(None):
        return None if value is None else MISSING
    if origin is tuple:
        if not isinstance(value, list):
            return MISSING
        item_type = args[0] if args else Any
        items = [convert(v, item_type) for v in value]
        return MISSING if MISSING in items else tuple(items)
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        if not isinstance(value, dict):
            return MISSING
        key_type, item_type = args if args else (Any, Any)
        pairs = [(convert(k, key_type), convert(v, item_type)) for k, v in value.items()]
        return MISSING if any(MISSING in pair for pair in pairs) else dict(pairs)
    if annotation is bool:
        return value if isinstance(value, bool) else MISSING
    if annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return value if ok and limits.POLICY_NUMBER.holds(value) else MISSING
    if annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if ok and limits.POLICY_NUMBER.holds(value) else MISSING
    if isinstance(annotation, type):
        return value if isinstance(value, annotation) else MISSING
    return value


def describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if annotation is type(None):
        return "null"
    if origin is tuple:
        return f"a list of {describe(args[0]) if args else 'values'}"
    if origin in (dict, Mapping):
        return "a mapping"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))
