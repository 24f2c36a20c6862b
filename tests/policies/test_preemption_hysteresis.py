"""priority's preemption hysteresis: minimum run time, per-job budget, strictly higher priority."""

from __future__ import annotations

import dataclasses

import pytest

from gpupool.policies.params import PolicyParams, Preemption
from gpupool.policies.priority import PriorityPolicy
from tests.policies.builders import DEFAULT_NOW, SnapshotBuilder


def one_victim(weight: float, ran_minutes: float, preempted_before: int = 0):
    """batch's 8-GPU job 50 has run ``ran_minutes`` of its 24 hours; urgent (``weight``)
    job 1 needs the pool (so the preemption's gain is positive: job 1 would wait hours)."""
    snapshot = (
        SnapshotBuilder()
        .pool("p", "A100", 8)
        .domain("urgent", weight)
        .domain("batch", 1.0)
        .org("o-u", "urgent")
        .org("o-b", "batch")
        .running(8, "p", hours=24.0, org="o-b", id=50, started_at=DEFAULT_NOW - ran_minutes * 60)
        .job(8, org="o-u", id=1)
        .build()
    )
    victim = dataclasses.replace(snapshot.running[0], preemptions=preempted_before)
    return dataclasses.replace(snapshot, running=(victim,))


def preempted(snapshot, **rule) -> tuple[int, ...]:
    params = PolicyParams(preemption=Preemption(True, **rule))
    return PriorityPolicy(params).allocate(snapshot).preempt


@pytest.mark.parametrize(
    ("ran_minutes", "min_run_minutes", "expected"),
    [
        (59.0, 60.0, ()),  # protected: not yet its minimum run
        (60.0, 60.0, (50,)),  # exactly its minimum: fair game
        (5.0, 0.0, (50,)),  # no minimum
        (600.0, 720.0, ()),
    ],
)
def test_a_job_is_never_preempted_within_its_minimum_run_time(
    ran_minutes, min_run_minutes, expected
):
    snapshot = one_victim(3.0, ran_minutes)
    assert preempted(snapshot, min_run_minutes=min_run_minutes) == expected


@pytest.mark.parametrize(
    ("preempted_before", "max_per_job", "expected"),
    [(0, 1, (50,)), (1, 1, ()), (1, 2, (50,)), (2, 2, ()), (0, 0, ())],
)
def test_the_per_job_budget_bounds_preemptions(preempted_before, max_per_job, expected):
    snapshot = one_victim(3.0, 120.0, preempted_before)
    assert preempted(snapshot, max_per_job=max_per_job) == expected


@pytest.mark.parametrize(("weight", "expected"), [(1.0, ()), (0.5, ()), (1.001, (50,))])
def test_equal_priority_never_preempts_even_with_no_gap(weight, expected):
    snapshot = one_victim(weight, 120.0)
    assert preempted(snapshot, min_gap=0.0) == expected


def test_defaults_protect_a_job_that_just_started_and_one_preempted_once():
    assert Preemption().min_run_minutes > 0 and Preemption().max_per_job == 1
    assert preempted(one_victim(3.0, 1.0)) == ()
    assert preempted(one_victim(3.0, 120.0, preempted_before=1)) == ()
    assert preempted(one_victim(3.0, 120.0)) == (50,)
