"""Strict first-in first-out: the baseline every other policy is compared with.

Jobs start in arrival order (stable id tie-break); the first job that cannot
start blocks every job behind it (no backfill), which is exactly the weakness
the other policies exist to fix.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpupool.accounting import BudgetTracker
from gpupool.model import Allocation, Job, Placement, Snapshot, WaitReason, fit_gang


@dataclass(frozen=True)
class FifoPolicy:
    def allocate(self, snapshot: Snapshot) -> Allocation:
        free = {s.pool.name: list(s.free_per_node) for s in snapshot.pools}
        pools = sorted((s.pool for s in snapshot.pools), key=lambda p: p.name)
        budgets = BudgetTracker(snapshot)
        placements, charges, waiting = [], {}, {}
        blocked = False
        for job in sorted(snapshot.pending, key=lambda j: (j.submitted_at, j.id)):
            if blocked:
                waiting[job.id] = WaitReason.PRIORITY
                continue
            placed = _first_fit(job, pools, free, budgets)
            if isinstance(placed, WaitReason):
                waiting[job.id] = placed
                blocked = True
                continue
            placements.append(placed[0])
            charges[job.id] = placed[1]
        return Allocation(placements=tuple(placements), waiting=waiting, charges=charges)


def _first_fit(job: Job, pools, free, budgets: BudgetTracker):
    """Place ``job`` on the first pool (by name) that fits; book nodes and budget."""
    reason = WaitReason.NO_CAPACITY
    for pool in pools:
        if not job.allows(pool.gpu_type):
            continue
        nodes = fit_gang(free[pool.name], job.gpus, pool.gpus_per_node)
        if nodes is None:
            continue
        charge = budgets.admit(job, pool)
        if charge is None:
            reason = WaitReason.BUDGET
            continue
        for index, taken in nodes:
            free[pool.name][index] -= taken
        return Placement(job_id=job.id, pool=pool.name, nodes=nodes), charge
    return reason
