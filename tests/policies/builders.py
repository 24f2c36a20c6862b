"""Fluent builders for policy tests, and the invariants every allocation must keep.

Tests read like tables of cases (Kueue style): a few chained calls describe a
platform and its queue, ``build()`` returns the immutable Snapshot a policy
sees. ``random_snapshot`` makes seeded random instances for property tests, and
``check_invariants`` states, once, what no policy may ever do.

Defaults keep hand-worked figures simple: ``now`` is 100,000 s, a job submitted
without an explicit time arrives at ``now - 3600 + id`` seconds (so ids give
arrival order), every GPU type has speed 1.0, every pool costs 10 per GPU-hour.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gpupool.accounting import SubsidyRules, job_cost
from gpupool.model import (
    Allocation,
    Domain,
    GpuType,
    Job,
    Org,
    OrgAccount,
    Placement,
    Pool,
    PoolState,
    RunningJob,
    Snapshot,
    WaitReason,
    fit_gang,
)

DEFAULT_NOW = 100_000.0
EPS = 1e-6


@dataclass
class SnapshotBuilder:
    """Describe a platform step by step; every method returns the builder."""

    _now: float = DEFAULT_NOW
    _gpu_types: dict[str, GpuType] = field(default_factory=dict)
    _pools: dict[str, Pool] = field(default_factory=dict)
    _free: dict[str, list[int]] = field(default_factory=dict)
    _domains: dict[str, Domain] = field(default_factory=dict)
    _orgs: dict[str, Org] = field(default_factory=dict)
    _accounts: dict[str, OrgAccount] = field(default_factory=dict)
    _pending: list[Job] = field(default_factory=list)
    _running: list[RunningJob] = field(default_factory=list)
    _usage: dict[str, float] = field(default_factory=dict)
    _deficit: dict[str, float] = field(default_factory=dict)
    _pricing: SubsidyRules | None = None
    _subsidy_left: float | None = None
    _next_id: int = 1

    # -- platform ---------------------------------------------------------

    def now(self, t: float) -> SnapshotBuilder:
        self._now = t
        return self

    def gpu_type(
        self,
        name: str,
        speed: float = 1.0,
        *,
        vendor: str = "nvidia",
        memory_gb: int = 80,
        domestic: bool = False,
    ) -> SnapshotBuilder:
        self._gpu_types[name] = GpuType(name, vendor, memory_gb, speed, domestic)
        return self

    def pool(
        self,
        name: str,
        gpu_type: str,
        gpus: int,
        per_node: int = 8,
        price: float = 10.0,
        *,
        site: str = "site-a",
        free_per_node: Iterable[int] | None = None,
    ) -> SnapshotBuilder:
        """Add a pool; its GPU type is created with defaults if not declared yet.

        ``free_per_node`` makes GPUs busy without describing the jobs using
        them (they never end, as far as backfill is concerned).
        """
        if gpu_type not in self._gpu_types:
            self.gpu_type(gpu_type)
        pool = Pool(name, site, gpu_type, gpus, per_node, price)
        self._pools[name] = pool
        sizes = list(pool.node_sizes())
        free = list(free_per_node) if free_per_node is not None else sizes
        assert len(free) == len(sizes), f"pool {name}: {len(sizes)} nodes, got {len(free)}"
        self._free[name] = free
        return self

    def domain(self, name: str, weight: float = 1.0) -> SnapshotBuilder:
        self._domains[name] = Domain(name, weight)
        return self

    def org(
        self,
        name: str,
        domain: str,
        budget: float | None = None,
        *,
        subsidy_cap: float | None = None,
        vouchers: float = 0.0,
    ) -> SnapshotBuilder:
        """Add an org; ``budget`` is both its period budget and what is left of it."""
        if domain not in self._domains:
            self.domain(domain)
        self._orgs[name] = Org(name, domain, budget)
        if budget is not None or subsidy_cap is not None or vouchers:
            self._accounts[name] = OrgAccount(name, budget, subsidy_cap, vouchers)
        return self

    # -- accounting -------------------------------------------------------

    def pricing(self, rules: SubsidyRules | None = None, **kwargs) -> SnapshotBuilder:
        """Active subsidy rules: a SubsidyRules, or its fields as keywords."""
        self._pricing = rules if rules is not None else SubsidyRules(**kwargs)
        return self

    def subsidy_budget(self, left: float | None) -> SnapshotBuilder:
        self._subsidy_left = left
        return self

    def usage(self, domain: str, gpu_hours: float) -> SnapshotBuilder:
        self._usage[domain] = gpu_hours
        return self

    def deficit(self, domain: str, gpu_hours: float) -> SnapshotBuilder:
        self._deficit[domain] = gpu_hours
        return self

    # -- jobs -------------------------------------------------------------

    def _new_job(self, gpus, hours, org, types, submitted_at, priority, job_id, name) -> Job:
        if org not in self._orgs:
            self.org(org, "general")
        job_id = self._next_id if job_id is None else job_id
        self._next_id = max(self._next_id, job_id + 1)
        submitted = self._now - 3600.0 + job_id if submitted_at is None else submitted_at
        return Job(
            id=job_id,
            org=org,
            domain=self._orgs[org].domain,
            gpus=gpus,
            hours=hours,
            submitted_at=submitted,
            gpu_types=tuple(types),
            name=name,
            priority=priority,
        )

    def job(
        self,
        gpus: int,
        hours: float = 1.0,
        org: str = "org-a",
        types: Iterable[str] = (),
        *,
        submitted_at: float | None = None,
        priority: int = 0,
        id: int | None = None,  # mirrors Job.id
        name: str = "",
    ) -> SnapshotBuilder:
        """Add a pending job; ids count up from 1 unless given."""
        self._pending.append(
            self._new_job(gpus, hours, org, types, submitted_at, priority, id, name)
        )
        return self

    def running(
        self,
        gpus: int,
        pool: str,
        *,
        hours: float = 1.0,
        org: str = "org-a",
        types: Iterable[str] = (),
        started_at: float | None = None,
        ends_in_hours: float | None = None,
        priority: int = 0,
        id: int | None = None,
    ) -> SnapshotBuilder:
        """Add a job already running on ``pool`` (placed like fit_gang would).

        By default it started at ``now`` and ends ``hours / speed`` later;
        ``ends_in_hours`` overrides its expected end relative to ``now``.
        """
        job = self._new_job(gpus, hours, org, types, None, priority, id, "")
        p = self._pools[pool]
        nodes = fit_gang(self._free[pool], gpus, p.gpus_per_node)
        assert nodes is not None, f"running job {job.id} does not fit in pool {pool}"
        for index, taken in nodes:
            self._free[pool][index] -= taken
        start = self._now if started_at is None else started_at
        runtime_h = job.runtime_hours_on(self._gpu_types[p.gpu_type])
        if ends_in_hours is None:
            end = start + runtime_h * 3600
        else:
            end = self._now + ends_in_hours * 3600
        self._running.append(RunningJob(job, Placement(job.id, pool, nodes), start, end))
        return self

    def build(self) -> Snapshot:
        return Snapshot(
            now=self._now,
            gpu_types=dict(self._gpu_types),
            pools=tuple(
                PoolState(pool, tuple(self._free[name])) for name, pool in self._pools.items()
            ),
            domains=dict(self._domains),
            orgs=dict(self._orgs),
            pending=tuple(self._pending),
            running=tuple(self._running),
            usage=dict(self._usage),
            accounts=dict(self._accounts),
            subsidy_budget_left=self._subsidy_left,
            pricing=self._pricing,
            guarantee_deficit=dict(self._deficit),
        )


# ---------------------------------------------------------------------------
# Seeded random instances
# ---------------------------------------------------------------------------

_TYPES = (("A100", 1.0, False), ("H100", 2.0, False), ("Ascend-910B", 0.8, True))
_DOMAINS = (("medical", 3.0), ("education", 2.0), ("general", 1.0))


def random_snapshot(
    seed: int,
    jobs: int = 12,
    pools: int = 3,
    *,
    running: int = 3,
    budgets: bool = True,
    subsidies: bool = True,
) -> Snapshot:
    """A small random platform and queue, the same for the same arguments.

    Sized so that not everything fits: some jobs must wait, some gangs span
    nodes, some orgs run out of budget and some jobs restrict GPU types.
    """
    rng = random.Random(seed)
    b = SnapshotBuilder()
    for name, speed, domestic in _TYPES:
        b.gpu_type(name, speed, domestic=domestic, vendor="huawei" if domestic else "nvidia")
    for domain, weight in _DOMAINS:
        b.domain(domain, weight)
    first_type = rng.randrange(len(_TYPES))  # every type present once there are 3 pools
    for i in range(pools):
        type_name = _TYPES[(first_type + i) % len(_TYPES)][0]
        per_node = rng.choice((4, 8))
        b.pool(f"p{i}", type_name, per_node * rng.randint(1, 4), per_node, rng.choice((5, 10, 20)))
    for i in range(4):
        budget = rng.choice((None, 50.0, 400.0, 5000.0)) if budgets else None
        cap = rng.choice((None, 20.0, 200.0)) if subsidies else None
        b.org(f"org-{i}", _DOMAINS[i % len(_DOMAINS)][0], budget, subsidy_cap=cap)
    if subsidies:
        b.pricing(
            domain_rates={"medical": 0.5, "education": 0.3},
            gpu_type_rates={"Ascend-910B": 0.4},
        ).subsidy_budget(rng.choice((None, 100.0, 1000.0)))
    for domain, _ in _DOMAINS:
        b.usage(domain, rng.choice((0.0, 10.0, 200.0)))
    pool_names = list(b._pools)
    for _ in range(running):
        name = rng.choice(pool_names)
        gpus = rng.choice((1, 2, 4))
        if fit_gang(b._free[name], gpus, b._pools[name].gpus_per_node) is not None:
            b.running(gpus, name, hours=rng.choice((0.5, 2.0, 6.0)), org=f"org-{rng.randrange(4)}")
    for _ in range(jobs):
        types = rng.choice(((), (), ("H100",), ("A100", "H100"), ("Ascend-910B",)))
        b.job(
            gpus=rng.choice((1, 1, 2, 4, 8, 12, 16)),
            hours=rng.choice((0.25, 1.0, 3.0, 10.0)),
            org=f"org-{rng.randrange(4)}",
            types=types,
            submitted_at=DEFAULT_NOW - rng.randrange(0, 36_000),
            priority=rng.choice((0, 0, 0, 1, 2)),
        )
    return b.build()


# ---------------------------------------------------------------------------
# Invariants
# ---------------------------------------------------------------------------


def check_invariants(snapshot: Snapshot, allocation: Allocation) -> None:
    """Raise AssertionError, naming the job and pool, if ``allocation`` breaks a rule.

    Checked: placements only of pending jobs, once each; preemptions only of
    running jobs; every node within its free GPUs (counting GPUs freed by
    preemption); GPU types allowed; gangs whole and shaped like fit_gang
    makes them; every pending job placed or given a WaitReason, never both; a
    consistent charge for every placement; no org budget, org subsidy cap or
    platform subsidy budget exceeded.
    """
    pending = {job.id: job for job in snapshot.pending}
    pools = {state.pool.name: state for state in snapshot.pools}
    free = _free_after_preemption(snapshot, allocation)
    seen: set[int] = set()
    for placement in allocation.placements:
        job = pending.get(placement.job_id)
        assert job is not None, f"job {placement.job_id} placed but not pending"
        assert placement.job_id not in seen, f"job {placement.job_id} placed twice"
        seen.add(placement.job_id)
        assert placement.pool in pools, f"job {job.id} placed on unknown pool {placement.pool}"
        pool = pools[placement.pool].pool
        assert job.allows(pool.gpu_type), (
            f"job {job.id} allows {job.gpu_types}, placed on {pool.gpu_type} pool {pool.name}"
        )
        _check_gang_shape(job, placement, pool, free[pool.name])
        for index, taken in placement.nodes:
            free[pool.name][index] -= taken
            assert free[pool.name][index] >= 0, (
                f"pool {pool.name} node {index} over capacity after job {job.id}"
            )
    _check_waiting(pending, allocation)
    _check_charges(snapshot, allocation, pending, pools)


def _free_after_preemption(snapshot: Snapshot, allocation: Allocation) -> dict[str, list[int]]:
    free = {state.pool.name: list(state.free_per_node) for state in snapshot.pools}
    running = {r.job.id: r for r in snapshot.running}
    assert len(set(allocation.preempt)) == len(allocation.preempt), "a job preempted twice"
    for job_id in allocation.preempt:
        assert job_id in running, f"preempted job {job_id} is not running"
        placement = running[job_id].placement
        for index, taken in placement.nodes:
            free[placement.pool][index] += taken
    for state in snapshot.pools:
        for index, size in enumerate(state.pool.node_sizes()):
            got = free[state.pool.name][index]
            assert got <= size, f"pool {state.pool.name} node {index}: {got} free of {size}"
    return free


def _check_gang_shape(job: Job, placement: Placement, pool: Pool, free_now: list[int]) -> None:
    """A gang is whole: one node if it fits in one, else whole free nodes plus a remainder."""
    nodes = placement.nodes
    where = f"job {job.id} on pool {pool.name}"
    assert placement.gpus == job.gpus, f"{where}: {placement.gpus} GPUs placed, asked {job.gpus}"
    indexes = [index for index, _ in nodes]
    assert indexes == sorted(set(indexes)), f"{where}: node indexes {indexes} not ascending"
    assert all(0 <= i < pool.nodes for i in indexes), f"{where}: node index out of range"
    assert all(taken > 0 for _, taken in nodes), f"{where}: a node with no GPUs taken"
    if job.gpus <= pool.gpus_per_node:
        assert len(nodes) == 1, f"{where}: a {job.gpus}-GPU gang split over {len(nodes)} nodes"
        return
    needed = math.ceil(job.gpus / pool.gpus_per_node)
    assert len(nodes) == needed, f"{where}: {len(nodes)} nodes, a whole gang needs {needed}"
    for index, taken in nodes[:-1]:
        assert taken == pool.gpus_per_node, f"{where}: node {index} only partly used"
    for index, _ in nodes:
        assert free_now[index] == pool.gpus_per_node, (
            f"{where}: multi-node gang on node {index}, which is not completely free"
        )


def _check_waiting(pending: Mapping[int, Job], allocation: Allocation) -> None:
    started = allocation.started_ids
    for job_id in pending:
        reason = allocation.waiting.get(job_id)
        if job_id in started:
            assert reason is None, f"job {job_id} both started and waiting ({reason})"
        else:
            assert isinstance(reason, WaitReason), f"job {job_id} left waiting without a reason"
    unknown = set(allocation.waiting) - set(pending)
    assert not unknown, f"wait reasons for jobs that are not pending: {sorted(unknown)}"


def _check_charges(snapshot, allocation, pending, pools) -> None:
    rules = snapshot.pricing if isinstance(snapshot.pricing, SubsidyRules) else SubsidyRules()
    assert set(allocation.charges) == allocation.started_ids, (
        f"charges for {sorted(allocation.charges)}, started {sorted(allocation.started_ids)}"
    )
    paid: dict[str, float] = {}
    subsidised: dict[str, float] = {}
    for placement in allocation.placements:
        job, pool = pending[placement.job_id], pools[placement.pool].pool
        charge = allocation.charges[job.id]
        cost = job_cost(job, pool, snapshot.gpu_types[pool.gpu_type])
        where = f"job {job.id} on {pool.name}"
        assert math.isclose(charge.cost, cost, rel_tol=1e-9, abs_tol=EPS), (
            f"{where}: charged cost {charge.cost}, expected {cost}"
        )
        assert math.isclose(charge.subsidy + charge.org_pays, charge.cost, abs_tol=EPS), (
            f"{where}: subsidy + org_pays != cost"
        )
        assert -EPS <= charge.subsidy <= cost * rules.rate(job.domain, pool.gpu_type) + EPS, (
            f"{where}: subsidy {charge.subsidy} outside the subsidy rate"
        )
        paid[job.org] = paid.get(job.org, 0.0) + charge.org_pays
        subsidised[job.org] = subsidised.get(job.org, 0.0) + charge.subsidy
    for org, amount in paid.items():
        account = snapshot.accounts.get(org)
        if account is not None and account.budget_left is not None:
            assert amount <= account.budget_left + EPS, (
                f"org {org} pays {amount:.2f}, budget left {account.budget_left:.2f}"
            )
        if account is not None and account.subsidy_cap_left is not None:
            assert subsidised[org] <= max(0.0, account.subsidy_cap_left) + EPS, (
                f"org {org} subsidised {subsidised[org]:.2f} over its cap"
            )
    if snapshot.subsidy_budget_left is not None:
        total = sum(subsidised.values())
        assert total <= max(0.0, snapshot.subsidy_budget_left) + EPS, (
            f"platform subsidy {total:.2f} over budget {snapshot.subsidy_budget_left:.2f}"
        )
