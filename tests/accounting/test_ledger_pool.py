"""Charge entries name the pool the usage happened on; voucher entries name none."""

from decimal import Decimal as D

from gpupool.accounting.books import Books
from gpupool.accounting.programmes import Programme
from tests.accounting.test_books import (
    A100,
    A100_POOL,
    H100,
    H100_POOL,
    HOUR,
    ORGS,
    Q4_END,
    job,
)


def test_every_line_of_a_charge_carries_the_pool_charged():
    compute = Programme("compute", rate=1.0, uses_vouchers=True)
    books = Books([compute], orgs=ORGS)
    books.award("pumc", "compute", 2.0, at=Q4_END - 2 * HOUR)
    # Run 1 on bj-a100, 1 A100 from 1 h before the quarter end to 1 h after: the
    # quarter end and the 2 voucher hours cut it into 2 lines (10.00 each, the
    # voucher pays 2 A100-hours: both). Preempted, then run 2 on sh-h100: 1 H100
    # for 1 h = 20.00, voucher spent, the org pays it.
    one = job(gpus=1)
    first = books.charge(one, A100_POOL, A100, Q4_END - HOUR, Q4_END + HOUR)
    second = books.charge(one, H100_POOL, H100, Q4_END + 2 * HOUR, Q4_END + 3 * HOUR)
    assert [(e.pool, e.period, e.cost, e.subsidy) for e in first + second] == [
        ("bj-a100", "2026-Q4", D("10.00"), D("10.00")),
        ("bj-a100", "2027-Q1", D("10.00"), D("10.00")),
        ("sh-h100", "2027-Q1", D("20.00"), D("0.00")),
    ]
    (award_entry,) = [e for e in books.entries if e.kind == "award"]
    assert award_entry.pool is None
    # rebuilt from its entries, the books keep where each charge happened
    again = Books(books.programmes, books.vouchers, books.entries, orgs=ORGS)
    assert [e.pool for e in again.entries] == [e.pool for e in books.entries]
