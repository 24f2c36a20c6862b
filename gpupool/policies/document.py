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
  not loaded, so every value keeps its node and therefore its line. The plain
  values are validated with the kind's pydantic model (gpupool.policies.schema,
  the model ``gpupool schema policy`` prints), and each error's field path is
  mapped back to its node (gpupool.located_schema), so every problem comes out
  as ``(location, message)`` with location ``file:line field.path``; nothing
  stops at the first error. What a model cannot say is checked here: the kind
  itself, guaranteed fractions adding up to at most 1, and the names a document
  uses, kept with their place for ``check_names``.
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

import difflib
import importlib
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
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
    try:
        root = located_yaml.compose(text, source, POLICY)
        located_yaml.apply_overrides(root, overrides, source)
    except FileError as exc:
        raise PolicyDocumentError([(exc.location or source, exc.message)]) from None
    if root is None:
        raise PolicyDocumentError([(f"{source}:1", "empty document; expected a 'kind:' mapping")])
    return _read(root, text, source)


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
# The reader: the kind's pydantic model (gpupool.policies.schema) on located YAML
# ---------------------------------------------------------------------------

_MESSAGES = {"missing": "required option is missing"}  # all other fields have defaults


def _read(root: yaml.Node, text: str, source: str) -> PolicyDocument:
    from pydantic import ValidationError

    from gpupool.located_schema import Located
    from gpupool.policies import schema

    if not isinstance(root, yaml.MappingNode):
        raise PolicyDocumentError([(located_yaml.where(source, root), "must be a mapping")])
    value = located_yaml.to_python(root)
    kind, cls, problems = _kind(root, value, source)
    if value.get("options") is None:
        value["options"] = {}  # no options (or `options:` left empty): the defaults
    located = Located(source, root)
    model = schema.kind_model(kind if cls else "", cls, SECTIONS, unused_sections(cls))
    try:
        model_document = model.model_validate(value)
    except ValidationError as exc:
        problems += located.problems(exc, _MESSAGES)
        model_document = None
    problems += _fraction_problems(value, located)
    if problems or model_document is None or kind is None:
        raise PolicyDocumentError(sorted(problems, key=_problem_order))
    document = _document(model_document, kind, text, located, list(value["options"]))
    _check_builds(document, located)
    return document


def _check_builds(document: PolicyDocument, located) -> None:
    """Build the policy once: checks that relate options to each other (a negative
    lease, an unknown objective) live in the policy's own constructor, and would
    otherwise be found only when a round builds it. Located at the option's line."""
    try:
        document.build()
    except GpupoolError as exc:
        path = tuple((exc.location or "").split("."))
        where = located.where(path if path[0] == "options" else ())
        raise PolicyDocumentError([(where, exc.message)]) from None


def _kind(root: yaml.MappingNode, value: dict, source: str) -> tuple[Any, type | None, list]:
    """The document's kind and policy class, or the problem with them."""
    kinds = ", ".join(POLICY_KINDS)
    nodes = {key.value: node for key, node in root.value}
    if "kind" not in value:
        return None, None, [(located_yaml.where(source, root, "kind"), f"required: one of {kinds}")]
    kind, where = value["kind"], located_yaml.where(source, nodes["kind"], "kind")
    if not isinstance(kind, str):
        return None, None, [(where, f"must be a string: one of {kinds}")]
    if kind not in POLICY_KINDS:
        return None, None, [(where, _unknown(kind, tuple(POLICY_KINDS), "kind"))]
    try:
        return kind, POLICY_KINDS[kind], []
    except ImportError as exc:
        return None, None, [(where, f"policy kind {kind!r} is not available: {exc}")]


def unused_sections(cls: type | None) -> frozenset[str]:
    """The sections a document of this policy class may not have (see the module's Design)."""
    if cls is None:
        return frozenset()
    unused = frozenset(getattr(cls, "UNUSED_SECTIONS", ()))
    return unused | (OPT_IN_SECTIONS - frozenset(getattr(cls, "OPT_IN_SECTIONS", ())))


def _fraction_problems(value: dict, located) -> list[Problem]:
    """Guaranteed fractions of the whole platform add up to at most 1 (the well-formed
    ones: a malformed guarantee has its own problem)."""
    domains = value.get("domains")
    total = 0.0
    for settings in domains.values() if isinstance(domains, Mapping) else ():
        guarantee = settings.get("guarantee") if isinstance(settings, Mapping) else None
        if isinstance(guarantee, Mapping) and set(guarantee) == {"fraction"}:
            fraction = guarantee["fraction"]
            if limits.is_real(fraction) and 0 < fraction <= 1:
                total += fraction
    if total <= 1.0 + 1e-9:
        return []
    message = f"guaranteed fractions add up to {total:g}; must be <= 1"
    return [(located.where(("domains", "[key]")), message)]


def _document(model: Any, kind: str, text: str, located, written: list) -> PolicyDocument:
    """The validated model as the policy's parameters, and every name it uses, where."""
    names: list[NameUse] = []

    def named(what: str, *loc: str) -> None:
        names.append((what, loc[-1], located.where((*loc, "[key]"))))

    weights, shares = {}, {}
    for name, settings in getattr(model, "domains", {}).items():
        named("domain", "domains", name)
        if "weight" in settings.model_fields_set:
            weights[name] = settings.weight
        guarantee = settings.guarantee
        for gpu_type in (guarantee.gpus if guarantee is not None else None) or {}:
            named("GPU type", "domains", name, "guarantee", "gpus", gpu_type)
        if guarantee is not None or "borrow_limit" in settings.model_fields_set:
            shares[name] = DomainShare(
                fraction=guarantee.fraction if guarantee is not None else None,
                gpus=guarantee.gpus if guarantee is not None else None,
                borrow_limit=settings.borrow_limit,
            )
    subsidy = getattr(model, "subsidy", None)
    for field_name, what in (("domain_rates", "domain"), ("gpu_type_rates", "GPU type")):
        for name in getattr(subsidy, field_name, {}):
            named(what, "subsidy", field_name, name)
    params = PolicyParams(
        domain_weights=weights,
        shares=shares,
        aging=_section(Aging, model, "aging"),
        preemption=_section(Preemption, model, "preemption"),
        subsidy=_section(SubsidyRules, model, "subsidy"),
        seed=getattr(model, "seed", _DEFAULTS.seed),
        time_limit_s=getattr(model, "time_limit_s", _DEFAULTS.time_limit_s),
        placement=_section(PoolPlacement, model, "placement"),
    )
    options = {name: getattr(model.options, name) for name in written}  # in the file's order
    description = getattr(model, "description", "")
    return PolicyDocument(kind, params, options, text, located.source, description, tuple(names))


def _section(params_class: type, model: Any, name: str) -> Any:
    """A section's parameters; one the kind does not read keeps the class's defaults."""
    section = getattr(model, name, None)
    return params_class() if section is None else params_class(**section.model_dump())


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
