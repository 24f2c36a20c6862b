"""How running jobs end: site reports, timeouts with grace, and the charge of actual use.

Small platform (tests/conftest.py): p-a100 = 2 nodes x 8 A100 (speed 1.0) at
10.00 per GPU-hour, p-h100 = 1 node x 8 H100 (speed 2.0) at 20.00. No
programmes: the org pays the full cost of what actually ran.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from gpupool.cli.main import app
from gpupool.model import GpupoolError, IllegalTransition
from gpupool.policies.fifo import FifoPolicy
from gpupool.scheduler import lifecycle, repository, service
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.lifecycle import Grace, parse_grace
from gpupool.scheduler.orm import LedgerEntryRow
from gpupool.scheduler.rounds import run_round
from gpupool.scheduler.service import JobRequest
from tests.conftest import add_users

T0 = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)


@pytest.fixture
def platform(platform):
    """The small platform, and ``site``: the agent reporting for Beijing (p-a100)."""
    add_users(platform, ("site", "agent", None, "Beijing"))
    return platform


def _start(db, **request) -> int:
    """Submit one job and start it in a round at T0."""
    with unit_of_work(db) as session:
        job_id, _ = service.submit_job(session, "admin", JobRequest(**request), now=T0 - MINUTE)
        result = run_round(session, FifoPolicy(), T0)
    assert [s.job_id for s in result.started] == [job_id]
    return job_id


def _ledger(db, job_id):
    with unit_of_work(db) as session:
        rows = session.scalars(select(LedgerEntryRow).where(LedgerEntryRow.job_id == job_id))
        return [(e.kind, e.cost, e.subsidy, e.org_pays, e.effective_gpu_hours) for e in rows]


def _state(db, job_id):
    with unit_of_work(db) as session:
        job = repository.get_job(session, job_id)
        placement = repository.placements_of(session, job_id)[-1]
        free = {p["name"]: p["free_gpus"] for p in service.pool_views(session)}
        return job.state, job.ended_at, placement.ended_at, free


@pytest.mark.parametrize(("failed", "state"), [(False, "completed"), (True, "failed")])
def test_a_reported_end_frees_the_gpus_and_charges_what_ran(platform, failed, state):
    job = _start(platform, org="lab", gpus=8, hours=2)  # p-a100 node 0
    end = T0 + dt.timedelta(hours=1.5)
    with unit_of_work(platform) as session:
        lifecycle.finish_job(session, "site", job, failed=failed, at=end, now=end + MINUTE)
    assert _state(platform, job) == (state, end, end, {"p-a100": 16, "p-h100": 8})
    # 8 GPUs x 1.5 h x 10.00 = 120.00; effective 8 x 1.5 x speed 1.0 = 12
    assert _ledger(platform, job) == [("charge", 120.0, 0.0, 120.0, 12.0)]


def test_an_overdue_job_times_out_at_its_deadline_after_the_grace(platform):
    job = _start(platform, org="lab", gpus=8, hours=1, gpu_types=["H100"])
    # 1 h on H100 (speed 2) = 30 min estimated; 10% + 5 min grace: deadline 38 min.
    with unit_of_work(platform) as session:
        early = run_round(session, FifoPolicy(), T0 + 37 * MINUTE)
    assert early.timed_out == [] and _state(platform, job)[0] == "running"
    with unit_of_work(platform) as session:
        late = run_round(session, FifoPolicy(), T0 + 90 * MINUTE)
    deadline = T0 + 38 * MINUTE  # ended at the deadline, not when the round noticed
    assert late.timed_out == [job]
    assert _state(platform, job) == ("timed_out", deadline, deadline, {"p-a100": 16, "p-h100": 8})
    # 8 GPUs x 38/60 h x 20.00 = 101.33; effective 8 x 38/60 x 2.0 = 10.1333
    ((kind, cost, subsidy, pays, hours),) = _ledger(platform, job)
    assert (kind, cost, subsidy, pays) == ("charge", 101.33, 0.0, 101.33)
    assert hours == pytest.approx(8 * 38 / 60 * 2)


def test_a_zero_grace_reaps_at_the_estimate_and_reap_is_idempotent(platform):
    job = _start(platform, org="lab", gpus=4, hours=1)  # A100: 60 min estimate
    with unit_of_work(platform) as session:
        assert lifecycle.reap_timeouts(session, T0 + 59 * MINUTE, Grace(0, 0)) == []
        assert lifecycle.reap_timeouts(session, T0 + 60 * MINUTE, Grace(0, 0)) == [job]
        assert lifecycle.reap_timeouts(session, T0 + 61 * MINUTE, Grace(0, 0)) == []
    assert _ledger(platform, job) == [("charge", 40.0, 0.0, 40.0, 4.0)]


def test_cancelling_a_running_job_charges_its_use_so_far(platform):
    job = _start(platform, org="hosp", gpus=8, hours=2)
    with unit_of_work(platform) as session:
        service.cancel_job(session, "admin", job, now=T0 + 15 * MINUTE)
    assert _ledger(platform, job) == [("charge", 20.0, 0.0, 20.0, 2.0)]  # 8 x 0.25 h x 10


def test_a_job_is_charged_once_even_if_reported_twice(platform):
    job = _start(platform, org="lab", gpus=1, hours=1)
    end = T0 + 30 * MINUTE
    with unit_of_work(platform) as session:
        lifecycle.finish_job(session, "site", job, at=end, now=end)
    with pytest.raises(IllegalTransition) as info, unit_of_work(platform) as session:
        lifecycle.finish_job(session, "site", job, at=end, now=end)
    assert str(info.value) == "state: a completed job cannot become completed"
    assert _ledger(platform, job) == [("charge", 5.0, 0.0, 5.0, 0.5)]


def test_bad_reports_name_the_field_and_change_nothing(platform):
    job = _start(platform, org="lab", gpus=1, hours=1)
    cases = [
        (
            T0 - MINUTE,
            T0,
            "--at: 2026-11-02T07:59:00Z is before the job started (2026-11-02T08:00:00Z)",
        ),
        (T0 + 2 * MINUTE, T0 + MINUTE, "--at: 2026-11-02T08:02:00Z is in the future"),
    ]
    for at, now, message in cases:
        with pytest.raises(GpupoolError) as info, unit_of_work(platform) as session:
            lifecycle.finish_job(session, "site", job, at=at, now=now)
        assert str(info.value) == message
    with unit_of_work(platform) as session:
        pending, _ = service.submit_job(session, "admin", JobRequest(org="lab", gpus=16, hours=1))
    refused = pytest.raises(IllegalTransition, match="a pending job cannot become failed")
    with refused, unit_of_work(platform) as session:
        lifecycle.finish_job(session, "admin", pending, failed=True)
    assert _state(platform, job)[0] == "running" and _ledger(platform, job) == []


@pytest.mark.parametrize(
    ("text", "fraction", "minutes"),
    [("10%+5m", 0.10, 5.0), ("20%", 0.2, 0.0), ("15m", 0.0, 15.0), ("1h+2.5%", 0.025, 60.0)],
)
def test_grace_parses(text, fraction, minutes):
    assert parse_grace(text) == Grace(pytest.approx(fraction), minutes)


@pytest.mark.parametrize("text", ["soon", "10", "-5m", "5m+", "%"])
def test_bad_grace_is_one_line_naming_the_option(text):
    with pytest.raises(GpupoolError) as info:
        parse_grace(text)
    assert str(info.value).startswith("--grace: must look like 10%+5m")


def test_grace_from_the_environment(monkeypatch):
    monkeypatch.setenv("GPUPOOL_TIMEOUT_GRACE", "0")
    assert parse_grace(None) == Grace(0.0, 0.0)
    monkeypatch.setenv("GPUPOOL_TIMEOUT_GRACE", "lots")
    with pytest.raises(GpupoolError, match="^GPUPOOL_TIMEOUT_GRACE: must look like"):
        parse_grace(None)


def test_cli_finish_and_its_errors(platform):
    job = _start(platform, org="lab", gpus=1, hours=1)
    runner = CliRunner()

    def cli(*args):
        return runner.invoke(app, ["--db", platform, "--as", "site", *args])

    bad = cli("job", "finish", str(job), "--at", "yesterday")
    assert (bad.exit_code, bad.stderr.strip()) == (
        2,
        "error: --at: must be an ISO 8601 time like 2026-11-02T10:00:00Z, got 'yesterday'",
    )
    missing = cli("job", "finish", "999")
    assert (missing.exit_code, missing.stderr.strip()) == (2, "error: job id: no job with id 999")
    done = cli("job", "finish", str(job), "--failed", "--at", "2026-11-02T08:30:00Z")
    assert (done.exit_code, done.stdout.strip()) == (0, f"job {job} failed")
    assert _ledger(platform, job) == [("charge", 5.0, 0.0, 5.0, 0.5)]
    refused = cli("job", "reap")  # an agent reports; reaping is an admin's
    assert (refused.exit_code, refused.stderr.strip()) == (
        2,
        "error: --as: site may not reap overdue jobs: admins only",
    )
    reaped = runner.invoke(app, ["--db", platform, "job", "reap"])  # the owner
    assert (reaped.exit_code, reaped.stdout.strip()) == (0, "0 job(s) timed out")
