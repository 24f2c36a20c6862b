"""The scenario platform's pydantic models: the reader validates with them and
``gpupool schema scenario`` prints them (gpupool.schemas).

Written with gpupool.located_schema's field types, so a number in a scenario is
read as in every other file. The reader (gpupool.simulations.scenario) checks
after them what a model cannot say: names declared once, a pool's GPU type and
an org's domain declared, a price somewhere. pydantic is imported only when a
scenario is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, TypeAdapter, ValidationError, WithJsonSchema

from gpupool import limits
from gpupool.accounting.declarations import Instant
from gpupool.located_schema import (
    NON_NEGATIVE,
    POSITIVE,
    UNKNOWN_KEY,
    Closed,
    Located,
    choice,
    custom,
    fail,
    flag,
    integer,
    message,
    number,
    text,
    unknown,
)
from gpupool.model import GpupoolError
from gpupool.simulations.traces import ScenarioError

MESSAGES = {"missing": "missing required key '{key}'"}


def validated(node: Any, model: type[Closed] | TypeAdapter) -> Any:
    """A scenario's located node (gpupool.simulations.scenario) validated with ``model``
    (a model, or a TypeAdapter for a single value);
    the first problem raises ScenarioError at its ``file:line field.path``."""
    from gpupool import located_yaml

    validate = getattr(model, "model_validate", None) or model.validate_python
    try:
        return validate(located_yaml.to_python(node.node))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = Located(node.file, node.node, node.path).where(error["loc"])
        raise ScenarioError(_with_input(error), location=where) from None


def _with_input(error: Mapping) -> str:
    """The error's message, with the value it refused when that is one scalar
    (``must be >= 1, got -1``): the file's author sees what was read."""
    text, value = message(error, MESSAGES), error.get("input")
    if error["type"] in ("missing", UNKNOWN_KEY) or not isinstance(value, str | int | float):
        return text
    if f"got {value!r}" in text or (isinstance(value, str) and repr(value) in text):
        return text  # named already (unknown assignment 'x')
    return f"{text}, got {value!r}"


def _name(value: Any) -> str:
    # a name may be written as a bare number (a VC hash like 103959): it is its text
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        fail(f"expected a name, got {value!r}")
    try:
        return limits.check_text(value, "")
    except GpupoolError as exc:
        return fail(exc.message)


Name = custom(
    _name,
    {"type": "string", "minLength": 1, "maxLength": limits.NAME.length, "description": "a name"},
    str,
)


def _memory_gb(value: Any) -> int:
    # 0 means "not stated": only the limit's ceiling applies
    if isinstance(value, bool) or not isinstance(value, int):
        fail("must be an integer")
    if value < 0:
        fail("must be >= 0")
    if value > limits.MEMORY_GB.high:
        fail(f"must be {limits.MEMORY_GB.span()} ({limits.MEMORY_GB.label})")
    return value


MemoryGb = custom(
    _memory_gb, {"type": "integer", "minimum": 0, "maximum": limits.MEMORY_GB.high}, int
)
Prose = text(limits.COMMENT)
Price = number(limits.PRICE, NON_NEGATIVE)


class _Section(Closed):
    @classmethod
    def unknown_key(cls, key: str) -> str:
        return unknown(key, cls.model_fields, "key")


class GpuTypeSpec(_Section):
    vendor: Name = ""
    memory_gb: MemoryGb = 0
    speed: number(limits.SPEED, POSITIVE) = 1.0
    domestic: flag() = False
    price_per_gpu_hour: Price | None = None


class PoolSpec(_Section):
    site: Name
    gpu_type: Name
    gpus: integer(limits.POOL_GPUS, minimum=1)
    gpus_per_node: integer(limits.GPUS_PER_NODE, minimum=1)
    price_per_gpu_hour: Price | None = None


class ScenarioDomain(_Section):
    weight: number(limits.WEIGHT, POSITIVE) = 1.0
    description: Prose | None = None


class OrgSpec(_Section):
    domain: Name
    budget: number(limits.MONEY, NON_NEGATIVE, nullable=True) = None
    description: Prose | None = None


# ---------------------------------------------------------------------------
# job_classes: (gpupool.simulations.job_classes)
# ---------------------------------------------------------------------------

ASSIGNMENTS = ("round_robin", "hash")


def _key_text(value: Any) -> str:
    # a key written as a bare number (a GPU type "100") is its text, as the node has it
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        fail("keys must be strings")
    return value


KeyText = custom(_key_text, {"type": "string"}, str)
GangSize = integer(limits.GPUS_PER_JOB, minimum=1)


def _listed(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


_GANG_SIZE_SCHEMA = {"type": "integer", "minimum": 1, "maximum": limits.GPUS_PER_JOB.high}
GangSizes = Annotated[
    list[GangSize],
    BeforeValidator(_listed),
    WithJsonSchema(
        {"anyOf": [_GANG_SIZE_SCHEMA, {"type": "array", "items": _GANG_SIZE_SCHEMA}]},
        mode="validation",
    ),
]


class ScenarioJobClass(_Section):
    gpus: GangSizes | None = None
    speeds: dict[KeyText, number(limits.SPEED, POSITIVE)]


class ScenarioJobClasses(_Section):
    """Speeds per kind of job, assigned to the workload's jobs (simulations.job_classes)."""

    assign: choice(ASSIGNMENTS, "assignment") = "round_robin"
    classes: dict[KeyText, ScenarioJobClass]


# ---------------------------------------------------------------------------
# start: the replay's calendar, read as programme dates are
# ---------------------------------------------------------------------------

Start = Instant  # null is refused, as before: leave start out for 1970-01-01
START = TypeAdapter(Start)
