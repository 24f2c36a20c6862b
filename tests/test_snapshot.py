"""The fast snapshot and books read path against the straightforward one.

take_snapshot reads the platform with one Core query per table and loads the
books as per-period ledger sums (accounts.load_books(whole_ledger=False)). A
seeded history on the small platform (tests/conftest.py) -- jobs submitted,
started, finished, failed, cancelled and timed out across a quarter boundary,
under a quarterly programme with an org cap, a voucher programme and flat
policy rates -- must give the same snapshot as one built from ORM rows and the
whole ledger, entry by entry (``reference_snapshot`` below, the code the fast
path replaced), and the same balances.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import replace

import pytest
from sqlalchemy import select

from gpupool.accounting import SubsidyRules
from gpupool.accounting.guarantees import (
    UsageRecord,
    guarantee_deficit,
    guarantee_shares,
    records_from_entries,
)
from gpupool.accounting.periods import PeriodSpec
from gpupool.accounting.programmes import Programme
from gpupool.model import GpupoolError
from gpupool.policies.fifo import FifoPolicy
from gpupool.policies.params import DomainShare, PolicyParams
from gpupool.scheduler import accounts, clock, lifecycle, repository, service
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import JobRow, PlacementRow
from gpupool.scheduler.rounds import run_round
from gpupool.scheduler.service import JobRequest
from gpupool.scheduler.snapshot import (
    USAGE_HALF_LIFE_HOURS,
    _deadline,
    _with_commitments,
    take_snapshot,
)

T0 = dt.datetime(2026, 12, 31, 18, 0, tzinfo=dt.UTC)  # the history crosses into 2027-Q1
RULES = SubsidyRules(domain_rates={"general": 0.2}, period_budget=500.0, org_cap=300.0)
POLICY = FifoPolicy(
    PolicyParams(
        shares={"medical": DomainShare(fraction=0.5), "general": DomainShare(fraction=0.5)},
        subsidy=RULES,
    )
)
PROGRAMMES = (
    Programme(
        "health",
        period=PeriodSpec(kind="quarter"),
        budget=400.0,
        org_cap=250.0,
        domains=frozenset({"medical"}),
        rate=0.5,
    ),
    Programme("compute", uses_vouchers=True, rate=1.0, exchange_rates={"H100": 1.5}),
)


def _history(db, seed: int, steps: int = 9) -> dt.datetime:
    """Random submissions, rounds, finishes, fails and cancels, hourly; returns the last hour."""
    rng = random.Random(seed)
    with unit_of_work(db) as session:
        for programme in PROGRAMMES:
            accounts.add_programme(session, "admin", programme)
        accounts.award_voucher(session, "admin", "lab", "compute", 6, now=T0.timestamp())
    moment = T0
    for step in range(steps):
        moment = T0 + dt.timedelta(hours=step)
        with unit_of_work(db) as session:
            for _ in range(rng.randint(1, 4)):
                request = JobRequest(
                    org=rng.choice(["hosp", "lab"]),
                    gpus=rng.choice([1, 2, 4, 8]),
                    hours=rng.choice([0.5, 1, 3, 6]),  # 6 h on an A100 times out after 6.65 h
                    gpu_types=rng.choice([[], ["H100"], ["A100"]]),
                )
                service.submit_job(session, "admin", request, now=moment)
        with unit_of_work(db) as session:
            run_round(session, POLICY, moment, pricing=RULES)
        with unit_of_work(db) as session:
            running = [j.id for j in repository.list_jobs(session, state="running")]
            pending = [j.id for j in repository.list_jobs(session, state="pending")]
        for job_id in rng.sample(running, len(running) // 3):
            with unit_of_work(db) as session:
                ended = moment + dt.timedelta(minutes=rng.randint(1, 50))
                lifecycle.finish_job(
                    session, "admin", job_id, failed=rng.random() < 0.2, at=ended, now=ended
                )
        for job_id in rng.sample(pending, len(pending) // 5):
            with unit_of_work(db) as session:
                service.cancel_job(session, "admin", job_id)
    with unit_of_work(db) as session:  # arrivals no round has seen yet
        for gpus in (8, 2):
            service.submit_job(session, "admin", JobRequest(org="lab", gpus=gpus, hours=1), moment)
    return moment


def reference_snapshot(session, moment: dt.datetime) -> dict:
    """The snapshot built the straightforward way: ORM rows, the whole ledger entry by entry."""
    epoch = clock.to_epoch(moment)
    grace = lifecycle.parse_grace(None)
    books = accounts.load_books(session, epoch, rules=RULES, whole_ledger=True)
    accounts.close_books(session, books, moment, write=False)
    gpu_types = {r.name: repository.gpu_type_model(r) for r in repository.list_gpu_types(session)}
    pools = [repository.pool_model(r) for r in repository.list_pools(session)]
    placements = {p.job_id: p for p in repository.open_placements(session)}
    running = []
    for row in repository.list_jobs(session, state="running"):
        placement = placements[row.id]
        job = repository.job_model(row)
        started = clock.to_epoch(placement.started_at)
        speed = gpu_types[placement.pool.gpu_type.name].speed
        run = lifecycle_run(job, repository.placement_model(placement), started, speed)
        if _deadline(grace, run) > epoch:
            running.append(replace(run, expected_end=max(run.expected_end, epoch)))
    free = {p.name: list(p.node_sizes()) for p in pools}
    for run in running:
        for node, gpus in run.placement.nodes:
            free[run.placement.pool][node] -= gpus
    committed = _with_commitments(books, running, gpu_types, pools, epoch)
    records = records_from_entries(books.entries)
    pool_type = {p.name: p.gpu_type for p in pools}
    for run in running:
        since = max(run.started_at, books.charged_until(run.job.id) or run.started_at)
        if epoch > since:
            hours = (
                (epoch - since)
                / 3600
                * run.job.gpus
                * gpu_types[pool_type[run.placement.pool]].speed
            )
            records.append(UsageRecord(run.job.domain, since, epoch, hours))
    shares = guarantee_shares(POLICY.params, gpu_types, pools)
    capacity = sum(p.gpus * gpu_types[p.gpu_type].speed for p in pools)
    usage = _reference_usage(session, moment, epoch, grace)
    return {
        "gpu_types": gpu_types,
        "pools": tuple((p, tuple(free[p.name])) for p in pools),
        "domains": {r.name: repository.domain_model(r) for r in repository.list_domains(session)},
        "orgs": {r.name: repository.org_model(r) for r in repository.list_orgs(session)},
        "pending": tuple(repository.job_model(r) for r in repository.list_jobs(session, "pending")),
        "running": tuple(running),
        "accounts": committed.accounts(epoch),
        "subsidy_budget_left": committed.subsidy_left(epoch),
        "usage": usage,
        "guarantee_deficit": guarantee_deficit(
            records, shares, "quarter", epoch, capacity_per_hour=capacity
        ),
        "pricing": committed,
    }


def _reference_usage(session, moment, epoch: float, grace) -> dict:
    """Every run's use, each hour decayed by its age, summed in small steps (the integral)."""
    usage: dict[str, float] = {}
    for placement in session.scalars(select(PlacementRow)):
        job = session.get(JobRow, placement.job_id)
        speed = placement.pool.gpu_type.speed
        end = placement.ended_at or min(
            moment, grace.deadline(placement.started_at, job.hours, speed)
        )
        # a run reported to end after the snapshot counts up to the snapshot
        start, stop = clock.to_epoch(placement.started_at), min(clock.to_epoch(end), epoch)
        steps = 2000
        width = (stop - start) / steps
        total = 0.0
        for i in range(steps):  # midpoint rule
            age = (epoch - (start + (i + 0.5) * width)) / 3600
            total += job.gpus * speed * width / 3600 * 0.5 ** (age / USAGE_HALF_LIFE_HOURS)
        domain = job.org.domain.name
        usage[domain] = usage.get(domain, 0.0) + total
    return usage


def lifecycle_run(job, placement, started: float, speed: float):
    from gpupool.model import RunningJob

    return RunningJob(job, placement, started, started + job.hours / speed * 3600.0)


def _quotes(books, snapshot_pools, gpu_types, jobs) -> dict:
    quotes = {}
    for job in jobs:
        for pool in snapshot_pools:
            if job.allows(pool.gpu_type):
                end = 1_800_000_000.0 + job.hours * 3600
                quotes[job.id, pool.name] = books.assess(
                    job, pool, gpu_types[pool.gpu_type], 1_800_000_000.0, end
                )
    return quotes


# Two seeded histories on SQLite, the first on PostgreSQL too: the per-period sums
# are SQL aggregates over Decimal columns on both, and a second history on the
# second database adds values, not paths.
@pytest.mark.parametrize(
    ("db_kind", "seed"),
    [("sqlite", 3), ("sqlite", 11), pytest.param("postgres", 3, marks=pytest.mark.postgres)],
    indirect=["db_kind"],
)
def test_snapshot_matches_the_straightforward_build(platform, seed):
    last = _history(platform, seed)
    for moment in (last, last + dt.timedelta(minutes=30), last + dt.timedelta(hours=9)):
        with unit_of_work(platform) as session:
            want = reference_snapshot(session, moment)
            books = accounts.load_books(session, moment, rules=RULES, whole_ledger=False)
            accounts.close_books(session, books, moment, write=False)
            got = take_snapshot(session, moment, pricing=RULES, books=books, policy=POLICY)
        assert got.pending and (got.running or moment > last)  # both are exercised
        assert got.gpu_types == want["gpu_types"]
        assert tuple((s.pool, s.free_per_node) for s in got.pools) == want["pools"]
        assert (got.domains, got.orgs) == (want["domains"], want["orgs"])
        assert got.pending == want["pending"]
        assert got.running == want["running"]
        assert got.accounts == want["accounts"]
        assert got.subsidy_budget_left == want["subsidy_budget_left"]
        assert got.usage == pytest.approx(
            want["usage"], rel=1e-9
        )  # the reference integrates in steps
        assert got.guarantee_deficit == pytest.approx(want["guarantee_deficit"], rel=1e-12)
        assert any(want["guarantee_deficit"].values())  # the guarantee term is exercised
        pools = [s.pool for s in got.pools]
        assert _quotes(got.pricing, pools, got.gpu_types, got.pending) == _quotes(
            want["pricing"], pools, got.gpu_types, got.pending
        )


def test_books_from_ledger_sums_hold_the_same_balances(platform):
    last = _history(platform, seed=5)
    with unit_of_work(platform) as session:
        whole = accounts.load_books(session, last, rules=RULES, whole_ledger=True)
        sums = accounts.load_books(session, last, rules=RULES, whole_ledger=False)
        holding = [p.job_id for p in repository.open_placements(session)]
        ended = [j.id for j in repository.list_jobs(session, state=["completed", "failed"])]
    assert len(sums.entries) < len(whole.entries)  # sums, not the ledger
    assert holding and ended
    for t in (T0, last, last + dt.timedelta(days=100)):
        epoch = clock.to_epoch(t)
        assert sums.accounts(epoch) == whole.accounts(epoch)
        assert sums.subsidy_left(epoch) == whole.subsidy_left(epoch)
        for programme in PROGRAMMES:
            assert sums.budget_left(programme.name, epoch) == whole.budget_left(
                programme.name, epoch
            )
            for org in ("hosp", "lab"):
                assert sums.cap_left(programme.name, org, epoch) == whole.cap_left(
                    programme.name, org, epoch
                )
                assert sums.org_spent(org, epoch) == whole.org_spent(org, epoch)
    assert _money_totals(sums) == _money_totals(whole)
    for job_id in holding:
        assert sums.charged_until(job_id) == whole.charged_until(job_id)
    assert all(sums.charged_until(j) is None for j in ended)  # not needed: not loaded


def _money_totals(books) -> dict:
    """Cost, subsidy and org_pays per (programme, org, period): exact Decimals."""
    totals = books.totals(by=("programme", "org", "period"))
    return {k: (t.cost, t.subsidy, t.org_pays) for k, t in totals.items()}


def test_charging_an_ended_job_again_is_still_refused(platform):
    """The double-booking guard holds with sums: settle loads the job's charged-until."""
    last = _history(platform, seed=7, steps=4)
    with unit_of_work(platform) as session:
        job = repository.list_jobs(session, state=["completed", "failed"])[0]
        placement = repository.placements_of(session, job.id)[-1]
        books = accounts.load_books(session, last, whole_ledger=False, jobs=[job.id])
        job_model = repository.job_model(job)
        pool = repository.pool_model(placement.pool)
        gpu_type = repository.gpu_type_model(placement.pool.gpu_type)
        with pytest.raises(GpupoolError, match=f"job {job.id} is already charged up to"):
            books.charge(
                job_model,
                pool,
                gpu_type,
                clock.to_epoch(placement.started_at),
                clock.to_epoch(job.ended_at),
            )
