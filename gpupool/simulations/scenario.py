"""Scenario files: a YAML platform plus a workload, parsed into a Scenario.

The YAML is composed by gpupool.located_yaml (no aliases, merge keys or
duplicate keys, bounded depth and size), not loaded, so every value keeps its
line. The platform sections, ``job_classes:`` and ``start:`` are validated with
their pydantic models (gpupool.simulations.scenario_schema, on
gpupool.located_schema); the top level and workloads are still walked node by
node here. Each
problem raises :class:`ScenarioError` at ``file:line field.path``
(``synthetic.yaml:14 pools.bj-a100.gpus``). Unknown keys are errors too, so a
typo never silently falls back to a default. See docs/scenarios.md for the
format; in short::

    name: demo            # optional, default: the file name
    seed: 1               # synthetic arrivals and noisy estimates
    start: 2026-01-01T00:00Z   # optional: the replay's calendar (default 1970-01-01)
    gpu_types: {A100: {vendor: nvidia, memory_gb: 80, speed: 1.0, price_per_gpu_hour: 12}}
    pools: {bj-a100: {site: beijing, gpu_type: A100, gpus: 64, gpus_per_node: 8}}
    domains: {medical: {weight: 2}}
    orgs: {pumc: {domain: medical, budget: 50000}}
    workload: {kind: synthetic | philly | alibaba | csv, ..., estimate: exact}
    programmes: ...       # kept raw for gpupool.accounting (RawEntry)
    vouchers: ...
    job_classes: ...      # speeds per kind of job (gpupool.simulations.job_classes)

Paths in a scenario are relative to the scenario file; ``package:samples/x.csv``
names a file shipped in gpupool/data. Job ids are 1..N in arrival order after
every drop and after ``max_jobs``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import NoReturn

import yaml

from gpupool import limits, located_yaml
from gpupool.files import SCENARIO, FileError
from gpupool.model import Domain, GpupoolError, GpuType, Org, Pool
from gpupool.simulations import csv_workload
from gpupool.simulations.traces import (
    ScenarioError,
    TraceLoad,
    load_alibaba_nodes,
    load_alibaba_pods,
    load_philly,
)
from gpupool.simulations.workload import Scenario, SimJob

__all__ = ["RawEntry", "ScenarioError", "load_scenario", "resolve_path"]

PACKAGE_PREFIX = "package:"
_FLOAT_CEILING = 1e300  # numbers without a domain limit must still convert to a float


# ---------------------------------------------------------------------------
# YAML nodes that remember where they are
# ---------------------------------------------------------------------------


class _Node:
    """A composed YAML node with its field path and file, and typed accessors
    that raise ScenarioError at this node's line."""

    def __init__(self, node: yaml.Node, path: str, file: str, loader: yaml.SafeLoader) -> None:
        self.node, self.path, self.file, self._loader = node, path, file, loader

    @property
    def line(self) -> int:
        return self.node.start_mark.line + 1

    def where(self) -> str:
        return located_yaml.where(self.file, self.node, self.path)

    def fail(self, message: str) -> NoReturn:
        raise ScenarioError(message, location=self.where())

    def _child(self, node: yaml.Node, key: str) -> _Node:
        path = f"{self.path}.{key}" if self.path else key
        return _Node(node, path, self.file, self._loader)

    # -- containers ---------------------------------------------------------

    def mapping(self) -> dict[str, _Node]:
        if not isinstance(self.node, yaml.MappingNode):
            self.fail(f"expected a mapping, got {self._kind()}")
        # the composer refused keys given twice and keys that are lists or mappings
        return {key.value: self._child(value, key.value) for key, value in self.node.value}

    def fields(
        self, required: Iterable[str] = (), optional: Iterable[str] = ()
    ) -> dict[str, _Node]:
        """A mapping with exactly these keys: unknown keys and missing required ones fail."""
        required, optional = tuple(required), tuple(optional)
        children = self.mapping()
        for key in children:
            if key not in required and key not in optional:
                expected = ", ".join(sorted(set(required + optional)))
                self.key(key).fail(f"unknown key {key!r} (expected one of: {expected})")
        for key in required:
            if key not in children:
                self.fail(f"missing required key {key!r}")
        return children

    def _key_node(self, key: str) -> yaml.Node:
        return next(k for k, _ in self.node.value if k.value == key)

    def key(self, key: str) -> _Node:
        """The key itself, to report a bad name at the key's line."""
        return self._child(self._key_node(key), key)

    def sequence(self) -> list[_Node]:
        if not isinstance(self.node, yaml.SequenceNode):
            self.fail(f"expected a list, got {self._kind()}")
        return [
            _Node(item, f"{self.path}[{index}]", self.file, self._loader)
            for index, item in enumerate(self.node.value)
        ]

    def names(self) -> list[str]:
        """A list of names, or one name."""
        if isinstance(self.node, yaml.ScalarNode):
            return [self.text()]
        return [item.text() for item in self.sequence()]

    # -- scalars ------------------------------------------------------------

    def is_null(self) -> bool:
        return isinstance(self.node, yaml.ScalarNode) and self.node.tag.endswith(":null")

    def value(self) -> object:
        if not isinstance(self.node, yaml.ScalarNode):
            self.fail(f"expected a single value, got {self._kind()}")
        return self._loader.construct_object(self.node)

    def text(self) -> str:
        if not isinstance(self.node, yaml.ScalarNode) or self.is_null() or not self.node.value:
            self.fail(f"expected a name, got {self._kind()}")
        return self.node.value  # the raw text: a VC hash like 103959 stays a string

    def number(
        self,
        *,
        minimum: float | None = None,
        positive: bool = False,
        limit: limits.Limit | None = None,
        upper_only: bool = False,
    ) -> float:
        """A number; within ``limit`` (gpupool.limits) when given, or only under its
        ceiling with ``upper_only`` (where ``minimum`` already says what the floor is)."""
        value = self.value()
        if not limits.is_real(value):
            self.fail(f"expected a number, got {self.node.value!r}")
        if positive and not value > 0:
            self.fail(f"must be > 0, got {value}")
        if minimum is not None and value < minimum:
            self.fail(f"must be >= {minimum}, got {value}")
        if limit is not None:
            self.within(value, limit, upper_only=upper_only)
        elif not -_FLOAT_CEILING <= value <= _FLOAT_CEILING:  # .inf, or too big for a float
            self.fail(f"must be a finite number, got {self.node.value!r}")
        return float(value)

    def within(self, value: float, limit: limits.Limit, *, upper_only: bool = False) -> None:
        if value <= limit.high if upper_only else limit.holds(value):
            return
        self.fail(f"must be {limit.span()} ({limit.label}), got {self.node.value}")

    def share(self) -> float:
        value = self.number(minimum=0)
        if value > 1:
            self.fail(f"must be between 0 and 1, got {value}")
        return value

    def integer(
        self,
        *,
        minimum: int | None = None,
        limit: limits.Limit | None = None,
        upper_only: bool = False,
    ) -> int:
        value = self.value()
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"expected a whole number, got {self.node.value!r}")
        if minimum is not None and value < minimum:
            self.fail(f"must be >= {minimum}, got {value}")
        self.within(value, limit or limits.ID, upper_only=upper_only or limit is None)
        return value

    def name(self) -> str:
        """A name being declared or referred to: printable one-line text, NFKC-normalised."""
        try:
            return limits.check_text(self.text(), self.where())
        except ScenarioError:
            raise
        except GpupoolError as exc:
            self.fail(exc.message)

    def boolean(self) -> bool:
        value = self.value()
        if not isinstance(value, bool):
            self.fail(f"expected true or false, got {self.node.value!r}")
        return value

    def plain(self) -> object:
        return self._loader.construct_object(self.node, deep=True)

    def _kind(self) -> str:
        if isinstance(self.node, yaml.MappingNode):
            return "a mapping"
        if isinstance(self.node, yaml.SequenceNode):
            return "a list"
        return "nothing" if self.is_null() or not self.node.value else repr(self.node.value)


def _compose(
    path: Path, label: str, overrides: located_yaml.Overrides = ()
) -> tuple[_Node, yaml.SafeLoader]:
    try:
        root = located_yaml.load(path, SCENARIO, label)
        located_yaml.apply_overrides(root, overrides, label)
    except FileError as exc:
        raise ScenarioError(exc.message, location=exc.location) from None
    if root is None:
        raise ScenarioError("empty scenario file", location=f"{label}:1")
    loader = yaml.SafeLoader("")  # constructs values of the composed, already checked nodes
    return _Node(root, "", label, loader), loader


# ---------------------------------------------------------------------------
# Raw sections kept for gpupool.accounting
# ---------------------------------------------------------------------------


# One ``programmes:`` or ``vouchers:`` entry as a plain dict, not yet validated:
# ``location`` is ``file:line path`` of the entry, ``where(key)`` that of one of its
# fields, so the accounting parser reports errors at the scenario's lines.
RawEntry = located_yaml.LocatedEntry


# (field, what it names, is the name a key of a mapping) in programme entries
_PROGRAMME_NAMES = (
    ("domains", "domain", False),
    ("orgs", "org", False),
    ("gpu_type_rates", "GPU type", True),
    ("exchange_rates", "GPU type", True),
)


def _check_entry_names(
    programmes: Sequence[RawEntry], vouchers: Sequence[RawEntry], platform: _Platform
) -> None:
    """Refuse programmes and vouchers naming a domain, org or GPU type the scenario lacks
    (their shape is checked later, by gpupool.accounting.declarations)."""
    known = {"domain": platform.domains, "org": platform.orgs, "GPU type": platform.gpu_types}
    for entry in programmes:
        for key, what, keyed in _PROGRAMME_NAMES:
            value = entry.get(key)
            if keyed and isinstance(value, Mapping):
                _check_names(list(value), known[what], what, entry.where(key))
            elif not keyed and isinstance(value, str | list):
                _check_names(
                    [value] if isinstance(value, str) else value,
                    known[what],
                    what,
                    entry.where(key),
                )
    for entry in vouchers:
        _check_names([entry.get("org")], platform.orgs, "org", entry.where("org"))


def _check_names(names: list, known: Mapping[str, object], what: str, where: str) -> None:
    for name in names:
        if isinstance(name, str) and limits.normalise(name) not in known:
            raise ScenarioError(
                f"unknown {what} {name!r} (known: {', '.join(sorted(known)) or 'none'})",
                location=where,
            )


def _raw_entries(section: _Node) -> tuple[RawEntry, ...]:
    try:
        return tuple(located_yaml.entries(section.node, section.file, section.path))
    except FileError as exc:
        raise ScenarioError(exc.message, location=exc.location) from None


# ---------------------------------------------------------------------------
# Platform
# ---------------------------------------------------------------------------


@dataclass
class _Platform:
    gpu_types: dict[str, GpuType]
    prices: dict[str, float]
    pools: list[Pool]
    domains: dict[str, Domain]
    orgs: dict[str, Org]


def _declared(section: _Node) -> list[tuple[str, _Node]]:
    """The section's entries under their checked names (gpupool.limits: printable, one
    line, NFKC); two names that differ only in case or form are refused."""
    entries: list[tuple[str, _Node]] = []
    for key, node in section.mapping().items():
        name = section.key(key).name()
        try:
            limits.check_unique(name, (n for n, _ in entries), "key", node.where())
        except GpupoolError as exc:
            section.key(key).fail(exc.message)
        entries.append((name, node))
    return entries


def _validated(node: _Node, model: type) -> object:
    from gpupool.simulations.scenario_schema import validated

    return validated(node, model)


def _gpu_types(section: _Node) -> tuple[dict[str, GpuType], dict[str, float]]:
    from gpupool.simulations.scenario_schema import GpuTypeSpec

    types, prices = {}, {}
    for name, node in _declared(section):
        spec = _validated(node, GpuTypeSpec)
        types[name] = GpuType(
            name=name,
            vendor=spec.vendor,
            memory_gb=spec.memory_gb,
            speed=spec.speed,
            domestic=spec.domestic,
        )
        if spec.price_per_gpu_hour is not None:
            prices[name] = spec.price_per_gpu_hour
    if not types:
        section.fail("declare at least one GPU type")
    return types, prices


def _pools(section: _Node, types: Mapping[str, GpuType], prices: Mapping[str, float]) -> list:
    from gpupool.simulations.scenario_schema import PoolSpec

    pools = []
    for name, node in _declared(section):
        spec = _validated(node, PoolSpec)
        gpu_type = _known_field(spec.gpu_type, node, "gpu_type", types, "GPU type")
        if spec.price_per_gpu_hour is not None:
            price = spec.price_per_gpu_hour
        elif gpu_type in prices:
            price = prices[gpu_type]
        else:
            node.fail(f"no price: set price_per_gpu_hour here or on GPU type {gpu_type}")
        nodes = -(-spec.gpus // spec.gpus_per_node)
        if not limits.POOL_NODES.holds(nodes):
            node.mapping()["gpus"].within(nodes, limits.POOL_NODES)
        pools.append(
            Pool(
                name=name,
                site=spec.site,
                gpu_type=gpu_type,
                gpus=spec.gpus,
                gpus_per_node=spec.gpus_per_node,
                price_per_gpu_hour=price,
            )
        )
    return pools


def _known(node: _Node, names: Mapping[str, object], what: str) -> str:
    return _checked_known(node.name(), node, names, what)


def _known_field(name: str, node: _Node, field: str, names: Mapping[str, object], what: str) -> str:
    """``name``, node's validated ``field``, which must be one of ``names``."""
    return _checked_known(name, node.mapping()[field], names, what)


def _checked_known(name: str, node: _Node, names: Mapping[str, object], what: str) -> str:
    if name not in names:
        node.fail(f"unknown {what} {name!r} (known: {', '.join(sorted(names)) or 'none'})")
    return name


def _domains(section: _Node) -> dict[str, Domain]:
    from gpupool.simulations.scenario_schema import ScenarioDomain

    domains = {}
    for name, node in _declared(section):
        spec = ScenarioDomain() if node.is_null() else _validated(node, ScenarioDomain)
        domains[name] = Domain(name=name, weight=spec.weight)
    if not domains:
        section.fail("declare at least one domain")
    return domains


def _orgs(section: _Node, domains: Mapping[str, Domain]) -> dict[str, Org]:
    from gpupool.simulations.scenario_schema import OrgSpec

    orgs = {}
    for name, node in _declared(section):
        spec = _validated(node, OrgSpec)
        orgs[name] = Org(
            name=name,
            domain=_known_field(spec.domain, node, "domain", domains, "domain"),
            budget=spec.budget,
        )
    if not orgs:
        section.fail("declare at least one org")
    return orgs


# ---------------------------------------------------------------------------
# Workloads: one parser per kind (the document's registry)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Loaded:
    jobs: tuple[SimJob, ...]
    dropped: Mapping[str, int]
    adjusted: Mapping[str, int]
    extra_pools: tuple[Pool, ...] = ()


@dataclass(frozen=True)
class _Context:
    base_dir: Path  # scenario paths are relative to the scenario file
    seed: int


def _synthetic(spec: Mapping[str, _Node], platform: _Platform, ctx: _Context) -> _Loaded:
    from gpupool.simulations.synthetic import generate

    horizon = spec["hours"].number(positive=True, limit=limits.SIM_HOURS)
    section = spec["domains"]
    streams = []
    for key, node in section.mapping().items():
        domain = section.key(key).name()
        if domain not in platform.domains:
            section.key(key).fail(f"unknown domain {domain!r}")
        streams.append(_stream(domain, node, platform))
    if not streams:
        spec["domains"].fail("declare at least one domain stream")
    expected = sum(stream.rate_per_hour for stream in streams) * horizon
    if not limits.SYNTHETIC_JOBS.holds(expected):  # drawn before anything else is checked
        bound = limits.SYNTHETIC_JOBS
        spec["hours"].fail(
            f"streams' rate_per_hour x hours must be {bound.span()} ({bound.label}), "
            f"got {expected:,.0f}"
        )
    dropped: Counter[str] = Counter()
    jobs = _keep_placeable(generate(streams, horizon, ctx.seed), platform.pools, dropped)
    return _Loaded(jobs=jobs, dropped=dict(dropped), adjusted={})


_SYNTHETIC_KEYS = ("kind", "hours", "domains", "estimate")
_STREAM_KEYS = ("rate_per_hour", "orgs", "gpus", "runtime_hours", "max_hours", "gpu_types")


def _stream(domain: str, node: _Node, platform: _Platform):
    from gpupool.simulations.synthetic import Stream

    spec = node.fields(required=("rate_per_hour", "gpus", "runtime_hours"), optional=_STREAM_KEYS)
    if "orgs" in spec:
        orgs = tuple(_org_of(item, domain, platform) for item in _items(spec["orgs"]))
    else:
        orgs = tuple(name for name, org in platform.orgs.items() if org.domain == domain)
        if not orgs:
            node.fail(f"domain {domain!r} has no orgs to submit its jobs")
    sizes, weights = _gang_sizes(spec["gpus"])
    return Stream(
        domain=domain,
        orgs=orgs,
        rate_per_hour=spec["rate_per_hour"].number(positive=True, limit=limits.RATE_PER_HOUR),
        gang_sizes=sizes,
        gang_weights=weights,
        runtime=_runtime(spec["runtime_hours"]),
        gpu_types=_gpu_type_list(spec.get("gpu_types"), platform),
        max_hours=(
            spec["max_hours"].number(positive=True, limit=limits.JOB_HOURS)
            if "max_hours" in spec
            else None
        ),
    )


def _items(node: _Node) -> list[_Node]:
    return [node] if isinstance(node.node, yaml.ScalarNode) else node.sequence()


def _org_of(node: _Node, domain: str, platform: _Platform) -> str:
    name = _known(node, platform.orgs, "org")
    if platform.orgs[name].domain != domain:
        node.fail(f"org {name!r} belongs to domain {platform.orgs[name].domain!r}, not {domain!r}")
    return name


def _gang_sizes(node: _Node) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """``gpus: 8`` (always 8) or ``gpus: {1: 0.7, 8: 0.3}`` (size: relative weight)."""
    if isinstance(node.node, yaml.ScalarNode):
        return (node.integer(minimum=1, limit=limits.GPUS_PER_JOB),), (1.0,)
    sizes, weights = [], []
    for size_text, weight in node.mapping().items():
        size = limits.to_number(size_text)
        if not isinstance(size, int) or size < 1 or not size_text.strip().isdigit():
            weight.fail(f"a gang size must be a whole number >= 1, got {size_text!r}")
        if not limits.GPUS_PER_JOB.holds(size):
            bound = limits.GPUS_PER_JOB
            node.key(size_text).fail(f"must be {bound.span()} ({bound.label}), got {size_text}")
        sizes.append(size)
        weights.append(weight.number(positive=True, limit=limits.WEIGHT))
    if not sizes:
        node.fail("give at least one gang size")
    return tuple(sizes), tuple(weights)


def _runtime(node: _Node):
    """``2.5`` (fixed hours) or one of ``{lognormal: {median, sigma}}``,
    ``{exponential: {mean}}``, ``{uniform: {low, high}}``, ``{fixed: hours}``."""
    from gpupool.simulations import synthetic as syn

    hours = limits.JOB_HOURS
    if isinstance(node.node, yaml.ScalarNode):
        return syn.Fixed(node.number(positive=True, limit=hours))
    kinds = ("exponential", "fixed", "lognormal", "uniform")
    spec = node.fields(optional=kinds)
    if len(spec) != 1:
        node.fail(f"give exactly one of: {', '.join(kinds)}")
    ((kind, body),) = spec.items()
    if kind == "fixed":
        return syn.Fixed(body.number(positive=True, limit=hours))
    if kind == "exponential":
        return syn.Exponential(
            body.fields(required=("mean",))["mean"].number(positive=True, limit=hours)
        )
    if kind == "lognormal":
        args = body.fields(required=("median", "sigma"))
        return syn.LogNormal(
            args["median"].number(positive=True, limit=hours),
            args["sigma"].number(minimum=0, limit=limits.SIGMA),
        )
    args = body.fields(required=("low", "high"))
    low = args["low"].number(minimum=0, limit=hours, upper_only=True)
    high = args["high"].number(minimum=0, limit=hours, upper_only=True)
    if high <= low:
        args["high"].fail(f"must be > low ({low}), got {high}")
    return syn.Uniform(low, high)


def _gpu_type_list(node: _Node | None, platform: _Platform) -> tuple[str, ...]:
    if node is None or node.is_null():
        return ()
    return tuple(_known(item, platform.gpu_types, "GPU type") for item in _items(node))


_TRACE_KEYS = ("kind", "default_org", "estimate", "arrival_scale")
_PHILLY_KEYS = (*_TRACE_KEYS, "path", "vc_map", "gpu_types", "min_duration_s")


def _philly(spec: Mapping[str, _Node], platform: _Platform, ctx: _Context) -> _Loaded:
    load = load_philly(
        _input_file(spec["path"], ctx.base_dir),
        vc_map=_group_map(spec.get("vc_map"), platform),
        default_org=_default_org(spec.get("default_org"), platform),
        orgs=platform.orgs,
        gpu_types=_gpu_type_list(spec.get("gpu_types"), platform),
        pools=platform.pools,
        min_duration_s=(
            spec["min_duration_s"].number(minimum=0) if "min_duration_s" in spec else 0
        ),
    )
    return _from_trace(load)


_ALIBABA_KEYS = (*_TRACE_KEYS, "pods", "nodes", "site", "qos_map")


def _alibaba(spec: Mapping[str, _Node], platform: _Platform, ctx: _Context) -> _Loaded:
    extra: tuple[Pool, ...] = ()
    if "nodes" in spec:
        extra = _node_pools(spec, platform, ctx)
    pools = [*platform.pools, *extra]
    if not pools:
        spec["kind"].fail("no pools: declare pools or give the trace's node list as nodes")
    load = load_alibaba_pods(
        _input_file(spec["pods"], ctx.base_dir),
        qos_map=_group_map(spec.get("qos_map"), platform),
        default_org=_default_org(spec.get("default_org"), platform),
        orgs=platform.orgs,
        known_gpu_types=tuple(platform.gpu_types),
        pools=pools,
    )
    return replace(_from_trace(load), extra_pools=extra)


def _node_pools(spec: Mapping[str, _Node], platform: _Platform, ctx: _Context) -> tuple:
    nodes = spec["nodes"]
    site = spec["site"].name() if "site" in spec else "alibaba"
    pools = load_alibaba_nodes(_input_file(nodes, ctx.base_dir), site=site, prices={})
    for model in sorted({pool.gpu_type for pool in pools}):
        if model not in platform.gpu_types:
            nodes.fail(f"the node list has GPU model {model!r}: declare it under gpu_types")
        if model not in platform.prices:
            nodes.fail(f"GPU type {model!r} needs a price_per_gpu_hour for the node-list pools")
    taken = {pool.name for pool in platform.pools}
    for pool in pools:
        if pool.name in taken:
            nodes.fail(f"pool {pool.name!r} from the node list is also declared under pools")
    return tuple(replace(pool, price_per_gpu_hour=platform.prices[pool.gpu_type]) for pool in pools)


def _group_map(node: _Node | None, platform: _Platform) -> dict[str, str]:
    """Trace group (VC hash, QoS class) -> org name, checked against the orgs."""
    if node is None or node.is_null():
        return {}
    return {group: _known(org, platform.orgs, "org") for group, org in node.mapping().items()}


def _default_org(node: _Node | None, platform: _Platform) -> str | None:
    if node is None or node.is_null():
        return None
    return _known(node, platform.orgs, "org")


def _from_trace(load: TraceLoad) -> _Loaded:
    return _Loaded(jobs=load.jobs, dropped=load.dropped, adjusted=load.adjusted)


def _csv(spec: Mapping[str, _Node], platform: _Platform, ctx: _Context) -> _Loaded:
    """Any job log through a column mapping (gpupool.simulations.csv_workload)."""
    extra = ()
    if "pool_list" in spec:
        extra = csv_workload.pool_list(spec["pool_list"], platform, ctx.base_dir, _input_file)
    pools = [*platform.pools, *extra]
    if not pools:
        spec["kind"].fail("no pools: declare pools or give a pool_list")
    parsed = csv_workload.parse_spec(spec, platform, _input_file(spec["path"], ctx.base_dir))
    jobs, dropped = csv_workload.load(parsed, platform.orgs, tuple(platform.gpu_types), pools)
    return _Loaded(jobs=jobs, dropped=dropped, adjusted={}, extra_pools=extra)


_WORKLOADS: dict[str, tuple[tuple[str, ...], tuple[str, ...], Callable]] = {
    "synthetic": (("kind", "hours", "domains"), _SYNTHETIC_KEYS, _synthetic),
    "philly": (("kind", "path"), _PHILLY_KEYS, _philly),
    "alibaba": (("kind", "pods"), _ALIBABA_KEYS, _alibaba),
    "csv": (("kind", "path", "columns"), csv_workload.KEYS, _csv),
}


def _estimate(node: _Node | None):
    """``exact`` | ``{factor: 1.5}`` | ``{noisy: {sigma: 0.5}}``."""
    from gpupool.simulations import synthetic as syn

    if node is None:
        return syn.Exact()
    if isinstance(node.node, yaml.ScalarNode):
        if node.value() != "exact":
            node.fail(
                f"expected exact, {{factor: F}} or {{noisy: {{sigma: S}}}}, got {node.node.value!r}"
            )
        return syn.Exact()
    spec = node.fields(optional=("factor", "noisy"))
    if len(spec) != 1:
        node.fail("give exactly one of: factor, noisy")
    if "factor" in spec:
        return syn.Factor(spec["factor"].number(positive=True, limit=limits.SCALE))
    sigma = spec["noisy"].fields(required=("sigma",))["sigma"]
    return syn.Noisy(sigma.number(minimum=0, limit=limits.SIGMA))


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def resolve_path(text: str, base_dir: Path) -> Path:
    """A scenario path: ``package:rel`` inside gpupool/data, else relative to ``base_dir``."""
    if text.startswith(PACKAGE_PREFIX):
        return Path(str(resources.files("gpupool").joinpath("data", text[len(PACKAGE_PREFIX) :])))
    return Path(os.path.normpath(base_dir / Path(text).expanduser()))


def _input_file(node: _Node, base_dir: Path) -> Path:
    path = resolve_path(node.text(), base_dir)
    if not path.is_file():
        node.fail(f"{'not a regular file' if path.exists() else 'no such file'}: {path}")
    return path


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------

_TOP_KEYS = (
    "name",
    "description",
    "seed",
    "start",
    "gpu_types",
    "pools",
    "domains",
    "orgs",
    "workload",
    "programmes",
    "vouchers",
    "job_classes",
)


def load_scenario(
    path: str | Path,
    seed: int | None = None,
    max_jobs: int | None = None,
    overrides: located_yaml.Overrides = (),
) -> Scenario:
    """Parse a scenario file; ``seed`` overrides the file's, ``max_jobs`` keeps the first N,
    ``overrides`` sets fields before parsing (located_yaml.apply_overrides: sweeps)."""
    from gpupool.simulations.synthetic import apply_estimate

    path = Path(path)
    root, _ = _compose(path, str(path), overrides)
    top = root.fields(required=("gpu_types", "domains", "orgs", "workload"), optional=_TOP_KEYS)
    file_seed = top["seed"].integer(minimum=0, limit=limits.SEED) if "seed" in top else 0
    seed = file_seed if seed is None else seed
    platform = _platform(top)
    workload = top["workload"]
    kind_node = workload.mapping().get("kind")
    if kind_node is None:
        workload.fail(f"missing required key 'kind' ({' | '.join(_WORKLOADS)})")
    kind = kind_node.text()
    if kind not in _WORKLOADS:
        kind_node.fail(f"unknown workload kind {kind!r} (known: {', '.join(_WORKLOADS)})")
    required, optional, parse = _WORKLOADS[kind]
    spec = workload.fields(required=required, optional=optional)
    estimate = _estimate(spec.get("estimate"))
    loaded = parse(spec, platform, _Context(base_dir=path.parent, seed=seed))
    pools = (*platform.pools, *loaded.extra_pools)
    if not pools:
        root.fail("no pools: declare pools")
    jobs = loaded.jobs  # loaders already dropped jobs larger than every allowed pool
    if max_jobs is not None:
        jobs = jobs[:max_jobs]
    if "arrival_scale" in spec:
        jobs = _scaled_arrivals(
            jobs, spec["arrival_scale"].number(positive=True, limit=limits.SCALE)
        )
    jobs = _renumbered(apply_estimate(jobs, estimate, seed))
    start = _start(top["start"]) if "start" in top else 0.0
    jobs = _from(start, jobs)
    if "job_classes" in top:  # speeds per kind of job (gpupool.simulations.job_classes)
        from gpupool.simulations.job_classes import assign_job_classes

        jobs = assign_job_classes(top["job_classes"], jobs, platform.gpu_types)
    programmes = _raw_entries(top["programmes"]) if "programmes" in top else ()
    vouchers = _raw_entries(top["vouchers"]) if "vouchers" in top else ()
    _check_entry_names(programmes, vouchers, platform)
    return Scenario(
        name=top["name"].name() if "name" in top else path.stem,
        gpu_types=platform.gpu_types,
        pools=pools,
        domains=platform.domains,
        orgs=platform.orgs,
        jobs=jobs,
        dropped=dict(loaded.dropped),
        programmes=programmes,
        vouchers=vouchers,
        seed=seed,
        adjusted=dict(loaded.adjusted),
        start=start,
    )


def _platform(top: Mapping[str, _Node]) -> _Platform:
    types, prices = _gpu_types(top["gpu_types"])
    pools = (
        [] if "pools" not in top or top["pools"].is_null() else _pools(top["pools"], types, prices)
    )
    domains = _domains(top["domains"])
    return _Platform(types, prices, pools, domains, _orgs(top["orgs"], domains))


def _keep_placeable(  # the trace loaders do the same on their rows
    jobs: Sequence[SimJob], pools: Sequence[Pool], dropped: Counter[str]
) -> tuple[SimJob, ...]:
    kept = tuple(
        sim
        for sim in jobs
        if any(sim.job.allows(pool.gpu_type) and sim.job.gpus <= pool.gpus for pool in pools)
    )
    if len(kept) < len(jobs):
        dropped["larger than any pool"] += len(jobs) - len(kept)
    return kept


def _start(node: _Node) -> float:
    """``start:``, the instant the replay begins: a date or ISO date/time (UTC if no zone)."""
    from gpupool.simulations.scenario_schema import START

    return _validated(node, START)


def _from(start: float, jobs: tuple[SimJob, ...]) -> tuple[SimJob, ...]:
    """Arrivals as calendar instants: the workload's times count from ``start``."""
    if not start:
        return jobs
    return tuple(
        replace(sim, job=replace(sim.job, submitted_at=start + sim.job.submitted_at))
        for sim in jobs
    )


def _scaled_arrivals(jobs: Sequence[SimJob], scale: float) -> tuple[SimJob, ...]:
    """Multiply arrival times: < 1 compresses a trace (more load), > 1 spreads it."""
    if scale == 1.0:
        return tuple(jobs)
    return tuple(
        replace(sim, job=replace(sim.job, submitted_at=sim.job.submitted_at * scale))
        for sim in jobs
    )


def _renumbered(jobs: Sequence[SimJob]) -> tuple[SimJob, ...]:
    """Ids 1..N in order; jobs already numbered so are kept as they are (no copies)."""
    return tuple(
        sim if sim.job.id == number else replace(sim, job=replace(sim.job, id=number))
        for number, sim in enumerate(jobs, start=1)
    )
