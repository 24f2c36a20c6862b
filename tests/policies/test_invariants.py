"""Invariants every registered policy kind keeps, over many seeded random instances.

Parametrised over POLICY_KINDS, so a kind added to the registry is covered at
once; a kind whose module cannot be imported yet is skipped, not failed.

Monotonicity, per kind: "raising a job's priority" means what priority is for
that kind. For fifo it is arrival order (the job is moved to the front of the
queue); for every other kind it is the admin boost ``Job.priority`` (+5). The
property checked is that a job that started still starts. It holds for the
greedy baselines by a prefix argument (the job meets a queue that has booked
no more GPUs, budget or reservation than before); the optimising kinds are
held to the same promise.
"""

from __future__ import annotations

import dataclasses

import pytest

from gpupool.model import Job, Snapshot
from gpupool.policies.document import POLICY_KINDS
from gpupool.policies.params import Aging, DomainShare, PolicyParams, Preemption
from tests.policies.builders import check_invariants, random_snapshot

SEEDS = range(40)

PARAMS = PolicyParams(
    domain_weights={"medical": 3.0, "education": 2.0, "general": 1.0},
    shares={"medical": DomainShare(fraction=0.3, borrow_limit=0.2)},
    aging=Aging(per_hour=0.05, max_boost=1.0),
    preemption=Preemption(enabled=True, min_gap=1.5, min_run_minutes=0),
    time_limit_s=2.0,
)


def policy_class(kind: str) -> type:
    try:
        return POLICY_KINDS[kind]
    except ImportError as exc:
        pytest.skip(f"policy kind {kind} not importable yet: {exc}")


def build(kind: str, params: PolicyParams = PARAMS):
    cls = policy_class(kind)
    unused = getattr(cls, "UNUSED_SECTIONS", frozenset())
    if "preemption" in unused:
        params = dataclasses.replace(params, preemption=Preemption())
    return cls(params=params)


def raised(kind: str, snapshot: Snapshot, job: Job) -> Snapshot:
    """The same snapshot with ``job`` given higher priority, in the kind's own terms."""
    if kind == "fifo":
        first = min(j.submitted_at for j in snapshot.pending)
        better = dataclasses.replace(job, submitted_at=first - 1.0)
    else:
        better = dataclasses.replace(job, priority=job.priority + 5)
    pending = tuple(better if j.id == job.id else j for j in snapshot.pending)
    return dataclasses.replace(snapshot, pending=pending)


@pytest.mark.parametrize("kind", list(POLICY_KINDS))
def test_allocations_keep_every_invariant(kind):
    policy = build(kind)
    for seed in SEEDS:
        snapshot = random_snapshot(seed, budgets=seed % 3 != 0, subsidies=seed % 2 == 0)
        try:
            check_invariants(snapshot, policy.allocate(snapshot))
        except AssertionError as exc:
            raise AssertionError(f"kind {kind}, seed {seed}: {exc}") from None


@pytest.mark.parametrize("kind", list(POLICY_KINDS))
def test_same_input_same_allocation_and_snapshot_untouched(kind):
    for seed in SEEDS[:15]:
        snapshot = random_snapshot(seed)
        copy = dataclasses.replace(snapshot)
        first = build(kind).allocate(snapshot)
        second = build(kind).allocate(snapshot)
        assert first == second, f"kind {kind}, seed {seed}: two runs differ"
        assert snapshot == copy


@pytest.mark.parametrize("kind", list(POLICY_KINDS))
def test_raising_a_jobs_priority_never_stops_it_starting(kind):
    policy = build(kind)
    checked = 0
    for seed in SEEDS[:20]:
        snapshot = random_snapshot(seed)
        before = policy.allocate(snapshot)
        for job in snapshot.pending:
            if job.id not in before.started_ids:
                continue
            after = policy.allocate(raised(kind, snapshot, job))
            assert job.id in after.started_ids, (
                f"kind {kind}, seed {seed}: job {job.id} started, but not once raised "
                f"(now waits: {after.waiting.get(job.id)})"
            )
            checked += 1
    assert checked > 20  # the random instances do start jobs to check
