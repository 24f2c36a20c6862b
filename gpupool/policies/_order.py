"""The JCT-oriented job order the optimising policies offer (``order: shortest-remaining``).

Shortest remaining effective time first, within a domain: the policy's own
order decides which domain takes each next place in the start order (so
weights, fair share and aging between domains are untouched), and a domain's
places go to its jobs shortest first. A pending job's remaining effective time
is its estimate in reference hours (``Job.hours``: hours on a GPU of speed 1;
a preempted job is requeued with its whole estimate, as the platform cannot
know whether it checkpoints). Ties keep the policy's order. Shortest first
minimises a domain's mean completion time (SRPT) without letting one
domain's short jobs jump another domain's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from gpupool.model import Job

PRIORITY = "priority"
SHORTEST_REMAINING = "shortest-remaining"
ORDERS = (PRIORITY, SHORTEST_REMAINING)


def reorder(jobs: Sequence[Job], order: str) -> list[Job]:
    """``jobs`` (in the policy's order) in the start order ``order`` names."""
    if order == PRIORITY:
        return list(jobs)
    return shortest_remaining_within_domains(jobs)


def shortest_remaining_within_domains(jobs: Sequence[Job]) -> list[Job]:
    """Each domain keeps its places in ``jobs``; its jobs fill them shortest first."""
    by_domain: dict[str, list[Job]] = {}
    for job in jobs:
        by_domain.setdefault(job.domain, []).append(job)
    shortest: dict[str, Iterator[Job]] = {
        domain: iter(sorted(queue, key=_remaining_hours))  # stable: ties keep the order
        for domain, queue in by_domain.items()
    }
    return [next(shortest[job.domain]) for job in jobs]


def _remaining_hours(job: Job) -> float:
    return job.hours
