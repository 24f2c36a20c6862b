"""What a preemption costs, end to end: priority weighs it, the engine charges it, metrics show it.

One 4-GPU A100 pool (speed 1). edu's job 1 runs first; med (weight 3 against
edu's 1) sends job 2, which can start only by preempting job 1.
"""

from __future__ import annotations

import pytest

from gpupool.model import Pool
from gpupool.policies.params import PolicyParams, Preemption
from gpupool.policies.priority import PriorityPolicy
from gpupool.simulations.engine import HOUR, simulate
from gpupool.simulations.metrics import summarise
from tests.simulations.test_engine import job, log, scenario

ONE_POOL = (Pool("pa", "s1", "a100", 4, 4, 1.0),)


def replay(jobs, **rule):
    params = PolicyParams(
        domain_weights={"med": 3.0}, preemption=Preemption(True, min_run_minutes=60, **rule)
    )
    return simulate(scenario(*jobs, pools=ONE_POOL), PriorityPolicy(params))


def test_a_preempted_job_loses_its_work_since_the_last_checkpoint_and_pays_a_restart():
    # job 1 (10 h) is preempted at 2.5 h: it checkpointed at 1 h and 2 h, so it keeps
    # 2 h and loses 0.5 h x 4 GPUs; job 2 runs 2.5-3.5 h; job 1 restarts, restores
    # for 6 minutes (0.1 h x 4 GPUs lost), then does its 8 h left: ends at 11.6 h.
    jobs = (job(1, 4, 10.0, 0.0), job(2, 4, 1.0, 2.5, domain="med"))
    result = replay(jobs, checkpoint_minutes=60, restart_minutes=6)
    assert log(result) == {
        1: ("finished", "pa", 0.0, 11.6),
        2: ("finished", "pa", 2.5, 3.5),
    }
    first = {r.job.id: r for r in result.records}[1]
    assert first.preemptions == 1
    assert first.lost_gpu_hours == pytest.approx(4 * 0.5 + 4 * 0.1)
    assert first.effective_gpu_hours == pytest.approx(4 * 10.0)  # kept work: all of it, once
    assert first.run_seconds / HOUR == pytest.approx(2.5 + 0.1 + 8.0)
    metrics = summarise(result)
    edu, med = metrics["domains"]["edu"], metrics["domains"]["med"]
    assert (edu["preemptions"], edu["lost_gpu_hours"]) == (1, pytest.approx(2.4))
    assert (med["preemptions"], med["lost_gpu_hours"]) == (0, 0.0)
    assert metrics["platform"]["lost_gpu_hours"] == pytest.approx(2.4)


def test_a_free_preemption_loses_nothing():
    jobs = (job(1, 4, 10.0, 0.0), job(2, 4, 1.0, 2.5, domain="med"))
    result = replay(jobs)  # defaults: continuous checkpoints, instant restarts
    assert log(result)[1] == ("finished", "pa", 0.0, 11.0)
    assert summarise(result)["platform"]["lost_gpu_hours"] == 0.0


def test_no_preemption_when_it_costs_more_than_the_wait_it_saves():
    # job 1 (3 h) would end 0.1 h after job 2 arrives at 2.9 h: the gain is
    # (3 - 1) x 4 GPUs x 0.1 h = 0.8; preempting it then loses 0.9 h since its
    # checkpoint at 2 h plus a 0.1 h restart, x 4 GPUs = 4.0. So job 2 waits.
    jobs = (job(1, 4, 3.0, 0.0), job(2, 4, 1.0, 2.9, domain="med"))
    costly = replay(jobs, checkpoint_minutes=120, restart_minutes=6)
    assert log(costly) == {1: ("finished", "pa", 0.0, 3.0), 2: ("finished", "pa", 3.0, 4.0)}
    # free restarts: any gain is worth it, and job 2 starts on arrival
    free = replay(jobs)
    assert log(free)[2] == ("finished", "pa", 2.9, 3.9)
    assert {r.job.id: r.preemptions for r in free.records} == {1: 1, 2: 0}


def test_simulate_run_prints_preemptions_and_lost_gpu_hours_per_domain(capsys):
    from rich.console import Console

    from gpupool.cli.simulate import _print_preemptions

    jobs = (job(1, 4, 10.0, 0.0), job(2, 4, 1.0, 2.5, domain="med"))
    metrics = summarise(replay(jobs, checkpoint_minutes=60, restart_minutes=6))
    _print_preemptions(Console(width=200), metrics)
    assert capsys.readouterr().out == (
        "preemptions 1, lost 2.4 GPU-h (discarded work + restarts); "
        "by domain, preemptions/lost GPU-h: edu 1/2.4\n"
    )
