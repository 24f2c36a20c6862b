"""Ledger types: one append-only entry, sums of entries, and money in cents.

Every other accounting module builds on these; they know nothing of how a
run is priced or funded.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from gpupool.model import GpupoolError

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
KINDS = ("charge", "correction", "award", "expiry", "carry_over")
USAGE_KINDS = ("charge", "correction")


def cents(amount: float | int | str | Decimal) -> Decimal:
    """Round money to cents, half up, on its shortest decimal form (12.345 -> 12.35)."""
    value = Decimal(repr(amount)) if isinstance(amount, float) else Decimal(amount)
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerEntry:
    """One row of the ledger (table ledger_entries). Never changed once written.

    Money fields are Decimals in cents (floats and text are accepted and
    rounded). ``effective_gpu_hours``: usage for charge/correction entries,
    voucher hours (+ awarded or carried, - expired) for the other kinds.
    ``at``: end of the booked usage, or when the award/expiry happened.
    ``pool``: the pool a charge was for (where the usage happened); None for
    award/expiry/carry-over entries and for rows stored before the ledger kept it.
    """

    kind: str
    org: str
    period: str
    at: float
    domain: str = ""
    job_id: int | None = None
    gpu_type: str | None = None
    cost: Decimal = ZERO
    subsidy: Decimal = ZERO
    org_pays: Decimal | None = None
    effective_gpu_hours: float = 0.0
    programme: str | None = None
    voucher_id: int | None = None
    note: str = ""
    pool: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise GpupoolError(f"unknown ledger entry kind {self.kind!r}", location="kind")
        cost, subsidy = cents(self.cost), cents(self.subsidy)
        org_pays = cost - subsidy if self.org_pays is None else cents(self.org_pays)
        if cost != subsidy + org_pays:
            raise GpupoolError(
                f"ledger entry does not balance: {cost} != {subsidy} + {org_pays}",
                location="org_pays",
            )
        object.__setattr__(self, "cost", cost)
        object.__setattr__(self, "subsidy", subsidy)
        object.__setattr__(self, "org_pays", org_pays)


@dataclass(frozen=True, slots=True)
class Totals:
    cost: Decimal = ZERO
    subsidy: Decimal = ZERO
    org_pays: Decimal = ZERO
    effective_gpu_hours: float = 0.0

    def add(self, entry: LedgerEntry) -> Totals:
        return Totals(
            self.cost + entry.cost,
            self.subsidy + entry.subsidy,
            self.org_pays + entry.org_pays,
            self.effective_gpu_hours + entry.effective_gpu_hours,
        )
