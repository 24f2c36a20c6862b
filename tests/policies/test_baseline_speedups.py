"""The optimised fifo and multifactor rounds decide exactly what the plain ones did.

The reference implementations below are the straightforward versions the
baselines had before they were made fast enough to replay whole traces: every
priority computed factor by factor, never_fits evaluated afresh for every job,
every pool scanned for every job, the reservation's earliest start found by
re-projecting all running jobs at every candidate time. The optimised
policies must return identical allocations (placements, nodes, wait reasons,
charges) on seeded random snapshots, including ones with long queues, many
running jobs with tied end times, budgets, subsidies and aging.
"""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from gpupool.accounting import BudgetTracker
from gpupool.model import (
    Allocation,
    GpuType,
    Job,
    Org,
    OrgAccount,
    Placement,
    Pool,
    Snapshot,
    WaitReason,
    fit_gang,
)
from gpupool.policies.fifo import (
    Admissions,
    FifoPolicy,
    PoolChoices,
    allowed_pools,
    first_fit,
    free_gpus,
    never_fits,
)
from gpupool.policies.multifactor import VECTOR_FROM, MultifactorPolicy, _Factors
from gpupool.policies.params import Aging, DomainShare, PolicyParams, PoolPlacement
from tests.policies.builders import DEFAULT_NOW, SnapshotBuilder, random_snapshot

# ---------------------------------------------------------------------------
# Reference implementations (plain, slow, obviously following the rules)
# ---------------------------------------------------------------------------


def reference_fifo(snapshot: Snapshot) -> Allocation:
    free, budgets = free_gpus(snapshot), BudgetTracker(snapshot)
    placements, charges, waiting = [], {}, {}
    blocked = False
    for job in sorted(snapshot.pending, key=lambda j: (j.submitted_at, j.id)):
        if never_fits(job, snapshot):
            waiting[job.id] = WaitReason.NEVER_FITS
        elif blocked:
            waiting[job.id] = WaitReason.PRIORITY
        else:
            placed = first_fit(job, allowed_pools(job, snapshot), free, budgets)
            if isinstance(placed, WaitReason):
                waiting[job.id] = placed
                blocked = placed is WaitReason.NO_CAPACITY
            else:
                placements.append(placed[0])
                charges[job.id] = placed[1]
    return Allocation(placements=tuple(placements), waiting=waiting, charges=charges)


def reference_priority(policy: MultifactorPolicy, snapshot: Snapshot, job: Job) -> float:
    def weight(domain: str) -> float:
        if domain in policy.params.domain_weights:
            return policy.params.domain_weights[domain]
        known = snapshot.domains.get(domain)
        return known.weight if known is not None else 1.0

    names = set(snapshot.domains) | {j.domain for j in snapshot.pending}
    weights = {name: weight(name) for name in names}
    total_usage = sum(max(0.0, u) for u in snapshot.usage.values())
    waited_h = max(0.0, snapshot.now - job.submitted_at) / 3600.0
    age = min(1.0, waited_h / policy.max_age_hours) if policy.max_age_hours > 0 else 1.0
    boost = min(policy.params.aging.max_boost, policy.params.aging.per_hour * waited_h)
    domain = (weights[job.domain] + job.priority + boost) / max([1.0, *weights.values()])
    fairshare = 1.0
    if total_usage > 0:
        used = max(0.0, snapshot.usage.get(job.domain, 0.0)) / total_usage
        share = policy.params.shares.get(job.domain)
        if share is not None and share.fraction is not None:
            norm = share.fraction
        else:
            norm = weights[job.domain] / (sum(weights.values()) or 1.0)
        fairshare = 0.0 if norm <= 0 else math.pow(2.0, -used / norm)
    total_gpus = sum(state.pool.gpus for state in snapshot.pools) or 1
    size = min(1.0, job.gpus / total_gpus)
    if policy.favor_small:
        size = 1.0 - size
    return sum(
        {
            "age": policy.age_weight * age,
            "domain": policy.domain_weight * domain,
            "fairshare": policy.fairshare_weight * fairshare,
            "size": policy.size_weight * size,
        }.values()
    )


def reference_multifactor(policy: MultifactorPolicy, snapshot: Snapshot) -> Allocation:
    now = snapshot.now
    free, budgets = free_gpus(snapshot), BudgetTracker(snapshot)
    ends = [
        (max(r.expected_end, now), r.placement.pool, r.placement.nodes) for r in snapshot.running
    ]

    def end_of(job: Job, pool_name: str) -> float:
        pool = snapshot.pool_state(pool_name).pool
        return now + job.runtime_hours_on(snapshot.gpu_types[pool.gpu_type]) * 3600.0

    def projected(pool: Pool, at: float) -> list[int]:
        out = list(free[pool.name])
        for end, name, nodes in ends:
            if name == pool.name and end <= at:
                for index, taken in nodes:
                    out[index] += taken
        return out

    def earliest(job: Job, pool: Pool) -> float | None:
        for at in sorted({end for end, name, _ in ends if name == pool.name}):
            if fit_gang(projected(pool, at), job.gpus, pool.gpus_per_node):
                return at
        return None

    priority = {job.id: reference_priority(policy, snapshot, job) for job in snapshot.pending}
    order = sorted(snapshot.pending, key=lambda j: (-priority[j.id], j.submitted_at, j.id))
    placements, charges, waiting = [], {}, {}
    reservation = None  # (job, pool, start)
    blocked = False
    for job in order:
        if never_fits(job, snapshot):
            waiting[job.id] = WaitReason.NEVER_FITS
            continue
        if blocked:
            waiting[job.id] = WaitReason.PRIORITY
            continue
        check = None
        if reservation is not None:
            r_job, r_pool, r_start = reservation

            def check(pool, nodes, job=job, r_job=r_job, r_pool=r_pool, r_start=r_start):
                if pool.name != r_pool.name or end_of(job, pool.name) <= r_start:
                    return True
                at_start = projected(pool, r_start)
                for index, taken in nodes:
                    at_start[index] -= taken
                return fit_gang(at_start, r_job.gpus, pool.gpus_per_node) is not None

        placed = first_fit(job, allowed_pools(job, snapshot), free, budgets, check)
        if isinstance(placed, WaitReason):
            waiting[job.id] = placed
            if placed is WaitReason.NO_CAPACITY and reservation is None:
                if not policy.backfill:
                    blocked = True
                    continue
                for pool in allowed_pools(job, snapshot):
                    start = earliest(job, pool)
                    if start is not None and (reservation is None or start < reservation[2]):
                        reservation = (job, pool, start)
            continue
        placements.append(placed[0])
        charges[job.id] = placed[1]
        ends.append((end_of(job, placed[0].pool), placed[0].pool, placed[0].nodes))
    return Allocation(placements=tuple(placements), waiting=waiting, charges=charges)


# ---------------------------------------------------------------------------
# Instances
# ---------------------------------------------------------------------------

# the references try pools by name: so do the policies they check
BY_NAME = PolicyParams(placement=PoolPlacement("name"))
PARAMS = PolicyParams(
    placement=PoolPlacement("name"),
    domain_weights={"medical": 3.0, "education": 2.0},
    shares={"medical": DomainShare(fraction=0.3)},
    aging=Aging(per_hour=0.05, max_boost=1.0),
)

MULTIFACTORS = {
    "default": MultifactorPolicy(params=BY_NAME),
    "params": MultifactorPolicy(params=PARAMS),
    "no-backfill": MultifactorPolicy(params=BY_NAME, backfill=False),
    "favor-small": MultifactorPolicy(params=PARAMS, favor_small=True, max_age_hours=2.0),
    "no-age": MultifactorPolicy(params=PARAMS, max_age_hours=0.0, size_weight=1000.0),
}


def busy_snapshot(seed: int) -> Snapshot:
    """A long queue on a mostly busy platform: many running jobs, many tied end times.

    Gang sizes of 1..32 on 4- and 8-GPU nodes, so reservations, backfill
    refusals and the no-room shortcut all occur; some orgs run out of budget.
    """
    rng = random.Random(seed)
    b = SnapshotBuilder().gpu_type("A100").gpu_type("H100", 2.0).gpu_type("910B", 0.8)
    b.domain("medical", 3.0).domain("education", 2.0).domain("general", 1.0)
    for i, (gpu_type, per_node) in enumerate((("A100", 8), ("H100", 8), ("910B", 4), ("A100", 4))):
        b.pool(f"p{i}", gpu_type, per_node * rng.randint(2, 6), per_node, rng.choice((8, 14, 30)))
    for i in range(6):
        budget = rng.choice((None, None, 200.0, 3000.0))
        b.org(f"org-{i}", ("medical", "education", "general")[i % 3], budget)
    b.pricing(domain_rates={"medical": 0.5}, gpu_type_rates={"910B": 0.4})
    for domain in ("medical", "education", "general"):
        b.usage(domain, rng.choice((0.0, 50.0, 500.0)))
    for _ in range(rng.randint(5, 40)):
        name = f"p{rng.randrange(4)}"
        gpus = rng.choice((1, 2, 4, 8))
        if fit_gang(b._free[name], gpus, b._pools[name].gpus_per_node) is not None:
            b.running(
                gpus, name, org=f"org-{rng.randrange(6)}", ends_in_hours=rng.choice((0.5, 1, 2, 4))
            )
    type_lists = ((), (), ("A100",), ("H100", "910B"), ("910B",))
    for _ in range(rng.randint(20, 120)):
        b.job(
            gpus=rng.choice((1, 1, 2, 4, 4, 8, 12, 16, 32)),
            hours=rng.choice((0.25, 0.5, 1.0, 3.0, 8.0)),
            org=f"org-{rng.randrange(6)}",
            types=rng.choice(type_lists),
            submitted_at=DEFAULT_NOW - rng.randrange(0, 20) * 1800.0,  # ties in arrival time
            priority=rng.choice((0, 0, 0, 1)),
        )
    return b.build()


def snapshots():
    for seed in range(60):
        yield f"random-{seed}", random_snapshot(seed, jobs=30, pools=4, running=8)
    for seed in range(60):
        yield f"busy-{seed}", busy_snapshot(seed)


CASES = list(snapshots())


def same(got: Allocation, want: Allocation) -> None:
    assert got.placements == want.placements
    assert dict(got.waiting) == dict(want.waiting)
    assert dict(got.charges) == dict(want.charges)


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


def test_the_instances_exercise_every_path():
    """Without waits of every kind and backfill refusals the comparison would prove little."""
    queues = [len(snapshot.pending) for _, snapshot in CASES]
    assert min(queues) < VECTOR_FROM <= max(queues)  # both ways of ordering the queue
    reasons = set()
    started = refused_by_reservation = 0
    for _, snapshot in CASES:
        for variant, policy in MULTIFACTORS.items():
            allocation = policy.allocate(snapshot)
            reasons |= set(allocation.waiting.values())
            started += len(allocation.placements)
            if variant == "default":  # with backfill, PRIORITY means the reservation refused
                refused_by_reservation += list(allocation.waiting.values()).count(
                    WaitReason.PRIORITY
                )
    assert reasons == set(WaitReason) - {WaitReason.QUOTA}
    assert started > 1000
    assert refused_by_reservation > 50


@pytest.mark.parametrize(("name", "snapshot"), CASES, ids=[name for name, _ in CASES])
def test_fifo_matches_the_reference(name, snapshot):
    same(FifoPolicy(params=BY_NAME).allocate(snapshot), reference_fifo(snapshot))


@pytest.mark.parametrize("variant", sorted(MULTIFACTORS))
def test_multifactor_matches_the_reference(variant):
    policy = MULTIFACTORS[variant]
    for name, snapshot in CASES:
        got, want = policy.allocate(snapshot), reference_multifactor(policy, snapshot)
        assert got.placements == want.placements, name
        assert dict(got.waiting) == dict(want.waiting), name
        assert dict(got.charges) == dict(want.charges), name


@pytest.mark.parametrize("variant", sorted(MULTIFACTORS))
def test_priorities_are_bit_identical_to_the_factor_sum(variant):
    policy = MULTIFACTORS[variant]
    for _, snapshot in CASES[::5]:
        vectorised = _Factors(policy, snapshot).priorities(snapshot.pending).tolist()
        for job, fast in zip(snapshot.pending, vectorised, strict=True):
            want = reference_priority(policy, snapshot, job)
            assert policy.factors(snapshot, job)["priority"] == want
            assert fast == want


def test_a_larger_gang_is_not_tried_once_a_smaller_one_found_no_room():
    # 3 + 3 GPUs free on two 4-GPU nodes: the 8-GPU gang (largest, so first) and the
    # 4-GPU gang find no room, the 2-GPU gang starts on node 0 (best fit, lowest index).
    snapshot = (
        SnapshotBuilder()
        .pool("p", "A100", 8, per_node=4, free_per_node=[3, 3])
        .job(4, id=1)
        .job(8, id=2)
        .job(2, id=3)
        .build()
    )
    allocation = MultifactorPolicy().allocate(snapshot)
    assert allocation.placements == (Placement(3, "p", ((0, 2),)),)
    assert allocation.waiting == {1: WaitReason.NO_CAPACITY, 2: WaitReason.NO_CAPACITY}


@pytest.mark.parametrize("gpus", [0, 1, 3, 4, 7, 8, 12, 31])
@pytest.mark.parametrize("per_node", [1, 4, 8])
def test_largest_gang_is_exactly_what_an_empty_pool_takes(gpus, per_node):
    # pools with whole nodes, a partial last node, only a partial node, or no GPUs
    snapshot = SnapshotBuilder().pool("a", "A100", gpus, per_node).pool("b", "H100", 2, 4).build()
    pool = snapshot.pool_state("a").pool
    choices = PoolChoices(snapshot)
    largest = choices.largest_gang(("A100",))
    for gang in range(0, 40):
        fits_empty = fit_gang(pool.node_sizes(), gang, per_node) is not None
        assert fits_empty == (1 <= gang <= largest), (gang, largest)
    assert choices.largest_gang(()) == max(largest, 2)
    assert choices.largest_gang(("H20",)) == 0


def test_a_blocked_queue_still_marks_the_jobs_that_never_fit():
    snapshot = (
        SnapshotBuilder()
        .pool("a", "A100", 16, 8, free_per_node=[0, 2])
        .pool("h", "H100", 4, 4)
        .job(8, id=1, types=("A100",))  # blocks the queue
        .job(2, id=2)
        .job(24, id=3)
        .job(8, id=4, types=("H100",))
        .job(4, id=5, types=("H100",))
        .build()
    )
    allocation = FifoPolicy().allocate(snapshot)
    assert allocation.placements == ()
    assert allocation.waiting == {
        1: WaitReason.NO_CAPACITY,
        2: WaitReason.PRIORITY,
        3: WaitReason.NEVER_FITS,
        4: WaitReason.NEVER_FITS,
        5: WaitReason.PRIORITY,
    }


def test_an_org_refused_a_job_is_refused_dearer_ones_without_a_quote():
    # budget 100 at 10 per GPU-hour: job 1 (80) is admitted, 2 (30) refused with 20 left;
    # 3 (also 30) and 4 (40) are refused without asking the tracker; 5 (10) is admitted.
    snapshot = (
        SnapshotBuilder()
        .pool("p", "A100", 32, 8)
        .org("lab", "general", 100.0)
        .job(8, 1.0, org="lab", id=1)
        .job(3, 1.0, org="lab", id=2)
        .job(3, 1.0, org="lab", id=3)
        .job(4, 1.0, org="lab", id=4)
        .job(1, 1.0, org="lab", id=5)
        .build()
    )
    admissions = Admissions(snapshot)
    asked = []
    tracker_admit = admissions.tracker.admit
    admissions.tracker.admit = lambda job, pool: asked.append(job.id) or tracker_admit(job, pool)
    pool = snapshot.pools[0].pool
    admitted = [admissions.admit(job, pool) is not None for job in snapshot.pending]
    assert admitted == [True, False, False, False, True]
    assert asked == [1, 2, 5]
    allocation = FifoPolicy().allocate(snapshot)
    assert allocation.started_ids == {1, 5}
    assert allocation.waiting == {2: WaitReason.BUDGET, 3: WaitReason.BUDGET, 4: WaitReason.BUDGET}


@pytest.mark.parametrize("policy", [FifoPolicy(), MultifactorPolicy()], ids=["fifo", "multifactor"])
def test_an_org_out_of_budget_waits_on_budget_without_a_quote_under_books(policy, monkeypatch):
    # A 50% programme; lab (budget 100) already paid its 100 this quarter: each of its
    # 4-GPU, 1-hour jobs (40.00, of which it would pay 20.00) is refused on the floor
    # of what it would pay alone, before any gang search or quote; uni still starts.
    from gpupool.accounting import Books
    from gpupool.accounting.programmes import Programme

    orgs = [Org("lab", "general", 100.0), Org("uni", "education", 1000.0)]
    books = Books([Programme("half", rate=0.5)], orgs=orgs)
    a100 = GpuType("A100", "nvidia", 80, 1.0)
    pool = Pool("p", "site-a", "A100", 32, 8, 10.0)
    books.charge(Job(99, "lab", "general", 20, 1.0, 0.0), pool, a100, 0.0, 3600.0)
    builder = SnapshotBuilder().pool("p", "A100", 32, 8).org("lab", "general", 100.0)
    builder.org("uni", "education", 1000.0)
    for job_id in (1, 2, 3):
        builder.job(4, 1.0, org="lab", id=job_id)
    snapshot = builder.job(4, 1.0, org="uni", id=4).build()
    snapshot = dataclasses.replace(snapshot, pricing=books, accounts=books.accounts(0.0))
    quoted = []
    plan = Books._plan

    def counting(self, job, *args, **kwargs):
        quoted.append(job.id)
        return plan(self, job, *args, **kwargs)

    import gpupool.policies.fifo as fifo_module

    searched = []
    gang = fifo_module.fit_gang

    def searching(free, gpus, per_node):
        searched.append(gpus)
        return gang(free, gpus, per_node)

    monkeypatch.setattr(Books, "_plan", counting)
    monkeypatch.setattr(fifo_module, "fit_gang", searching)
    allocation = policy.allocate(snapshot)
    assert allocation.started_ids == {4}
    assert allocation.waiting == {1: WaitReason.BUDGET, 2: WaitReason.BUDGET, 3: WaitReason.BUDGET}
    assert not {1, 2, 3} & set(quoted)
    # uni's job alone is searched for a gang (whether a gang can ever fit a pool is
    # answered in closed form by Pool.fits_empty, with no search)
    assert searched == [4]


def test_refused_everywhere_under_books_only_when_every_pool_refuses():
    # random programmes and vouchers (the accounting invariants' generator), random
    # budgets left: whenever the one-floor test says no pool can take a job, a full
    # admission on each pool must refuse it too
    refused = sum(_refusals_confirmed(random.Random(seed)) for seed in range(10))
    assert refused > 0  # the floor is not vacuous


def _refusals_confirmed(rng: random.Random) -> int:
    from tests.accounting import test_invariants as generated

    books = generated.random_books(rng)
    pools = list(generated.POOLS.values())
    builder = SnapshotBuilder().now(generated.START)
    for gpu_type in generated.TYPES.values():
        builder.gpu_type(gpu_type.name, gpu_type.speed)
    for p in pools:
        builder.pool(p.name, p.gpu_type, p.gpus, p.gpus_per_node, p.price_per_gpu_hour)
    accounts = {o.name: OrgAccount(o.name, rng.uniform(0, 400)) for o in generated.ORGS}
    snapshot = dataclasses.replace(builder.build(), pricing=books, accounts=accounts)
    refused = 0
    for job_id in range(120):
        org = rng.choice(generated.ORGS)
        job = Job(job_id, org.name, org.domain, rng.randint(1, 8), rng.uniform(0.1, 60), 0.0)
        if BudgetTracker(snapshot).refused_everywhere(job, pools):
            refused += 1
            assert all(BudgetTracker(snapshot).admit(job, pool) is None for pool in pools)
    return refused
