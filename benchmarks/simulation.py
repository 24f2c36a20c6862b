"""Replay the Microsoft Philly trace under several policies and print one JSON line each.

    .venv/bin/python benchmarks/simulation.py              # whole trace, three policies
    .venv/bin/python benchmarks/simulation.py --jobs 5000 --policy fifo
    .venv/bin/python benchmarks/simulation.py --scenario examples/scenarios/subsidy-vouchers.yaml

The workload and platform are the team's Philly scenario
(examples/scenarios/philly.yaml: 704 GPUs of four types in five pools, the 15
virtual clusters as 12 orgs in 8 domains, org budgets). ``--no-budgets``
lifts the org budgets, to time the engine on a queue that always drains.

``--scenario`` replays another scenario file. Without ``--policy`` it is run
under a policy document, ``--policy-file`` (default: the subsidy comparison's
examples/policies/subsidy-multifactor.yaml, with its pool order and subsidy
section), as ``gpupool simulate compare`` runs it; the printed policy is the
scenario's name. ``--trace`` replaces the scenario's ``workload.path`` (the
shipped files find ../shared beside the main checkout, not beside a worktree).

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

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "examples/scenarios/philly.yaml"
SUBSIDY_POLICY = ROOT / "examples/policies/subsidy-multifactor.yaml"
POLICIES = ("fifo", "multifactor", "priority")


def philly_scenario(path: Path, budgets: bool, trace: Path | None = None) -> Scenario:
    overrides = () if trace is None else (("workload.path", str(trace.resolve())),)
    scenario = load_scenario(path, overrides=overrides)
    if budgets:
        return scenario
    orgs = {name: replace(org, budget=None) for name, org in scenario.orgs.items()}
    return replace(scenario, orgs=orgs)


def run_one(kind: str, scenario: Scenario, jobs: int | None, time_limit_s: float) -> dict:
    policy = POLICY_KINDS[kind](params=PolicyParams(time_limit_s=time_limit_s))
    return timed(kind, scenario, policy, None, jobs)


def run_document(path: Path, scenario: Scenario, jobs: int | None) -> dict:
    """Replay under a policy document, priced with its subsidy section (simulate compare's way)."""
    from gpupool.policies.document import check_names, load_policy_file

    document = load_policy_file(path)
    check_names(document, scenario.gpu_types, scenario.domains)
    return timed(scenario.name, scenario, document.build(), document.params.subsidy, jobs)


def timed(label: str, scenario: Scenario, policy, pricing, jobs: int | None) -> dict:
    started, cpu_started = time.perf_counter(), time.process_time()
    options = EngineOptions(max_jobs=jobs)
    result = simulate(scenario, policy, pricing=pricing, options=options, policy_name=label)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    platform = summarise(result)["platform"]
    replayed = len(result.records)
    return {
        "policy": label,
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
    parser.add_argument("--scenario", type=Path, default=None, help="default: philly.yaml")
    parser.add_argument("--policy-file", type=Path, default=None, help="a policy document")
    parser.add_argument("--trace", type=Path, default=None, help="the workload file to read")
    parser.add_argument("--no-budgets", action="store_true", help="lift every org budget")
    parser.add_argument("--jobs", type=int, default=None, help="replay only the first N jobs")
    parser.add_argument("--policy", action="append", choices=sorted(POLICY_KINDS))
    parser.add_argument("--time-limit", type=float, default=1.0, help="per-round solver bound")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        path = args.scenario or SCENARIO
        scenario = philly_scenario(path, budgets=not args.no_budgets, trace=args.trace)
        document = args.policy_file
        if document is None and args.scenario is not None and not args.policy:
            document = SUBSIDY_POLICY
        runs = [lambda: run_document(document, scenario, args.jobs)] if document else []
    except GpupoolError as exc:  # e.g. the trace is absent outside the team checkout
        print(f"error: {exc}", file=sys.stderr)
        return 2
    load_seconds = round(time.perf_counter() - started, 2)
    if not runs:
        kinds = args.policy or POLICIES
        runs = [lambda k=k: run_one(k, scenario, args.jobs, args.time_limit) for k in kinds]
    for run in runs:
        try:
            figures = run()
        except GpupoolError as exc:  # a policy document that does not parse or fit
            print(f"error: {exc}", file=sys.stderr)
            return 2
        figures["load_seconds"] = load_seconds
        print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
