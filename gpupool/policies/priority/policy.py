"""The ``priority`` policy, one module per part of a round (the package docstring has the design).

policy.py: the round's steps; plan.py: the plan LP's counts as each job's
order of groups; class_lp.py: the class x group LP; money.py: budgets for its
rows; preemptor.py: preemption and reclaim. The bound benchmarks report is
benchmarks/priority_bound.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

from gpupool.model import Allocation, Snapshot, WaitReason
from gpupool.policies._borrowing import domain_limits
from gpupool.policies._classes import (
    MIN_PRIORITY,
    allowed_groups,
    domain_priorities,
    job_classes,
    pool_groups,
    priorities,
    start_order,
)
from gpupool.policies._order import reorder
from gpupool.policies._packing import Packer
from gpupool.policies.params import PolicyParams
from gpupool.policies.priority.money import Money
from gpupool.policies.priority.plan import Plan, promising
from gpupool.policies.priority.preemptor import Preemptor


class Scored(NamedTuple):
    """A round's first step: pool groups, domain limits, each job's priority, the
    groups each pending job may use, and the jobs that could run, in start order."""

    groups: tuple
    limits: object
    prio: dict[int, float]
    allowed: dict
    order: list


@dataclass(frozen=True)
class PriorityPolicy:
    """Start jobs in priority order, placed by an LP plan (see the module docstring).

    Options (all optional, in a policy document's ``options:``):
    - ``deficit_boost`` (float, 1.0): priority added to the domain furthest
      behind its guarantee (others in proportion to their deficit).
    - ``guarantee_boost`` (float, 1.0): priority added to domains running less
      than their guaranteed share.
    - ``price_tiebreak`` (float, 1e-4): relative value given up per unit of
      price; only decides between otherwise equal placements.
    - ``max_preemption_tries`` (int, 32): waiting jobs that may preempt per
      round, highest priority first.
    - ``plan_depth`` (float, 6.0): the LPs see, per pool group, the
      highest-priority classes asking for up to this many times its free
      GPUs; the rest of a long queue takes groups by the default preference.
    - ``order`` ("priority"): the start order; ``shortest-remaining`` keeps
      each domain's places in the priority order but gives them to its jobs
      shortest remaining effective time first (gpupool.policies._order: lower
      mean JCT within a domain). Preemption still weighs each job's own priority.

    ``Allocation.bound`` is None: the proven upper bound lives with the
    benchmarks that read it (benchmarks/priority_bound.py).
    """

    params: PolicyParams = PolicyParams()
    deficit_boost: float = 1.0
    guarantee_boost: float = 1.0
    price_tiebreak: float = 1e-4
    max_preemption_tries: int = 32
    plan_depth: float = 6.0
    order: Literal["priority", "shortest-remaining"] = "priority"

    def score(self, snapshot: Snapshot) -> Scored:
        """Step 1 of a round (also what benchmarks/priority_bound.py bounds)."""
        groups = pool_groups(snapshot)
        limits = domain_limits(snapshot, self.params)
        prio = priorities(snapshot, self.params, limits, **self._boosts())
        allowed = allowed_groups(snapshot.pending, groups)
        order = sorted(
            (job for job in snapshot.pending if allowed[job.id]), key=lambda j: start_order(j, prio)
        )
        order = reorder(order, self.order)
        return Scored(groups, limits, prio, allowed, order)

    def _boosts(self) -> dict[str, float]:
        return {"deficit_boost": self.deficit_boost, "guarantee_boost": self.guarantee_boost}

    def allocate(self, snapshot: Snapshot) -> Allocation:
        # 1. Score and group
        groups, limits, prio, allowed, order = self.score(snapshot)
        if not order:  # nothing could ever run here: nothing to plan or start
            never = dict.fromkeys((job.id for job in snapshot.pending), WaitReason.NEVER_FITS)
            return Allocation(waiting=never, objective=0.0)
        packer = Packer(snapshot, groups, limits)
        money = Money.of(snapshot, groups)
        free = [packer.capacity.free_gpus(g.index) for g in groups]  # before any start

        # 2. Plan on domain-level values: no single job's priority can move it
        base = domain_priorities(snapshot, self.params, limits, **self._boosts())
        floor = {domain: max(MIN_PRIORITY, value) for domain, value in base.items()}
        domain_prio = {job.id: floor[job.domain] for job in order}
        plan_classes = promising(
            job_classes(order, domain_prio, allowed, 0.0, money.orgs), free, self.plan_depth, money
        )
        glop = self.params.glop_parameters()
        plan = Plan.of(plan_classes, groups, limits, packer, self.price_tiebreak, money, glop)

        # 3. Start, in start order
        why: dict[int, str] = {}
        preemptor = self._start(snapshot, order, allowed, prio, packer, plan, why, limits)

        # 4. Report
        jobs = {job.id: job for job in order}
        objective = sum(
            prio[p.job_id] * packer.effective(jobs[p.job_id], packer.group_of[p.job_id])
            for p in packer.placements
        )
        waiting = {
            job.id: packer.reasons.get(job.id, WaitReason.NEVER_FITS)
            for job in snapshot.pending
            if job.id not in packer.charges
        }
        return Allocation(
            placements=tuple(packer.placements),
            waiting=waiting,
            preempt=tuple(preemptor.preempted) if preemptor is not None else (),
            charges=dict(packer.charges),
            objective=objective,
            why=why,
            preempt_why=dict(preemptor.victim_why) if preemptor is not None else {},
        )

    def _start(self, snapshot, order, allowed, prio, packer: Packer, plan: Plan, why, limits):
        """Step 3: each job in start order, where the plan prefers; the preemptor if enabled.

        Fills ``why`` (job id -> reason for its pool) for each job it starts."""
        preemptor = None
        if self.params.preemption.enabled:
            preemptor = Preemptor(snapshot, self.params, packer, prio, allowed, limits)
            preemptor.tries_left = self.max_preemption_tries
        for job in order:
            its_groups = allowed[job.id]
            tried: list[int] = []
            if packer.capacity.fits_none(job.gpus, its_groups):  # most of a long queue: no scan
                packer.no_room(job, its_groups)
                started = False
            else:
                tried = plan.candidates(job, its_groups)
                started = packer.try_start(job, tried)
            if started:
                why[job.id] = plan.why(job, packer.group_of[job.id], its_groups, tried)
            elif preemptor is not None and preemptor.try_start(job):
                started = True
                why[job.id] = preemptor.why(job)
            if started:
                plan.took(job, packer.group_of[job.id])
        return preemptor
