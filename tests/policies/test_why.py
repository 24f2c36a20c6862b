"""Allocation.why: every policy says, for each job it starts, why it chose that pool.

The pool-order platform (tests/policies/test_pool_order.py) has these list prices
per effective GPU-hour (price / speed): bj-a100 14, bj-h100 15, gz-910b 15,
sh-h20 12.22. The voucher programme pays 70% on Ascend-910B and 30% elsewhere for
hospital (it holds vouchers), so hospital pays per effective GPU-hour:
gz-910b 15 x 0.3 = 4.50; sh-h20 12.22 - 3.67 = 8.55 (cents rounded per charge).
"""

from __future__ import annotations

import pytest

from gpupool.accounting import SubsidyRules
from gpupool.model import Allocation
from gpupool.policies.fairshare import FairSharePolicy
from gpupool.policies.fifo import BY_NAME_WHY, FifoPolicy
from gpupool.policies.multifactor import MultifactorPolicy
from gpupool.policies.params import PolicyParams, Preemption
from gpupool.policies.priority import PriorityPolicy
from tests.policies.builders import SnapshotBuilder, check_invariants, random_snapshot
from tests.policies.test_pool_order import POLICIES, platform, voucher_books, with_pricing

IN_ORDER = "started in priority order; "  # multifactor's prefix when nothing is reserved


def _placed(allocation: Allocation) -> dict[int, str]:
    return {p.job_id: p.pool for p in allocation.placements}


# ---------------------------------------------------------------------------
# fifo and multifactor: the pool order's rule
# ---------------------------------------------------------------------------


def _budget_platform() -> SnapshotBuilder:
    """Flat 20% off H100 for everyone, lab's subsidy cap 3, budget 25, two 1-GPU jobs.

    Round start (probe, 1 GPU x 1 reference hour): bj-h100 costs 30 / 2 = 15,
    subsidy min(3, cap 3) = 3, lab pays 12.00; sh-h20 12.22 (no subsidy), so
    bj-h100 comes first. Job 1 takes bj-h100: pays 12, budget 13 left, cap 0.
    Job 2 on bj-h100 would now pay the full 15 > 13: refused; on sh-h20 it pays
    12.22 <= 13: started. Probes stay at the round start's 12.00 and 12.22.
    """
    return (
        platform()
        .org("lab", "general", 25.0, subsidy_cap=3.0)
        .job(1, org="lab", id=1)
        .job(1, org="lab", id=2)
    )


def _ascend_full() -> SnapshotBuilder:
    return platform({"gz-910b": [0]}).job(1, org="hospital", id=1)


ORDER_CASES = [
    # (case, builder, pricing, order, job, pool, reason)
    ("name", lambda: platform().job(1, org="hospital", id=1), voucher_books(), "name",
     1, "bj-a100", BY_NAME_WHY),
    ("vouchers make Ascend cheapest", lambda: platform().job(1, org="hospital", id=1),
     voucher_books(), "cheapest", 1, "gz-910b",
     "cheapest for hospital after subsidy: 4.50 per effective GPU-hour"),
    ("cheaper pool full", _ascend_full, voucher_books(), "cheapest", 1, "sh-h20",
     "cheapest for hospital after subsidy: 8.55 per effective GPU-hour; "
     "passed over cheaper gz-910b at 4.50 (full)"),
    ("cheaper pool unaffordable", _budget_platform, SubsidyRules(gpu_type_rates={"H100": 0.2}),
     "cheapest", 2, "sh-h20",
     "cheapest for lab after subsidy: 12.22 per effective GPU-hour; "
     "passed over cheaper bj-h100 at 12.00 (lab could not pay there)"),
    # a tie (bj-h100 and gz-910b both 15 for lab) is no cheaper: nothing passed over
    ("tie is not cheaper", lambda: platform({"bj-h100": [0]}).job(1, org="lab", id=1,
     types=("H100", "Ascend-910B")), None, "cheapest", 1, "gz-910b",
     "cheapest for lab after subsidy: 15.00 per effective GPU-hour"),
]  # fmt: skip


@pytest.mark.parametrize("kind", sorted(POLICIES))
@pytest.mark.parametrize(
    ("case", "builder", "pricing", "order", "job", "pool", "reason"),
    ORDER_CASES,
    ids=[c[0] for c in ORDER_CASES],
)
def test_baselines_say_which_pool_order_rule_picked_the_pool(
    kind, case, builder, pricing, order, job, pool, reason
):
    snapshot = with_pricing(builder(), pricing)
    allocation = POLICIES[kind](order).allocate(snapshot)
    assert _placed(allocation)[job] == pool
    want = reason if kind == "fifo" else IN_ORDER + reason
    assert allocation.why[job] == want
    assert set(allocation.why) == allocation.started_ids


# ---------------------------------------------------------------------------
# multifactor: backfilled or in priority order
# ---------------------------------------------------------------------------


def _one_node(small_hours: float) -> SnapshotBuilder:
    # tests/policies/test_multifactor.py's backfill platform: one 8-GPU node, 6 busy
    # until +2 h; the 8-GPU medical job 10 is on top and reserved at +2 h
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


def _two_nodes() -> SnapshotBuilder:
    # node 0 frees at +2 h and holds job 10's reserved gang; 11 takes node 1 for 5 h
    return (
        SnapshotBuilder()
        .pool("p", "A100", 16)
        .domain("medical", 3.0)
        .org("hospital", "medical")
        .running(8, "p", ends_in_hours=2.0)
        .running(6, "p", ends_in_hours=10.0)
        .job(8, org="hospital", id=10)
        .job(2, hours=5.0, id=11)
    )


def _two_pools() -> SnapshotBuilder:
    # pb frees at +1 h, so job 20 is reserved there; 21 (3 h) goes to pa
    return (
        SnapshotBuilder()
        .pool("pa", "A100", 8)
        .pool("pb", "A100", 8)
        .domain("medical", 3.0)
        .org("hospital", "medical")
        .running(6, "pa", ends_in_hours=5.0)
        .running(6, "pb", ends_in_hours=1.0)
        .job(8, org="hospital", id=20)
        .job(2, hours=3.0, id=21)
    )


def _reserved_on_the_cheap_pool() -> SnapshotBuilder:
    """cheap (5 per GPU-hour) frees 6 GPUs at +2 h, dear (10) at +5 h: job 10 is
    reserved on cheap at +2 h. Job 11 (2 GPUs, 3 h) tries cheap first: it fits now
    but would still run at +2 h, leaving 2 + 6 - 2 = 6 < 8 GPUs: refused. dear
    takes it. Lab pays list price: 5.00 and 10.00 per effective GPU-hour."""
    return (
        SnapshotBuilder()
        .pool("cheap", "A100", 8, price=5.0)
        .pool("dear", "A100", 8, price=10.0)
        .domain("medical", 3.0)
        .org("hospital", "medical")
        .org("lab", "general")
        .running(6, "cheap", ends_in_hours=2.0)
        .running(6, "dear", ends_in_hours=5.0)
        .job(8, org="hospital", id=10)
        .job(2, hours=3.0, org="lab", id=11)
    )


BACKFILL_CASES = [
    # (case, builder, pool order, job, reason)
    ("ends before the reservation", lambda: _one_node(1.5), "name", 11,
     f"backfilled: ends before job 10's reserved start; {BY_NAME_WHY}"),
    ("leaves the reserved gang room", _two_nodes, "name", 11,
     f"backfilled: job 10's reserved gang still fits at its start; {BY_NAME_WHY}"),
    ("another pool", _two_pools, "name", 21,
     f"backfilled: job 20 is reserved on pb; {BY_NAME_WHY}"),
    ("cheaper pool would delay", _reserved_on_the_cheap_pool, "cheapest", 11,
     "backfilled: job 10 is reserved on cheap; cheapest for lab after subsidy: 10.00 per "
     "effective GPU-hour; passed over cheaper cheap at 5.00 (would delay job 10's reserved "
     "start)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "builder", "order", "job", "reason"),
    BACKFILL_CASES,
    ids=[c[0] for c in BACKFILL_CASES],
)
def test_multifactor_says_when_a_job_was_backfilled(case, builder, order, job, reason):
    snapshot = builder().build()
    allocation = POLICIES["multifactor"](order).allocate(snapshot)
    check_invariants(snapshot, allocation)
    assert job in allocation.started_ids
    assert allocation.why[job] == reason


def test_multifactor_in_priority_order_before_anything_is_blocked():
    # two free nodes: job 10 (8 GPUs) starts first, job 11 after it, neither backfilled
    snapshot = SnapshotBuilder().pool("p", "A100", 16).job(8, id=10).job(2, id=11).build()
    allocation = POLICIES["multifactor"]("name").allocate(snapshot)
    assert allocation.why == {10: IN_ORDER + BY_NAME_WHY, 11: IN_ORDER + BY_NAME_WHY}


# ---------------------------------------------------------------------------
# priority and fair-share: a reason from their own logic
# ---------------------------------------------------------------------------


def _fast_and_slow() -> SnapshotBuilder:
    # test_priority.py's LP case: job 1 (any type) leaves the one H100 node to
    # job 2, which can only run there: the LP plan reserves it for job 2
    return (
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
    )


def _h100_full() -> SnapshotBuilder:
    return (
        SnapshotBuilder()
        .gpu_type("H100", 2.0)
        .gpu_type("A100", 1.0)
        .pool("fast", "H100", 8, free_per_node=[0])
        .pool("slow", "A100", 8)
        .job(4, id=1)
    )


PRIORITY_CASES = [
    # (case, builder, {job: reason})
    ("LP keeps H100 for the H100-only job", _fast_and_slow, {
        1: "LP-guided placement: A100 (H100 kept by the LP plan for jobs that can only run there)",
        2: "the only GPU type it can use here: H100",
    }),
    ("fastest type full", _h100_full, {1: "fastest GPU type that took it: A100 (H100 full)"}),
    ("fastest type free", lambda: _h100_full().pool("fast", "H100", 8),
     {1: "fastest GPU type it allows: H100"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "builder", "reasons"), PRIORITY_CASES, ids=[c[0] for c in PRIORITY_CASES]
)
def test_priority_reasons_on_hand_built_platforms(case, builder, reasons):
    allocation = PriorityPolicy().allocate(builder().build())
    assert allocation.why == reasons


def test_priority_names_the_jobs_it_preempted():
    snapshot = (
        SnapshotBuilder()
        .pool("p", "A100", 8)
        .domain("urgent", 3.0)
        .org("o-u", "urgent")
        .org("o-b", "batch")
        .running(8, "p", org="o-b", id=50)
        .job(8, org="o-u", id=1)
        .build()
    )
    policy = PriorityPolicy(
        PolicyParams(preemption=Preemption(True, min_gap=1.0, min_run_minutes=0))
    )
    allocation = policy.allocate(snapshot)
    assert allocation.preempt == (50,)
    # gain: (3 - 1) priority x 8 GPUs x 1 hour job 50 has left = 16; cost: free restarts
    assert allocation.why == {
        1: "no room elsewhere: preempted lower-priority job(s) 50 on p (gain 16 > cost 0 GPU-hours)"
    }
    assert allocation.preempt_why == {
        50: "preempted by job 1 (priority 3 over 1) to start on p: gain 16 > cost 0 GPU-hours"
    }


def test_fair_share_says_whose_share_or_backfill():
    # one domain, one 8-GPU pool, two 4-GPU jobs: the fluid share gives general all 8
    # GPUs, so both start within it; the first sees 8 left, the second 8 - 4 = 4
    snapshot = SnapshotBuilder().pool("p", "A100", 8).job(4, id=1).job(4, id=2).build()
    allocation = FairSharePolicy().allocate(snapshot)
    assert allocation.why == {
        1: "within general's fair share of A100 (8.0 GPUs left)",
        2: "within general's fair share of A100 (4.0 GPUs left)",
    }


KINDS = {
    "fifo": FifoPolicy,
    "multifactor": MultifactorPolicy,
    "priority": PriorityPolicy,
    "fair-share": FairSharePolicy,
    "priority+preemption": lambda: PriorityPolicy(
        PolicyParams(preemption=Preemption(True, min_gap=0.5, min_run_minutes=0))
    ),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("seed", range(12))
def test_every_placement_has_a_reason_on_random_instances(kind, seed):
    snapshot = random_snapshot(seed, jobs=16, pools=4, running=6)
    for order in ("name", "cheapest"):
        policy = KINDS[kind]()
        if kind in ("fifo", "multifactor"):
            policy = POLICIES[kind](order)
        elif order == "cheapest":
            continue  # the optimising kinds have no pool order
        allocation = policy.allocate(snapshot)
        check_invariants(snapshot, allocation)
        assert set(allocation.why) == allocation.started_ids
        assert all(reason.strip() and len(reason) < 300 for reason in allocation.why.values())
