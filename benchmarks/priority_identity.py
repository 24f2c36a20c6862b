"""Does a change to the ``priority`` policy change any decision? Record with one tree, compare.

    git archive <old-commit> | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old .venv/bin/python benchmarks/priority_identity.py record /tmp/old.pkl
    .venv/bin/python benchmarks/priority_identity.py compare /tmp/old.pkl

208 seeded instances: 12 of benchmarks/allocation.py (8 of 1,000 jobs on 16
pools, 4 of 10,000 on 64) and 196 of tests.policies.builders.random_snapshot
(3, 15 or 40 jobs, with and without preemption). Per instance it keeps the
whole allocation: placements, waiting reasons, preemptions, charges,
objective, bound and the placements' reasons. ``--replay-jobs N`` (default
5,000; 0 skips) also replays the first N Philly jobs and keeps every job's
record (start, pool, end, preemptions, charge).

The bound is the one benchmarks report: asked of the policy in trees where it
had a ``report_bound`` option, else benchmarks/priority_bound.py's, computed
from the snapshot and the allocation. ``compare`` runs the current tree and
compares every field. Prints one line per difference and a summary; exit code
1 if anything differs.
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # tests.policies.builders; appended, so PYTHONPATH trees win

from allocation import make_instance  # noqa: E402  (benchmarks/ is the script's own folder)

from gpupool.policies.params import PolicyParams, Preemption  # noqa: E402
from gpupool.policies.priority import PriorityPolicy  # noqa: E402

PHILLY = ROOT / "examples/scenarios/philly.yaml"


def instances():
    """(name, snapshot, params) for the 208 instances, always in the same order."""
    from tests.policies.builders import random_snapshot

    for jobs, pools, seeds in ((1_000, 16, range(8)), (10_000, 64, range(4))):
        for seed in seeds:
            snapshot, params = make_instance(jobs, pools, seed)
            yield f"bench-{jobs}-{seed}", snapshot, params
    for preempt in (False, True):
        params = PolicyParams(preemption=Preemption(preempt, min_gap=0.5))
        for seed in range(98):
            jobs = (3, 15, 40)[seed % 3]
            snapshot = random_snapshot(seed, jobs=jobs, pools=2 + seed % 3, running=seed % 4)
            yield f"random-{seed}-preempt-{preempt}", snapshot, params


def fields(allocation) -> dict:
    return {
        "placements": allocation.placements,
        "waiting": dict(allocation.waiting),
        "preempt": allocation.preempt,
        "charges": dict(allocation.charges),
        "objective": allocation.objective,
        "bound": allocation.bound,
        "why": dict(getattr(allocation, "why", {})),
    }


def allocations() -> dict[str, dict]:
    """Every instance's allocation, with the bound benchmarks report (module docstring)."""
    has_option = any(f.name == "report_bound" for f in dataclasses.fields(PriorityPolicy))
    result = {}
    for name, snapshot, params in instances():
        policy = PriorityPolicy(params, **({"report_bound": True} if has_option else {}))
        allocation = policy.allocate(snapshot)
        if allocation.bound is None:
            from priority_bound import priority_bound  # benchmarks/, the script's own folder

            bound = priority_bound(policy, snapshot, allocation)
            allocation = dataclasses.replace(allocation, bound=bound)
        result[name] = fields(allocation)
    return result


def replay(jobs: int) -> dict[int, tuple]:
    from gpupool.simulations.engine import EngineOptions, simulate
    from gpupool.simulations.scenario import load_scenario

    if jobs <= 0:
        return {}
    policy = PriorityPolicy(PolicyParams(time_limit_s=1.0))
    result = simulate(load_scenario(PHILLY), policy, options=EngineOptions(max_jobs=jobs))
    return {
        r.job.id: (r.first_start, r.pool, r.finished_at, r.preemptions, r.cost, r.org_pays)
        for r in result.records
    }


def differences(old: dict, new: dict) -> list[str]:
    found = [f"{key}: missing" for key in old if key not in new]
    for key in sorted(set(old) & set(new)):
        a, b = old[key], new[key]
        if isinstance(a, dict) and set(a) >= {"placements", "objective"}:
            found += [f"{key}.{f}" for f in a if a[f] != b.get(f)]
        elif a != b:
            found.append(f"{key}: {a} != {b}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("record", "compare"))
    parser.add_argument("path", type=Path)
    parser.add_argument("--replay-jobs", type=int, default=5_000)
    args = parser.parse_args(argv)
    if args.mode == "record":
        recorded = {"allocations": allocations(), "replay": replay(args.replay_jobs)}
        args.path.write_bytes(pickle.dumps(recorded))
        print(f"recorded {len(recorded['allocations'])} allocations, "
              f"{len(recorded['replay'])} replayed jobs")  # fmt: skip
        return 0
    old = pickle.loads(args.path.read_bytes())
    found = differences(old["allocations"], allocations())
    replayed = replay(len(old["replay"])) if old["replay"] else {}
    found += [f"replay job {d}" for d in differences(old["replay"], replayed)]
    for line in found:
        print(line)
    print(f"{len(old['allocations'])} instances, {len(replayed)} replayed jobs: "
          f"{len(found)} differences")  # fmt: skip
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
