"""Differential replay benchmark: the simulator and the live path on one scenario.

Replays gpupool.simulations.differential's synthetic scenario (budgets, a
voucher programme with an expiring voucher, flat subsidy rules, a preempting
priority policy, jobs overrunning their estimates) through the simulator and
through the live scheduler on a fresh SQLite database (or ``--url``, a
migrated database holding only the admin ``admin``), and prints one JSON line
per seed: job and ledger counts, preemptions, timeouts, rounds, seconds for
each side, and how many job records and ledger entries differ (0 and 0 when
the two agree).

    .venv/bin/python benchmarks/differential.py                       # seeds 1..3, 48 jobs
    .venv/bin/python benchmarks/differential.py --seeds 1 2 --jobs 96 --hours 72
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from gpupool.simulations.differential import (
    compare,
    policy_document,
    replay_live,
    replay_simulated,
    synthetic,
)


def fresh_sqlite(directory: Path, seed: int) -> str:
    from gpupool.scheduler.database import make_engine, unit_of_work
    from gpupool.scheduler.migrate import upgrade
    from gpupool.scheduler.permissions import OWNER, add_user

    url = f"sqlite:///{directory / f'differential-{seed}.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    with unit_of_work(url) as session:
        add_user(session, OWNER, "admin", "admin")
    return url


def run(seed: int, jobs: int, hours: float, url: str | None, directory: Path) -> dict:
    scenario = synthetic(seed, jobs=jobs, hours=hours)
    began = time.perf_counter()
    simulated = replay_simulated(scenario, policy_document())
    simulated_seconds = time.perf_counter() - began
    target = url or fresh_sqlite(directory, seed)
    began = time.perf_counter()
    live = replay_live(target, scenario, policy_document())
    live_seconds = time.perf_counter() - began
    diff = compare(simulated, live)
    return {
        "seed": seed,
        "jobs": jobs,
        "ledger_entries": len(live.ledger),
        "preemptions": sum(j.preemptions for j in live.jobs.values()),
        "timed_out": sum(j.state == "timed_out" for j in live.jobs.values()),
        "waiting": sum(j.state == "waiting" for j in live.jobs.values()),
        "rounds": [simulated.rounds, live.rounds],
        "simulated_seconds": round(simulated_seconds, 2),
        "live_seconds": round(live_seconds, 2),
        "jobs_differing": len(diff.jobs),
        "entries_differing": len(diff.only_simulated) + len(diff.only_live),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--jobs", type=int, default=48)
    parser.add_argument("--hours", type=float, default=48.0)
    parser.add_argument("--url", help="a migrated database with the admin 'admin' (one seed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        for seed in args.seeds:
            print(json.dumps(run(seed, args.jobs, args.hours, args.url, Path(directory))))


if __name__ == "__main__":
    main()
