"""``priority``'s LP reads budgets the same way whatever the pricing type (issue 12, fix 2).

The LP only decides *where* jobs go, so a budget it ignores shows as a
placement: it keeps the fast GPUs for a job whose org cannot pay, and the
flexible job that could have used them lands on the slow ones.
"""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks.priority_bound import priority_bound
from gpupool.accounting import Books, SubsidyRules
from gpupool.policies.priority import PriorityPolicy
from tests.policies.builders import SnapshotBuilder


def snapshot_priced_by(kind: str):
    # H100 (speed 1.5) and A100 (speed 1), one node of 8 each. The flexible job (weight 2)
    # goes first. Unbudgeted, the best plan puts the H100-only job (weight 1) on the H100s
    # and the flexible one on the A100s: 1 x 8 x 1.5 + 2 x 8 > 2 x 8 x 1.5. But the
    # H100-only job's org has spent its budget: nothing is left for its 40 (half subsidised).
    builder = (
        SnapshotBuilder()
        .gpu_type("H100", 1.5)
        .pool("fast", "H100", 8)
        .pool("slow", "A100", 8)
        .domain("physics", 2.0)
        .org("lab", "physics")
        .org("poor", "arts", budget=0.0)
        .job(8, org="lab", id=1)
        .job(8, org="poor", types=("H100",), id=2)
    )
    snapshot = builder.build()
    rules = SubsidyRules(domain_rates={"arts": 0.5})
    if kind == "flat rules":
        return dataclasses.replace(snapshot, pricing=rules)
    books = Books(orgs=snapshot.orgs, flat=rules)
    return dataclasses.replace(snapshot, pricing=books, accounts=books.accounts(snapshot.now))


@pytest.mark.parametrize("kind", ["flat rules", "books"])
def test_a_binding_org_budget_is_planned_for_with_either_pricing(kind):
    snapshot = snapshot_priced_by(kind)
    assert snapshot.accounts["poor"].budget_left == 0.0
    allocation = PriorityPolicy().allocate(snapshot)
    assert set(allocation.waiting) == {2}  # it waits whatever the plan: its org cannot pay
    # the plan knows "poor" cannot pay for the H100s, so it keeps nothing there for it
    assert [(p.job_id, p.pool) for p in allocation.placements] == [(1, "fast")]


def test_both_pricing_types_give_the_same_plan_and_bound():
    policy = PriorityPolicy()
    bounds, allocations = [], []
    for kind in ("flat rules", "books"):
        snapshot = snapshot_priced_by(kind)
        allocations.append(policy.allocate(snapshot))
        bounds.append(priority_bound(policy, snapshot, allocations[-1]))
    flat, books = allocations
    assert books.placements == flat.placements
    assert books.waiting == flat.waiting
    assert books.objective == flat.objective
    assert bounds[1] == pytest.approx(bounds[0], abs=1e-6)
