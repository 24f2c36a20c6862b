"""``order: shortest-remaining`` (priority, multifactor): shortest first within a domain.

Hand-worked on one 4-GPU A100 pool (speed 1), every job a 4-GPU gang, all
submitted at 0: med's job 10 (2 h, weight 3) comes first either way; edu's
jobs 1 (3 h), 2 (1 h), 3 (2 h) follow. In priority order (FIFO within edu)
they run 1, 2, 3: ends at 2, 5, 6, 8 h, mean JCT 21/4 = 5.25 h. Shortest
first within edu: 2, 3, 1: ends at 2, 3, 5, 8 h, mean JCT 18/4 = 4.5 h; med
keeps its place ahead of edu.
"""

from __future__ import annotations

import pytest

from gpupool.model import Pool
from gpupool.policies.document import PolicyDocumentError, parse_policy_text
from gpupool.policies.multifactor import MultifactorPolicy
from gpupool.policies.params import PolicyParams
from gpupool.policies.priority import PriorityPolicy
from gpupool.simulations.engine import HOUR, simulate
from gpupool.simulations.metrics import summarise
from tests.simulations.test_engine import job, scenario

ONE_POOL = (Pool("pa", "s1", "a100", 4, 4, 1.0),)
JOBS = (
    job(1, 4, 3.0, 0.0),
    job(2, 4, 1.0, 0.0),
    job(3, 4, 2.0, 0.0),
    job(10, 4, 2.0, 0.0, domain="med"),
)
KINDS = {"priority": PriorityPolicy, "multifactor": MultifactorPolicy}


def replay(kind: str, order: str):
    params = PolicyParams(domain_weights={"med": 3.0})
    result = simulate(scenario(*JOBS, pools=ONE_POOL), KINDS[kind](params, order=order))
    starts = sorted((r.first_start / HOUR, r.job.id) for r in result.records)
    return [job_id for _, job_id in starts], starts, summarise(result)["platform"]


@pytest.mark.parametrize("kind", KINDS)
def test_shortest_remaining_first_within_a_domain_lowers_mean_jct(kind):
    fifo_order, _, fifo = replay(kind, "priority")
    assert fifo_order == [10, 1, 2, 3]
    assert fifo["jct_hours"]["mean"] == pytest.approx(5.25)
    srpt_order, starts, srpt = replay(kind, "shortest-remaining")
    assert srpt_order == [10, 2, 3, 1]  # med keeps its place; edu's shortest first
    assert starts == [(0.0, 10), (2.0, 2), (3.0, 3), (5.0, 1)]
    assert srpt["jct_hours"]["mean"] == pytest.approx(4.5)


@pytest.mark.parametrize("kind", KINDS)
def test_the_order_is_a_documented_option_and_a_typo_names_the_field(kind):
    document = parse_policy_text(f"kind: {kind}\noptions: {{order: shortest-remaining}}\n")
    assert document.build().order == "shortest-remaining"
    with pytest.raises(PolicyDocumentError) as caught:
        parse_policy_text(f"kind: {kind}\noptions: {{order: shortest}}\n", source="p.yaml")
    [(where, message)] = caught.value.problems
    assert where == "p.yaml:2 options.order"
    assert "priority" in message and "shortest-remaining" in message
