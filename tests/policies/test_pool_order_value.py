"""The baselines' default pool order: most effective GPU-hours per unit of price, not names.

Pool names are chosen so that name order would pick the other pool.
"""

from __future__ import annotations

import pytest

from gpupool.policies.fifo import FifoPolicy
from gpupool.policies.multifactor import MultifactorPolicy
from tests.policies.builders import SnapshotBuilder, check_invariants

# (case, [(pool, speed, price per GPU-hour)], the pool a free 4-GPU job goes to)
CASES = [
    ("same price: the faster type", [("a-slow", 0.5, 10.0), ("z-fast", 2.0, 10.0)], "z-fast"),
    ("gavel: one price", [("k80", 0.283, 1), ("p100", 0.833, 1), ("v100", 1.0, 1)], "v100"),
    ("faster, dearer per effective hour", [("a-slow", 1.0, 10.0), ("z-fast", 2.0, 30.0)], "a-slow"),
    ("faster, cheaper per eff. hour", [("a-slow", 1.0, 10.0), ("z-fast", 2.0, 19.0)], "z-fast"),
    ("same per effective hour: by name", [("a-slow", 1.0, 10.0), ("z-fast", 2.0, 20.0)], "a-slow"),
    ("no prices: by speed", [("a-slow", 1.0, 0.0), ("z-fast", 2.0, 0.0)], "z-fast"),
    ("free beats any price", [("a-slow", 1.0, 0.0), ("z-fast", 2.0, 1.0)], "a-slow"),
]  # fmt: skip


def snapshot(pools):
    b = SnapshotBuilder()
    for name, speed, price in pools:
        b.gpu_type(name.upper(), speed).pool(name, name.upper(), 8, price=price)
    return b.job(4, id=1).build()


@pytest.mark.parametrize("policy", [FifoPolicy(), MultifactorPolicy()], ids=["fifo", "multifactor"])
@pytest.mark.parametrize(("case", "pools", "expected"), CASES, ids=[c[0] for c in CASES])
def test_a_free_job_goes_to_the_best_value_pool(policy, case, pools, expected):
    snap = snapshot(pools)
    allocation = policy.allocate(snap)
    check_invariants(snap, allocation)
    assert [p.pool for p in allocation.placements] == [expected]
    assert allocation.why[1].endswith(
        "per effective GPU-hour (speed " + f"{dict((p, s) for p, s, _ in pools)[expected]:g})"
    )


def test_a_full_best_pool_falls_back_to_the_next_best():
    b = SnapshotBuilder()
    b.gpu_type("SLOW", 0.5).gpu_type("MID", 0.8).gpu_type("FAST", 1.0)
    b.pool("a", "SLOW", 8, price=1.0).pool("b", "MID", 8, price=1.0)
    b.pool("c", "FAST", 8, price=1.0, free_per_node=[0])
    snap = b.job(4, id=1).build()
    assert [p.pool for p in FifoPolicy().allocate(snap).placements] == ["b"]
