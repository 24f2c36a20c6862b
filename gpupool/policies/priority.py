"""``priority``: jobs start in priority order; an LP decides where they go and bounds the value.

Value of starting job j on GPU type t: priority(j) x gpus(j) x speed(t), i.e.
priority-weighted effective GPUs put to work (effective GPU-hours per hour).

The rule that decides WHO starts is simple and promised to users: jobs are
tried in start order (priority, then submitted, then id) and a job starts if
it fits, within its domain's cap and its org's budget, in what the jobs before
it left (free GPUs, or GPUs of running jobs it may preempt). So a job never
waits while a lower-priority job takes the GPUs it could have used, and raising
a job's priority never stops it starting (docs/policies-design.md has the
argument). The LP decides WHERE each job goes, which is what makes more of the
lower-priority jobs fit: a flexible job leaves the fast GPUs to a job that can
only run there, a gang lands where it wastes fewest whole nodes.

A round, in numbered steps:

1. Score and group: priorities (gpupool.policies._classes), pool groups (GPU
   type x node size), job classes (domain, org when it has a budget, gang
   size, allowed groups, priority bucket).
2. Plan: one GLOP LP over class x group counts, with GPU capacity and whole
   free nodes per group (multi-node gangs need them), each domain's cap
   (guarantee + borrowing limit) in effective GPUs, and each budgeted org's
   budget. Its classes are valued at their *domain's* priority only (weight
   and guarantee boosts; no Job.priority, no aging), so one job's raise cannot
   change the plan. A tiny price term breaks ties towards cheaper GPUs.
3. Start, one pass in start order: each job tries the groups its class was
   planned on (fastest first, while the plan has room for it), then groups
   with spare planned capacity, then the rest; on real nodes (best fit,
   fit_gang semantics), checked against domain caps and the round's
   BudgetTracker. With preemption enabled, a job that found no room may stop
   running jobs whose priority is at least ``min_gap`` lower, in the pool
   where that frees the fewest GPUs.
4. Report: objective = the value started; with ``report_bound`` (off by
   default: the simulator and live rounds never read it), bound = a dual
   bound on the LP relaxation of the job-level model (capacity, whole nodes, domain caps, and
   budget rows that every admitted set satisfies), with prices from a second
   class LP valued at the jobs' full priorities, so it is a proven upper bound
   on any allocation the policy could return.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from gpupool.accounting import SubsidyRules
from gpupool.model import Allocation, Job, Snapshot, WaitReason, fit_gang
from gpupool.policies._classes import (
    MIN_PRIORITY,
    DomainLimits,
    JobClass,
    PoolGroup,
    allowed_groups,
    domain_limits,
    domain_priorities,
    job_classes,
    pool_groups,
    priorities,
    running_priority,
    start_order,
)
from gpupool.policies._packing import Packer
from gpupool.policies.params import PolicyParams


@dataclass(frozen=True)
class PriorityPolicy:
    """Start jobs in priority order, placed by an LP plan (see the module docstring).

    Options (all optional, in a policy document's ``options:``):
    - ``priority_resolution`` (float, 0.25): width of the priority buckets that
      make the bound LP's job classes; larger is faster. The bound prices every
      job at its own priority whatever the buckets, so coarse buckets cost
      little (benchmark: 0.25 bounds as tightly as 0.05, at two thirds of the
      time). Who starts and where does not depend on it.
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
    - ``bound_depth`` (float, 6.0): the same for the bound's LP. Smaller is
      faster but can leave groups unpriced (a much weaker, still valid bound).
    - ``report_bound`` (bool, false): compute ``Allocation.bound`` (step 4).
      Off, the bound is None and no bound LP is built: it was about 40% of a
      round, and only benchmarks read it (the gap figures). Who starts and
      where never depend on it.
    """

    params: PolicyParams = PolicyParams()
    priority_resolution: float = 0.25
    deficit_boost: float = 1.0
    guarantee_boost: float = 1.0
    price_tiebreak: float = 1e-4
    max_preemption_tries: int = 32
    plan_depth: float = 6.0
    bound_depth: float = 6.0
    report_bound: bool = False

    def allocate(self, snapshot: Snapshot) -> Allocation:
        # 1. Score and group
        groups = pool_groups(snapshot)
        limits = domain_limits(snapshot, self.params)
        boosts = {"deficit_boost": self.deficit_boost, "guarantee_boost": self.guarantee_boost}
        prio = priorities(snapshot, self.params, limits, **boosts)
        allowed = allowed_groups(snapshot.pending, groups)
        order = sorted(
            (job for job in snapshot.pending if allowed[job.id]), key=lambda j: start_order(j, prio)
        )
        if not order:  # nothing could ever run here: nothing to plan, start or bound
            never = dict.fromkeys((job.id for job in snapshot.pending), WaitReason.NEVER_FITS)
            return Allocation(waiting=never, objective=0.0, bound=self._bound_or_none(0.0))
        packer = Packer(snapshot, groups, limits)
        money = _Money.of(snapshot, groups)
        free = [packer.capacity.free_gpus(g.index) for g in groups]  # before any start
        bound_counts = None  # the bound's capacity is the one before any start: count it now
        if self.report_bound:
            bound_counts = _node_counts_for_bound(snapshot, self.params, groups, packer, prio)

        # 2. Plan on domain-level values: no single job's priority can move it
        base = domain_priorities(snapshot, self.params, limits, **boosts)
        floor = {domain: max(MIN_PRIORITY, value) for domain, value in base.items()}
        domain_prio = {job.id: floor[job.domain] for job in order}
        plan_classes = _promising(
            job_classes(order, domain_prio, allowed, 0.0, money.orgs), free, self.plan_depth, money
        )
        glop = self.params.glop_parameters()
        plan = _Plan.of(plan_classes, groups, limits, packer, self.price_tiebreak, money, glop)

        # 3. Start, in start order
        why: dict[int, str] = {}
        preemptor = self._start(snapshot, order, allowed, prio, packer, plan, why)

        # 4. Report
        objective = sum(
            prio[p.job_id] * p.gpus * groups[packer.group_of[p.job_id]].speed
            for p in packer.placements
        )
        bound = None
        if bound_counts is not None:
            bound = self._bound(order, prio, allowed, packer, groups, limits, money, free,
                                bound_counts, objective)  # fmt: skip
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
            bound=bound,
            why=why,
        )

    def _bound_or_none(self, value: float) -> float | None:
        return value if self.report_bound else None

    def _bound(self, order, prio, allowed, packer, groups, limits, money, free, counts, objective):
        """Step 4's bound; reads the round, changes nothing (decisions are already made)."""
        if _all_at_best_speed(order, packer, groups, allowed):
            return objective  # each job's best value, all realised: no LP can do better
        # the bound's LP sees the jobs' full priorities and the capacity before any start
        classes = job_classes(order, prio, allowed, self.priority_resolution, money.orgs)
        promising = _promising(classes, free, self.bound_depth, money)
        bound_lp = _ClassLp(promising, groups, limits, counts, 0.0, money)
        bound_lp.glop = self.params.glop_parameters()
        bound_lp.solve()
        return bound_lp.dual_bound(order, prio, allowed)

    def _start(self, snapshot, order, allowed, prio, packer: Packer, plan: _Plan, why):
        """Step 3: each job in start order, where the plan prefers; the preemptor if enabled.

        Fills ``why`` (job id -> reason for its pool) for each job it starts."""
        preemptor = None
        if self.params.preemption.enabled:
            preemptor = _Preemptor(snapshot, self.params, packer, prio, allowed)
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


def _all_at_best_speed(order, packer: Packer, groups, allowed) -> bool:
    """Whether every job started, each on the fastest GPU type it allows.

    Then the objective is the sum of every job's best value, which bounds the
    job-level LP (x_j <= 1) from above: the bound is the objective, exactly.
    """
    if len(packer.charges) != len(order):
        return False
    return all(
        groups[packer.group_of[job.id]].speed >= max(groups[g].speed for g in allowed[job.id])
        for job in order
    )


def _node_counts_for_bound(snapshot, params, groups, packer: Packer, prio) -> list[list[int]]:
    """Per group, nodes by free GPUs, counting GPUs that preemption could free as free.

    Preemption hands GPUs back but not domain cap headroom (step 3), so caps
    get nothing extra.
    """
    if not params.preemption.enabled or not prio:
        return [packer.capacity.node_counts(g.index) for g in groups]
    highest = max(prio.values())
    free = {s.pool.name: list(s.free_per_node) for s in snapshot.pools}
    for r in snapshot.running:
        if running_priority(snapshot, params, r.job) <= highest - params.preemption.min_gap:
            for index, taken in r.placement.nodes:
                free[r.placement.pool][index] += taken
    counts = []
    for g in groups:
        count = [0] * (g.gpus_per_node + 1)
        for pool in g.pools:
            for f in free[pool.name]:
                count[min(f, g.gpus_per_node)] += 1
        counts.append(count)
    return counts


def _promising(
    classes: list[JobClass], free: list[int], depth: float, money: _Money
) -> list[JobClass]:
    """Classes among the top demand of ``depth`` x free GPUs of some group they allow.

    Classes far down a long queue cannot be in an optimal plan unless their
    groups are empty of better work, which this keeps them for. A budgeted
    org's classes count only the jobs its budget could pay for (at the lowest
    price), or a queue of unaffordable work would hide the work that can run.
    Re-indexed 0..n-1.
    """
    room = {g: depth * f for g, f in enumerate(free)}
    budget = dict(money.budget)
    kept = []
    for c in sorted(classes, key=lambda c: (-c.priority, c.index)):
        if not any(room[g] > 0 for g in c.groups):
            continue
        kept.append(c)
        count = len(c.jobs)
        if c.org:
            hours = np.array([sum(j.hours for j in c.jobs) / count])
            pay = float(money.cost_and_pay(c.domain, c.gpus, hours, np.array(c.groups))[1].min())
            if pay > 0:
                count = min(count, budget[c.org] / pay)
                budget[c.org] -= count * pay
        for g in c.groups:
            room[g] -= c.gpus * count
    kept.sort(key=lambda c: c.index)
    return [dataclasses.replace(c, index=i) for i, c in enumerate(kept)]


class _Plan:
    """The plan LP's counts, turned into each job's order of groups to try.

    Jobs prefer the fastest group (then the cheapest per effective GPU-hour)
    that has *room*: free GPUs not promised by the plan to classes that can
    only run on one GPU type. So a flexible job leaves the fast GPUs to work
    that can only use them, and otherwise high-priority work gets the fastest
    GPUs. (Measured: following every class's planned groups did worse, because
    the plan is valued at domain-level priorities only.) A job tries every
    allowed group in the end, so the order only decides where, never whether.

    Everything here changes only as jobs start, never with a job's own
    priority: the plan was made on domain-level values, and what is left of it
    depends only on the jobs started before.
    """

    @staticmethod
    def of(classes, groups, limits, packer, tiebreak: float, money: _Money, glop="") -> _Plan:
        """Solve the plan LP, unless no class is held to one GPU type.

        Only one-type classes' planned counts are read (the reservation); with
        none, the LP could not change where any job goes.
        """
        planned: list[dict[int, float]] = [{} for _ in classes]
        if any(len({groups[g].gpu_type for g in c.groups}) == 1 for c in classes):
            counts = [packer.capacity.node_counts(g.index) for g in groups]
            class_lp = _ClassLp(classes, groups, limits, counts, tiebreak, money)
            class_lp.glop = glop  # the document's seed and time limit
            planned = class_lp.solve()
        return _Plan(classes, groups, planned, packer)

    def __init__(self, classes, groups, planned: list[dict[int, float]], packer: Packer) -> None:
        self.packer = packer
        self.class_of = {job.id: c for c in classes for job in c.jobs}
        self.left = planned
        self.single = [len({groups[g].gpu_type for g in c.groups}) == 1 for c in classes]
        self.reserved = np.zeros(len(groups))  # GPUs planned for one-type classes, left
        for c in classes:
            if self.single[c.index]:
                for g, count in planned[c.index].items():
                    self.reserved[g] += count * c.gpus
        # 1. fastest; 2. cheapest per effective GPU-hour; 3. index
        self.preference = {g.index: (-g.speed, g.price_per_effective_gpu_hour, g.index)
                           for g in groups}  # fmt: skip

    def candidates(self, job: Job, allowed: tuple[int, ...]) -> list[int]:
        """Groups with room first, fastest first; then the other groups that fit; then the rest."""
        capacity = self.packer.capacity
        fitting = [g for g in allowed if capacity.could_fit(job.gpus, g)]
        if not fitting:
            return list(allowed)  # the packer rejects it and says why
        c = self.class_of.get(job.id)
        own = self.left[c.index] if c is not None and self.single[c.index] else {}

        def rank(g: int) -> tuple:
            room = capacity.free_gpus(g) - self.reserved[g] + own.get(g, 0.0) * job.gpus
            return (0 if room >= job.gpus else 1, self.preference[g])

        ordered = sorted(fitting, key=rank)
        return ordered + [g for g in allowed if g not in ordered]

    def why(self, job: Job, g: int, allowed: tuple[int, ...], tried: list[int]) -> str:
        """Why ``job`` went to group ``g``, told from the groups it prefers but did not take.

        Called right after the start, before ``took``: only ``g`` changed, so for
        every preferred group (faster, or as fast and cheaper) what ``candidates``
        saw still holds. A preferred group tried before ``g`` refused it (domain
        cap or org budget); one that could fit but came after ``g`` had no room
        beyond the plan's reservation for one-type jobs (the LP's doing); else it
        was full. Groups of the chosen type (other node sizes) are not told.
        """
        capacity, groups = self.packer.capacity, self.packer.groups
        chosen = groups[g]
        if len(allowed) == 1:
            return f"the only GPU type it can use here: {chosen.gpu_type}"
        before = set(tried[: tried.index(g)])
        causes: dict[str, str] = {}
        rank = self.preference[g]
        for other in allowed:
            if self.preference[other] >= rank or groups[other].gpu_type == chosen.gpu_type:
                continue  # not preferred to g (or the same type): nothing to explain
            if other in before:
                cause = "refused by its domain cap or org budget"
            elif capacity.could_fit(job.gpus, other):
                cause = "kept by the LP plan for jobs that can only run there"
            else:
                cause = "full"
            causes.setdefault(groups[other].gpu_type, cause)
        if not causes:
            return f"fastest GPU type it allows: {chosen.gpu_type}"
        lead = "fastest GPU type that took it"
        if any(cause.startswith("kept") for cause in causes.values()):
            lead = "LP-guided placement"
        passed = ", ".join(f"{name} {cause}" for name, cause in causes.items())
        return f"{lead}: {chosen.gpu_type} ({passed})"

    def took(self, job: Job, g: int) -> None:
        c = self.class_of.get(job.id)
        if c is None:
            return
        left = self.left[c.index].get(g, 0.0)
        if left > 0:
            used = min(1.0, left)
            self.left[c.index][g] = left - used
            if self.single[c.index]:
                self.reserved[g] -= used * c.gpus


@dataclass(frozen=True)
class _Money:
    """What budget rows the LPs may add, from the round's prices and accounts.

    Every admitted set satisfies, per org with a budget B left (subsidy ≤ cost x
    rate, and subsidies ≤ the org's cap C left and the platform's budget P left):
    1. sum cost x (1 - rate) ≤ B;  2. sum cost ≤ B + C;  3. over all budgeted
    orgs, sum cost ≤ sum B + P. Costs use the cheapest pool of a group, so the
    rows only relax the real prices. With Books pricing (programmes, vouchers)
    no rows are added: vouchers can make a job free for its org.
    """

    orgs: frozenset[str]
    budget: dict[str, float]
    cap: dict[str, float]
    platform: float
    price: np.ndarray  # cheapest price per GPU-hour per group
    speed: np.ndarray
    rules: SubsidyRules
    gpu_type: tuple[str, ...]
    unpaid_memo: dict = dataclasses.field(default_factory=dict, compare=False)

    @staticmethod
    def of(snapshot: Snapshot, groups: tuple[PoolGroup, ...]) -> _Money:
        pricing = snapshot.pricing
        rules = SubsidyRules() if pricing is None else pricing
        budget, cap = {}, {}
        if isinstance(rules, SubsidyRules):
            for org, account in snapshot.accounts.items():
                if account.budget_left is None:
                    continue
                budget[org] = max(0.0, account.budget_left)
                if account.subsidy_cap_left is not None:
                    cap[org] = max(0.0, account.subsidy_cap_left)
        left = snapshot.subsidy_budget_left
        return _Money(
            orgs=frozenset(budget),
            budget=budget,
            cap=cap,
            platform=math.inf if left is None else max(0.0, left),
            price=np.array([min(p.price_per_gpu_hour for p in g.pools) for g in groups]),
            speed=np.array([g.speed for g in groups]),
            rules=rules if isinstance(rules, SubsidyRules) else SubsidyRules(),
            gpu_type=tuple(g.gpu_type for g in groups),
        )

    def cost_and_pay(self, domain: str, gpus: int, hours: np.ndarray, groups: np.ndarray):
        """Lowest cost and lowest org share, shape (len(hours), len(groups))."""
        per_hour = gpus * self.price[groups] / self.speed[groups]
        cost = hours[:, None] * per_hour[None, :]
        return cost, cost * self.unpaid(domain, groups)[None, :]

    def unpaid(self, domain: str, groups: np.ndarray) -> np.ndarray:
        """Share of the price an org of ``domain`` pays at least, per group."""
        key = (domain, tuple(groups.tolist()))
        if key not in self.unpaid_memo:
            rates = [self.rules.rate(domain, self.gpu_type[g]) for g in key[1]]
            self.unpaid_memo[key] = 1.0 - np.array(rates)
        return self.unpaid_memo[key]


class _NodeRows:
    """Capacity rows of one pool group, from its nodes counted by free GPUs.

    Free GPUs are not all alike: a node with 3 free cannot hold a 4-GPU gang.
    For each threshold s (gang sizes the LP sees, 1, and the node size P) two
    rows hold in every packing fit_gang can make:
    - GPUs: gangs of s or more GPUs use at most the free GPUs of nodes with at
      least s free;
    - slots: gangs of s or more number at most sum over nodes of floor(free/s);
      a multi-node gang fills floor(gpus/P) whole nodes (all their slots), and
      at s = P needs ceil(gpus/P) whole free nodes.
    s = 1 gives the plain free-GPU row; s = P's slot row the whole-node row.
    """

    def __init__(self, groups: tuple[PoolGroup, ...], counts, sizes: list[set[int]]):
        self.keys: list[tuple[int, int, int]] = []  # (group, threshold, 0 GPUs / 1 slots)
        caps = []
        for g in groups:
            per_node, count = g.gpus_per_node, counts[g.index]
            thresholds = sorted({s for s in sizes[g.index] if 1 < s < per_node} | {1, per_node})
            for s in thresholds:
                self.keys.append((g.index, s, 0))
                caps.append(sum(f * n for f, n in enumerate(count) if f >= s))
                if s > 1:
                    self.keys.append((g.index, s, 1))
                    caps.append(sum((f // s) * n for f, n in enumerate(count)))
        self.cap = np.array(caps, dtype=float)
        # the keys as arrays; a group's rows are consecutive
        row_group = np.array([g for g, _, _ in self.keys], dtype=np.int64)
        self.threshold = np.array([s for _, s, _ in self.keys], dtype=np.int64)
        self.kind = np.array([k for _, _, k in self.keys], dtype=np.int64)
        self.row_group = row_group
        self.row_per_node = np.array([g.gpus_per_node for g in groups], dtype=np.int64)[row_group]
        self.rows_in_group = np.bincount(row_group, minlength=len(groups))
        self.first_row = np.cumsum(self.rows_in_group) - self.rows_in_group

    def coefficients(self, rows: np.ndarray, gpus: np.ndarray) -> np.ndarray:
        """Coefficient of row ``rows[k]`` for a gang of ``gpus[k]`` GPUs (0 below its threshold)."""
        threshold, kind, per_node = self.threshold[rows], self.kind[rows], self.row_per_node[rows]
        multi = np.where(
            threshold == per_node,
            np.ceil(gpus / per_node),
            (gpus // per_node) * (per_node // threshold),
        )
        slots = np.where(gpus <= per_node, 1.0, multi)
        coef = np.where(kind == 0, gpus.astype(float), slots)
        return np.where(gpus >= threshold, coef, 0.0)

    def pairs(self, col_group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (row, column) of the same group, row-major per column: (rows, columns)."""
        per_column = self.rows_in_group[col_group]
        columns = np.repeat(np.arange(len(col_group)), per_column)
        first = np.cumsum(per_column) - per_column  # each column's first pair
        within = np.arange(len(columns)) - np.repeat(first, per_column)
        return self.first_row[col_group][columns] + within, columns


class _ClassLp:
    """A class x group LP (GLOP), built from arrays through the model builder helper."""

    def __init__(
        self,
        classes: list[JobClass],
        groups: tuple[PoolGroup, ...],
        limits: DomainLimits,
        counts: list[list[int]],
        tiebreak: float,
        money: _Money,
    ):
        self.classes = classes
        self.groups = groups
        self.money = money
        sizes: list[set[int]] = [set() for _ in groups]
        for c in classes:
            for g in c.groups:
                sizes[g].add(c.gpus)
        self.nodes = _NodeRows(groups, counts, sizes)
        self.domains = sorted({c.domain for c in classes if limits.headroom(c.domain) < math.inf})
        self.domain_cap = np.array([max(0.0, limits.headroom(d)) for d in self.domains])
        self.orgs = sorted({c.org for c in classes if c.org})
        self.tiebreak = tiebreak
        # one LP column per (class, allowed group)
        self.col_class = np.array([c.index for c in classes for _ in c.groups], dtype=np.int64)
        self.col_group = np.array([g for c in classes for g in c.groups], dtype=np.int64)
        self.duals = None
        self.glop = ""  # GLOP parameters: PolicyParams.glop_parameters

    def _column_index(self, names: list[str], of_class) -> np.ndarray:
        """Index of each column's class attribute in ``names``; -1 where absent."""
        index = {d: i for i, d in enumerate(names)}
        by_class = np.array([index.get(of_class(c), -1) for c in self.classes], dtype=np.int64)
        return by_class[self.col_class] if len(by_class) else by_class

    def _column_money(self) -> tuple[np.ndarray, np.ndarray]:
        """Per column: a member's mean lowest cost and lowest org share (budgeted orgs only)."""
        cost, pay = np.zeros(len(self.col_class)), np.zeros(len(self.col_class))
        start = 0
        for c in self.classes:
            end = start + len(c.groups)
            if c.org:
                hours = np.array([sum(j.hours for j in c.jobs) / len(c.jobs)])
                col_cost, col_pay = self.money.cost_and_pay(
                    c.domain, c.gpus, hours, np.array(c.groups, dtype=np.int64)
                )
                cost[start:end], pay[start:end] = col_cost[0], col_pay[0]
            start = end
        return cost, pay

    def solve(self) -> list[dict[int, float]]:
        """Planned (fractional) job counts per class and group."""
        from ortools.linear_solver.python import model_builder_helper as mbh

        planned: list[dict[int, float]] = [{} for _ in self.classes]
        if len(self.col_class) == 0:
            return planned
        gpus = np.array([c.gpus for c in self.classes], dtype=np.int64)[self.col_class]
        speed = self.money.speed[self.col_group]
        prio = np.array([c.priority for c in self.classes])[self.col_class]
        price = np.array([g.price_per_effective_gpu_hour for g in self.groups])
        relative_price = (price / max(price.max(), 1e-12))[self.col_group]
        value = prio * gpus * speed * (1.0 - self.tiebreak * relative_price)
        counts = np.array([len(c.jobs) for c in self.classes], dtype=float)

        model = mbh.ModelBuilderHelper()
        n = len(value)
        model.add_var_array_with_bounds(
            np.zeros(n), counts[self.col_class], np.zeros(n, dtype=bool), "x"
        )
        model.set_objective_coefficients(list(range(n)), value.tolist())
        model.set_maximize(True)
        columns = np.arange(n)
        _rows(model, self.col_class, columns, np.ones(n), counts)
        self._node_rows(model, columns, gpus)
        col_domain = self._column_index(self.domains, lambda c: c.domain)
        capped = col_domain >= 0
        self.rows_domain = _rows(
            model, col_domain[capped], columns[capped], (gpus * speed)[capped], self.domain_cap
        )
        self._money_rows(model, columns)
        solver = mbh.ModelSolverHelper("GLOP")
        if self.glop:
            solver.set_solver_specific_parameters(self.glop)
        solver.solve(model)
        if not solver.has_solution():
            return planned
        x = np.asarray(solver.variable_values())
        self.duals = np.abs(np.asarray(solver.dual_values()))
        for col in np.nonzero(x > 1e-6)[0]:
            planned[self.col_class[col]][int(self.col_group[col])] = float(x[col])
        return planned

    def _node_rows(self, model, columns: np.ndarray, gpus: np.ndarray) -> None:
        rows, cols = self.nodes.pairs(self.col_group)
        coef = self.nodes.coefficients(rows, gpus[cols])
        used = coef > 0
        self.rows_nodes = _rows(model, rows[used], columns[cols[used]], coef[used], self.nodes.cap)

    def _money_rows(self, model, columns: np.ndarray) -> None:
        """The _Money rows: 1. org share per org; 2. cost per capped org; 3. platform."""
        money = self.money
        cost, pay = self._column_money()
        col_org = self._column_index(self.orgs, lambda c: c.org)
        paid = col_org >= 0
        budget = np.array([money.budget[o] for o in self.orgs])
        self.rows_pay = _rows(model, col_org[paid], columns[paid], pay[paid], budget)
        self.capped_orgs = [o for o in self.orgs if o in money.cap]
        col_capped = self._column_index(self.capped_orgs, lambda c: c.org)
        with_cap = col_capped >= 0
        limit = np.array([money.budget[o] + money.cap[o] for o in self.capped_orgs])
        self.rows_cost = _rows(
            model, col_capped[with_cap], columns[with_cap], cost[with_cap], limit
        )
        platform = sum(money.budget.values()) + money.platform
        keys = np.zeros(int(paid.sum()), dtype=np.int64) if platform < math.inf else col_org[:0]
        self.rows_platform = _rows(
            model, keys, columns[paid][: len(keys)], cost[paid][: len(keys)], np.array([platform])
        )

    def dual_bound(self, jobs: list[Job], prio: dict[int, float], allowed) -> float:
        """Weak duality on the job-level LP: any non-negative row prices give an upper bound.

        With prices y on the rows, the job-level LP (x_jg in [0, 1], sum_g x_jg
        <= 1, the same rows with each job's own coefficients) is at most
        y.b + sum_j max(0, max_g value_jg - y.A_jg). The class LP's duals are
        (near) optimal prices for it.
        """
        if not jobs:
            return 0.0
        if self.duals is None:  # no LP solved: price capacity at zero, still a bound
            return sum(prio[j.id] * j.gpus * max(g.speed for g in self.groups) for j in jobs)
        y_nodes = self._row_prices(self.rows_nodes, len(self.nodes.keys))
        y_domain = self._row_prices(self.rows_domain, len(self.domains))
        y_pay = self._row_prices(self.rows_pay, len(self.orgs))
        y_cost = self._row_prices(self.rows_cost, len(self.capped_orgs))
        y_platform = self._row_prices(self.rows_platform, 1)[0]
        money = self.money
        bound = (
            y_nodes @ self.nodes.cap
            + y_domain @ self.domain_cap
            + y_pay @ np.array([money.budget[o] for o in self.orgs])
            + y_cost @ np.array([money.budget[o] + money.cap[o] for o in self.capped_orgs])
        )
        if y_platform > 0:
            bound += y_platform * (sum(money.budget.values()) + money.platform)
        return float(bound) + self._best_reduced(jobs, prio, allowed, y_nodes, y_domain,
                                                 y_pay, y_cost, y_platform)  # fmt: skip

    def _best_reduced(self, jobs, prio, allowed, y_nodes, y_domain, y_pay, y_cost, y_platform):
        """Sum over every job (planned or not) of max(0, its best reduced value over groups)."""
        money = self.money
        n_groups = len(self.groups)
        gpus = np.array([j.gpus for j in jobs], dtype=np.int64)
        # per (group, gang size): the node rows' price of one gang
        sizes = np.unique(gpus)
        node_price = np.zeros((n_groups, len(sizes)))
        rows = np.repeat(np.arange(len(self.nodes.keys)), len(sizes))
        gangs = np.tile(sizes, len(self.nodes.keys))
        priced = (self.nodes.coefficients(rows, gangs) * y_nodes[rows]).reshape(-1, len(sizes))
        np.add.at(node_price, self.nodes.row_group, priced)  # rows in order, as a loop would
        size_index = np.searchsorted(sizes, gpus)
        # per job: its domain's cap price and its org's budget prices (zero if none)
        domain_price = dict(zip(self.domains, y_domain.tolist(), strict=True))
        pay_price = dict(zip(self.orgs, y_pay.tolist(), strict=True))
        cost_price = dict(zip(self.capped_orgs, y_cost.tolist(), strict=True))
        y_dom = np.array([domain_price.get(j.domain, 0.0) for j in jobs])
        budgeted = [j.org in money.orgs for j in jobs]
        y_share = np.array([pay_price.get(j.org, 0.0) for j in jobs])
        y_spend = np.array([cost_price.get(j.org, 0.0) for j in jobs])
        y_spend += np.where(budgeted, y_platform, 0.0)
        value_per_gpu = np.array([prio[j.id] for j in jobs])
        hours = np.array([j.hours for j in jobs])
        domains = sorted({j.domain for j in jobs})
        where = {d: i for i, d in enumerate(domains)}
        dom_index = np.array([where[j.domain] for j in jobs], dtype=np.int64)
        all_groups = np.arange(n_groups)
        unpaid = np.array([money.unpaid(d, all_groups) for d in domains])  # domains x groups
        per_gpu_hour = money.price / money.speed
        by_allowed: dict[tuple[int, ...], list[int]] = {}
        for k, job in enumerate(jobs):
            by_allowed.setdefault(allowed[job.id], []).append(k)
        best = 0.0
        for groups, members in by_allowed.items():
            k = np.array(members, dtype=np.int64)
            g = np.array(groups, dtype=np.int64)
            unit = gpus[k, None] * money.speed[None, g]  # effective GPUs
            reduced = (value_per_gpu[k, None] - y_dom[k, None]) * unit
            reduced -= node_price[g][:, size_index[k]].T
            spend = (hours[k] * gpus[k])[:, None] * per_gpu_hour[None, g]
            share = spend * unpaid[dom_index[k]][:, g]
            reduced -= y_spend[k, None] * spend + y_share[k, None] * share
            best += float(np.maximum(reduced.max(axis=1), 0.0).sum())
        return best

    def _row_prices(self, rows, size: int) -> np.ndarray:
        prices = np.zeros(size)
        keys, first = rows
        if len(keys):
            prices[keys] = self.duals[first]
        return prices


def _rows(model, keys: np.ndarray, columns: np.ndarray, coefs: np.ndarray, upper: np.ndarray):
    """Add ``sum coef x <= upper[key]`` for each distinct key; return (keys, row indexes)."""
    order = np.argsort(keys, kind="stable")
    keys, columns, coefs = keys[order], columns[order], coefs[order]
    distinct, starts = np.unique(keys, return_index=True)
    ends = starts[1:].tolist() + [len(keys)] if len(keys) else []
    rows = []
    for key, lo, hi in zip(distinct.tolist(), starts.tolist(), ends, strict=True):
        row = model.add_linear_constraint()
        model.set_constraint_lower_bound(row, -math.inf)
        model.set_constraint_upper_bound(row, float(upper[key]))
        for col, coef in zip(columns[lo:hi].tolist(), coefs[lo:hi].tolist(), strict=True):
            model.set_constraint_coefficient(row, col, coef)
        rows.append(row)
    return distinct.astype(np.int64), np.array(rows, dtype=np.int64)


class _Preemptor:
    """Step 3's fallback: stop lower-priority running jobs so that a waiting gang fits.

    A job may stop running jobs whose priority is at least ``min_gap`` below its
    own, in the pool where that frees the fewest GPUs (victims lowest priority,
    most recently started first); if its cap or budget refuses that pool, the
    next pool, and nothing is stopped if none takes it. GPUs are handed back;
    the victims' domain cap headroom is not, this round (so caps stay a check
    that only gets harder as the round goes on). At most ``tries_left`` jobs
    (those that found victims to stop) try, highest priority first.
    """

    def __init__(self, snapshot: Snapshot, params: PolicyParams, packer: Packer, prio, allowed):
        self.packer = packer
        self.prio = prio
        self.allowed = allowed
        self.gap = params.preemption.min_gap
        self.tries_left = 0
        self.victims: dict[str, list] = {}
        for r in snapshot.running:
            self.victims.setdefault(r.placement.pool, []).append(
                (running_priority(snapshot, params, r.job), -r.started_at, r.job.id, r)
            )
        for rows in self.victims.values():
            rows.sort(key=lambda row: row[:3])  # lowest priority, most recently started first
        self.preempted: list[int] = []
        self.last_pool, self.last_count = "", 0  # the latest start's pool and victim count

    def try_start(self, job: Job) -> bool:
        if self.tries_left <= 0:
            return False
        options = []
        for g in self.allowed[job.id]:
            for member in self.packer.capacity.members[g]:
                found = self._victims_for(job, member)
                if found is not None:
                    options.append((found[0], g, member.pool.name, member, found[1]))
        if not options:
            return False
        self.tries_left -= 1
        options.sort(key=lambda option: option[:3])
        capacity = self.packer.capacity
        for _, g, pool, member, victims in options:
            for r in victims:
                capacity.give(member, g, r.placement.nodes)
            if self.packer.try_start_in(job, g, member):
                self.preempted.extend(r.job.id for r in victims)
                self.last_pool, self.last_count = pool, len(victims)
                self.victims[pool] = [row for row in self.victims[pool] if row[3] not in victims]
                return True
            for r in victims:  # its cap or budget said no: put the victims back
                capacity.take(member, g, r.placement.nodes)
        return False

    def why(self, job: Job) -> str:
        """After a start by preemption: whom it stopped, and where."""
        victims = self.preempted[-self.last_count :]
        shown = ", ".join(map(str, victims))
        return f"no room elsewhere: preempted lower-priority job(s) {shown} on {self.last_pool}"

    def _victims_for(self, job: Job, member):
        """Fewest running jobs to stop in this pool so that the gang fits, or None."""
        free = list(member.free)
        chosen, freed = [], 0
        for rp, _, _, r in self.victims.get(member.pool.name, ()):
            if rp > self.prio[job.id] - self.gap:
                break
            for index, taken in r.placement.nodes:
                free[index] += taken
            chosen.append(r)
            freed += r.placement.gpus
            if fit_gang(free, job.gpus, member.pool.gpus_per_node) is not None:
                return freed, chosen
        return None
