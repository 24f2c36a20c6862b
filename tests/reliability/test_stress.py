"""Many processes at once on one PostgreSQL database; afterwards every invariant holds.

8 submitter processes x 200 jobs each (a tenth of them retried with the same
submit key), randomly cancelling their jobs and reporting running ones
finished, while 2 scheduler daemons run rounds back to back. Workers call the
service layer directly, one transaction per operation, as the CLI would.

Afterwards: every accepted submission exists exactly once under its key, no
node was ever over capacity, no job holds two open placements, the ledger
balances and no budget was exceeded (tests/reliability/invariants.py). The
figures are printed (``-s``) and written to out/reliability-stress.json;
docs/reliability.md quotes a real run.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gpupool.model import GpupoolError
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import JobRow, SchedulerRoundRow
from tests.reliability.invariants import check_all

SUBMITTERS, JOBS_EACH, DAEMONS = 8, 200, 2


def _submitter(url: str, index: int, results) -> None:
    from gpupool.scheduler import lifecycle, service
    from gpupool.scheduler.database import make_engine
    from gpupool.scheduler.service import JobRequest

    rng = random.Random(index)
    engine = make_engine(url)
    accepted, mine, ops = {}, [], Counter()
    for n in range(JOBS_EACH):
        key = f"w{index}-{n}"
        request = JobRequest(
            org=rng.choice(["hosp", "lab", "lab"]),
            gpus=rng.choice([1, 1, 2, 4, 8]),
            hours=rng.choice([1, 2, 5]),
            submit_key=key,
        )
        for _attempt in range(2 if rng.random() < 0.1 else 1):  # a retried submission
            with unit_of_work(engine) as session:
                job_id, created = service.submit_job(session, "admin", request)
                # Read in the same transaction which of my jobs a site could report
                # finished, rather than in a transaction of its own that mostly finds none.
                running = session.scalars(
                    select(JobRow.id).where(JobRow.state == "running", JobRow.id.in_(mine))
                ).first()
            ops["submitted" if created else "retried"] += 1
            assert accepted.setdefault(key, job_id) == job_id
        mine.append(job_id)
        roll = rng.random()
        try:
            if roll < 0.15:
                with unit_of_work(engine) as session:
                    service.cancel_job(session, "admin", rng.choice(mine))
                ops["cancelled"] += 1
            elif roll < 0.6 and running is not None:
                with unit_of_work(engine) as session:  # refused if it ended meanwhile
                    lifecycle.finish_job(session, "admin", running, failed=roll < 0.2)
                ops["finished"] += 1
        except GpupoolError:  # e.g. cancelling a job that already ended: refused, fine
            ops["refused"] += 1
    engine.dispose()
    results.put(("submitter", index, accepted, dict(ops)))


def _daemon(url: str, index: int, stop, results) -> None:
    from gpupool.scheduler.daemon import run_daemon

    # 50 ms between attempts: two daemons still contend for every round, but the one
    # that finds the lock held does not reconnect a hundred times per round.
    summary = run_daemon(url, "admin", interval=0.05, stop=stop)
    results.put(("daemon", index, summary.rounds, summary.skipped, summary.failed))


@pytest.mark.postgres
def test_many_processes_lose_nothing_and_never_double_book(platform):
    if not platform.startswith("postgresql"):
        pytest.skip("the stress test runs on PostgreSQL (the multi-user database)")
    context = multiprocessing.get_context("fork")
    results, stop = context.Queue(), context.Event()
    began = time.perf_counter()
    daemons = [
        context.Process(target=_daemon, args=(platform, i, stop, results)) for i in range(DAEMONS)
    ]
    workers = [
        context.Process(target=_submitter, args=(platform, i, results)) for i in range(SUBMITTERS)
    ]
    for process in daemons + workers:
        process.start()
    reports = [results.get(timeout=180) for _ in workers]  # bounded: never hangs CI
    stop.set()
    reports += [results.get(timeout=60) for _ in daemons]
    for process in daemons + workers:
        process.join(timeout=60)
        assert process.exitcode == 0
    seconds = time.perf_counter() - began

    accepted = {k: v for r in reports if r[0] == "submitter" for k, v in r[2].items()}
    ops = sum((Counter(r[3]) for r in reports if r[0] == "submitter"), Counter())
    with unit_of_work(platform) as session:
        stored = dict(session.execute(select(JobRow.submit_key, JobRow.id)).all())
        states = Counter(session.scalars(select(JobRow.state)).all())
        rounds = session.scalar(select(func.count()).select_from(SchedulerRoundRow))
    assert len(accepted) == SUBMITTERS * JOBS_EACH
    assert stored == accepted  # each accepted submission exactly once, under its own key
    figures = check_all(platform)
    daemon_rounds = [r[2] for r in reports if r[0] == "daemon"]
    assert sum(daemon_rounds) == rounds and not any(r[4] for r in reports if r[0] == "daemon")

    summary = {
        "submitter_processes": SUBMITTERS,
        "daemon_processes": DAEMONS,
        "jobs_submitted": ops["submitted"],
        "retried_submissions": ops["retried"],
        "cancels": ops["cancelled"],
        "finishes_reported": ops["finished"],
        "refused_operations": ops["refused"],
        "rounds_run": rounds,
        "rounds_per_daemon": daemon_rounds,
        "rounds_skipped": sum(r[3] for r in reports if r[0] == "daemon"),
        "final_states": dict(sorted(states.items())),
        "seconds": round(seconds, 1),
        "invariants_checked": figures,
    }
    print("\nstress:", json.dumps(summary, indent=1))
    out = Path("out")
    out.mkdir(exist_ok=True)
    (out / "reliability-stress.json").write_text(json.dumps(summary, indent=1) + "\n")
