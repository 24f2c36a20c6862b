"""`report usage --by site|pool` counts each charge where the usage happened.

Platform (tests/conftest.py): p-a100 in Beijing (A100, speed 1.0, 10.00 per
GPU-hour, 2 nodes of 8), p-h100 in Shanghai (H100, speed 2.0, 20.00, 1 node of 8).
"""

from __future__ import annotations

import csv
import datetime as dt
import json

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from gpupool.cli.main import app
from gpupool.model import Allocation, Placement
from gpupool.scheduler import lifecycle, service
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import JobRow, LedgerEntryRow
from gpupool.scheduler.rounds import run_round

T0 = dt.datetime(2026, 11, 2, 8, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


class _Fixed:
    def __init__(self, allocation):
        self.allocation = allocation

    def allocate(self, snapshot):
        return self.allocation


def _cli(db, *args: str):
    result = CliRunner().invoke(app, ["--db", db, "--as", "admin", *args])
    assert result.exit_code == 0, result.stderr
    return result.stdout


def _round(db, allocation, at):
    with unit_of_work(db) as session:
        run_round(session, _Fixed(allocation), at)


@pytest.fixture
def moved(platform):
    """A lab job run 0.5 h on p-h100, preempted and requeued, then run 2 h on p-a100."""
    programme = ["programme", "add", "gen", "--period", "2026-Q4", "--rate", "0.25"]
    _cli(platform, *programme, "--domain", "general", "--budget", "1000")
    with unit_of_work(platform) as session:
        job, _ = service.submit_job(
            session, "admin", service.JobRequest(org="lab", gpus=8, hours=3), T0 - HOUR
        )
    _round(platform, Allocation(placements=(Placement(job, "p-h100", ((0, 8),)),)), T0)
    _round(platform, Allocation(preempt=(job,)), T0 + 0.5 * HOUR)
    _round(platform, Allocation(placements=(Placement(job, "p-a100", ((0, 8),)),)), T0 + HOUR)
    with unit_of_work(platform) as session:
        lifecycle.finish_job(session, "admin", job, at=T0 + 3 * HOUR, now=T0 + 3 * HOUR)
    return platform


def _row(by: str, where: str, gpu_h, eff_h, cost, subsidy, org_pays) -> dict:
    figures = {"gpu_hours": gpu_h, "effective_gpu_hours": eff_h, "cost": cost}
    money = {"subsidy": subsidy, "org_pays": org_pays, "jobs": 1}
    return {"period": "2026-Q4", by: where} | figures | money


# 'gen' pays 25% of general's usage:
# p-h100 (Shanghai): 8 H100 x 0.5 h = 4 GPU-h = 8 effective (speed 2); 4 x 20.00 = 80.00,
#   subsidy 20.00, lab pays 60.00
# p-a100 (Beijing): 8 A100 x 2 h = 16 GPU-h = 16 effective; 16 x 10.00 = 160.00,
#   subsidy 40.00, lab pays 120.00
BEIJING = (16.0, 16.0, 160.0, 40.0, 120.0)
SHANGHAI = (4.0, 8.0, 80.0, 20.0, 60.0)


@pytest.mark.parametrize(
    ("by", "where"), [("site", ("Beijing", "Shanghai")), ("pool", ("p-a100", "p-h100"))]
)
def test_each_site_and_pool_gets_its_share_of_a_moved_job(moved, tmp_path, by, where):
    path = tmp_path / "usage.csv"
    rows = json.loads(_cli(moved, "report", "usage", "--by", by, "--json", "--csv", str(path)))
    assert rows == [_row(by, where[0], *BEIJING), _row(by, where[1], *SHANGHAI)]
    with open(path, newline="", encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    assert written == [{k: str(v) for k, v in row.items()} for row in rows]


def test_charges_stored_without_a_pool_count_at_the_jobs_last_pool(moved):
    # rows written before migration 0003 have no pool: the whole job lands at
    # its last pool, p-a100 in Beijing (80.00 + 160.00 = 240.00, 20 GPU-h)
    with unit_of_work(moved) as session:
        session.execute(update(LedgerEntryRow).values(pool_id=None))
    rows = json.loads(_cli(moved, "report", "usage", "--by", "site", "--json"))
    assert rows == [_row("site", "Beijing", 20.0, 24.0, 240.0, 60.0, 180.0)]


def test_job_show_counts_gpu_hours_at_each_charges_own_speed(moved):
    # 4 GPU-h on H100 (8 effective) + 16 on A100 (16 effective) = 20 GPU-h; dividing
    # all 24 effective hours by the last pool's speed would say 24
    with unit_of_work(moved) as session:
        job_id = session.scalars(select(JobRow.id)).one()
    view = json.loads(_cli(moved, "job", "show", str(job_id), "--json"))
    assert view["accounting"]["charged_gpu_hours"] == 20.0
