"""The ``priority`` policy: hand-worked optima, limits, preemption, random-instance invariants."""

from __future__ import annotations

import dataclasses
import math

import pytest

from benchmarks.priority_bound import priority_bound
from gpupool.model import WaitReason
from gpupool.policies._borrowing import domain_limits
from gpupool.policies._classes import (
    allowed_groups,
    job_classes,
    pool_groups,
    priorities,
    start_order,
)
from gpupool.policies.params import DomainShare, PolicyParams, Preemption
from gpupool.policies.priority import PriorityPolicy
from tests.policies.builders import SnapshotBuilder, check_invariants, random_snapshot


def bounded(policy: PriorityPolicy, snapshot, **options):
    """The policy's allocation with the bound benchmarks report (benchmarks/priority_bound.py)."""
    allocation = policy.allocate(snapshot)
    return dataclasses.replace(
        allocation, bound=priority_bound(policy, snapshot, allocation, **options)
    )


def pool_of(allocation, job_id):
    return next(p.pool for p in allocation.placements if p.job_id == job_id)


def test_restricted_job_gets_the_fast_gpus_when_the_flexible_one_can_go_elsewhere():
    # Values (priority x GPUs x speed): job 1 (weight 1.5, any type) on H100 = 24,
    # on A100 = 12; job 2 (weight 1, H100 only) on H100 = 16. Greedy by priority
    # would give 24; the optimum is 12 + 16 = 28.
    snapshot = (
        SnapshotBuilder()
        .gpu_type("H100", 2.0)
        .gpu_type("A100", 1.0)
        .pool("fast", "H100", 8)
        .pool("slow", "A100", 8)
        .domain("science", 1.5)
        .domain("general", 1.0)
        .org("org-s", "science")
        .org("org-g", "general")
        .job(8, org="org-s", id=1)
        .job(8, org="org-g", types=["H100"], id=2)
        .build()
    )
    allocation = bounded(PriorityPolicy(), snapshot)
    check_invariants(snapshot, allocation)
    assert pool_of(allocation, 1) == "slow"
    assert pool_of(allocation, 2) == "fast"
    assert allocation.objective == pytest.approx(28.0)
    assert allocation.bound == pytest.approx(28.0, rel=1e-3)


def test_priority_order_wins_over_a_bigger_lower_priority_gang():
    # Two 8-GPU nodes. Job 1: 16 GPUs, weight 2.5 -> 40. Job 2: 8 GPUs, weight 3 -> 24,
    # jobs 3 and 4: 4 GPUs, weight 1 -> 4 each. Job 1 alone would be worth more (40 > 32),
    # but job 2 fits and has the higher priority, so it starts: who starts follows
    # priority order (docs/policies-design.md), the LP only decides where.
    snapshot = (
        SnapshotBuilder()
        .pool("p", "A100", 16, per_node=8)
        .domain("big", 2.5)
        .domain("top", 3.0)
        .domain("low", 1.0)
        .org("o-big", "big")
        .org("o-top", "top")
        .org("o-low", "low")
        .job(16, org="o-big", id=1)
        .job(8, org="o-top", id=2)
        .job(4, org="o-low", id=3)
        .job(4, org="o-low", id=4)
        .build()
    )
    allocation = bounded(PriorityPolicy(), snapshot)
    check_invariants(snapshot, allocation)
    assert allocation.started_ids == {2, 3, 4}
    assert allocation.objective == pytest.approx(32.0)
    # the LP relaxation takes job 2 whole and half of job 1: 24 + 20
    assert allocation.bound == pytest.approx(44.0, rel=1e-3)
    assert allocation.waiting == {1: WaitReason.PRIORITY}


def test_a_lower_priority_job_never_takes_gpus_a_higher_one_could_use():
    # One 8-GPU node. Job 1 (weight 1, 4 GPUs) arrived first; job 2 (weight 2, 8 GPUs).
    # Job 2 goes first and takes the node; job 1 waits even though it is older.
    snapshot = (
        SnapshotBuilder()
        .pool("p", "A100", 8)
        .domain("low", 1.0)
        .domain("high", 2.0)
        .org("o-l", "low")
        .org("o-h", "high")
        .job(4, org="o-l", id=1)
        .job(8, org="o-h", id=2)
        .build()
    )
    allocation = PriorityPolicy().allocate(snapshot)
    assert allocation.started_ids == {2}
    assert allocation.waiting == {1: WaitReason.PRIORITY}


def test_an_org_that_cannot_pay_the_best_fit_pool_gets_a_cheaper_one_of_the_group():
    # Two A100 pools of 8-GPU nodes: "dear" (20/GPU-hour) has a node with 4 free, the
    # best fit for a 4-GPU job; "cheap" (10) is empty. 4 GPUs x 1 h: 80 there, 40 here.
    # The org has 50: it starts on "cheap".
    snapshot = (
        SnapshotBuilder()
        .pool("dear", "A100", 8, price=20.0, free_per_node=[4])
        .pool("cheap", "A100", 8, price=10.0)
        .org("o", "general", budget=50.0)
        .job(4, org="o", id=1)
        .build()
    )
    allocation = PriorityPolicy().allocate(snapshot)
    check_invariants(snapshot, allocation)
    assert pool_of(allocation, 1) == "cheap"
    assert allocation.charges[1].org_pays == pytest.approx(40.0)


def test_bound_knows_partly_free_nodes_cannot_hold_big_gangs():
    # Two 8-GPU nodes with 3 free each: 6 free GPUs, but no room for a 4-GPU gang.
    # Job 1: 4 GPUs (weight 1); jobs 2-4: 2 GPUs each (weight 1) -> 2 fit, value 4.
    # Without node rows the LP would count 6 GPUs of value 1 (bound 6).
    snapshot = SnapshotBuilder().pool("p", "A100", 16, free_per_node=[3, 3])
    snapshot = snapshot.job(4, id=1).job(2, id=2).job(2, id=3).job(2, id=4).build()
    allocation = bounded(PriorityPolicy(), snapshot)
    assert allocation.started_ids == {2, 3}
    assert allocation.waiting[1] == WaitReason.NO_CAPACITY
    assert allocation.objective == pytest.approx(4.0)
    assert allocation.bound == pytest.approx(4.0, rel=1e-3)


def test_bound_holds_org_budgets():
    # 16 idle GPUs; the org has 25 left at 10 per GPU-hour: 2.5 GPU-hours of work.
    # Three 1-GPU, 1-hour jobs (weight 1): two start (20), the LP relaxation takes 2.5.
    snapshot = SnapshotBuilder().pool("p", "A100", 16).org("o", "general", budget=25.0)
    snapshot = snapshot.job(1, org="o").job(1, org="o").job(1, org="o").build()
    allocation = bounded(PriorityPolicy(), snapshot)
    assert allocation.started_ids == {1, 2}
    assert allocation.objective == pytest.approx(2.0)
    assert allocation.bound == pytest.approx(2.5, rel=1e-3)


def test_borrowing_limit_caps_a_domain_and_says_quota():
    # 16 GPUs of speed 1; med's idle guarantee is 12, the 4 others belong to nobody.
    # edu has no guarantee and may borrow 25% of the platform = 4 of med's GPUs: 8 in all.
    snapshot = SnapshotBuilder().pool("p", "A100", 16).org("o", "edu")
    for _ in range(6):
        snapshot.job(2, org="o")
    snapshot = snapshot.build()
    shares = {
        "edu": DomainShare(fraction=0.0, borrow_limit=0.25),
        "med": DomainShare(fraction=0.75),
    }
    allocation = PriorityPolicy(PolicyParams(shares=shares)).allocate(snapshot)
    check_invariants(snapshot, allocation)
    assert allocation.started_ids == {1, 2, 3, 4}
    assert allocation.waiting == {5: WaitReason.QUOTA, 6: WaitReason.QUOTA}


def test_budget_admits_only_what_the_org_can_pay():
    # 1 GPU x 1 h x 10/GPU-hour = 10 per job; the org has 15 left.
    snapshot = (
        SnapshotBuilder()
        .pool("p", "A100", 8)
        .org("poor", "general", budget=15.0)
        .job(1, org="poor", id=1)
        .job(1, org="poor", id=2)
        .build()
    )
    allocation = PriorityPolicy().allocate(snapshot)
    check_invariants(snapshot, allocation)
    assert allocation.started_ids == {1}
    assert allocation.charges[1].org_pays == pytest.approx(10.0)
    assert allocation.waiting == {2: WaitReason.BUDGET}


def test_preemption_stops_much_lower_priority_work_only_when_enabled():
    builder = (
        SnapshotBuilder()
        .pool("p", "A100", 8)
        .domain("urgent", 3.0)
        .domain("batch", 1.0)
        .org("o-u", "urgent")
        .org("o-b", "batch")
        .running(8, "p", org="o-b", id=50)
        .job(8, org="o-u", id=1)
    )
    snapshot = builder.build()
    off = PriorityPolicy().allocate(snapshot)
    assert off.preempt == () and off.waiting == {1: WaitReason.NO_CAPACITY}
    preempting = PolicyParams(preemption=Preemption(True, min_gap=1.0, min_run_minutes=0))
    on = bounded(PriorityPolicy(preempting), snapshot)
    check_invariants(snapshot, on)
    assert on.preempt == (50,) and on.started_ids == {1}
    assert on.objective <= on.bound + 1e-9
    too_close = PolicyParams(preemption=Preemption(True, min_gap=2.5, min_run_minutes=0))
    assert PriorityPolicy(too_close).allocate(snapshot).preempt == ()


def test_a_gang_larger_than_any_allowed_pool_never_fits():
    snapshot = SnapshotBuilder().pool("p", "A100", 16).job(32, id=1).job(4, id=2).build()
    allocation = PriorityPolicy().allocate(snapshot)
    assert allocation.waiting == {1: WaitReason.NEVER_FITS}
    assert allocation.started_ids == {2}


@pytest.mark.parametrize("preemption", [False, True])
def test_invariants_bound_and_determinism_on_random_instances(preemption):
    params = PolicyParams(preemption=Preemption(preemption, min_gap=0.5, min_run_minutes=0))
    policy = PriorityPolicy(params)
    for seed in range(60):
        snapshot = random_snapshot(seed, jobs=15, pools=4)
        allocation = bounded(policy, snapshot)
        check_invariants(snapshot, allocation)
        assert allocation.objective <= allocation.bound + 1e-6, f"seed {seed}"
        again = dataclasses.replace(allocation, bound=None)
        assert policy.allocate(snapshot) == again, f"seed {seed}: not deterministic"


@pytest.mark.parametrize("preemption", [False, True])
def test_raising_a_started_jobs_priority_always_keeps_it_started(preemption):
    """Exact, by construction (docs/policies-design.md): no tolerance."""
    policy = PriorityPolicy(
        PolicyParams(preemption=Preemption(preemption, min_gap=0.5, min_run_minutes=0))
    )
    raises = 0
    for seed in range(24):
        snapshot = random_snapshot(seed, jobs=15, pools=4, budgets=seed % 4 != 0)
        started = policy.allocate(snapshot).started_ids
        for job_id in sorted(started):
            for boost in (1, 3):
                pending = tuple(
                    dataclasses.replace(j, priority=j.priority + boost) if j.id == job_id else j
                    for j in snapshot.pending
                )
                after = policy.allocate(dataclasses.replace(snapshot, pending=pending))
                assert job_id in after.started_ids, f"seed {seed}: job {job_id} +{boost}"
                raises += 1
    assert raises > 200


def test_raising_a_domain_weight_keeps_its_hand_worked_job_started():
    # From the first test: job 2 (general) starts; a heavier "general" must keep it.
    base = (
        SnapshotBuilder()
        .gpu_type("H100", 2.0)
        .gpu_type("A100", 1.0)
        .pool("fast", "H100", 8)
        .pool("slow", "A100", 8)
        .org("org-s", "science")
        .org("org-g", "general")
        .job(8, org="org-s", id=1)
        .job(8, org="org-g", types=["H100"], id=2)
        .build()
    )
    for weight in (1.0, 2.0, 5.0):
        params = PolicyParams(domain_weights={"science": 1.5, "general": weight})
        assert 2 in PriorityPolicy(params).allocate(base).started_ids


# ---------------------------------------------------------------------------
# Speed shortcuts must not change what the policy decides (benchmarks/README.md)
# ---------------------------------------------------------------------------


def _plain_job_classes(jobs, prio, allowed, resolution, split_orgs):
    """The straightforward grouping job_classes replaces: a dict of composite keys."""
    buckets = {}
    for job in jobs:
        bucket = math.floor(prio[job.id] / resolution) if resolution > 0 else prio[job.id]
        org = job.org if job.org in split_orgs else ""
        buckets.setdefault((job.domain, org, job.gpus, allowed[job.id], float(bucket)), []).append(
            job
        )
    return [
        (key[0], key[1], key[2], key[3], sum(prio[j.id] for j in members) / len(members),
         [j.id for j in members])
        for key, members in sorted(buckets.items())
    ]  # fmt: skip


@pytest.mark.parametrize("resolution", [0.0, 0.05, 0.25, 1.0])
def test_job_classes_group_like_a_plain_dictionary_on_random_queues(resolution):
    for seed in range(30):
        snapshot = random_snapshot(seed, jobs=40, pools=4)
        params = PolicyParams()
        groups = pool_groups(snapshot)
        limits = domain_limits(snapshot, params)
        prio = priorities(snapshot, params, limits, deficit_boost=1.0, guarantee_boost=1.0)
        allowed = allowed_groups(snapshot.pending, groups)
        jobs = sorted(
            (j for j in snapshot.pending if allowed[j.id]), key=lambda j: start_order(j, prio)
        )
        split = frozenset({"org-0", "org-2"})
        classes = job_classes(jobs, prio, allowed, resolution, split)
        assert [c.index for c in classes] == list(range(len(classes)))
        got = [(c.domain, c.org, c.gpus, c.groups, c.priority, [j.id for j in c.jobs])
               for c in classes]  # fmt: skip
        assert got == _plain_job_classes(jobs, prio, allowed, resolution, split), f"seed {seed}"


def test_every_bucket_width_of_the_bound_still_bounds_the_objective():
    for seed in range(40):
        snapshot = random_snapshot(seed, jobs=25, pools=4)
        fine = bounded(PriorityPolicy(), snapshot, resolution=0.05)
        coarse = bounded(PriorityPolicy(), snapshot, resolution=1.0)
        assert min(fine.bound, coarse.bound) >= fine.objective - 1e-6, f"seed {seed}"


def test_when_every_job_starts_on_its_fastest_type_the_bound_is_the_objective():
    # Job 1 (4 GPUs, weight 2) and job 2 (8 GPUs, H100 or A100): both fit on H100.
    # Values 2 x 4 x 2 + 1 x 8 x 2 = 32: nothing can do better, and no LP is needed.
    snapshot = (
        SnapshotBuilder()
        .gpu_type("H100", 2.0)
        .gpu_type("A100", 1.0)
        .pool("fast", "H100", 16)
        .pool("slow", "A100", 8)
        .domain("top", 2.0)
        .org("org-t", "top")
        .job(4, org="org-t", id=1)
        .job(8, id=2)
        .build()
    )
    allocation = bounded(PriorityPolicy(), snapshot)
    assert {p.pool for p in allocation.placements} == {"fast"}
    assert allocation.objective == pytest.approx(32.0)
    assert allocation.bound == allocation.objective


def test_nothing_allowed_anywhere_waits_never_fits_with_a_zero_bound():
    snapshot = SnapshotBuilder().pool("p", "A100", 8).job(16, id=1).job(4, types=["H100"], id=2)
    allocation = bounded(PriorityPolicy(), snapshot.build())
    assert allocation.waiting == {1: WaitReason.NEVER_FITS, 2: WaitReason.NEVER_FITS}
    assert (allocation.placements, allocation.objective, allocation.bound) == ((), 0.0, 0.0)


def test_a_shape_that_fits_nowhere_is_remembered_until_preemption_frees_gpus():
    # One 8-GPU node, fully used by a low-priority running job. Pending: a 4-GPU job of
    # a much heavier domain, then a 4-GPU job of the low domain. The first finds no room
    # (its shape is remembered as fitting nowhere), preempts, and takes half the node;
    # the second must see the other half: the memory is dropped when GPUs come back.
    snapshot = (
        SnapshotBuilder()
        .pool("p", "A100", 8)
        .domain("low", 1.0)
        .domain("high", 5.0)
        .org("o-low", "low")
        .org("o-high", "high")
        .running(8, "p", org="o-low", id=10)
        .job(4, org="o-high", id=1)
        .job(4, org="o-low", id=2)
        .build()
    )
    params = PolicyParams(preemption=Preemption(True, min_gap=1.0, min_run_minutes=0))
    allocation = PriorityPolicy(params).allocate(snapshot)
    check_invariants(snapshot, allocation)
    assert allocation.preempt == (10,)
    assert allocation.started_ids == {1, 2}
    assert allocation.waiting == {}


def test_time_limit_s_reaches_the_plan_lp():
    """Out of solver time the round has no plan: the greedy order alone puts job 1 on the
    H100s and job 2 waits (the plan of the first test gives 12 + 16 instead)."""
    b = SnapshotBuilder().gpu_type("H100", 2.0).gpu_type("A100", 1.0)
    b.pool("fast", "H100", 8).pool("slow", "A100", 8)
    b.domain("science", 1.5).domain("general", 1.0).org("org-s", "science").org("org-g", "general")
    snapshot = b.job(8, org="org-s", id=1).job(8, org="org-g", types=["H100"], id=2).build()
    hurried = PriorityPolicy(PolicyParams(time_limit_s=1e-9))
    allocation = hurried.allocate(snapshot)
    check_invariants(snapshot, allocation)
    assert [(p.job_id, p.pool) for p in allocation.placements] == [(1, "fast")]
    assert allocation.objective == pytest.approx(24.0)
    seeded = PriorityPolicy(PolicyParams(seed=99)).allocate(snapshot)
    assert sorted((p.job_id, p.pool) for p in seeded.placements) == [(1, "slow"), (2, "fast")]
