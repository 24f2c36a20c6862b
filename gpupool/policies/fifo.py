"""Strict first-in first-out: the baseline every other policy is compared with.

Jobs start in arrival order (``submitted_at``, then id). The first job that
cannot start for lack of GPUs blocks every job behind it (no backfill), which
is exactly the weakness the other policies exist to fix. Two kinds of job do
not block the queue, because waiting in front cannot help them: a job larger
than any pool of a GPU type it allows (it never fits), and a job whose org
cannot pay its share (like Slurm, jobs held by account limits are skipped).

The small placement helpers here (which pools a job may use, first fit with
budget admission) are shared with the multifactor baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from gpupool.accounting import BudgetTracker
from gpupool.model import (
    Allocation,
    Charge,
    Job,
    Placement,
    Pool,
    Snapshot,
    WaitReason,
    fit_gang,
)
from gpupool.policies.params import PolicyParams

FreeGpus = dict[str, list[int]]  # pool name -> free GPUs per node, booked as the round goes


@dataclass(frozen=True)
class FifoPolicy:
    params: PolicyParams = field(default_factory=PolicyParams)

    # Document sections this kind has no use for (the document loader rejects them).
    UNUSED_SECTIONS: ClassVar[frozenset[str]] = frozenset({"domains", "aging", "preemption"})

    def allocate(self, snapshot: Snapshot) -> Allocation:
        free = free_gpus(snapshot)
        budgets = BudgetTracker(snapshot)
        choices = PoolChoices(snapshot)
        placements, charges, waiting = [], {}, {}
        blocked = False
        for job in sorted(snapshot.pending, key=lambda j: (j.submitted_at, j.id)):
            if choices.never_fits(job):
                waiting[job.id] = WaitReason.NEVER_FITS
                continue
            if blocked:
                waiting[job.id] = WaitReason.PRIORITY
                continue
            placed = first_fit(job, choices.allowed(job), free, budgets)
            if isinstance(placed, WaitReason):
                waiting[job.id] = placed
                blocked = placed is WaitReason.NO_CAPACITY
                continue
            placements.append(placed[0])
            charges[job.id] = placed[1]
        return Allocation(placements=tuple(placements), waiting=waiting, charges=charges)


def free_gpus(snapshot: Snapshot) -> FreeGpus:
    return {state.pool.name: list(state.free_per_node) for state in snapshot.pools}


def allowed_pools(job: Job, snapshot: Snapshot) -> list[Pool]:
    """Pools of a GPU type the job allows, by name: the order every baseline tries them in."""
    pools = (state.pool for state in snapshot.pools if job.allows(state.pool.gpu_type))
    return sorted(pools, key=lambda pool: pool.name)


class PoolChoices:
    """allowed_pools and never_fits for one round, cached by what decides them.

    Queues hold many jobs with the same GPU-type list and gang size, so a long
    queue costs a few dictionary look-ups per job instead of a scan of all pools.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._allowed: dict[tuple[str, ...], list[Pool]] = {}
        self._never: dict[tuple[tuple[str, ...], int], bool] = {}

    def allowed(self, job: Job) -> list[Pool]:
        key = job.gpu_types
        if key not in self._allowed:
            self._allowed[key] = allowed_pools(job, self._snapshot)
        return self._allowed[key]

    def never_fits(self, job: Job) -> bool:
        key = (job.gpu_types, job.gpus)
        if key not in self._never:
            self._never[key] = all(
                fit_gang(pool.node_sizes(), job.gpus, pool.gpus_per_node) is None
                for pool in self.allowed(job)
            )
        return self._never[key]


def never_fits(job: Job, snapshot: Snapshot) -> bool:
    """True if the gang would not fit even in an empty pool of an allowed type."""
    return all(
        fit_gang(pool.node_sizes(), job.gpus, pool.gpus_per_node) is None
        for pool in allowed_pools(job, snapshot)
    )


def first_fit(
    job: Job,
    pools: Iterable[Pool],
    free: FreeGpus,
    budgets: BudgetTracker,
    acceptable: Callable[[Pool, tuple[tuple[int, int], ...]], bool] | None = None,
) -> tuple[Placement, Charge] | WaitReason:
    """Place ``job`` on the first pool that fits (and that ``acceptable`` agrees to).

    Books the nodes in ``free`` and the charge in ``budgets``. Returns the
    reason to wait when no pool takes it: BUDGET if it fitted somewhere but
    the org could not pay, PRIORITY if it fitted but ``acceptable`` refused
    (a higher-priority job holds those GPUs), else NO_CAPACITY.
    """
    reason = WaitReason.NO_CAPACITY
    for pool in pools:
        if sum(free[pool.name]) < job.gpus:  # cheap test first: most pools are full
            continue
        nodes = fit_gang(free[pool.name], job.gpus, pool.gpus_per_node)
        if nodes is None:
            continue
        if acceptable is not None and not acceptable(pool, nodes):
            if reason is WaitReason.NO_CAPACITY:
                reason = WaitReason.PRIORITY
            continue
        charge = budgets.admit(job, pool)
        if charge is None:
            reason = WaitReason.BUDGET
            continue
        for index, taken in nodes:
            free[pool.name][index] -= taken
        return Placement(job_id=job.id, pool=pool.name, nodes=nodes), charge
    return reason
