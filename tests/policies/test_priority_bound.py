"""The bound benchmarks report for ``priority`` (benchmarks/priority_bound.py).

The policy itself reports none (``Allocation.bound`` is None: a live round or
a simulation never read it, and its LP was about 40% of a round); computed
after the fact from the snapshot and the allocation, it must be a proven upper
bound on the objective, and reach past the exact shortcut (every job on its
fastest type) to the LP on some instances.
"""

from __future__ import annotations

import pytest

from benchmarks.priority_bound import priority_bound
from gpupool.policies.params import DomainShare, PolicyParams, Preemption
from gpupool.policies.priority import PriorityPolicy
from tests.policies.builders import SnapshotBuilder, random_snapshot

# queues of 1..8 jobs take the small-queue class path, longer ones the numpy path
SIZES = (3, 15, 40)


@pytest.mark.parametrize("preemption", [False, True])
@pytest.mark.parametrize("jobs", SIZES)
def test_the_bound_bounds_the_objective_on_random_instances(preemption, jobs):
    shares = {"medical": DomainShare(fraction=0.2, borrow_limit=0.2)}
    params = PolicyParams(
        shares=shares, preemption=Preemption(preemption, min_gap=0.5, min_run_minutes=0)
    )
    policy = PriorityPolicy(params)
    lp_rounds = 0  # rounds where the bound needed its LP (not just the objective)
    for seed in range(40):
        snapshot = random_snapshot(seed, jobs=jobs, pools=2 + seed % 3, running=seed % 4)
        allocation = policy.allocate(snapshot)
        assert allocation.bound is None, f"seed {seed}"
        bound = priority_bound(policy, snapshot, allocation)
        assert allocation.objective <= bound + 1e-6, f"seed {seed}"
        lp_rounds += bound > allocation.objective + 1e-6
    assert lp_rounds > 0  # the LP path was exercised, not only the exact shortcut


def test_nothing_to_bound_is_zero():
    # One 16-GPU job on an 8-GPU pool: nothing can run, no LP at all.
    snapshot = SnapshotBuilder().pool("p", "A100", 8).job(16, id=1).build()
    allocation = PriorityPolicy().allocate(snapshot)
    assert allocation.bound is None
    assert priority_bound(PriorityPolicy(), snapshot, allocation) == 0.0
