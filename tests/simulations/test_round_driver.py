"""The simulator runs its rounds through the one round driver (gpupool.scheduler.driver)."""

from __future__ import annotations

from gpupool.model import Pool
from gpupool.policies.fifo import FifoPolicy
from gpupool.simulations.engine import FAILED, FINISHED, simulate
from tests.simulations.test_engine import PreemptOnce, job, log, scenario


class FailsOnBigJobs:
    """FIFO that raises on any snapshot holding a pending job of more than 2 GPUs."""

    def allocate(self, snapshot):
        if any(j.gpus > 2 for j in snapshot.pending):
            raise ValueError("cannot handle big jobs")
        return FifoPolicy().allocate(snapshot)


def test_a_job_the_policy_fails_on_is_set_aside_in_simulation_as_live():
    # job 2 (4 GPUs) breaks the policy: the driver's isolation blames it alone,
    # it ends failed at the round, and jobs 1 and 3 run as FIFO places them
    work = scenario(job(1, 1, 1.0, 0.0), job(2, 4, 1.0, 0.0), job(3, 2, 1.0, 0.5))
    result = simulate(work, FailsOnBigJobs())
    got = log(result)
    assert got[2] == (FAILED, None, None, 0.0)
    assert got[1][0] == got[3][0] == FINISHED
    assert got[1][2] == 0.0 and got[3][2] == 0.5


def test_a_preempted_job_is_requeued_with_its_full_estimate_and_reaped_by_it():
    """Fix 4: as live, the requeued job keeps its estimate (2 h), so its second run's
    limit is 2 h + 10% + 5 min from its restart, not the 1 h left of the estimate.

    Job 1 (estimate 2 h, really 2.5 h) runs 0..1 h, is preempted by job 2 (1 h),
    restarts at 2 h with 1.5 h of work left (the site checkpoints) and finishes
    at 3.5 h; with the estimate shrunk to 1 h it was reaped at 2 h + 71 min.
    """
    seen = []

    class Watching(PreemptOnce):
        def allocate(self, snapshot):
            seen.append({j.id: j.hours for j in snapshot.pending})
            return super().allocate(snapshot)

    pools = (Pool("pa", "s1", "a100", 4, 4, 1.0),)
    work = scenario(job(1, 4, 2.0, 0.0, actual=2.5), job(2, 4, 1.0, 1.0, domain="med"), pools=pools)
    result = simulate(work, Watching(victim=1, urgent=2))
    assert log(result)[1] == (FINISHED, "pa", 0.0, 3.5)
    assert seen[-1] == {1: 2.0}  # requeued as submitted
    assert result.records[0].preemptions == 1


def test_metrics_count_a_job_set_aside_in_simulation():
    from gpupool.simulations.metrics import summarise

    work = scenario(job(1, 1, 1.0, 0.0), job(2, 4, 1.0, 0.0))
    metrics = summarise(simulate(work, FailsOnBigJobs()))
    assert metrics["platform"]["failed"] == 1
    assert metrics["conservation"]["balanced"]
