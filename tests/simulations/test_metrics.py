"""Metrics worked out by hand on the five-job FIFO replay of test_engine.

The replay (hours): job 1 edu 4 GPUs pa 0-2; 2 edu 4 GPUs ph 0-1; 3 med 2 GPUs
ph 1-1.5; 4 edu 4 GPUs submitted 1, ph 1.5-2; 5 med 1 GPU pa 2-3. Prices: pa 1,
ph 2 per GPU-hour; weights edu 1, med 3.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from gpupool.policies.fifo import FifoPolicy
from gpupool.simulations.compare import mean_ci
from gpupool.simulations.engine import HOUR, RUNNING, EngineOptions, simulate
from gpupool.simulations.metrics import (
    jain,
    percentile,
    subsidy_curve,
    summarise,
    utilisation_curve,
    wait_quantiles,
    work_span_hours,
)
from tests.simulations.test_engine import FIVE_JOBS, scenario


@pytest.fixture(scope="module")
def result():
    return simulate(scenario(*FIVE_JOBS), FifoPolicy())


@pytest.fixture(scope="module")
def metrics(result):
    return summarise(result)


def test_percentile_interpolates_between_ranks():
    assert percentile([0.0, 0.0, 0.0, 0.0, 0.5], 95) == pytest.approx(0.4)
    assert percentile([1.0, 3.0], 50) == 2.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_jain_index():
    assert jain([1.0, 1.0, 1.0]) == 1.0
    assert jain([1.0, 0.0, 0.0, 0.0]) == 0.25
    assert jain([]) is None


def test_platform_delays(metrics):
    platform = metrics["platform"]
    assert platform["jobs"] == platform["finished"] == 5
    waits = platform["queueing_delay_hours"]
    assert waits["mean"] == pytest.approx(0.1)  # only job 4 waits, 0.5 h
    assert waits["p50"] == 0.0 and waits["p95"] == pytest.approx(0.4)
    assert platform["jct_hours"]["mean"] == pytest.approx((2 + 1 + 0.5 + 1 + 1) / 5)
    # job 4 ran 0.5 h after 1 h in the system: slowdown 2; the others 1
    assert platform["slowdown"]["mean"] == pytest.approx(1.2)
    assert platform["makespan_hours"] == 3.0


def test_work_capacity_and_money(metrics):
    platform, edu, med = metrics["platform"], metrics["domains"]["edu"], metrics["domains"]["med"]
    assert platform["gpu_hours"] == pytest.approx(16.0)
    assert edu["effective_gpu_hours"] == pytest.approx(4 * 2 + 4 * 2 + 4 * 1)
    assert med["effective_gpu_hours"] == pytest.approx(2 * 1 + 1 * 1)
    assert platform["utilisation"] == pytest.approx(16 / (8 * 3))
    assert platform["utilisation_by_gpu_type"] == pytest.approx({"a100": 9 / 12, "h100": 7 / 12})
    # pa (a100): 4 x 2 + 1 x 1 = 9 GPU-h; ph (h100): 4 x 1 + 2 x 0.5 + 4 x 0.5 = 7
    assert platform["gpu_hours_by_gpu_type"] == pytest.approx({"a100": 9.0, "h100": 7.0})
    assert platform["gpu_hours_share_by_gpu_type"] == pytest.approx(
        {"a100": 9 / 16, "h100": 7 / 16}
    )
    assert platform["idle_while_waiting_gpu_hours"] == pytest.approx(1.0)
    assert platform["idle_while_waiting_share"] == pytest.approx(1 / 24)
    assert platform["cost"] == pytest.approx(8 + 8 + 2 + 4 + 1)
    assert platform["subsidy"] == 0.0 and platform["org_pays"] == platform["cost"]


def test_fairness_indexes(metrics):
    # 1 / mean slowdown: edu (1 + 1 + 2) / 3 -> 3/4, med 1 -> 1
    assert metrics["platform"]["jain_slowdown"] == pytest.approx(1.75**2 / (2 * (0.75**2 + 1)))
    # served shares 20/23 and 3/23 over weight shares 1/4 and 3/4
    x = [(20 / 23) / 0.25, (3 / 23) / 0.75]
    assert metrics["platform"]["jain_share"] == pytest.approx(
        sum(x) ** 2 / (2 * (x[0] ** 2 + x[1] ** 2))
    )


def test_conservation_balances_with_until(result):
    cut = simulate(scenario(*FIVE_JOBS), FifoPolicy(), options=EngineOptions(until_hours=1.25))
    conservation = summarise(cut)["conservation"]
    # at 1.25 h: 2 finished, 1 and 3 running, 4 waiting, 5 not yet arrived
    assert (conservation["finished"], conservation["running"]) == (1, 2)
    assert (conservation["waiting"], conservation["not_arrived"]) == (1, 1)
    assert conservation["balanced"]


def test_curves(result):
    hours, busy = utilisation_curve(result, bins=3)
    assert hours == pytest.approx([0.5, 1.5, 2.5])
    # 0-1 h: all 8 busy; 1-1.5: 6; 1.5-2: 8; 2-3: 1
    assert busy == pytest.approx([1.0, 7 / 8, 1 / 8])
    assert subsidy_curve(result) == ([0.0, 3.0], [0.0, 0.0])
    waits = wait_quantiles(result, points=5)
    assert waits["edu"] == pytest.approx([0.0, 0.0, 0.0, 0.25, 0.5])
    assert waits["med"] == [0.0] * 5


def test_confidence_interval_uses_student_t():
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(4.303 / math.sqrt(3))
    assert mean_ci([5.0]) == (5.0, None)


def test_utilisation_counts_only_the_span_in_which_work_exists(result):
    # The clock ran on to 6 h (as stale completion events of preempted jobs
    # make it): the work still spans 0-3 h, 16 busy GPU-hours on 8 GPUs.
    late = dataclasses.replace(result, end_time=6 * HOUR)
    platform = summarise(late)["platform"]
    assert platform["simulated_hours"] == 6.0
    assert platform["work_span_hours"] == 3.0
    assert platform["utilisation"] == pytest.approx(16 / (8 * 3))
    assert platform["utilisation_by_gpu_type"] == pytest.approx({"a100": 9 / 12, "h100": 7 / 12})


def test_work_span_runs_to_the_replay_end_while_work_is_left(result):
    # Job 5 (1 GPU, 2-3 h) still running when the replay stops at 4 h: the
    # span is 0-4 h, whatever its record says about an end.
    records = [dataclasses.replace(r) for r in result.records]
    records[-1].state, records[-1].finished_at = RUNNING, None
    late = dataclasses.replace(result, records=records, end_time=4 * HOUR)
    assert work_span_hours(late) == 4.0
    assert summarise(late)["platform"]["utilisation"] == pytest.approx(16 / (8 * 4))
