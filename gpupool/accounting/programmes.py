"""Subsidy programmes and the compute vouchers they award: plain, validated data.

A :class:`Programme` pays ``rate`` (or its GPU type's rate) of the price of
eligible usage, within its budget per period and its cap per org per period.
A programme with ``uses_vouchers`` only pays for usage covered by the org's
vouchers from it: a voucher is an amount of *voucher hours*; one voucher hour
buys ``exchange_rates[type]`` GPU-hours of that type, and by default exactly one
effective GPU-hour (GPU-hours x the type's speed), so faster cards drain a
voucher faster. The arithmetic that applies these rules lives in
gpupool.accounting.books; this module only describes them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from gpupool.accounting.periods import PeriodSpec
from gpupool.model import GpupoolError, GpuType

SPENDING_ORDERS = ("earliest_expiry", "first_awarded")
WHEN_EXHAUSTED = ("full_price", "wait")
PACINGS = ("none", "even")


@dataclass(frozen=True)
class Programme:
    """A subsidy programme, as an admin declares it.

    ``domains``/``orgs``: who is eligible (an org is eligible if it is listed or
    its domain is; both empty = everyone). ``carry_over``: share of a voucher's
    unspent balance that moves to the next period when it expires (0 = all
    expires). ``when_exhausted``: 'wait' makes an eligible job wait with reason
    'budget exhausted' once the programme has nothing left for its org;
    'full_price' lets it run unsubsidised.

    Pacing, so that a few early or long jobs cannot take a whole budget:
    ``job_cap`` is the most one job gets from the programme (over its whole
    life, every period together); ``pacing`` 'even' releases each period's
    budget evenly over the period (usage up to instant t may spend at most
    budget x elapsed share of the period at t); ``org_share`` caps one org at
    that share of the (released) budget per period, on top of ``org_cap``.
    """

    name: str
    period: PeriodSpec = PeriodSpec()
    budget: float | None = None
    domains: frozenset[str] = frozenset()
    orgs: frozenset[str] = frozenset()
    rate: float = 1.0
    gpu_type_rates: Mapping[str, float] = field(default_factory=dict)
    exchange_rates: Mapping[str, float] = field(default_factory=dict)
    uses_vouchers: bool = False
    org_cap: float | None = None
    carry_over: float = 0.0
    when_exhausted: str = "full_price"
    spending_order: str = "earliest_expiry"
    job_cap: float | None = None
    pacing: str = "none"
    org_share: float | None = None

    def __post_init__(self) -> None:
        here = f"programme {self.name}"
        if not self.name:
            raise GpupoolError("a programme needs a name", location="programme name")
        self._check_pacing(here)
        for what, value in [("rate", self.rate), *self.gpu_type_rates.items()]:
            _check_share(value, f"{here} {what}")
        _check_share(self.carry_over, f"{here} carry_over")
        for what, value in (
            ("budget", self.budget),
            ("org_cap", self.org_cap),
            ("job_cap", self.job_cap),
        ):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise GpupoolError(f"{what} must be >= 0", location=f"{here} {what}")
        for gpu_type, value in self.exchange_rates.items():
            if not (math.isfinite(value) and value > 0):
                raise GpupoolError(
                    "an exchange rate must be > 0", location=f"{here} exchange_rates.{gpu_type}"
                )
        if self.when_exhausted not in WHEN_EXHAUSTED:
            raise GpupoolError(
                f"when_exhausted must be one of {', '.join(WHEN_EXHAUSTED)}",
                location=f"{here} when_exhausted",
            )
        if self.spending_order not in SPENDING_ORDERS:
            raise GpupoolError(
                f"spending_order must be one of {', '.join(SPENDING_ORDERS)}",
                location=f"{here} spending_order",
            )

    def _check_pacing(self, here: str) -> None:
        if self.pacing not in PACINGS:
            raise GpupoolError(
                f"pacing must be one of {', '.join(PACINGS)}", location=f"{here} pacing"
            )
        if self.org_share is not None:
            _check_share(self.org_share, f"{here} org_share")
        if self.pacing == "even" and self.budget is None:
            raise GpupoolError("pacing needs a budget to release", location=f"{here} pacing")
        unbounded = self.period.start is None or self.period.end is None
        if self.pacing == "even" and self.period.kind == "fixed" and unbounded:
            raise GpupoolError(
                "pacing needs a period with a start and an end (or a recurring one)",
                location=f"{here} pacing",
            )

    def budget_at(self, within: float, t: float) -> float | None:
        """The budget of the period holding ``within`` released by instant ``t``
        (all of it without pacing); ``t`` may be that period's end."""
        if self.budget is None or self.pacing == "none":
            return self.budget
        start, end = self.period.bounds(within)
        elapsed = min(1.0, max(0.0, (t - start) / (end - start)))
        return self.budget * elapsed

    def org_limit(self, budget: float | None) -> float | None:
        """Most one org may take in a period, given the budget (released) in it."""
        limits = [self.org_cap]
        if self.org_share is not None and budget is not None:
            limits.append(self.org_share * budget)
        known = [limit for limit in limits if limit is not None]
        return min(known) if known else None

    def eligible(self, org: str, domain: str) -> bool:
        if not self.domains and not self.orgs:
            return True
        return org in self.orgs or domain in self.domains

    def rate_for(self, gpu_type: str) -> float:
        """The share of the price paid; a GPU type's own rate replaces the base rate."""
        return self.gpu_type_rates.get(gpu_type, self.rate)

    def voucher_hours_per_gpu_hour(self, gpu_type: GpuType, speed: float | None = None) -> float:
        """Voucher hours one GPU-hour of ``gpu_type`` costs: its exchange rate, else the
        job's effective GPU-hours (``speed``: the job's speed there, Job.speed_on;
        None: the type's own)."""
        rate = self.exchange_rates.get(gpu_type.name)
        if rate is not None:
            return 1.0 / rate
        return gpu_type.speed if speed is None else speed


@dataclass(frozen=True, slots=True)
class Voucher:
    """Voucher hours awarded to ``org`` from ``programme``; ``balance`` is what is left.

    ``expires_at`` None: never expires.
    """

    id: int
    org: str
    programme: str
    amount: float
    balance: float
    awarded_at: float
    expires_at: float | None = None

    def __post_init__(self) -> None:
        here = f"voucher {self.id}"
        if not (math.isfinite(self.amount) and self.amount > 0):
            raise GpupoolError("a voucher amount must be > 0", location=f"{here} amount")
        if not (math.isfinite(self.balance) and 0 <= self.balance <= self.amount + 1e-9):
            raise GpupoolError(
                "a voucher balance must be between 0 and its amount", location=f"{here} balance"
            )
        if self.expires_at is not None and self.expires_at <= self.awarded_at:
            raise GpupoolError(
                "a voucher must expire after it is awarded", location=f"{here} expires_at"
            )

    def usable(self, t: float) -> bool:
        return self.awarded_at <= t and (self.expires_at is None or t < self.expires_at)

    def with_balance(self, balance: float) -> Voucher:
        """This voucher with ``balance`` left, which the caller keeps within 0..amount.

        ``dataclasses.replace`` re-validates every field; the books call this once
        per reservation that spends voucher hours, every round, so it is kept cheap.
        """
        twin = object.__new__(Voucher)
        for slot in _VOUCHER_SLOTS:  # the slots' own setters: no frozen check
            slot.__set__(twin, slot.__get__(self))
        _BALANCE.__set__(twin, balance)
        return twin

    def spending_key(self, order: str) -> tuple:
        expiry = math.inf if self.expires_at is None else self.expires_at
        if order == "first_awarded":
            return (self.awarded_at, expiry, self.id)
        return (expiry, self.awarded_at, self.id)


_VOUCHER_SLOTS = tuple(
    Voucher.__dict__[name]
    for name in ("id", "org", "programme", "amount", "awarded_at", "expires_at")
)
_BALANCE = Voucher.__dict__["balance"]


def _check_share(value: float, location: str) -> None:
    if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
        raise GpupoolError(f"must be a share between 0 and 1, got {value!r}", location=location)


def default_expiry(programme: Programme, awarded_at: float) -> float | None:
    """A voucher without an explicit expiry lasts until its programme period ends."""
    _, end = programme.period.bounds(awarded_at)
    return end if end is not None and end > awarded_at else None
