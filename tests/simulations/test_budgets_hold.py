"""With exact estimates, no org pays beyond its budget in any accounting period.

Admission quotes each job against what its org has left, with the runs already
going booked ahead in start order; charges spend limits in that same order
(Books.charge's ``ahead``). Before they did, the vouchers sample overran
ai-institute's 4,000 budget by 48.26: a later, shorter run spent voucher hours
an earlier, longer Ascend-910B run had been quoted with.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gpupool.policies.document import load_policy_file
from gpupool.simulations.engine import simulate
from gpupool.simulations.metrics import budget_overrun
from gpupool.simulations.scenario import load_scenario

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("scheme", ["none", "health-edu", "paced", "vouchers"])
def test_no_org_pays_beyond_its_budget_in_the_subsidy_samples(scheme):
    document = load_policy_file(EXAMPLES / "policies" / "subsidy-multifactor.yaml")
    scenario = load_scenario(EXAMPLES / "scenarios" / f"subsidy-{scheme}-sample.yaml")
    result = simulate(scenario, document.build(), pricing=document.params.subsidy)
    assert result.org_budgets  # the samples give orgs budgets that bind
    assert budget_overrun(result) == {"budget_overrun": 0.0, "budget_overrun_periods": 0}
