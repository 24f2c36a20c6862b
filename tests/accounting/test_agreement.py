"""Live and simulated accounting agree exactly on the same platform and the same runs.

The live service (SQLite and PostgreSQL, tests/conftest.py's small platform:
p-a100 = 16 A100 on 2 nodes at 10.00, p-h100 = 8 H100 (speed 2) at 20.00;
hosp (medical, budget 1000), lab (general)) and a Simulation of the same
platform replay the same jobs under fifo with the same programmes:

- ``care``: medical, quarterly, rate 0.5, budget 150, org cap 90;
- ``domestic``: vouchers, rate 0.6, H100 exchange 0.5 (one voucher hour buys
  half an H100-hour); lab holds 10 voucher hours.

Jobs (T0 = 2026-01-05 00:00 UTC, hours are reference hours):

    1 hosp 8 A100-only x 2 h, at T0        -> p-a100 node 0, T0 .. T0+2h
    2 lab  4 H100-only, est 2 h, real 1.5  -> p-h100, T0 .. T0+45m
    3 lab  8 GPUs, est 1 h, real 3 h, T0+30m -> p-a100 node 1, timed out at
           its estimate + 10% + 5 min: T0+30m+71m = T0+1h41m (both paths)
    4 hosp 4 GPUs x 1 h at T0+1h           -> p-h100, T0+1h .. T0+1h30m
    5 hosp 16 A100-only x 1 h at T0+1h     -> p-a100 once both nodes free, T0+2h .. T0+3h

Ledger, worked by hand:

    job 2: 3 H100 GPU-h = 60.00; 6 voucher hours cover it: subsidy 36.00 (balance 4)
    job 3: 8 x 71/60 GPU-h = 94.67; 4 voucher hours (1 per A100 GPU-h) cover
           4 / 9.4667 of it: 40.00 of cost, subsidy 24.00; the rest, 54.67, unfunded
    job 4: 2 H100 GPU-h = 40.00. Charges spend limits in start order: job 1,
           started before it and still running, is booked ahead first (care pays
           80.00 of its 160.00, cap left 10), so care pays 10.00 of job 4's 40.00
           and hosp 30.00
    job 1: 160.00, care pays the 80.00 it was promised (cap left 80: 90 - 10)
    job 5: 160.00, care's cap is used up: paid in full

The live path is driven at the simulation's event instants (arrivals and
ends), reporting finished jobs at their simulated end and letting rounds reap
the overrunning one, with explicit times throughout.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal

import pytest
from sqlalchemy import select

from gpupool.accounting.books import cents
from gpupool.accounting.declarations import parse_programmes, parse_vouchers
from gpupool.model import Domain, GpuType, Job, Org, Pool
from gpupool.policies.fifo import FifoPolicy
from gpupool.scheduler import accounts, lifecycle, service
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import JobRow, LedgerEntryRow, ProgrammeRow, VoucherRow
from gpupool.scheduler.rounds import run_round
from gpupool.scheduler.service import JobRequest
from gpupool.simulations.engine import FINISHED, TIMED_OUT, Simulation
from gpupool.simulations.workload import Scenario, SimJob

T0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
HOUR = 3600.0
PROGRAMMES = [
    {
        "name": "care",
        "period": "quarterly",
        "budget": 150,
        "domains": ["medical"],
        "rate": 0.5,
        "org_cap": 90,
    },
    {
        "name": "domestic",
        "period": "quarterly",
        "vouchers": True,
        "rate": 0.6,
        "exchange_rates": {"H100": 0.5},
    },
]
VOUCHER = {"org": "lab", "programme": "domestic", "amount": 10, "awarded_at": T0.timestamp()}
# id, org, gpus, estimate hours, real hours, arrival (hours after T0), allowed types
JOBS = (
    (1, "hosp", 8, 2.0, 2.0, 0.0, ("A100",)),
    (2, "lab", 4, 2.0, 1.5, 0.0, ("H100",)),
    (3, "lab", 8, 1.0, 3.0, 0.5, ()),
    (4, "hosp", 4, 1.0, 1.0, 1.0, ()),
    (5, "hosp", 16, 1.0, 1.0, 1.0, ("A100",)),
)
DOMAIN = {"hosp": "medical", "lab": "general"}
USAGE = ("charge", "correction")


def _at(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


def simulated():
    programmes = parse_programmes(PROGRAMMES)
    scenario = Scenario(
        name="agreement",
        gpu_types={
            "A100": GpuType("A100", "NVIDIA", 80, 1.0),
            "H100": GpuType("H100", "NVIDIA", 80, 2.0),
        },
        pools=(
            Pool("p-a100", "Beijing", "A100", 16, 8, 10.0),
            Pool("p-h100", "Shanghai", "H100", 8, 8, 20.0),
        ),
        domains={"medical": Domain("medical", 3.0), "general": Domain("general", 1.0)},
        orgs={"hosp": Org("hosp", "medical", 1000.0), "lab": Org("lab", "general", None)},
        jobs=tuple(
            SimJob(
                Job(i, org, DOMAIN[org], gpus, est, T0.timestamp() + at * HOUR, gpu_types=types),
                real,
            )
            for i, org, gpus, est, real, at, types in JOBS
        ),
        programmes=programmes,
        vouchers=parse_vouchers([VOUCHER], programmes=programmes),
    )
    simulation = Simulation(scenario, FifoPolicy())
    return simulation.run(), simulation.books


@pytest.fixture(scope="module")
def simulation():
    return simulated()


@pytest.fixture(scope="module")
def sim(simulation):
    return simulation[0]


def drive_live(db, sim) -> None:
    """Submit, finish and run rounds at the simulation's event instants, in its order."""
    with unit_of_work(db) as session:
        for programme in parse_programmes(PROGRAMMES):
            accounts.add_programme(session, "admin", programme)
    with unit_of_work(db) as session:
        accounts.award_voucher(session, "admin", "lab", "domestic", 10, now=T0.timestamp())
    arrivals = defaultdict(list)
    for i, org, gpus, est, _real, at, types in JOBS:
        arrivals[T0.timestamp() + at * HOUR].append((i, JobRequest(org, gpus, est, list(types))))
    ends = defaultdict(list)
    for record in sim.records:
        if record.state == FINISHED:  # a site reports it; timed-out jobs are left to rounds
            ends[record.finished_at].append(record.job.id)
    for instant in sorted(set(arrivals) | set(ends) | {r.finished_at for r in sim.records}):
        moment = _at(instant)
        for job_id in ends[instant]:
            with unit_of_work(db) as session:
                lifecycle.finish_job(session, "admin", job_id, at=moment, now=moment)
        for job_id, request in arrivals[instant]:
            with unit_of_work(db) as session:
                assert service.submit_job(session, "admin", request, now=moment)[0] == job_id
        with unit_of_work(db) as session:
            run_round(session, FifoPolicy(), moment)


def live_state(db):
    with unit_of_work(db) as session:
        names = {r.id: r.name for r in session.scalars(select(ProgrammeRow))}
        rows = session.scalars(select(LedgerEntryRow).order_by(LedgerEntryRow.id)).all()
        jobs = {
            j.id: (j.state, j.pool.name, j.started_at.timestamp(), j.ended_at.timestamp())
            for j in session.scalars(select(JobRow))
        }
        ledger = [_live_row(row, names) for row in rows if row.kind in USAGE]
        balances = [v.balance for v in session.scalars(select(VoucherRow).order_by(VoucherRow.id))]
    return jobs, ledger, balances


def _live_row(row, names) -> tuple:
    return (
        row.kind,
        row.job_id,
        names.get(row.programme_id),
        cents(row.cost),
        cents(row.subsidy),
        cents(row.org_pays),
    )


def _sim_row(entry) -> tuple:
    return (entry.kind, entry.job_id, entry.programme, entry.cost, entry.subsidy, entry.org_pays)


def totals(rows, key_index) -> dict:
    sums: dict = defaultdict(lambda: [Decimal("0.00")] * 3)
    for row in rows:
        if row[0] in ("charge", "correction"):
            cell = sums[row[key_index]]
            for k in range(3):
                cell[k] += row[3 + k]
    return {key: tuple(value) for key, value in sums.items()}


def test_the_simulation_runs_as_worked(sim):
    runs = {
        r.job.id: (r.state, r.pool, (r.first_start - T0.timestamp()) / HOUR) for r in sim.records
    }
    assert runs == {
        1: (FINISHED, "p-a100", 0.0),
        2: (FINISHED, "p-h100", 0.0),
        3: (TIMED_OUT, "p-a100", 0.5),
        4: (FINISHED, "p-h100", 1.0),
        5: (FINISHED, "p-a100", 2.0),
    }
    (timed_out,) = [r for r in sim.records if r.state == TIMED_OUT]
    assert timed_out.finished_at - T0.timestamp() == pytest.approx(0.5 * HOUR + 71 * 60)
    by_job = totals([_sim_row(e) for e in sim.ledger], 1)
    d = Decimal
    assert by_job == {
        1: (d("160.00"), d("80.00"), d("80.00")),
        2: (d("60.00"), d("36.00"), d("24.00")),
        3: (d("94.67"), d("24.00"), d("70.67")),
        4: (d("40.00"), d("10.00"), d("30.00")),
        5: (d("160.00"), d("0.00"), d("160.00")),
    }


def test_live_ledger_agrees_with_the_simulation(platform, simulation, monkeypatch):
    sim, books = simulation
    monkeypatch.delenv(lifecycle.GRACE_ENV, raising=False)  # the default grace in both
    drive_live(platform, sim)
    jobs, live_ledger, balances = live_state(platform)
    sim_jobs = {
        r.job.id: (
            "timed_out" if r.state == TIMED_OUT else "completed",
            r.pool,
            r.first_start,
            r.finished_at,
        )
        for r in sim.records
    }
    assert {i: (s, p, pytest.approx(a), pytest.approx(b)) for i, (s, p, a, b) in jobs.items()} == (
        sim_jobs
    )
    sim_ledger = [_sim_row(e) for e in sim.ledger if e.kind in USAGE]
    # per org (job -> org is fixed), per programme, per job, and row by row
    assert totals(live_ledger, 2) == totals(sim_ledger, 2)
    assert totals(live_ledger, 1) == totals(sim_ledger, 1)
    assert sorted(live_ledger, key=repr) == sorted(sim_ledger, key=repr)
    assert balances == [pytest.approx(v.balance) for v in books.vouchers]
    assert balances == [pytest.approx(0.0)]  # 6 on job 2, the last 4 on job 3
    org_of = {i: org for i, org, *_ in JOBS}
    live_orgs = totals([(r[0], org_of.get(r[1]), *r[2:]) for r in live_ledger], 1)
    sim_orgs = totals([(r[0], org_of.get(r[1]), *r[2:]) for r in sim_ledger], 1)
    assert live_orgs == sim_orgs
    d = Decimal
    assert live_orgs["hosp"] == (d("360.00"), d("90.00"), d("270.00"))  # care's cap: 90
    assert live_orgs["lab"] == (d("154.67"), d("60.00"), d("94.67"))
