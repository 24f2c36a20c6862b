"""A round killed with SIGKILL inside its write transaction leaves no trace.

The killed round has, by the time it pauses (GPUPOOL_TEST_PAUSE_IN_ROUND),
reaped an overdue job (placement closed, ledger charge written) and started new
jobs (placements written, jobs running), all uncommitted. After the kill the
database must be exactly as before the round, the invariants must hold, and the
next round must do the same work normally.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

from sqlalchemy import func, select

from gpupool.policies.fifo import FifoPolicy
from gpupool.scheduler import clock, service
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import JobRow, LedgerEntryRow, PlacementRow, SchedulerRoundRow
from gpupool.scheduler.rounds import run_round
from gpupool.scheduler.service import JobRequest
from tests.reliability.invariants import check_all


def _picture(db):
    """Everything a round could change: rows per table and every job's state."""
    with unit_of_work(db) as session:
        counts = tuple(
            session.scalar(select(func.count()).select_from(t))
            for t in (SchedulerRoundRow, PlacementRow, LedgerEntryRow)
        )
        open_placements = session.scalar(
            select(func.count()).select_from(PlacementRow).where(PlacementRow.ended_at.is_(None))
        )
        states = dict(session.execute(select(JobRow.id, JobRow.state)).all())
    return counts, open_placements, states


def test_a_round_killed_mid_transaction_changes_nothing(platform, tmp_path):
    three_hours_ago = clock.utcnow() - dt.timedelta(hours=3)
    with unit_of_work(platform) as session:
        (overdue, _), = service.submit_jobs(
            session, "admin", [JobRequest(org="lab", gpus=8, hours=1, gpu_types=["H100"])],
            now=three_hours_ago,
        )  # fmt: skip
        run_round(session, FifoPolicy(), three_hours_ago)  # runs 30 min: long overdue now
        service.submit_jobs(session, "admin", [JobRequest(org="hosp", gpus=4, hours=2)] * 3)
    before = _picture(platform)
    assert before[0] == (1, 1, 0) and before[1] == 1

    pause_file = tmp_path / "in-round"
    env = dict(
        os.environ,
        GPUPOOL_DATABASE_URL=platform,
        GPUPOOL_USER="admin",
        GPUPOOL_TEST_PAUSE_IN_ROUND=str(pause_file),
        GPUPOOL_TEST_PAUSE_SECONDS="60",
    )
    doomed = subprocess.Popen(
        [sys.executable, "-m", "gpupool.cli.main", "schedule"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not pause_file.exists():
        assert doomed.poll() is None, doomed.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)
    assert doomed.returncode == -signal.SIGKILL

    assert _picture(platform) == before  # no round row, placement or ledger entry survived
    check_all(platform)

    with unit_of_work(platform) as session:  # the next round goes on normally
        result = run_round(session, FifoPolicy())
    assert result.timed_out == [overdue] and len(result.started) == 3
    (counts, open_placements, states) = _picture(platform)
    assert counts == (2, 4, 1) and open_placements == 3
    assert sorted(states.values()) == ["running", "running", "running", "timed_out"]
    check_all(platform)
