"""Job classes (issue 14): a job's speed on each GPU type is its class's, and every
policy places, prices and caps it at that speed (model.Job.speed_on).

Types A and B run every job without a class at the same speed and price, so only
the class decides; pool names are chosen so that name order would pick pool
"a-pool" (type A).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from gpupool.accounting.pricing import BudgetTracker, EffectiveHourPrices
from gpupool.model import GpuType, Job, TimeoutGrace
from gpupool.policies.fifo import FifoPolicy
from gpupool.policies.multifactor import MultifactorPolicy
from gpupool.policies.priority import PriorityPolicy
from tests.policies.builders import SnapshotBuilder, check_invariants

# fair-share's in-share pass follows its fluid shares per GPU type, computed at the
# types' own speeds (its rewrite for time slicing reads Job.speed_on there): only its
# backfill pass orders by the class's speed, so it is not in this table.
POLICIES = [FifoPolicy(), MultifactorPolicy(), PriorityPolicy()]
IDS = ["fifo", "multifactor", "priority"]

# (case, the class's speeds (None: no class), the pool a free 4-GPU job goes to)
PLACEMENTS = [
    ("no class: equal types, name order", None, "a-pool"),
    ("3x faster on B goes to B", {"A": 1.0, "B": 3.0}, "b-pool"),
    ("3x faster on A goes to A", {"A": 3.0, "B": 1.0}, "a-pool"),
    ("a type left out runs at its own speed", {"B": 0.5}, "a-pool"),
]  # fmt: skip


def _classed(job: Job, speeds) -> Job:
    return job if speeds is None else replace(job, job_class="k", speeds=speeds)


def snapshot(speeds, *, price_b: float = 10.0):
    b = SnapshotBuilder().gpu_type("A", 1.0).gpu_type("B", 1.0)
    b.pool("a-pool", "A", 8, price=10.0).pool("b-pool", "B", 8, price=price_b)
    snap = b.job(4, id=1).build()
    return replace(snap, pending=tuple(_classed(j, speeds) for j in snap.pending))


@pytest.mark.parametrize("policy", POLICIES, ids=IDS)
@pytest.mark.parametrize(("case", "speeds", "expected"), PLACEMENTS, ids=[c[0] for c in PLACEMENTS])
def test_a_class_goes_where_it_runs_fastest(policy, case, speeds, expected):
    snap = snapshot(speeds)
    allocation = policy.allocate(snap)
    check_invariants(snap, allocation)
    assert [p.pool for p in allocation.placements] == [expected]


@pytest.mark.parametrize("policy", POLICIES[:2], ids=IDS[:2])
def test_the_baselines_rank_pools_by_price_per_effective_hour_of_the_class(policy):
    # B is 3x faster for the class but 4x dearer: 40 / 3 = 13.33 > 10 / 1 per effective hour
    snap = snapshot({"A": 1.0, "B": 3.0}, price_b=40.0)
    assert [p.pool for p in policy.allocate(snap).placements] == ["a-pool"]
    # 2.5x dearer: 25 / 3 = 8.33 < 10, and the reason quotes the class's speed there
    snap = snapshot({"A": 1.0, "B": 3.0}, price_b=25.0)
    allocation = policy.allocate(snap)
    assert [p.pool for p in allocation.placements] == ["b-pool"]
    assert allocation.why[1].endswith("8.33 per effective GPU-hour (speed 3)")


# (case, speeds, pool, expected cost): 4 GPUs x 6 reference hours at 10.00 per GPU-hour
CHARGES = [
    ("no class: 6 h on A", None, "a-pool", 4 * 6 / 1.0 * 10.0),
    ("class 3x on B: 2 h on B", {"A": 1.0, "B": 3.0}, "b-pool", 4 * 6 / 3.0 * 10.0),
    ("class 0.5x on A: 12 h on A", {"A": 0.5}, "a-pool", 4 * 6 / 0.5 * 10.0),
]  # fmt: skip


@pytest.mark.parametrize(("case", "speeds", "pool", "cost"), CHARGES, ids=[c[0] for c in CHARGES])
def test_a_class_is_charged_for_its_runtime_on_the_type(case, speeds, pool, cost):
    snap = snapshot(speeds)
    job = replace(snap.pending[0], hours=6.0)
    charge = BudgetTracker(snap).quote(job, snap.pool_state(pool).pool)
    assert charge.cost == pytest.approx(cost)
    # the price per effective GPU-hour a baseline ranks by: price / the class's speed
    placed_on = snap.pool_state(pool).pool
    per_hour = EffectiveHourPrices(snap).org_pays(job.org, job.domain, placed_on, job)
    assert per_hour == pytest.approx(10.0 / job.speed_on(snap.gpu_types[placed_on.gpu_type]))


def test_the_priority_objective_and_domain_usage_count_effective_gpus_at_the_class_speed():
    snap = snapshot({"A": 1.0, "B": 3.0})
    allocation = PriorityPolicy().allocate(snap)
    # one 4-GPU job at speed 3: 12 effective GPUs, times its priority (weight 1 + no boost)
    assert allocation.objective == pytest.approx(12.0, rel=1e-3)


def test_the_timeout_deadline_follows_the_class_speed():
    job = Job(1, "o", "d", 1, 2.0, 0.0, job_class="k", speeds={"A": 4.0})
    a, b = GpuType("A", "v", 80, speed=1.0), GpuType("B", "v", 80, speed=1.0)
    grace = TimeoutGrace(fraction=0.1, minutes=5)
    # 2 reference hours at 4x = 30 min estimated; + 10% + 5 min = 38 min
    assert grace.run_limit_seconds(job.hours, job.speed_on(a)) == pytest.approx(38 * 60)
    assert grace.run_limit_seconds(job.hours, job.speed_on(b)) == pytest.approx(137 * 60)
