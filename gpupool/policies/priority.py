"""``priority``: start the most valuable set of jobs, planned by an LP on job classes.

Value of starting job j on GPU type t: priority(j) x gpus(j) x speed(t), i.e.
priority-weighted effective GPUs put to work (effective GPU-hours per hour).
Because speed multiplies priority, the optimum gives the fastest GPUs to the
highest-priority work and lets jobs restricted to one GPU type have it when a
flexible job can go elsewhere.

A round, in numbered steps:

1. Score and group: priorities (gpupool.policies._classes), pool groups (GPU
   type x node size), job classes (domain, gang size, allowed groups,
   priority bucket).
2. Plan: one GLOP LP over class x group counts, with GPU capacity and whole
   free nodes per group (multi-node gangs need them), and each domain's cap
   (guarantee + borrowing limit) in effective GPUs. A tiny price term breaks
   ties towards cheaper GPUs.
3. Pack: jobs in start order take the LP's planned counts on real nodes
   (best-fit, fit_gang semantics), then every job still waiting is
   backfilled into any allowed group (work-conserving). Budgets are checked
   here, job by job, through the round's BudgetTracker.
4. Preempt (optional): a job still waiting may stop running jobs whose
   priority is at least ``min_gap`` lower, choosing the pool that frees the
   fewest GPUs.
5. Report: objective = the value started; bound = a dual bound on the LP
   relaxation of the job-level capacity model (no budgets), computed from the
   class LP's duals, so it is a proven upper bound on any allocation.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from gpupool.model import Allocation, Job, Snapshot, WaitReason, fit_gang
from gpupool.policies._classes import (
    DomainLimits,
    JobClass,
    PoolGroup,
    allowed_groups,
    domain_limits,
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
    """Maximise priority-weighted effective GPUs started (see the module docstring).

    Options (all optional, in a policy document's ``options:``):
    - ``priority_resolution`` (float, 0.01): width of the priority buckets that
      make job classes; smaller is closer to exact, larger is faster.
    - ``deficit_boost`` (float, 1.0): priority added to the domain furthest
      behind its guarantee (others in proportion to their deficit).
    - ``guarantee_boost`` (float, 1.0): priority added to domains running less
      than their guaranteed share.
    - ``price_tiebreak`` (float, 1e-4): relative value given up per unit of
      price; only decides between otherwise equal placements.
    - ``max_preemption_tries`` (int, 32): waiting jobs considered for
      preemption per round, highest priority first.
    - ``plan_depth`` (float, 6.0): the LP sees, per pool group, the
      highest-priority classes asking for up to this many times its free
      GPUs; the rest of a long queue is only backfilled.
    """

    params: PolicyParams = PolicyParams()
    priority_resolution: float = 0.05
    deficit_boost: float = 1.0
    guarantee_boost: float = 1.0
    price_tiebreak: float = 1e-4
    max_preemption_tries: int = 32
    plan_depth: float = 6.0

    def allocate(self, snapshot: Snapshot) -> Allocation:
        # 1. Score and group
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
        placeable = [job for job in snapshot.pending if allowed[job.id]]
        classes = job_classes(placeable, prio, allowed, self.priority_resolution)
        packer = Packer(snapshot, groups, limits)

        # 2. Plan (on the classes that could plausibly start; the bound still covers all jobs)
        lp = _ClassLp(
            _promising(classes, packer, self.plan_depth),
            groups,
            limits,
            packer,
            self.price_tiebreak,
        )
        planned = lp.solve()

        # 3. Pack: planned counts first, biggest gangs first (whole nodes before they
        # fragment); within a class in start order. Then backfill in start order.
        for c in sorted(lp.classes, key=lambda c: (-c.gpus, -c.priority, c.index)):
            plan = planned[c.index]
            targets = sorted(plan, key=lambda g: (-plan[g], g))
            wanted = math.floor(sum(plan.values()) + 0.5)  # the LP may split a job over groups
            for job in c.jobs[:wanted]:
                packer.try_start(job, targets)
        order = sorted(placeable, key=lambda j: start_order(j, prio))
        preference = _group_preference(groups)
        started = packer.started()
        for job in order:
            if job.id not in started:
                packer.try_start(job, sorted(allowed[job.id], key=preference.__getitem__))

        # 4. Preempt
        preempt = ()
        if self.params.preemption.enabled:
            preempt = _Preemptor(snapshot, self.params, packer, prio, allowed).run(
                order, self.max_preemption_tries
            )

        # 5. Report (preemption may start work on GPUs that were busy: the bound counts them)
        extra = _preemptable_capacity(snapshot, self.params, groups, lp, prio)
        waiting = {
            job.id: packer.reasons.get(job.id, WaitReason.NEVER_FITS)
            for job in snapshot.pending
            if job.id not in packer.charges
        }
        objective = sum(
            prio[p.job_id] * p.gpus * groups[packer.group_of[p.job_id]].speed
            for p in packer.placements
        )
        return Allocation(
            placements=tuple(packer.placements),
            waiting=waiting,
            preempt=preempt,
            charges=dict(packer.charges),
            objective=objective,
            bound=lp.dual_bound(placeable, prio, allowed, extra),
        )


def _preemptable_capacity(snapshot, params, groups, lp: _ClassLp, prio):
    """GPUs, nodes that could become whole, and domain headroom that preemption could free."""
    extra_gpu, extra_node = np.zeros(len(groups)), np.zeros(len(groups))
    extra_domain = np.zeros(len(lp.domains))
    if not params.preemption.enabled or not prio:
        return extra_gpu, extra_node, extra_domain
    highest = max(prio.values())
    group_of_pool = {p.name: g for g in groups for p in g.pools}
    domain_index = {d: i for i, d in enumerate(lp.domains)}
    touched: set[tuple[str, int]] = set()
    for r in snapshot.running:
        if running_priority(snapshot, params, r.job) > highest - params.preemption.min_gap:
            continue
        g = group_of_pool[r.placement.pool]
        extra_gpu[g.index] += r.placement.gpus
        touched.update((r.placement.pool, index) for index, _ in r.placement.nodes)
        if r.job.domain in domain_index:
            extra_domain[domain_index[r.job.domain]] += r.placement.gpus * g.speed
    for pool, _ in touched:
        extra_node[group_of_pool[pool].index] += 1
    return extra_gpu, extra_node, extra_domain


def _promising(classes: list[JobClass], packer: Packer, depth: float) -> list[JobClass]:
    """Classes among the top demand of ``depth`` x free GPUs of some group they allow.

    Classes far down a long queue cannot be in an optimal plan unless their
    groups are empty of better work, which this keeps them for. Re-indexed 0..n-1.
    """
    room = {g.index: depth * packer.capacity.free_gpus(g.index) for g in packer.groups}
    kept = []
    for c in sorted(classes, key=lambda c: (-c.priority, c.index)):
        demand = c.gpus * len(c.jobs)
        if any(room[g] > 0 for g in c.groups):
            kept.append(c)
            for g in c.groups:
                room[g] -= demand
    kept.sort(key=lambda c: c.index)
    return [dataclasses.replace(c, index=i) for i, c in enumerate(kept)]


def _group_preference(groups: tuple[PoolGroup, ...]) -> dict[int, tuple]:
    """Backfill order: 1. fastest GPU type; 2. cheapest per effective GPU-hour; 3. index."""
    return {g.index: (-g.speed, g.price_per_effective_gpu_hour, g.index) for g in groups}


class _ClassLp:
    """The class x group LP (GLOP), built from arrays through the model builder helper."""

    def __init__(self, classes, groups, limits: DomainLimits, packer: Packer, tiebreak: float):
        self.classes: list[JobClass] = classes
        self.groups: tuple[PoolGroup, ...] = groups
        capacity = packer.capacity
        self.gpu_cap = np.array([capacity.free_gpus(g.index) for g in groups], dtype=float)
        self.node_cap = np.array([capacity.whole_nodes(g.index) for g in groups], dtype=float)
        self.domains = sorted({c.domain for c in classes if limits.headroom(c.domain) < math.inf})
        self.domain_cap = np.array([max(0.0, limits.headroom(d)) for d in self.domains])
        self.tiebreak = tiebreak
        # one LP column per (class, allowed group)
        self.col_class = np.array([c.index for c in classes for _ in c.groups], dtype=np.int64)
        self.col_group = np.array([g for c in classes for g in c.groups], dtype=np.int64)
        self.duals = None

    def _column_coefficients(self):
        gpus = np.array([c.gpus for c in self.classes], dtype=float)[self.col_class]
        speed = np.array([g.speed for g in self.groups])[self.col_group]
        per_node = np.array([g.gpus_per_node for g in self.groups], dtype=float)[self.col_group]
        nodes = np.where(gpus > per_node, np.ceil(gpus / per_node), 0.0)
        return gpus, speed, nodes

    def _column_domains(self) -> np.ndarray:
        """Index of each column's domain in ``self.domains``; -1 for uncapped domains."""
        index = {d: i for i, d in enumerate(self.domains)}
        by_class = np.array([index.get(c.domain, -1) for c in self.classes], dtype=np.int64)
        return by_class[self.col_class]

    def solve(self) -> list[dict[int, float]]:
        """Planned (fractional) job counts per class and group."""
        from ortools.linear_solver.python import model_builder_helper as mbh

        planned: list[dict[int, float]] = [{} for _ in self.classes]
        if len(self.col_class) == 0:
            return planned
        gpus, speed, nodes = self._column_coefficients()
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
        self.rows_gpu = _rows(model, self.col_group, columns, gpus, self.gpu_cap)
        big = nodes > 0
        self.rows_node = _rows(model, self.col_group[big], columns[big], nodes[big], self.node_cap)
        col_domain = self._column_domains()
        capped = col_domain >= 0
        self.rows_domain = _rows(
            model, col_domain[capped], columns[capped], (gpus * speed)[capped], self.domain_cap
        )
        solver = mbh.ModelSolverHelper("GLOP")
        solver.solve(model)
        if not solver.has_solution():
            return planned
        x = np.asarray(solver.variable_values())
        self.duals = np.abs(np.asarray(solver.dual_values()))
        for col in np.nonzero(x > 1e-6)[0]:
            planned[self.col_class[col]][int(self.col_group[col])] = float(x[col])
        return planned

    def dual_bound(self, jobs: list[Job], prio: dict[int, float], allowed, extra) -> float:
        """Weak duality on the job-level LP: any non-negative row prices give an upper bound.

        With prices y on the capacity rows, the job-level LP (x_jg in [0, 1],
        sum_g x_jg <= 1) is at most y.b + sum_j max(0, max_g value_jg - y.A_jg).
        The class LP's duals are (near) optimal prices for it. ``extra``
        (GPUs, whole nodes, domain headroom) is capacity preemption could free.
        """
        if not jobs:
            return 0.0
        if self.duals is None:  # no LP solved: price capacity at zero, still a bound
            return sum(prio[j.id] * j.gpus * max(g.speed for g in self.groups) for j in jobs)
        y_gpu = self._row_prices(self.rows_gpu, len(self.groups))
        y_node = self._row_prices(self.rows_node, len(self.groups))
        y_domain = self._row_prices(self.rows_domain, len(self.domains))
        extra_gpu, extra_node, extra_domain = extra
        bound = (
            y_gpu @ (self.gpu_cap + extra_gpu)
            + y_node @ (self.node_cap + extra_node)
            + y_domain @ (self.domain_cap + extra_domain)
        )
        # every job, planned or not: its best reduced value over the groups it allows
        by_key: dict[tuple, list[float]] = {}
        for job in jobs:
            by_key.setdefault((job.gpus, allowed[job.id], job.domain), []).append(prio[job.id])
        domain_index = {d: i for i, d in enumerate(self.domains)}
        best = 0.0
        for (gpus, groups, domain), values in by_key.items():
            g = np.array(groups, dtype=np.int64)
            speed = np.array([self.groups[i].speed for i in groups])
            per_node = np.array([self.groups[i].gpus_per_node for i in groups], dtype=float)
            nodes = np.where(gpus > per_node, np.ceil(gpus / per_node), 0.0)
            unit = gpus * speed  # value per unit of priority
            d = domain_index.get(domain)
            cost = gpus * y_gpu[g] + nodes * y_node[g] + unit * (0.0 if d is None else y_domain[d])
            reduced = np.array(values)[:, None] * unit[None, :] - cost[None, :]
            best += float(np.maximum(reduced.max(axis=1), 0.0).sum())
        return float(bound) + best

    def _row_prices(self, rows: np.ndarray, size: int) -> np.ndarray:
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
    """Step 4: stop lower-priority running jobs to start a waiting higher-priority gang."""

    def __init__(self, snapshot: Snapshot, params: PolicyParams, packer: Packer, prio, allowed):
        self.packer = packer
        self.prio = prio
        self.allowed = allowed
        self.gap = params.preemption.min_gap
        self.victims: dict[str, list] = {}
        for r in snapshot.running:
            self.victims.setdefault(r.placement.pool, []).append(
                (running_priority(snapshot, params, r.job), -r.started_at, r.job.id, r)
            )
        for rows in self.victims.values():
            rows.sort(key=lambda row: row[:3])  # lowest priority, most recently started first
        self.preempted: list[int] = []

    def run(self, order: list[Job], tries: int) -> tuple[int, ...]:
        candidates = [
            job
            for job in order
            if job.id not in self.packer.charges
            and self.packer.reasons.get(job.id) in (WaitReason.PRIORITY, WaitReason.NO_CAPACITY)
        ]
        for job in candidates[:tries]:
            self._try(job)
        return tuple(self.preempted)

    def _try(self, job: Job) -> None:
        best = None
        for g in self.allowed[job.id]:
            for member in self.packer.capacity.members[g]:
                found = self._victims_for(job, member)
                if found is not None and (best is None or found[0] < best[0]):
                    best = (found[0], g, member, found[1])
        if best is None:
            return
        _, g, member, victims = best
        for r in victims:
            self.packer.capacity.give(member, g, r.placement.nodes)
            self.packer.headroom[r.job.domain] = (
                self.packer.headroom.get(r.job.domain, math.inf)
                + r.placement.gpus * self.packer.groups[g].speed
            )
        if self.packer.try_start_in(job, g, member):
            self.preempted.extend(r.job.id for r in victims)
            self.victims[member.pool.name] = [
                row for row in self.victims[member.pool.name] if row[3] not in victims
            ]
        else:  # quota or budget said no after all: put the victims back
            for r in victims:
                self.packer.capacity.take(member, g, r.placement.nodes)
                self.packer.headroom[r.job.domain] -= r.placement.gpus * self.packer.groups[g].speed

    def _victims_for(self, job: Job, member):
        """Fewest GPUs to stop in this pool so that the gang fits, or None."""
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
