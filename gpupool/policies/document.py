"""Policy documents: the YAML an admin writes, checked field by field, with line numbers.

A document names a policy ``kind`` and its parameters::

    kind: priority
    domains:
      medical: {weight: 3.0, guarantee: {fraction: 0.25}, borrow_limit: 0.10}
    aging: {per_hour: 0.05, max_boost: 2.0}
    preemption: {enabled: true, min_gap: 2.0}
    subsidy: {domain_rates: {medical: 0.5}, org_cap: 20000, period_budget: 500000}
    placement: {pool_order: cheapest}   # fifo and multifactor only
    seed: 0
    time_limit_s: 2.0
    options: {}            # keyword arguments of the kind's policy class

Design:
- The text is *composed* by gpupool.located_yaml (the reader every YAML input
  shares: no aliases, merge keys or duplicate keys, bounded depth and size),
  not loaded, so every value keeps its node and therefore its line. A small
  reader walks the nodes against the schema and collects every problem as
  ``(location, message)`` where location is ``file:line field.path``; nothing
  stops at the first error.
- The schema lives in the ``_read_*`` functions, one per section; each returns
  the parsed value or None after recording its problems.
- ``POLICY_KINDS`` maps kind -> policy class and imports the class only when
  asked, so loading a document never imports OR-Tools. Kind options are
  checked against the class's dataclass fields and their annotated types.
- A class may declare ``UNUSED_SECTIONS`` (a ClassVar of top-level section
  names it ignores); writing such a section is an error, not a silent no-op.
  Sections in ``OPT_IN_SECTIONS`` (``placement``) work the other way round: a
  class that reads one lists it in its ``OPT_IN_SECTIONS`` ClassVar, so kinds
  that predate the section reject it without being edited.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gpupool import limits, located_yaml
from gpupool.accounting import SubsidyRules
from gpupool.files import POLICY, FileError, read_text
from gpupool.model import GpupoolError
from gpupool.policies.base import Policy
from gpupool.policies.params import (
    POOL_ORDERS,
    Aging,
    DomainShare,
    PolicyParams,
    PoolPlacement,
    Preemption,
)

Problem = tuple[str, str]  # (location "file:line field.path", message)
NameUse = tuple[str, str, str]  # (what: "domain" | "GPU type", name, location)


class PolicyDocumentError(GpupoolError):
    """Every problem found in one document; str() lists them one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(f"{where}: {what}" for where, what in self.problems))


# ---------------------------------------------------------------------------
# The registry of policy kinds
# ---------------------------------------------------------------------------


class KindRegistry(MutableMapping[str, type]):
    """kind -> policy class; built-in kinds are imported on first access.

    ``POLICY_KINDS["fifo"]`` imports gpupool.policies.fifo then; a kind whose
    module cannot be imported raises ImportError on access (and is reported
    as a document error by the loader). Tests or plugins may add kinds by
    assignment.
    """

    def __init__(self, lazy: Mapping[str, str]) -> None:
        self._lazy = dict(lazy)  # kind -> "module:ClassName"
        self._loaded: dict[str, type] = {}

    def __getitem__(self, kind: str) -> type:
        if kind not in self._loaded:
            module_name, class_name = self._lazy[kind].split(":")
            self._loaded[kind] = getattr(importlib.import_module(module_name), class_name)
        return self._loaded[kind]

    def __setitem__(self, kind: str, cls: type) -> None:
        self._loaded[kind] = cls
        self._lazy.setdefault(kind, f"{cls.__module__}:{cls.__qualname__}")

    def __delitem__(self, kind: str) -> None:
        del self._lazy[kind]
        self._loaded.pop(kind, None)

    def __contains__(self, kind: object) -> bool:  # without importing anything
        return kind in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self._lazy)

    def __len__(self) -> int:
        return len(self._lazy)


POLICY_KINDS = KindRegistry(
    {
        "priority": "gpupool.policies.priority:PriorityPolicy",
        "fair-share": "gpupool.policies.fairshare:FairSharePolicy",
        "fifo": "gpupool.policies.fifo:FifoPolicy",
        "multifactor": "gpupool.policies.multifactor:MultifactorPolicy",
    }
)

_DEFAULTS = PolicyParams()

SECTIONS = (
    "kind",
    "description",
    "domains",
    "aging",
    "preemption",
    "subsidy",
    "placement",
    "seed",
    "time_limit_s",
    "options",
)

# Sections only the kinds that list them in their own OPT_IN_SECTIONS accept.
OPT_IN_SECTIONS = frozenset({"placement"})


# ---------------------------------------------------------------------------
# The parsed document
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyDocument:
    kind: str
    params: PolicyParams
    options: Mapping[str, Any] = field(default_factory=dict)
    text: str = ""
    source: str = "<text>"
    description: str = ""
    # every domain and GPU type the document names, where: checked against a platform by
    # check_names (the document alone cannot know which names exist)
    names: tuple[NameUse, ...] = field(default=(), compare=False)

    def build(self) -> Policy:
        return POLICY_KINDS[self.kind](params=self.params, **self.options)

    def to_dict(self) -> dict[str, Any]:
        """The document with every default filled in and keys sorted: stable for diffs."""
        params = self.params
        names = sorted(set(params.domain_weights) | set(params.shares))
        subsidy = params.subsidy
        return {
            "kind": self.kind,
            "description": self.description,
            "domains": {name: _domain_dict(params, name) for name in names},
            "aging": {"per_hour": params.aging.per_hour, "max_boost": params.aging.max_boost},
            "preemption": {
                "enabled": params.preemption.enabled,
                "min_gap": params.preemption.min_gap,
                "min_run_minutes": params.preemption.min_run_minutes,
                "max_per_job": params.preemption.max_per_job,
                "restart_minutes": params.preemption.restart_minutes,
                "checkpoint_minutes": params.preemption.checkpoint_minutes,
            },
            "subsidy": {
                "domain_rates": dict(sorted(subsidy.domain_rates.items())),
                "gpu_type_rates": dict(sorted(subsidy.gpu_type_rates.items())),
                "org_cap": subsidy.org_cap,
                "period_budget": subsidy.period_budget,
            },
            "placement": {"pool_order": params.placement.pool_order},
            "seed": params.seed,
            "time_limit_s": params.time_limit_s,
            "options": {key: _plain(value) for key, value in sorted(self.options.items())},
        }


def _domain_dict(params: PolicyParams, name: str) -> dict[str, Any]:
    share = params.shares.get(name, DomainShare())
    guarantee: dict[str, Any] | None = None
    if share.fraction is not None:
        guarantee = {"fraction": share.fraction}
    elif share.gpus is not None:
        guarantee = {"gpus": dict(sorted(share.gpus.items()))}
    return {
        "weight": params.weight(name),
        "guarantee": guarantee,
        "borrow_limit": share.borrow_limit,
    }


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in sorted(value.items())}
    return value


def load_policy_file(path: str | Path, overrides: located_yaml.Overrides = ()) -> PolicyDocument:
    """``overrides`` sets fields before the check (located_yaml.apply_overrides: sweeps)."""
    try:
        text = read_text(path, POLICY)
    except FileError as exc:
        raise PolicyDocumentError([(exc.location or str(path), exc.message)]) from None
    return parse_policy_text(text, source=str(path), overrides=overrides)


def parse_policy_text(
    text: str, source: str = "<text>", overrides: located_yaml.Overrides = ()
) -> PolicyDocument:
    """Parse and check a whole document; raise PolicyDocumentError listing every problem."""
    reader = _Reader(source)
    try:
        root = located_yaml.compose(text, source, POLICY)
        located_yaml.apply_overrides(root, overrides, source)
    except FileError as exc:
        raise PolicyDocumentError([(exc.location or source, exc.message)]) from None
    if root is None:
        raise PolicyDocumentError([(f"{source}:1", "empty document; expected a 'kind:' mapping")])
    document = reader.document(root, text)
    if reader.problems or document is None:
        raise PolicyDocumentError(sorted(reader.problems, key=_problem_order))
    return document


def check_names(document: PolicyDocument, gpu_types: Iterable[str], domains: Iterable[str]) -> None:
    """Refuse a document naming a GPU type or domain the platform lacks: a guarantee or
    a rate on a missing name would otherwise be silently ignored. PolicyDocumentError
    lists every such name at its ``file:line field.path``."""
    known = {"GPU type": tuple(sorted(gpu_types)), "domain": tuple(sorted(domains))}
    problems = [
        (where, _missing_name(name, known[what], what))
        for what, name, where in document.names
        if name not in known[what]
    ]
    if problems:
        raise PolicyDocumentError(sorted(problems, key=_problem_order))


def _missing_name(name: str, known: tuple[str, ...], what: str) -> str:
    message = f"the platform has no {what} {name!r}"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"{message} (did you mean {close[0]!r}?)"
    return f"{message}; it has: {', '.join(known)}" if known else f"{message}; it has none"


def _problem_order(problem: Problem) -> tuple[int, str]:
    where = problem[0].rsplit(":", 1)[-1]
    line = where.split(" ", 1)[0]
    return (int(line) if line.isdigit() else 0, problem[0])


# ---------------------------------------------------------------------------
# The reader: walks composed YAML nodes against the schema
# ---------------------------------------------------------------------------

_MISSING = object()


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self.names: list[NameUse] = []  # domains and GPU types named, for check_names
        self._constructor = yaml.SafeLoader("")

    # -- reporting --------------------------------------------------------

    def error(self, node: yaml.Node, path: str, message: str) -> None:
        self.problems.append((located_yaml.where(self.source, node, path), message))

    def named(self, what: str, name: str, key_node: yaml.Node, path: str) -> None:
        self.names.append((what, name, located_yaml.where(self.source, key_node, path)))

    # -- node helpers -----------------------------------------------------

    def mapping(
        self, node: yaml.Node, path: str, allowed: tuple[str, ...] | None = None
    ) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        """Key -> (key node, value node); records non-mapping and unknown keys (the
        composer already refused duplicate ones)."""
        if not isinstance(node, yaml.MappingNode):
            self.error(node, path, "must be a mapping")
            return None
        entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node)
            key_path = _join(path, str(key))
            if not isinstance(key, str):
                self.error(key_node, key_path, "keys must be strings")
            elif allowed is not None and key not in allowed:
                self.error(key_node, key_path, _unknown(key, allowed))
            else:
                entries[key] = (key_node, value_node)
        return entries

    def scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return _MISSING
        return self._constructor.construct_object(node, deep=True)

    def number(
        self,
        node: yaml.Node,
        path: str,
        check: Callable[[float], bool] = lambda v: True,
        rule: str = "",
        *,
        nullable: bool = False,
        limit: limits.Limit = limits.POLICY_NUMBER,
    ) -> float | None:
        value = self.scalar(node)
        if value is None and nullable:
            return None
        if not limits.is_real(value):
            self.error(node, path, "must be a number" + (" or null" if nullable else ""))
            return None
        if not check(value):
            self.error(node, path, f"must be {rule}")
            return None
        if not limit.holds(value):  # before float(): a 400-digit integer overflows it
            self.error(node, path, f"must be {limit.span()} ({limit.label})")
            return None
        return float(value)

    def integer(
        self, node: yaml.Node, path: str, minimum: int = 0, limit: limits.Limit = limits.ID
    ) -> int | None:
        value = self.scalar(node)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(node, path, "must be an integer")
            return None
        if value < minimum:
            self.error(node, path, f"must be >= {minimum}")
            return None
        if not limit.holds(value):
            self.error(node, path, f"must be {limit.span()} ({limit.label})")
            return None
        return value

    def boolean(self, node: yaml.Node, path: str) -> bool | None:
        value = self.scalar(node)
        if not isinstance(value, bool):
            self.error(node, path, "must be true or false")
            return None
        return value

    def string(self, node: yaml.Node, path: str) -> str | None:
        value = self.scalar(node)
        if not isinstance(value, str):
            self.error(node, path, "must be a string")
            return None
        return value

    def text(self, node: yaml.Node, path: str) -> str | None:
        """A string that is printable one-line prose of bounded length (gpupool.limits)."""
        value = self.string(node, path)
        if value is None:
            return None
        try:
            return limits.check_text(value, path, limits.COMMENT, allow_empty=True)
        except GpupoolError as exc:
            self.error(node, path, exc.message)
            return None

    def rates(self, node: yaml.Node, path: str, what: str) -> dict[str, float]:
        entries = self.mapping(node, path) or {}
        rates = {}
        for name, (key_node, value_node) in entries.items():
            self.named(what, name, key_node, _join(path, name))
            rate = self.number(value_node, _join(path, name), _fraction_closed, "between 0 and 1")
            if rate is not None:
                rates[name] = rate
        return rates

    # -- the document -----------------------------------------------------

    def document(self, root: yaml.Node, text: str) -> PolicyDocument | None:
        entries = self.mapping(root, "", SECTIONS)
        if entries is None:
            return None
        kind = self.kind(root, entries)
        cls = self.policy_class(entries, kind)
        weights, shares = self.domains(entries)
        params = PolicyParams(
            domain_weights=weights,
            shares=shares,
            aging=self.aging(entries),
            preemption=self.preemption(entries),
            subsidy=self.subsidy(entries),
            seed=self.seed(entries),
            time_limit_s=self.time_limit(entries),
            placement=self.placement(entries),
        )
        options = self.options(entries, cls)
        description = ""
        if "description" in entries:
            description = self.text(entries["description"][1], "description") or ""
        if cls is None or kind is None:
            return None
        names = tuple(self.names)
        return PolicyDocument(kind, params, options, text, self.source, description, names)

    def kind(self, root: yaml.Node, entries) -> str | None:
        if "kind" not in entries:
            self.error(root, "kind", f"required: one of {', '.join(POLICY_KINDS)}")
            return None
        node = entries["kind"][1]
        kind = self.scalar(node)
        if not isinstance(kind, str):
            self.error(node, "kind", f"must be a string: one of {', '.join(POLICY_KINDS)}")
            return None
        if kind not in POLICY_KINDS:
            self.error(node, "kind", _unknown(str(kind), tuple(POLICY_KINDS), "kind"))
            return None
        return kind

    def policy_class(self, entries, kind: str | None) -> type | None:
        if kind is None:
            return None
        node = entries["kind"][1]
        try:
            cls = POLICY_KINDS[kind]
        except ImportError as exc:
            self.error(node, "kind", f"policy kind {kind!r} is not available: {exc}")
            return None
        unused = getattr(cls, "UNUSED_SECTIONS", frozenset())
        unused |= OPT_IN_SECTIONS - getattr(cls, "OPT_IN_SECTIONS", frozenset())
        for section in sorted(unused & set(entries)):
            self.error(entries[section][0], section, f"not used by kind {kind}; remove it")
        return cls

    def domains(self, entries) -> tuple[dict[str, float], dict[str, DomainShare]]:
        weights: dict[str, float] = {}
        shares: dict[str, DomainShare] = {}
        if "domains" not in entries:
            return weights, shares
        node = entries["domains"][1]
        fractions = 0.0
        for name, (key_node, value_node) in (self.mapping(node, "domains") or {}).items():
            path = f"domains.{name}"
            self.named("domain", name, key_node, path)
            fields = self.mapping(value_node, path, ("weight", "guarantee", "borrow_limit"))
            if fields is None:
                continue
            if "weight" in fields:
                weight = self.number(
                    fields["weight"][1], f"{path}.weight", _positive, "> 0", limit=limits.WEIGHT
                )
                if weight is not None:
                    weights[name] = weight
            share = self.share(fields, path)
            if share is not None:
                shares[name] = share
                fractions += share.fraction or 0.0
        if fractions > 1.0 + 1e-9:
            message = f"guaranteed fractions add up to {fractions:g}; must be <= 1"
            self.error(entries["domains"][0], "domains", message)
        return weights, shares

    def share(self, fields, path: str) -> DomainShare | None:
        borrow = None
        if "borrow_limit" in fields:
            borrow = self.number(
                fields["borrow_limit"][1],
                f"{path}.borrow_limit",
                _fraction_closed,
                "between 0 and 1",
                nullable=True,
            )
        if "guarantee" not in fields:
            return DomainShare(borrow_limit=borrow) if "borrow_limit" in fields else None
        gpath = f"{path}.guarantee"
        node = fields["guarantee"][1]
        guarantee = self.mapping(node, gpath, ("gpus", "fraction"))
        if guarantee is None:
            return None
        if len(guarantee) != 1:
            self.error(node, gpath, "give exactly one of 'gpus' (per GPU type) or 'fraction'")
            return None
        if "fraction" in guarantee:
            fraction = self.number(
                guarantee["fraction"][1], f"{gpath}.fraction", _fraction_open, "> 0 and <= 1"
            )
            return None if fraction is None else DomainShare(fraction=fraction, borrow_limit=borrow)
        gpus = {}
        for gpu_type, (key_node, count_node) in (
            self.mapping(guarantee["gpus"][1], f"{gpath}.gpus") or {}
        ).items():
            self.named("GPU type", gpu_type, key_node, f"{gpath}.gpus.{gpu_type}")
            count = self.integer(
                count_node, f"{gpath}.gpus.{gpu_type}", limit=limits.GUARANTEE_GPUS
            )
            if count is not None:
                gpus[gpu_type] = count
        return DomainShare(gpus=gpus, borrow_limit=borrow)

    def aging(self, entries) -> Aging:
        fields = self._section(entries, "aging", ("per_hour", "max_boost"))
        values = {
            key: self.number(node, f"aging.{key}", _non_negative, ">= 0")
            for key, node in fields.items()
        }
        return Aging(**{k: v for k, v in values.items() if v is not None})

    def preemption(self, entries) -> Preemption:
        numbers = ("min_gap", "min_run_minutes", "restart_minutes", "checkpoint_minutes")
        allowed = ("enabled", *numbers, "max_per_job")
        fields = self._section(entries, "preemption", allowed)
        values: dict[str, Any] = {}
        if "enabled" in fields:
            values["enabled"] = self.boolean(fields["enabled"], "preemption.enabled")
        for key in numbers:
            if key in fields:
                values[key] = self.number(fields[key], f"preemption.{key}", _non_negative, ">= 0")
        if "max_per_job" in fields:
            values["max_per_job"] = self.integer(fields["max_per_job"], "preemption.max_per_job")
        return Preemption(**{k: v for k, v in values.items() if v is not None})

    def subsidy(self, entries) -> SubsidyRules:
        allowed = ("domain_rates", "gpu_type_rates", "org_cap", "period_budget")
        fields = self._section(entries, "subsidy", allowed)
        values: dict[str, Any] = {}
        for key, what in (("domain_rates", "domain"), ("gpu_type_rates", "GPU type")):
            if key in fields:
                values[key] = self.rates(fields[key], f"subsidy.{key}", what)
        for key in ("org_cap", "period_budget"):
            if key in fields:
                values[key] = self.number(
                    fields[key],
                    f"subsidy.{key}",
                    _non_negative,
                    ">= 0",
                    nullable=True,
                    limit=limits.MONEY,
                )
        return SubsidyRules(**values)

    def placement(self, entries) -> PoolPlacement:
        fields = self._section(entries, "placement", ("pool_order",))
        if "pool_order" not in fields:
            return PoolPlacement()
        node = fields["pool_order"]
        order = self.scalar(node)
        if not isinstance(order, str):
            self.error(node, "placement.pool_order", f"must be one of: {', '.join(POOL_ORDERS)}")
        elif order not in POOL_ORDERS:
            self.error(node, "placement.pool_order", _unknown(order, POOL_ORDERS, "pool order"))
        else:
            return PoolPlacement(pool_order=order)
        return PoolPlacement()

    def _section(self, entries, name: str, allowed: tuple[str, ...]) -> dict[str, yaml.Node]:
        if name not in entries:
            return {}
        fields = self.mapping(entries[name][1], name, allowed) or {}
        return {key: value_node for key, (_, value_node) in fields.items()}

    def seed(self, entries) -> int:
        if "seed" not in entries:
            return _DEFAULTS.seed
        value = self.integer(entries["seed"][1], "seed", limit=limits.SEED)
        return _DEFAULTS.seed if value is None else value

    def time_limit(self, entries) -> float:
        if "time_limit_s" not in entries:
            return _DEFAULTS.time_limit_s
        value = self.number(
            entries["time_limit_s"][1],
            "time_limit_s",
            _positive,
            "> 0",
            limit=limits.SOLVER_SECONDS,
        )
        return _DEFAULTS.time_limit_s if value is None else value

    # -- kind options -----------------------------------------------------

    def options(self, entries, cls: type | None) -> dict[str, Any]:
        if "options" not in entries:
            fields = {}
        else:
            node = entries["options"][1]
            if isinstance(node, yaml.ScalarNode) and self.scalar(node) is None:
                fields = {}
            else:
                fields = self.mapping(node, "options") or {}
        if cls is None:
            return {}
        spec = option_fields(cls)
        options: dict[str, Any] = {}
        for name, (key_node, value_node) in fields.items():
            path = f"options.{name}"
            if name not in spec:
                known = tuple(spec)
                self.error(
                    key_node,
                    path,
                    _unknown(name, known, "option")
                    if known
                    else f"unknown option; kind {entries['kind'][1].value} takes none",
                )
                continue
            value = self.option_value(value_node, path, spec[name][0])
            if value is not _MISSING:
                options[name] = value
        for name, (_, required) in spec.items():
            if required and name not in options and name not in fields:
                anchor = entries["options"][1] if "options" in entries else entries["kind"][1]
                self.error(anchor, f"options.{name}", "required option is missing")
        return options

    def option_value(self, node: yaml.Node, path: str, annotation: Any) -> Any:
        value = _to_python(node, self)
        converted = _convert(value, annotation)
        if converted is _MISSING:
            bound = limits.POLICY_NUMBER
            number = isinstance(value, int | float) and not isinstance(value, bool)
            out = number and not bound.holds(value)
            beyond = f", {bound.span()} ({bound.label})" if out else ""
            self.error(node, path, f"must be {_describe(annotation)}{beyond}")
        return converted


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


def _to_python(node: yaml.Node, reader: _Reader) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return reader.scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, reader) for item in node.value]
    return {reader.scalar(k): _to_python(v, reader) for k, v in node.value}


def _convert(value: Any, annotation: Any) -> Any:
    """``value`` as an instance of ``annotation``, or _MISSING if it is not one.

    Handles what policy options need: bool, int, float (ints accepted), str,
    Literal, unions with None, tuple[X, ...], Mapping/dict[K, V], Any.
    """
    if annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return value if value in args else _MISSING
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            converted = _convert(value, arg)
            if converted is not _MISSING:
                return converted
        return _MISSING
    if annotation is type(None):
        return None if value is None else _MISSING
    if origin is tuple:
        if not isinstance(value, list):
            return _MISSING
        item_type = args[0] if args else Any
        items = [_convert(v, item_type) for v in value]
        return _MISSING if _MISSING in items else tuple(items)
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        if not isinstance(value, dict):
            return _MISSING
        key_type, item_type = args if args else (Any, Any)
        pairs = [(_convert(k, key_type), _convert(v, item_type)) for k, v in value.items()]
        return _MISSING if any(_MISSING in pair for pair in pairs) else dict(pairs)
    if annotation is bool:
        return value if isinstance(value, bool) else _MISSING
    if annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return value if ok and limits.POLICY_NUMBER.holds(value) else _MISSING
    if annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if ok and limits.POLICY_NUMBER.holds(value) else _MISSING
    if isinstance(annotation, type):
        return value if isinstance(value, annotation) else _MISSING
    return value


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if annotation is type(None):
        return "null"
    if origin is tuple:
        return f"a list of {_describe(args[0]) if args else 'values'}"
    if origin in (dict, Mapping):
        return "a mapping"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unknown(key: str, known: tuple[str, ...], what: str = "field") -> str:
    message = f"unknown {what} {key!r}"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"{message} (did you mean {close[0]!r}?)"
    return f"{message}; expected one of: {', '.join(known)}"


def _positive(value: float) -> bool:
    return value > 0


def _non_negative(value: float) -> bool:
    return value >= 0


def _fraction_open(value: float) -> bool:
    return 0 < value <= 1


def _fraction_closed(value: float) -> bool:
    return 0 <= value <= 1
