"""The live snapshot tells policies how often a running job was preempted (hysteresis)."""

from __future__ import annotations

import datetime as dt

from gpupool.model import Allocation, Placement
from gpupool.policies.fifo import FifoPolicy
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.rounds import run_round
from gpupool.scheduler.service import JobRequest
from gpupool.scheduler.snapshot import take_snapshot
from tests.test_rounds import T0, _Fixed, _submit


def test_a_restarted_job_carries_its_preemptions_and_its_restart_time(platform):
    (low,) = _submit(platform, JobRequest(org="lab", gpus=8, hours=5))
    with unit_of_work(platform) as session:
        run_round(session, FifoPolicy(), T0)  # low starts on p-a100
        assert [r.preemptions for r in take_snapshot(session, T0).running] == [0]
    (urgent,) = _submit(platform, JobRequest(org="hosp", gpus=8, hours=1, gpu_types=["H100"]))
    preempt = Allocation(placements=(Placement(urgent, "p-h100", ((0, 8),)),), preempt=(low,))
    later = T0 + dt.timedelta(minutes=30)
    with unit_of_work(platform) as session:
        run_round(session, _Fixed(preempt), later)
    restart = later + dt.timedelta(minutes=10)
    again = Allocation(placements=(Placement(low, "p-a100", ((1, 8),)),))
    with unit_of_work(platform) as session:
        run_round(session, _Fixed(again), restart)
        running = {r.job.id: r for r in take_snapshot(session, restart).running}
    assert running[low].preemptions == 1 and running[urgent].preemptions == 0
    assert running[low].started_at == restart.timestamp()


def test_the_snapshot_counts_what_a_job_held_in_its_stopped_runs(platform):
    """Snapshot.served: gpus x speed x hours of closed placements, pending or running again."""
    (low,) = _submit(platform, JobRequest(org="lab", gpus=8, hours=5))
    with unit_of_work(platform) as session:
        run_round(session, FifoPolicy(), T0)  # low starts on p-a100
        assert take_snapshot(session, T0).served == {}  # nothing stopped yet
    (urgent,) = _submit(platform, JobRequest(org="hosp", gpus=8, hours=1, gpu_types=["H100"]))
    preempt = Allocation(placements=(Placement(urgent, "p-h100", ((0, 8),)),), preempt=(low,))
    later = T0 + dt.timedelta(minutes=30)
    with unit_of_work(platform) as session:
        run_round(session, _Fixed(preempt), later)
        snapshot = take_snapshot(session, later)
    speed = snapshot.gpu_types["A100"].speed
    assert snapshot.served == {low: 8 * speed * 0.5}  # pending now, 30 min on 8 A100s
    restart = later + dt.timedelta(minutes=10)
    again = Allocation(placements=(Placement(low, "p-a100", ((1, 8),)),))
    with unit_of_work(platform) as session:
        run_round(session, _Fixed(again), restart)
        assert take_snapshot(session, restart).served == {low: 8 * speed * 0.5}
