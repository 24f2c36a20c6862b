"""Price and subsidy of one job on one pool, and the per-round budget tracker.

``Snapshot.pricing`` is either a :class:`SubsidyRules` (flat rates, as written in
a policy document) or a :class:`gpupool.accounting.books.Books` (programmes,
vouchers and the ledger). With Books, a quote is exactly what booking the job's
estimated run from ``now`` would charge, and each admitted job is booked in a
private copy, so later quotes in the same round see what is left.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gpupool.accounting.books import Books
from gpupool.model import NO_SPEEDS, Charge, GpuType, Job, OrgAccount, Pool, Snapshot


def job_cost(job: Job, pool: Pool, gpu_type: GpuType) -> float:
    """Full price of running ``job`` on ``pool``: GPUs x runtime on that type x price."""
    return job.gpus * job.runtime_hours_on(gpu_type) * pool.price_per_gpu_hour


@dataclass(frozen=True, slots=True)
class SubsidyRules:
    """Subsidy rates (share of the price the platform pays) and limits.

    Rates stack multiplicatively on what is left to pay: a 50% domain rate and
    a 30% GPU-type rate give 1 - 0.5 x 0.7 = 65%, never above 100%.
    ``org_cap``: most subsidy one org receives per period; ``period_budget``:
    most subsidy the platform pays per period (None = no limit).
    """

    domain_rates: Mapping[str, float] = field(default_factory=dict)
    gpu_type_rates: Mapping[str, float] = field(default_factory=dict)
    org_cap: float | None = None
    period_budget: float | None = None

    def rate(self, domain: str, gpu_type: str) -> float:
        unpaid = (1.0 - self.domain_rates.get(domain, 0.0)) * (
            1.0 - self.gpu_type_rates.get(gpu_type, 0.0)
        )
        return min(1.0, max(0.0, 1.0 - unpaid))

    def floor_terms(self, job: Job, gpu_type: GpuType, seconds: float) -> tuple[float, float]:
        """The best rate ``job`` could get on ``gpu_type``, and no rounding slack.

        Books.floor_terms' signature, so the optimising policies read either
        pricing type the same way (gpupool.policies.priority.PriceFloor).
        """
        return self.rate(job.domain, gpu_type.name), 0.0


class BudgetTracker:
    """Running balances for one scheduling round.

    ``quote`` prices a job on a pool given what is left now; ``admit`` also
    books it, or returns None when the org could not pay its share.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self._gpu_types = snapshot.gpu_types
        self._now = snapshot.now
        rules = snapshot.pricing
        self._books = rules.fork() if isinstance(rules, Books) else None
        self._rules: SubsidyRules = rules if isinstance(rules, SubsidyRules) else SubsidyRules()
        self._platform_left = snapshot.subsidy_budget_left
        self._accounts: dict[str, OrgAccount] = dict(snapshot.accounts)
        self._floors: dict[tuple, tuple[float, float, float]] = {}  # refused_everywhere's

    def _account(self, org: str) -> OrgAccount:
        return self._accounts.get(org) or OrgAccount(org=org)

    def _estimated_run(self, job: Job, pool: Pool) -> tuple[GpuType, float, float]:
        gpu_type = self._gpu_types[pool.gpu_type]
        return gpu_type, self._now, self._now + job.runtime_hours_on(gpu_type) * 3600.0

    def quote(self, job: Job, pool: Pool) -> Charge:
        if self._books is not None:
            return self._books.quote(job, pool, *self._estimated_run(job, pool))
        cost = job_cost(job, pool, self._gpu_types[pool.gpu_type])
        subsidy = cost * self._rules.rate(job.domain, pool.gpu_type)
        account = self._account(job.org)
        for limit in (account.subsidy_cap_left, self._platform_left):
            if limit is not None:
                subsidy = min(subsidy, max(0.0, limit))
        return Charge(cost=cost, subsidy=subsidy, org_pays=cost - subsidy)

    def _assess(self, job: Job, pool: Pool) -> Charge | None:
        """The quote if the org can take the job now, else None."""
        budget_left = self._account(job.org).budget_left
        if self._books is not None:
            run = self._estimated_run(job, pool)
            if budget_left is not None and (
                self._books.org_pays_floor(job, pool, *run) > budget_left + 1e-9
            ):
                return None  # cannot pay even its least possible share: no quote needed
            charge, held_by = self._books.assess(job, pool, *run)
            if held_by is not None:
                return None
        else:
            charge = self.quote(job, pool)
        if budget_left is not None and charge.org_pays > budget_left + 1e-9:
            return None
        return charge

    def cannot_pay(self, job: Job, pool: Pool) -> bool:
        """True when the org surely cannot pay for ``job`` on ``pool``: cheap, before placing it.

        False means only "maybe": ``admit`` decides. With Books this is the floor
        test alone (no quote); flat rules quote cheaply, so they answer exactly.
        """
        budget_left = self._account(job.org).budget_left
        if budget_left is None:
            return False
        if self._books is None:
            return self._assess(job, pool) is None
        floor = self._books.org_pays_floor(job, pool, *self._estimated_run(job, pool))
        return floor > budget_left + 1e-9

    def refused_everywhere(self, job: Job, pools: Sequence[Pool]) -> bool:
        """``cannot_pay`` on every one of ``pools``, from one floor for all of them.

        The least any pool could charge the org per unit of work, times the
        job's work, less the rounding slack of a run under 28 days (one calendar
        cut at most); longer runs are left to ``cannot_pay``, pool by pool.
        """
        budget_left = self._account(job.org).budget_left
        if budget_left is None or not pools:
            return False
        if self._books is None:
            return all(self.cannot_pay(job, pool) for pool in pools)
        key = (job.org, job.domain, job.gpu_types, job.job_class)
        terms = self._floors.get(key)
        if terms is None:
            terms = self._floors[key] = self._least_floor_terms(job, pools)
        per_work, slack, slowest = terms
        if job.hours / slowest >= 28 * 24.0:
            return False
        return per_work * job.gpus * job.hours - slack > budget_left + 1e-9

    def _least_floor_terms(self, job: Job, pools: Sequence[Pool]) -> tuple[float, float, float]:
        """Least org share per unit of work over ``pools``, largest slack, slowest speed
        (the job's own speeds: Job.speed_on)."""
        per_work, slack = math.inf, 0.0
        for pool in pools:
            gpu_type = self._gpu_types[pool.gpu_type]
            top, run_slack = self._books.floor_terms(job, gpu_type, 0.0)  # < 28 days: the same
            per_work = min(per_work, (1 - top) * pool.price_per_gpu_hour / job.speed_on(gpu_type))
            slack = max(slack, run_slack)
        slowest = min(job.speed_on(self._gpu_types[p.gpu_type]) for p in pools)
        return per_work, slack, slowest

    def affordable(self, job: Job, pool: Pool) -> bool:
        return self._assess(job, pool) is not None

    def admit(self, job: Job, pool: Pool) -> Charge | None:
        charge = self._assess(job, pool)
        if charge is None:
            return None
        account = self._account(job.org)
        self._accounts[job.org] = OrgAccount(
            org=job.org,
            budget_left=None
            if account.budget_left is None
            else account.budget_left - charge.org_pays,
            subsidy_cap_left=_minus(account.subsidy_cap_left, charge.subsidy),
            vouchers=account.vouchers,
        )
        if self._platform_left is not None:
            self._platform_left -= charge.subsidy
        if self._books is not None:
            self._books.book_ahead(job, pool, *self._estimated_run(job, pool))
        return charge


def _minus(limit: float | None, amount: float) -> float | None:
    return None if limit is None else limit - amount


class EffectiveHourPrices:
    """What an org pays per effective GPU-hour on a pool, as the round starts.

    One probe quote per (org, domain, job class, pool), cached: a job of one GPU
    for one reference hour (one effective GPU-hour on any type, at the class's
    speed there: Job.speed_on), priced by a tracker
    that never admits, so every job of the round sees the same figures
    whatever was started before it. That is price / speed x (1 - the subsidy
    share the org can get now): vouchers, programmes and flat rates included,
    and the list price when the snapshot has no pricing. Pricing a probe
    instead of each job keeps this at a few quotes per round on queues of
    thousands (a whole-trace replay runs tens of thousands of rounds).
    """

    PROBE_ID = -1  # never a real job's id; Books quotes do not record it

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._tracker: BudgetTracker | None = None  # forks Books only if asked
        self._cache: dict[tuple[str, str, str, str], float] = {}

    def org_pays(self, org: str, domain: str, pool: Pool, job: Job | None = None) -> float:
        """``job``: whose class's speeds apply (None, or a job without a class: the type's)."""
        job_class, speeds = ("", NO_SPEEDS) if job is None else (job.job_class, job.speeds)
        key = (org, domain, job_class, pool.name)
        price = self._cache.get(key)
        if price is None:
            if self._tracker is None:
                self._tracker = BudgetTracker(self._snapshot)
            probe = Job(
                id=self.PROBE_ID,
                org=org,
                domain=domain,
                gpus=1,
                hours=1.0,
                submitted_at=self._snapshot.now,
                gpu_types=(pool.gpu_type,),
                job_class=job_class,
                speeds=speeds,
            )
            # rounded so that equal prices computed along different float paths
            # (12 / 0.8 and 15.0) tie, and ties fall to the pool name
            price = self._cache[key] = round(self._tracker.quote(probe, pool).org_pays, 6)
        return price
