"""Time slicing in the simulator: a hand-worked lease sequence, restart cost, wake-ups.

One GPU, one domain. Job 1 (10 h) arrives at 0, job 2 (1 h) at 0.25 h.
Run to completion (fair-share without leases): 1 runs 0-10, 2 runs 10-11:
JCTs 10 and 10.75, mean 10.375 h.
With 60-minute leases and a 6-minute restore: at the 1 h grid point job 1's
lease ends (it ran 1 h, level 2 against job 2's level 0), job 2 takes the GPU
and finishes at 2; job 1 restarts at 2, restores 0.1 h, and does its 9 h left:
done at 11.1. JCTs 11.1 and 1.75, mean 6.425 h.
"""

from __future__ import annotations

import pytest

from gpupool.model import Domain, GpuType, Job, Org, Pool
from gpupool.policies.fairshare import FairSharePolicy
from gpupool.policies.params import PolicyParams, Preemption
from gpupool.simulations.engine import FINISHED, HOUR, simulate
from gpupool.simulations.metrics import summarise
from gpupool.simulations.workload import Scenario, SimJob

A100 = GpuType("a100", "nvidia", 80, speed=1.0)


def one_gpu(*jobs: tuple[int, float, float]) -> Scenario:
    """(id, hours, arrival hour) jobs of 1 GPU on a 1-GPU pool."""
    return Scenario(
        name="slices",
        gpu_types={"a100": A100},
        pools=(Pool("p", "s", "a100", 1, 1, 1.0),),
        domains={"edu": Domain("edu", 1.0)},
        orgs={"uni": Org("uni", "edu")},
        jobs=tuple(
            SimJob(Job(job_id, "uni", "edu", 1, hours, at * HOUR), hours)
            for job_id, hours, at in jobs
        ),
    )


LONG_THEN_SHORT = one_gpu((1, 10.0, 0.0), (2, 1.0, 0.25))
RESTORE_6_MIN = PolicyParams(preemption=Preemption(restart_minutes=6.0))


def timeline(result) -> list[tuple[float, str, int]]:
    return [(round(t / HOUR, 9), what, job_id) for t, what, job_id, _ in result.timeline]


def mean_jct(result) -> float:
    return sum(r.finished_at - r.job.submitted_at for r in result.records) / HOUR / 2


def test_run_to_completion_without_leases():
    result = simulate(LONG_THEN_SHORT, FairSharePolicy())
    assert timeline(result) == [(0.0, "start", 1), (10.0, FINISHED, 1), (10.0, "start", 2),
                                (11.0, FINISHED, 2)]  # fmt: skip
    assert mean_jct(result) == pytest.approx(10.375)


def test_time_slicing_beats_run_to_completion_with_the_exact_lease_sequence():
    policy = FairSharePolicy(RESTORE_6_MIN, lease_minutes=60.0)
    result = simulate(LONG_THEN_SHORT, policy)
    assert timeline(result) == [
        (0.0, "start", 1),
        (1.0, "preempt", 1),  # the lease ends on the grid; job 2 (never served) is behind
        (1.0, "start", 2),
        (2.0, FINISHED, 2),
        (2.0, "start", 1),  # resumes: 0.1 h restoring, then its 9 h left
        (11.1, FINISHED, 1),
    ]
    assert mean_jct(result) == pytest.approx(6.425)
    assert mean_jct(result) < mean_jct(simulate(LONG_THEN_SHORT, FairSharePolicy()))


def test_the_restart_is_charged_as_gpu_time_and_reported():
    result = simulate(LONG_THEN_SHORT, FairSharePolicy(RESTORE_6_MIN, lease_minutes=60.0))
    records = {r.job.id: r for r in result.records}
    assert records[1].lost_gpu_hours == pytest.approx(0.1)
    assert records[1].run_seconds == pytest.approx(10.1 * HOUR)  # 1 h, then 9.1 h
    assert records[1].effective_gpu_hours == pytest.approx(10.0)  # the work itself
    assert records[2].lost_gpu_hours == 0.0
    platform = summarise(result)["platform"]
    assert platform["lost_gpu_hours"] == pytest.approx(0.1)
    assert platform["preemptions"] == 1


def test_the_simulator_wakes_up_at_lease_ends_with_nothing_arriving():
    # two 3-hour jobs at 0: nothing arrives or ends at 1 h, yet the round the policy
    # asked for comes: job 1 (1 GPU-h of a 0.5 share: level 2) yields to job 2 (level 0)
    policy = FairSharePolicy(lease_minutes=60.0)
    result = simulate(one_gpu((1, 3.0, 0.0), (2, 3.0, 0.0)), policy)
    assert timeline(result)[:3] == [(0.0, "start", 1), (1.0, "preempt", 1), (1.0, "start", 2)]
    assert all(r.state == FINISHED for r in result.records)
    assert sum(r.effective_gpu_hours for r in result.records) == pytest.approx(6.0)
