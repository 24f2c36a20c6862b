"""Invariants of the books over seeded random workloads."""

import random
from collections import defaultdict
from decimal import Decimal

import pytest

from gpupool.accounting.books import Books, cents
from gpupool.accounting.periods import PeriodSpec, label_bounds
from gpupool.accounting.programmes import Programme
from gpupool.model import GpuType, Job, Org, Pool

HOUR = 3600.0
TYPES = {"A100": GpuType("A100", "nv", 80, 1.0), "H100": GpuType("H100", "nv", 80, 2.5)}
POOLS = {
    "A100": Pool("a", "s", "A100", 64, 8, 7.5),
    "H100": Pool("h", "s", "H100", 64, 8, 23.0),
}
START, _ = label_bounds("2026-Q3")
ORGS = [Org(f"org{i}", ["medical", "education", "science"][i % 3]) for i in range(6)]


def random_books(rng: random.Random) -> Books:
    programmes = []
    for i in range(rng.randint(1, 3)):
        programmes.append(
            Programme(
                name=f"p{i}",
                period=rng.choice([PeriodSpec(), PeriodSpec(kind="quarter")]),
                budget=rng.choice([None, rng.uniform(50, 2000)]),
                domains=frozenset(
                    rng.sample(["medical", "education", "science"], rng.randint(0, 2))
                ),
                rate=rng.choice([0.3, 0.5, 1.0]),
                gpu_type_rates=rng.choice([{}, {"H100": 0.2}]),
                exchange_rates=rng.choice([{}, {"H100": 0.6}]),
                uses_vouchers=rng.random() < 0.5,
                org_cap=rng.choice([None, rng.uniform(10, 500)]),
                carry_over=rng.choice([0.0, 0.5]),
                spending_order=rng.choice(["earliest_expiry", "first_awarded"]),
            )
        )
    books = Books(programmes, orgs=ORGS)
    for programme in programmes:
        if programme.uses_vouchers:
            for org in ORGS:
                if programme.eligible(org.name, org.domain) and rng.random() < 0.7:
                    at = START + rng.uniform(0, 90 * 24 * HOUR)
                    expires = rng.choice([None, at + rng.uniform(1, 60) * 24 * HOUR])
                    books.award(org.name, programme.name, rng.uniform(1, 200), at, expires)
    return books


def run_workload(books: Books, rng: random.Random, jobs: int) -> dict[int, float]:
    awarded = {v.id: v.amount for v in books.vouchers}
    events = []
    for job_id in range(1, jobs + 1):
        org = rng.choice(ORGS)
        start = START + rng.uniform(0, 200 * 24 * HOUR)
        events.append((start + rng.uniform(0.1, 400) * HOUR, job_id, org, start))
    for end, job_id, org, start in sorted(events):
        books.expire(start)
        gpu_type = rng.choice(list(TYPES))
        job = Job(job_id, org.name, org.domain, rng.randint(1, 16), 1.0, start)
        books.charge(job, POOLS[gpu_type], TYPES[gpu_type], start, end)
    books.expire(START + 400 * 24 * HOUR)
    return awarded


@pytest.mark.parametrize("seed", range(12))
def test_subsidy_never_exceeds_budgets_caps_or_vouchers(seed):
    rng = random.Random(seed)
    books = random_books(rng)
    run_workload(books, rng, jobs=60)
    spent = defaultdict(Decimal)
    capped = defaultdict(Decimal)
    for entry in books.entries:
        assert entry.cost == entry.subsidy + entry.org_pays
        assert entry.subsidy >= 0 and entry.org_pays >= 0
        if entry.programme is not None and entry.kind == "charge":
            programme = books.programme(entry.programme)
            key = "all" if programme.period.kind == "fixed" else entry.period
            spent[(programme.name, key)] += entry.subsidy
            capped[(programme.name, key, entry.org)] += entry.subsidy
    for (name, _), total in spent.items():
        budget = books.programme(name).budget
        assert budget is None or total <= cents(budget)
    for (name, _, _), total in capped.items():
        cap = books.programme(name).org_cap
        assert cap is None or total <= cents(cap)
    for voucher in books.vouchers:
        assert 0.0 <= voucher.balance <= voucher.amount + 1e-9


@pytest.mark.parametrize("seed", range(12))
def test_voucher_hours_are_conserved(seed):
    # awarded + carried = spent (charge notes) + expired + still held
    rng = random.Random(100 + seed)
    books = random_books(rng)
    run_workload(books, rng, jobs=60)
    by_kind = defaultdict(float)
    for entry in books.entries:
        if entry.voucher_id is not None:
            hours = entry.effective_gpu_hours
            if entry.kind == "charge":
                hours = -float(entry.note.split()[0])
            by_kind[entry.kind] += hours
    held = sum(v.balance for v in books.vouchers)
    total = by_kind["award"] + by_kind["carry_over"] + by_kind["charge"] + by_kind["expiry"]
    assert total == pytest.approx(held, abs=1e-3)


@pytest.mark.parametrize("seed", range(6))
def test_totals_balance_and_usage_is_conserved(seed):
    rng = random.Random(200 + seed)
    books = random_books(rng)
    run_workload(books, rng, jobs=40)
    grand = books.totals()[()]
    assert grand.cost == grand.subsidy + grand.org_pays
    for group in books.totals(by=("org", "period", "gpu_type", "programme")).values():
        assert group.cost == group.subsidy + group.org_pays
    by_org = books.totals(by="org")
    assert sum((t.cost for t in by_org.values()), Decimal(0)) == grand.cost


def test_same_inputs_give_the_same_ledger():
    first, second = random_books(random.Random(5)), random_books(random.Random(5))
    run_workload(first, random.Random(6), 30)
    run_workload(second, random.Random(6), 30)
    assert first.entries == second.entries


@pytest.mark.parametrize("seed", range(12))
def test_org_pays_floor_never_exceeds_a_quote(seed):
    # admission refuses on the floor without quoting: a floor above a real quote
    # would refuse a job its org could pay
    rng = random.Random(seed)
    books = random_books(rng)
    run_workload(books, rng, jobs=30)
    for job_id in range(200):
        org = rng.choice(ORGS)
        gpu_type = rng.choice(list(TYPES))
        start = START + rng.uniform(0, 300 * 24 * HOUR)
        end = start + rng.choice([0.01, 1.0, 50.0, 2000.0]) * HOUR
        job = Job(1000 + job_id, org.name, org.domain, rng.randint(1, 16), 1.0, start)
        args = (job, POOLS[gpu_type], TYPES[gpu_type], start, end)
        quote = books.quote(*args)
        floor = books.org_pays_floor(*args)
        assert floor <= quote.org_pays + 1e-9


def test_org_pays_floor_is_close_when_rates_are_below_one():
    # 50% programme, 4 A100 x 10 h x 7.5 = 300.00: the org pays 150.00. The floor is
    # 150 less a cent per line _plan could write, counted generously: cuts <= 1 calendar
    # cut x (1 + 1 programme) + 2 x 1 programme = 4, so 5 pieces x (1 funder + 2) = 15
    half = Programme("half", rate=0.5)
    books = Books([half], orgs=ORGS)
    job = Job(1, "org0", "medical", 4, 10.0, START)
    args = (job, POOLS["A100"], TYPES["A100"], START, START + 10 * HOUR)
    assert books.quote(*args).org_pays == 150.0
    assert books.org_pays_floor(*args) == pytest.approx(150.0 - 0.15)
