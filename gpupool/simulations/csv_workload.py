"""``kind: csv`` workloads: any job log (CSV or Parquet) through a declared column mapping.

A scenario names the file's columns for what a job needs and says how to read
them (docs/scenarios.md, "Any trace")::

    workload:
      kind: csv
      path: logs/jobs.csv                 # .csv, or .parquet / .pq (read with pyarrow)
      columns:
        submit: {column: queued, format: "%d.%m.%Y %H:%M", timezone: "+01:00"}
        duration: {column: walltime, unit: minutes}   # or end: {column: ..., format: ...}
        gpus: ngpu                        # a bare name: the column, read as a number
        gpu_types: {column: accel, separator: "+"}    # optional; empty cell = any type
        domain: dept                      # the row's domain (or org: the row's org)
      domain_map: {BIO: medical}          # cell -> domain (default: the cell is the name)
      gpu_type_map: {v100: A100}          # cell -> GPU type (default: the cell is the name)
      org_rules:                          # per domain, how its jobs get an org
        medical: {fixed: hospital}
        research: {round_robin: [lab-a, lab-b]}
        education: {hash: user}           # crc32 of the column's cell over the domain's orgs
      filters: [{column: state, in: [DONE, TIMEOUT]}, {column: ngpu, min: 1}]
      window: {from: 2025-03-01, to: 2025-04-01}   # on submit time, [from, to)
      pool_list: {path: nodes.csv, scale: 0.25}    # pools from a CSV, keeping 1/4 of the nodes

Time formats: ``iso`` (default), ``epoch`` (seconds; ``epoch_ms`` milliseconds)
or a strptime pattern; a time without a zone is in ``timezone`` (default UTC).
Duration units: seconds, minutes, hours, days, or ``hms`` (``[D-]HH:MM:SS``, as
Slurm writes elapsed times). Parquet timestamp and number columns are used as
they are. Empty cells in a needed field, zero durations, jobs without GPUs and
rows outside the filters or window are dropped and counted by reason; a cell
that cannot be read, an unknown domain, org or GPU type, or a missing column is
a ScenarioError at ``file:line column`` (Parquet: ``file:row N column``).
"""

from __future__ import annotations

import datetime as dt
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gpupool import limits
from gpupool.model import Org, Pool
from gpupool.simulations.traces import (
    MAX_JOB_SECONDS,
    TOO_LARGE,
    TOO_LONG,
    Arrival,
    ScenarioError,
    _CsvFile,
    finish_jobs,
)

UNITS = {"seconds": 1.0, "minutes": 60.0, "hours": 3600.0, "days": 86400.0, "hms": None}
_HMS = re.compile(r"^(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2}(?:\.\d*)?)$", re.ASCII)
_EPOCH_UNITS = {"epoch": 1.0, "epoch_s": 1.0, "epoch_ms": 0.001}
PARQUET = (".parquet", ".pq")
POOL_COLUMNS = ("name", "site", "gpu_type", "gpus", "gpus_per_node")
KEYS = (
    "kind",
    "path",
    "columns",
    "domain_map",
    "gpu_type_map",
    "org_map",
    "org_rules",
    "filters",
    "window",
    "pool_list",
    "estimate",
    "arrival_scale",
)


class _Cell:
    """Where a value came from, to name it in an error: ``file:line column``, or
    ``file:row N column`` for a Parquet file (``source`` ends in ``:row ``)."""

    def __init__(self, source: str, line: int, column: str) -> None:
        separator = "" if source.endswith(" ") else ":"
        self.where = f"{source}{separator}{line} {column}"

    def fail(self, message: str):
        raise ScenarioError(message, location=self.where)

    def checked(self, check: Callable, *args) -> Any:
        """``check(*args, where)`` from gpupool.limits, its error as a ScenarioError."""
        try:
            return check(*args, self.where)
        except ScenarioError:
            raise
        except limits.GpupoolError as exc:
            self.fail(exc.message)


# ---------------------------------------------------------------------------
# Reading one field
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeField:
    column: str
    format: str = "iso"
    zone: dt.tzinfo = dt.UTC

    def read(self, value: Any, cell: _Cell) -> float:
        if isinstance(value, dt.datetime):  # a Parquet timestamp
            moment = value if value.tzinfo else value.replace(tzinfo=self.zone)
            return cell.checked(limits.check_moment, moment).timestamp()
        text = str(value).strip()
        if self.format in _EPOCH_UNITS:
            number = limits.to_number(text) if isinstance(value, str) else value
            if not limits.is_real(number):
                cell.fail(f"not a number of {self.format} seconds: {text!r}")
            seconds = float(number) * _EPOCH_UNITS[self.format]
            return cell.checked(limits.check_instant, seconds)
        try:
            if self.format == "iso":
                moment = dt.datetime.fromisoformat(text)
            else:
                moment = dt.datetime.strptime(text, self.format)
        except ValueError:
            cell.fail(f"not a time in format {self.format!r}: {text!r}")
        moment = moment if moment.tzinfo else moment.replace(tzinfo=self.zone)
        return cell.checked(limits.check_moment, moment).timestamp()


@dataclass(frozen=True)
class DurationField:
    column: str
    unit: str = "seconds"

    def read(self, value: Any, cell: _Cell) -> float:
        if self.unit == "hms":
            match = _HMS.match(str(value).strip())
            if not match:
                cell.fail(f"not a duration like [D-]HH:MM:SS: {value!r}")
            days, hours, minutes, seconds = match.groups()
            return ((int(days or 0) * 24 + int(hours)) * 60 + int(minutes)) * 60 + float(seconds)
        return _number(value, cell) * UNITS[self.unit]


def _number(value: Any, cell: _Cell) -> float:
    number = limits.to_number(value.strip()) if isinstance(value, str) else value
    if not limits.is_real(number) or isinstance(number, bool):
        cell.fail(f"not a number: {value!r}")
    return float(number)


# ---------------------------------------------------------------------------
# The declaration, parsed from the scenario's nodes
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    column: str
    test: str  # equals | in | not_in | min | max
    values: tuple


@dataclass(frozen=True)
class CsvSpec:
    path: Path
    submit: TimeField
    gpus: str
    duration: DurationField | None = None
    end: TimeField | None = None
    gpu_types: tuple[str, str] | None = None  # (column, separator)
    domain: str | None = None
    org: str | None = None
    domain_map: Mapping[str, str] | None = None
    gpu_type_map: Mapping[str, str] | None = None
    org_map: Mapping[str, str] | None = None
    org_rules: Mapping[str, tuple[str, Any]] | None = None  # domain -> (rule, argument)
    filters: tuple[Filter, ...] = ()
    window: tuple[float | None, float | None] = (None, None)

    def columns(self) -> list[str]:
        named = [self.submit.column, self.gpus, *(f.column for f in self.filters)]
        for field in (self.duration, self.end):
            if field is not None:
                named.append(field.column)
        named += [c for c in (self.domain, self.org) if c is not None]
        if self.gpu_types is not None:
            named.append(self.gpu_types[0])
        for rule, argument in (self.org_rules or {}).values():
            if rule == "hash":
                named.append(argument)
        return list(dict.fromkeys(named))


def parse_spec(spec: Mapping[str, Any], platform, path: Path) -> CsvSpec:
    """The workload's nodes (gpupool.simulations.scenario._Node) as a CsvSpec."""
    columns = spec["columns"].fields(
        required=("submit", "gpus"),
        optional=("submit", "gpus", "duration", "end", "gpu_types", "domain", "org"),
    )
    if ("duration" in columns) == ("end" in columns):
        spec["columns"].fail("give exactly one of: duration, end")
    if "domain" not in columns and "org" not in columns:
        spec["columns"].fail("give a domain or an org column")
    maps = {
        key: _value_map(spec.get(key), known, what)
        for key, known, what in (
            ("domain_map", platform.domains, "domain"),
            ("gpu_type_map", platform.gpu_types, "GPU type"),
            ("org_map", platform.orgs, "org"),
        )
    }
    return CsvSpec(
        path=path,
        submit=_time_field(columns["submit"]),
        gpus=_column(columns["gpus"]),
        duration=_duration_field(columns["duration"]) if "duration" in columns else None,
        end=_time_field(columns["end"]) if "end" in columns else None,
        gpu_types=_split_field(columns["gpu_types"]) if "gpu_types" in columns else None,
        domain=_column(columns["domain"]) if "domain" in columns else None,
        org=_column(columns["org"]) if "org" in columns else None,
        org_rules=_org_rules(spec.get("org_rules"), platform),
        filters=tuple(_filter(n) for n in spec["filters"].sequence()) if "filters" in spec else (),
        window=_window(spec["window"]) if "window" in spec else (None, None),
        **maps,
    )


def _is_mapping(node) -> bool:
    return isinstance(node.node, yaml.MappingNode)


def _column(node) -> str:
    if _is_mapping(node):
        return node.fields(required=("column",))["column"].text()
    return node.text()


def _time_field(node) -> TimeField:
    if not _is_mapping(node):
        return TimeField(node.text())
    spec = node.fields(required=("column",), optional=("format", "timezone"))
    zone = dt.UTC
    if "timezone" in spec:
        text = spec["timezone"].text()
        try:
            zone = dt.datetime.fromisoformat(f"2000-01-01T00:00{text}").tzinfo
        except ValueError:
            zone = None
        if zone is None:
            spec["timezone"].fail(f"a UTC offset like +08:00 or Z, got {text!r}")
    pattern = spec["format"].text() if "format" in spec else "iso"
    return TimeField(spec["column"].text(), pattern, zone)


def _duration_field(node) -> DurationField:
    if not _is_mapping(node):
        return DurationField(node.text())
    spec = node.fields(required=("column", "unit"))
    unit = spec["unit"].text()
    if unit not in UNITS:
        spec["unit"].fail(f"unknown unit {unit!r} (known: {', '.join(UNITS)})")
    return DurationField(spec["column"].text(), unit)


def _split_field(node) -> tuple[str, str]:
    if not _is_mapping(node):
        return node.text(), "|"
    spec = node.fields(required=("column",), optional=("separator",))
    return spec["column"].text(), spec["separator"].text() if "separator" in spec else "|"


def _value_map(node, known: Mapping[str, object], what: str) -> dict[str, str] | None:
    if node is None:
        return None
    mapped = {}
    for value, target in node.mapping().items():
        name = target.name()
        if name not in known:
            target.fail(f"unknown {what} {name!r} (known: {', '.join(sorted(known))})")
        mapped[value] = name
    return mapped


_RULES = ("fixed", "round_robin", "hash")


def _org_rules(node, platform) -> dict[str, tuple[str, Any]] | None:
    if node is None:
        return None
    rules = {}
    for domain, rule_node in node.mapping().items():
        if domain not in platform.domains:
            node.key(domain).fail(f"unknown domain {domain!r}")
        own = [n for n, org in platform.orgs.items() if org.domain == domain]
        spec = rule_node.fields(optional=_RULES)
        if len(spec) != 1:
            rule_node.fail(f"give exactly one of: {', '.join(_RULES)}")
        ((rule, body),) = spec.items()
        if rule == "hash":
            rules[domain] = (rule, body.text())
            continue
        items = body.sequence() if isinstance(body.node, yaml.SequenceNode) else [body]
        names = [item.text() for item in items]
        if rule == "fixed" and len(names) != 1:
            body.fail("fixed names one org")
        for item, name in zip(items, names, strict=True):
            if name not in own:
                item.fail(f"{name!r} is not an org of domain {domain!r} (its orgs: {own})")
        rules[domain] = (rule, tuple(names))
    return rules


def _filter(node) -> Filter:
    tests = ("equals", "in", "not_in", "min", "max")
    spec = node.fields(required=("column",), optional=tests)
    given = [t for t in tests if t in spec]
    if len(given) != 1:
        node.fail(f"give a column and exactly one of: {', '.join(tests)}")
    test = given[0]
    if test in ("min", "max"):
        return Filter(spec["column"].text(), test, (spec[test].number(),))
    values = spec[test].names() if test != "equals" else [spec[test].text()]
    return Filter(spec["column"].text(), test, tuple(values))


def _window(node) -> tuple[float | None, float | None]:
    from gpupool.accounting.periods import parse_instant

    spec = node.fields(optional=("from", "to"))
    bounds = []
    for key in ("from", "to"):
        if key not in spec:
            bounds.append(None)
            continue
        try:
            bounds.append(parse_instant(spec[key].plain(), spec[key].where()))
        except ScenarioError:
            raise
        except limits.GpupoolError as exc:
            spec[key].fail(exc.message)
    if None not in bounds and bounds[1] <= bounds[0]:
        spec["to"].fail("must be after from")
    return bounds[0], bounds[1]


# ---------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------


def _csv_rows(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    table = _CsvFile(path, columns)
    for line, cells in table:
        yield line, {name: cells[table.columns[name]] for name in columns}


def _parquet_rows(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq  # only for Parquet files

    try:
        handle = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several kinds for a file that is not Parquet
        raise ScenarioError(f"not a Parquet file: {exc}", location=str(path)) from None
    missing = [name for name in columns if name not in handle.schema_arrow.names]
    if missing:
        raise ScenarioError(f"missing column(s) {', '.join(missing)}", location=f"{path}:1")
    row = 0
    for batch in handle.iter_batches(columns=list(columns), batch_size=65536):
        for record in batch.to_pylist():
            row += 1
            yield row, record


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


class _Reader:
    """Turns rows into arrivals, counting what it drops."""

    def __init__(self, spec: CsvSpec, orgs: Mapping[str, Org], known_types: Sequence[str]) -> None:
        self.spec, self.orgs, self.known_types = spec, orgs, frozenset(known_types)
        parquet = spec.path.suffix.lower() in PARQUET
        self.source = f"{spec.path}:row " if parquet else str(spec.path)
        self.dropped: Counter[str] = Counter()
        self.turns: Counter[str] = Counter()  # round-robin position per domain

    def arrival(self, line: int, row: Mapping[str, Any]) -> Arrival | None:
        spec = self.spec
        if not all(self._passes(f, line, row) for f in spec.filters):
            return self._drop("filtered out")
        needed = [spec.submit.column, spec.gpus, (spec.duration or spec.end).column]
        needed += [c for c in (spec.domain, spec.org) if c is not None]
        for column in needed:
            if _empty(row[column]):
                return self._drop(f"missing {column}")
        submitted = spec.submit.read(row[spec.submit.column], self._cell(line, spec.submit.column))
        low, high = spec.window
        if (low is not None and submitted < low) or (high is not None and submitted >= high):
            return self._drop("outside the window")
        seconds = self._seconds(line, row, submitted)
        gpus = self._gpus(line, row[spec.gpus])
        reason = _drop_reason(seconds, gpus)
        if reason is not None:
            return self._drop(reason)
        org, types = self._org(line, row), self._gpu_types(line, row)
        return (submitted, line, org, gpus, seconds / 3600.0, types, f"{spec.path.stem}-{line}")

    def _gpus(self, line: int, value: Any) -> int:
        cell = self._cell(line, self.spec.gpus)
        gpus = _number(value, cell)
        if gpus != int(gpus) or gpus < 0:
            cell.fail(f"expected a whole number >= 0, got {value!r}")
        return int(gpus)

    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    def _cell(self, line: int, column: str) -> _Cell:
        return _Cell(self.source, line, column)

    def _seconds(self, line: int, row: Mapping[str, Any], submitted: float) -> float:
        spec = self.spec
        if spec.duration is not None:
            column = spec.duration.column
            return spec.duration.read(row[column], self._cell(line, column))
        return spec.end.read(row[spec.end.column], self._cell(line, spec.end.column)) - submitted

    def _passes(self, test: Filter, line: int, row: Mapping[str, Any]) -> bool:
        value = row[test.column]
        if test.test in ("min", "max"):
            if _empty(value):
                return False
            number = _number(value, self._cell(line, test.column))
            return number >= test.values[0] if test.test == "min" else number <= test.values[0]
        text = "" if value is None else str(value).strip()
        inside = text in test.values
        return not inside if test.test == "not_in" else inside

    def _org(self, line: int, row: Mapping[str, Any]) -> Org:
        spec = self.spec
        if spec.org is not None:
            value = str(row[spec.org]).strip()
            name = (spec.org_map or {}).get(value, value)
            if name not in self.orgs:
                self._cell(line, spec.org).fail(f"unknown org {value!r}")
            return self.orgs[name]
        value = str(row[spec.domain]).strip()
        domain = (spec.domain_map or {}).get(value, value)
        own = [org for org in self.orgs.values() if org.domain == domain]
        if not own:
            self._cell(line, spec.domain).fail(f"unknown domain {value!r} (or one without orgs)")
        rule, argument = (spec.org_rules or {}).get(domain, ("round_robin", None))
        if rule == "fixed":
            return self.orgs[argument[0]]
        if rule == "hash":
            key = "" if row[argument] is None else str(row[argument]).strip()
            return own[zlib.crc32(key.encode("utf-8")) % len(own)]
        names = argument or tuple(org.name for org in own)
        turn = self.turns[domain]
        self.turns[domain] += 1
        return self.orgs[names[turn % len(names)]]

    def _gpu_types(self, line: int, row: Mapping[str, Any]) -> tuple[str, ...]:
        if self.spec.gpu_types is None:
            return ()
        column, separator = self.spec.gpu_types
        value = row[column]
        if _empty(value):
            return ()
        names = []
        for part in str(value).split(separator):
            part = part.strip()
            name = (self.spec.gpu_type_map or {}).get(part, part)
            if name not in self.known_types:
                self._cell(line, column).fail(f"unknown GPU type {part!r}")
            names.append(name)
        return tuple(sorted(set(names)))


def _drop_reason(seconds: float, gpus: int) -> str | None:
    if gpus == 0:
        return "no gpus"
    if gpus > limits.MAX_POOL_GPUS:
        return TOO_LARGE
    if seconds <= 0:
        return "zero duration"
    if seconds > MAX_JOB_SECONDS:
        return TOO_LONG
    return None


def load(spec: CsvSpec, orgs: Mapping[str, Org], known_types: Sequence[str], pools: Sequence[Pool]):
    """The jobs of ``spec``'s file: (jobs, dropped) as gpupool.simulations.traces loads them."""
    suffix = spec.path.suffix.lower()
    rows: Callable = _parquet_rows if suffix in PARQUET else _csv_rows
    reader = _Reader(spec, orgs, known_types)
    arrivals = []
    for line, row in rows(spec.path, spec.columns()):
        arrival = reader.arrival(line, row)
        if arrival is not None:
            arrivals.append(arrival)
    jobs = finish_jobs(arrivals, pools, reader.dropped)
    return jobs, dict(reader.dropped)


# ---------------------------------------------------------------------------
# Pools from a CSV
# ---------------------------------------------------------------------------


def pool_list(node, platform, base_dir: Path, input_file: Callable) -> tuple[Pool, ...]:
    """``pool_list: {path, scale}``: the file's pools, none named like a declared one."""
    spec = node.fields(required=("path",), optional=("scale",))
    scale = spec["scale"].share() if "scale" in spec else 1.0
    if scale <= 0:
        spec["scale"].fail("must be > 0")
    path = input_file(spec["path"], base_dir)
    pools = load_pool_list(path, scale, platform.gpu_types, platform.prices)
    declared = {pool.name for pool in platform.pools}
    seen: set[str] = set()
    for pool in pools:
        if pool.name in declared or pool.name in seen:
            where = "also declared under pools" if pool.name in declared else "named twice"
            node.fail(f"pool {pool.name!r} in {path} is {where}")
        seen.add(pool.name)
    return pools


def load_pool_list(
    path: Path, scale: float, gpu_types: Mapping[str, object], prices: Mapping[str, float]
) -> tuple[Pool, ...]:
    """Pools from ``name,site,gpu_type,gpus,gpus_per_node[,price_per_gpu_hour]``, each
    keeping ``scale`` of its nodes (rounded, at least one)."""
    pools = []
    for line, cells in _csv_rows_with_optional(path):
        cell = _Cell(str(path), line, "gpu_type")
        gpu_type = cells["gpu_type"].strip()
        if gpu_type not in gpu_types:
            cell.fail(f"unknown GPU type {gpu_type!r} (declare it under gpu_types)")
        per_node = int(_whole(cells["gpus_per_node"], _Cell(str(path), line, "gpus_per_node")))
        gpus = _whole(cells["gpus"], _Cell(str(path), line, "gpus"))
        limits.GPUS_PER_NODE.check(per_node, f"{path}:{line} gpus_per_node")
        nodes = max(1, round(-(-gpus // per_node) * scale))
        price_text = cells.get("price_per_gpu_hour", "").strip()
        if price_text:
            price = _number(price_text, _Cell(str(path), line, "price_per_gpu_hour"))
        elif gpu_type in prices:
            price = prices[gpu_type]
        else:
            _Cell(str(path), line, "price_per_gpu_hour").fail(
                f"no price: give one here or on GPU type {gpu_type}"
            )
        limits.POOL_GPUS.check(nodes * per_node, f"{path}:{line} gpus")
        pools.append(
            Pool(
                name=cells["name"].strip(),
                site=cells["site"].strip(),
                gpu_type=gpu_type,
                gpus=nodes * per_node,
                gpus_per_node=per_node,
                price_per_gpu_hour=price,
            )
        )
    return tuple(pools)


def _csv_rows_with_optional(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    table = _CsvFile(path, POOL_COLUMNS)
    for line, cells in table:
        yield line, {name: cells[index] for name, index in table.columns.items()}


def _whole(text: str, cell: _Cell) -> int:
    value = _number(text, cell)
    if value != int(value) or value < 1:
        cell.fail(f"expected a whole number >= 1, got {text!r}")
    return int(value)
