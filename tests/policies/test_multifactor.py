"""Multifactor: factor arithmetic worked out by hand, then priority order and EASY backfill."""

from __future__ import annotations

import dataclasses
import math

import pytest

from gpupool.model import Placement, WaitReason
from gpupool.policies.multifactor import MultifactorPolicy, multifactor_factors
from gpupool.policies.params import Aging, DomainShare, PolicyParams
from tests.policies.builders import DEFAULT_NOW, SnapshotBuilder, check_invariants

HOUR = 3600.0
NO_CAPACITY, PRIORITY = WaitReason.NO_CAPACITY, WaitReason.PRIORITY


def allocate(builder: SnapshotBuilder, policy: MultifactorPolicy | None = None):
    snapshot = builder.build()
    allocation = (policy or MultifactorPolicy()).allocate(snapshot)
    check_invariants(snapshot, allocation)
    return allocation


def factor_platform() -> SnapshotBuilder:
    # 32 GPUs; weights medical 3, general 1; usage 30 : 10 of 40 GPU-hours
    return (
        SnapshotBuilder()
        .pool("p", "A100", 32)
        .domain("medical", 3.0)
        .domain("general", 1.0)
        .org("hospital", "medical")
        .org("lab", "general")
        .usage("medical", 30.0)
        .usage("general", 10.0)
        .job(8, org="hospital", submitted_at=DEFAULT_NOW - 84 * HOUR)
        .job(1, org="lab", submitted_at=DEFAULT_NOW)
    )


def test_factors_weighted_like_sprio():
    snapshot = factor_platform().build()
    medical, general = snapshot.pending
    # age 84/168 = 0.5; domain 3/3; fair-share U = 0.75, S = 3/4 -> 2^-1; size 8/32
    assert multifactor_factors(snapshot, medical) == pytest.approx(
        {"age": 500.0, "domain": 1000.0, "fairshare": 500.0, "size": 25.0, "priority": 2025.0}
    )
    # age 0; domain 1/3; U = 0.25, S = 1/4 -> 2^-1; size 1/32
    assert multifactor_factors(snapshot, general) == pytest.approx(
        {
            "age": 0.0,
            "domain": 1000 / 3,
            "fairshare": 500.0,
            "size": 3.125,
            "priority": 1000 / 3 + 503.125,
        }
    )


def test_guaranteed_fraction_is_the_fair_share_and_aging_adds_to_domain_weight():
    params = PolicyParams(
        shares={"medical": DomainShare(fraction=0.5)}, aging=Aging(per_hour=0.05, max_boost=2.0)
    )
    policy = MultifactorPolicy(params=params, age_weight=0.0, size_weight=0.0)
    snapshot = factor_platform().build()
    factors = multifactor_factors(snapshot, snapshot.pending[0], policy)
    # U/S = 0.75 / 0.5; aging min(2.0, 0.05 x 84) = 2.0 -> (3 + 2) / 3
    assert factors["fairshare"] == pytest.approx(1000 * 2**-1.5)
    assert factors["domain"] == pytest.approx(1000 * 5 / 3)


def test_no_usage_at_all_gives_full_fair_share_and_favor_small_inverts_size():
    snapshot = SnapshotBuilder().pool("p", "A100", 16).job(4).build()
    factors = multifactor_factors(
        snapshot, snapshot.pending[0], MultifactorPolicy(favor_small=True)
    )
    assert factors["fairshare"] == 1000.0
    assert factors["size"] == pytest.approx(100 * (1 - 4 / 16))


def test_admin_boost_raises_priority_by_domain_weight_units():
    snapshot = SnapshotBuilder().domain("medical", 2.0).pool("p", "A100", 8).job(1).build()
    job = snapshot.pending[0]
    base = multifactor_factors(snapshot, job)
    boosted = multifactor_factors(snapshot, dataclasses.replace(job, priority=1))
    # the largest domain weight is 2: one unit of boost is 1/2 of domain_weight 1000
    assert boosted["priority"] - base["priority"] == pytest.approx(500.0)


def test_higher_priority_domain_starts_first_despite_later_arrival():
    builder = (
        SnapshotBuilder()
        .pool("p", "A100", 8)
        .domain("medical", 3.0)
        .org("lab", "general")
        .org("hospital", "medical")
        .job(8, org="lab", submitted_at=DEFAULT_NOW - 2 * HOUR)
        .job(8, org="hospital", submitted_at=DEFAULT_NOW - 1 * HOUR)
    )
    allocation = allocate(builder)
    assert allocation.started_ids == {2}
    assert allocation.waiting == {1: NO_CAPACITY}


def backfill_platform(small_hours: float) -> SnapshotBuilder:
    # one 8-GPU node, 6 busy until +2 h; the medical 8-GPU job is on top and reserved at +2 h
    return (
        SnapshotBuilder()
        .pool("p", "A100", 8)
        .domain("medical", 3.0)
        .org("hospital", "medical")
        .org("lab", "general")
        .running(6, "p", org="lab", ends_in_hours=2.0)
        .job(8, org="hospital", id=10)
        .job(2, hours=small_hours, org="lab", id=11)
    )


def test_small_job_that_ends_before_the_reservation_backfills():
    allocation = allocate(backfill_platform(small_hours=1.5))
    assert allocation.placements == (Placement(11, "p", ((0, 2),)),)
    assert allocation.waiting == {10: NO_CAPACITY}


def test_small_job_that_would_delay_the_reserved_job_waits():
    allocation = allocate(backfill_platform(small_hours=3.0))
    assert allocation.placements == ()
    assert allocation.waiting == {10: NO_CAPACITY, 11: PRIORITY}


def test_without_backfill_the_top_blocked_job_blocks_everything():
    policy = MultifactorPolicy(backfill=False)
    allocation = allocate(backfill_platform(small_hours=0.5), policy)
    assert allocation.waiting == {10: NO_CAPACITY, 11: PRIORITY}


def test_long_job_may_use_gpus_the_reservation_does_not_need():
    # node 0 frees at +2 h (reserved for the 8-GPU job); node 1 has 2 GPUs free until +10 h
    builder = (
        SnapshotBuilder()
        .pool("p", "A100", 16)
        .domain("medical", 3.0)
        .org("hospital", "medical")
        .running(8, "p", ends_in_hours=2.0)
        .running(6, "p", ends_in_hours=10.0)
        .job(8, org="hospital", id=10)
        .job(2, hours=5.0, id=11)
    )
    allocation = allocate(builder)
    assert allocation.placements == (Placement(11, "p", ((1, 2),)),)


def test_reservation_goes_to_the_pool_that_frees_first():
    # pa frees at +5 h, pb at +1 h: the big job is reserved on pb at +1 h.
    # 21 (3 h) runs on pa, untouched by the reservation; 22 (3 h) fits on pb only and
    # would delay it; 23 (0.5 h) ends before it.
    builder = (
        SnapshotBuilder()
        .pool("pa", "A100", 8)
        .pool("pb", "A100", 8)
        .domain("medical", 3.0)
        .org("hospital", "medical")
        .running(6, "pa", ends_in_hours=5.0)
        .running(6, "pb", ends_in_hours=1.0)
        .job(8, org="hospital", id=20)
        .job(2, hours=3.0, id=21)
        .job(2, hours=3.0, id=22)
        .job(2, hours=0.5, id=23)
    )
    allocation = allocate(builder)
    assert allocation.placements == (
        Placement(21, "pa", ((0, 2),)),
        Placement(23, "pb", ((0, 2),)),
    )
    assert allocation.waiting == {20: NO_CAPACITY, 22: PRIORITY}


def test_job_started_this_round_counts_towards_the_reservation_time():
    # node 0 busy until +4 h. Job 1 starts on node 1 (6 GPUs, ends +1 h), so job 2 (8 GPUs)
    # is reserved on node 1 at +1 h, not on node 0 at +4 h. Job 3 (2 GPUs, 2 h) fits in
    # node 1's last 2 GPUs but would still hold them at +1 h: it waits.
    builder = (
        SnapshotBuilder()
        .pool("p", "A100", 16)
        .running(8, "p", ends_in_hours=4.0)
        .job(6, hours=1.0, id=1)
        .job(8, hours=1.0, id=2)
        .job(2, hours=2.0, id=3)
    )
    allocation = allocate(builder, MultifactorPolicy(size_weight=0.0))
    assert allocation.placements == (Placement(1, "p", ((1, 6),)),)
    assert allocation.waiting == {2: NO_CAPACITY, 3: PRIORITY}


def test_budget_and_never_fitting_jobs_neither_reserve_nor_block():
    builder = (
        SnapshotBuilder()
        .pool("p", "A100", 8)
        .domain("medical", 3.0)
        .org("hospital", "medical", budget=1.0)
        .job(16, org="hospital", id=1)
        .job(4, org="hospital", id=2)
        .job(8, hours=10.0, id=3)
    )
    allocation = allocate(builder)
    assert allocation.waiting == {1: WaitReason.NEVER_FITS, 2: WaitReason.BUDGET}
    assert allocation.started_ids == {3}


def test_factor_breakdown_sums_to_priority():
    snapshot = factor_platform().build()
    for job in snapshot.pending:
        factors = multifactor_factors(snapshot, job, MultifactorPolicy(size_weight=7.0))
        parts = factors["age"] + factors["domain"] + factors["fairshare"] + factors["size"]
        assert math.isclose(parts, factors["priority"])
