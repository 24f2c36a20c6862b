"""Allocation benchmark: how long one scheduling round takes, and how good it is.

Generates a seeded platform and queue (gang sizes 1..64 GPUs, 6 GPU types,
jobs allowed on 1..all types, 10 domains with guaranteed shares / borrowing
limits, 40 orgs with budgets and subsidies) and prints one JSON line per run:
{"policy", "jobs", "pools", "seconds", "objective", "bound", "gap", "started"}.
``seconds`` is the wall time of ``policy.allocate(snapshot)``: scoring, building
and solving the LP, packing gangs, and, for ``priority``, computing its bound
afterwards (benchmarks/priority_bound.py: the policy itself reports none), so
``seconds`` includes its bound LP as it did when the policy computed it.
``bound`` is a proven upper bound on ``objective`` (docs/policies-design.md).

    .venv/bin/python benchmarks/allocation.py                      # the default sizes
    .venv/bin/python benchmarks/allocation.py --jobs 10000 --pools 64 --policy priority
"""

from __future__ import annotations

import argparse
import json
import random
import time

from gpupool.accounting import SubsidyRules
from gpupool.model import Domain, GpuType, Job, Org, OrgAccount, Pool, PoolState, Snapshot
from gpupool.policies.params import Aging, DomainShare, PolicyParams

GPU_TYPES = (
    GpuType("H100", "nvidia", 80, 2.0),
    GpuType("A100", "nvidia", 80, 1.0),
    GpuType("H20", "nvidia", 96, 1.3),
    GpuType("L40S", "nvidia", 48, 0.7),
    GpuType("Ascend-910B", "huawei", 64, 0.8, domestic=True),
    GpuType("MLU370", "cambricon", 48, 0.5, domestic=True),
)
PRICE = {"H100": 30.0, "A100": 15.0, "H20": 18.0, "L40S": 8.0, "Ascend-910B": 9.0, "MLU370": 5.0}
DOMAINS = ("medical", "education", "science", "agriculture", "manufacturing", "finance",
           "government", "media", "energy", "general")  # fmt: skip
GANGS = (1, 1, 1, 1, 2, 2, 4, 4, 8, 8, 8, 16, 16, 32, 64)
DEFAULT_SIZES = ((1_000, 16), (10_000, 64), (100_000, 256))


def make_instance(jobs: int, pools: int, seed: int = 0) -> tuple[Snapshot, PolicyParams]:
    rng = random.Random(seed)
    now = 1_000_000.0
    types = {t.name: t for t in GPU_TYPES}
    pool_states = []
    for i in range(pools):
        t = GPU_TYPES[i % len(GPU_TYPES)] if i < len(GPU_TYPES) else rng.choice(GPU_TYPES)
        per_node = rng.choice((8, 8, 8, 4))
        nodes = rng.randint(4, 32)
        pool = Pool(f"pool-{i:03d}", f"site-{i % 12}", t.name, per_node * nodes, per_node,
                    PRICE[t.name] * rng.choice((0.9, 1.0, 1.1)))  # fmt: skip
        # a busy platform: some nodes partly used by work not described here
        free = tuple(rng.choice((per_node, per_node, per_node, rng.randrange(per_node)))
                     for _ in range(nodes))  # fmt: skip
        pool_states.append(PoolState(pool, free))
    domains = {d: Domain(d, weight=rng.choice((1.0, 1.0, 2.0, 3.0))) for d in DOMAINS}
    orgs, accounts = {}, {}
    for i in range(40):
        name = f"org-{i:02d}"
        orgs[name] = Org(name, DOMAINS[i % len(DOMAINS)], budget=None)
        budget = rng.choice((None, None, 5_000.0, 50_000.0, 500_000.0))
        accounts[name] = OrgAccount(name, budget_left=budget, subsidy_cap_left=20_000.0)
    pending = []
    for j in range(jobs):
        org = f"org-{rng.randrange(40):02d}"
        allowed = rng.sample([t.name for t in GPU_TYPES], rng.randint(1, len(GPU_TYPES)))
        pending.append(
            Job(
                id=j + 1,
                org=org,
                domain=orgs[org].domain,
                gpus=rng.choice(GANGS),
                hours=round(rng.lognormvariate(0.5, 1.2), 2) + 0.1,
                submitted_at=now - rng.uniform(0, 48 * 3600),
                gpu_types=() if len(allowed) == len(GPU_TYPES) else tuple(sorted(allowed)),
                priority=rng.choice((0, 0, 0, 1, 2)),
            )  # fmt: skip
        )
    snapshot = Snapshot(
        now=now, gpu_types=types, pools=tuple(pool_states), domains=domains, orgs=orgs,
        pending=tuple(pending), accounts=accounts, subsidy_budget_left=2_000_000.0,
        pricing=SubsidyRules(domain_rates={"medical": 0.5, "education": 0.4, "science": 0.3},
                             gpu_type_rates={"Ascend-910B": 0.3, "MLU370": 0.3}),
        usage={d: rng.uniform(0, 5_000) for d in DOMAINS},
    )  # fmt: skip
    shares = {
        "medical": DomainShare(fraction=0.2, borrow_limit=0.3),
        "education": DomainShare(fraction=0.15, borrow_limit=0.2),
        "science": DomainShare(gpus={"H100": 64, "A100": 64}, borrow_limit=None),
        "finance": DomainShare(fraction=0.05, borrow_limit=0.05),
    }
    params = PolicyParams(shares=shares, aging=Aging(per_hour=0.05, max_boost=1.0), seed=seed)
    return snapshot, params


def build_policy(kind: str, params: PolicyParams):
    # the benchmark names its two policies directly; documents go through the registry
    from gpupool.policies.fairshare import FairSharePolicy
    from gpupool.policies.priority import PriorityPolicy

    factories = {
        "priority": lambda: PriorityPolicy(params),
        "fair-share": lambda: FairSharePolicy(params),
    }
    return factories[kind]()


def allocate_and_bound(policy, snapshot):
    """(allocation, bound): priority's bound comes from benchmarks/priority_bound.py."""
    from gpupool.policies.priority import PriorityPolicy

    allocation = policy.allocate(snapshot)
    if isinstance(policy, PriorityPolicy):
        from priority_bound import priority_bound

        return allocation, priority_bound(policy, snapshot, allocation)
    return allocation, allocation.bound


def run(kind: str, jobs: int, pools: int, seed: int) -> dict:
    snapshot, params = make_instance(jobs, pools, seed)
    policy = build_policy(kind, params)
    start = time.perf_counter()
    allocation, bound = allocate_and_bound(policy, snapshot)
    seconds = time.perf_counter() - start
    objective, bound = allocation.objective or 0.0, bound or 0.0
    return {
        "policy": kind,
        "jobs": jobs,
        "pools": pools,
        "seconds": round(seconds, 3),
        "objective": round(objective, 2),
        "bound": round(bound, 2),
        "gap": round((bound - objective) / bound, 5) if bound else 0.0,
        "started": len(allocation.placements),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--pools", type=int)
    parser.add_argument("--policy", choices=("priority", "fair-share"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = [(args.jobs, args.pools or 64)] if args.jobs else list(DEFAULT_SIZES)
    kinds = [args.policy] if args.policy else ["priority", "fair-share"]
    for kind in kinds:
        for jobs, pools in sizes:
            print(json.dumps(run(kind, jobs, pools, args.seed)), flush=True)


if __name__ == "__main__":
    main()
