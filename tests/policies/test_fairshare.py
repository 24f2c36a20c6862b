"""The ``fair-share`` policy: hand-worked max-min shares, history, random-instance invariants."""

from __future__ import annotations

import pytest

from gpupool.policies.fairshare import FairSharePolicy
from gpupool.policies.params import PolicyParams
from tests.policies.builders import SnapshotBuilder, check_invariants, random_snapshot


def started_by(snapshot, allocation, domain, pool=None):
    domains = {j.id: j.domain for j in snapshot.pending}
    return sum(
        1
        for p in allocation.placements
        if domains[p.job_id] == domain and (pool is None or p.pool == pool)
    )


def two_domains(weight_a=1.0, weight_b=1.0):
    b = SnapshotBuilder().pool("p", "A100", 12, per_node=4)
    b.domain("a", weight_a).domain("b", weight_b).org("oa", "a").org("ob", "b")
    for _ in range(10):
        b.job(1, org="oa").job(1, org="ob")
    return b


def test_weighted_max_min_splits_gpus_by_weight():
    # 12 GPUs, weights 2 : 1, both want 10 -> 8 and 4.
    snapshot = two_domains(2.0, 1.0).build()
    allocation = FairSharePolicy().allocate(snapshot)
    check_invariants(snapshot, allocation)
    assert started_by(snapshot, allocation, "a") == 8
    assert started_by(snapshot, allocation, "b") == 4
    assert allocation.objective == pytest.approx(12.0)
    assert allocation.bound == pytest.approx(12.0)


def test_time_limit_s_bounds_the_fluid_lps_of_a_round():
    """A document's time_limit_s reaches GLOP: out of time, the round has no fluid shares
    (bound 0) and packs by level alone, which still splits 8 : 4 here."""
    snapshot = two_domains(2.0, 1.0).build()
    timed_out = FairSharePolicy(params=PolicyParams(time_limit_s=1e-9)).allocate(snapshot)
    check_invariants(snapshot, timed_out)
    assert (timed_out.bound, timed_out.objective) == (0, 0)
    assert (started_by(snapshot, timed_out, "a"), started_by(snapshot, timed_out, "b")) == (8, 4)
    seeded = FairSharePolicy(params=PolicyParams(seed=12345)).allocate(snapshot)
    assert seeded.bound == pytest.approx(12.0)


def test_glop_parameters_carry_the_seed_and_the_time_left():
    params = PolicyParams(seed=7, time_limit_s=2.5)
    assert params.glop_parameters() == "random_seed: 8 max_time_in_seconds: 2.5"
    assert params.glop_parameters(0.25) == "random_seed: 8 max_time_in_seconds: 0.25"
    assert params.glop_parameters(-1.0) == "random_seed: 8 max_time_in_seconds: 1e-09"
    # the default seed keeps GLOP's own default (1); the largest seed wraps to 0
    assert PolicyParams().glop_parameters() == "random_seed: 1 max_time_in_seconds: 5.0"
    assert PolicyParams(seed=2**31 - 1).glop_parameters().startswith("random_seed: 0 ")


def test_history_counts_against_a_domain():
    # Domain b used 96 GPU-hours over the last 24 h: a base of 4 effective GPUs.
    # Equal weights: a gets x, b gets 12 - x, x = 4 + 12 - x -> x = 8.
    snapshot = two_domains().usage("b", 96.0).build()
    allocation = FairSharePolicy(history_hours=24.0).allocate(snapshot)
    assert started_by(snapshot, allocation, "a") == 8
    assert started_by(snapshot, allocation, "b") == 4
    no_memory = FairSharePolicy(history_hours=0.0).allocate(snapshot)
    assert started_by(snapshot, no_memory, "a") == 6


def test_heterogeneous_shares_equalise_effective_gpus():
    # H100 (speed 2) and A100 (speed 1), 4 GPUs each. Domain a runs only on H100.
    # a gets x H100 = 2x effective; b gets the rest: 2(4 - x) + 4. Equal at x = 3.
    b = SnapshotBuilder().gpu_type("H100", 2.0).gpu_type("A100", 1.0)
    b.pool("fast", "H100", 4, per_node=4).pool("slow", "A100", 4, per_node=4)
    b.org("oa", "a").org("ob", "b")
    for _ in range(8):
        b.job(1, org="oa", types=["H100"]).job(1, org="ob")
    snapshot = b.build()
    allocation = FairSharePolicy().allocate(snapshot)
    check_invariants(snapshot, allocation)
    assert started_by(snapshot, allocation, "a", "fast") == 3
    assert started_by(snapshot, allocation, "b", "fast") == 1
    assert started_by(snapshot, allocation, "b", "slow") == 4
    assert allocation.bound == pytest.approx(12.0)


def test_invariants_bound_and_determinism_on_random_instances():
    policy = FairSharePolicy()
    for seed in range(60):
        snapshot = random_snapshot(seed, jobs=15, pools=4)
        allocation = policy.allocate(snapshot)
        check_invariants(snapshot, allocation)
        assert allocation.objective <= allocation.bound + 1e-6, f"seed {seed}"
        assert policy.allocate(snapshot) == allocation, f"seed {seed}: not deterministic"


def test_raising_a_domain_weight_never_shrinks_its_share():
    previous = 0
    for weight in (1.0, 1.5, 2.0, 3.0, 6.0):
        snapshot = two_domains(weight, 1.0).build()
        got = started_by(snapshot, FairSharePolicy().allocate(snapshot), "a")
        assert got >= previous, f"weight {weight}: {got} < {previous}"
        previous = got
    assert previous == 10  # at weight 6 domain a gets all it asks for (10 of 12)


def test_a_growth_lp_that_glop_calls_infeasible_counts_as_stuck(monkeypatch):
    # GLOP can call the exact fair level infeasible by rounding (seen on the oversubscribed
    # synthetic example): the domain must count as stuck, not crash the round.
    from gpupool.policies import fairshare

    real_lp = fairshare._FluidShares._lp

    def flaky_lp(self, frozen, active, grow, floor=None):
        if grow not in (None, "*"):
            return {}, None
        return real_lp(self, frozen, active, grow, floor)

    monkeypatch.setattr(fairshare._FluidShares, "_lp", flaky_lp)
    snapshot = two_domains(2.0, 1.0).build()
    allocation = FairSharePolicy().allocate(snapshot)
    check_invariants(snapshot, allocation)
    assert started_by(snapshot, allocation, "a") > 0
