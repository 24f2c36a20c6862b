"""A scenario's ``start:`` puts the replay on the calendar: a quarterly budget
restarts on the real quarter's first day, not 90 days after 1970-01-01."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D
from pathlib import Path

import pytest

from gpupool.policies.fifo import FifoPolicy
from gpupool.simulations.engine import EngineOptions, simulate
from gpupool.simulations.metrics import job_row, subsidy_curve, utilisation_curve
from gpupool.simulations.scenario import ScenarioError, load_scenario

DAY = 86400.0
# 2026-02-15 is mid-Q1: Q2 begins 45 days later (14 days of February, 31 of March)
TRACE = """\
timestamp,duration,num_gpus,cluster
2026-07-01 00:00:00,72000,1,lab
2026-07-01 00:00:01,72000,1,lab
2026-08-14 12:00:00,86400,1,lab
"""
SCENARIO = """\
{start}
gpu_types:
  A100: {{price_per_gpu_hour: 10}}
pools:
  p1: {{site: bj, gpu_type: A100, gpus: 8, gpus_per_node: 8}}
domains:
  research:
orgs:
  lab: {{domain: research}}
workload:
  kind: philly
  path: t.csv
  vc_map: {{lab: lab}}
programmes:
  - {{name: q, period: quarterly, budget: 100, rate: 1.0}}
"""


def _replay(tmp_path: Path, start: str):
    (tmp_path / "t.csv").write_text(TRACE)
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.format(start=start))
    scenario = load_scenario(path)
    return scenario, simulate(scenario, FifoPolicy())


def _subsidy_by_job_and_period(result):
    sums: dict[tuple[int, str], D] = {}
    for entry in result.ledger:
        key = (entry.job_id, entry.period)
        sums[key] = sums.get(key, D("0")) + entry.subsidy
    return sums


def test_a_quarterly_budget_restarts_on_the_calendar_quarter(tmp_path):
    scenario, result = _replay(tmp_path, "start: 2026-02-15T00:00Z")
    origin = dt.datetime(2026, 2, 15, tzinfo=dt.UTC).timestamp()
    assert scenario.start == origin
    assert scenario.jobs[0].job.submitted_at == origin  # the trace's first row is t = 0
    # job 1 (20 h x 10 = 200.00) takes the Q1 budget of 100.00, job 2 gets nothing; job 3
    # runs 12 h in Q1 (nothing left) and 12 h in Q2, where a fresh 100.00 pays it all
    assert _subsidy_by_job_and_period(result) == {
        (1, "2026-Q1"): D("100.00"),
        (2, "2026-Q1"): D("0.00"),
        (3, "2026-Q1"): D("0.00"),
        (3, "2026-Q2"): D("100.00"),
    }
    # reports still count hours from the replay's start
    assert job_row(result.records[2], result.start_time)[7] == pytest.approx(44.5 * 24)
    assert subsidy_curve(result)[0][0] == 0.0
    assert result.end_time - result.start_time == pytest.approx(45.5 * DAY)
    hours, _ = utilisation_curve(result, bins=10)
    assert hours[-1] == pytest.approx(0.95 * 45.5 * 24)


def test_without_a_start_the_quarter_falls_where_1970_puts_it(tmp_path):
    _, result = _replay(tmp_path, "")
    # day 44.5 from 1970-01-01 is still 1970-Q1: job 3 finds the budget spent
    assert _subsidy_by_job_and_period(result) == {
        (1, "1970-Q1"): D("100.00"),
        (2, "1970-Q1"): D("0.00"),
        (3, "1970-Q1"): D("0.00"),
    }


def test_until_hours_count_from_the_start(tmp_path):
    (tmp_path / "t.csv").write_text(TRACE)
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.format(start="start: 2026-02-15"))
    result = simulate(load_scenario(path), FifoPolicy(), options=EngineOptions(until_hours=10))
    assert result.end_time - result.start_time == 10 * 3600


def test_a_bad_start_names_its_line(tmp_path):
    (tmp_path / "t.csv").write_text(TRACE)
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.format(start="start: next tuesday"))
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert caught.value.location == f"{path}:1 start"
