"""The rows a round can compute with: a sanity gate on what is already stored.

Entry points refuse bad values (gpupool.limits, on the way in), but rows
written by an older version, by hand or by a future bug must never stop
scheduling. A round therefore checks every row it reads against the bounds
below, which say what its arithmetic survives (datetime + hours, money in
Decimal cents and NUMERIC(14, 2), division by a GPU type's speed, node lists
built from pool sizes), and sets aside what fails:

- a job (pending or running) whose own fields fail is *quarantined*: the
  round marks it failed with ``end_reason`` "invalid stored data: ...", writes
  a ``job.quarantine`` audit row and goes on with the rest;
- a platform row many jobs depend on is *set aside*, never failed: a GPU type
  or pool is left out of the snapshot (jobs that can only run there wait with
  "no capacity"; jobs running there keep their GPUs but are neither reaped nor
  counted until it is fixed), an organisation or domain is left out with its
  pending jobs (they keep waiting, with the reason as their wait reason), a
  programme funds nobody and its vouchers are left out, an invalid active
  policy is replaced by the FIFO default for the round. Each is logged every
  round and audited (``platform.set_aside``) once per reason.

Bounds here are what the arithmetic can survive, deliberately wider than the
declared domain limits (gpupool.limits, where present): nothing an entry point
accepts may be set aside here. When both exist, these should be derived from
the domain limits there (each bound below >= its domain limit).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gpupool import model

log = logging.getLogger("gpupool.scheduler")

# -- what the round's arithmetic survives (see the module docstring) ------------
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)  # stored instants: calendar periods,
LATEST = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)  # deadlines and splits stay in datetime's range
MAX_JOB_HOURS = 87_600.0  # ten years of a reference GPU
MAX_RUNTIME_HOURS = 876_000.0  # a century on the slowest allowed type: few period pieces
MAX_GPUS = 1_000_000  # per job and per pool
MAX_NODES = 100_000  # per pool: the round keeps a free count per node
MAX_PRIORITY = 1_000_000_000  # |priority|: policies add it to float weights and int64 arrays
SPEED = (1e-3, 1e3)  # GPU type speeds: runtime = hours / speed
MAX_WEIGHT = 1e6  # domain weights
MAX_MONEY = 1e12  # prices, budgets, caps, one ledger entry: NUMERIC(14, 2) holds less
ENTRY_HOURS = 92 * 24.0  # a charge is split at quarter ends: one entry covers at most this
OVERRUN = 10.0  # a run's charge must fit even if it ran this many times its estimate
MAX_VOUCHER_HOURS = 1e12
MAX_EXCHANGE_RATE = 1e6
MAX_POLICY_NUMBER = MAX_MONEY  # any number in a policy document (caps, budgets, weights, ...)
MAX_SEED = 2**31 - 1  # solvers take 32-bit seeds
MAX_TIME_LIMIT_S = 3600.0  # a policy's solver time limit per round
REASON_LENGTH = 256  # jobs.end_reason
WAIT_REASON_LENGTH = 128  # jobs.wait_reason

INVALID = "invalid stored data"


def shown(value: object) -> str:
    """A stored value as the reason names it: 1e+308, 7, 'abc'."""
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, int | str | type(None)):
        return repr(value) if isinstance(value, str) else str(value)
    return type(value).__name__


def number_problem(
    name: str, value: object, low: float, high: float, integer: bool = False
) -> str | None:
    """Why ``value`` is not a finite number in [low, high] (an integer if asked), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{name}={shown(value)} is not a number"
    if integer and not isinstance(value, int):
        return f"{name}={shown(value)} is not a whole number"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name}={shown(value)} is not finite"
    if value > high:
        return f"{name}={shown(value)} beyond {high:g}"
    if value < low:
        return f"{name}={shown(value)} below {low:g}"
    return None


def _positive(name: str, value: object, high: float, integer: bool = False) -> str | None:
    problem = number_problem(name, value, 0, high, integer)
    if problem is None and value <= 0:  # type: ignore[operator]
        return f"{name}={shown(value)} is not positive"
    return problem


def instant_problem(name: str, value: object) -> str | None:
    if not isinstance(value, dt.datetime):
        return f"{name}={shown(value)} is not an instant"
    if not EARLIEST <= value < LATEST:
        return f"{name}={value.isoformat()} outside {EARLIEST.year}-{LATEST.year - 1}"
    return None


def first(*problems: str | None) -> str | None:
    return next((p for p in problems if p is not None), None)


def invalid(problem: str) -> str:
    return f"{INVALID}: {problem}"


# -- platform rows ----------------------------------------------------------------


def gpu_type_problem(speed: object) -> str | None:
    return number_problem("speed", speed, *SPEED)


def job_class_problem(speeds: object) -> str | None:
    """Why a job class's stored speeds (GPU type name -> speed) cannot be used, or None."""
    if not isinstance(speeds, dict) or not all(type(name) is str for name in speeds):
        return f"speeds={shown(speeds)} is not a mapping of GPU type names to speeds"
    return first(*(number_problem(f"speed on {n}", s, *SPEED) for n, s in speeds.items()))


def pool_problem(gpus: object, gpus_per_node: object, price: object) -> str | None:
    problem = first(
        _positive("gpus", gpus, MAX_GPUS, integer=True),
        _positive("gpus_per_node", gpus_per_node, MAX_GPUS, integer=True),
        number_problem("price_per_gpu_hour", price, 0, MAX_MONEY),
    )
    if problem is None and -(-gpus // gpus_per_node) > MAX_NODES:  # type: ignore[operator]
        return f"{-(-gpus // gpus_per_node)} nodes beyond {MAX_NODES}"  # type: ignore[operator]
    return problem


def domain_problem(weight: object) -> str | None:
    return _positive("weight", weight, MAX_WEIGHT)


def org_problem(budget: object) -> str | None:
    return None if budget is None else number_problem("budget", budget, 0, MAX_MONEY)


def programme_problem(row) -> str | None:
    """A stored programme the accounting cannot use (ProgrammeRow), or None."""
    from gpupool.scheduler.repository import programme_from_row

    try:
        programme = programme_from_row(row)
    except (model.GpupoolError, ValueError, TypeError, AttributeError, KeyError) as exc:
        return f"{type(exc).__name__}: {exc}"
    rates = dict(programme.exchange_rates)
    return first(
        org_problem(programme.budget),
        None
        if programme.org_cap is None
        else number_problem("org_cap", programme.org_cap, 0, MAX_MONEY),
        None
        if programme.job_cap is None
        else number_problem("job_cap", programme.job_cap, 0, MAX_MONEY),
        *(number_problem(f"exchange_rates.{k}", v, 0, MAX_EXCHANGE_RATE) for k, v in rates.items()),
        *(
            instant_problem(f"period.{side}", _from_epoch(value))
            for side, value in (("start", programme.period.start), ("end", programme.period.end))
            if value is not None
        ),
    )


def voucher_problem(row) -> str | None:
    """A stored voucher (VoucherRow) the accounting cannot use, or None."""
    return first(
        _positive("amount", row.amount, MAX_VOUCHER_HOURS),
        number_problem("balance", row.balance, 0, MAX_VOUCHER_HOURS),
        instant_problem("awarded_at", row.awarded_at),
        None if row.expires_at is None else instant_problem("expires_at", row.expires_at),
        None
        if row.expires_at is None or row.expires_at > row.awarded_at
        else "expires_at is not after awarded_at",
    )


def _from_epoch(value: object) -> object:
    try:
        return dt.datetime.fromtimestamp(value, dt.UTC)  # type: ignore[arg-type]
    except (OverflowError, OSError, ValueError, TypeError):
        return value


def policy_problem(document) -> str | None:
    """A parsed policy document a round cannot run with, or None.

    Every number in it must be finite and modest (subsidy caps and budgets are
    money: Decimal cents overflow beyond MAX_MONEY); its seed and time limit
    must suit the solvers.
    """
    values = document.to_dict()
    for path, value in _numbers(values, ""):
        problem = number_problem(path, value, -MAX_POLICY_NUMBER, MAX_POLICY_NUMBER)
        if problem is not None:
            return problem
    return first(
        number_problem("seed", values.get("seed", 0), -MAX_SEED, MAX_SEED, integer=True),
        number_problem("time_limit_s", values.get("time_limit_s", 1.0), 0, MAX_TIME_LIMIT_S),
    )


def _numbers(value: object, path: str):
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _numbers(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _numbers(item, f"{path}[{index}]")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield path, value


# -- jobs -------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolFacts:
    """What the job checks need of one pool the round uses."""

    name: str
    gpu_type: str
    speed: float
    price: float
    nodes: int


@dataclass(frozen=True)
class TypeFacts:
    """A GPU type the round uses: its speed, and its dearest pool (the largest charge)."""

    speed: float
    price: float
    pool: str


def type_facts(pools: Iterable[PoolFacts]) -> dict[str, TypeFacts]:
    facts: dict[str, TypeFacts] = {}
    for pool in pools:
        known = facts.get(pool.gpu_type)
        if known is None or pool.price > known.price:
            facts[pool.gpu_type] = TypeFacts(pool.speed, pool.price, pool.name)
    return facts


def job_problem(
    gpus: object,
    hours: object,
    priority: object,
    submitted_at: object,
    gpu_types: object,
    types: Mapping[str, TypeFacts],
    speeds: Mapping[str, float] = model.NO_SPEEDS,
) -> str | None:
    """Why a job's own fields cannot be scheduled, or None.

    ``types``: the GPU types the round uses (type_facts); on every one the job
    allows, it must have a deadline within the calendar and charges that one
    ledger entry holds, at its class's ``speeds`` there (model.Job.speed_on).
    """
    if not _plain(gpus, hours, priority, submitted_at, gpu_types):
        problem = first(
            _positive("gpus", gpus, MAX_GPUS, integer=True),
            _positive("hours", hours, MAX_JOB_HOURS),
            number_problem("priority", priority, -MAX_PRIORITY, MAX_PRIORITY, integer=True),
            instant_problem("submitted_at", submitted_at),
            _types_problem(gpu_types),
        )
        if problem is not None:
            return problem
    names = gpu_types or types  # none listed: any type
    for name in names:  # type: ignore[union-attr]
        facts = types.get(name)
        if facts is None:
            continue
        runtime = hours / speeds.get(name, facts.speed)  # type: ignore[operator]
        if runtime > MAX_RUNTIME_HOURS:
            return (
                f"hours={shown(hours)} runs {runtime:g} h on {name}, beyond {MAX_RUNTIME_HOURS:g}"
            )
        entry = gpus * min(runtime * OVERRUN, ENTRY_HOURS) * facts.price  # type: ignore[operator]
        if entry >= MAX_MONEY:
            return f"a charge on {facts.pool} could reach {entry:g}, beyond {MAX_MONEY:g}"
    return None


def _plain(gpus, hours, priority, submitted_at, gpu_types) -> bool:
    """The common case, checked fast (rounds read thousands of jobs); False: look closer."""
    return (
        type(gpus) is int
        and 0 < gpus <= MAX_GPUS
        and type(hours) is float
        and 0.0 < hours <= MAX_JOB_HOURS  # False for NaN
        and type(priority) is int
        and -MAX_PRIORITY <= priority <= MAX_PRIORITY
        and type(submitted_at) is dt.datetime
        and EARLIEST <= submitted_at < LATEST
        and (
            gpu_types is None
            or (type(gpu_types) is list and all(type(t) is str for t in gpu_types))
        )
    )


def _types_problem(gpu_types: object) -> str | None:
    if gpu_types is None:
        return None
    if not isinstance(gpu_types, list) or not all(isinstance(t, str) for t in gpu_types):
        return f"gpu_types={shown(gpu_types)} is not a list of names"
    return None


def placement_problem(nodes: object, started_at: object, pool: PoolFacts) -> str | None:
    """Why a running job's open placement cannot be counted, or None."""
    problem = instant_problem("started_at", started_at)
    if problem is not None:
        return problem
    if not isinstance(nodes, list) or not nodes:
        return f"placement nodes={shown(nodes)} is not a list of [node, gpus]"
    for item in nodes:
        if not (
            isinstance(item, list | tuple)
            and len(item) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in item)
            and 0 <= item[0] < pool.nodes
            and 0 < item[1] <= MAX_GPUS
        ):
            return f"placement node {item!r:.40} does not fit {pool.name}"
    return None


# -- what a round set aside -------------------------------------------------------


@dataclass
class Verdict:
    """What a round's read of the platform set aside, and why.

    ``jobs``: jobs to fail (their own fields are bad); ``held``: pending jobs
    of an organisation set aside, left waiting; ``stranded``: running jobs on a
    pool set aside, left out of the snapshot, not reaped, not metered (their
    stored data gives no deadline or charge to trust); ``platform``: set-aside
    platform rows, "pool p-x" -> reason.
    """

    jobs: dict[int, str] = field(default_factory=dict)
    held: dict[int, str] = field(default_factory=dict)
    stranded: set[int] = field(default_factory=set)
    platform: dict[str, str] = field(default_factory=dict)

    def set_aside(self, target: str, problem: str) -> None:
        if target not in self.platform:
            self.platform[target] = invalid(problem)

    @property
    def unmetered(self) -> set[int]:
        """Running jobs a round must not meter, reap or price ahead."""
        return set(self.jobs) | self.stranded

    def log(self) -> None:
        for target, reason in sorted(self.platform.items()):
            log.warning("%s set aside: %s", target, reason)
        for job_id, reason in sorted(self.jobs.items()):
            log.warning("job %d quarantined: %s", job_id, reason)


def job_reason(problem: str) -> str:
    return invalid(problem)[:REASON_LENGTH]


def held_reason(target: str) -> str:
    return f"{target} has {INVALID}"[:WAIT_REASON_LENGTH]
