"""Replay the Microsoft Philly trace under several policies and print one JSON line each.

    .venv/bin/python benchmarks/simulation.py              # whole trace, three policies
    .venv/bin/python benchmarks/simulation.py --jobs 5000 --policy fifo

Platform: 512 GPUs in two pools, 48 nodes x 8 reference GPUs (speed 1.0) and
16 nodes x 8 GPUs twice as fast, so the trace's mean demand (about 374 GPUs)
loads it to roughly 60% in effective terms, with queues at the bursts. The
15 Philly virtual clusters map onto four orgs in four domains (the four
largest VCs get one org each, all others share the fourth). Every job may use
either pool; estimates are exact (the trace has no user estimates).

Output fields: policy, jobs, wall_seconds (engine + policy, not the trace
load), events_per_second (arrival, completion and round events processed),
jobs_per_second, mean_wait_hours, utilisation, plus rounds and load_seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from gpupool.model import Domain, GpuType, Org, Pool
from gpupool.policies.document import POLICY_KINDS
from gpupool.policies.params import PolicyParams
from gpupool.simulations.engine import EngineOptions, simulate
from gpupool.simulations.metrics import summarise
from gpupool.simulations.traces import load_philly
from gpupool.simulations.workload import Scenario

TRACE = Path(__file__).resolve().parents[2] / "shared/traces/philly_pollux/philly.csv"
POLICIES = ("fifo", "multifactor", "priority")

GPU_TYPES = {
    "ref": GpuType("ref", "nvidia", 32, speed=1.0),
    "fast": GpuType("fast", "nvidia", 80, speed=2.0),
}
POOLS = (
    Pool("philly-ref", "redmond", "ref", 384, 8, 8.0),
    Pool("philly-fast", "redmond", "fast", 128, 8, 20.0),
)
DOMAINS = {name: Domain(name) for name in ("research", "product", "education", "other")}
ORGS = {
    "vc-6214e9": Org("vc-6214e9", "research"),
    "vc-11cb48": Org("vc-11cb48", "product"),
    "vc-6c71a0": Org("vc-6c71a0", "education"),
    "vc-rest": Org("vc-rest", "other"),
}
VC_MAP = {"6214e9": "vc-6214e9", "11cb48": "vc-11cb48", "6c71a0": "vc-6c71a0"}


def philly_scenario(trace: Path) -> Scenario:
    load = load_philly(trace, vc_map=VC_MAP, default_org="vc-rest", orgs=ORGS, pools=POOLS)
    return Scenario(
        name="philly",
        gpu_types=GPU_TYPES,
        pools=POOLS,
        domains=DOMAINS,
        orgs=ORGS,
        jobs=load.jobs,
        dropped=dict(load.dropped),
    )


def run_one(kind: str, scenario: Scenario, jobs: int | None, time_limit_s: float) -> dict:
    policy = POLICY_KINDS[kind](params=PolicyParams(time_limit_s=time_limit_s))
    started = time.perf_counter()
    result = simulate(scenario, policy, options=EngineOptions(max_jobs=jobs), policy_name=kind)
    wall = time.perf_counter() - started
    platform = summarise(result)["platform"]
    replayed = len(result.records)
    return {
        "policy": kind,
        "jobs": replayed,
        "wall_seconds": round(wall, 2),
        "events_per_second": round(result.events / wall),
        "jobs_per_second": round(replayed / wall),
        "mean_wait_hours": round(platform["queueing_delay_hours"]["mean"] or 0.0, 4),
        "utilisation": round(platform["utilisation"] or 0.0, 4),
        "rounds": result.rounds,
        "finished": platform["finished"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--jobs", type=int, default=None, help="replay only the first N jobs")
    parser.add_argument("--policy", action="append", choices=sorted(POLICY_KINDS))
    parser.add_argument("--time-limit", type=float, default=1.0, help="per-round solver bound")
    args = parser.parse_args(argv)
    if not args.trace.exists():
        print(f"trace not found: {args.trace}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    scenario = philly_scenario(args.trace)
    load_seconds = round(time.perf_counter() - started, 2)
    for kind in args.policy or POLICIES:
        figures = run_one(kind, scenario, args.jobs, args.time_limit)
        figures["load_seconds"] = load_seconds
        print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
