"""What every allocation must satisfy before a round acts on it, live or simulated.

The round driver (gpupool.scheduler.driver) calls ``validate_allocation`` on
every policy's answer, so a broken policy is refused the same way whether the
round writes to a database or moves a simulated clock.
"""

from __future__ import annotations

from gpupool.model import Allocation, GpupoolError, Snapshot


class PolicyViolation(GpupoolError):
    """A policy returned an allocation that breaks the platform's invariants."""


def validate_allocation(snapshot: Snapshot, allocation: Allocation) -> None:
    """Known pending jobs, allowed GPU types, whole gangs, node capacity after
    preemptions, and a wait reason for every job left waiting; else PolicyViolation."""
    pending = {j.id: j for j in snapshot.pending}
    running = {r.job.id: r for r in snapshot.running}
    free = {s.pool.name: list(s.free_per_node) for s in snapshot.pools}
    pools = {s.pool.name: s.pool for s in snapshot.pools}
    for job_id in allocation.preempt:
        if job_id not in running:
            raise PolicyViolation(f"preempts job {job_id}, which is not running")
        for node, gpus in running[job_id].placement.nodes:
            free[running[job_id].placement.pool][node] += gpus
    seen: set[int] = set()
    for placement in allocation.placements:
        _check_placement(placement, pending, pools, free, seen)
    for job_id in pending:
        if job_id not in seen and job_id not in allocation.waiting:
            raise PolicyViolation(f"gives no wait reason for pending job {job_id}")


def _check_placement(placement, pending, pools, free, seen) -> None:
    job = pending.get(placement.job_id)
    where = f"job {placement.job_id}"
    if job is None:
        raise PolicyViolation(f"starts {where}, which is not pending")
    if placement.job_id in seen:
        raise PolicyViolation(f"starts {where} twice")
    seen.add(placement.job_id)
    pool = pools.get(placement.pool)
    if pool is None:
        raise PolicyViolation(f"places {where} on unknown pool {placement.pool!r}")
    if not job.allows(pool.gpu_type):
        raise PolicyViolation(f"places {where} on {pool.gpu_type}, which it does not allow")
    if placement.gpus != job.gpus:
        raise PolicyViolation(f"gives {where} {placement.gpus} of its {job.gpus} GPUs")
    for node, gpus in placement.nodes:
        if not 0 <= node < len(free[pool.name]) or gpus <= 0:
            raise PolicyViolation(f"places {where} on bad node {node} of {pool.name}")
        free[pool.name][node] -= gpus
        if free[pool.name][node] < 0:
            raise PolicyViolation(f"overfills node {node} of {pool.name} with {where}")
