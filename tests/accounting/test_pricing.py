"""BudgetTracker: the SubsidyRules path is unchanged; a Books in the snapshot drives quotes."""

from gpupool.accounting import Books, BudgetTracker, Programme, SubsidyRules, Voucher
from gpupool.accounting.periods import label_bounds
from gpupool.model import (
    Domain,
    GpuType,
    Job,
    Org,
    OrgAccount,
    Pool,
    PoolState,
    Snapshot,
    WaitReason,
)
from gpupool.policies.fifo import FifoPolicy

NOW, _ = label_bounds("2026-Q4")
A100 = GpuType("A100", "nvidia", 80, speed=1.0)
POOL = Pool("bj", "beijing", "A100", gpus=8, gpus_per_node=8, price_per_gpu_hour=10.0)
ORGS = {"pumc": Org("pumc", "medical", budget=100.0)}


def snapshot(pricing, jobs, accounts=None, subsidy_left=None) -> Snapshot:
    return Snapshot(
        now=NOW,
        gpu_types={"A100": A100},
        pools=(PoolState(POOL, (8,)),),
        domains={"medical": Domain("medical")},
        orgs=ORGS,
        pending=tuple(jobs),
        accounts=accounts or {},
        subsidy_budget_left=subsidy_left,
        pricing=pricing,
    )


def job(job_id, gpus=2, hours=3.0) -> Job:
    return Job(job_id, "pumc", "medical", gpus, hours, submitted_at=NOW - 100 + job_id)


def test_subsidy_rules_path_is_unchanged():
    # 2 x 3 h x 10 = 60; 50% domain x 20% type stack to 60% = 36, capped by org cap 30
    rules = SubsidyRules(domain_rates={"medical": 0.5}, gpu_type_rates={"A100": 0.2})
    accounts = {"pumc": OrgAccount("pumc", budget_left=50.0, subsidy_cap_left=30.0)}
    tracker = BudgetTracker(snapshot(rules, [], accounts))
    charge = tracker.quote(job(1), POOL)
    assert (charge.cost, charge.subsidy, charge.org_pays) == (60.0, 30.0, 30.0)
    assert tracker.admit(job(1), POOL) is not None
    assert tracker.quote(job(2), POOL).subsidy == 0.0  # cap used up
    assert tracker.admit(job(2), POOL) is None  # org would pay 60 > 20 left


def test_books_quote_is_the_charge_of_the_estimated_run():
    books = Books([Programme("half", rate=0.5, budget=40.0)], orgs=ORGS)
    tracker = BudgetTracker(snapshot(books, []))
    first = tracker.admit(job(1), POOL)  # 60 cost, 30 subsidy
    second = tracker.quote(job(2), POOL)  # only 10 of budget left in this round
    assert (first.cost, first.subsidy, first.programme) == (60.0, 30.0, "half")
    assert (second.cost, second.subsidy, second.org_pays) == (60.0, 10.0, 50.0)
    assert books.entries == () and float(books.budget_left("half", NOW)) == 40.0  # untouched


def test_wait_programme_holds_jobs_once_vouchers_run_out():
    programme = Programme("vouch", uses_vouchers=True, when_exhausted="wait")
    voucher = Voucher(1, "pumc", "vouch", amount=6.0, balance=6.0, awarded_at=0.0)
    books = Books([programme], [voucher], orgs=ORGS)
    snap = snapshot(books, [job(1), job(2)], books.accounts(NOW))
    allocation = FifoPolicy().allocate(snap)
    assert [p.job_id for p in allocation.placements] == [1]
    assert allocation.charges[1].subsidy == 60.0  # 6 GPU-hours fully covered
    assert allocation.waiting == {2: WaitReason.BUDGET}


def test_full_price_programme_lets_jobs_run_unsubsidised_within_org_budget():
    programme = Programme("vouch", uses_vouchers=True, when_exhausted="full_price")
    books = Books([programme], orgs=ORGS)  # no vouchers at all
    snap = snapshot(books, [job(1), job(2, hours=5.0)], books.accounts(NOW))
    allocation = FifoPolicy().allocate(snap)
    # job 1 pays 60 of the org's 100; job 2 would pay 100 more
    assert [p.job_id for p in allocation.placements] == [1]
    assert allocation.charges[1].org_pays == 60.0
    assert allocation.waiting == {2: WaitReason.BUDGET}
