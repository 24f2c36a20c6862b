"""Pricing, subsidies, vouchers and the ledger arithmetic: pure, shared by live and simulated runs.

The seam used by every policy is :class:`BudgetTracker`: built from a snapshot,
asked to ``quote`` and ``admit`` jobs on pools one at a time, it never lets a
round promise more subsidy than a budget, cap or voucher balance holds.
:class:`Books` is the ledger both the live scheduler and the simulator keep;
``Snapshot.pricing`` may be a Books, and then quotes come from it.
"""

from gpupool.accounting.books import Books
from gpupool.accounting.ledger import LedgerEntry, Totals, cents
from gpupool.accounting.periods import PeriodSpec, period_bounds, period_label
from gpupool.accounting.pricing import BudgetTracker, SubsidyRules, job_cost
from gpupool.accounting.programmes import Programme, Voucher

__all__ = [
    "Books",
    "BudgetTracker",
    "LedgerEntry",
    "PeriodSpec",
    "Programme",
    "SubsidyRules",
    "Totals",
    "Voucher",
    "cents",
    "job_cost",
    "period_bounds",
    "period_label",
]
