"""Turning planned GPU counts into real gangs on real nodes, fast.

The solvers decide how many GPUs of which pool group each class of jobs gets;
this module places single jobs, in start order, with exactly
gpupool.model.fit_gang's semantics (best-fit single node; whole free nodes for
multi-node gangs), across the pools of a group:

- single-node gangs go to the node with the fewest free GPUs that holds them in
  the whole group (cheapest pool first on ties), so whole nodes stay free for
  big gangs: less fragmentation;
- multi-node gangs go to the pool with the fewest whole free nodes that still
  holds them, for the same reason.

Each pool keeps a count of its nodes by free GPUs, so rejecting a job that
cannot fit costs O(gpus per node), not a scan of every node: with 100,000
pending jobs most of them are rejections. Every start goes through the
round's BudgetTracker and the domain caps, and the packer remembers why each
job that did not start is waiting. Every check only gets easier with more free
GPUs, budget or cap headroom: starts only take, so a job tried earlier in a
round never meets a harder check (the priority policy's monotonicity rests on
this; docs/policies-design.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from gpupool.accounting import BudgetTracker
from gpupool.model import Charge, Job, Placement, Pool, Snapshot, WaitReason, fit_gang
from gpupool.policies._borrowing import DomainLimits
from gpupool.policies._classes import PoolGroup


class _PoolFree:
    """Free GPUs per node of one pool, with nodes counted by free GPUs."""

    __slots__ = ("pool", "free", "count")

    def __init__(self, pool: Pool, free: Sequence[int]) -> None:
        self.pool = pool
        self.free = list(free)
        self.count = [0] * (pool.gpus_per_node + 1)
        for f in self.free:
            self.count[f] += 1

    @property
    def whole(self) -> int:
        return self.count[self.pool.gpus_per_node]

    def take(self, nodes: Sequence[tuple[int, int]]) -> None:
        for index, taken in nodes:
            self.count[self.free[index]] -= 1
            self.free[index] -= taken
            self.count[self.free[index]] += 1

    def give(self, nodes: Sequence[tuple[int, int]]) -> None:
        for index, taken in nodes:
            self.count[self.free[index]] -= 1
            self.free[index] += taken
            self.count[self.free[index]] += 1


class Capacity:
    """Free GPUs of every pool, grouped like the solver sees them."""

    def __init__(self, snapshot: Snapshot, groups: Sequence[PoolGroup]) -> None:
        states = {s.pool.name: s for s in snapshot.pools}
        self.groups = groups
        self.pools: dict[str, _PoolFree] = {}
        self.members: list[list[_PoolFree]] = []
        for group in groups:
            members = [_PoolFree(p, states[p.name].free_per_node) for p in group.pools]
            self.members.append(members)
            self.pools.update((m.pool.name, m) for m in members)
        # per group: nodes by free GPUs, summed over its pools; and the most whole nodes in a pool
        self._count = [self._group_count(g) for g in range(len(groups))]
        self._max_whole = [max((m.whole for m in ms), default=0) for ms in self.members]
        # Smallest gang known not to fit per group. Free GPUs only shrink while packing,
        # so most of a long queue is rejected by one comparison; give() resets it.
        self._fails_from = [math.inf] * len(groups)
        # (gang size, groups) known to fit in none of the groups; same reasoning, same reset
        self._hopeless: set[tuple[int, tuple[int, ...]]] = set()

    def _group_count(self, g: int) -> list[int]:
        total = [0] * (self.groups[g].gpus_per_node + 1)
        for member in self.members[g]:
            for f, n in enumerate(member.count):
                total[f] += n
        return total

    def free_gpus(self, g: int) -> int:
        return sum(f * n for f, n in enumerate(self._count[g]))

    def node_counts(self, g: int) -> list[int]:
        """Nodes of group ``g`` by free GPUs: element f counts the nodes with f free."""
        return list(self._count[g])

    def whole_nodes(self, g: int) -> int:
        return self._count[g][self.groups[g].gpus_per_node]

    def could_fit(self, gpus: int, g: int) -> bool:
        """Cheap test: is there room for this gang somewhere in group ``g`` right now?"""
        if gpus >= self._fails_from[g]:
            return False
        per_node = self.groups[g].gpus_per_node
        if gpus <= per_node:
            fits = any(self._count[g][f] for f in range(gpus, per_node + 1))
        else:
            fits = math.ceil(gpus / per_node) <= self._max_whole[g]
        if not fits:
            self._fails_from[g] = gpus
        return fits

    def fits_none(self, gpus: int, groups: tuple[int, ...]) -> bool:
        """Whether the gang fits in none of ``groups`` (remembered until GPUs are given back)."""
        key = (gpus, groups)
        if key in self._hopeless:
            return True
        if any(self.could_fit(gpus, g) for g in groups):
            return False
        self._hopeless.add(key)
        return True

    def find(self, gpus: int, g: int) -> tuple[_PoolFree, tuple[tuple[int, int], ...]] | None:
        """The pool and nodes this gang would take in group ``g`` (fit_gang semantics)."""
        if not self.could_fit(gpus, g):
            return None
        per_node = self.groups[g].gpus_per_node
        if gpus <= per_node:
            best = next(f for f in range(gpus, per_node + 1) if self._count[g][f])
            member = next(m for m in self.members[g] if m.count[best])
        else:
            need = math.ceil(gpus / per_node)
            fitting = [m for m in self.members[g] if m.whole >= need]
            member = min(fitting, key=lambda m: m.whole)  # first of the fewest: stable
        nodes = fit_gang(member.free, gpus, per_node)
        assert nodes is not None  # the counts said it fits
        return member, nodes

    def take(self, member: _PoolFree, g: int, nodes: Sequence[tuple[int, int]]) -> None:
        self._update(member, g, nodes, member.take)

    def give(self, member: _PoolFree, g: int, nodes: Sequence[tuple[int, int]]) -> None:
        self._update(member, g, nodes, member.give)
        self._fails_from[g] = math.inf
        self._hopeless.clear()

    def _update(self, member, g, nodes, change) -> None:
        for index, _ in nodes:
            self._count[g][member.free[index]] -= 1
        change(nodes)
        for index, _ in nodes:
            self._count[g][member.free[index]] += 1
        self._max_whole[g] = max(m.whole for m in self.members[g])


_RANK = {
    WaitReason.NO_CAPACITY: 0,
    WaitReason.PRIORITY: 1,
    WaitReason.QUOTA: 2,
    WaitReason.BUDGET: 2,
    WaitReason.NEVER_FITS: 3,
}


class Packer:
    """Starts jobs one at a time within capacity, domain caps and budgets."""

    def __init__(
        self, snapshot: Snapshot, groups: Sequence[PoolGroup], limits: DomainLimits
    ) -> None:
        self.capacity = Capacity(snapshot, groups)
        self.groups = groups
        self.gpu_types = snapshot.gpu_types
        self.budgets = BudgetTracker(snapshot)
        self.borrowing = limits.tracker()  # guarantees and borrow limits, as jobs start
        self.placements: list[Placement] = []
        self.charges: dict[int, Charge] = {}
        self.group_of: dict[int, int] = {}
        self.reasons: dict[int, WaitReason] = {}
        # Groups that could hold a gang of a given size before anything started this round:
        # a job that fitted there but is still waiting lost to higher-priority work.
        self._snapshot = snapshot
        self._initial: Capacity | None = None  # built on first need: most rounds never ask
        self._fitted_cache: dict[tuple[int, int], bool] = {}

    def try_start(self, job: Job, candidates: Sequence[int]) -> bool:
        """Start ``job`` in the first candidate group where it fits, is within caps and paid."""
        could_fit = self.capacity.could_fit
        for g in candidates:
            if could_fit(job.gpus, g) and self._try_group(job, g):
                self.reasons.pop(job.id, None)
                return True
        self.no_room(job, candidates)
        return False

    def no_room(self, job: Job, groups: Sequence[int]) -> None:
        """Record why a job that fits in none of ``groups`` waits (unless a check said already)."""
        if job.id not in self.reasons:  # nothing but capacity stopped it: whose fault?
            fitted = any(self._fitted_initially(job.gpus, g) for g in groups)
            self.reasons[job.id] = WaitReason.PRIORITY if fitted else WaitReason.NO_CAPACITY

    def try_start_in(self, job: Job, g: int, member: _PoolFree) -> bool:
        """Start ``job`` on one given pool of group ``g`` (used after preempting there)."""
        nodes = fit_gang(member.free, job.gpus, member.pool.gpus_per_node)
        if nodes is None or not self._within_cap(job, g) or not self._admit(job, g, member, nodes):
            return False
        self.reasons.pop(job.id, None)
        return True

    def _try_group(self, job: Job, g: int) -> bool:
        """Start ``job`` on some pool of group ``g`` where it fits and its org can pay.

        The best-fit pool first; if the org cannot pay its price, the cheapest
        pool of the group that holds the gang (prices differ within a group).
        So "the job starts here" depends only on whether some pool of the group
        holds it and is affordable, which more free GPUs or more budget can only
        make true.
        """
        found = self.capacity.find(job.gpus, g)
        if found is None:
            return False
        if not self._within_cap(job, g):
            return False
        best, nodes = found
        if self._admit(job, g, best, nodes):
            return True
        # An org that cannot pay a price cannot pay a higher one (same GPU type, same
        # subsidy rate): only cheaper pools are worth trying, cheapest first.
        refused = best.pool.price_per_gpu_hour
        for member in self.capacity.members[g]:  # cheapest first
            if member.pool.price_per_gpu_hour >= refused:
                break
            nodes = fit_gang(member.free, job.gpus, member.pool.gpus_per_node)
            if nodes is not None:
                return self._admit(job, g, member, nodes)
        return False

    def _within_cap(self, job: Job, g: int) -> bool:
        """Guarantees and borrow limits (gpupool.policies._borrowing), in effective GPUs:
        the same on every pool of a group."""
        if not self.borrowing.allows(job.domain, self.effective(job, g)):
            self._note(job, WaitReason.QUOTA)
            return False
        return True

    def effective(self, job: Job, g: int) -> float:
        """Effective GPUs of ``job`` on group ``g``: its gang at its speed there."""
        if not job.speeds:  # no class: the type's own speed (most jobs; every start asks)
            return job.gpus * self.groups[g].speed
        return job.gpus * job.speed_on(self.gpu_types[self.groups[g].gpu_type])

    def _admit(self, job: Job, g: int, member: _PoolFree, nodes) -> bool:
        charge = self.budgets.admit(job, member.pool)
        if charge is None:
            self._note(job, WaitReason.BUDGET)
            return False
        self.capacity.take(member, g, nodes)
        self.borrowing.take(job.domain, self.effective(job, g))
        self.placements.append(Placement(job.id, member.pool.name, nodes))
        self.charges[job.id] = charge
        self.group_of[job.id] = g
        return True

    def _fitted_initially(self, gpus: int, g: int) -> bool:
        key = (gpus, g)
        if key not in self._fitted_cache:
            if self._initial is None:  # from the snapshot, so the same whenever it is built
                self._initial = Capacity(self._snapshot, self.groups)
            self._fitted_cache[key] = self._initial.could_fit(gpus, g)
        return self._fitted_cache[key]

    def _note(self, job: Job, reason: WaitReason) -> None:
        """Keep the most telling reason: budget/quota beat priority beat no capacity."""
        old = self.reasons.get(job.id)
        if old is None or _RANK[reason] >= _RANK[old]:
            self.reasons[job.id] = reason

    def started(self) -> set[int]:
        return set(self.charges)
