"""The pure domain model of a public compute platform.

Everything here is plain, immutable data plus the few rules that belong to the
data itself (job state transitions, gang placement on nodes). Nothing here does
I/O: the scheduler persists these objects, policies read them, the simulator
creates them. This module is the contract between all subpackages.

Units, everywhere in gpupool:
- time: seconds since the Unix epoch (floats) for instants; hours for durations
  the user speaks about (job runtime estimates, GPU-hours).
- money: platform currency units (yuan) as floats, rounded to cents when stored.
- a job's ``hours`` is its runtime estimate on a reference GPU of speed 1.0; on
  a GPU type of speed ``s`` it runs ``hours / s``.
- effective GPU-hours = gpus x hours-on-reference: the work done, independent of
  which GPU type did it. Fairness, guarantees and vouchers use this unit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class GpupoolError(Exception):
    """A user-facing error: printed as one line, never as a traceback.

    ``location`` names where the problem is: a field path, and a file and line
    when the input came from a file (``jobs.csv:7 gpus``).
    """

    def __init__(self, message: str, *, location: str | None = None) -> None:
        self.message = message
        self.location = location
        super().__init__(f"{location}: {message}" if location else message)


class NotFound(GpupoolError):
    """A named object (org, pool, job, GPU type, ...) does not exist."""


class Conflict(GpupoolError):
    """The request conflicts with what is stored: a name that already exists, a
    submit key used with other content, a state that does not allow the change
    (HTTP 409, gpupool.server.problems)."""


class IllegalTransition(Conflict):
    """A job state change that the state machine does not allow."""


class PermissionDenied(GpupoolError):
    """The acting user may not do this."""


class AuthenticationFailed(GpupoolError):
    """A presented credential was not accepted.

    One message for every reason (unknown, malformed, expired, revoked, wrong
    secret), so a caller learns nothing about which tokens exist or why a guess
    failed; the reason goes to the server's own log and audit, never back.
    """

    MESSAGE = "invalid or expired token"

    def __init__(self, reason: str = "") -> None:
        super().__init__(self.MESSAGE, location="token")
        self.reason = reason  # for logs and audit only: never shown to the caller


# ---------------------------------------------------------------------------
# Job states: the one place where legal transitions are defined.
# ---------------------------------------------------------------------------


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"
    TIMED_OUT = "timed_out"


TERMINAL_STATES = frozenset(
    {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT}
)

# A preempted job is requeued (back to pending) unless it is cancelled.
_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.RUNNING, JobState.CANCELLED}),
    JobState.RUNNING: frozenset(
        {
            JobState.COMPLETED,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.PREEMPTED,
            JobState.TIMED_OUT,
        }
    ),
    JobState.PREEMPTED: frozenset({JobState.PENDING, JobState.CANCELLED}),
}


def check_transition(current: JobState | str, new: JobState | str) -> JobState:
    """Return ``new`` as a JobState if ``current -> new`` is legal, else raise."""
    current, new = JobState(current), JobState(new)
    if new not in _TRANSITIONS.get(current, frozenset()):
        raise IllegalTransition(
            f"a {current.value} job cannot become {new.value}", location="state"
        )
    return new


# The scheduler alone may fail a job whose stored data it cannot handle
# (gpupool.scheduler.quarantine): a pending one too, which no site can report.
_QUARANTINABLE = frozenset({JobState.PENDING, JobState.RUNNING})


def check_quarantine(current: JobState | str) -> JobState:
    """FAILED if the scheduler may fail a ``current`` job it cannot handle, else raise."""
    if JobState(current) not in _QUARANTINABLE:
        raise IllegalTransition(
            f"a {JobState(current).value} job cannot be quarantined", location="state"
        )
    return JobState.FAILED


# ---------------------------------------------------------------------------
# Platform description
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpuType:
    name: str
    vendor: str
    memory_gb: int
    speed: float = 1.0  # relative throughput; the reference GPU is 1.0
    domestic: bool = False  # a domestic accelerator (Ascend, ...): subsidy rules may favour it


# A job without a class: no speeds of its own (every GPU type's own speed applies).
# One shared empty mapping, never written to (a plain dict: jobs are pickled).
NO_SPEEDS: Mapping[str, float] = {}


def _no_speeds() -> Mapping[str, float]:
    return NO_SPEEDS  # dataclasses refuse a shared dict as a plain default


@dataclass(frozen=True, slots=True)
class JobClass:
    """A kind of job and how fast it runs on each GPU type (Gavel's throughput matrix).

    ``speeds``: GPU type name -> throughput relative to the reference GPU, as
    GpuType.speed; a type the class does not name runs it at the type's own speed.
    """

    name: str
    speeds: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Pool:
    """A named group of identical GPUs at one site."""

    name: str
    site: str
    gpu_type: str
    gpus: int
    gpus_per_node: int
    price_per_gpu_hour: float

    @property
    def nodes(self) -> int:
        return math.ceil(self.gpus / self.gpus_per_node)

    def node_sizes(self) -> tuple[int, ...]:
        """GPUs on each node; the last node holds the remainder if any."""
        full, rest = divmod(self.gpus, self.gpus_per_node)
        return (self.gpus_per_node,) * full + ((rest,) if rest else ())

    def largest_gang(self) -> int:
        """The largest gang fit_gang can place on this pool when it is empty: whole
        nodes' worth, or the one partial node when there is no whole node. Computed
        without node_sizes(): checks that ask this must not cost a pass per node."""
        return largest_gang(self.gpus, self.gpus_per_node)

    def fits_empty(self, gpus: int) -> bool:
        """Whether fit_gang places a gang of ``gpus`` on this pool when it is empty."""
        return 1 <= gpus <= self.largest_gang()


def largest_gang(gpus: int, gpus_per_node: int) -> int:
    """Pool.largest_gang from the pool's two sizes (checks that have only those)."""
    whole_nodes = gpus // gpus_per_node
    return whole_nodes * gpus_per_node if whole_nodes else gpus


@dataclass(frozen=True, slots=True)
class Domain:
    name: str
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Org:
    name: str
    domain: str
    budget: float | None = None  # money the org may spend per period; None = unlimited


@dataclass(frozen=True, slots=True)
class Job:
    """A request for a gang of GPUs for an estimated time.

    ``gpu_types`` empty means any GPU type will do. ``job_class`` names the
    job's class ("" = none) and ``speeds`` are that class's speeds, resolved
    when the job is read (snapshot, scenario): see speed_on.
    """

    id: int
    org: str
    domain: str
    gpus: int
    hours: float
    submitted_at: float
    gpu_types: tuple[str, ...] = ()
    name: str = ""
    priority: int = 0  # a per-job boost set by admins; policies add it to the domain weight
    job_class: str = ""
    speeds: Mapping[str, float] = field(
        default_factory=_no_speeds, compare=False, hash=False, repr=False
    )

    def allows(self, gpu_type: str) -> bool:
        return not self.gpu_types or gpu_type in self.gpu_types

    @property
    def effective_gpu_hours(self) -> float:
        return self.gpus * self.hours

    def speed_on(self, gpu_type: GpuType) -> float:
        """This job's throughput on ``gpu_type`` relative to the reference GPU.

        The one place a job's speed is read: policies, prices, usage and timeouts
        ask here, so a per-class speed (Gavel's throughput matrix) changes them all:
        the class's speed on that type, else (no class, or a type the class does
        not name) the type's own speed.
        """
        return self.speeds.get(gpu_type.name, gpu_type.speed)

    def runtime_hours_on(self, gpu_type: GpuType) -> float:
        return self.hours / self.speed_on(gpu_type)


# ---------------------------------------------------------------------------
# Timeouts: how long a started job may hold its GPUs. The live reaper
# (gpupool.scheduler.lifecycle) and the simulator both use this one rule, so a
# job that overruns its estimate stops at the same instant in both.
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimeoutGrace:
    """How far past its estimate a job may run: ``fraction`` of it plus ``minutes``."""

    fraction: float = 0.10
    minutes: float = 5.0

    def run_limit_seconds(self, hours: float, speed: float) -> float:
        """Seconds after its start at which a job of ``hours`` (reference) on a GPU
        of ``speed`` times out: its estimate on that type, plus the grace."""
        estimate = hours / speed * 3600.0
        return estimate * (1 + self.fraction) + self.minutes * 60


def served_gpu_hours(gpus: int, speed: float, started_at: float, ended_at: float) -> float:
    """Effective GPU-hours one run of ``gpus`` GPUs of ``speed`` held from ``started_at``
    to ``ended_at`` (epoch seconds): the unit of Snapshot.served, live and simulated."""
    return gpus * speed * max(0.0, ended_at - started_at) / 3600.0


# ---------------------------------------------------------------------------
# Placement: which GPUs on which nodes of a pool a gang occupies.
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Placement:
    job_id: int
    pool: str
    # (node index, GPUs taken on that node), node indexes ascending
    nodes: tuple[tuple[int, int], ...]

    @property
    def gpus(self) -> int:
        return sum(n for _, n in self.nodes)


def fit_gang(
    free_per_node: Sequence[int], gpus: int, gpus_per_node: int
) -> tuple[tuple[int, int], ...] | None:
    """Choose nodes for a gang of ``gpus`` GPUs, or None if it cannot fit now.

    A gang that fits in one node goes to a single node, best fit (the node with
    the fewest free GPUs that still holds it, lowest index on ties) so that
    whole nodes stay free for big gangs. A gang larger than a node takes whole,
    completely free nodes (lowest indexes first): multi-node jobs need the
    node-local interconnect to themselves, and partial nodes would fragment.
    """
    if gpus <= 0:
        return None
    if gpus <= gpus_per_node:
        best = None
        for index, free in enumerate(free_per_node):
            if free >= gpus and (best is None or free < free_per_node[best]):
                best = index
        return None if best is None else ((best, gpus),)
    needed = math.ceil(gpus / gpus_per_node)
    empty = [i for i, free in enumerate(free_per_node) if free == gpus_per_node]
    if len(empty) < needed:
        return None
    chosen = empty[:needed]
    take = [gpus_per_node] * (needed - 1) + [gpus - gpus_per_node * (needed - 1)]
    return tuple(zip(chosen, take, strict=True))


# ---------------------------------------------------------------------------
# Snapshot: everything a policy may look at, as plain data.
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoolState:
    pool: Pool
    free_per_node: tuple[int, ...]

    @property
    def free(self) -> int:
        return sum(self.free_per_node)


@dataclass(frozen=True, slots=True)
class RunningJob:
    job: Job
    placement: Placement
    started_at: float  # this run's start: after a preemption, the restart
    expected_end: float  # started_at + runtime on the pool's GPU type
    preemptions: int = 0  # times the job was preempted before this run (preemption hysteresis)


@dataclass(frozen=True, slots=True)
class OrgAccount:
    """What an org may still spend and be subsidised in the current period.

    None means unlimited. ``vouchers`` are effective GPU-hours the org holds
    (issue 6: programmes and vouchers extend this through gpupool.accounting).
    """

    org: str
    budget_left: float | None = None
    subsidy_cap_left: float | None = None
    vouchers: float = 0.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One consistent view of the platform, taken at ``now``.

    ``usage`` is each domain's decayed historical usage in effective GPU-hours
    (for fair-share); ``accounts`` per org; ``subsidy_budget_left`` is what the
    platform-wide subsidy budget still holds this period (None = no limit).
    ``pricing`` is the active subsidy rule set (a gpupool.accounting object);
    None means no subsidies: organisations pay the full price. Policies price
    and admit jobs only through gpupool.accounting.BudgetTracker(snapshot).
    """

    now: float
    gpu_types: Mapping[str, GpuType]
    pools: tuple[PoolState, ...]
    domains: Mapping[str, Domain]
    orgs: Mapping[str, Org]
    pending: tuple[Job, ...]
    running: tuple[RunningJob, ...] = ()
    usage: Mapping[str, float] = field(default_factory=dict)
    accounts: Mapping[str, OrgAccount] = field(default_factory=dict)
    subsidy_budget_left: float | None = None
    pricing: object | None = None
    # effective GPU-hours each domain is behind its guaranteed share over the
    # guarantee's time window (issue 6); policies raise such domains' priority.
    guarantee_deficit: Mapping[str, float] = field(default_factory=dict)
    # effective GPU-hours (gpus x speed x hours held) each pending or running
    # job received in its earlier, preempted runs: what time slicing
    # (fair-share leases) counts as service already given. Missing: none.
    # The live snapshot sums the job's closed placements, the simulator its
    # stopped runs: one rule (gpupool.model.served_gpu_hours).
    served: Mapping[int, float] = field(default_factory=dict)

    def pool_state(self, name: str) -> PoolState:
        for state in self.pools:
            if state.pool.name == name:
                return state
        raise NotFound(f"no pool named {name!r}", location="pool")


# ---------------------------------------------------------------------------
# Allocation: what a policy returns.
# ---------------------------------------------------------------------------


class WaitReason(StrEnum):
    """Why a pending job did not start this round (like Slurm's reason codes)."""

    NO_CAPACITY = "no capacity of an allowed GPU type"
    QUOTA = "quota reached"
    BUDGET = "budget exhausted"
    PRIORITY = "lower priority"
    NEVER_FITS = "larger than any allowed pool"


@dataclass(frozen=True, slots=True)
class Charge:
    """A job's price split: cost = subsidy + org_pays (all in currency units)."""

    cost: float
    subsidy: float
    org_pays: float
    programme: str | None = None


@dataclass(frozen=True, slots=True)
class Allocation:
    """The outcome of one scheduling decision.

    ``placements``: jobs to start now; ``charges``: the expected charge of each
    started job (keyed by job id); ``waiting``: a reason for every pending job
    left waiting; ``preempt``: running job ids to stop and requeue first;
    ``why``: a short human reason for each placement's pool, keyed by job id
    (which rule of the policy chose it, e.g. "cheapest for lab after subsidy:
    4.50 per effective GPU-hour"); the live round stores it on the placement
    and ``job show`` prints it. Empty from a policy that gives none.
    ``preempt_why``: for each preempted job, who stopped it and why (the live
    round stores it as the ended placement's ``end_reason``).
    """

    placements: tuple[Placement, ...] = ()
    waiting: Mapping[int, WaitReason] = field(default_factory=dict)
    preempt: tuple[int, ...] = ()
    charges: Mapping[int, Charge] = field(default_factory=dict)
    objective: float | None = None
    bound: float | None = None
    why: Mapping[int, str] = field(default_factory=dict)
    preempt_why: Mapping[int, str] = field(default_factory=dict)
    # the instant the policy wants its next round at even if nothing arrives or
    # ends (a lease expires): the simulator wakes up then; the live daemon's
    # fixed interval already brings the round. None: no such wish.
    next_round_at: float | None = None

    @property
    def started_ids(self) -> frozenset[int]:
        return frozenset(p.job_id for p in self.placements)
