"""Replay the Microsoft Philly trace under several policies and print one JSON line each.

    .venv/bin/python benchmarks/simulation.py              # whole trace, three policies
    .venv/bin/python benchmarks/simulation.py --jobs 5000 --policy fifo

The workload and platform are the team's Philly scenario
(examples/scenarios/philly.yaml: 704 GPUs of four types in five pools, the 15
virtual clusters as 12 orgs in 8 domains, org budgets). ``--no-budgets``
lifts the org budgets, to time the engine on a queue that always drains.

Output fields: policy, jobs, wall_seconds (engine + policy, not the trace
load), cpu_seconds (the same span in this process's CPU time: on a shared,
busy machine it is the steadier figure), events_per_second (arrival,
completion and round events processed), jobs_per_second, mean_wait_hours,
utilisation, plus rounds and load_seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from gpupool.model import GpupoolError
from gpupool.policies.document import POLICY_KINDS
from gpupool.policies.params import PolicyParams
from gpupool.simulations.engine import EngineOptions, simulate
from gpupool.simulations.metrics import summarise
from gpupool.simulations.scenario import load_scenario
from gpupool.simulations.workload import Scenario

SCENARIO = Path(__file__).resolve().parents[1] / "examples/scenarios/philly.yaml"
POLICIES = ("fifo", "multifactor", "priority")


def philly_scenario(path: Path, budgets: bool) -> Scenario:
    scenario = load_scenario(path)
    if budgets:
        return scenario
    orgs = {name: replace(org, budget=None) for name, org in scenario.orgs.items()}
    return replace(scenario, orgs=orgs)


def run_one(kind: str, scenario: Scenario, jobs: int | None, time_limit_s: float) -> dict:
    policy = POLICY_KINDS[kind](params=PolicyParams(time_limit_s=time_limit_s))
    started, cpu_started = time.perf_counter(), time.process_time()
    result = simulate(scenario, policy, options=EngineOptions(max_jobs=jobs), policy_name=kind)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    platform = summarise(result)["platform"]
    replayed = len(result.records)
    return {
        "policy": kind,
        "jobs": replayed,
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "events_per_second": round(result.events / wall),
        "jobs_per_second": round(replayed / wall),
        "mean_wait_hours": round(platform["queueing_delay_hours"]["mean"] or 0.0, 4),
        "utilisation": round(platform["utilisation"] or 0.0, 4),
        "rounds": result.rounds,
        "finished": platform["finished"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", type=Path, default=SCENARIO)
    parser.add_argument("--no-budgets", action="store_true", help="lift every org budget")
    parser.add_argument("--jobs", type=int, default=None, help="replay only the first N jobs")
    parser.add_argument("--policy", action="append", choices=sorted(POLICY_KINDS))
    parser.add_argument("--time-limit", type=float, default=1.0, help="per-round solver bound")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        scenario = philly_scenario(args.scenario, budgets=not args.no_budgets)
    except GpupoolError as exc:  # e.g. the trace is absent outside the team checkout
        print(f"error: {exc}", file=sys.stderr)
        return 2
    load_seconds = round(time.perf_counter() - started, 2)
    for kind in args.policy or POLICIES:
        figures = run_one(kind, scenario, args.jobs, args.time_limit)
        figures["load_seconds"] = load_seconds
        print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
