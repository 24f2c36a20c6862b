"""Pricing, subsidies, vouchers and the ledger arithmetic: pure, shared by live and simulated runs.

The seam used by every policy is :class:`BudgetTracker`: built from a snapshot,
asked to ``quote`` and ``admit`` jobs on pools one at a time, it never lets a
round promise more subsidy than a budget, cap or voucher balance holds.
"""

from gpupool.accounting.pricing import BudgetTracker, SubsidyRules, job_cost

__all__ = ["BudgetTracker", "SubsidyRules", "job_cost"]
