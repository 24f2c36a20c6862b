"""Agent-run jobs are charged for what actually ran: from the real start their site's
agent reported, not from the round that placed them (a Slurm queue's wait is not the
job's), and not at all when they never started. Jobs without a payload (ends reported
by hand) are charged from their placement, as before. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import select

from gpupool.accounting.declarations import parse_programmes
from gpupool.policies.fifo import FifoPolicy
from gpupool.scheduler import accounts, service, sites
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import LedgerEntryRow, PlacementRow
from gpupool.scheduler.rounds import run_round
from tests.conftest import add_users

T0 = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
AGENT = "agent-bj"  # Beijing: p-a100, 10.00 per GPU-hour


@pytest.fixture
def site(platform):
    add_users(platform, (AGENT, "agent", None, "Beijing"))
    return platform


def _submit(db, payload: dict | None = {"argv": ["sleep", "1"]}) -> int:  # noqa: B006
    request = service.JobRequest(org="lab", gpus=2, hours=10, gpu_types=["A100"], payload=payload)
    with unit_of_work(db) as session:
        return service.submit_job(session, "admin", request, now=T0 - HOUR)[0]


def _placed(db, job_id: int) -> int:
    with unit_of_work(db) as session:
        assert [s.job_id for s in run_round(session, FifoPolicy(), T0).started] == [job_id]
        return session.scalars(select(PlacementRow.id).where(PlacementRow.job_id == job_id)).one()


def _report(db, job_id: int, run: int, phase: str, at: dt.datetime, **times) -> None:
    with unit_of_work(db) as session:
        item = sites.RunReport(job_id, run, phase, **{k: v.timestamp() for k, v in times.items()})
        assert sites.report(session, AGENT, [item], now=at)["results"][0]["outcome"] == "recorded"


def _ledger(db, job_id: int) -> list[tuple[str, Decimal, Decimal, Decimal]]:
    with unit_of_work(db) as session:
        rows = session.scalars(
            select(LedgerEntryRow)
            .where(LedgerEntryRow.job_id == job_id)
            .order_by(LedgerEntryRow.id)
        )
        return [(r.kind, r.cost, r.subsidy, r.org_pays) for r in rows]


def test_an_agent_run_is_charged_from_its_real_start_not_its_queue_wait(site):
    job = _submit(site)
    run = _placed(site, job)  # placed at 08:00; the site's queue starts it at 09:00
    _report(site, job, run, "running", T0 + HOUR, started_at=T0 + HOUR)
    _report(site, job, run, "ended", T0 + 3 * HOUR, ended_at=T0 + 3 * HOUR)
    # 2 A100 x 2 h (09:00-11:00) x 10.00, not 3 h from the placement (60.00)
    assert _ledger(site, job) == [("charge", Decimal("40.00"), Decimal("0.00"), Decimal("40.00"))]


def test_an_agent_run_cancelled_while_queued_is_charged_nothing(site):
    job = _submit(site)
    _placed(site, job)
    with unit_of_work(site) as session:
        service.cancel(session, "admin", job, now=T0 + 2 * HOUR)
    assert _ledger(site, job) == []


def test_a_job_without_payload_is_charged_from_its_placement_as_before(site):
    job = _submit(site, payload=None)
    _placed(site, job)
    with unit_of_work(site) as session:
        service.finish(session, "admin", job, at=(T0 + 3 * HOUR).isoformat(), now=T0 + 3 * HOUR)
    assert _ledger(site, job) == [("charge", Decimal("60.00"), Decimal("0.00"), Decimal("60.00"))]


def test_a_payload_job_finished_by_hand_without_a_reported_start_is_charged_from_placement(site):
    """`job finish` says the run happened: with no start from an agent (a site without
    one, an agent that lost its state), the placement is the start, as for any job."""
    job = _submit(site)
    _placed(site, job)
    with unit_of_work(site) as session:
        service.finish(session, "admin", job, at=(T0 + 3 * HOUR).isoformat(), now=T0 + 3 * HOUR)
    assert _ledger(site, job) == [("charge", Decimal("60.00"), Decimal("0.00"), Decimal("60.00"))]


def test_a_round_meters_an_agent_run_only_from_its_real_start(site):
    """A voucher expiring makes rounds meter running jobs: an agent's run not yet known
    to have started is not metered; once it is, from its real start; its end then
    charges the rest, and cost = subsidy + org payment in every entry."""
    with unit_of_work(site) as session:
        entry = {"name": "vouch", "period": "quarterly", "rate": 0.5, "vouchers": True}
        (programme,) = parse_programmes([entry], "test")
        accounts.add_programme(session, "admin", programme)
        accounts.award_voucher(
            session, "admin", "lab", "vouch", 3, now=T0 - HOUR, expires_at=T0 + HOUR
        )
        accounts.award_voucher(
            session, "admin", "lab", "vouch", 10, now=T0 - HOUR, expires_at=T0 + 3 * HOUR
        )
    job = _submit(site)
    run = _placed(site, job)
    with unit_of_work(site) as session:  # 09:00: the first voucher expires, nothing ran yet
        run_round(session, FifoPolicy(), T0 + HOUR)
    assert _ledger(site, job) == []
    # the queue started it at 09:30; at 11:00 the second voucher expires: metered 1.5 h
    _report(site, job, run, "running", T0 + 2 * HOUR, started_at=T0 + 1.5 * HOUR)
    with unit_of_work(site) as session:
        sites.heartbeat(session, AGENT, [(job, run)], now=T0 + 3 * HOUR)  # still reachable
        run_round(session, FifoPolicy(), T0 + 3 * HOUR)
    # 2 GPUs x 1.5 h = 3 voucher hours of the 10: 30.00 at half = 15.00 subsidy
    metered = [("charge", Decimal("30.00"), Decimal("15.00"), Decimal("15.00"))]
    assert _ledger(site, job) == metered
    _report(site, job, run, "ended", T0 + 4 * HOUR, ended_at=T0 + 4 * HOUR)
    # 11:00-12:00 after both vouchers expired: 20.00, paid in full
    rest = [("charge", Decimal("20.00"), Decimal("0.00"), Decimal("20.00"))]
    assert _ledger(site, job) == metered + rest


def test_a_run_ended_by_the_server_before_its_start_was_reported_is_charged_at_its_end_report(
    site,
):
    job = _submit(site)
    run = _placed(site, job)
    with unit_of_work(site) as session:  # 10:00: cancelled; no start known, nothing charged
        service.cancel(session, "admin", job, now=T0 + 2 * HOUR)
    assert _ledger(site, job) == []
    # the agent's end report: it had started at 09:00; charged to the server's end (10:00)
    at = T0 + 2.1 * HOUR
    _report(site, job, run, "failed", at, started_at=T0 + HOUR, ended_at=at)
    charged = [("charge", Decimal("20.00"), Decimal("0.00"), Decimal("20.00"))]
    assert _ledger(site, job) == charged
    with unit_of_work(site) as session:  # said again: nothing more
        item = sites.RunReport(job, run, "failed", started_at=(T0 + HOUR).timestamp())
        assert sites.report(session, AGENT, [item], now=at)["results"][0]["outcome"] == "unchanged"
    assert _ledger(site, job) == charged


def test_a_queued_run_cancelled_and_reported_without_a_start_is_charged_nothing(site):
    job = _submit(site)
    run = _placed(site, job)
    with unit_of_work(site) as session:
        service.cancel(session, "admin", job, now=T0 + 2 * HOUR)
    _report(site, job, run, "failed", T0 + 2.1 * HOUR, ended_at=T0 + 2.1 * HOUR)
    assert _ledger(site, job) == []
