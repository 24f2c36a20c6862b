"""The proof of one round driver: a scenario replayed by the simulator and by the live
path on a real database gives identical job records and ledger entries
(gpupool.simulations.differential)."""

from __future__ import annotations

import pytest

from gpupool.simulations.differential import (
    compare,
    policy_document,
    replay_live,
    replay_simulated,
    synthetic,
)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_simulator_and_live_rounds_agree(db, seed):
    scenario = synthetic(seed)
    simulated = replay_simulated(scenario, policy_document())
    live = replay_live(db, scenario, policy_document())
    diff = compare(simulated, live)
    assert not diff.jobs, diff.jobs
    assert (diff.only_simulated, diff.only_live) == ([], [])
    assert simulated.rounds == live.rounds
