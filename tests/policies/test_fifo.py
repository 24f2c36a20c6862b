"""FIFO: hand-worked cases, each a tiny platform whose outcome is fixed by the rules."""

from __future__ import annotations

from gpupool.model import Charge, Placement, WaitReason
from gpupool.policies.fifo import FifoPolicy
from gpupool.policies.params import PolicyParams
from tests.policies.builders import SnapshotBuilder, check_invariants

NO_CAPACITY, PRIORITY = WaitReason.NO_CAPACITY, WaitReason.PRIORITY


def allocate(builder: SnapshotBuilder):
    snapshot = builder.build()
    allocation = FifoPolicy().allocate(snapshot)
    check_invariants(snapshot, allocation)
    return allocation


def test_first_blocked_job_blocks_every_later_one_even_if_they_fit():
    # one 8-GPU node: A takes 6, B (4) does not fit, C (2) would fit but must not pass B
    allocation = allocate(SnapshotBuilder().pool("p", "A100", 8).job(6).job(4).job(2))
    assert allocation.placements == (Placement(1, "p", ((0, 6),)),)
    assert allocation.waiting == {2: NO_CAPACITY, 3: PRIORITY}


def test_order_is_arrival_time_then_id_not_id_alone():
    builder = SnapshotBuilder().pool("p", "A100", 8)
    builder.job(8, id=1, submitted_at=500.0).job(8, id=2, submitted_at=100.0)
    builder.job(8, id=3, submitted_at=100.0)
    allocation = allocate(builder)
    assert allocation.placements == (Placement(2, "p", ((0, 8),)),)
    assert allocation.waiting == {3: NO_CAPACITY, 1: PRIORITY}


def test_job_larger_than_every_allowed_pool_does_not_block():
    builder = SnapshotBuilder().pool("a", "A100", 16).pool("h", "H100", 8)
    builder.job(12, types=["H100"]).job(4)
    allocation = allocate(builder)
    assert allocation.waiting == {1: WaitReason.NEVER_FITS}
    assert allocation.placements == (Placement(2, "a", ((0, 4),)),)


def test_job_of_an_org_out_of_budget_waits_without_blocking():
    # 1 GPU x 1 h x 10/GPU-hour = 10 > budget 5
    builder = SnapshotBuilder().pool("p", "A100", 8).org("poor", "general", budget=5.0)
    builder.job(1, org="poor").job(1, org="rich")
    allocation = allocate(builder)
    assert allocation.waiting == {1: WaitReason.BUDGET}
    assert allocation.started_ids == {2}


def test_only_allowed_gpu_types_and_first_pool_by_name():
    builder = SnapshotBuilder().pool("b-h100", "H100", 8).pool("a-a100", "A100", 8)
    builder.job(2, types=["H100"]).job(2)
    allocation = allocate(builder)
    assert allocation.placements == (
        Placement(1, "b-h100", ((0, 2),)),
        Placement(2, "a-a100", ((0, 2),)),
    )


def test_multi_node_gang_takes_whole_free_nodes_only():
    # node 1 has 5 GPUs busy: a 16-GPU gang takes nodes 0 and 2 whole
    builder = SnapshotBuilder().pool("p", "A100", 24, free_per_node=[8, 3, 8]).job(16).job(3)
    allocation = allocate(builder)
    assert allocation.placements == (
        Placement(1, "p", ((0, 8), (2, 8))),
        Placement(2, "p", ((1, 3),)),
    )


def test_charges_apply_stacked_subsidy_rates_and_the_org_cap():
    # H100 at speed 2: 8 GPUs x 2 h / 2 = 8 GPU-hours x 20 = 160.
    # rate = 1 - (1 - 0.5) x (1 - 0.3) = 0.65 -> subsidy 104, capped at 100 for org-b.
    builder = (
        SnapshotBuilder()
        .gpu_type("H100", speed=2)
        .pool("p", "H100", 16, per_node=8, price=20)
        .org("org-a", "medical", budget=1000)
        .org("org-b", "medical", budget=1000, subsidy_cap=100)
        .pricing(domain_rates={"medical": 0.5}, gpu_type_rates={"H100": 0.3})
    )
    builder.job(8, hours=2, org="org-a").job(8, hours=2, org="org-b")
    allocation = allocate(builder)
    assert allocation.charges[1] == Charge(cost=160.0, subsidy=104.0, org_pays=56.0)
    assert allocation.charges[2] == Charge(cost=160.0, subsidy=100.0, org_pays=60.0)


def test_default_construction_and_with_params_agree():
    builder = SnapshotBuilder().pool("p", "A100", 8).job(4).job(4).job(1)
    snapshot = builder.build()
    assert FifoPolicy().allocate(snapshot) == FifoPolicy(PolicyParams(seed=7)).allocate(snapshot)
