"""Worked examples with figures computed by hand, plus rebuild and double-charge rules."""

import datetime as dt
from decimal import Decimal as D

import pytest

from gpupool.accounting.books import Books, LedgerEntry, cents
from gpupool.accounting.periods import PeriodSpec, label_bounds
from gpupool.accounting.programmes import Programme, Voucher
from gpupool.model import GpupoolError, GpuType, Job, Org, Pool

HOUR = 3600.0
A100 = GpuType("A100", "nvidia", 80, speed=1.0)
H100 = GpuType("H100", "nvidia", 80, speed=2.0)
A100_POOL = Pool("bj-a100", "beijing", "A100", gpus=16, gpus_per_node=8, price_per_gpu_hour=10.0)
H100_POOL = Pool("sh-h100", "shanghai", "H100", gpus=16, gpus_per_node=8, price_per_gpu_hour=20.0)
Q4_START, Q4_END = label_bounds("2026-Q4")
ORGS = [Org("pumc", "medical", budget=5000.0), Org("thu", "education")]


def utc(*args) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()


def job(job_id=1, org="pumc", domain="medical", gpus=4) -> Job:
    return Job(id=job_id, org=org, domain=domain, gpus=gpus, hours=1.0, submitted_at=Q4_START)


def money(entries):
    return [(e.period, e.cost, e.subsidy, e.org_pays, e.programme, e.voucher_id) for e in entries]


def test_rate_programme_pays_its_share():
    # 4 A100 x 3 h x 10/GPU-h = 120.00; 40% subsidised = 48.00; org pays 72.00
    health = Programme("health", domains=frozenset({"medical"}), rate=0.4)
    books = Books([health], orgs=ORGS)
    entries = books.charge(job(), A100_POOL, A100, Q4_START, Q4_START + 3 * HOUR)
    assert money(entries) == [("2026-Q4", D("120.00"), D("48.00"), D("72.00"), "health", None)]
    assert entries[0].effective_gpu_hours == 12.0
    assert books.accounts(Q4_START + 3 * HOUR)["pumc"].budget_left == 5000.0 - 72.0


def test_ineligible_org_pays_full_price():
    health = Programme("health", domains=frozenset({"medical"}), rate=0.4)
    books = Books([health], orgs=ORGS)
    entries = books.charge(job(org="thu", domain="education"), A100_POOL, A100, 0.0, 3 * HOUR)
    assert money(entries) == [("1970-Q1", D("120.00"), D("0.00"), D("120.00"), None, None)]


def test_a_job_across_the_quarter_end_is_split_by_period():
    # 2 H100 (speed 2) from 1 h before the Q4 end to 2 h after: 40.00 in Q4, 80.00 in Q1.
    # The programme covers Q4 only, at 50%.
    q4 = Programme("q4-health", period=PeriodSpec(start=Q4_START, end=Q4_END), rate=0.5)
    books = Books([q4], orgs=ORGS)
    entries = books.charge(job(gpus=2), H100_POOL, H100, Q4_END - HOUR, Q4_END + 2 * HOUR)
    assert money(entries) == [
        ("2026-Q4", D("40.00"), D("20.00"), D("20.00"), "q4-health", None),
        ("2027-Q1", D("80.00"), D("0.00"), D("80.00"), None, None),
    ]
    assert [e.effective_gpu_hours for e in entries] == [4.0, 8.0]
    assert books.org_spent("pumc", Q4_END - 1) == D("20.00")
    assert books.org_spent("pumc", Q4_END) == D("80.00")


def test_voucher_with_exchange_rate_covers_part_of_a_job():
    # 1 voucher hour = 0.6 H100-hours, so 10 H100 GPU-hours need 16.67 voucher hours.
    # The 10 voucher hours cover 6 GPU-hours (60%): 120.00 free, the other 80.00 paid.
    compute = Programme("compute", rate=1.0, uses_vouchers=True, exchange_rates={"H100": 0.6})
    voucher = Voucher(1, "pumc", "compute", amount=10.0, balance=10.0, awarded_at=0.0)
    books = Books([compute], [voucher], orgs=ORGS)
    entries = books.charge(job(gpus=2), H100_POOL, H100, Q4_START, Q4_START + 5 * HOUR)
    assert money(entries) == [
        ("2026-Q4", D("120.00"), D("120.00"), D("0.00"), "compute", 1),
        ("2026-Q4", D("80.00"), D("0.00"), D("80.00"), None, None),
    ]
    assert entries[0].effective_gpu_hours == pytest.approx(12.0)  # 6 GPU-hours x speed 2
    assert books.vouchers[0].balance == pytest.approx(0.0)


def test_default_exchange_is_one_voucher_hour_per_effective_gpu_hour():
    compute = Programme("compute", rate=0.5, uses_vouchers=True)
    voucher = Voucher(1, "pumc", "compute", amount=100.0, balance=100.0, awarded_at=0.0)
    books = Books([compute], [voucher], orgs=ORGS)
    # 4 H100 x 2 h = 8 GPU-hours = 16 effective GPU-hours = 16 voucher hours; cost 160.00
    entries = books.charge(job(), H100_POOL, H100, Q4_START, Q4_START + 2 * HOUR)
    assert money(entries) == [("2026-Q4", D("160.00"), D("80.00"), D("80.00"), "compute", 1)]
    assert books.vouchers[0].balance == pytest.approx(84.0)


def test_voucher_expiring_mid_job_pays_only_before_expiry():
    # A100 x1, 10/h, 5 h; the voucher expires after 2 h: 20.00 free, 30.00 paid, 98 h expire.
    start = utc(2026, 11, 1)
    compute = Programme("compute", rate=1.0, uses_vouchers=True)
    voucher = Voucher(
        7, "pumc", "compute", 100.0, 100.0, awarded_at=0.0, expires_at=start + 2 * HOUR
    )
    books = Books([compute], [voucher], orgs=ORGS)
    entries = books.charge(job(gpus=1), A100_POOL, A100, start, start + 5 * HOUR)
    assert money(entries) == [
        ("2026-Q4", D("20.00"), D("20.00"), D("0.00"), "compute", 7),
        ("2026-Q4", D("30.00"), D("0.00"), D("30.00"), None, None),
    ]
    expired = books.expire(start + 5 * HOUR)
    assert [(e.kind, e.voucher_id, e.effective_gpu_hours, e.at) for e in expired] == [
        ("expiry", 7, pytest.approx(-98.0), start + 2 * HOUR)
    ]
    assert books.expire(start + 6 * HOUR) == []  # nothing left to expire


def test_quarterly_voucher_expires_at_quarter_end_and_half_carries_over():
    quarterly = Programme(
        "compute", period=PeriodSpec(kind="quarter"), uses_vouchers=True, carry_over=0.5
    )
    books = Books([quarterly], orgs=ORGS)
    voucher = books.award("pumc", "compute", 40.0, at=utc(2026, 11, 5))
    assert voucher.expires_at == Q4_END
    books.charge(job(gpus=1), A100_POOL, A100, utc(2026, 11, 6), utc(2026, 11, 6) + 10 * HOUR)
    books.expire(Q4_END)
    kinds = [(e.kind, e.period, e.voucher_id, e.effective_gpu_hours) for e in books.entries]
    assert kinds[0] == ("award", "2026-Q4", 1, 40.0)
    assert kinds[2:] == [("expiry", "2026-Q4", 1, -30.0), ("carry_over", "2027-Q1", 2, 15.0)]
    heir = books.vouchers[1]
    assert (heir.balance, heir.awarded_at, heir.expires_at) == (
        15.0,
        Q4_END,
        label_bounds("2027-Q1")[1],
    )


def test_budget_limit_shrinks_the_funded_share():
    # cost 200.00 at 50% wants 100.00 but only 50.00 is left: half the usage is funded.
    small = Programme("small", rate=0.5, budget=50.0)
    books = Books([small], orgs=ORGS)
    entries = books.charge(job(gpus=2), H100_POOL, H100, Q4_START, Q4_START + 5 * HOUR)
    assert money(entries) == [
        ("2026-Q4", D("100.00"), D("50.00"), D("50.00"), "small", None),
        ("2026-Q4", D("100.00"), D("0.00"), D("100.00"), None, None),
    ]
    assert books.budget_left("small", Q4_START) == D("0.00")
    assert books.subsidy_left(Q4_START) == 0.0


def test_org_cap_per_period_and_budget_renewal():
    # quarterly budget 1000, cap 30 per org: pumc gets 30.00 then nothing; next quarter renews.
    capped = Programme(
        "capped", period=PeriodSpec(kind="quarter"), rate=0.5, budget=1000, org_cap=30
    )
    books = Books([capped], orgs=ORGS)
    first = books.charge(job(1), A100_POOL, A100, Q4_START, Q4_START + HOUR)  # 40.00 -> 20.00
    second = books.charge(job(2), A100_POOL, A100, Q4_START, Q4_START + HOUR)  # only 10.00 left
    assert [e.subsidy for e in first + second] == [D("20.00"), D("10.00"), D("0.00")]
    assert books.cap_left("capped", "pumc", Q4_START) == D("0.00")
    assert books.cap_left("capped", "pumc", Q4_END) == D("30.00")
    assert books.budget_left("capped", Q4_START) == D("970.00")
    nxt = books.charge(job(3), A100_POOL, A100, Q4_END, Q4_END + HOUR)
    assert money(nxt) == [("2027-Q1", D("40.00"), D("20.00"), D("20.00"), "capped", None)]


def test_programmes_fund_in_declaration_order_and_never_stack():
    first = Programme("first", rate=0.5, budget=10.0)
    second = Programme("second", rate=0.25)
    books = Books([first, second], orgs=ORGS)
    # 40.00: "first" funds 20.00 of usage (10.00 subsidy), "second" 25% of the other 20.00
    entries = books.charge(job(), A100_POOL, A100, Q4_START, Q4_START + HOUR)
    assert money(entries) == [
        ("2026-Q4", D("20.00"), D("10.00"), D("10.00"), "first", None),
        ("2026-Q4", D("20.00"), D("5.00"), D("15.00"), "second", None),
    ]


def test_gpu_type_rate_replaces_the_base_rate():
    domestic = Programme("domestic", rate=0.2, gpu_type_rates={"H100": 0.0, "A100": 0.7})
    books = Books([domestic], orgs=ORGS)
    a = books.charge(job(1), A100_POOL, A100, Q4_START, Q4_START + HOUR)
    h = books.charge(job(2), H100_POOL, H100, Q4_START, Q4_START + HOUR)
    assert [e.subsidy for e in a + h] == [D("28.00"), D("0.00")]


def test_rounding_keeps_every_entry_balanced():
    # 1 GPU x 20 min x 10/h = 3.333...: cost 3.33, subsidy 1.666... -> 1.67, org pays 1.66
    half = Programme("half", rate=0.5)
    books = Books([half], orgs=ORGS)
    (entry,) = books.charge(job(gpus=1), A100_POOL, A100, 0.0, 1200.0)
    assert (entry.cost, entry.subsidy, entry.org_pays) == (D("3.33"), D("1.67"), D("1.66"))
    assert cents(2.675) == D("2.68")  # half up on the decimal as written
    with pytest.raises(GpupoolError, match="does not balance"):
        LedgerEntry(
            kind="charge", org="x", period="2026-Q4", at=0.0, cost=1, subsidy=0.5, org_pays=0.4
        )


def test_an_interval_is_never_charged_twice_and_meter_books_the_rest():
    books = Books(orgs=ORGS)
    books.charge(job(), A100_POOL, A100, 0.0, 2 * HOUR)
    with pytest.raises(GpupoolError, match="job 1 is already charged up to 7200.0"):
        books.charge(job(), A100_POOL, A100, HOUR, 3 * HOUR)
    (rest,) = books.meter(job(), A100_POOL, A100, started_at=0.0, now=3 * HOUR)
    assert rest.cost == D("40.00") and rest.at == 3 * HOUR
    assert books.meter(job(), A100_POOL, A100, started_at=0.0, now=3 * HOUR) == []


def test_quote_books_nothing():
    books = Books([Programme("p", rate=0.5, budget=100)], orgs=ORGS)
    charge = books.quote(job(), A100_POOL, A100, 0.0, HOUR)
    assert (charge.cost, charge.subsidy, charge.org_pays, charge.programme) == (
        40.0,
        20.0,
        20.0,
        "p",
    )
    assert books.entries == () and books.budget_left("p", 0.0) == D("100.00")


def test_books_rebuilt_from_its_rows_has_the_same_balances():
    capped = Programme(
        "capped", period=PeriodSpec(kind="quarter"), rate=0.5, budget=100, org_cap=60
    )
    vouchers = Programme("vouchers", uses_vouchers=True)
    books = Books([vouchers, capped], orgs=ORGS)
    books.award("pumc", "vouchers", 3.0, at=Q4_START)
    books.charge(job(1), A100_POOL, A100, Q4_START, Q4_START + 2 * HOUR)
    books.charge(job(2, org="thu", domain="education"), H100_POOL, H100, Q4_START, Q4_START + HOUR)
    again = Books(books.programmes, books.vouchers, books.entries, orgs=ORGS)
    now = Q4_START + 3 * HOUR
    assert again.accounts(now) == books.accounts(now)
    assert again.budget_left("capped", now) == books.budget_left("capped", now)
    assert again.charged_until(1) == Q4_START + 2 * HOUR
    assert again.quote(job(3), A100_POOL, A100, now, now + HOUR) == books.quote(
        job(3), A100_POOL, A100, now, now + HOUR
    )


def test_award_rules():
    books = Books(
        [Programme("health", domains=frozenset({"medical"}), uses_vouchers=True)], orgs=ORGS
    )
    with pytest.raises(GpupoolError, match="org 'thu' is not eligible for programme 'health'"):
        books.award("thu", "health", 10.0, at=0.0)
    with pytest.raises(GpupoolError, match="no programme named 'nope'"):
        books.award("pumc", "nope", 10.0, at=0.0)
    with pytest.raises(GpupoolError, match="a voucher amount must be > 0"):
        books.award("pumc", "health", 0.0, at=0.0)


def test_recurring_programme_finer_than_the_books_is_refused():
    monthly = Programme("m", period=PeriodSpec(kind="month"))
    with pytest.raises(GpupoolError, match="recurs every month, finer than the accounting period"):
        Books([monthly])
    assert Books([monthly], period="month").programmes == (monthly,)


def test_a_run_ending_before_what_was_metered_is_corrected_to_its_end():
    # 2 H100 metered from 1 h before the Q4 end to 3 h after: 40.00 in Q4 and 120.00
    # in Q1, half of each paid from the voucher (2 voucher hours per H100-hour). The
    # run really ended 1 h after the Q4 end: the Q1 piece is refunded by two thirds
    # (80.00, 8 voucher hours back), the Q4 piece stays, and the books agree with
    # books that charged the real run.
    compute = Programme("compute", rate=0.5, uses_vouchers=True, exchange_rates={"H100": 0.5})
    voucher = Voucher(1, "pumc", "compute", amount=100.0, balance=100.0, awarded_at=0.0)
    metered = Books([compute], [voucher], orgs=ORGS)
    exact = Books([compute], [voucher], orgs=ORGS)
    run = (job(gpus=2), H100_POOL, H100, Q4_END - HOUR)
    metered.meter(*run, Q4_END + 3 * HOUR)
    corrections = metered.close_run(*run, Q4_END + HOUR)
    exact.close_run(*run, Q4_END + HOUR)
    assert money(corrections) == [
        ("2027-Q1", D("-80.00"), D("-40.00"), D("-40.00"), "compute", 1),
    ]
    assert [e.kind for e in corrections] == ["correction"]
    assert metered.totals(by="period") == exact.totals(by="period")
    assert metered.vouchers == exact.vouchers
    assert metered.charged_until(1) == Q4_END + HOUR
    assert metered.org_spent("pumc", Q4_END) == exact.org_spent("pumc", Q4_END) == D("20.00")
    assert metered.close_run(*run, Q4_END + HOUR) == []  # nothing more to correct
    rebuilt = Books([compute], [voucher], metered.entries, orgs=ORGS)
    assert rebuilt.charged_until(1) == Q4_END + HOUR
