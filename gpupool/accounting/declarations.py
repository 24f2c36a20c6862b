"""Programme and voucher declarations, as admins and scenario files write them.

Accepted input: YAML composed by gpupool.located_yaml (errors then name the
file and line; keys given twice, aliases and merge keys are refused there),
plain dicts/lists (errors name the field), or entries that already know their
place (anything with ``location`` and ``where(key)``, such as the
scenario loader's raw entries). A section is a list of entries or a mapping
from name to entry; a whole document with top-level ``programmes:`` and
``vouchers:`` keys is accepted too::

    programmes:
      - name: health-2026q4
        period: 2026-Q4            # a label, monthly|quarterly|yearly, or {start, end, every}
        budget: 100000
        domains: [medical]
        orgs: []
        rate: 0.5                  # share of the price the programme pays
        gpu_type_rates: {Ascend-910B: 0.8}
        vouchers: true             # pays only for usage covered by vouchers
        exchange_rates: {A100: 1.0, H100: 0.6, Ascend-910B: 1.5}
        org_cap: 20000
        end_of_period: expire      # or {carry_over: 0.5}
        when_exhausted: wait       # or full_price
        spending_order: earliest_expiry   # or first_awarded
        job_cap: 5000              # most one job gets, over its whole life
        pacing: even               # or none: release the budget evenly over the period
        org_share: 0.25            # most one org gets per period, as a share of the budget
    vouchers:
      - {org: pumc, programme: health-2026q4, amount: 500, awarded_at: 2026-10-01}


The entries are validated with the pydantic models below (:class:`ProgrammeEntry`,
:class:`VoucherEntry`, written with gpupool.located_schema's field types), and
``gpupool schema programmes`` prints their JSON Schema. What a model cannot say
(a voucher's programme is declared and uses vouchers; names and ids are given
once) is checked after. Every problem raises GpupoolError with ``location``
like ``scenario.yaml:7 programmes[0].rate``; nothing is returned half-parsed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from gpupool import limits
from gpupool.accounting.periods import (
    CALENDAR_KINDS,
    PeriodSpec,
    is_label,
    label_bounds,
    parse_instant,
)
from gpupool.accounting.programmes import (
    PACINGS,
    SPENDING_ORDERS,
    WHEN_EXHAUSTED,
    Programme,
    Voucher,
    default_expiry,
)
from gpupool.located_schema import (
    NON_NEGATIVE,
    POSITIVE,
    SHARE,
    Closed,
    Located,
    choice,
    custom,
    fail,
    flag,
    integer,
    key,
    message,
    number,
    text,
)
from gpupool.model import GpupoolError

_RECURRING = {"monthly": "month", "quarterly": "quarter", "yearly": "year"}
_EVERY = ("fixed", *CALENDAR_KINDS, *_RECURRING)
_MESSAGES = {"missing": "{key} is required", "model_type": "expected a mapping of fields"}


# ---------------------------------------------------------------------------
# Field types of declarations
# ---------------------------------------------------------------------------


def _instant(value: Any) -> float:
    try:
        return parse_instant(value, "")
    except GpupoolError as exc:
        return fail(exc.message)


_INSTANT_SCHEMA = {
    "type": ["string", "number"],
    "description": "epoch seconds, a date (2026-10-01) or an ISO date-time, UTC",
}
Instant = custom(_instant, _INSTANT_SCHEMA, float)


def _optional_instant(value: Any) -> float | None:
    return None if value is None else _instant(value)


OptionalInstant = custom(_optional_instant, {"anyOf": [_INSTANT_SCHEMA, {"type": "null"}]})


def _period(value: Any) -> PeriodSpec:
    if value is None:
        return PeriodSpec()
    if isinstance(value, str) and value in _RECURRING:
        return PeriodSpec(kind=_RECURRING[value])
    if isinstance(value, str | int) and not isinstance(value, bool):
        return _labelled_period(str(value))
    if isinstance(value, Mapping):
        return _period_range(value)
    return fail(f"bad period {value!r}")


def _labelled_period(label: str) -> PeriodSpec:
    try:
        start, end = label_bounds(label)
    except GpupoolError as exc:
        if is_label(label):  # well formed, but its year is outside the supported dates
            fail(exc.message)
        fail(
            f"period is a label like 2026-Q4, monthly|quarterly|yearly, or {{start, end}}; "
            f"got {label!r}"
        )
    return PeriodSpec(kind="fixed", start=start, end=end)


def _period_range(value: Mapping) -> PeriodSpec:
    unknown = set(value) - {"start", "end", "every"}
    if unknown:
        fail(f"unknown period field {sorted(unknown, key=str)[0]!r}")
    every = value.get("every", "fixed")
    if every not in _EVERY:
        fail(f"every is one of {', '.join(_EVERY)}; got {every!r}")
    start = None if value.get("start") is None else _instant(value["start"])
    end = None if value.get("end") is None else _instant(value["end"])
    try:
        return PeriodSpec(kind=_RECURRING.get(every, every), start=start, end=end)
    except GpupoolError as exc:
        return fail(exc.message)


_PERIOD_SCHEMA = {
    "anyOf": [
        {
            "type": ["string", "integer"],
            "description": "a label (2026-Q4, 2026-10, 2026) or monthly|quarterly|yearly",
        },
        {
            "type": "object",
            "properties": {
                "start": _INSTANT_SCHEMA,
                "end": _INSTANT_SCHEMA,
                "every": {"enum": list(_EVERY)},
            },
            "additionalProperties": False,
        },
        {"type": "null"},
    ]
}
Period = custom(_period, _PERIOD_SCHEMA, PeriodSpec)


def _carry_over(value: Any) -> float:
    """The share of an unspent budget carried into the next period (0: it expires)."""
    if value == "expire":
        return 0.0
    carry = value.get("carry_over") if isinstance(value, Mapping) else None
    shaped = isinstance(value, Mapping) and set(value) == {"carry_over"}
    if shaped and limits.is_real(carry) and SHARE.holds(carry):
        return float(carry)
    return fail("end_of_period is 'expire' or {carry_over: <share between 0 and 1>}")


_CARRY_SCHEMA = {
    "anyOf": [
        {"const": "expire"},
        {
            "type": "object",
            "properties": {"carry_over": {"type": "number", "minimum": 0, "maximum": 1}},
            "required": ["carry_over"],
            "additionalProperties": False,
        },
    ]
}
CarryOver = custom(_carry_over, _CARRY_SCHEMA, float)


def _names(value: Any) -> frozenset[str]:
    value = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        fail("expected a name or a list of names")
    return frozenset(limits.normalise(v) for v in value)


_NAME_SCHEMA = {"type": "string", "minLength": 1, "maxLength": limits.NAME.length}
Names = custom(
    _names, {"anyOf": [_NAME_SCHEMA, {"type": "array", "items": _NAME_SCHEMA}]}, frozenset
)
Name = text(limits.NAME, allow_empty=False)
Money = number(limits.MONEY, NON_NEGATIVE, nullable=True)
Share = number(limits.POLICY_NUMBER, SHARE)


# ---------------------------------------------------------------------------
# The models: one entry as written
# ---------------------------------------------------------------------------


class ProgrammeEntry(Closed):
    """A subsidy programme; ``name`` comes from the key where the section is a mapping."""

    name: Name
    period: Period = PeriodSpec()
    budget: Money = None
    domains: Names = frozenset()
    orgs: Names = frozenset()
    rate: Share = 1.0
    gpu_type_rates: dict[key(), Share] = {}
    exchange_rates: dict[key(), number(limits.EXCHANGE_RATE, POSITIVE)] = {}
    vouchers: flag() = False
    org_cap: Money = None
    end_of_period: CarryOver = 0.0
    when_exhausted: choice(WHEN_EXHAUSTED) = "full_price"
    spending_order: choice(SPENDING_ORDERS) = "earliest_expiry"
    job_cap: Money = None
    pacing: choice(PACINGS) = "none"
    org_share: number(limits.POLICY_NUMBER, SHARE, nullable=True) = None

    def programme(self) -> Programme:
        return Programme(
            name=self.name,
            period=self.period,
            budget=self.budget,
            domains=self.domains,
            orgs=self.orgs,
            rate=self.rate,
            gpu_type_rates=_normalised(self.gpu_type_rates),
            exchange_rates=_normalised(self.exchange_rates),
            uses_vouchers=self.vouchers,
            org_cap=self.org_cap,
            carry_over=self.end_of_period,
            when_exhausted=self.when_exhausted,
            spending_order=self.spending_order,
            job_cap=self.job_cap,
            pacing=self.pacing,
            org_share=self.org_share,
        )


class VoucherEntry(Closed):
    """A voucher; ``id`` defaults to its place in the section (1, 2, ...)."""

    id: integer(limits.ID, minimum=1) | None = None
    org: Name
    programme: Name
    amount: number(limits.VOUCHER_HOURS, NON_NEGATIVE)
    balance: number(limits.VOUCHER_HOURS, NON_NEGATIVE, nullable=True) = None
    awarded_at: Instant
    expires_at: OptionalInstant = None


class ProgrammesFile(Closed):
    """A whole file: both sections (each a list, or a mapping from name to entry)."""

    programmes: list[ProgrammeEntry] | dict[key(), ProgrammeEntry] | None = None
    vouchers: list[VoucherEntry] | dict[key(), VoucherEntry] | None = None


def _normalised(rates: Mapping[str, float]) -> dict[str, float]:
    return {limits.normalise(name): rate for name, rate in rates.items()}


# ---------------------------------------------------------------------------
# Reading sections
# ---------------------------------------------------------------------------


def parse_programmes(node_or_dict: Any, source: str = "<programmes>") -> tuple[Programme, ...]:
    """Programmes from a ``programmes:`` section (or a document holding one)."""
    programmes, seen = [], set()
    for value, where in _entries(node_or_dict, "programmes", source):
        entry = _validated(ProgrammeEntry, value, where)
        try:
            programme = entry.programme()
        except GpupoolError as exc:
            # the model names the field after the programme ("programme x budget")
            field = (exc.location or "").rsplit(" ", 1)[-1].split(".")[0]
            raise GpupoolError(exc.message, location=where((field,))) from None
        if programme.name in seen:
            raise GpupoolError(
                f"programme {programme.name!r} declared twice", location=where(("name",))
            )
        seen.add(programme.name)
        programmes.append(programme)
    return tuple(programmes)


def parse_vouchers(
    node_or_dict: Any,
    source: str = "<vouchers>",
    programmes: Iterable[Programme] = (),
) -> tuple[Voucher, ...]:
    """Vouchers from a ``vouchers:`` section; ids default to 1, 2, ... in order.

    With ``programmes`` given, each voucher's programme must be one of them
    and use vouchers, and a missing ``expires_at`` becomes its period's end.
    """
    known = {p.name: p for p in programmes}
    vouchers, ids = [], set()
    for index, (value, where) in enumerate(_entries(node_or_dict, "vouchers", source), start=1):
        voucher = _voucher(_validated(VoucherEntry, value, where), index, known, where)
        if voucher.id in ids:
            raise GpupoolError(f"voucher id {voucher.id} used twice", location=where(("id",)))
        ids.add(voucher.id)
        vouchers.append(voucher)
    return tuple(vouchers)


def _voucher(
    entry: VoucherEntry, index: int, known: Mapping[str, Programme], where: Callable
) -> Voucher:
    programme = known.get(entry.programme)
    if known and programme is None:
        message = f"no programme named {entry.programme!r}"
        raise GpupoolError(message, location=where(("programme",)))
    if programme is not None and not programme.uses_vouchers:
        message = f"programme {entry.programme!r} does not use vouchers"
        raise GpupoolError(message, location=where(("programme",)))
    expires_at = entry.expires_at
    if expires_at is None and programme is not None:
        expires_at = default_expiry(programme, entry.awarded_at)
    try:
        return Voucher(
            id=index if entry.id is None else entry.id,
            org=entry.org,
            programme=entry.programme,
            amount=entry.amount,
            balance=entry.amount if entry.balance is None else entry.balance,
            awarded_at=entry.awarded_at,
            expires_at=expires_at,
        )
    except GpupoolError as exc:
        field = (exc.location or "").rsplit(" ", 1)[-1]
        raise GpupoolError(exc.message, location=where((field,))) from None


def _validated(model: type[Closed], value: Any, where: Callable[[tuple], str]) -> Any:
    """The entry as ``model``, or a GpupoolError at its first problem."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise GpupoolError(message(first, _MESSAGES), location=where(first["loc"])) from None


# ---------------------------------------------------------------------------
# Turning any accepted input into entries that know their place
# ---------------------------------------------------------------------------

Entry = tuple[Any, Callable[[tuple], str]]  # (plain value, pydantic loc -> location)


def _entries(value: Any, section: str, source: str) -> list[Entry]:
    import yaml  # only needed here, so importing gpupool.accounting stays light

    if isinstance(value, yaml.Node):
        return _entries_from_node(value, section, source)
    if isinstance(value, Mapping) and section in value and not hasattr(value, "where"):
        value = value[section]
    if value is None:
        return []
    if isinstance(value, Mapping) and not hasattr(value, "where"):
        items = [(name, item, f"{section}.{name}") for name, item in value.items()]
    elif isinstance(value, list | tuple):
        items = [(None, item, f"{section}[{i}]") for i, item in enumerate(value)]
    else:
        raise GpupoolError(f"expected a list of {section}", location=f"{source} {section}")
    return [_plain(name, item, source, path) for name, item, path in items]


def _plain(name: str | None, item: Any, source: str, path: str) -> Entry:
    if hasattr(item, "where"):  # already located (e.g. the scenario loader's raw entry)
        return _named(name, item), lambda loc: item.where(loc[0]) if loc else item.location
    if not isinstance(item, Mapping):
        raise GpupoolError("expected a mapping of fields", location=f"{source} {path}")
    return _named(name, item), Located(source, None, path).where


def _entries_from_node(node: Any, section: str, source: str) -> list[Entry]:
    import yaml

    from gpupool.located_yaml import to_python, where

    if isinstance(node, yaml.MappingNode):
        children = {k.value: v for k, v in node.value}
        node = children.get(section, node)
    if isinstance(node, yaml.ScalarNode) and to_python(node) is None:
        return []
    if isinstance(node, yaml.SequenceNode):
        items = [(None, item, f"{section}[{i}]") for i, item in enumerate(node.value)]
    elif isinstance(node, yaml.MappingNode):
        items = [(k.value, item, f"{section}.{k.value}") for k, item in node.value]
    else:
        raise GpupoolError(f"expected a list of {section}", location=where(source, node, section))
    entries = []
    for name, item, path in items:
        if not isinstance(item, yaml.MappingNode):
            message = "expected a mapping of fields"
            raise GpupoolError(message, location=where(source, item, path))
        entries.append((_named(name, to_python(item)), Located(source, item, path).where))
    return entries


def _named(name: str | None, item: Mapping) -> dict:
    """The entry's fields; a section keyed by name fills in ``name``."""
    fields = dict(item)
    if name is not None:
        fields.setdefault("name", name)
    return fields
