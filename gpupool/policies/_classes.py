"""What the optimising policies share before any solver runs: scores, groups, classes, limits.

The solver never sees single jobs or single pools. Pools with the same GPU type
and node size are interchangeable for the capacity model, so they form one
*pool group*; pending jobs with the same domain, gang size, allowed groups,
platform job class (its speeds: Job.speed_on) and (bucketed) priority are
interchangeable for the objective, so they form one *LP class* (JobClass below).
A queue of 100,000 jobs on 256 pools becomes a few thousand class x group
variables, which is what makes the LP fast. Packing onto real nodes happens
afterwards, job by job (gpupool.policies._packing).

Priority of a pending job (higher starts first), all terms additive:
domain weight (PolicyParams.domain_weights, else Domain.weight, else 1)
+ Job.priority + aging (per hour waited, capped) + a boost for domains behind
their guarantee (Snapshot.guarantee_deficit) or below their guaranteed share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpupool.model import Job, Pool, Snapshot
from gpupool.policies._borrowing import DomainLimits
from gpupool.policies.params import PolicyParams

if TYPE_CHECKING:
    import numpy as np

MIN_PRIORITY = 1e-3  # a job never has zero value: idle GPUs are worth filling


def domain_weight(snapshot: Snapshot, params: PolicyParams, domain: str) -> float:
    """The document's weight wins; else the domain's own weight; else 1."""
    if domain in params.domain_weights:
        return params.domain_weights[domain]
    known = snapshot.domains.get(domain)
    return known.weight if known is not None else 1.0


@dataclass(frozen=True, slots=True)
class PoolGroup:
    """Pools with one GPU type and node size: interchangeable for the capacity model."""

    index: int
    gpu_type: str
    gpus_per_node: int
    speed: float
    pools: tuple[Pool, ...]  # cheapest first, then by name: ties go to the cheaper pool

    @property
    def price_per_effective_gpu_hour(self) -> float:
        return min(p.price_per_gpu_hour for p in self.pools) / self.speed


def pool_groups(snapshot: Snapshot) -> tuple[PoolGroup, ...]:
    by_key: dict[tuple[str, int], list[Pool]] = {}
    for state in snapshot.pools:
        pool = state.pool
        by_key.setdefault((pool.gpu_type, pool.gpus_per_node), []).append(pool)
    groups = []
    for index, (gpu_type, per_node) in enumerate(sorted(by_key)):
        pools = sorted(by_key[(gpu_type, per_node)], key=lambda p: (p.price_per_gpu_hour, p.name))
        speed = snapshot.gpu_types[gpu_type].speed
        groups.append(PoolGroup(index, gpu_type, per_node, speed, tuple(pools)))
    return tuple(groups)


def gang_fits_pool(gpus: int, pool: Pool) -> bool:
    """Whether an empty ``pool`` could ever hold the gang (fit_gang's shape rules)."""
    return pool.fits_empty(gpus)


def allowed_groups(jobs: Sequence[Job], groups: Sequence[PoolGroup]) -> dict[int, tuple[int, ...]]:
    """Per job id: the groups with a GPU type it allows and a pool that could ever hold it."""
    memo: dict[tuple[int, tuple[str, ...]], tuple[int, ...]] = {}
    result = {}
    for job in jobs:
        key = (job.gpus, job.gpu_types)
        if key not in memo:
            memo[key] = tuple(
                g.index
                for g in groups
                if job.allows(g.gpu_type) and any(gang_fits_pool(job.gpus, p) for p in g.pools)
            )
        result[job.id] = memo[key]
    return result


# ---------------------------------------------------------------------------
# Priorities
# ---------------------------------------------------------------------------


def domain_priorities(
    snapshot: Snapshot,
    params: PolicyParams,
    limits: DomainLimits,
    *,
    deficit_boost: float,
    guarantee_boost: float,
) -> dict[str, float]:
    """The part of a job's priority its domain gives it (no Job.priority, no aging).

    Raising one job's own priority never changes these: the priority policy
    plans on them so that a raise cannot reshape where other jobs are placed.
    """
    worst_deficit = max((d for d in snapshot.guarantee_deficit.values() if d > 0), default=0.0)
    domain_base: dict[str, float] = {}
    for job in snapshot.pending:
        if job.domain in domain_base:
            continue
        base = domain_weight(snapshot, params, job.domain)
        deficit = snapshot.guarantee_deficit.get(job.domain, 0.0)
        if deficit > 0:
            base += deficit_boost * deficit / worst_deficit
        if limits.below_guarantee(job.domain):
            base += guarantee_boost
        domain_base[job.domain] = base
    return domain_base


def priorities(
    snapshot: Snapshot,
    params: PolicyParams,
    limits: DomainLimits,
    *,
    deficit_boost: float,
    guarantee_boost: float,
) -> dict[int, float]:
    """Each pending job's priority (see the module docstring), at least MIN_PRIORITY."""
    domain_base = domain_priorities(
        snapshot, params, limits, deficit_boost=deficit_boost, guarantee_boost=guarantee_boost
    )
    aging = params.aging
    result = {}
    for job in snapshot.pending:
        waited_h = max(0.0, snapshot.now - job.submitted_at) / 3600.0
        boost = min(aging.max_boost, aging.per_hour * waited_h)
        result[job.id] = max(MIN_PRIORITY, domain_base[job.domain] + job.priority + boost)
    return result


def running_priority(snapshot: Snapshot, params: PolicyParams, job: Job) -> float:
    """A running job's priority for preemption: its domain weight plus its own boost."""
    return domain_weight(snapshot, params, job.domain) + job.priority


# ---------------------------------------------------------------------------
# Job classes
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class JobClass:
    """Interchangeable pending jobs; ``jobs`` is in start order (priority desc, then FIFO).

    ``org`` is set only for orgs with a budget: their jobs form classes of their
    own so that the LP can hold them to the budget.
    """

    index: int
    domain: str
    gpus: int
    groups: tuple[int, ...]
    priority: float  # mean of the members: the LP's value per effective GPU
    jobs: list[Job]
    org: str = ""


def job_classes(
    jobs: Sequence[Job],
    prio: dict[int, float],
    allowed: dict[int, tuple[int, ...]],
    resolution: float,
    split_orgs: frozenset[str] = frozenset(),
) -> list[JobClass]:
    """Group jobs by (domain, org if in ``split_orgs``, gpus, allowed groups, platform
    job class, priority bucket).

    Buckets are ``resolution`` wide (0: exact priorities). ``jobs`` come in
    start order (sorted by ``start_order``), and so do each class's members.
    Classes are numbered in key order (domain, org, gpus, groups, bucket).

    Each key part becomes a rank among its distinct values, so one stable
    lexicographic sort of integer codes groups 100,000 jobs without a Python
    dictionary of composite keys (stable: members keep their start order).
    """
    import numpy as np

    if not jobs:
        return []
    n = len(jobs)
    if n <= SMALL_QUEUE:
        return _small_job_classes(jobs, prio, allowed, resolution, split_orgs)
    priority = [prio[job.id] for job in jobs]
    values = np.array(priority, dtype=float)
    bucket = np.floor(values / resolution) if resolution > 0 else values
    groups = [allowed[job.id] for job in jobs]
    parts = (
        _ranks([job.domain for job in jobs]),
        _ranks([job.org if job.org in split_orgs else "" for job in jobs]),
        _ranks([job.gpus for job in jobs]),
        _ranks(groups),
        _class_ranks(jobs),
        np.unique(bucket, return_inverse=True)[1].reshape(n),
    )
    by_key = np.lexsort(parts[::-1])  # last key is the primary one for lexsort
    codes = np.stack([part[by_key] for part in parts])
    changes = np.nonzero(np.any(codes[:, 1:] != codes[:, :-1], axis=0))[0] + 1
    starts = [0, *changes.tolist()]
    ends = [*changes.tolist(), n]
    order = by_key.tolist()
    members_all = [jobs[i] for i in order]
    priority_all = [priority[i] for i in order]
    classes = []
    for index, (lo, hi) in enumerate(zip(starts, ends, strict=True)):
        first = members_all[lo]
        org = first.org if first.org in split_orgs else ""
        mean = sum(priority_all[lo:hi]) / (hi - lo)
        classes.append(
            JobClass(index, first.domain, first.gpus, groups[order[lo]], mean,
                     members_all[lo:hi], org)
        )  # fmt: skip
    return classes


SMALL_QUEUE = 8  # up to this many jobs, plain Python beats building numpy arrays


def _small_job_classes(jobs, prio, allowed, resolution, split_orgs) -> list[JobClass]:
    """job_classes for a few jobs, without numpy: the same classes, members and means.

    Ranks keep the order of the values they rank, so a stable sort on the raw
    key tuple groups and orders exactly as the lexsort on ranks does; the
    bucket is the same float (floor of the same float division).
    """

    def key(job: Job) -> tuple:
        value = prio[job.id]
        bucket = float(math.floor(value / resolution)) if resolution > 0 else value
        org = job.org if job.org in split_orgs else ""
        return (job.domain, org, job.gpus, allowed[job.id], job.job_class, bucket)

    keyed = sorted(((key(job), job) for job in jobs), key=lambda pair: pair[0])
    classes: list[JobClass] = []
    lo = 0
    while lo < len(keyed):
        hi = lo + 1
        while hi < len(keyed) and keyed[hi][0] == keyed[lo][0]:
            hi += 1
        members = [job for _, job in keyed[lo:hi]]
        mean = sum([prio[job.id] for job in members]) / (hi - lo)
        domain, org, gpus, groups, _, _ = keyed[lo][0]
        classes.append(JobClass(len(classes), domain, gpus, groups, mean, members, org))
        lo = hi
    return classes


def _class_ranks(jobs: Sequence[Job]) -> np.ndarray:
    """_ranks of the jobs' platform job classes; all 0 when none has one (the usual case)."""
    import numpy as np

    kinds = [job.job_class for job in jobs]
    return _ranks(kinds) if any(kinds) else np.zeros(len(kinds), dtype=np.int64)


def _ranks(values: list) -> np.ndarray:
    """Each value's rank among the distinct values (sorted), as an integer array."""
    import numpy as np

    rank = {value: i for i, value in enumerate(sorted(set(values)))}
    return np.fromiter(map(rank.__getitem__, values), dtype=np.int64, count=len(values))


def start_order(job: Job, prio: dict[int, float]) -> tuple[float, float, int]:
    """Numbered criteria: 1. priority, highest first; 2. submitted earliest; 3. id."""
    return (-prio[job.id], job.submitted_at, job.id)
