"""The engine's cached reservation of running jobs' spending changes no result.

Each round the engine hands policies the books with running jobs' usage booked
ahead (``Books.committed``). With ``EngineOptions.reservation_cache`` it keeps
that twin between rounds and only extends or rebuilds it; these replays of the
subsidy sample scenarios run both ways and compare every snapshot's balances,
every job record and the whole ledger.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from gpupool.accounting import Books
from gpupool.policies.document import load_policy_file
from gpupool.simulations.engine import EngineOptions, simulate
from gpupool.simulations.scenario import load_scenario

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCENARIOS = (
    "subsidy-health-edu-sample",
    "subsidy-paced-sample",
    "subsidy-vouchers-sample",
    "subsidy-none-sample",
)


class _Recording:
    """Wraps a policy and notes what each round's snapshot showed of the books."""

    def __init__(self, policy) -> None:
        self.policy = policy
        self.seen: list[tuple] = []

    def allocate(self, snapshot):
        pricing = snapshot.pricing
        balances = None
        if isinstance(pricing, Books):
            balances = (
                {k: v for k, v in pricing._spent.items() if v},
                {k: v for k, v in pricing._capped.items() if v},
                {k: v for k, v in pricing._org_paid.items() if v},
                pricing.vouchers,
            )
        self.seen.append((snapshot.now, snapshot.accounts, snapshot.subsidy_budget_left, balances))
        return self.policy.allocate(snapshot)


def _replay(name: str, seed: int, cache: bool, monkeypatch) -> tuple:
    builds = []
    committed = Books.committed

    def counting(self, runs, now, memo=None):
        if sys._getframe(1).f_code.co_name == "_committed":  # not a charge's runs ahead
            builds.append(now)
        return committed(self, runs, now, memo)

    monkeypatch.setattr(Books, "committed", counting)
    document = load_policy_file(EXAMPLES / "policies" / "subsidy-multifactor.yaml")
    scenario = load_scenario(EXAMPLES / "scenarios" / f"{name}.yaml", seed=seed)
    policy = _Recording(document.build())
    result = simulate(
        scenario,
        policy,
        pricing=document.params.subsidy,
        options=EngineOptions(reservation_cache=cache),
    )
    records = [asdict(r) for r in result.records]
    return records, result.ledger, policy.seen, len(builds)


@pytest.mark.parametrize("seed", [1, 7])
@pytest.mark.parametrize("name", SCENARIOS)
def test_cached_reservation_gives_the_same_replay(name, seed, monkeypatch):
    records, ledger, seen, rebuilds = _replay(name, seed, True, monkeypatch)
    records_off, ledger_off, seen_off, rounds = _replay(name, seed, False, monkeypatch)
    assert rounds == len(seen_off) > 10  # without the cache, one rebuild per round
    assert records == records_off
    assert ledger == ledger_off
    assert seen == seen_off
    if name != "subsidy-none-sample":  # programmes: every run is reserved
        assert any(e.subsidy for e in ledger)
        assert rebuilds < rounds  # the cache was used, not rebuilt every round
