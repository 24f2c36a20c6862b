"""The priority policy's small-queue shortcuts decide exactly what the general path decides.

Up to ``SMALL_QUEUE`` jobs, job classes are built in plain Python instead of
numpy; the packer builds its "could it fit before the round" index only when a
job waits. Both must change nothing: these tests run every allocation twice,
once as shipped and once with the small-queue path switched off, and compare
the whole Allocation (placements, waiting reasons, preemptions, charges,
objective and bound) for equality.
"""

from __future__ import annotations

import pytest

from gpupool.policies import _classes
from gpupool.policies._classes import allowed_groups, job_classes, pool_groups, start_order
from gpupool.policies.params import PolicyParams, Preemption
from gpupool.policies.priority import PriorityPolicy
from tests.policies.builders import check_invariants, random_snapshot

SEEDS = range(150)


def _both_paths(monkeypatch, run):
    fast = run()
    with monkeypatch.context() as patch:
        patch.setattr(_classes, "SMALL_QUEUE", 0)  # every queue takes the numpy path
        general = run()
    return fast, general


@pytest.mark.parametrize("preempt", [False, True])
def test_fast_path_allocation_equals_general_path(monkeypatch, preempt):
    params = PolicyParams(preemption=Preemption(preempt, min_gap=0.5, min_run_minutes=0))
    policy = PriorityPolicy(params)
    compared = 0
    for seed in SEEDS:
        jobs = 1 + seed % 8
        snapshot = random_snapshot(seed, jobs=jobs, pools=1 + seed % 4, running=seed % 5)
        fast, general = _both_paths(monkeypatch, lambda s=snapshot: policy.allocate(s))
        assert fast == general, f"seed {seed}"
        check_invariants(snapshot, fast)
        compared += 1
    assert compared == len(SEEDS)


@pytest.mark.parametrize("resolution", [0.0, 0.25, 1.0])
def test_small_job_classes_equal_numpy_classes(monkeypatch, resolution):
    for seed in SEEDS:
        snapshot = random_snapshot(seed, jobs=1 + seed % 8, pools=3)
        groups = pool_groups(snapshot)
        allowed = allowed_groups(snapshot.pending, groups)
        prio = {job.id: 1.0 + (job.id * 7 % 5) * 0.3 + job.priority for job in snapshot.pending}
        order = sorted(snapshot.pending, key=lambda j: start_order(j, prio))
        orgs = frozenset(sorted(snapshot.accounts)[seed % 3 :: 2])

        def run(order=order, prio=prio, allowed=allowed, orgs=orgs):
            return job_classes(order, prio, allowed, resolution, orgs)

        fast, general = _both_paths(monkeypatch, run)
        assert fast == general, f"seed {seed}"


def test_small_queue_groups_equal_keys_into_one_class():
    snapshot = random_snapshot(3, jobs=8, pools=3)
    groups = pool_groups(snapshot)
    allowed = allowed_groups(snapshot.pending, groups)
    prio = dict.fromkeys((job.id for job in snapshot.pending), 2.0)
    classes = job_classes(list(snapshot.pending), prio, allowed, 0.25)
    keys = {(j.domain, j.gpus, allowed[j.id]) for j in snapshot.pending}
    assert len(classes) == len(keys)
    assert sum(len(c.jobs) for c in classes) == 8
    assert [c.index for c in classes] == list(range(len(classes)))
