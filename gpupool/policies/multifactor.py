"""Slurm-style multifactor priority with EASY backfill: the second baseline.

Priority is a weighted sum of factors, each (mostly) in [0, 1], as Slurm's
priority/multifactor plugin computes it and ``sprio`` shows it:

- age: hours waited / ``max_age_hours``, capped at 1;
- domain: (domain weight + the job's admin boost + aging boost) / the
  largest domain weight; the document's ``aging`` adds ``per_hour`` per hour
  waited up to ``max_boost``, in domain-weight units, as in the other kinds;
- fair-share: 2^(-U/S), U the domain's share of all decayed usage
  (``Snapshot.usage``), S its share of the platform (its guaranteed fraction
  if the document sets one, else its weight over all domains' weights);
- size: the job's share of all GPUs (``favor_small`` uses 1 minus that).

A round, in numbered steps:

1. Order pending jobs: 1. priority, highest first; 2. submitted earliest; 3. id
   (with ``order: shortest-remaining``, each domain's places in that order go
   to its jobs shortest remaining effective time first).
2. Start jobs in that order on the first allowed pool where the gang fits
   and the org can pay; pools are tried best value first (most effective
   GPU-hours per unit of price for the job's org; free pools fastest first),
   or with ``placement: {pool_order: name | cheapest}`` by name or cheapest
   first (fifo.PoolChoices). Jobs that never fit, or whose org cannot pay, wait
   without holding anything up.
3. The first job that does not fit gets a reservation: the earliest time
   enough GPUs free up in some allowed pool, from running jobs' expected ends
   (and the ends of jobs started this round); on equal times the first pool
   in the order of step 2. With ``backfill: false`` it blocks every job
   behind it instead (strict priority order).
4. Each later job starts only if it fits now and does not delay that
   reservation: it uses another pool, or it ends before the reserved start,
   or the reserved gang still fits at the reserved start with it running.

Cost of a round (a whole-trace replay runs tens of thousands of rounds over
queues of up to thousands): priorities use per-domain terms taken once per
round, elementwise in numpy for long queues (the same float operations, so the
same order); within a round free GPUs only shrink, so once a gang of g GPUs
finds no room on the pools of some GPU-type list, no gang of g or more GPUs on
that list can fit for the rest of the round, and such jobs wait without a pool
scan; running jobs are sorted by end only when a reservation is needed, its
earliest start is then one pass per allowed pool, and the GPUs released by
the reserved start are kept per node, so checking a backfill candidate costs
O(nodes).
"""

from __future__ import annotations

import math
from bisect import insort
from dataclasses import dataclass, field
from operator import itemgetter
from typing import ClassVar, Literal

from gpupool.model import Allocation, Job, Pool, Snapshot, WaitReason, fit_gang
from gpupool.policies._order import PRIORITY, reorder
from gpupool.policies.fifo import (
    Admissions,
    FreeGpus,
    PoolChoices,
    first_fit,
    free_gpus,
    wait_behind,
)
from gpupool.policies.params import PolicyParams

Nodes = tuple[tuple[int, int], ...]
_END = itemgetter(0)
VECTOR_FROM = 64  # queues this long or longer get their priorities computed with numpy


@dataclass(frozen=True)
class MultifactorPolicy:
    """Options (a policy document's ``options:``), all optional:

    - ``age_weight``, ``domain_weight``, ``fairshare_weight``, ``size_weight``:
      the factor weights (1000, 1000, 1000, 100);
    - ``max_age_hours`` (168): waiting this long gives the full age factor;
    - ``favor_small`` (false): the size factor favours small gangs instead;
    - ``backfill`` (true): EASY backfill behind the top blocked job;
    - ``order`` ("priority"): step 1's order; ``shortest-remaining`` keeps each
      domain's places in the priority order but gives them to its jobs
      shortest remaining effective time first (gpupool.policies._order).
    """

    params: PolicyParams = field(default_factory=PolicyParams)
    age_weight: float = 1000.0
    domain_weight: float = 1000.0
    fairshare_weight: float = 1000.0
    size_weight: float = 100.0
    max_age_hours: float = 168.0
    favor_small: bool = False
    backfill: bool = True
    order: Literal["priority", "shortest-remaining"] = "priority"

    # Document sections this kind has no use for (the loader rejects them): it never preempts.
    UNUSED_SECTIONS: ClassVar[frozenset[str]] = frozenset({"preemption"})
    # Opt-in sections it reads: the pool order (see PoolChoices).
    OPT_IN_SECTIONS: ClassVar[frozenset[str]] = frozenset({"placement"})

    def factors(self, snapshot: Snapshot, job: Job) -> dict[str, float]:
        """The weighted factors of ``job``'s priority and their sum, like one line of sprio."""
        return _Factors(self, snapshot).of(job)

    def allocate(self, snapshot: Snapshot) -> Allocation:
        pending = snapshot.pending
        order = _Factors(self, snapshot).order(pending)
        return _Round(self, snapshot).run(reorder([pending[i] for i in order], self.order))


def multifactor_factors(
    snapshot: Snapshot, job: Job, policy: MultifactorPolicy | None = None
) -> dict[str, float]:
    """``age``, ``domain``, ``fairshare``, ``size`` (weighted) and ``priority`` (their sum)."""
    return (policy or MultifactorPolicy()).factors(snapshot, job)


# ---------------------------------------------------------------------------
# Priority factors
# ---------------------------------------------------------------------------


class _Factors:
    """Per-snapshot normalisers and per-domain terms, computed once per round."""

    def __init__(self, policy: MultifactorPolicy, snapshot: Snapshot) -> None:
        self.policy = policy
        self.snapshot = snapshot
        names = set(snapshot.domains) | {job.domain for job in snapshot.pending}
        self.weights = {name: self._weight(name) for name in names}
        self.max_weight = max([1.0, *self.weights.values()])
        self.total_weight = sum(self.weights.values()) or 1.0
        self.total_usage = sum(max(0.0, u) for u in snapshot.usage.values())
        self.total_gpus = sum(state.pool.gpus for state in snapshot.pools) or 1
        # domain -> (weight, weighted fair-share term): the same for all its jobs this round
        self._per_domain: dict[str, tuple[float, float]] = {}

    def _weight(self, domain: str) -> float:
        """The document's weight wins; else the domain's own weight; else 1."""
        if domain in self.policy.params.domain_weights:
            return self.policy.params.domain_weights[domain]
        known = self.snapshot.domains.get(domain)
        return known.weight if known is not None else 1.0

    def _domain_terms(self, domain: str) -> tuple[float, float]:
        terms = self._per_domain.get(domain)
        if terms is None:
            weight = self.weights[domain] if domain in self.weights else self._weight(domain)
            terms = (weight, self.policy.fairshare_weight * self.fairshare(domain))
            self._per_domain[domain] = terms
        return terms

    def of(self, job: Job) -> dict[str, float]:
        age, domain, fairshare, size = self._terms(job)
        weighted = {"age": age, "domain": domain, "fairshare": fairshare, "size": size}
        weighted["priority"] = sum((age, domain, fairshare, size))
        return weighted

    def order(self, jobs: tuple[Job, ...]) -> list[int]:
        """Indexes of ``jobs`` by priority (highest first), then submission time, then id.

        numpy pays off from a few dozen jobs; below that its per-call cost dominates.
        """
        if len(jobs) < VECTOR_FROM:
            priority = [sum(self._terms(job)) for job in jobs]
            return sorted(
                range(len(jobs)), key=lambda i: (-priority[i], jobs[i].submitted_at, jobs[i].id)
            )
        import numpy as np  # only rounds need it, not the CLI's job commands

        priority = self.priorities(jobs)
        submitted = np.fromiter((job.submitted_at for job in jobs), float, len(jobs))
        ids = np.fromiter((job.id for job in jobs), np.int64, len(jobs))
        return np.lexsort((ids, submitted, -priority)).tolist()

    def priorities(self, jobs: tuple[Job, ...]):
        """Each job's priority as a numpy array, exactly ``of(job)["priority"]``.

        The same float operations as ``_terms``, in the same order, elementwise
        (IEEE arithmetic is the same in numpy), so the order never differs
        from the factor-by-factor sum that ``factors`` shows.
        """
        import numpy as np

        p, n = self.policy, len(jobs)
        now = self.snapshot.now
        submitted = np.fromiter((job.submitted_at for job in jobs), float, n)
        waited_h = np.maximum(0.0, now - submitted) / 3600.0
        max_age = p.max_age_hours
        age = np.minimum(1.0, waited_h / max_age) if max_age > 0 else np.ones(n)
        aging = p.params.aging
        boost = np.minimum(aging.max_boost, aging.per_hour * waited_h)
        terms = [self._domain_terms(job.domain) for job in jobs]
        weight = np.fromiter((t[0] for t in terms), float, n)
        fairshare = np.fromiter((t[1] for t in terms), float, n)
        boosts = np.fromiter((job.priority for job in jobs), np.int64, n)
        domain = (weight + boosts + boost) / self.max_weight
        gpus = np.fromiter((job.gpus for job in jobs), np.int64, n)
        size = np.minimum(1.0, gpus / self.total_gpus)
        if p.favor_small:
            size = 1.0 - size
        weighted = (p.age_weight * age, p.domain_weight * domain, p.size_weight * size)
        return weighted[0] + weighted[1] + fairshare + weighted[2]

    def _terms(self, job: Job) -> tuple[float, float, float, float]:
        """The weighted age, domain, fair-share and size terms of ``job``."""
        p = self.policy
        waited_h = max(0.0, self.snapshot.now - job.submitted_at) / 3600.0
        age = min(1.0, waited_h / p.max_age_hours) if p.max_age_hours > 0 else 1.0
        aging = p.params.aging
        boost = min(aging.max_boost, aging.per_hour * waited_h)
        weight, fairshare = self._domain_terms(job.domain)
        domain = (weight + job.priority + boost) / self.max_weight
        size = min(1.0, job.gpus / self.total_gpus)
        if p.favor_small:
            size = 1.0 - size
        return p.age_weight * age, p.domain_weight * domain, fairshare, p.size_weight * size

    def fairshare(self, domain: str) -> float:
        """Slurm's classic factor 2^(-U/S): 1 with no usage, 0.5 at exactly its share."""
        if self.total_usage <= 0:
            return 1.0
        used = max(0.0, self.snapshot.usage.get(domain, 0.0)) / self.total_usage
        share = self.policy.params.shares.get(domain)
        if share is not None and share.fraction is not None:
            norm_share = share.fraction
        else:
            weight = self.weights.get(domain, self._weight(domain))
            norm_share = weight / self.total_weight
        if norm_share <= 0:
            return 0.0
        return math.pow(2.0, -used / norm_share)


# ---------------------------------------------------------------------------
# One round: priority order, one reservation, backfill behind it
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reservation:
    job: Job
    pool: Pool
    start: float  # seconds since the epoch


class _Round:
    def __init__(self, policy: MultifactorPolicy, snapshot: Snapshot) -> None:
        self.policy = policy
        self.snapshot = snapshot
        self.pools = {state.pool.name: state.pool for state in snapshot.pools}
        self.free: FreeGpus = free_gpus(snapshot)
        self.budgets = Admissions(snapshot)
        self.choices = PoolChoices(snapshot, policy.params.placement.pool_order)
        self.reservation: _Reservation | None = None
        # GPUs per node of the reserved pool that holders ending by the reserved start release
        self.released_by_start: list[int] = []
        # pool -> (end time, nodes) of everything holding GPUs, in end order, to foresee
        # when they free up; built when a reservation is first needed (see _holders)
        self._ends: dict[str, list[tuple[float, Nodes]]] | None = None
        self._started: list[tuple[str, float, Nodes]] = []  # this round's, until then
        # GPU-type list -> smallest gang that found no room: larger ones cannot find any either
        self.no_room_from: dict[tuple[str, ...], int] = {}

    def run(self, order: list[Job]) -> Allocation:
        placements, charges, waiting, why = [], {}, {}, {}
        never_fits, no_room_from = self.choices.never_fits, self.no_room_from
        for position, job in enumerate(order):
            if never_fits(job):
                waiting[job.id] = WaitReason.NEVER_FITS
                continue
            smallest = no_room_from.get(job.gpu_types)
            if smallest is not None and job.gpus >= smallest:
                placed = WaitReason.NO_CAPACITY  # a gang this large found no room already
            else:
                placed = self._place(job)
            if isinstance(placed, WaitReason):
                waiting[job.id] = placed
                if placed is WaitReason.NO_CAPACITY and self.reservation is None:
                    if not self.policy.backfill:  # strict priority order: the queue is blocked
                        wait_behind(order[position + 1 :], self.choices, waiting)
                        break
                    self._hold_for(job)
                continue
            placement, charge = placed
            placements.append(placement)
            charges[job.id] = charge
            why[job.id] = self._why(job, placement.pool)
            self._hold(placement.pool, self._end(job, placement.pool), placement.nodes)
        return Allocation(placements=tuple(placements), waiting=waiting, charges=charges, why=why)

    def _why(self, job: Job, pool_name: str) -> str:
        """Backfilled or in priority order, then the pool order's rule (before _hold)."""
        reservation = self.reservation
        refused = None
        if reservation is None:
            order = (
                "started in priority order"
                if self.policy.order == PRIORITY
                else "started in priority order, its domain's shortest remaining first"
            )
        else:
            top = reservation.job.id
            refused = (self._does_not_delay(job), f"would delay job {top}'s reserved start")
            if pool_name != reservation.pool.name:
                order = f"backfilled: job {top} is reserved on {reservation.pool.name}"
            elif self._end(job, pool_name) <= reservation.start:
                order = f"backfilled: ends before job {top}'s reserved start"
            else:
                order = f"backfilled: job {top}'s reserved gang still fits at its start"
        return f"{order}; {self.choices.why(job, pool_name, self.free, refused)}"

    def _place(self, job: Job):
        """first_fit; remembers the gang size that found no room on these GPU types."""
        check = None if self.reservation is None else self._does_not_delay(job)
        placed = first_fit(job, self.choices.allowed(job), self.free, self.budgets, check)
        if placed is WaitReason.NO_CAPACITY:
            smallest = self.no_room_from.get(job.gpu_types, job.gpus)
            self.no_room_from[job.gpu_types] = min(job.gpus, smallest)
        return placed

    def _holders(self) -> dict[str, list[tuple[float, Nodes]]]:
        """Running jobs and those started this round, per pool in end order (built once)."""
        if self._ends is None:
            now = self.snapshot.now
            ends: dict[str, list[tuple[float, Nodes]]] = {name: [] for name in self.pools}
            for r in self.snapshot.running:
                end = r.expected_end if r.expected_end > now else now  # overdue: ends any time
                ends.setdefault(r.placement.pool, []).append((end, r.placement.nodes))
            for pool_name, end, nodes in self._started:
                ends.setdefault(pool_name, []).append((end, nodes))
            for held in ends.values():
                held.sort(key=_END)
            self._ends = ends
        return self._ends

    def _hold(self, pool_name: str, end: float, nodes: Nodes) -> None:
        """Record GPUs held until ``end`` by a job started this round."""
        if self._ends is None:
            self._started.append((pool_name, end, nodes))
            return
        insort(self._ends.setdefault(pool_name, []), (end, nodes), key=_END)
        reservation = self.reservation
        if (
            reservation is not None
            and pool_name == reservation.pool.name
            and end <= reservation.start
        ):
            for index, taken in nodes:
                self.released_by_start[index] += taken

    def _end(self, job: Job, pool_name: str) -> float:
        pool = self.pools[pool_name]
        hours = job.runtime_hours_on(self.snapshot.gpu_types[pool.gpu_type])
        return self.snapshot.now + hours * 3600.0

    def _hold_for(self, job: Job) -> None:
        """The top blocked job: reserve its earliest start (ties: the round's pool order)."""
        best: _Reservation | None = None
        for pool in self.choices.allowed(job):
            start = self._earliest_start(job, pool)
            if start is not None and (best is None or start < best.start):
                best = _Reservation(job, pool, start)
        self.reservation = best
        if best is not None:
            released = [0] * len(self.free[best.pool.name])
            for end, nodes in self._holders()[best.pool.name]:
                if end > best.start:
                    break
                for index, taken in nodes:
                    released[index] += taken
            self.released_by_start = released

    def _earliest_start(self, job: Job, pool: Pool) -> float | None:
        """The first end time at which the GPUs released so far let the gang fit."""
        free = list(self.free[pool.name])
        ends = self._holders().get(pool.name, [])
        i = 0
        while i < len(ends):
            at = ends[i][0]
            while i < len(ends) and ends[i][0] == at:
                for index, taken in ends[i][1]:
                    free[index] += taken
                i += 1
            if fit_gang(free, job.gpus, pool.gpus_per_node):
                return at
        return None

    def _does_not_delay(self, job: Job):
        reservation = self.reservation

        def acceptable(pool: Pool, nodes: Nodes) -> bool:
            if pool.name != reservation.pool.name:
                return True
            if self._end(job, pool.name) <= reservation.start:
                return True
            released = zip(self.free[pool.name], self.released_by_start, strict=True)
            at_start = [free + back for free, back in released]
            for index, taken in nodes:
                at_start[index] -= taken
            reserved = reservation.job
            return fit_gang(at_start, reserved.gpus, pool.gpus_per_node) is not None

        return acceptable
