"""``fair-share``: weighted max-min fairness across domains, heterogeneity-aware.

In the spirit of Gavel's max-min fairness policy (OSDI'20), but over domains
rather than single jobs, and turned into concrete gangs every round:

1. Fluid shares (GLOP): a[d, g] = GPUs of pool group g given to domain d.
   A domain's *level* is (effective GPUs it runs now + what it is given,
   counted as GPUs x speed, + its decayed historical usage spread over
   ``history_hours``) / its weight. Progressive filling: maximise the lowest
   level of the domains still growing; a domain that cannot grow any more
   (its demand, allowed GPU types or cap stop it) is frozen at that level;
   repeat. A last LP hands out whatever is left (work conservation) without
   lowering anyone. Demand limits per group come from the GPU types each
   domain's jobs allow, so a domain that can only use one type is not
   promised another.
2. Packing: the domain with the lowest level goes next and starts its next
   job (priority, then FIFO) inside its share of a group; then every job still
   waiting is backfilled the same way into any allowed group.

Every LP of a round shares the document's ``time_limit_s`` (a round's LPs stop
once it has passed, and the shares found by then stand; none at all leaves
the packing to step 2's backfill) and its ``seed`` (GLOP's random_seed), both
passed by PolicyParams.glop_parameters.

Report: bound = effective GPUs of the fluid fair allocation; objective = the
part of it the packed gangs realise (sum over domains of min(packed, fluid)).

With ``lease_minutes`` > 0 the policy time-slices instead (Gavel's lease rounds,
gpupool.policies._slicing): per-job fluid shares by hierarchical water-filling
(domains, orgs, jobs), jobs run by how far they are behind their share, and
running jobs give up their GPUs at lease ends to jobs further behind. Without
leases (the default) a started job runs to completion, as before.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass

from gpupool.model import Allocation, GpupoolError, Job, Snapshot, WaitReason
from gpupool.policies._borrowing import DomainLimits, domain_limits
from gpupool.policies._classes import (
    PoolGroup,
    allowed_groups,
    domain_weight,
    pool_groups,
    priorities,
    start_order,
)
from gpupool.policies._packing import Packer
from gpupool.policies.params import PolicyParams

_EPS = 1e-6
MAX_MIN = "max-min"
FINISH_TIME_FAIRNESS = "finish-time-fairness"
OBJECTIVES = (MAX_MIN, FINISH_TIME_FAIRNESS)


@dataclass(frozen=True)
class FairSharePolicy:
    """Weighted max-min fair shares per domain, packed into gangs (see the module docstring).

    Options (all optional, in a policy document's ``options:``):
    - ``history_hours`` (float, 24.0): decayed historical usage (effective
      GPU-hours) counts as that many hours of running; 0 ignores history.
    - ``share_slack`` (float, 0.5): a job may start in a share that is this
      fraction of a gang short (fluid shares are rarely whole gangs).
    - ``deficit_boost``, ``guarantee_boost`` (float, 1.0): as in ``priority``;
      they order jobs within a domain.
    - ``lease_minutes`` (float, 0): > 0 turns on time slicing with leases of
      this length (gpupool.policies._slicing); 0 runs every job to completion.
    - ``objective`` (``max-min`` or ``finish-time-fairness``, ``max-min``): with
      leases, what ranks jobs: how far each is behind its fluid share (Gavel's
      max-min priority), or its finish-time fairness rho, the time it would take
      to finish keeping its fluid share over the time on an isolated 1/N of the
      cluster, largest rho first (Themis, Gavel's finish_time_fairness).
    What a take-back costs the job (restore time, work since its last
    checkpoint) is the document's ``preemption`` section (``restart_minutes``,
    ``checkpoint_minutes``), as for ``priority``; the simulated site pays it.
    """

    params: PolicyParams = PolicyParams()
    history_hours: float = 24.0
    share_slack: float = 0.5
    deficit_boost: float = 1.0
    guarantee_boost: float = 1.0
    lease_minutes: float = 0.0
    objective: str = MAX_MIN

    def __post_init__(self) -> None:
        if self.lease_minutes < 0:
            raise GpupoolError("must be 0 or more", location="options.lease_minutes")
        if self.objective not in OBJECTIVES:
            raise GpupoolError(
                f"must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}",
                location="options.objective",
            )

    @property
    def may_preempt(self) -> bool:
        """With leases a waiting job may take a running one's GPUs (at a lease end), so
        the simulator rounds on every arrival: the round asks for that lease end."""
        return self.lease_minutes > 0

    def allocate(self, snapshot: Snapshot) -> Allocation:
        if self.lease_minutes > 0:
            return self._sliced(snapshot)
        groups = pool_groups(snapshot)
        limits = domain_limits(snapshot, self.params)
        prio = priorities(
            snapshot,
            self.params,
            limits,
            deficit_boost=self.deficit_boost,
            guarantee_boost=self.guarantee_boost,
        )
        allowed = allowed_groups(snapshot.pending, groups)
        queues: dict[str, list[Job]] = {}
        for job in sorted(snapshot.pending, key=lambda j: start_order(j, prio)):
            if allowed[job.id]:
                queues.setdefault(job.domain, []).append(job)
        packer = Packer(snapshot, groups, limits)
        fluid = _FluidShares(snapshot, self, groups, limits, queues, allowed, packer)
        shares = fluid.solve()

        # 2. Packing: inside the shares first, then backfill anywhere allowed
        level = dict(fluid.base)
        types = snapshot.gpu_types

        def preference(job: Job, g: int) -> tuple:
            speed = job.speed_on(types[groups[g].gpu_type])  # the job's class's speed there
            group = groups[g]
            return (-speed, group.price_per_effective_gpu_hour * group.speed / speed, g)

        def within_share(job: Job) -> list[int]:
            room = shares.get(job.domain, {})
            fits = [g for g in allowed[job.id] if room.get(g, 0.0) >= job.gpus - self.share_slack]
            return sorted(fits, key=lambda g: (-room[g], g))

        def anywhere(job: Job) -> list[int]:
            return sorted(allowed[job.id], key=lambda g: preference(job, g))

        why: dict[int, str] = {}
        left = self._fill(queues, level, fluid.weight, packer, within_share, shares, why)
        self._fill(left, level, fluid.weight, packer, anywhere, None, why)

        waiting = {
            job.id: packer.reasons.get(job.id, WaitReason.NEVER_FITS)
            for job in snapshot.pending
            if job.id not in packer.charges
        }
        job_of = {job.id: job for job in snapshot.pending}
        packed: dict[str, float] = {}
        for p in packer.placements:
            domain = job_of[p.job_id].domain
            effective = packer.effective(job_of[p.job_id], packer.group_of[p.job_id])
            packed[domain] = packed.get(domain, 0.0) + effective
        objective = sum(min(packed.get(d, 0.0), given) for d, given in fluid.given.items())
        return Allocation(
            placements=tuple(packer.placements),
            waiting=waiting,
            charges=dict(packer.charges),
            objective=objective,
            bound=sum(fluid.given.values()),
            why=why,
        )

    def _sliced(self, snapshot: Snapshot) -> Allocation:
        """Time slicing: the round of gpupool.policies._slicing."""
        from gpupool.policies._slicing import LeaseRound, Victims

        groups = pool_groups(snapshot)
        limits = domain_limits(snapshot, self.params)
        allowed = allowed_groups(snapshot.pending, groups)
        lease = LeaseRound(snapshot, self.params, self.lease_minutes * 60.0)
        standings = lease.standings(
            groups, allowed, finish_time=self.objective == FINISH_TIME_FAIRNESS
        )
        packer = Packer(snapshot, groups, limits)
        victims = Victims(lease, standings, packer)
        types = snapshot.gpu_types

        def fastest_first(job: Job) -> list[int]:
            speed = {g: job.speed_on(types[groups[g].gpu_type]) for g in allowed[job.id]}
            return sorted(
                speed, key=lambda g: (-speed[g], groups[g].price_per_effective_gpu_hour, g)
            )

        why: dict[int, str] = {}
        waiting = [job for job in snapshot.pending if allowed[job.id]]
        capacity = packer.capacity
        hopeless: list[Job] = []
        # Standing.key inlined (criteria: level, submitted, id): it runs for every waiting job
        by_standing = sorted(waiting, key=lambda j: (standings[j.id].level, j.submitted_at, j.id))
        # Shapes that fit nowhere and can stop no one: down the list levels only rise, so
        # they stay hopeless until a start changes the free GPUs (then they are asked again).
        blocked: set[tuple] = set()
        for job in by_standing:
            standing = standings[job.id]
            shape = (job.gpus, allowed[job.id])
            if shape in blocked:
                hopeless.append(job)
                continue
            if capacity.fits_none(job.gpus, allowed[job.id]) and not victims.below(standing.level):
                blocked.add(shape)
                hopeless.append(job)  # most of a long queue: nothing to try
                continue
            order = fastest_first(job)
            if packer.try_start(job, order) or (
                victims and victims.make_room(job, standing.level, order)
            ):
                blocked.clear()
                gpu_type = groups[packer.group_of[job.id]].gpu_type
                why[job.id] = (
                    f"time slice on {gpu_type}: level {standing.level}, fair share "
                    f"{standing.fluid:.2f} effective GPUs, received {standing.received:.2f} "
                    "effective GPU-hours"
                )
        reasons: dict[tuple, WaitReason] = {}  # by shape: the same for every job of one
        for job in hopeless:
            shape = (job.gpus, allowed[job.id])
            if shape not in reasons:
                packer.no_room(job, allowed[job.id])
                reasons[shape] = packer.reasons[job.id]
            packer.reasons.setdefault(job.id, reasons[shape])
        if victims:
            victims.move_up(groups, types)
        return Allocation(
            placements=tuple(packer.placements),
            waiting={
                job.id: packer.reasons.get(job.id, WaitReason.NEVER_FITS)
                for job in snapshot.pending
                if job.id not in packer.charges
            },
            preempt=tuple(victims.preempted),
            charges=dict(packer.charges),
            why=why,
            next_round_at=lease.next_round_at if self._renewal(snapshot, packer, groups) else None,
        )

    @staticmethod
    def _renewal(snapshot: Snapshot, packer: Packer, groups) -> bool:
        """Whether the next lease end can change anything: jobs will be running then
        (so it ends: no endless wake-ups for a job its budget keeps waiting), and jobs
        wait or a running one could move to a much faster type."""
        from gpupool.policies._slicing import could_move_up

        if not (snapshot.running or packer.placements):
            return False
        return len(packer.placements) < len(snapshot.pending) or could_move_up(snapshot, groups)

    @staticmethod
    def _fill(queues, level, weight, packer: Packer, candidates, shares, why):
        """Lowest level first: that domain starts its next job; returns jobs not started.

        ``shares`` None is the backfill pass. Each start's reason goes into ``why``.
        """
        heap = [(level[d] / weight[d], d) for d in sorted(queues) if queues[d]]
        heapq.heapify(heap)
        position = dict.fromkeys(queues, 0)
        left: dict[str, list[Job]] = {}
        while heap:
            _, d = heapq.heappop(heap)
            job = queues[d][position[d]]
            position[d] += 1
            groups = candidates(job)
            if groups and packer.try_start(job, groups):
                g = packer.group_of[job.id]
                level[d] += packer.effective(job, g)
                gpu_type = packer.groups[g].gpu_type
                if shares is not None:
                    room = shares[d].get(g, 0.0)
                    why[job.id] = f"within {d}'s fair share of {gpu_type} ({room:.1f} GPUs left)"
                    shares[d][g] = room - job.gpus
                else:  # the backfill pass tries groups fastest, then cheapest, first
                    why[job.id] = (
                        f"backfill beyond {d}'s fair share: fastest type that took it, {gpu_type}"
                    )
            else:
                left.setdefault(d, []).append(job)
            if position[d] < len(queues[d]):
                heapq.heappush(heap, (level[d] / weight[d], d))
        return left


class _FluidShares:
    """Step 1: progressive filling over domain x group GPU counts, each step one GLOP LP."""

    def __init__(
        self,
        snapshot,
        policy: FairSharePolicy,
        groups,
        limits: DomainLimits,
        queues,
        allowed,
        packer: Packer,
    ):
        self.groups: tuple[PoolGroup, ...] = groups
        self.domains = sorted(queues)
        self.weight = {
            d: max(_EPS, domain_weight(snapshot, policy.params, d)) for d in self.domains
        }
        history = policy.history_hours
        self.base = {
            d: limits.running.get(d, 0.0)
            + (snapshot.usage.get(d, 0.0) / history if history > 0 else 0.0)
            for d in self.domains
        }
        self.headroom = {d: max(0.0, limits.headroom(d)) for d in self.domains}
        self.capacity = [float(packer.capacity.free_gpus(g.index)) for g in groups]
        self.demand: dict[tuple[str, int], float] = {}
        self.total_demand: dict[str, float] = {}
        for d, jobs in queues.items():
            for job in jobs:
                self.total_demand[d] = self.total_demand.get(d, 0.0) + job.gpus
                for g in allowed[job.id]:
                    self.demand[(d, g)] = self.demand.get((d, g), 0.0) + job.gpus
        self.given: dict[str, float] = {}
        self.params = policy.params
        # time_limit_s bounds every LP of the round together, not each one
        self.deadline = time.monotonic() + policy.params.time_limit_s

    def solve(self) -> dict[str, dict[int, float]]:
        """GPUs per domain and group; also sets ``given`` (effective GPUs per domain)."""
        frozen: dict[str, float] = {}  # domain -> effective GPUs it keeps at least
        active = [d for d in self.domains if self.total_demand.get(d, 0.0) > 0]
        while active:
            level = self._lp(frozen, active, grow=None)[1]
            if level is None:
                break
            stuck = [d for d in active if self._cannot_grow(frozen, active, d, level)]
            for d in stuck or active:  # numerically nothing stuck: everyone is at the top
                frozen[d] = max(0.0, level * self.weight[d] - self.base[d])
            active = [d for d in active if d not in frozen]
        shares, _ = self._lp(frozen, [], grow="*")
        return shares

    def _cannot_grow(self, frozen, active, domain, level) -> bool:
        """Whether ``domain`` is held at ``level`` while every active domain keeps it.

        The floor is relaxed by a hair: GLOP may call the exact level infeasible
        by rounding, and a domain that cannot even be solved for is stuck.
        """
        grown = self._lp(frozen, active, grow=domain, floor=level - 1e-7)[1]
        return grown is None or grown <= level * self.weight[domain] - self.base[domain] + 1e-6

    def _lp(self, frozen, active, grow, floor=None):
        """One LP. grow=None: max the lowest active level; a domain: max its effective
        GPUs with every active domain at ``floor`` or more; "*": max the total."""
        from ortools.linear_solver import pywraplp

        left = self.deadline - time.monotonic()
        if left <= 0:  # out of time: the shares found so far stand
            return {}, None
        solver = pywraplp.Solver.CreateSolver("GLOP")
        solver.SetSolverSpecificParametersAsString(self.params.glop_parameters(left))
        a = {
            (d, g.index): solver.NumVar(0.0, self.demand.get((d, g.index), 0.0), "")
            for d in self.domains
            for g in self.groups
            if self.demand.get((d, g.index), 0.0) > 0
        }
        effective = {d: solver.Sum([0.0]) for d in self.domains}
        for (d, g), var in a.items():
            effective[d] += var * self.groups[g].speed
        for g in self.groups:
            solver.Add(
                solver.Sum([v for (_, gi), v in a.items() if gi == g.index] + [0.0])
                <= self.capacity[g.index]
            )
        for d in self.domains:
            solver.Add(
                solver.Sum([v for (di, _), v in a.items() if di == d] + [0.0])
                <= self.total_demand.get(d, 0.0)
            )
            if self.headroom[d] < math.inf:
                solver.Add(effective[d] <= self.headroom[d])
            if d in frozen:
                solver.Add(effective[d] >= frozen[d] - 1e-7)
        t = solver.NumVar(-solver.infinity(), solver.infinity(), "t")
        bottom = t if floor is None else floor
        for d in active:
            solver.Add((self.base[d] + effective[d]) * (1.0 / self.weight[d]) >= bottom)
        if grow is None:
            solver.Maximize(t)
        elif grow == "*":
            solver.Maximize(solver.Sum(list(effective.values())))
        else:
            solver.Maximize(effective[grow])
        if solver.Solve() != pywraplp.Solver.OPTIMAL:
            return {}, None
        if grow is None:
            return {}, t.solution_value()
        if grow != "*":
            return {}, effective[grow].solution_value()
        shares: dict[str, dict[int, float]] = {}
        for (d, g), var in a.items():
            shares.setdefault(d, {})[g] = var.solution_value()
        self.given = {d: effective[d].solution_value() for d in self.domains}
        return shares, None
