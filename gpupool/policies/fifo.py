"""Strict first-in first-out: the baseline every other policy is compared with.

Jobs start in arrival order (``submitted_at``, then id). The first job that
cannot start for lack of GPUs blocks every job behind it (no backfill), which
is exactly the weakness the other policies exist to fix. Two kinds of job do
not block the queue, because waiting in front cannot help them: a job larger
than any pool of a GPU type it allows (it never fits), and a job whose org
cannot pay its share (like Slurm, jobs held by account limits are skipped).

The small placement helpers here (which pools a job may use, first fit with
budget admission) are shared with the multifactor baseline. A job tries its
allowed pools best value first (most effective GPU-hours per unit of price
for its org; free pools fastest first), or with the document's ``placement:
{pool_order: name | cheapest}`` by name or cheapest first (see PoolChoices).

Cost: a replay of a whole trace runs a round per arrival or completion, often
over queues of thousands, so a round does per-job work only up to the blocking
job; the jobs behind it are marked waiting in bulk (see wait_behind).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import ClassVar

from gpupool.accounting import Books, BudgetTracker, job_cost
from gpupool.accounting.pricing import EffectiveHourPrices
from gpupool.model import (
    Allocation,
    Charge,
    Job,
    Placement,
    Pool,
    Snapshot,
    WaitReason,
    fit_gang,
)
from gpupool.policies.params import PolicyParams

FreeGpus = dict[str, list[int]]  # pool name -> free GPUs per node, booked as the round goes
Acceptable = Callable[[Pool, tuple[tuple[int, int], ...]], bool]

BY_NAME_WHY = "first pool in name order with room that the org can pay for"
PASSED_OVER_SHOWN = 3  # cheaper pools named in a reason; more are counted


@dataclass(frozen=True)
class FifoPolicy:
    params: PolicyParams = field(default_factory=PolicyParams)

    # Document sections this kind has no use for (the document loader rejects them).
    UNUSED_SECTIONS: ClassVar[frozenset[str]] = frozenset({"domains", "aging", "preemption"})
    # Opt-in sections it reads: the pool order (see PoolChoices).
    OPT_IN_SECTIONS: ClassVar[frozenset[str]] = frozenset({"placement"})

    def allocate(self, snapshot: Snapshot) -> Allocation:
        free = free_gpus(snapshot)
        budgets = Admissions(snapshot)
        choices = PoolChoices(snapshot, self.params.placement.pool_order)
        placements, charges, waiting, why = [], {}, {}, {}
        order = sorted(snapshot.pending, key=_ARRIVAL)
        for position, job in enumerate(order):
            if choices.never_fits(job):
                waiting[job.id] = WaitReason.NEVER_FITS
                continue
            placed = first_fit(job, choices.allowed(job), free, budgets)
            if isinstance(placed, WaitReason):
                waiting[job.id] = placed
                if placed is WaitReason.NO_CAPACITY:
                    wait_behind(order[position + 1 :], choices, waiting)
                    break
                continue
            placements.append(placed[0])
            charges[job.id] = placed[1]
            why[job.id] = choices.why(job, placed[0].pool, free)
        return Allocation(placements=tuple(placements), waiting=waiting, charges=charges, why=why)


_ARRIVAL = attrgetter("submitted_at", "id")


def wait_behind(jobs: list[Job], choices: PoolChoices, waiting: dict[int, WaitReason]) -> None:
    """The queue is blocked: the jobs behind wait for it, unless they never fit at all.

    With a long queue this is most of a round, so the usual case (every job
    behind fits some allowed pool) is settled from the sets of gang sizes and
    GPU-type lists without a look-up per job.
    """
    sizes = {job.gpus for job in jobs}
    type_lists = {job.gpu_types for job in jobs}
    if not sizes or (min(sizes) >= 1 and max(sizes) <= min(map(choices.largest_gang, type_lists))):
        waiting.update(dict.fromkeys([job.id for job in jobs], WaitReason.PRIORITY))
        return
    never, behind = WaitReason.NEVER_FITS, WaitReason.PRIORITY
    for job in jobs:
        waiting[job.id] = never if choices.never_fits(job) else behind


def free_gpus(snapshot: Snapshot) -> FreeGpus:
    return {state.pool.name: list(state.free_per_node) for state in snapshot.pools}


def allowed_pools(job: Job, snapshot: Snapshot) -> list[Pool]:
    """Pools of a GPU type the job allows, by name: the baselines' default order."""
    return _pools_of(job.gpu_types, snapshot)


def _pools_of(gpu_types: tuple[str, ...], snapshot: Snapshot) -> list[Pool]:
    """Pools of one of ``gpu_types`` (any type if empty), by name."""
    pools = (
        state.pool for state in snapshot.pools if not gpu_types or state.pool.gpu_type in gpu_types
    )
    return sorted(pools, key=lambda pool: pool.name)


class PoolChoices:
    """allowed_pools and never_fits for one round, cached by what decides them.

    Queues hold many jobs with the same GPU-type list and gang size, so a long
    queue costs a few dictionary look-ups per job instead of a scan of all pools.
    With ``pool_order="cheapest"`` the allowed pools come cheapest first for the
    job's org (EffectiveHourPrices), cached per (GPU types, org, domain, job class); with
    ``"value"`` (the default) the same, free pools fastest first.
    """

    def __init__(self, snapshot: Snapshot, pool_order: str = "value") -> None:
        self._snapshot = snapshot
        self._allowed: dict[tuple[str, ...], list[Pool]] = {}
        self._never: dict[tuple[tuple[str, ...], int], bool] = {}
        self._largest: dict[tuple[str, ...], int] = {}
        self._prices = EffectiveHourPrices(snapshot) if pool_order != "name" else None
        self._faster_on_ties = pool_order == "value"
        self._by_price: dict[tuple[tuple[str, ...], str, str, str], list[Pool]] = {}

    def allowed(self, job: Job) -> list[Pool]:
        """The pools to try, in this round's order: by name, or cheapest for the org."""
        if self._prices is not None:
            return self._cheapest_first(job)
        return self._by_name(job)

    def _by_name(self, job: Job) -> list[Pool]:
        key = job.gpu_types
        if key not in self._allowed:
            self._allowed[key] = allowed_pools(job, self._snapshot)
        return self._allowed[key]

    def _cheapest_first(self, job: Job) -> list[Pool]:
        key = (job.gpu_types, job.org, job.domain, job.job_class)
        pools = self._by_price.get(key)
        if pools is None:
            org_pays = self._prices.org_pays
            types = self._snapshot.gpu_types
            by_speed = self._faster_on_ties

            def price_then_speed(pool: Pool) -> tuple[float, float]:
                price = org_pays(job.org, job.domain, pool, job)
                # free (or wholly subsidised) pools have no price to rank by: fastest first
                free = by_speed and price <= 0.0
                return price, -job.speed_on(types[pool.gpu_type]) if free else 0.0

            # stable sort of the by-name list: equal keys keep name order
            pools = self._by_price[key] = sorted(self._by_name(job), key=price_then_speed)
        return pools

    def why(
        self,
        job: Job,
        chosen: str,
        free: FreeGpus,
        refused: tuple[Acceptable, str] | None = None,
    ) -> str:
        """Why first_fit put ``job`` on pool ``chosen``: the order's rule in a few words.

        Under ``cheapest``: the org's price there, and each strictly cheaper pool
        it passed over with the cause, worked out again only now that the job
        is placed (one string per start, none per pool tried). Re-checking is
        exact: the pools tried before ``chosen`` are not touched by its booking.
        ``refused`` is first_fit's ``acceptable`` and how to say it refused.
        """
        if self._prices is None:
            return BY_NAME_WHY
        org_pays = self._prices.org_pays
        passed = []
        for pool in self._cheapest_first(job):
            price = org_pays(job.org, job.domain, pool, job)
            if pool.name == chosen:
                break
            passed.append((pool, price))
        text = f"cheapest for {job.org} after subsidy: {price:.2f} per effective GPU-hour"
        if self._faster_on_ties:
            gpu_type = self._snapshot.pool_state(chosen).pool.gpu_type
            speed = job.speed_on(self._snapshot.gpu_types[gpu_type])
            text = (
                f"most effective GPU-hours per unit of price for {job.org}: {price:.2f}"
                f" per effective GPU-hour (speed {speed:g})"
            )
        cheaper = [(pool, p) for pool, p in passed if p < price]  # ties are no cheaper
        if not cheaper:
            return text
        causes = [
            f"{pool.name} at {p:.2f} ({_passed_cause(job, pool, free, refused)})"
            for pool, p in cheaper[:PASSED_OVER_SHOWN]
        ]
        if len(cheaper) > PASSED_OVER_SHOWN:
            causes.append(f"{len(cheaper) - PASSED_OVER_SHOWN} more")
        return f"{text}; passed over cheaper {', '.join(causes)}"

    def largest_gang(self, gpu_types: tuple[str, ...]) -> int:
        """The largest gang that fits an empty pool of one of these types (0: none).

        An empty pool takes exactly the gangs of 1 to (whole nodes x GPUs per
        node) GPUs, or up to its one partial node's size if it has no whole
        node (see fit_gang); so a job never fits iff its gang is outside 1..this.
        """
        largest = self._largest.get(gpu_types)
        if largest is None:
            pools = self._allowed.get(gpu_types) or _pools_of(gpu_types, self._snapshot)
            largest = self._largest[gpu_types] = max(map(_largest_gang, pools), default=0)
        return largest

    def never_fits(self, job: Job) -> bool:
        never = self._never.get((job.gpu_types, job.gpus))
        if never is None:
            never = self._never[(job.gpu_types, job.gpus)] = not any(
                pool.fits_empty(job.gpus)
                for pool in self._by_name(job)  # the order is no matter: no probe quotes
            )
        return never


def _passed_cause(
    job: Job, pool: Pool, free: FreeGpus, refused: tuple[Acceptable, str] | None
) -> str:
    """Why first_fit skipped ``pool``: the same tests in the same order."""
    nodes = fit_gang(free[pool.name], job.gpus, pool.gpus_per_node)
    if nodes is None:
        return "full"
    if refused is not None and not refused[0](pool, nodes):
        return refused[1]
    return f"{job.org} could not pay there"


def _largest_gang(pool: Pool) -> int:
    return pool.largest_gang()


def never_fits(job: Job, snapshot: Snapshot) -> bool:
    """True if the gang would not fit even in an empty pool of an allowed type."""
    return not any(pool.fits_empty(job.gpus) for pool in allowed_pools(job, snapshot))


class Admissions:
    """BudgetTracker.admit for one round, quick to refuse orgs that already could not pay.

    With flat subsidy rules (not Books), what an org pays for a job never
    falls as the job's full price rises, and within a round balances, caps
    and the platform's subsidy budget only shrink. So once an org was refused
    a job costing ``c`` on a pool, any later job of the same org and domain
    costing ``c`` or more on that pool is refused too, without a quote: a
    queue of an out-of-budget org's jobs costs a price each, not a quote each.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self.tracker = BudgetTracker(snapshot)
        self._gpu_types = snapshot.gpu_types
        self._monotone = not isinstance(snapshot.pricing, Books)
        self._cheapest_refused: dict[tuple[str, str, str], float] = {}
        self._refusals = 0  # bumped whenever _cheapest_refused changes
        self._everywhere: dict[tuple, tuple[int, float | None]] = {}

    def refused_everywhere(self, job: Job, pools: Sequence[Pool]) -> bool:
        """Every one of ``pools`` surely refuses ``job``: one comparison per job.

        A queue of an org that cannot pay is most of a round in a replay with
        tight budgets; per (org, domain, GPU types) this keeps the least work
        (GPUs x reference hours) refused on every pool, as cannot_pay would find.
        """
        if not self._monotone:
            return self.tracker.refused_everywhere(job, pools)
        key = (job.org, job.domain, job.gpu_types, job.job_class)
        hit = self._everywhere.get(key)
        if hit is None or hit[0] != self._refusals:
            hit = self._everywhere[key] = (self._refusals, self._least_refused_work(job, pools))
        return hit[1] is not None and job.gpus * job.hours >= hit[1]

    def _least_refused_work(self, job: Job, pools: Sequence[Pool]) -> float | None:
        least = 0.0
        for pool in pools:
            cheapest = self._cheapest_refused.get((job.org, job.domain, pool.name))
            if cheapest is None:
                return None
            per_work = pool.price_per_gpu_hour / job.speed_on(self._gpu_types[pool.gpu_type])
            # a hair above the exact ratio: above it, cost >= cheapest holds in floats too
            least = max(least, cheapest / per_work * (1 + 1e-9)) if per_work > 0 else math.inf
        return least

    def cannot_pay(self, job: Job, pool: Pool) -> bool:
        """Refused for sure, cheaply: a dearer job of the org was refused there (flat
        rules), or the floor of what it would pay is above its budget left (Books)."""
        if not self._monotone:
            return self.tracker.cannot_pay(job, pool)
        key, cost, refused = self._refused_already(job, pool)
        if refused:
            return True
        if not self.tracker.cannot_pay(job, pool):
            return False
        self._refuse(key, cost)
        return True

    def admit(self, job: Job, pool: Pool) -> Charge | None:
        if not self._monotone:
            return self.tracker.admit(job, pool)
        key, cost, refused = self._refused_already(job, pool)
        if refused:
            return None
        charge = self.tracker.admit(job, pool)
        if charge is None:
            self._refuse(key, cost)
        return charge

    def _refused_already(self, job: Job, pool: Pool) -> tuple[tuple[str, str, str], float, bool]:
        """(key, job's cost on the pool, whether a job no dearer was refused there)."""
        key = (job.org, job.domain, pool.name)
        cost = job_cost(job, pool, self._gpu_types[pool.gpu_type])
        cheapest = self._cheapest_refused.get(key)
        return key, cost, cheapest is not None and cost >= cheapest

    def _refuse(self, key: tuple[str, str, str], cost: float) -> None:
        cheapest = self._cheapest_refused.get(key)
        self._cheapest_refused[key] = cost if cheapest is None else min(cost, cheapest)
        self._refusals += 1


def first_fit(
    job: Job,
    pools: Iterable[Pool],
    free: FreeGpus,
    budgets: BudgetTracker | Admissions,
    acceptable: Acceptable | None = None,
) -> tuple[Placement, Charge] | WaitReason:
    """Place ``job`` on the first pool that fits (and that ``acceptable`` agrees to).

    Books the nodes in ``free`` and the charge in ``budgets``. Returns the
    reason to wait when no pool takes it: BUDGET if a pool had GPUs enough
    but the org could not pay there, PRIORITY if it fitted but ``acceptable``
    refused (a higher-priority job holds those GPUs), else NO_CAPACITY.
    """
    if budgets.refused_everywhere(job, pools):  # what the loop below would conclude
        roomy = any(sum(free[pool.name]) >= job.gpus for pool in pools)
        return WaitReason.BUDGET if roomy else WaitReason.NO_CAPACITY
    reason = WaitReason.NO_CAPACITY
    for pool in pools:
        if sum(free[pool.name]) < job.gpus:  # cheap test first: most pools are full
            continue
        # an org out of budget: refused before the gang search, which costs more
        if budgets.cannot_pay(job, pool):
            reason = WaitReason.BUDGET
            continue
        nodes = fit_gang(free[pool.name], job.gpus, pool.gpus_per_node)
        if nodes is None:
            continue
        if acceptable is not None and not acceptable(pool, nodes):
            if reason is WaitReason.NO_CAPACITY:
                reason = WaitReason.PRIORITY
            continue
        charge = budgets.admit(job, pool)
        if charge is None:
            reason = WaitReason.BUDGET
            continue
        for index, taken in nodes:
            free[pool.name][index] -= taken
        return Placement(job_id=job.id, pool=pool.name, nodes=nodes), charge
    return reason
