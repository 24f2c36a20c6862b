"""The simulator runs its rounds through the one round driver (gpupool.scheduler.driver)."""

from __future__ import annotations

from gpupool.policies.fifo import FifoPolicy
from gpupool.simulations.engine import FAILED, FINISHED, simulate
from tests.simulations.test_engine import job, log, scenario


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
