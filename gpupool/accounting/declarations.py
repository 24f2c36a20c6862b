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

Every problem raises GpupoolError with ``location`` like
``scenario.yaml:7 programmes[0].rate``; nothing is returned half-parsed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gpupool import limits
from gpupool.accounting.periods import PeriodSpec, is_label, label_bounds, parse_instant
from gpupool.accounting.programmes import Programme, Voucher, default_expiry
from gpupool.files import LocatedEntry as _Entry
from gpupool.model import GpupoolError

_PROGRAMME_FIELDS = frozenset(
    {
        "name",
        "period",
        "budget",
        "domains",
        "orgs",
        "rate",
        "gpu_type_rates",
        "exchange_rates",
        "vouchers",
        "org_cap",
        "end_of_period",
        "when_exhausted",
        "spending_order",
        "job_cap",
        "pacing",
        "org_share",
    }
)
_VOUCHER_FIELDS = frozenset(
    {"id", "org", "programme", "amount", "balance", "awarded_at", "expires_at"}
)
_RECURRING = {"monthly": "month", "quarterly": "quarter", "yearly": "year"}


def parse_programmes(node_or_dict: Any, source: str = "<programmes>") -> tuple[Programme, ...]:
    """Programmes from a ``programmes:`` section (or a document holding one)."""
    entries = _entries(node_or_dict, "programmes", source)
    programmes, seen = [], set()
    for entry in entries:
        programme = _programme(entry)
        if programme.name in seen:
            raise GpupoolError(
                f"programme {programme.name!r} declared twice", location=entry.where("name")
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
    for index, entry in enumerate(_entries(node_or_dict, "vouchers", source), start=1):
        voucher = _voucher(entry, index, known)
        if voucher.id in ids:
            raise GpupoolError(f"voucher id {voucher.id} used twice", location=entry.where("id"))
        ids.add(voucher.id)
        vouchers.append(voucher)
    return tuple(vouchers)


# ---------------------------------------------------------------------------
# One entry
# ---------------------------------------------------------------------------


def _programme(entry: _Entry) -> Programme:
    _check_fields(entry, _PROGRAMME_FIELDS, required=("name",))
    fields = dict(
        name=_name(entry, "name"),
        period=_period(entry),
        budget=_number(entry, "budget", None, limits.MONEY),
        domains=frozenset(_names(entry, "domains")),
        orgs=frozenset(_names(entry, "orgs")),
        rate=_share(entry, "rate", 1.0),
        gpu_type_rates=_numbers(entry, "gpu_type_rates", _is_share, "a share in [0, 1]"),
        exchange_rates=_numbers(
            entry, "exchange_rates", _is_positive, "a number > 0", limits.EXCHANGE_RATE
        ),
        uses_vouchers=_flag(entry, "vouchers", False),
        org_cap=_number(entry, "org_cap", None, limits.MONEY),
        carry_over=_end_of_period(entry),
        when_exhausted=_text(entry, "when_exhausted", "full_price"),
        spending_order=_text(entry, "spending_order", "earliest_expiry"),
        job_cap=_number(entry, "job_cap", None, limits.MONEY),
        pacing=_text(entry, "pacing", "none"),
        org_share=None if entry.get("org_share") is None else _share(entry, "org_share", 1.0),
    )
    try:
        return Programme(**fields)
    except GpupoolError as exc:
        # the model names the field after the programme ("programme x when_exhausted")
        field = (exc.location or "").rsplit(" ", 1)[-1].split(".")[0]
        raise GpupoolError(exc.message, location=entry.where(field)) from None


def _voucher(entry: _Entry, index: int, known: Mapping[str, Programme]) -> Voucher:
    _check_fields(entry, _VOUCHER_FIELDS, required=("org", "programme", "amount", "awarded_at"))
    programme = limits.normalise(_text(entry, "programme"))
    if known and programme not in known:
        raise GpupoolError(f"no programme named {programme!r}", location=entry.where("programme"))
    if known and not known[programme].uses_vouchers:
        raise GpupoolError(
            f"programme {programme!r} does not use vouchers", location=entry.where("programme")
        )
    awarded_at = _instant(entry, "awarded_at")
    expires_at = _instant(entry, "expires_at") if entry.get("expires_at") is not None else None
    if expires_at is None and programme in known:
        expires_at = default_expiry(known[programme], awarded_at)
    amount = _number(entry, "amount", None, limits.VOUCHER_HOURS)
    voucher_id = entry.get("id", index)
    if isinstance(voucher_id, bool) or not isinstance(voucher_id, int) or voucher_id < 1:
        raise GpupoolError("a voucher id is a whole number >= 1", location=entry.where("id"))
    limits.ID.check(voucher_id, entry.where("id"))
    fields = dict(
        id=voucher_id,
        org=limits.normalise(_text(entry, "org")),
        programme=programme,
        amount=amount,
        balance=_number(entry, "balance", amount, limits.VOUCHER_HOURS),
        awarded_at=awarded_at,
        expires_at=expires_at,
    )
    try:
        return Voucher(**fields)
    except GpupoolError as exc:
        field = (exc.location or "").rsplit(" ", 1)[-1]
        raise GpupoolError(exc.message, location=entry.where(field)) from None


def _period(entry: _Entry) -> PeriodSpec:
    value = entry.get("period")
    where = entry.where("period")
    if value is None:
        return PeriodSpec()
    if isinstance(value, str) and value in _RECURRING:
        return PeriodSpec(kind=_RECURRING[value])
    if isinstance(value, str | int) and not isinstance(value, bool):
        try:
            start, end = label_bounds(str(value))
        except GpupoolError as exc:
            if is_label(str(value)):  # well formed, but its year is outside the supported dates
                raise GpupoolError(exc.message, location=where) from None
            raise GpupoolError(
                f"period is a label like 2026-Q4, monthly|quarterly|yearly, or {{start, end}}; "
                f"got {value!r}",
                location=where,
            ) from None
        return PeriodSpec(kind="fixed", start=start, end=end)
    if isinstance(value, Mapping):
        unknown = set(value) - {"start", "end", "every"}
        if unknown:
            raise GpupoolError(f"unknown period field {sorted(unknown)[0]!r}", location=where)
        every = value.get("every", "fixed")
        kind = _RECURRING.get(every, every)
        start = None if value.get("start") is None else parse_instant(value["start"], where)
        end = None if value.get("end") is None else parse_instant(value["end"], where)
        try:
            return PeriodSpec(kind=kind, start=start, end=end)
        except GpupoolError as exc:
            raise GpupoolError(exc.message, location=where) from None
    raise GpupoolError(f"bad period {value!r}", location=where)


def _end_of_period(entry: _Entry) -> float:
    value = entry.get("end_of_period", "expire")
    if value == "expire":
        return 0.0
    carry = value.get("carry_over") if isinstance(value, Mapping) else None
    if isinstance(value, Mapping) and set(value) == {"carry_over"} and _is_share(carry):
        return float(carry)
    raise GpupoolError(
        "end_of_period is 'expire' or {carry_over: <share between 0 and 1>}",
        location=entry.where("end_of_period"),
    )


# ---------------------------------------------------------------------------
# Field readers
# ---------------------------------------------------------------------------


def _check_fields(entry: _Entry, allowed: frozenset[str], required: tuple[str, ...]) -> None:
    for key in entry:
        if key not in allowed:
            raise GpupoolError(
                f"unknown field {key!r} (expected one of {', '.join(sorted(allowed))})",
                location=entry.where(key),
            )
    for key in required:
        if entry.get(key) is None:
            raise GpupoolError(f"{key} is required", location=f"{entry.location}.{key}")


def _text(entry: _Entry, key: str, default: str | None = None) -> str:
    value = entry.get(key, default)
    if not isinstance(value, str) or not value:
        raise GpupoolError(f"expected a name, got {value!r}", location=entry.where(key))
    return value


def _is_number(value: Any) -> bool:
    return limits.is_real(value) and math.isfinite(value)


def _is_share(value: Any) -> bool:
    return _is_number(value) and 0 <= value <= 1


def _is_positive(value: Any) -> bool:
    return _is_number(value) and value > 0


def _name(entry: _Entry, key: str) -> str:
    """A name being declared: printable one-line text, NFKC-normalised (gpupool.limits)."""
    return limits.check_text(_text(entry, key), entry.where(key), limits.NAME)


def _number(entry: _Entry, key: str, default: float | None, limit: limits.Limit) -> float | None:
    value = entry.get(key, default)
    if value is None:
        return default
    if not (_is_number(value) and value >= 0):
        raise GpupoolError(f"expected a number >= 0, got {value!r}", location=entry.where(key))
    return float(limit.check(value, entry.where(key)))


def _share(entry: _Entry, key: str, default: float) -> float:
    value = entry.get(key, default)
    if not _is_share(value):
        raise GpupoolError(
            f"expected a share between 0 and 1, got {value!r}", location=entry.where(key)
        )
    return float(value)


def _numbers(
    entry: _Entry,
    key: str,
    valid: Callable[[Any], bool],
    expected: str,
    limit: limits.Limit | None = None,
) -> dict[str, float]:
    value = entry.get(key) or {}
    if not isinstance(value, Mapping):
        raise GpupoolError("expected a mapping of GPU type to number", location=entry.where(key))
    for name, number in value.items():
        if not valid(number):
            raise GpupoolError(
                f"{name}: expected {expected}, got {number!r}", location=entry.where(key)
            )
        if limit is not None and not limit.holds(number):
            raise GpupoolError(
                f"{name}: must be {limit.span()} ({limit.label}), got {number!r}",
                location=entry.where(key),
            )
    return {limits.normalise(str(name)): float(number) for name, number in value.items()}


def _names(entry: _Entry, key: str) -> list[str]:
    value = entry.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise GpupoolError("expected a list of names", location=entry.where(key))
    return [limits.normalise(v) for v in value]


def _flag(entry: _Entry, key: str, default: bool) -> bool:
    value = entry.get(key, default)
    if not isinstance(value, bool):
        raise GpupoolError(f"expected true or false, got {value!r}", location=entry.where(key))
    return value


def _instant(entry: _Entry, key: str) -> float:
    return parse_instant(entry.get(key), entry.where(key))


# ---------------------------------------------------------------------------
# Turning any accepted input into located entries
# ---------------------------------------------------------------------------


def _entries(value: Any, section: str, source: str) -> list[_Entry]:
    import yaml  # only needed here, so importing gpupool.accounting stays light

    if isinstance(value, yaml.Node):
        return _entries_from_node(value, section, source)
    if isinstance(value, Mapping) and section in value and not hasattr(value, "where"):
        value = value[section]
    if value is None:
        return []
    if isinstance(value, Mapping) and not hasattr(value, "where"):
        items = [(name, item, f"{source} {section}.{name}") for name, item in value.items()]
    elif isinstance(value, list | tuple):
        items = [(None, item, f"{source} {section}[{i}]") for i, item in enumerate(value)]
    else:
        raise GpupoolError(f"expected a list of {section}", location=f"{source} {section}")
    return [_located(name, item, where) for name, item, where in items]


def _located(name: str | None, item: Any, where: str) -> _Entry:
    if not isinstance(item, Mapping):
        raise GpupoolError("expected a mapping of fields", location=where)
    entry = _Entry(item)
    if name is not None:
        entry.setdefault("name", name)
    if hasattr(item, "where"):  # already located (e.g. the scenario loader's RawEntry)
        entry.location = item.location
        entry.key_locations = {key: item.where(key) for key in item}
    else:
        entry.location = where
        entry.key_locations = {key: f"{where}.{key}" for key in item}
    return entry


def _entries_from_node(node: Any, section: str, source: str) -> list[_Entry]:
    import yaml

    from gpupool.located_yaml import entries

    if isinstance(node, yaml.MappingNode):
        children = {k.value: v for k, v in node.value}
        if section in children:
            node = children[section]
    return entries(node, source, section)
