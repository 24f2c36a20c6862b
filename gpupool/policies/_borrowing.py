"""Guaranteed shares and borrowing, in effective GPUs (GPUs x speed), Kueue style.

The platform's capacity T is split, for this rule, into each guaranteed
domain's *guarantee* G_d (Kueue's nominal quota) and the *unguaranteed* rest
U = T - sum G_d, which belongs to nobody. A domain's ``borrow_limit`` (a
fraction of T, so L_d = borrow_limit x T; Kueue's borrowingLimit) bounds how
much of *other domains' guarantees* it may use; unguaranteed capacity is
work-conserving: anyone may use it, up to what is free.

Who uses what is never recorded per GPU; a set of running jobs is allowed
when *some* attribution respects every rule. With u_d the effective GPUs
domain d runs, that is exactly (docs/policies-design.md has the argument):

1. **Borrow limits.** overflow_d = max(0, u_d - G_d - L_d), what d runs beyond
   its guarantee and its borrow limit, must come from unguaranteed capacity:
   sum over domains of overflow_d <= U. (Domains without a limit, or without a
   share at all, have overflow 0.)
2. **Reclaim by not lending.** A guaranteed domain with jobs waiting keeps the
   idle part of its guarantee that those jobs could use (its *reservation*
   r_d, fixed as the round starts: at most its idle guarantee, at most its
   waiting GPUs at their fastest allowed speed); the rest of idle guarantees
   is lendable. What all domains run beyond their guarantees must fit in the
   unguaranteed capacity plus the lendable idle guarantees. A domain's own
   starts use its reservation first, so reserving never holds back its owner.

A start that would break a rule is refused (``WaitReason.QUOTA``), unless it
leaves that rule no worse than it was (a round may open with borrowers
already on a guarantee whose owner now waits: its owner must still start).
With preemption enabled, guarantees are also reclaimed by stopping borrowers
(gpupool.policies.priority's preemptor). Every check only gets harder as a
round starts jobs: the priority policy's monotonicity rests on that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpupool.model import Snapshot
from gpupool.policies.params import PolicyParams

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class DomainLimits:
    """As the round starts, per domain: effective GPUs running, guaranteed, and borrowing."""

    running: dict[str, float]
    guarantee: dict[str, float]  # share domains only
    borrow: dict[str, float]  # L_d; math.inf when unlimited; share domains only
    unguaranteed: float  # U
    reserved: dict[str, float]  # r_d, domains with an idle guarantee and waiting jobs

    def headroom(self, domain: str) -> float:
        """The most effective GPUs ``domain`` could start now, others as they are (LP rows).

        math.inf when no rule can bind it. Relaxes the joint rule (each domain
        is given all the slack), so LP rows built from it stay valid bounds.
        """
        tracker = self.tracker()
        return min(tracker.limit_headroom(domain), tracker.lending_headroom(domain))

    def below_guarantee(self, domain: str) -> bool:
        return self.running.get(domain, 0.0) < self.guarantee.get(domain, 0.0)

    def tracker(self) -> Borrowing:
        """A fresh in-round tracker of the two rules."""
        return Borrowing(self)


class Borrowing:
    """The two rules of the module docstring, kept up to date as a round starts jobs."""

    def __init__(self, limits: DomainLimits) -> None:
        self.limits = limits
        self.used = dict(limits.running)
        self.reserved = dict(limits.reserved)
        self.overflow = sum(self._overflow(d, self.used.get(d, 0.0)) for d in limits.guarantee)
        domains = set(self.used) | set(limits.guarantee)
        self.slack = limits.unguaranteed + sum(self._lend(d) for d in domains)
        self.slack -= sum(self._excess(d, self.used.get(d, 0.0)) for d in domains)
        self.lending_binds = any(r > 0 for r in limits.reserved.values())
        # no domain limited and nothing reserved: no rule can bind (most replays)
        self.free_for_all = self.lending_binds is False and all(
            b == math.inf for b in limits.borrow.values()
        )

    def _overflow(self, domain: str, used: float) -> float:
        limit = self.limits.borrow.get(domain, math.inf)
        if limit == math.inf:
            return 0.0
        return max(0.0, used - self.limits.guarantee[domain] - limit)

    def _excess(self, domain: str, used: float) -> float:
        return max(0.0, used - self.limits.guarantee.get(domain, 0.0))

    def _lend(self, domain: str, used: float | None = None, reserved: float | None = None):
        used = self.used.get(domain, 0.0) if used is None else used
        reserved = self.reserved.get(domain, 0.0) if reserved is None else reserved
        return max(0.0, self.limits.guarantee.get(domain, 0.0) - used - reserved)

    def _after(self, domain: str, effective: float) -> tuple[float, float, float]:
        """(overflow total, slack, reservation of ``domain``) if it started ``effective`` more."""
        used = self.used.get(domain, 0.0)
        reserved = self.reserved.get(domain, 0.0)
        left = max(0.0, reserved - effective)  # its own starts use its reservation first
        overflow = self.overflow - self._overflow(domain, used)
        overflow += self._overflow(domain, used + effective)
        slack = self.slack + self._lend(domain) - self._lend(domain, used + effective, left)
        slack += self._excess(domain, used) - self._excess(domain, used + effective)
        return overflow, slack, left

    def allows(self, domain: str, effective: float) -> bool:
        """Whether ``domain`` may start ``effective`` more GPUs: no rule broken or made worse."""
        if self.free_for_all:
            return True
        overflow, slack, _ = self._after(domain, effective)
        unguaranteed = self.limits.unguaranteed
        if overflow > unguaranteed + _EPS and overflow > self.overflow + _EPS:
            return False
        # rule 2 binds only with reservations: without, it is what free GPUs already say
        return not (self.lending_binds and slack < -_EPS and slack < self.slack - _EPS)

    def take(self, domain: str, effective: float) -> None:
        if not self.free_for_all:  # else the totals are never read
            self.overflow, self.slack, left = self._after(domain, effective)
            if domain in self.reserved:
                self.reserved[domain] = left
        self.used[domain] = self.used.get(domain, 0.0) + effective

    def limit_headroom(self, domain: str) -> float:
        """Rule 1's room for ``domain``: its guarantee and limit plus U not overflowed by others."""
        limit = self.limits.borrow.get(domain, math.inf)
        if limit == math.inf:
            return math.inf
        others = self.overflow - self._overflow(domain, self.used.get(domain, 0.0))
        room = self.limits.guarantee[domain] + limit + self.limits.unguaranteed - others
        return room - self.used.get(domain, 0.0)

    def lending_headroom(self, domain: str) -> float:
        """Rule 2's room for ``domain``: its reservation, then the slack (each unit costs one)."""
        if not self.lending_binds:
            return math.inf
        return self.reserved.get(domain, 0.0) + max(0.0, self.slack)


def domain_limits(snapshot: Snapshot, params: PolicyParams) -> DomainLimits:
    """Guarantee = GPUs per type x speed, or a fraction of the platform; borrowing as above."""
    speeds = {name: t.speed for name, t in snapshot.gpu_types.items()}
    platform = sum(s.pool.gpus * speeds[s.pool.gpu_type] for s in snapshot.pools)
    running: dict[str, float] = {}
    pool_type = {s.pool.name: snapshot.gpu_types[s.pool.gpu_type] for s in snapshot.pools}
    pool_speed = {name: gpu_type.speed for name, gpu_type in pool_type.items()}
    for r in snapshot.running:  # every round of a simulation: plain loops, no property calls
        placement = r.placement
        gpus = sum([taken for _, taken in placement.nodes])
        job, pool = r.job, placement.pool
        # the job's speed there (Job.speed_on): its class's, else the type's own
        speed = job.speed_on(pool_type[pool]) if job.speeds else pool_speed[pool]
        running[job.domain] = running.get(job.domain, 0.0) + gpus * speed
    guarantee, borrow = {}, {}
    for domain, share in params.shares.items():
        if share.gpus is not None:
            guarantee[domain] = sum(n * speeds.get(t, 1.0) for t, n in share.gpus.items())
        else:
            guarantee[domain] = (share.fraction or 0.0) * platform
        borrow[domain] = math.inf if share.borrow_limit is None else share.borrow_limit * platform
    unguaranteed = max(0.0, platform - sum(guarantee.values()))
    reserved = _reservations(snapshot, guarantee, running)
    return DomainLimits(running, guarantee, borrow, unguaranteed, reserved)


def _reservations(snapshot: Snapshot, guarantee, running) -> dict[str, float]:
    """r_d: idle guarantee kept for d's waiting jobs (GPUs x the fastest speed they allow)."""
    idle = {d: g - running.get(d, 0.0) for d, g in guarantee.items()}
    if not any(i > 0 for i in idle.values()):
        return {}
    fastest: dict[tuple[int, tuple[str, ...], str], float] = {}
    demand: dict[str, float] = {}
    for job in snapshot.pending:
        if idle.get(job.domain, 0.0) <= 0:
            continue
        key = (job.gpus, job.gpu_types, job.job_class)
        if key not in fastest:
            speeds = [
                job.speed_on(snapshot.gpu_types[s.pool.gpu_type])
                for s in snapshot.pools
                if job.allows(s.pool.gpu_type) and s.pool.fits_empty(job.gpus)
            ]
            fastest[key] = max(speeds, default=0.0)
        demand[job.domain] = demand.get(job.domain, 0.0) + job.gpus * fastest[key]
    return {d: min(idle[d], need) for d, need in sorted(demand.items()) if need > 0}
