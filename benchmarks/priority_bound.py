"""The ``priority`` policy's proven upper bound on the value a round could start.

Only benchmarks (and the tests that check the LP's quality) ask for it: a
live round or a simulation never reads it, and it was about 40% of a round,
so it lives here, computed after the fact from the snapshot, the policy and
the allocation it returned (benchmarks/allocation.py prints the gap).

Weak LP duality on the job-level LP relaxation (x_jg in [0, 1]) of every
constraint the policy keeps: with non-negative row prices y, y.b + sum over
jobs of max(0, its best value - y.A_j) bounds it. The prices are the duals of
a second class LP valued at the jobs' full priorities (buckets of
``resolution``; the bound prices every job at its own priority whatever the
buckets, and 0.25 bounds as tightly as 0.05 at two thirds of the time), on the
capacity before any start, counting GPUs that preemption could free. Classes
far down a long queue are left out as the plan does (``depth`` x free GPUs per
group; smaller is faster but can leave groups unpriced: a weaker, still valid
bound). The bound does not include the priority-order rule.
"""

from __future__ import annotations

import numpy as np

from gpupool.model import Allocation, Job, Snapshot
from gpupool.policies._classes import (
    job_classes,
    running_priority,
)
from gpupool.policies._packing import Packer
from gpupool.policies.priority import PriorityPolicy
from gpupool.policies.priority.class_lp import ClassLp
from gpupool.policies.priority.money import Money
from gpupool.policies.priority.plan import promising


def priority_bound(
    policy: PriorityPolicy,
    snapshot: Snapshot,
    allocation: Allocation,
    *,
    resolution: float = 0.25,
    depth: float = 6.0,
) -> float:
    """An upper bound on ``allocation.objective`` for any allocation ``policy`` could return."""
    groups, limits, prio, allowed, order = policy.score(snapshot)
    if not order:
        return 0.0
    group_of_pool = {p.name: g.index for g in groups for p in g.pools}
    started = {p.job_id: group_of_pool[p.pool] for p in allocation.placements}
    if _all_at_best_speed(order, started, groups, allowed):
        return allocation.objective  # each job's best value, all realised: nothing does better
    packer = Packer(snapshot, groups, limits)  # nothing started: the capacity before the round
    money = Money.of(snapshot, groups)
    free = [packer.capacity.free_gpus(g.index) for g in groups]
    counts = node_counts_for_bound(snapshot, policy.params, groups, packer, prio, limits)
    classes = job_classes(order, prio, allowed, resolution, money.orgs)
    lp = ClassLp(promising(classes, free, depth, money), groups, limits, counts, 0.0, money)
    lp.solve()
    return dual_bound(lp, order, prio, allowed)


def _all_at_best_speed(order, started: dict[int, int], groups, allowed) -> bool:
    """Whether every job started, each on the fastest GPU type it allows.

    Then the objective is the sum of every job's best value, which bounds the
    job-level LP (x_j <= 1) from above: the bound is the objective, exactly.
    """
    if len(started) != len(order):
        return False
    return all(
        groups[started[job.id]].speed >= max(groups[g].speed for g in allowed[job.id])
        for job in order
    )


def node_counts_for_bound(
    snapshot, params, groups, packer: Packer, prio, limits
) -> list[list[int]]:
    """Per group, nodes by free GPUs, counting GPUs that preemption could free as free.

    Preemption hands GPUs back but not domain cap headroom (step 3), so caps
    get nothing extra. With guarantees, a job reclaiming one may stop any
    borrower: every running job counts.
    """
    if not params.preemption.enabled or not prio:
        return [packer.capacity.node_counts(g.index) for g in groups]
    highest = max(prio.values())
    reclaim = any(g > 0 for g in limits.guarantee.values())
    free = {s.pool.name: list(s.free_per_node) for s in snapshot.pools}
    for r in snapshot.running:
        if (
            reclaim
            or running_priority(snapshot, params, r.job) <= highest - params.preemption.min_gap
        ):
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


def dual_bound(lp: ClassLp, jobs: list[Job], prio: dict[int, float], allowed) -> float:
    """Weak duality on the job-level LP: any non-negative row prices give an upper bound.

    With prices y on the rows, the job-level LP (x_jg in [0, 1], sum_g x_jg
    <= 1, the same rows with each job's own coefficients) is at most
    y.b + sum_j max(0, max_g value_jg - y.A_jg). The class LP's duals are
    (near) optimal prices for it.
    """
    if not jobs:
        return 0.0
    if lp.duals is None:  # no LP solved: price capacity at zero, still a bound
        return sum(prio[j.id] * j.gpus * max(g.speed for g in lp.groups) for j in jobs)
    y_nodes = _row_prices(lp, "nodes", len(lp.nodes.keys))
    y_domain = _row_prices(lp, "domains", len(lp.domains))
    y_pay = _row_prices(lp, "pay", len(lp.orgs))
    y_cost = _row_prices(lp, "cost", len(lp.capped_orgs))
    y_platform = _row_prices(lp, "platform", 1)[0]
    money = lp.money
    bound = (
        y_nodes @ lp.nodes.cap
        + y_domain @ lp.domain_cap
        + y_pay @ np.array([money.budget[o] for o in lp.orgs])
        + y_cost @ np.array([money.budget[o] + money.cap[o] for o in lp.capped_orgs])
    )
    if y_platform > 0:
        bound += y_platform * (sum(money.budget.values()) + money.platform)
    prices = (y_nodes, y_domain, y_pay, y_cost, y_platform)
    return float(bound) + _best_reduced(lp, jobs, prio, allowed, *prices)


def _best_reduced(lp, jobs, prio, allowed, y_nodes, y_domain, y_pay, y_cost, y_platform):
    """Sum over every job (planned or not) of max(0, its best reduced value over groups)."""
    money = lp.money
    n_groups = len(lp.groups)
    gpus = np.array([j.gpus for j in jobs], dtype=np.int64)
    # per (group, gang size): the node rows' price of one gang
    sizes = np.unique(gpus)
    node_price = np.zeros((n_groups, len(sizes)))
    rows = np.repeat(np.arange(len(lp.nodes.keys)), len(sizes))
    gangs = np.tile(sizes, len(lp.nodes.keys))
    priced = (lp.nodes.coefficients(rows, gangs) * y_nodes[rows]).reshape(-1, len(sizes))
    np.add.at(node_price, lp.nodes.row_group, priced)  # rows in order, as a loop would
    size_index = np.searchsorted(sizes, gpus)
    # per job: its domain's cap price and its org's budget prices (zero if none)
    domain_price = dict(zip(lp.domains, y_domain.tolist(), strict=True))
    pay_price = dict(zip(lp.orgs, y_pay.tolist(), strict=True))
    cost_price = dict(zip(lp.capped_orgs, y_cost.tolist(), strict=True))
    y_dom = np.array([domain_price.get(j.domain, 0.0) for j in jobs])
    budgeted = [j.org in money.orgs for j in jobs]
    y_share = np.array([pay_price.get(j.org, 0.0) for j in jobs])
    y_spend = np.array([cost_price.get(j.org, 0.0) for j in jobs])
    y_spend += np.where(budgeted, y_platform, 0.0)
    value_per_gpu = np.array([prio[j.id] for j in jobs])
    hours = np.array([j.hours for j in jobs])
    # per (org, domain) of a budgeted org: least unpaid share and slack per group
    payers = sorted({(j.org, j.domain) for j in jobs if j.org in money.orgs})
    where = {key: i for i, key in enumerate(payers)}
    payer = np.array([where.get((j.org, j.domain), -1) for j in jobs], dtype=np.int64)
    all_groups = np.arange(n_groups)
    longest = max((j.hours for j in jobs), default=0.0) * 3600.0 / float(money.speed.min())
    unpaid = np.zeros((len(payers) + 1, n_groups))  # the last row: unbudgeted, priced 0
    slack = np.zeros((len(payers) + 1, n_groups))
    for i, (org, domain) in enumerate(payers):
        unpaid[i], slack[i] = money.unpaid(org, domain, all_groups, longest)
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
        share = np.maximum(0.0, spend * unpaid[payer[k]][:, g] - slack[payer[k]][:, g])
        reduced -= y_spend[k, None] * spend + y_share[k, None] * share
        best += float(np.maximum(reduced.max(axis=1), 0.0).sum())
    return best


def _row_prices(lp: ClassLp, name: str, size: int) -> np.ndarray:
    """The duals of one row group, by key (zero for keys without a row)."""
    prices = np.zeros(size)
    keys, duals = lp.duals[name]
    if len(keys):
        prices[keys] = duals
    return prices
