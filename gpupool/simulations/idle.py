"""Idle while waiting, per domain: free GPUs a domain's waiting job could have used.

While domain d has jobs waiting, every pool on which one of them would fit
right now (a GPU type it allows; ``fit_gang``'s shapes: a node with enough
free GPUs, or enough whole free nodes) counts its free GPUs as idle for d.
A policy that holds d back while such GPUs sit free (a cap, a reservation,
head-of-line blocking) makes this grow; fragmentation that fits none of d's
gangs does not. The engine feeds it (``add``/``remove`` as jobs queue and
start, ``advance`` as the clock moves); metrics report it per domain as
``idle_while_waiting_gpu_hours``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from gpupool.model import Job, Pool


class IdleWhileWaiting:
    """GPU-seconds idle while each domain had a job waiting that fits those GPUs."""

    def __init__(self, pools: Iterable[Pool]) -> None:
        self.pools = sorted(pools, key=lambda p: p.name)
        # domain -> (gang size, allowed types) -> jobs waiting; and its smallest gang per pool
        self.waiting: dict[str, dict[tuple[int, tuple[str, ...]], int]] = {}
        self._smallest: dict[str, list[float]] = {}
        self.gpu_seconds: dict[str, float] = {}

    def add(self, job: Job) -> None:
        shapes = self.waiting.setdefault(job.domain, {})
        key = (job.gpus, job.gpu_types)
        shapes[key] = shapes.get(key, 0) + 1
        self._smallest.pop(job.domain, None)

    def remove(self, job: Job) -> None:
        shapes = self.waiting[job.domain]
        key = (job.gpus, job.gpu_types)
        shapes[key] -= 1
        if not shapes[key]:
            del shapes[key]
            if not shapes:
                del self.waiting[job.domain]
        self._smallest.pop(job.domain, None)

    def advance(self, free: Mapping[str, Sequence[int]], seconds: float) -> None:
        """Count ``seconds`` of the free GPUs ``free`` (per pool, per node) for each domain."""
        if seconds <= 0 or not self.waiting:
            return
        # per pool: free GPUs, the most free on a node, whole free nodes
        state = []
        for pool in self.pools:
            nodes = free[pool.name]
            whole = sum(1 for f in nodes if f == pool.gpus_per_node)
            state.append((sum(nodes), max(nodes, default=0), whole))
        for domain in self.waiting:
            idle = 0
            for pool, (total, most, whole), gang in zip(
                self.pools, state, self._smallest_gangs(domain), strict=True
            ):
                if total and _fits(gang, pool.gpus_per_node, most, whole):
                    idle += total
            if idle:
                self.gpu_seconds[domain] = self.gpu_seconds.get(domain, 0.0) + idle * seconds

    def _smallest_gangs(self, domain: str) -> list[float]:
        """Per pool: the smallest waiting gang of ``domain`` it allows (inf if none).

        A gang fits when a larger one does, so the smallest decides the pool.
        """
        smallest = self._smallest.get(domain)
        if smallest is None:
            smallest = [math.inf] * len(self.pools)
            for (gpus, types), _ in self.waiting[domain].items():
                for i, pool in enumerate(self.pools):
                    if (not types or pool.gpu_type in types) and pool.fits_empty(gpus):
                        smallest[i] = min(smallest[i], gpus)
            self._smallest[domain] = smallest
        return smallest


def _fits(gpus: float, per_node: int, most: int, whole: int) -> bool:
    """fit_gang's rule on summaries: one node with room, or enough whole free nodes."""
    if gpus == math.inf:
        return False
    if gpus <= per_node:
        return most >= gpus
    return whole >= math.ceil(gpus / per_node)
