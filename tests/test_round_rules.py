"""The round's rules for money and capacity that live rounds and the simulator share.

Small platform (tests/conftest.py): p-a100 = 16 A100 (speed 1.0) on 2 nodes of
8 at 10.00 per GPU-hour; hosp (medical), lab (general, no budget).
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from gpupool.accounting.declarations import parse_programmes
from gpupool.policies.fifo import FifoPolicy
from gpupool.scheduler import accounts, service
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import JobRow, LedgerEntryRow
from gpupool.scheduler.rounds import run_round
from gpupool.scheduler.service import JobRequest
from gpupool.scheduler.snapshot import take_snapshot

T0 = dt.datetime(2026, 11, 2, 8, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def _submit(db, request, at):
    with unit_of_work(db) as session:
        return service.submit_job(session, "admin", request, now=at)[0]


def _round(db, at, policy=None):
    with unit_of_work(db) as session:
        return run_round(session, policy or FifoPolicy(), at)


def _charges(db, job_id):
    with unit_of_work(db) as session:
        rows = session.scalars(
            select(LedgerEntryRow)
            .where(LedgerEntryRow.job_id == job_id, LedgerEntryRow.kind == "charge")
            .order_by(LedgerEntryRow.id)
        )
        return [float(r.cost) for r in rows]


def test_an_overdue_job_is_charged_to_its_deadline_even_when_a_voucher_expires(platform):
    """Fix 1: the round reaps overdue jobs (at their deadline) before it meters running ones.

    8 A100 x 1 h estimate; deadline 1 h + 10% + 5 min = 71 min: 8 x 71/60 x 10.00 = 94.67.
    The round 5 h later is one where an unrelated voucher expires, so it meters
    every open placement: metering first charged the job to the round, 400.00.
    """
    (programme,) = parse_programmes(
        [
            {
                "name": "health",
                "period": "2026-Q4",
                "domains": ["medical"],
                "rate": 0.5,
                "vouchers": True,
            }
        ]
    )
    with unit_of_work(platform) as session:
        accounts.add_programme(session, "admin", programme)
        accounts.award_voucher(
            session,
            "admin",
            "hosp",
            "health",
            10,
            now=T0.timestamp(),
            expires_at=(T0 + 4 * HOUR).timestamp(),
        )
    job = _submit(platform, JobRequest(org="lab", gpus=8, hours=1, gpu_types=["A100"]), T0)
    assert [s.job_id for s in _round(platform, T0).started] == [job]
    result = _round(platform, T0 + 5 * HOUR)
    assert result.timed_out == [job]
    assert _charges(platform, job) == [94.67]
    with unit_of_work(platform) as session:
        row = session.get(JobRow, job)
        assert (row.state, row.ended_at.replace(tzinfo=dt.UTC)) == (
            "timed_out",
            T0 + dt.timedelta(minutes=71),
        )


def test_a_running_job_counts_in_usage_as_the_simulator_counts_it(platform):
    """Fix 3: a 3-day job is in its domain's usage while it runs, by the simulator's rule.

    8 A100 (speed 1) busy for 48 h, seen at 48 h, half-life 168 h:
    8 x 168 / ln 2 x (1 - 2^(-48/168)) = 348.4 effective GPU-hours (the ledger has none yet).
    """
    from gpupool.simulations.engine import UsageMeter

    job = _submit(platform, JobRequest(org="lab", gpus=8, hours=72, gpu_types=["A100"]), T0)
    assert [s.job_id for s in _round(platform, T0).started] == [job]
    with unit_of_work(platform) as session:
        usage = take_snapshot(session, T0 + 48 * HOUR).usage
    meter = UsageMeter(["general", "medical"], 168.0)
    meter.change_rate(0.0, "general", 8.0)
    assert usage == pytest.approx(
        {k: v for k, v in meter.snapshot(48 * 3600.0).items() if v}, rel=1e-9
    )
    assert usage["general"] == pytest.approx(348.37, abs=0.01)


PRIORITY_WITH_FLAT_SUBSIDY = """\
kind: priority
domains:
  general: {weight: 1.0}
subsidy:
  domain_rates: {general: 0.2}
"""


def test_a_run_its_site_reports_ended_is_charged_with_the_active_policys_subsidy(platform):
    """A round's reap or preemption charged with the policy's flat rules, a site's
    report without them: the same hour cost lab 80.00 or 64.00 depending on who ended it.
    8 A100 x 1 h x 10.00 = 80.00, 20% subsidised: lab pays 64.00."""
    from gpupool.scheduler import lifecycle, policies_store
    from gpupool.scheduler.rounds import run_active_round

    with unit_of_work(platform) as session:
        policies_store.apply_policy_text(
            session, "admin", PRIORITY_WITH_FLAT_SUBSIDY, "policy.yaml", now=T0
        )
    job = _submit(platform, JobRequest(org="lab", gpus=8, hours=2, gpu_types=["A100"]), T0)
    with unit_of_work(platform) as session:
        result, _active = run_active_round(session, T0)
    assert [s.job_id for s in result.started] == [job]
    with unit_of_work(platform) as session:
        lifecycle.finish_job(session, "admin", job, at=T0 + HOUR, now=T0 + HOUR)
        (row,) = session.scalars(select(LedgerEntryRow).where(LedgerEntryRow.job_id == job))
        assert (row.cost, row.subsidy, row.org_pays) == (80.0, 16.0, 64.0)


def test_a_round_decides_on_books_holding_what_it_reaps(platform):
    """The round reaps an overdue job (charged to its deadline) in its write phase;
    its decision must already count that charge, or it admits a job on money spent.

    hosp (budget 1000): job A, 8 A100 x 1 h, overdue since 71 min (94.67); job B,
    8 H100 x 6 h (960.00) fits 1000 but not the 905.33 left once A is charged.
    """
    from gpupool.model import WaitReason

    a = _submit(platform, JobRequest(org="hosp", gpus=8, hours=1, gpu_types=["A100"]), T0)
    assert [s.job_id for s in _round(platform, T0).started] == [a]
    b = _submit(
        platform, JobRequest(org="hosp", gpus=8, hours=12, gpu_types=["H100"]), T0 + 3 * HOUR
    )
    result = _round(platform, T0 + 3 * HOUR)
    assert result.timed_out == [a]
    assert (result.started, result.waiting) == ([], {b: WaitReason.BUDGET})
    assert _charges(platform, a) == [94.67]
