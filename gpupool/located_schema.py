"""Typed schemas over located YAML: the pydantic models the readers validate with.

A reader composes its file with gpupool.located_yaml (nodes that know their
line), turns the nodes into plain values, validates them with a pydantic model
built from the field types here, and maps each pydantic error's ``loc`` back to
the node it came from (:class:`Located`), so every problem keeps the form
``file:line field.path: message``. ``gpupool schema KIND`` prints the JSON
Schema of the very same models (gpupool.schemas collects them), so an editor
and the reader agree by construction.

The field types below are the one place a value from a file is read as a
number, an integer, a share, a name, a flag, one of a few words or an instant:
each is a pydantic type whose validator gives the reader's message ("must be
> 0", "must be between 0.001 and 1,000 (weight)") and whose JSON Schema states
the same bounds (from gpupool.limits). Models derive from :class:`Closed`,
whose unknown keys are errors with a "did you mean" hint.

Readers on it: policy documents (gpupool.policies.document), programme and
voucher declarations (gpupool.accounting.declarations), YAML batch files
(gpupool.scheduler.batch), and a scenario's platform sections, job_classes and
start (gpupool.simulations.scenario_schema); the rest of a scenario is still walked
by hand (its models in gpupool.schemas are written with these types, ready for
the reader to validate with them).

pydantic is imported by whoever reads a file, never by the CLI's start-up.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from gpupool import limits, located_yaml
from gpupool.model import GpupoolError

Problem = tuple[str, str]  # (location "file:line field.path", message)

UNKNOWN_KEY = "unknown_key"  # the error type of a key a model does not have
_KEY = "[key]"  # pydantic's loc part for a mapping's key


def fail(message: str, kind: str = "invalid") -> Any:
    """Refuse a value with the reader's own words (no "Value error, " prefix)."""
    raise PydanticCustomError(kind, message)  # no context: braces are kept as written


def unknown(key: str, known: Iterable[str], what: str = "field") -> str:
    """``unknown field 'x'``, with the closest known name or the list of them."""
    known = tuple(known)
    message = f"unknown {what} {key!r}"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"{message} (did you mean {close[0]!r}?)"
    return f"{message}; expected one of: {', '.join(known)}"


# ---------------------------------------------------------------------------
# Closed mappings
# ---------------------------------------------------------------------------


class Closed(BaseModel):
    """A mapping whose unknown keys are errors (reported with every other problem)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def unknown_key(cls, key: str) -> str:
        """The message for a key this model lacks; a model may say it its own way."""
        return unknown(key, cls.model_fields)

    @model_validator(mode="wrap")
    @classmethod
    def _refuse_unknown_keys(cls, data: Any, handler: Callable) -> Any:
        # pydantic's own extra="forbid" error cannot name the close match; this
        # reports unknown keys and still validates the known ones, so all come out
        if not isinstance(data, Mapping):
            return handler(data)
        errors = [_key_error(cls, key, data[key]) for key in data if key not in cls.model_fields]
        if not errors:
            return handler(data)
        try:
            handler({key: value for key, value in data.items() if key in cls.model_fields})
        except ValidationError as exc:
            errors += [_again(error) for error in exc.errors()]
        raise ValidationError.from_exception_data(cls.__name__, errors)


def _key_error(cls: type[Closed], key: Any, value: Any) -> InitErrorDetails:
    if not isinstance(key, str):
        error = PydanticCustomError(UNKNOWN_KEY, "keys must be strings")
    else:
        error = PydanticCustomError(UNKNOWN_KEY, cls.unknown_key(key))
    return InitErrorDetails(type=error, loc=(key, _KEY), input=value)


def _again(error: Any) -> InitErrorDetails:
    """An error of the handler's, raised again with the unknown keys' ones."""
    return InitErrorDetails(
        type=PydanticCustomError(error["type"], error["msg"]),
        loc=error["loc"],
        input=error.get("input"),
    )


# ---------------------------------------------------------------------------
# Field types: the one reading of each kind of value
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """A reader's own rule on a number, in its own words (``> 0``), besides its Limit."""

    text: str
    low: float
    high: float = float("inf")
    low_open: bool = False

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high


POSITIVE = Bound("> 0", 0, low_open=True)
NON_NEGATIVE = Bound(">= 0", 0)
SHARE = Bound("between 0 and 1", 0, 1)
OPEN_SHARE = Bound("> 0 and <= 1", 0, 1, low_open=True)


def number(
    limit: limits.Limit = limits.POLICY_NUMBER, bound: Bound | None = None, *, nullable=False
) -> Any:
    """A real number (an int or a float, not a bool) within ``bound`` and ``limit``."""

    def check(value: Any) -> float | None:
        if value is None and nullable:
            return None
        if not limits.is_real(value):
            fail("must be a number" + (" or null" if nullable else ""))
        if bound is not None and not bound.holds(value):
            fail(f"must be {bound.text}")
        if not limit.holds(value):  # before float(): a 400-digit integer overflows it
            fail(f"must be {limit.span()} ({limit.label})")
        return float(value)

    schema = _nullable({"type": "number", **_range(limit, bound)}, nullable)
    return Annotated[float | None if nullable else float, PlainValidator(check), _doc(schema)]


def integer(limit: limits.Limit = limits.ID, minimum: int = 0) -> Any:
    """A whole number (not a bool) of at least ``minimum``, within ``limit``."""

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail("must be an integer")
        if value < minimum:
            fail(f"must be >= {minimum}")
        if not limit.holds(value):
            fail(f"must be {limit.span()} ({limit.label})")
        return value

    schema = {"type": "integer", **_range(limit, Bound(f">= {minimum}", minimum))}
    return Annotated[int, PlainValidator(check), _doc(schema)]


def flag() -> Any:
    def check(value: Any) -> bool:
        if not isinstance(value, bool):
            fail("must be true or false")
        return value

    return Annotated[bool, PlainValidator(check), _doc({"type": "boolean"})]


def text(limit: limits.TextLimit = limits.COMMENT, *, allow_empty: bool = True) -> Any:
    """Printable one-line text of bounded length, NFKC-normalised (gpupool.limits)."""

    def check(value: Any) -> str:
        if not isinstance(value, str):
            fail("must be a string")
        try:
            return limits.check_text(value, "", limit, allow_empty=allow_empty)
        except GpupoolError as exc:
            return fail(exc.message)

    schema = {"type": "string", "maxLength": limit.length, "description": limit.label}
    if not allow_empty:
        schema["minLength"] = 1
    return Annotated[str, PlainValidator(check), _doc(schema)]


def choice(options: Iterable[str], what: str = "value") -> Any:
    """One of a few words; a near miss is named."""
    options = tuple(options)

    def check(value: Any) -> str:
        if not isinstance(value, str):
            fail(f"must be one of: {', '.join(options)}")
        if value not in options:
            fail(unknown(value, options, what))
        return value

    return Annotated[str, PlainValidator(check), _doc({"enum": list(options)})]


def key() -> Any:
    """A mapping's key that names something (a domain, a GPU type)."""

    def check(value: Any) -> str:
        if not isinstance(value, str):
            fail("keys must be strings")
        return value

    return Annotated[str, PlainValidator(check), _doc({"type": "string"})]


def custom(check: Callable[[Any], Any], schema: dict, python_type: Any = Any) -> Any:
    """A type read by ``check`` (which calls :func:`fail` to refuse), documented by ``schema``."""
    return Annotated[python_type, PlainValidator(check), _doc(schema)]


def _range(limit: limits.Limit, bound: Bound | None) -> dict[str, float]:
    """JSON Schema's bounds: the tighter of the Limit's and the reader's rule."""
    low, low_open, high = limit.low, limit.low_open, limit.high
    if bound is not None:
        if bound.low > low or (bound.low == low and bound.low_open):
            low, low_open = bound.low, bound.low_open
        high = min(high, bound.high)
    return {"exclusiveMinimum" if low_open else "minimum": low, "maximum": high}


def _nullable(schema: dict, nullable: bool) -> dict:
    return {"anyOf": [schema, {"type": "null"}]} if nullable else schema


def _doc(schema: dict) -> WithJsonSchema:
    return WithJsonSchema(schema, mode="validation")


# ---------------------------------------------------------------------------
# From pydantic's errors back to file:line field.path
# ---------------------------------------------------------------------------

# pydantic's own error types, in the readers' words ({key}: the field's name)
MESSAGES = {
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "missing": "required",
}


class Located:
    """Where a validated value came from: its root node in ``source`` (None for plain
    values, whose locations are ``source path``), under the field path ``prefix``."""

    def __init__(self, source: str, root: yaml.Node | None, prefix: str = "") -> None:
        self.source, self.root, self.prefix = source, root, prefix

    def where(self, loc: tuple) -> str:
        """``file:line field.path`` of the value (or, for ``[key]`` errors, the key) at
        pydantic's ``loc``. A field missing from the file is named at its mapping; a
        union member's tag (``list[...]``) is skipped. Readers validate without unions
        of models where they can: pydantic then reports each member's errors."""
        node, path = self.root, self.prefix
        for index, part in enumerate(loc):
            if part == _KEY:
                break  # node is already the key's
            if isinstance(node, yaml.MappingNode):
                found = _child(node, part)
                if found is not None:
                    key_node, value_node = found
                    at_key = index + 1 < len(loc) and loc[index + 1] == _KEY
                    node, path = (key_node if at_key else value_node), located_yaml.join(path, part)
                elif not (isinstance(part, str) and "[" in part):  # not a union's tag
                    path = located_yaml.join(path, part)  # a missing field: at its mapping
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if 0 <= part < len(node.value):
                    node, path = node.value[part], located_yaml.join(path, part)
            elif node is None:
                path = located_yaml.join(path, part)
        if node is None:
            return f"{self.source} {path}".rstrip()
        return located_yaml.where(self.source, node, path)

    def problems(self, error: ValidationError, messages: Mapping[str, str] = {}) -> list[Problem]:
        """Every error of a validation, located, in the reader's words."""
        return [(self.where(e["loc"]), message(e, messages)) for e in error.errors()]


def message(error: Mapping[str, Any], messages: Mapping[str, str] = {}) -> str:
    template = messages.get(error["type"]) or MESSAGES.get(error["type"])
    if template is None:
        return error["msg"]
    names = [part for part in error["loc"] if isinstance(part, str) and part != _KEY]
    return template.format(key=names[-1] if names else "value")


def _child(node: yaml.MappingNode, part: Any) -> tuple[yaml.Node, yaml.Node] | None:
    for key_node, value_node in node.value:
        if key_node.value == part or (
            not isinstance(part, str) and located_yaml.to_python(key_node) == part
        ):
            return key_node, value_node
    return None
