"""Typed schemas (pydantic v2) of the files users write: JSON Schema for their editors.

``gpupool schema KIND`` prints one of them (``KINDS``: policy, scenario,
programmes, batch, sweep). A YAML language server given the schema (a
``# yaml-language-server: $schema=...`` line, or the editor's settings)
completes keys and marks wrong types and out-of-range numbers while one types.

The policy, programmes and batch schemas are the readers' own pydantic models
(gpupool.policies.schema, gpupool.accounting.declarations,
gpupool.scheduler.batch): a reader validates located YAML with them
(gpupool.located_schema) and reports every problem at ``file:line
field.path``, and checks after them only what a schema cannot say (names
against the platform, one section's names against another's, sums of
guaranteed fractions). Scenarios are half-way: the platform's entries
(``gpu_types``, ``pools``, ``domains``, ``orgs``) are validated with the
reader's own models (gpupool.simulations.scenario_schema), and so is
``job_classes`` and ``start``; the top level and the workload sections below
are still a description:
the scenario reader (gpupool.simulations.scenario) walks those nodes by hand,
and tests/test_schemas.py checks that its key sets agree with them. The next
step for each: write its model with gpupool.located_schema's field types
(their messages are the reader's), validate the section's
``located_yaml.to_python(node)`` with it as ``scenario._validated`` does; the
programme and voucher sections can then use declarations' ``ProgrammeEntry``
and ``VoucherEntry`` as they are.

This module sits above the readers (it imports them); nothing but the
``schema`` command and tests imports it. pydantic stays out of the CLI's
start-up: the readers import it when they read a file.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from gpupool import limits
from gpupool.accounting.declarations import ProgrammeEntry, ProgrammesFile, VoucherEntry
from gpupool.limits import Limit
from gpupool.simulations.scenario_schema import (
    GpuTypeSpec,
    OrgSpec,
    PoolSpec,
    ScenarioDomain,
    ScenarioJobClasses,
    Start,
)

KINDS = ("policy", "scenario", "programmes", "batch", "sweep")
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


class _Closed(BaseModel):
    """A mapping whose unknown keys are errors, as in every reader."""

    model_config = ConfigDict(extra="forbid")


def _within(limit: Limit, *, floor: float | None = None, positive: bool = False) -> Any:
    """A Field bounded by ``limit`` (gpupool.limits), with the reader's own floor if higher."""
    bounds: dict[str, float] = {"le": limit.high}
    low = limit.low if floor is None else max(floor, limit.low)
    if positive or limit.low_open:
        bounds["gt"] = low
    else:
        bounds["ge"] = low
    return Field(description=f"{limit.label}: {limit.span()}", **bounds)


def _number(limit: Limit, **kw: Any) -> Any:
    return Annotated[float, _within(limit, **kw)]


def _integer(limit: Limit, **kw: Any) -> Any:
    return Annotated[int, _within(limit, **kw)]


Share = Annotated[float, Field(ge=0, le=1, description="a share between 0 and 1")]
Name = Annotated[
    str, Field(min_length=1, max_length=limits.NAME.length, description="a name (one line)")
]
Names = Name | list[Name]
Prose = Annotated[str, Field(max_length=limits.COMMENT.length, description="one line of prose")]
Instant = Annotated[
    str | float,
    Field(description="epoch seconds, a date (2026-10-01) or an ISO date-time, UTC"),
]


# ---------------------------------------------------------------------------
# Policy documents: the reader's own models (gpupool.policies.schema)
# ---------------------------------------------------------------------------


def policy_schema() -> TypeAdapter:
    from gpupool.policies.document import POLICY_KINDS, SECTIONS, unused_sections
    from gpupool.policies.schema import kind_model

    members = tuple(
        kind_model(kind, cls, SECTIONS, unused_sections(cls))
        for kind, cls in ((kind, POLICY_KINDS[kind]) for kind in POLICY_KINDS)
    )
    return TypeAdapter(Annotated[typing.Union[members], Field(discriminator="kind")])  # noqa: UP007


# ---------------------------------------------------------------------------
# Programmes and vouchers: the reader's own models (gpupool.accounting.declarations)
# ---------------------------------------------------------------------------


def programmes_schema() -> TypeAdapter:
    return TypeAdapter(ProgrammesFile | list[ProgrammeEntry])


# ---------------------------------------------------------------------------
# Scenarios (gpupool.simulations.scenario)
# ---------------------------------------------------------------------------


Hours = _number(limits.JOB_HOURS, positive=True)


class _Mean(_Closed):
    mean: Hours


class _LogNormal(_Closed):
    median: Hours
    sigma: _number(limits.SIGMA)


class _Uniform(_Closed):
    low: Annotated[float, Field(ge=0, le=limits.JOB_HOURS.high)]
    high: Annotated[float, Field(ge=0, le=limits.JOB_HOURS.high)]


class Runtime(_Closed):
    """Exactly one distribution."""

    fixed: Hours | None = None
    exponential: _Mean | None = None
    lognormal: _LogNormal | None = None
    uniform: _Uniform | None = None


class Stream(_Closed):
    rate_per_hour: _number(limits.RATE_PER_HOUR, positive=True)
    orgs: Names | None = None
    gpus: (
        _integer(limits.GPUS_PER_JOB)
        | Annotated[
            dict[Annotated[str, Field(pattern=r"^[0-9]+$")], _number(limits.WEIGHT)],
            Field(description="gang size: relative weight"),
        ]
    )
    runtime_hours: Hours | Runtime
    max_hours: Hours | None = None
    gpu_types: Names | None = None


class _Sigma(_Closed):
    sigma: _number(limits.SIGMA)


class _EstimateChoice(_Closed):
    factor: _number(limits.SCALE, positive=True) | None = None
    noisy: _Sigma | None = None


Estimate = Literal["exact"] | _EstimateChoice


class SyntheticWorkload(_Closed):
    kind: Literal["synthetic"]
    hours: _number(limits.SIM_HOURS)
    domains: dict[str, Stream]
    estimate: Estimate = "exact"


class _TraceWorkload(_Closed):
    default_org: Name | None = None
    estimate: Estimate = "exact"
    arrival_scale: _number(limits.SCALE, positive=True) = 1.0


class PhillyWorkload(_TraceWorkload):
    kind: Literal["philly"]
    path: Annotated[str, Field(description="relative to the scenario, or package:samples/...")]
    vc_map: dict[str, Name] | None = None
    gpu_types: Names | None = None
    min_duration_s: Annotated[float, Field(ge=0)] = 0


class AlibabaWorkload(_TraceWorkload):
    kind: Literal["alibaba"]
    pods: str
    nodes: str | None = None
    site: Name | None = None
    qos_map: dict[str, Name] | None = None


class _Column(_Closed):
    column: Name


class _TimeColumn(_Column):
    format: Annotated[str, Field(description="iso, epoch, epoch_ms or a strptime pattern")] = "iso"
    timezone: Annotated[str, Field(description="UTC offset of times without one")] | None = None


class _DurationColumn(_Column):
    unit: Literal["seconds", "minutes", "hours", "days", "hms"]


class _ListColumn(_Column):
    separator: str = "|"


class CsvColumns(_Closed):
    submit: Name | _TimeColumn
    duration: Name | _DurationColumn | None = None
    end: Name | _TimeColumn | None = None
    gpus: Name | _Column
    gpu_types: Name | _ListColumn | None = None
    domain: Name | _Column | None = None
    org: Name | _Column | None = None


class _OrgRule(_Closed):
    """Exactly one rule."""

    fixed: Name | None = None
    round_robin: Names | None = None
    hash: Name | None = None


class _RowFilter(_Closed):
    column: Name
    equals: str | None = None
    in_: list[str] | None = Field(None, alias="in")
    not_in: list[str] | None = None
    min: float | None = None
    max: float | None = None


class _Window(_Closed):
    from_: Instant | None = Field(None, alias="from")
    to: Instant | None = None


class _PoolList(_Closed):
    path: str
    scale: Annotated[float, Field(gt=0, le=1)] = 1.0


class CsvWorkload(_Closed):
    """Any job log (CSV or Parquet) through a column mapping (docs/scenarios.md)."""

    kind: Literal["csv"]
    path: Annotated[str, Field(description="a .csv, .parquet or .pq file")]
    columns: CsvColumns
    domain_map: dict[str, Name] | None = None
    gpu_type_map: dict[str, Name] | None = None
    org_map: dict[str, Name] | None = None
    org_rules: dict[str, _OrgRule] | None = None
    filters: list[_RowFilter] | None = None
    window: _Window | None = None
    pool_list: _PoolList | None = None
    estimate: Estimate = "exact"
    arrival_scale: _number(limits.SCALE, positive=True) = 1.0


class Scenario(_Closed):
    name: Name | None = None
    description: Prose | None = None
    seed: _integer(limits.SEED) = 0
    start: Start = None
    gpu_types: dict[str, GpuTypeSpec]
    pools: dict[str, PoolSpec] | None = None
    domains: dict[str, ScenarioDomain | None]
    orgs: dict[str, OrgSpec]
    workload: Annotated[
        SyntheticWorkload | PhillyWorkload | AlibabaWorkload | CsvWorkload,
        Field(discriminator="kind"),
    ]
    programmes: list[ProgrammeEntry] | dict[str, ProgrammeEntry] | None = None
    vouchers: list[VoucherEntry] | dict[str, VoucherEntry] | None = None
    job_classes: ScenarioJobClasses | None = None


def scenario_schema() -> TypeAdapter:
    return TypeAdapter(Scenario)


# ---------------------------------------------------------------------------
# YAML batch files: the reader's own models (gpupool.scheduler.batch)
# ---------------------------------------------------------------------------


def batch_schema() -> TypeAdapter:
    from gpupool.scheduler.batch import BatchJob, BatchJobs

    return TypeAdapter(list[BatchJob] | BatchJobs)


# ---------------------------------------------------------------------------
# Sweep files (gpupool.simulations.sweep)
# ---------------------------------------------------------------------------

Paths = Annotated[str, Field(min_length=1)] | list[Annotated[str, Field(min_length=1)]]
ParameterPath = Annotated[
    str, Field(pattern=r"^(policy|scenario)\..+", description="policy.FIELD or scenario.FIELD")
]
SweepCount = _integer(limits.SWEEP_VALUES)


class ValueRange(_Closed):
    """``low``..``high``: ``steps`` evenly spaced values (a grid) or uniform draws (random)."""

    low: float
    high: float
    steps: SweepCount | None = None


class RandomDraws(_Closed):
    samples: SweepCount
    seed: _integer(limits.SEED) = 0


class RandomSearch(_Closed):
    random: RandomDraws


class SweepFile(_Closed):
    name: Name | None = None
    description: Prose = ""
    scenarios: Paths
    policies: Paths
    seeds: _integer(limits.SEEDS) | Annotated[list[_integer(limits.SEED)], Field(min_length=1)] = 1
    jobs: _integer(limits.MAX_JOBS) | None = None
    until_hours: _number(limits.SIM_HOURS) | None = None
    priority_domain: Name
    search: Literal["grid"] | RandomSearch = "grid"
    parameters: dict[ParameterPath, Annotated[list[Any], Field(min_length=1)] | ValueRange] = Field(
        default={},
        # pydantic writes the key pattern as patternProperties: other keys must be refused
        json_schema_extra={"additionalProperties": False},
    )


def sweep_schema() -> TypeAdapter:
    return TypeAdapter(SweepFile)


# ---------------------------------------------------------------------------
# JSON Schema
# ---------------------------------------------------------------------------

_ADAPTERS = {
    "policy": policy_schema,
    "scenario": scenario_schema,
    "programmes": programmes_schema,
    "batch": batch_schema,
    "sweep": sweep_schema,
}
_TITLES = {
    "policy": "gpupool policy document",
    "scenario": "gpupool scenario",
    "programmes": "gpupool programmes and vouchers",
    "batch": "gpupool YAML batch file",
    "sweep": "gpupool simulation sweep",
}


def adapter(kind: str) -> TypeAdapter:
    """The pydantic TypeAdapter of one KIND."""
    return _ADAPTERS[kind]()


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one KIND of file."""
    schema = _if_then(adapter(kind).json_schema(mode="validation"))
    return {"$schema": SCHEMA_DIALECT, "title": _TITLES[kind], **schema}


def _if_then(node: Any) -> Any:
    """pydantic writes a tagged union as ``oneOf`` plus OpenAPI's ``discriminator``, which
    JSON Schema validators ignore: a wrong field then fails every branch, reported at the
    union. ``if kind is X then X's schema`` reports it at the field itself."""
    if isinstance(node, list):
        return [_if_then(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _if_then(value) for key, value in node.items()}
    if "discriminator" not in node or "oneOf" not in node:
        return node
    tag, mapping = node["discriminator"]["propertyName"], node["discriminator"]["mapping"]
    rest = {k: v for k, v in node.items() if k not in ("discriminator", "oneOf")}
    return {
        **rest,
        "type": "object",
        "required": [tag],
        "properties": {tag: {"enum": list(mapping)}},
        "allOf": [
            {"if": {"properties": {tag: {"const": value}}}, "then": {"$ref": ref}}
            for value, ref in mapping.items()
        ],
    }


def json_ready(value: Any) -> Any:
    """A composed YAML value as a YAML language server sees it: keys are text,
    dates and times are ISO text (how a schema validates the shipped examples)."""
    if isinstance(value, Mapping):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
