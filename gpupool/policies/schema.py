"""The policy document's pydantic models: what gpupool.policies.document validates with.

One model per policy kind (:func:`kind_model`): the sections the kind reads, its
``kind`` and its options (the policy class's dataclass fields, each checked as
its annotation says). ``gpupool schema policy`` prints the union of them
(gpupool.schemas). Section defaults are the parameter dataclasses' own
(gpupool.policies.params), so a document that leaves a field out gets the value
the policy would have used anyway.

Imported when a document is read, never at the CLI's start: it imports pydantic.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, TypeAdapter, create_model, model_validator

from gpupool import limits
from gpupool.accounting import SubsidyRules
from gpupool.located_schema import (
    NON_NEGATIVE,
    OPEN_SHARE,
    POSITIVE,
    SHARE,
    Closed,
    choice,
    custom,
    fail,
    flag,
    integer,
    key,
    number,
    text,
    unknown,
)
from gpupool.policies.options import MISSING, convert, describe, option_fields
from gpupool.policies.params import POOL_ORDERS, Aging, PolicyParams, PoolPlacement, Preemption

_AGING, _PREEMPTION, _SUBSIDY, _PARAMS = Aging(), Preemption(), SubsidyRules(), PolicyParams()

Share = number(limits.POLICY_NUMBER, SHARE)
Rates = dict[key(), Share]
Money = number(limits.MONEY, NON_NEGATIVE, nullable=True)


class Guarantee(Closed):
    """Exactly one of ``gpus`` (per GPU type) or ``fraction`` (of the whole platform)."""

    gpus: dict[key(), integer(limits.GUARANTEE_GPUS)] = None
    fraction: number(limits.POLICY_NUMBER, OPEN_SHARE) = None

    @model_validator(mode="after")
    def _one_form(self) -> Guarantee:
        if len(self.model_fields_set) != 1:
            fail("give exactly one of 'gpus' (per GPU type) or 'fraction'")
        return self


class DomainSettings(Closed):
    weight: number(limits.WEIGHT, POSITIVE) = _PARAMS.weight("")
    guarantee: Guarantee = None
    borrow_limit: number(limits.POLICY_NUMBER, SHARE, nullable=True) = None


class AgingSettings(Closed):
    per_hour: number(limits.POLICY_NUMBER, NON_NEGATIVE) = _AGING.per_hour
    max_boost: number(limits.POLICY_NUMBER, NON_NEGATIVE) = _AGING.max_boost


class PreemptionSettings(Closed):
    enabled: flag() = _PREEMPTION.enabled
    min_gap: number(limits.POLICY_NUMBER, NON_NEGATIVE) = _PREEMPTION.min_gap
    min_run_minutes: number(limits.POLICY_NUMBER, NON_NEGATIVE) = _PREEMPTION.min_run_minutes
    restart_minutes: number(limits.POLICY_NUMBER, NON_NEGATIVE) = _PREEMPTION.restart_minutes
    checkpoint_minutes: number(limits.POLICY_NUMBER, NON_NEGATIVE) = _PREEMPTION.checkpoint_minutes
    max_per_job: integer(limits.ID, minimum=0) = _PREEMPTION.max_per_job


class Subsidy(Closed):
    domain_rates: Rates = {}
    gpu_type_rates: Rates = {}
    org_cap: Money = _SUBSIDY.org_cap
    period_budget: Money = _SUBSIDY.period_budget


class Placement(Closed):
    pool_order: choice(POOL_ORDERS, "pool order") = PoolPlacement().pool_order


SECTION_FIELDS: dict[str, tuple[Any, Any]] = {  # every section but kind and options
    "description": (text(limits.COMMENT), ""),
    "domains": (dict[key(), DomainSettings], {}),
    "aging": (AgingSettings, AgingSettings()),
    "preemption": (PreemptionSettings, PreemptionSettings()),
    "subsidy": (Subsidy, Subsidy()),
    "placement": (Placement, Placement()),
    "seed": (integer(limits.SEED), _PARAMS.seed),
    "time_limit_s": (number(limits.SOLVER_SECONDS, POSITIVE), _PARAMS.time_limit_s),
}


# ---------------------------------------------------------------------------
# One model per kind
# ---------------------------------------------------------------------------


class _Document(Closed):
    """A document of one kind; its unknown keys name the sections it does not read."""

    SECTIONS: ClassVar[tuple[str, ...]] = ()
    KIND: ClassVar[str] = ""

    @classmethod
    def unknown_key(cls, key: str) -> str:
        if key in cls.SECTIONS:
            return f"not used by kind {cls.KIND}; remove it"
        return unknown(key, cls.SECTIONS)


class _Options(Closed):
    KIND: ClassVar[str] = ""

    @classmethod
    def unknown_key(cls, key: str) -> str:
        if not cls.model_fields:
            return f"unknown option; kind {cls.KIND} takes none"
        return unknown(key, cls.model_fields, "option")


@functools.cache
def kind_model(
    kind: str, cls: type | None, sections: tuple[str, ...], skipped: frozenset[str]
) -> type[Closed]:
    """The model of a document of ``kind``: policy class ``cls`` (None for a kind that
    is not known, whose sections are all checked and whose options are not), without
    the ``skipped`` sections; ``sections`` are all a document may have."""
    options: Any = (dict[str, Any], {})
    if cls is not None:
        options = (_options_model(kind, option_fields(cls)), {})
    fields = {name: spec for name, spec in SECTION_FIELDS.items() if name not in skipped}
    model = create_model(
        f"{_title(kind)}Policy" if cls is not None else "Policy",
        __base__=_Document,
        __doc__=_first_line(cls),
        kind=(Literal[kind], ...) if cls is not None else (Any, None),  # None: checked before
        options=options,
        **fields,
    )
    model.SECTIONS, model.KIND = sections, kind
    return model


def _options_model(kind: str, spec: Mapping[str, tuple[Any, bool]]) -> type[Closed]:
    fields = {
        name: (_option(annotation), ... if required else None)
        for name, (annotation, required) in spec.items()
    }
    model = create_model(f"{_title(kind)}Options", __base__=_Options, **fields)
    model.KIND = kind
    return model


def _option(annotation: Any) -> Any:
    """An option read as its annotation says (document.convert), documented likewise."""

    def check(value: Any) -> Any:
        converted = convert(value, annotation)
        if converted is MISSING:
            bound = limits.POLICY_NUMBER
            out = limits.is_real(value) and not bound.holds(value)
            beyond = f", {bound.span()} ({bound.label})" if out else ""
            fail(f"must be {describe(annotation)}{beyond}")
        return converted

    schema = TypeAdapter(_documented(annotation)).json_schema(mode="validation")
    return custom(check, schema)


def _documented(annotation: Any) -> Any:
    """An option's annotation as JSON Schema shows it (tuples are lists, numbers bounded)."""
    origin = typing.get_origin(annotation)
    bound = limits.POLICY_NUMBER
    if annotation is float:
        return Annotated[float, Field(ge=bound.low, le=bound.high)]
    if annotation is int:
        return Annotated[int, Field(ge=bound.low, le=bound.high)]
    if origin is tuple:
        args = typing.get_args(annotation)
        return list[_documented(args[0]) if args else Any]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_documented(a) for a in typing.get_args(annotation))]  # noqa: UP007
    if origin is Mapping:
        return dict[typing.get_args(annotation) or (str, Any)]
    return annotation


def _title(kind: str) -> str:
    return "".join(part.title() for part in kind.split("-"))


def _first_line(cls: type | None) -> str | None:
    doc = (getattr(cls, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else None
