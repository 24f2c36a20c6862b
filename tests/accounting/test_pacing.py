"""Subsidy pacing: a per-job cap, a budget released evenly over its period, a per-org
share of the budget. Figures computed by hand (prices as in test_books)."""

from decimal import Decimal as D
from types import SimpleNamespace

import pytest

from gpupool.accounting.books import Books
from gpupool.accounting.declarations import parse_programmes
from gpupool.accounting.periods import PeriodSpec, label_bounds
from gpupool.accounting.programmes import Programme
from gpupool.model import GpupoolError, GpuType, Job, Org, Pool
from gpupool.scheduler.repository import programme_from_row, programme_rules

HOUR = 3600.0
A100 = GpuType("A100", "nvidia", 80, speed=1.0)
POOL = Pool("bj-a100", "beijing", "A100", gpus=64, gpus_per_node=8, price_per_gpu_hour=10.0)
Q4_START, Q4_END = label_bounds("2026-Q4")  # 92 days = 2,208 hours
ORGS = [Org("pumc", "medical"), Org("thu", "education")]


def job(job_id=1, org="pumc", gpus=4) -> Job:
    domain = {"pumc": "medical", "thu": "education"}[org]
    return Job(id=job_id, org=org, domain=domain, gpus=gpus, hours=1.0, submitted_at=Q4_START)


def lines(entries):
    return [(e.cost, e.subsidy, e.org_pays, e.programme) for e in entries]


def test_job_cap_stops_one_job_and_not_the_next():
    # 4 GPUs x 2 h x 10 = 80.00 at 50% wants 40.00; the cap is 30.00: 3/4 of it is funded
    # (60.00 cost, 30.00 subsidy) and the last 20.00 is the org's.
    prog = Programme("health", rate=0.5, job_cap=30)
    books = Books([prog], orgs=ORGS)
    first = books.charge(job(1), POOL, A100, Q4_START, Q4_START + 2 * HOUR)
    assert lines(first) == [
        (D("60.00"), D("30.00"), D("30.00"), "health"),
        (D("20.00"), D("0.00"), D("20.00"), None),
    ]
    # the same job's next hour (40.00) gets nothing: the cap spans the job's whole life
    later = books.charge(job(1), POOL, A100, Q4_START + 2 * HOUR, Q4_START + 3 * HOUR)
    assert lines(later) == [(D("40.00"), D("0.00"), D("40.00"), None)]
    # another job has its own cap: 1 h = 40.00, 50% = 20.00
    other = books.charge(job(2), POOL, A100, Q4_START, Q4_START + HOUR)
    assert lines(other) == [(D("40.00"), D("20.00"), D("20.00"), "health")]


def test_job_cap_holds_in_books_rebuilt_from_the_ledger():
    prog = Programme("health", rate=0.5, job_cap=30)
    books = Books([prog], orgs=ORGS)
    books.charge(job(1), POOL, A100, Q4_START, Q4_START + HOUR)  # 20.00 of 30.00
    rebuilt = Books([prog], (), books.entries, orgs=ORGS)
    more = rebuilt.charge(job(1), POOL, A100, Q4_START + HOUR, Q4_START + 2 * HOUR)
    assert [e.subsidy for e in more] == [D("10.00"), D("0.00")]
    # books loaded from per-period sums are told the per-job figure instead
    sums = Books([prog], orgs=ORGS)
    sums.resume_job_subsidies({("health", 1): D("20.00")})
    more = sums.charge(job(1), POOL, A100, Q4_START + HOUR, Q4_START + 2 * HOUR)
    assert [e.subsidy for e in more] == [D("10.00"), D("0.00")]


def test_even_pacing_releases_the_quarter_budget_by_the_hour():
    # Q4 2026 has 2,208 hours: a budget of 2,208.00 releases 1.00 an hour.
    prog = Programme(
        "paced", period=PeriodSpec(kind="quarter"), rate=0.5, budget=2208, pacing="even"
    )
    books = Books([prog], orgs=ORGS)
    # first hour: 40.00 at 50% wants 20.00, 1.00 is released by its end -> 1/20 funded
    first = books.charge(job(1), POOL, A100, Q4_START, Q4_START + HOUR)
    assert lines(first) == [
        (D("2.00"), D("1.00"), D("1.00"), "paced"),
        (D("38.00"), D("0.00"), D("38.00"), None),
    ]
    # 1 GPU over hours 1..11: 100.00 wants 50.00; 11.00 released by hour 11, 1.00 spent
    second = books.charge(job(2, gpus=1), POOL, A100, Q4_START + HOUR, Q4_START + 11 * HOUR)
    assert lines(second) == [
        (D("20.00"), D("10.00"), D("10.00"), "paced"),
        (D("80.00"), D("0.00"), D("80.00"), None),
    ]
    assert books.budget_left("paced", Q4_START + 50 * HOUR) == D("39.00")  # 50 - 11
    # the next quarter starts from nothing released again
    assert books.budget_left("paced", Q4_END) == D("0.00")
    assert books.budget_left("paced", Q4_END - 1) == D("2197.00")  # all released, 11 spent


def test_spend_over_time_never_runs_ahead_of_the_release():
    # many jobs of every length, charged when they end; at every instant the subsidy
    # booked for usage up to then is at most what was released by then
    start, end = Q4_START, Q4_START + 100 * HOUR
    prog = Programme("paced", period=PeriodSpec(start=start, end=end), budget=100, pacing="even")
    books = Books([prog], orgs=ORGS)
    runs = [(i, (i * 7) % 90, (i * 7) % 90 + 1 + (i * 13) % 30) for i in range(1, 40)]
    for job_id, begin, finish in sorted(runs, key=lambda r: r[2]):
        books.charge(job(job_id, gpus=1), POOL, A100, start + begin * HOUR, start + finish * HOUR)
    total = D("0")
    for entry in sorted(books.entries, key=lambda e: e.at):
        total += entry.subsidy
        released = D(100) * D(str(min(1.0, (entry.at - start) / (end - start))))
        assert total <= released + D("0.01")
    assert total == D("100.00")  # and it is all spent in the end


def test_org_share_caps_each_org_at_its_share_of_the_budget():
    # budget 100.00, org_share 0.25: at most 25.00 each; 2 h at 100% wants 80.00
    prog = Programme("shared", rate=1.0, budget=100, org_share=0.25)
    books = Books([prog], orgs=ORGS)
    pumc = books.charge(job(1), POOL, A100, Q4_START, Q4_START + 2 * HOUR)
    thu = books.charge(job(2, org="thu"), POOL, A100, Q4_START, Q4_START + 2 * HOUR)
    assert [e.subsidy for e in pumc + thu] == [D("25.00"), D("0.00"), D("25.00"), D("0.00")]
    assert books.cap_left("shared", "pumc", Q4_START) == D("0.00")
    assert books.budget_left("shared", Q4_START) == D("50.00")


def test_org_share_of_a_paced_budget_is_a_share_of_what_is_released():
    # 2,208.00 over Q4 at 1.00/h, share 0.5: by hour 10 one org may have 5.00
    prog = Programme(
        "both", period=PeriodSpec(kind="quarter"), budget=2208, pacing="even", org_share=0.5
    )
    books = Books([prog], orgs=ORGS)
    entries = books.charge(job(1, gpus=1), POOL, A100, Q4_START, Q4_START + 10 * HOUR)
    assert [e.subsidy for e in entries] == [D("5.00"), D("0.00")]


def test_declarations_and_stored_rules_keep_the_pacing_options():
    (prog,) = parse_programmes(
        [
            {
                "name": "p",
                "period": "quarterly",
                "budget": 1000,
                "job_cap": 50,
                "pacing": "even",
                "org_share": 0.2,
            }
        ]
    )
    assert (prog.job_cap, prog.pacing, prog.org_share) == (50.0, "even", 0.2)
    row = SimpleNamespace(name="p", budget=1000, rules=programme_rules(prog))
    assert programme_from_row(row) == prog


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"pacing": "fast", "budget": 10, "period": "quarterly"}, "pacing"),
        ({"pacing": "even"}, "pacing"),  # nothing to release
        ({"pacing": "even", "budget": 10}, "pacing"),  # a fixed period without ends
        ({"org_share": 1.5}, "org_share"),
        ({"job_cap": -1}, "job_cap"),
    ],
)
def test_bad_pacing_options_are_refused_at_their_field(fields, where):
    with pytest.raises(GpupoolError) as caught:
        parse_programmes([{"name": "p", **fields}], "x.yaml")
    assert caught.value.location.endswith(where)
