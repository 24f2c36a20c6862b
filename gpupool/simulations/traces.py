"""Loaders for real GPU-cluster traces: Microsoft Philly (2017) and Alibaba openb (2023).

Each loader reads one CSV with the ``csv`` module through gpupool.files (a
regular file only, located CSV errors, no pandas: the full Philly file loads
in a fraction of a second), turns every usable row into a
:class:`SimJob` and counts every row it did not use by reason, so a replay
states exactly what it left out. Decisions about real-world mess:

- Rows are sorted by arrival, ties broken by the row's line in the file (a
  stable id); jobs get ids 1..N in that order.
- Arrival times are shifted so that the earliest kept arrival is t = 0. A
  Philly timestamp without a time zone is read as UTC; one with a zone
  (``2017-10-03 05:26:04+08:00``) is converted to UTC.
- ``hours`` and ``actual_hours`` are both the observed runtime, on the
  reference GPU (speed 1.0); the scenario loader replaces ``hours`` by the
  configured estimate.
- An empty cell in a field a job needs drops the row (``missing <field>``);
  a value that cannot be parsed, a missing column or an empty file is a
  malformed file: ScenarioError at ``file:line column``.
- Zero or negative runtimes are dropped (``zero duration``), never clamped:
  they carry no work and would only add scheduling noise.
- Jobs larger than every pool they may use are dropped (``larger than any
  pool``) when the caller passes its pools.
- Alibaba: CPU-only pods (``num_gpu`` 0) are dropped (``cpu only``); pods that
  were never scheduled have no runtime and are dropped (``never scheduled``);
  GPU-sharing pods (``gpu_milli`` < 1000) take one whole GPU, since gpupool
  allocates whole GPUs (counted in ``adjusted['fractional gpu']``); pods alive
  at the snapshot end (``deletion_time`` = 12,902,960) keep their runtime up to
  that end, a lower bound (``adjusted['censored runtime']``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from gpupool import limits
from gpupool.files import TRACE, FileError, csv_records, header_columns, read_lines
from gpupool.model import GpupoolError, Job, Org, Pool
from gpupool.simulations.workload import SimJob

ALIBABA_SNAPSHOT_END_S = 12_902_960
TRACE_SPAN_S = limits.LATEST_EPOCH - limits.EARLIEST_EPOCH  # the supported dates' span
MAX_JOB_SECONDS = limits.MAX_JOB_HOURS * 3600
TOO_LONG = f"longer than {limits.MAX_JOB_HOURS:,.0f} hours"  # the job-hours limit
TOO_LARGE = "larger than any pool"
# Trace times are compared without DST jumps: a time without a zone is taken
# as UTC, and one with a zone is converted to UTC (the same instant).
_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_fromiso = datetime.fromisoformat
PHILLY_COLUMNS = ("timestamp", "duration", "num_gpus", "cluster")
ALIBABA_POD_COLUMNS = (
    "name",
    "num_gpu",
    "gpu_milli",
    "gpu_spec",
    "qos",
    "creation_time",
    "deletion_time",
    "scheduled_time",
)
ALIBABA_NODE_COLUMNS = ("sn", "gpu", "model")


class ScenarioError(GpupoolError):
    """A scenario or trace file is wrong; ``location`` is ``file:line field``."""


@dataclass(frozen=True)
class TraceLoad:
    """What a loader kept and what it left out.

    ``rows``: data rows read; ``dropped``: reason -> rows not turned into jobs;
    ``adjusted``: reason -> kept jobs that were changed (rounded up, censored).
    """

    jobs: tuple[SimJob, ...]
    rows: int
    dropped: Mapping[str, int] = field(default_factory=dict)
    adjusted: Mapping[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# CSV reading with file:line errors
# ---------------------------------------------------------------------------


class _CsvFile:
    """A CSV file whose header holds ``required`` columns; iterate for (line, cells)."""

    def __init__(self, path: Path, required: Sequence[str]) -> None:
        self.path = path
        self.required = tuple(required)

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        try:
            yield from self._records()
        except FileError as exc:  # refused by the reading rules (gpupool.files)
            raise ScenarioError(exc.message, location=exc.location) from None

    def _records(self) -> Iterator[tuple[int, list[str]]]:
        source = str(self.path)
        records = csv_records(read_lines(self.path, TRACE), source)
        header = next(records, (1, None))[1]
        self.columns = self._check_header(header, source)
        width = len(self.columns)
        for line, cells in records:
            if len(cells) != width:
                if not cells or (len(cells) == 1 and not cells[0].strip()):
                    continue  # blank line
                raise ScenarioError(
                    f"expected {width} fields, found {len(cells)}", location=f"{source}:{line}"
                )
            yield line, cells

    def _check_header(self, header: list[str] | None, source: str) -> dict[str, int]:
        if not header or not any(cell.strip() for cell in header):
            raise ScenarioError(
                f"empty file, expected a header with {', '.join(self.required)}",
                location=f"{self.path}:1",
            )
        columns = {name: index for index, name in enumerate(header_columns(header, source))}
        missing = [column for column in self.required if column not in columns]
        if missing:
            raise ScenarioError(
                f"missing column(s) {', '.join(missing)} in the header", location=f"{self.path}:1"
            )
        return columns


def _rows(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row as a dict) for each data row of a small file."""
    table = _CsvFile(path, required)
    for line, cells in table:
        yield line, {column: cells[index] for column, index in table.columns.items()}


def _number(text: str, path: Path, line: int, column: str) -> float:
    """A finite number in ASCII decimal notation (gpupool.limits.to_number)."""
    value = limits.to_number(text)
    if value is None:
        raise ScenarioError(f"not a number: {text!r}", location=f"{path}:{line} {column}")
    return float(value)


def _trace_seconds(text: str, path: Path, line: int, column: str) -> float:
    """A time in seconds from the trace's start, inside the supported dates' span."""
    value = _number(text, path, line, column)
    if not 0 <= value <= TRACE_SPAN_S:
        raise ScenarioError(
            f"must be between 0 and {TRACE_SPAN_S:,.0f} seconds (1970 to 2200), got {text!r}",
            location=f"{path}:{line} {column}",
        )
    return value


def _count(text: str, path: Path, line: int, column: str) -> int:
    value = _number(text, path, line, column)
    if value < 0 or value != int(value):
        raise ScenarioError(
            f"expected a whole number >= 0, got {text!r}", location=f"{path}:{line} {column}"
        )
    return int(value)


# ---------------------------------------------------------------------------
# Shared post-processing
# ---------------------------------------------------------------------------


# A kept row before numbering: (arrival s, line = stable id, org, gpus, hours,
# allowed GPU types, name). A plain tuple: 82k of them are built per Philly load.
Arrival = tuple[float, int, Org, int, float, tuple[str, ...], str]


def _largest_pools(pools: Sequence[Pool]) -> Callable[[tuple[str, ...]], int]:
    """gpu_types -> GPUs of the largest pool of an allowed type (cached per tuple)."""
    largest: dict[tuple[str, ...], int] = {}

    def lookup(gpu_types: tuple[str, ...]) -> int:
        if gpu_types not in largest:
            sizes = [p.gpus for p in pools if not gpu_types or p.gpu_type in gpu_types]
            largest[gpu_types] = max(sizes, default=0)
        return largest[gpu_types]

    return lookup


def finish_jobs(
    arrivals: list[Arrival], pools: Sequence[Pool] | None, dropped: Counter[str]
) -> tuple[SimJob, ...]:
    """Sort by (arrival, line), drop unplaceable jobs, shift arrivals so the
    earliest is 0 and number the jobs 1..N. ``hours`` = ``actual_hours`` here."""
    arrivals.sort(key=lambda item: (item[0], item[1]))
    if pools is not None:
        largest = _largest_pools(pools)
        kept = [item for item in arrivals if item[3] <= largest(item[5])]
        if len(kept) != len(arrivals):
            dropped[TOO_LARGE] += len(arrivals) - len(kept)
        arrivals = kept
    origin = arrivals[0][0] if arrivals else 0.0
    return tuple(
        SimJob(
            job=Job(
                id=number,
                org=org.name,
                domain=org.domain,
                gpus=gpus,
                hours=hours,
                submitted_at=at - origin,
                gpu_types=gpu_types,
                name=name,
            ),
            actual_hours=hours,
        )
        for number, (at, _, org, gpus, hours, gpu_types, name) in enumerate(arrivals, start=1)
    )


def _org_resolver(
    mapping: Mapping[str, str],
    default_org: str | None,
    orgs: Mapping[str, Org],
    what: str,
) -> Mapping[str, Org | None]:
    """Check every target org exists; return group -> Org (None = drop unmapped)."""
    for group, org in mapping.items():
        if org not in orgs:
            raise ScenarioError(f"unknown org {org!r}", location=f"{what}.{group}")
    if default_org is not None and default_org not in orgs:
        raise ScenarioError(f"unknown org {default_org!r}", location="default_org")
    return {group: orgs[org] for group, org in mapping.items()}


# ---------------------------------------------------------------------------
# Microsoft Philly
# ---------------------------------------------------------------------------


def load_philly(
    path: str | Path,
    *,
    vc_map: Mapping[str, str],
    default_org: str | None,
    orgs: Mapping[str, Org],
    gpu_types: Sequence[str] = (),
    pools: Sequence[Pool] | None = None,
    min_duration_s: float = 0.0,
) -> TraceLoad:
    """Load Pollux's per-job Philly CSV (``timestamp,duration,num_gpus,gpu_time,cluster``).

    ``vc_map`` maps virtual-cluster hashes to org names (the org gives the
    domain); rows of other VCs go to ``default_org``, or are dropped
    (``unmapped vc``) when it is None. Philly names no GPU model: every job
    may use ``gpu_types`` (empty: any type).
    """
    path = Path(path)
    targets = _org_resolver(vc_map, default_org, orgs, "vc_map")
    fallback = orgs[default_org] if default_org is not None else None
    allowed = tuple(gpu_types)
    dropped: Counter[str] = Counter()
    arrivals: list[Arrival] = []
    table = _CsvFile(path, PHILLY_COLUMNS)
    rows = 0
    for line, cells in table:
        rows += 1
        if rows == 1:
            at, sec, num, vcs = (table.columns[name] for name in PHILLY_COLUMNS)
        # Fast path for clean rows (82k rows in well under a second); anything
        # unusual goes through the checked path, which drops or raises.
        numbers = cells[sec] + cells[num]
        try:
            submitted = (_fromiso(cells[at]) - _EPOCH).total_seconds()
            seconds = float(cells[sec])
            gpus = int(cells[num])
        except (ValueError, TypeError):  # TypeError: a time with a zone
            submitted = seconds = gpus = None
        org = targets.get(cells[vcs], fallback)
        if (
            submitted is None
            or not numbers.isascii()  # int() and float() read other scripts' digits
            or "_" in numbers  # ... and 1_000
            or not 0 <= submitted < TRACE_SPAN_S
            or not min_duration_s <= seconds <= MAX_JOB_SECONDS
            or seconds <= 0
            or not 0 < gpus <= limits.MAX_POOL_GPUS
            or org is None
        ):
            values = (cells[at], cells[sec], cells[num], cells[vcs])
            row = dict(zip(PHILLY_COLUMNS, values, strict=True))
            arrival = _checked_philly_row(path, line, row, targets, fallback, min_duration_s)
            if isinstance(arrival, str):
                dropped[arrival] += 1
                continue
            submitted, seconds, gpus, org = arrival
        name = f"philly-{cells[vcs]}-L{line}"
        arrivals.append((submitted, line, org, gpus, seconds / 3600.0, allowed, name))
    jobs = finish_jobs(arrivals, pools, dropped)
    return TraceLoad(jobs=jobs, rows=rows, dropped=dict(dropped))


def _checked_philly_row(
    path: Path,
    line: int,
    row: Mapping[str, str],
    targets: Mapping[str, Org | None],
    fallback: Org | None,
    min_duration_s: float,
) -> tuple[float, float, int, Org] | str:
    """Parse one row with full checks: the parsed fields, or the reason to drop it."""
    for column in PHILLY_COLUMNS:
        if not row[column].strip():
            return f"missing {column}"
    try:
        submitted = _seconds_since_epoch(row["timestamp"].strip())
    except ValueError:
        raise ScenarioError(
            f"not a timestamp (YYYY-MM-DD HH:MM:SS): {row['timestamp']!r}",
            location=f"{path}:{line} timestamp",
        ) from None
    if not 0 <= submitted < TRACE_SPAN_S:
        refused = limits.outside_window(f"{path}:{line} timestamp", row["timestamp"])
        raise ScenarioError(refused.message, location=refused.location)
    seconds = _number(row["duration"], path, line, "duration")
    gpus = _count(row["num_gpus"], path, line, "num_gpus")
    org = targets.get(row["cluster"].strip(), fallback)
    reason = _philly_drop_reason(seconds, gpus, org, min_duration_s)
    return reason or (submitted, seconds, gpus, org)


def _seconds_since_epoch(text: str) -> float:
    stamp = _fromiso(text)
    return (stamp - (_EPOCH if stamp.tzinfo is None else _EPOCH_UTC)).total_seconds()


def _philly_drop_reason(
    seconds: float, gpus: int, org: Org | None, min_duration_s: float
) -> str | None:
    if gpus == 0:
        return "no gpus"
    if gpus > limits.MAX_POOL_GPUS:
        return TOO_LARGE
    if seconds <= 0:
        return "zero duration"
    if seconds > MAX_JOB_SECONDS:
        return TOO_LONG
    if seconds < min_duration_s:
        return "shorter than min_duration_s"
    if org is None:
        return "unmapped vc"
    return None


# ---------------------------------------------------------------------------
# Alibaba openb (2023)
# ---------------------------------------------------------------------------


def load_alibaba_pods(
    path: str | Path,
    *,
    qos_map: Mapping[str, str],
    default_org: str | None,
    orgs: Mapping[str, Org],
    known_gpu_types: Sequence[str] | None = None,
    pools: Sequence[Pool] | None = None,
    snapshot_end_s: float = ALIBABA_SNAPSHOT_END_S,
) -> TraceLoad:
    """Load an ``openb_pod_list_*.csv``: one job per GPU pod.

    ``qos_map`` maps QoS classes (LS, BE, Burstable, Guaranteed) to org names;
    other classes go to ``default_org`` or are dropped (``unmapped qos``).
    ``gpu_spec`` (``V100M16|V100M32``) becomes the job's allowed GPU types;
    names not in ``known_gpu_types`` are ignored, and a pod left with no
    known type is dropped (``unknown gpu type``).
    """
    path = Path(path)
    targets = _org_resolver(qos_map, default_org, orgs, "qos_map")
    context = _PodContext(
        path=path,
        targets=targets,
        fallback=orgs[default_org] if default_org is not None else None,
        known=None if known_gpu_types is None else frozenset(known_gpu_types),
        snapshot_end_s=snapshot_end_s,
    )
    arrivals: list[Arrival] = []
    rows = 0
    for line, row in _rows(path, ALIBABA_POD_COLUMNS):
        rows += 1
        job = context.job(line, row)
        if job is not None:
            arrivals.append(job)
    jobs = finish_jobs(arrivals, pools, context.dropped)
    return TraceLoad(
        jobs=jobs, rows=rows, dropped=dict(context.dropped), adjusted=dict(context.adjusted)
    )


@dataclass
class _PodContext:
    path: Path
    targets: Mapping[str, Org | None]
    fallback: Org | None
    known: frozenset[str] | None
    snapshot_end_s: float
    dropped: Counter[str] = field(default_factory=Counter)
    adjusted: Counter[str] = field(default_factory=Counter)

    def job(self, line: int, row: Mapping[str, str]) -> Arrival | None:
        path = self.path
        for column in ("num_gpu", "creation_time", "deletion_time", "qos"):
            if not row[column].strip():
                self.dropped[f"missing {column}"] += 1
                return None
        gpus = _count(row["num_gpu"], path, line, "num_gpu")
        created = _trace_seconds(row["creation_time"], path, line, "creation_time")
        deleted = _trace_seconds(row["deletion_time"], path, line, "deletion_time")
        if gpus == 0:
            return self._drop("cpu only")
        if gpus > limits.MAX_POOL_GPUS:
            return self._drop(TOO_LARGE)
        if not row["scheduled_time"].strip():
            return self._drop("never scheduled")
        started = _trace_seconds(row["scheduled_time"], path, line, "scheduled_time")
        if deleted <= started:
            return self._drop("zero duration")
        if deleted - started > MAX_JOB_SECONDS:
            return self._drop(TOO_LONG)
        org = self.targets.get(row["qos"].strip(), self.fallback)
        if org is None:
            return self._drop("unmapped qos")
        allowed = self._allowed_types(row["gpu_spec"])
        if allowed is None:
            return self._drop("unknown gpu type")
        self._note_adjustments(line, row, deleted)
        hours = (deleted - started) / 3600.0
        return (created, line, org, gpus, hours, allowed, row["name"].strip())

    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1
        return None

    def _allowed_types(self, spec: str) -> tuple[str, ...] | None:
        names = sorted({name.strip() for name in spec.split("|") if name.strip()})
        if not names:
            return ()
        if self.known is not None:
            names = [name for name in names if name in self.known]
        return tuple(names) or None

    def _note_adjustments(self, line: int, row: Mapping[str, str], deleted: float) -> None:
        milli = row["gpu_milli"].strip()
        if milli and _number(milli, self.path, line, "gpu_milli") < 1000:
            self.adjusted["fractional gpu"] += 1
        if deleted >= self.snapshot_end_s:
            self.adjusted["censored runtime"] += 1


def load_alibaba_nodes(
    path: str | Path,
    *,
    site: str = "alibaba",
    prices: Mapping[str, float] | None = None,
) -> tuple[Pool, ...]:
    """Group ``openb_node_list_gpu_node.csv`` into pools, one per GPU model and node size.

    A Pool has nodes of one size, so a model whose nodes differ in GPU count
    (T4 has 2- and 4-GPU nodes) becomes several pools named ``T4-2gpu``,
    ``T4-4gpu``; a model with one node size is a pool named after the model.
    Nodes without GPUs are skipped. ``prices``: model -> price per GPU-hour (default 0).
    """
    path = Path(path)
    shapes: Counter[tuple[str, int]] = Counter()
    for line, row in _rows(path, ALIBABA_NODE_COLUMNS):
        model = row["model"].strip()
        gpus = _count(row["gpu"], path, line, "gpu")
        if gpus == 0:
            continue
        if not model:
            raise ScenarioError("a GPU node needs a model", location=f"{path}:{line} model")
        limits.GPUS_PER_NODE.check(gpus, f"{path}:{line} gpu", row["gpu"])
        shapes[(model, gpus)] += 1
    sizes_per_model = Counter(model for model, _ in shapes)
    pools = []
    for (model, per_node), nodes in sorted(shapes.items()):
        name = model if sizes_per_model[model] == 1 else f"{model}-{per_node}gpu"
        price = (prices or {}).get(model, 0.0)
        shown = f"{nodes} nodes of {per_node} GPUs ({model})"
        limits.POOL_NODES.check(nodes, str(path), shown)
        limits.POOL_GPUS.check(nodes * per_node, str(path), shown)
        pools.append(
            Pool(
                name=name,
                site=site,
                gpu_type=model,
                gpus=nodes * per_node,
                gpus_per_node=per_node,
                price_per_gpu_hour=price,
            )
        )
    return tuple(pools)
