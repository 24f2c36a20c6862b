"""Accounting invariants on the live path, over small seeded random workloads.

tests/conftest.py's platform (p-a100: 16 A100 at 10.00, p-h100: 8 H100 of speed
2 at 20.00; hosp: medical, budget 1000 per quarter; lab: general, no budget),
with two programmes whose limits bind: ``care`` (medical, rate 0.5, budget 60,
org cap 45) and ``domestic`` (vouchers, rate 0.6, H100 exchange 0.5). hosp
holds 4 voucher hours, lab 6. Every half hour, jobs whose real runtime is over
are reported finished at their real end, new jobs are submitted and a round
runs (reaping overrunning lab jobs at their estimate + grace). hosp's jobs
never overrun, so its budget is a hard limit; lab's do, so timeouts are
exercised. After the run, on the ledger in the database:

- cost == subsidy + org_pays in every entry and in the totals (exact cents);
- no programme pays more than its budget, nor more than its cap to any org;
- no voucher spends more voucher hours than it was given, and its balance is
  what was given minus what its charges noted;
- hosp pays no more than its budget; every job is charged exactly once for
  [start, end) of its run (effective GPU-hours = GPUs x hours x speed).
"""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from decimal import Decimal
from typing import NamedTuple

import pytest
from sqlalchemy import select

from gpupool.accounting.books import cents
from gpupool.accounting.declarations import parse_programmes
from gpupool.policies.fifo import FifoPolicy
from gpupool.scheduler import accounts, lifecycle, service
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import JobRow, LedgerEntryRow, ProgrammeRow, VoucherRow
from gpupool.scheduler.rounds import run_round
from gpupool.scheduler.service import JobRequest

T0 = dt.datetime(2026, 2, 2, tzinfo=dt.UTC)
STEP = dt.timedelta(minutes=30)
STEPS = 10
CARE = {"name": "care", "period": "quarterly", "budget": 60, "domains": ["medical"]}
CARE |= {"rate": 0.5, "org_cap": 45}
DOMESTIC = {"name": "domestic", "period": "quarterly", "vouchers": True, "rate": 0.6}
DOMESTIC |= {"exchange_rates": {"H100": 0.5}}
GIVEN = {"hosp": 4.0, "lab": 6.0}
SPEED = {"p-a100": 1.0, "p-h100": 2.0}
HOSP_BUDGET = Decimal("1000.00")


def workload(seed: int) -> dict[int, list[tuple[JobRequest, float]]]:
    """step -> [(request, real hours on the reference GPU)]"""
    rng = random.Random(seed)
    steps = defaultdict(list)
    for _ in range(rng.randint(7, 10)):
        org = rng.choice(("hosp", "lab"))
        hours = rng.choice((0.5, 1.0, 1.5, 2.0))
        real = hours * (rng.uniform(0.3, 1.0) if org == "hosp" else rng.uniform(0.3, 2.5))
        types = rng.choice(([], [], ["A100"], ["H100"]))
        request = JobRequest(org, rng.choice((1, 2, 4, 8)), hours, types)
        steps[rng.randrange(STEPS - 3)].append((request, real))
    return steps


def run_live(db, seed: int) -> None:
    with unit_of_work(db) as session:
        for programme in parse_programmes([CARE, DOMESTIC]):
            accounts.add_programme(session, "admin", programme)
        for org, amount in GIVEN.items():
            accounts.award_voucher(session, "admin", org, "domestic", amount, now=T0.timestamp())
    arrivals, real_hours = workload(seed), {}
    for step in range(STEPS):
        now = T0 + step * STEP
        _report_ends(db, real_hours, now)
        for request, real in arrivals.get(step, []):
            with unit_of_work(db) as session:
                real_hours[service.submit_job(session, "admin", request, now=now)[0]] = real
        with unit_of_work(db) as session:
            run_round(session, FifoPolicy(), now)


def _report_ends(db, real_hours, now) -> None:
    """Running jobs whose real runtime is over end at that instant (reported by the site)."""
    with unit_of_work(db) as session:
        running = session.scalars(select(JobRow).where(JobRow.state == "running")).all()
        ends = []
        for job in running:
            end = job.started_at + dt.timedelta(hours=real_hours[job.id] / SPEED[job.pool.name])
            if end <= now:
                ends.append((job.id, end))
    for job_id, end in ends:
        with unit_of_work(db) as session:
            lifecycle.finish_job(session, "admin", job_id, at=end, now=now)


class Row(NamedTuple):
    kind: str
    job: int | None
    org: int
    programme: str | None
    voucher: int | None
    note: str
    cost: Decimal
    subsidy: Decimal
    org_pays: Decimal
    effective_gpu_hours: float


def ledger(session) -> list[Row]:
    names = {r.id: r.name for r in session.scalars(select(ProgrammeRow))}
    return [
        Row(
            *(r.kind, r.job_id, r.org_id, names.get(r.programme_id), r.voucher_id, r.note),
            *(cents(r.cost), cents(r.subsidy), cents(r.org_pays), r.effective_gpu_hours),
        )
        for r in session.scalars(select(LedgerEntryRow).order_by(LedgerEntryRow.id))
    ]


@pytest.mark.parametrize("seed", [1, 2])
def test_ledger_invariants_on_random_live_workloads(platform, seed, monkeypatch):
    monkeypatch.delenv(lifecycle.GRACE_ENV, raising=False)
    run_live(platform, seed)
    with unit_of_work(platform) as session:
        usage = [r for r in ledger(session) if r.kind in ("charge", "correction")]
        vouchers = {v.id: (v.amount, v.balance) for v in session.scalars(select(VoucherRow))}
        jobs = session.scalars(select(JobRow)).all()
        ended = {
            j.id: (j.gpus, (j.ended_at - j.started_at).total_seconds(), j.pool.name)
            for j in jobs
            if j.ended_at is not None and j.started_at is not None
        }
        hosp = {j.org_id for j in jobs if j.org.name == "hosp"}
    assert usage and len(ended) >= 3  # the workload must run and charge something
    for row in usage:
        assert row.cost == row.subsidy + row.org_pays and row.subsidy >= 0 and row.org_pays >= 0
    assert sum(r.cost for r in usage) == sum(r.subsidy for r in usage) + sum(
        r.org_pays for r in usage
    )
    care = [r for r in usage if r.programme == "care"]
    assert sum(r.subsidy for r in care) <= Decimal(CARE["budget"])
    for org in {r.org for r in care}:
        assert sum(r.subsidy for r in care if r.org == org) <= Decimal(CARE["org_cap"])
    spent = defaultdict(float)
    for row in usage:
        if row.voucher is not None:
            spent[row.voucher] += float(row.note.split()[0])  # "6 voucher hours", 6 digits
    for voucher_id, (amount, balance) in vouchers.items():
        assert spent[voucher_id] <= amount * (1 + 1e-5)
        assert balance == pytest.approx(max(0.0, amount - spent[voucher_id]), abs=1e-4)
    assert sum(r.org_pays for r in usage if r.org in hosp) <= HOSP_BUDGET
    charged = defaultdict(float)
    for row in usage:
        charged[row.job] += row.effective_gpu_hours
    for job_id, (gpus, seconds, pool) in ended.items():
        assert charged[job_id] == pytest.approx(gpus * seconds / 3600 * SPEED[pool])
