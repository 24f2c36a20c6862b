"""What the LPs know of money: org budgets, caps and the least share an org pays.

Read from the snapshot through one protocol (PriceFloor) that both pricing
types satisfy, so a snapshot gives the same rows live and in simulation.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gpupool.accounting import SubsidyRules
from gpupool.model import GpuType, Job, Snapshot
from gpupool.policies._classes import PoolGroup


class PriceFloor(Protocol):
    """What the LPs need of ``Snapshot.pricing``: the best subsidy rate a job could get.

    Both pricing types have it (SubsidyRules: its flat rate, no slack; Books:
    the best rate of any programme or flat rule the job is eligible for, and
    the rounding slack of its lines), so the same snapshot gives the same rows
    live and in simulation, and nothing here asks which type it holds.
    """

    def floor_terms(self, job: Job, gpu_type: GpuType, seconds: float) -> tuple[float, float]: ...


@dataclass(frozen=True)
class Money:
    """What budget rows the LPs may add, from the round's prices and accounts.

    Every admitted set satisfies, per org with a budget B left (subsidy ≤ cost x
    the best rate it could get, less rounding slack; subsidies ≤ the org's cap
    C left and the platform's budget P left):
    1. sum (cost x (1 - best rate) - slack) ≤ B;  2. sum cost ≤ B + C;  3. over
    all budgeted orgs, sum cost ≤ sum B + P. Costs use the cheapest pool of a
    group, so the rows only relax the real prices. Rates come through
    PriceFloor, whatever the pricing type.
    """

    orgs: frozenset[str]
    budget: dict[str, float]
    cap: dict[str, float]
    platform: float
    price: np.ndarray  # cheapest price per GPU-hour per group
    speed: np.ndarray
    pricing: PriceFloor
    gpu_types: tuple[GpuType, ...]
    unpaid_memo: dict = dataclasses.field(default_factory=dict, compare=False)

    @staticmethod
    def of(snapshot: Snapshot, groups: tuple[PoolGroup, ...]) -> Money:
        budget, cap = {}, {}
        for org, account in snapshot.accounts.items():
            if account.budget_left is None:
                continue
            budget[org] = max(0.0, account.budget_left)
            if account.subsidy_cap_left is not None:
                cap[org] = max(0.0, account.subsidy_cap_left)
        left = snapshot.subsidy_budget_left
        return Money(
            orgs=frozenset(budget),
            budget=budget,
            cap=cap,
            platform=math.inf if left is None else max(0.0, left),
            price=np.array([min(p.price_per_gpu_hour for p in g.pools) for g in groups]),
            speed=np.array([g.speed for g in groups]),
            pricing=SubsidyRules() if snapshot.pricing is None else snapshot.pricing,
            gpu_types=tuple(snapshot.gpu_types[g.gpu_type] for g in groups),
        )

    def speeds_of(self, job: Job | None, groups) -> np.ndarray:
        """``job``'s speed on each of ``groups`` (Job.speed_on); the types' own for None."""
        groups = np.asarray(groups, dtype=np.int64)
        if job is None or not job.speeds:
            return self.speed[groups]
        return np.array([job.speed_on(self.gpu_types[g]) for g in groups.tolist()])

    def cost_and_pay(
        self, org: str, domain: str, gpus: int, hours: np.ndarray, groups, job: Job | None = None
    ):
        """Lowest cost and lowest org share, shape (len(hours), len(groups)); ``job``: a
        member of the class, whose speeds apply (None: the types' own)."""
        speed = self.speeds_of(job, groups)
        per_hour = gpus * self.price[groups] / speed
        cost = hours[:, None] * per_hour[None, :]
        seconds = float(hours.max()) * 3600.0 / float(speed.min())
        unpaid, slack = self.unpaid(org, domain, groups, seconds)
        return cost, np.maximum(0.0, cost * unpaid[None, :] - slack[None, :])

    def unpaid(self, org: str, domain: str, groups: np.ndarray, seconds: float):
        """Per group: share of the price an org of ``domain`` pays at least, and the slack.

        The slack is the one of a run of ``seconds``, so it covers shorter runs too.
        """
        key = (org, domain, tuple(groups.tolist()), seconds)
        if key not in self.unpaid_memo:
            probe = Job(id=-1, org=org, domain=domain, gpus=1, hours=1.0, submitted_at=0.0)
            terms = [self.pricing.floor_terms(probe, self.gpu_types[g], seconds) for g in key[2]]
            self.unpaid_memo[key] = (
                1.0 - np.array([rate for rate, _ in terms]),
                np.array([slack for _, slack in terms]),
            )
        return self.unpaid_memo[key]
