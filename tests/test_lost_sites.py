"""Lost sites, on a simulated clock: a site whose agent goes unheard of for the
timeout takes no new starts; after the grace its running jobs are requeued (or
failed), charged only to when the site was last heard from; when the agent comes
back its heartbeat orders the stale run stopped, and its report charges nothing."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import func, select

from gpupool.policies.fifo import FifoPolicy
from gpupool.scheduler import service, sites
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import JobRow, LedgerEntryRow, PlacementRow
from gpupool.scheduler.rounds import run_round
from tests.conftest import SQLITE_ONLY, add_users

T0 = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)
RULE = sites.LostSiteRule()  # 300 s unheard: lost; 600 s more: its runs end
BEIJING = "agent-bj"  # p-a100, 10.00 per GPU-hour


@pytest.fixture
def site(platform):
    add_users(platform, (BEIJING, "agent", None, "Beijing"))
    return platform


def _submit(db, name: str, gpu_type: str = "A100") -> int:
    request = service.JobRequest(
        org="lab", gpus=1, hours=10, gpu_types=[gpu_type], name=name,
        payload={"argv": ["sleep", "1000"]},
    )  # fmt: skip
    with unit_of_work(db) as session:
        return service.submit_job(session, "admin", request, now=T0 - dt.timedelta(hours=1))[0]


def _round(db, at: dt.datetime):
    with unit_of_work(db) as session:
        return run_round(session, FifoPolicy(), at)


def _charged(db, job_id: int) -> float:
    with unit_of_work(db) as session:
        total = session.scalar(
            select(func.sum(LedgerEntryRow.cost)).where(LedgerEntryRow.job_id == job_id)
        )
        return round(float(total or 0), 2)


def _job(db, job_id: int) -> JobRow:
    with unit_of_work(db) as session:
        row = session.get(JobRow, job_id)
        session.expunge(row)
        return row


@SQLITE_ONLY
def test_a_lost_site_takes_no_starts_then_its_jobs_are_requeued_charged_to_last_contact(site):
    running = _submit(site, "running")
    assert _round(site, T0).started[0].job_id == running
    with unit_of_work(site) as session:
        run = session.scalars(select(PlacementRow.id)).one()
        started = sites.RunReport(running, run, "running", started_at=T0.timestamp())
        sites.report(session, BEIJING, [started], now=T0 + dt.timedelta(minutes=1))
        sites.heartbeat(session, BEIJING, [(running, run)], now=T0 + dt.timedelta(minutes=6))

    # unheard of for more than the timeout: its pool is set aside, a new A100 job waits
    waiting = _submit(site, "waiting")
    lost_at = T0 + dt.timedelta(minutes=6, seconds=RULE.timeout_s + 1)
    result = _round(site, lost_at)
    assert result.started == []
    assert "unreachable (last heard from 2026-11-02T08:06:00Z)" in result.set_aside["pool p-a100"]
    assert _job(site, running).state == "running"  # not yet: the grace runs
    assert result.lost == {}

    # an H100 job still starts at the other site
    other = _submit(site, "other", "H100")
    assert [s.job_id for s in _round(site, lost_at).started] == [other]

    # after the grace: requeued, its run ended and charged to the last heartbeat (6 min)
    result = _round(site, lost_at + dt.timedelta(seconds=RULE.grace_s))
    assert result.lost == {running: "requeued"}
    job = _job(site, running)
    assert (job.state, job.pool_id) == ("pending", None)
    assert job.wait_reason.startswith("requeued: lost with its site Beijing")
    assert _charged(site, running) == 1.0  # 6 min of 1 A100 at 10.00 per hour
    assert _job(site, waiting).state == "pending"

    # the agent comes back: its stale run is ordered stopped, its end report charges nothing
    back = lost_at + dt.timedelta(seconds=RULE.grace_s + 5)
    with unit_of_work(site) as session:
        orders = sites.heartbeat(session, BEIJING, [(running, run)], now=back)
        end = sites.RunReport(
            running, run, "failed", ended_at=back.timestamp(), exit_code=143, detail="stopped"
        )
        first = sites.report(session, BEIJING, [end], now=back)
        again = sites.report(session, BEIJING, [end], now=back)
    assert orders["stop"][0]["reason"].startswith("lost with its site Beijing")
    assert [r["outcome"] for r in first["results"] + again["results"]] == [
        "recorded",  # its exit code, as a fact: the server ended the run already
        "unchanged",
    ]
    assert _charged(site, running) == 1.0  # and charged nothing more
    with unit_of_work(site) as session:
        placement = session.get(PlacementRow, run)
        assert (placement.exit_code, placement.run_detail) == (143, "stopped")
        assert placement.end_reason.startswith("lost with its site Beijing")
    # reachable again: the next round starts jobs there
    started = {s.job_id for s in _round(site, back).started}
    assert started == {running, waiting}


@SQLITE_ONLY
def test_lost_runs_can_be_failed_instead(site, monkeypatch):
    monkeypatch.setenv(sites.LOST_RUNS_ENV, "fail")
    job = _submit(site, "one")
    _round(site, T0)
    with unit_of_work(site) as session:
        sites.heartbeat(session, BEIJING, [], now=T0)
    result = _round(site, T0 + dt.timedelta(seconds=RULE.timeout_s + RULE.grace_s + 1))
    assert result.lost == {job: "failed"}
    row = _job(site, job)
    assert (row.state, row.ended_at) == ("failed", T0)
    assert _charged(site, job) == 0.0


def test_a_site_that_never_called_in_is_never_lost(platform):
    job = _submit(platform, "manual")
    _round(platform, T0)
    result = _round(platform, T0 + dt.timedelta(hours=2))
    assert result.lost == {} and "pool p-a100" not in result.set_aside
    assert _job(platform, job).state == "running"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (sites.TIMEOUT_ENV, "0", "GPUPOOL_SITE_TIMEOUT: must be between 1 and 86,400"),
        (sites.GRACE_ENV, "x", "GPUPOOL_SITE_GRACE: must be a number, got 'x'"),
        (sites.LOST_RUNS_ENV, "drop", "GPUPOOL_LOST_RUNS: must be requeue or fail, got 'drop'"),
    ],
)
def test_bad_settings_are_refused_by_name(monkeypatch, name, value, message):
    from gpupool.model import GpupoolError

    monkeypatch.setenv(name, value)
    with pytest.raises(GpupoolError) as caught:
        sites.lost_site_rule()
    assert str(caught.value).startswith(message)


@SQLITE_ONLY
def test_the_schedule_command_says_what_it_did_with_a_lost_sites_jobs(site, monkeypatch):
    from typer.testing import CliRunner

    from gpupool.cli.main import app
    from gpupool.scheduler import clock

    monkeypatch.setenv(sites.TIMEOUT_ENV, "1")
    monkeypatch.setenv(sites.GRACE_ENV, "1")
    job = _submit(site, "one")
    now = clock.utcnow()
    _round(site, now - dt.timedelta(seconds=20))
    with unit_of_work(site) as session:
        sites.heartbeat(session, BEIJING, [], now=now - dt.timedelta(seconds=10))
    result = CliRunner().invoke(app, ["--db", site, "--as", "admin", "schedule"])
    assert result.exit_code == 0, result.stderr
    assert "pool p-a100 set aside: its site's agent is unreachable" in result.stdout
    assert f"job {job} requeued: its site's agent is lost" in result.stdout
    listed = CliRunner().invoke(app, ["--db", site, "--as", "admin", "site", "list", "--json"])
    (row,) = json.loads(listed.stdout)
    assert (row["name"], row["agent"], row["reachable"]) == ("Beijing", BEIJING, False)
