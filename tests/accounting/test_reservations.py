"""Books.committed reservations, and keeping one when a reserved run ends as reserved.

A committed twin books running jobs ahead, one after another. When no limit
made that order matter, a run charged on the real books exactly as it was
reserved leaves the twin equal to a rebuild once ``drop_charged_reservation``
has run; when a limit did (two reservations competing for one voucher or
budget), the twin says it cannot be kept (``holds_reservation`` is False).
"""

import random
from decimal import Decimal as D

import pytest

from gpupool.accounting.books import Books
from gpupool.accounting.periods import label_bounds
from gpupool.accounting.pricing import SubsidyRules
from gpupool.accounting.programmes import Programme, Voucher
from gpupool.model import GpuType, Job, Org, Pool
from tests.accounting.test_invariants import ORGS as RANDOM_ORGS
from tests.accounting.test_invariants import POOLS, START, TYPES, random_books

HOUR = 3600.0
A100 = GpuType("A100", "nvidia", 80, speed=1.0)
POOL = Pool("bj-a100", "beijing", "A100", gpus=16, gpus_per_node=8, price_per_gpu_hour=10.0)
Q4_START, _ = label_bounds("2026-Q4")
ORGS = [Org("pumc", "medical", budget=5000.0), Org("thu", "education", budget=5000.0)]


def run(job_id: int, org: str, hours: float, gpus: int = 1) -> tuple:
    domain = {"pumc": "medical", "thu": "education"}[org]
    job = Job(id=job_id, org=org, domain=domain, gpus=gpus, hours=hours, submitted_at=Q4_START)
    return (job, POOL, A100, Q4_START, Q4_START + hours * HOUR)


def balances(books: Books) -> tuple:
    now = Q4_START
    vouchers = tuple((v.id, v.balance) for v in books.vouchers)
    return books.accounts(now), books.subsidy_left(now), vouchers


def end_run(programmes, vouchers, runs, index=0) -> tuple[Books, Books, bool]:
    """Reserve ``runs``, end ``runs[index]`` as reserved; return (settled twin, rebuild, kept)."""
    books = Books(programmes, vouchers, orgs=ORGS)
    twin = books.committed(runs, Q4_START)
    ended = runs[index]
    kept = twin.holds_reservation(ended[0].id, ended[4])
    books.charge(*ended)
    if kept:
        twin.drop_charged_reservation(ended[0].id, books)
    return twin, books.committed(runs[:index] + runs[index + 1 :], Q4_START), kept


def test_a_reservation_no_limit_binds_is_kept_and_matches_a_rebuild():
    # 50% of 10/GPU-h, budget 1000: the three runs reserve 5 + 20 + 40 = 65, far from it
    health = Programme("health", rate=0.5, budget=1000.0)
    runs = [run(1, "pumc", 1.0), run(2, "thu", 2.0, gpus=2), run(3, "pumc", 4.0, gpus=2)]
    twin, rebuild, kept = end_run([health], [], runs)
    assert kept
    assert balances(twin) == balances(rebuild)
    assert twin.budget_left("health", Q4_START) == D("1000.00") - D("65.00")


def test_vouchers_used_by_several_reservations_are_replayed_like_a_rebuild():
    # One A100 GPU-hour takes 1/3 voucher hour. The middle run ends: a rebuild takes
    # 10 - b - a - c, the twin held 10 - a - b - c: as floats these differ here.
    compute = Programme("compute", rate=1.0, uses_vouchers=True, exchange_rates={"A100": 3.0})
    voucher = Voucher(1, "pumc", "compute", amount=10.0, balance=10.0, awarded_at=0.0)
    runs = [run(1, "pumc", 0.1), run(2, "pumc", 2.3), run(3, "pumc", 0.1)]
    twin, rebuild, kept = end_run([compute], [voucher], runs, index=1)
    assert kept
    assert balances(twin) == balances(rebuild)


def test_reservations_competing_for_a_voucher_cannot_be_kept():
    # 4 voucher hours, the first run's 3 GPU-hours take 3: the second run gets only 1 of its 2
    compute = Programme("compute", rate=1.0, uses_vouchers=True)
    voucher = Voucher(1, "pumc", "compute", amount=4.0, balance=4.0, awarded_at=0.0)
    runs = [run(1, "pumc", 3.0), run(2, "pumc", 2.0)]
    _, _, kept = end_run([compute], [voucher], runs)
    assert not kept


def test_reservations_competing_for_a_budget_cannot_be_kept():
    # budget 30 at 50%: run 1 reserves 20 (4 GPU-h), run 2 wants 20 and gets the last 10
    health = Programme("health", rate=0.5, budget=30.0)
    runs = [run(1, "pumc", 4.0), run(2, "thu", 4.0)]
    _, _, kept = end_run([health], [], runs)
    assert not kept


def test_a_limit_exhausted_before_the_reservations_does_not_make_them_compete():
    # the budget is spent by an earlier charge: every reservation gets 0 whatever the order
    health = Programme("health", rate=0.5, budget=10.0)
    books = Books([health], orgs=ORGS)
    books.charge(*run(9, "thu", 4.0))  # wants 20, gets the whole 10
    runs = [run(1, "pumc", 4.0), run(2, "thu", 4.0)]
    twin = books.committed(runs, Q4_START)
    assert twin.holds_reservation(1, runs[0][4])
    books.charge(*runs[0])
    twin.drop_charged_reservation(1, books)
    assert balances(twin) == balances(books.committed(runs[1:], Q4_START))


def test_a_run_ending_before_its_reserved_end_is_not_kept():
    health = Programme("health", rate=0.5, budget=1000.0)
    books = Books([health], orgs=ORGS)
    job, pool, gpu_type, start, end = run(1, "pumc", 2.0)
    twin = books.committed([(job, pool, gpu_type, start, end)], Q4_START)
    assert not twin.holds_reservation(1, end - HOUR)
    assert twin.holds_reservation(1, end)


def _state(books: Books) -> tuple:
    return (
        {k: v for k, v in books._spent.items() if v},
        {k: v for k, v in books._capped.items() if v},
        {k: v for k, v in books._org_paid.items() if v},
        books.vouchers,
        books._watch.contended,
    )


@pytest.mark.parametrize("seed", range(16))
def test_reserving_with_a_memo_gives_the_books_a_fresh_pricing_gives(seed):
    # random programmes and vouchers with small budgets, caps and balances, so that
    # limits bind; runs start and end (charged on the books) in random order, and
    # after every change the memoised reservation must equal one priced afresh
    rng = random.Random(seed)
    books = random_books(rng)
    memo: dict = {}
    running: dict[int, tuple] = {}
    now = START
    reused = 0
    for step in range(120):
        now += rng.uniform(0, 20) * HOUR
        event = rng.random()
        if running and event < 0.4:
            job_id = rng.choice(sorted(running))
            job, pool, gpu_type, started, expected = running.pop(job_id)
            books.meter(job, pool, gpu_type, started, max(now, started + 1.0))
            memo.pop(job_id, None)
        elif event < 0.5:  # usage no reservation foresaw: leaves every limit less room
            org = rng.choice(RANDOM_ORGS)
            job = Job(10_000 + step, org.name, org.domain, rng.randint(1, 16), 1.0, now)
            books.charge(job, POOLS["H100"], TYPES["H100"], now - 30 * HOUR, now)
        elif event < 0.55 and any(p.uses_vouchers for p in books.programmes):
            prog = rng.choice([p for p in books.programmes if p.uses_vouchers])
            org = rng.choice([o for o in RANDOM_ORGS if prog.eligible(o.name, o.domain)] or [None])
            if org is not None:  # a new voucher may fund runs priced before it existed
                books.award(org.name, prog.name, rng.uniform(1, 200), now)
        else:
            org = rng.choice(RANDOM_ORGS)
            kind = rng.choice(list(TYPES))
            job = Job(step + 1, org.name, org.domain, rng.randint(1, 16), 1.0, now)
            running[job.id] = (job, POOLS[kind], TYPES[kind], now, now + rng.uniform(1, 300) * HOUR)
        if books.expiring(now):
            for job, pool, gpu_type, started, _ in running.values():
                books.meter(job, pool, gpu_type, started, now)
            books.expire(now)
        runs = list(running.values())
        before = {job_id: m.draft for job_id, m in memo.items()}
        with_memo = books.committed(runs, now, memo)
        reused += sum(memo[job_id].draft is draft for job_id, draft in before.items())
        assert _state(with_memo) == _state(books.committed(runs, now))
    assert reused > 0


def test_a_charge_spends_only_what_runs_started_before_it_leave():
    # 10 voucher hours at rate 1, one per A100 GPU-hour, price 10. A (1 GPU, 8 h) starts
    # first; B (1 GPU, 4 h) starts an hour later and ends first. With A booked ahead, B
    # finds 10 - 8 = 2 hours: 20.00 of its 40.00 is subsidised; A then gets all its 8
    # (80.00), as admission quoted them. Charged in end order alone, B would take 4
    # and leave A 6 (60.00 of 80.00): the org would pay 20.00 more than quoted.
    compute = Programme("compute", rate=1.0, uses_vouchers=True)
    voucher = Voucher(1, "pumc", "compute", amount=10.0, balance=10.0, awarded_at=0.0)
    a = run(1, "pumc", 8.0)
    b_job = Job(id=2, org="pumc", domain="medical", gpus=1, hours=4.0, submitted_at=Q4_START)
    b_start, b_end = Q4_START + HOUR, Q4_START + 5 * HOUR
    books = Books([compute], [voucher], orgs=ORGS)
    b_entries = books.charge(b_job, POOL, A100, b_start, b_end, ahead=[a])
    a_entries = books.charge(*a)
    assert sum(e.subsidy for e in b_entries) == D("20.00")
    assert sum(e.subsidy for e in a_entries) == D("80.00")
    assert books.vouchers[0].balance == 0.0

    in_end_order = Books([compute], [voucher], orgs=ORGS)
    in_end_order.charge(b_job, POOL, A100, b_start, b_end)
    assert sum(e.subsidy for e in in_end_order.charge(*a)) == D("60.00")


def _full_fork_price(books: Books, job, pool, gpu_type, start, end, ahead) -> list:
    """What the charge priced before runs ahead were filtered: every one booked ahead."""
    planner = books.reserve(books.fork(), ahead, end)
    lines = planner._plan(job, pool, gpu_type, start, end).lines
    return [(line.cost, line.subsidy, line.programme, line.voucher_id) for line in lines]


def test_a_charge_books_ahead_only_the_runs_linked_to_it_and_prices_the_same():
    # random programmes (some for one or two domains, some for all) with small limits;
    # each charge's price, with only the runs ahead that share a chain of programmes
    # with it booked ahead, must be what booking every run ahead gives
    skipped = 0
    for seed in range(24):
        skipped += _charge_in_random_order(random.Random(seed))
    assert skipped > 0  # some seeds' programmes leave runs ahead unlinked


def _charge_in_random_order(rng: random.Random) -> int:
    """Start and charge runs at random, checking each price; the runs ahead left out."""
    books = random_books(rng)
    now, running, skipped = START, [], 0
    for step in range(60):
        now += rng.uniform(0, 20) * HOUR
        if running and rng.random() < 0.4:
            job, pool, gpu_type, started, _ = running.pop(rng.randrange(len(running)))
            ahead = [r for r in running if r[3] <= started]
            expected = _full_fork_price(books, job, pool, gpu_type, started, now, ahead)
            skipped += len(ahead) - len(books.ahead_that_matters(job, ahead))
            entries = books.charge(job, pool, gpu_type, started, now, ahead)
            assert [(e.cost, e.subsidy, e.programme, e.voucher_id) for e in entries] == expected
        else:
            org = rng.choice(RANDOM_ORGS)
            kind = rng.choice(list(TYPES))
            job = Job(step + 1, org.name, org.domain, rng.randint(1, 16), 1.0, now)
            running.append((job, POOLS[kind], TYPES[kind], now, now + rng.uniform(1, 300) * HOUR))
    return skipped


def test_runs_ahead_linked_through_a_chain_of_programmes_are_kept_in_order():
    # health funds medical; sci (funding first) science and industry; edu education and
    # science. An education job reads edu's limits: a science run draws on them, and an
    # industry run's draw on sci moves what of that science run falls through to edu
    health = Programme("health", rate=0.5, budget=100.0, domains=frozenset({"medical"}))
    sci = Programme("sci", rate=0.3, budget=100.0, domains=frozenset({"science", "industry"}))
    edu = Programme("edu", rate=0.5, budget=100.0, domains=frozenset({"education", "science"}))
    orgs = [Org("pumc", "medical"), Org("thu", "education"), Org("cas", "science")]
    books = Books([health, sci, edu], orgs=orgs + [Org("byd", "industry")])

    def ahead_run(job_id, org, domain):
        job = Job(job_id, org, domain, 1, 1.0, Q4_START)
        return (job, POOL, A100, Q4_START, Q4_START + HOUR)

    runs = [
        ahead_run(1, "byd", "industry"),
        ahead_run(2, "pumc", "medical"),
        ahead_run(3, "thu", "education"),
        ahead_run(4, "cas", "science"),
    ]
    medical = Job(9, "pumc", "medical", 1, 1.0, Q4_START)
    education = Job(10, "thu", "education", 1, 1.0, Q4_START)
    nobody = Job(11, "acme", "retail", 1, 1.0, Q4_START)
    assert [r[0].id for r in books.ahead_that_matters(medical, runs)] == [2]
    assert [r[0].id for r in books.ahead_that_matters(education, runs)] == [1, 3, 4]
    assert books.ahead_that_matters(nobody, runs) == []


def test_with_flat_rates_every_run_ahead_is_booked():
    # the flat rates' budget is shared by every org: any run ahead may move it
    flat = SubsidyRules(domain_rates={"medical": 0.5}, period_budget=100.0)
    books = Books([], orgs=ORGS, flat=flat)
    runs = [run(1, "thu", 1.0), run(2, "pumc", 1.0)]
    job = Job(9, "thu", "education", 1, 1.0, Q4_START)
    assert books.ahead_that_matters(job, runs) == runs
