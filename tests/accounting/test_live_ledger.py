"""The live path end to end: award, submit, schedule, finish -> ledger rows worked by hand.

Small platform (tests/conftest.py): p-h100 = 8 H100 (speed 2.0) at 20.00 per
GPU-hour; hosp (medical, budget 1000 per quarter), lab (general, no budget).

Programme ``health`` (docs/accounting.md's worked example): medical, fixed
2026-Q4, rate 0.5, budget 1000, org cap 600, vouchers with H100 exchange 0.6.
hosp holds 100 voucher hours (awarded 2026-10-01, expiring with Q4). Its job
takes 4 H100 from 5 h before the end of Q4 to 5 h after (20 reference hours
/ speed 2 = 10 h):

    Q4 piece: 4 x 5 = 20 GPU-h, cost 400.00, 20 / 0.6 = 33.33 voucher hours,
              subsidy 200.00, hosp pays 200.00, 40 effective GPU-hours;
    Q1 piece: programme over, voucher expired: cost 400.00, hosp pays 400.00;
    expiry:   the 66.67 voucher hours left, booked in 2026-Q4.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from gpupool.accounting.declarations import parse_programmes
from gpupool.model import WaitReason
from gpupool.policies.fifo import FifoPolicy
from gpupool.scheduler import accounts, lifecycle, service
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import JobRow, LedgerEntryRow, ProgrammeRow, VoucherRow
from gpupool.scheduler.rounds import run_round
from gpupool.scheduler.service import JobRequest

Q4_END = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
HEALTH = {
    "name": "health",
    "period": "2026-Q4",
    "budget": 1000,
    "domains": ["medical"],
    "rate": 0.5,
    "vouchers": True,
    "exchange_rates": {"H100": 0.6},
    "org_cap": 600,
    "when_exhausted": "wait",
}


def _programme(db, **fields):
    (programme,) = parse_programmes([fields])
    with unit_of_work(db) as session:
        accounts.add_programme(session, "admin", programme)


def _award(db, org, programme, amount, at, expires=None):
    with unit_of_work(db) as session:
        return accounts.award_voucher(
            session, "admin", org, programme, amount, now=at.timestamp(), expires_at=expires
        ).id


def _submit(db, request, at):
    with unit_of_work(db) as session:
        return service.submit_job(session, "admin", request, now=at)[0]


def _round(db, at):
    with unit_of_work(db) as session:
        return run_round(session, FifoPolicy(), at)


def _finish(db, job_id, at):
    with unit_of_work(db) as session:
        lifecycle.finish_job(session, "admin", job_id, at=at, now=at)


def _ledger(db):
    with unit_of_work(db) as session:
        names = {r.id: r.name for r in session.scalars(select(ProgrammeRow))}
        rows = session.scalars(select(LedgerEntryRow).order_by(LedgerEntryRow.id)).all()
        return [
            (
                r.kind,
                r.period,
                r.job_id,
                r.cost,
                r.subsidy,
                r.org_pays,
                round(r.effective_gpu_hours, 4),
                names.get(r.programme_id),
                r.voucher_id,
            )
            for r in rows
        ]


def _balance(db, voucher_id):
    with unit_of_work(db) as session:
        return session.get(VoucherRow, voucher_id).balance


def _health_job(db):
    _programme(db, **HEALTH)
    voucher = _award(db, "hosp", "health", 100, dt.datetime(2026, 10, 1, tzinfo=dt.UTC))
    job = _submit(
        db, JobRequest(org="hosp", gpus=4, hours=20, gpu_types=["H100"]), Q4_END - 6 * HOUR
    )
    result = _round(db, Q4_END - 5 * HOUR)
    assert [(s.job_id, s.pool) for s in result.started] == [(job, "p-h100")]
    return voucher, job


def _expected(voucher, job):
    award = ("award", "2026-Q4", None, 0.0, 0.0, 0.0, 100.0, "health", voucher)
    q4 = ("charge", "2026-Q4", job, 400.0, 200.0, 200.0, 40.0, "health", voucher)
    expiry = ("expiry", "2026-Q4", None, 0.0, 0.0, 0.0, -66.6667, "health", voucher)
    q1 = ("charge", "2027-Q1", job, 400.0, 0.0, 400.0, 40.0, None, None)
    return award, q4, expiry, q1


def test_round_at_the_expiry_meters_the_running_job_then_expires_the_voucher(platform):
    voucher, job = _health_job(platform)
    assert _ledger(platform)[1:] == []  # nothing is charged at start
    _round(platform, Q4_END)  # the voucher is due: meter up to Q4's end, then expire
    award, q4, expiry, q1 = _expected(voucher, job)
    assert _ledger(platform) == [award, q4, expiry]
    _finish(platform, job, Q4_END + 5 * HOUR)
    assert _ledger(platform) == [award, q4, expiry, q1]
    assert _balance(platform, voucher) == 0.0


def test_finishing_after_the_expiry_splits_at_the_period_and_expiry(platform):
    voucher, job = _health_job(platform)
    _finish(platform, job, Q4_END + 5 * HOUR)
    award, q4, expiry, q1 = _expected(voucher, job)
    assert _ledger(platform) == [award, q4, q1]
    assert _balance(platform, voucher) == pytest.approx(100 - 20 / 0.6)
    _round(platform, Q4_END + 6 * HOUR)
    assert _ledger(platform) == [award, q4, q1, expiry]
    assert _balance(platform, voucher) == 0.0


def test_no_voucher_left_means_budget_exhausted_until_one_is_awarded(platform):
    _programme(platform, **{**HEALTH, "name": "gen", "domains": ["general"], "period": "quarterly"})
    t0 = dt.datetime(2026, 11, 2, 8, tzinfo=dt.UTC)
    job = _submit(platform, JobRequest(org="lab", gpus=2, hours=1), t0)
    assert _round(platform, t0).waiting == {job: WaitReason.BUDGET}
    _award(platform, "lab", "gen", 10, t0)
    # 2 A100 x 1 h: 2 voucher hours (speed 1), cost 20.00, subsidy 10.00
    assert [s.job_id for s in _round(platform, t0 + HOUR).started] == [job]
    _finish(platform, job, t0 + 2 * HOUR)
    rows = [r for r in _ledger(platform) if r[0] == "charge"]
    assert rows == [("charge", "2026-Q4", job, 20.0, 10.0, 10.0, 2.0, "gen", 1)]
    assert _balance(platform, 1) == pytest.approx(8.0)


def test_a_preempted_run_is_charged_for_what_it_used(platform):
    _programme(platform, name="half", rate=0.5)  # everyone, no limits
    t0 = dt.datetime(2026, 11, 2, 8, tzinfo=dt.UTC)
    job = _submit(platform, JobRequest(org="lab", gpus=8, hours=4, gpu_types=["A100"]), t0)
    _round(platform, t0)
    with unit_of_work(platform) as session:
        from gpupool.scheduler.rounds import _preempt

        books = accounts.load_books(session, t0 + HOUR)
        _preempt(session, job, t0 + 1.5 * HOUR, books)
    # 8 A100 x 1.5 h x 10.00 = 120.00, half paid by the programme
    assert _ledger(platform) == [("charge", "2026-Q4", job, 120.0, 60.0, 60.0, 12.0, "half", None)]


def test_bad_awards_write_nothing(platform):
    _programme(platform, **HEALTH)
    at = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    cases = [
        (("hosp", "nope", 5), "--programme", "no programme named 'nope'"),
        (("hosp", "health", -5), "--amount", "must be a positive number of voucher hours"),
        (("lab", "health", 5), "ORG", "org 'lab' is not eligible for programme 'health'"),
        (("nobody", "health", 5), "ORG", "no organisation named 'nobody'"),
    ]
    for args, location, message in cases:
        with pytest.raises(Exception) as caught:
            _award(platform, *args, at)
        assert caught.value.location == location and message in caught.value.message
    with unit_of_work(platform) as session:
        counts = [
            session.scalar(select(func.count()).select_from(t))
            for t in (VoucherRow, LedgerEntryRow)
        ]
    assert counts == [0, 0]


def test_a_finish_before_what_a_round_metered_refunds_the_difference(platform):
    """A round meters a running job up to its time (another org's voucher expires);
    the site then reports the job ended an hour after its start: the job is charged
    for that hour only, and its programme's budget and its voucher get the rest back.

    lab: 8 A100 (10.00 per GPU-hour) from T; metered to T+2h: 16 GPU-h, cost 160.00,
    half paid by ``gen`` from lab's voucher (16 voucher hours). Ends at T+1h: 80.00.
    """
    t = dt.datetime(2026, 11, 2, 8, tzinfo=dt.UTC)
    gen = {**HEALTH, "name": "gen", "domains": ["general"], "period": "quarterly"}
    _programme(platform, **{**gen, "exchange_rates": {}})
    _programme(platform, **{**HEALTH, "period": "quarterly", "when_exhausted": "full_price"})
    lab_voucher = _award(platform, "lab", "gen", 100, t - HOUR)
    _award(platform, "hosp", "health", 10, t - HOUR, expires=(t + 2 * HOUR).timestamp())
    job = _submit(platform, JobRequest(org="lab", gpus=8, hours=4, gpu_types=["A100"]), t)
    assert [s.job_id for s in _round(platform, t).started] == [job]
    _round(platform, t + 2 * HOUR)  # hosp's voucher is due: lab's job is metered to T+2h
    assert _balance(platform, lab_voucher) == pytest.approx(100 - 16)

    _finish(platform, job, t + HOUR)

    usage = [r for r in _ledger(platform) if r[2] == job]
    charge = ("charge", "2026-Q4", job, 160.0, 80.0, 80.0, 16.0, "gen", lab_voucher)
    refund = ("correction", "2026-Q4", job, -80.0, -40.0, -40.0, -8.0, "gen", lab_voucher)
    assert usage == [charge, refund]
    assert sum(r[3] for r in usage) == 80.0
    assert _balance(platform, lab_voucher) == pytest.approx(100 - 8)
    with unit_of_work(platform) as session:
        books = accounts.load_books(session, whole_ledger=False)
        assert books.budget_left("gen", t.timestamp()) == 1000 - 40
        assert books.cap_left("gen", "lab", t.timestamp()) == 600 - 40
        assert books.org_spent("lab", t.timestamp()) == 40
        assert accounts.job_accounting(session, session.get(JobRow, job))["cost"] == 80.0


def test_a_job_cap_holds_across_a_metered_round_and_the_final_charge(platform):
    """``gen``: general at 50%, at most 50.00 per job. lab: 8 A100 (10.00 per GPU-hour)
    from T, metered to T+2h by a round (hosp's voucher expires then): 160.00 wants
    80.00, the cap funds 5/8 of it (100.00, subsidy 50.00; 60.00 unfunded). Finished
    at T+3h, the last hour (80.00) gets nothing: the round's books, loaded as
    per-period sums, still know what this job got."""
    t = dt.datetime(2026, 11, 2, 8, tzinfo=dt.UTC)
    _programme(platform, name="gen", period="quarterly", domains=["general"], rate=0.5, job_cap=50)
    _programme(platform, **{**HEALTH, "period": "quarterly", "when_exhausted": "full_price"})
    _award(platform, "hosp", "health", 10, t - HOUR, expires=(t + 2 * HOUR).timestamp())
    job = _submit(platform, JobRequest(org="lab", gpus=8, hours=4, gpu_types=["A100"]), t)
    assert [s.job_id for s in _round(platform, t).started] == [job]
    _round(platform, t + 2 * HOUR)

    _finish(platform, job, t + 3 * HOUR)

    usage = [r[3:6] + (r[7],) for r in _ledger(platform) if r[2] == job]
    assert usage == [
        (100.0, 50.0, 50.0, "gen"),
        (60.0, 0.0, 60.0, None),
        (80.0, 0.0, 80.0, None),
    ]
