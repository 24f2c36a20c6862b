"""``report_bound``: the bound is computed only when asked, and asking changes no decision.

The simulator and live rounds leave it off (the bound LP was about 40% of a
round and nobody there reads it); benchmarks/allocation.py turns it on for the
gap figures. Off, ``Allocation.bound`` is None; on, it must still be a proven
upper bound on the objective, and every other field must be what it is off.
"""

from __future__ import annotations

import dataclasses

import pytest

from gpupool.policies.params import DomainShare, PolicyParams, Preemption
from gpupool.policies.priority import PriorityPolicy
from tests.policies.builders import SnapshotBuilder, random_snapshot

# queues of 1..8 jobs take the small-queue class path, longer ones the numpy path
SIZES = (3, 15, 40)


def _both(policy: PriorityPolicy, snapshot):
    on = dataclasses.replace(policy, report_bound=True).allocate(snapshot)
    off = dataclasses.replace(policy, report_bound=False).allocate(snapshot)
    return on, off


@pytest.mark.parametrize("preemption", [False, True])
@pytest.mark.parametrize("jobs", SIZES)
def test_asking_for_the_bound_changes_no_placement_and_bounds_the_objective(preemption, jobs):
    shares = {"medical": DomainShare(fraction=0.2, borrow_limit=0.2)}
    params = PolicyParams(shares=shares, preemption=Preemption(preemption, min_gap=0.5))
    policy = PriorityPolicy(params)
    slower_type_rounds = 0  # rounds where the bound needed its LP (not just the objective)
    for seed in range(40):
        snapshot = random_snapshot(seed, jobs=jobs, pools=2 + seed % 3, running=seed % 4)
        on, off = _both(policy, snapshot)
        assert off.bound is None, f"seed {seed}"
        assert on.bound is not None and on.objective <= on.bound + 1e-6, f"seed {seed}"
        # placements, waiting reasons, preemptions, charges, objective and reasons alike
        assert dataclasses.replace(on, bound=None) == off, f"seed {seed}"
        slower_type_rounds += on.bound > on.objective + 1e-6
    assert slower_type_rounds > 0  # the LP path was exercised, not only the exact shortcut


def test_off_by_default_and_nothing_to_bound_is_none_too():
    # One 16-GPU job on an 8-GPU pool: nothing can run, no LP at all.
    snapshot = SnapshotBuilder().pool("p", "A100", 8).job(16, id=1).build()
    assert PriorityPolicy().report_bound is False
    assert PriorityPolicy().allocate(snapshot).bound is None
    assert PriorityPolicy(report_bound=True).allocate(snapshot).bound == 0.0
