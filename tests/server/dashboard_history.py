"""A platform with a week of history for the dashboard's tests, and its server.

On the small platform and users of tests/server/conftest.py (root admin, bob
submitter for lab, hana submitter for hosp, audrey auditor, a token each):

- policy v1 (fifo), then v2 (priority, medical weight 3): a diff to show;
- programme ``health`` (a fixed 30-day period around now, budget 1000, pays
  half the price of medical jobs): hosp's finished jobs draw on it;
- rounds 8, 7 and 5 days ago start jobs; six finish at different times, so
  usage spreads over several days, and hosp's four make four payments in
  the burn-down (440 in all: hosp's own budget of 1000 never binds);
- a round two hours ago starts a job of each org on the 16 A100; a round an
  hour ago leaves a 16-GPU job waiting in each domain (no A100 free), and one
  job is submitted after it (not yet considered by a round);
- a hosp job named like a script tag, to check that names are escaped;
- otto, the agent of site Beijing (pool p-a100), with a token: sees the jobs
  placed there, and is refused the money pages.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from tests.server.conftest import launch, populate, private_database

HOSTILE_NAME = "<script>alert('x')</script>"
BUDGET = 1000.0
SUBSIDY_PAID = 440.0


@dataclass
class History:
    """Job ids by role in the story, for assertions."""

    finished_hosp: list[int]
    finished_lab: list[int]
    running: list[int]
    waiting_hosp: int
    waiting_lab: int
    unconsidered: int
    hostile: int


def build_history(db: str, now: dt.datetime) -> History:
    from gpupool.accounting.declarations import parse_programmes
    from gpupool.scheduler import accounts, lifecycle, policies_store, service
    from gpupool.scheduler.database import unit_of_work
    from gpupool.scheduler.rounds import active_policy, run_round

    day, hour = dt.timedelta(days=1), dt.timedelta(hours=1)
    t0 = (now - 8 * day).replace(minute=0, second=0, microsecond=0)

    def submit(session, org: str, gpus: int, hours: float, name: str, at, types=("A100",)):
        request = service.JobRequest(
            org=org, gpus=gpus, hours=hours, gpu_types=list(types), name=name
        )
        return service.submit_job(session, "root", request, at)[0]

    def round_at(at) -> None:
        with unit_of_work(db) as session:
            active = active_policy(session)
            run_round(session, active.policy, at, policy_version=active.version)

    def finish(job_id: int, at) -> None:
        with unit_of_work(db) as session:
            lifecycle.finish_job(session, "root", job_id, at=at, now=now)

    with unit_of_work(db) as session:
        policies_store.apply_policy_text(session, "root", "kind: fifo\n", "v1.yaml", "start")
        policies_store.apply_policy_text(
            session,
            "root",
            "kind: priority\ndomains:\n  medical: {weight: 3.0}\n  general: {weight: 1.0}\n",
            "v2.yaml",
            "medical first",
        )
        period = {"start": (now - 10 * day).isoformat(), "end": (now + 20 * day).isoformat()}
        entry = {"name": "health", "period": period, "budget": BUDGET, "rate": 0.5}
        (programme,) = parse_programmes([{**entry, "domains": ["medical"]}], "test")
        accounts.add_programme(session, "root", programme)
        first = [
            submit(session, "hosp", 8, 4, "ct-scan", t0),
            submit(session, "lab", 8, 5, "train", t0),
            submit(session, "hosp", 8, 2, "mri", t0, ("H100",)),
        ]
    round_at(t0)
    finish(first[0], t0 + 4 * hour)
    finish(first[1], t0 + 5 * hour)
    finish(first[2], t0 + 1 * hour)
    with unit_of_work(db) as session:
        second = [
            submit(session, "hosp", 8, 3, "segment", t0 + day),
            submit(session, "hosp", 8, 2, HOSTILE_NAME, t0 + day, ("H100",)),
        ]
    round_at(t0 + day)
    finish(second[0], t0 + day + 3 * hour)
    finish(second[1], t0 + day + 1 * hour)
    with unit_of_work(db) as session:
        third = submit(session, "lab", 8, 2, "eval", t0 + 3 * day)
    round_at(t0 + 3 * day)
    finish(third, t0 + 3 * day + 2 * hour)
    last = now - hour
    with unit_of_work(db) as session:
        running = [
            submit(session, "hosp", 8, 10, "long-run", last - hour),
            submit(session, "lab", 8, 10, "sweep", last - hour),
        ]
    round_at(last - hour)
    with unit_of_work(db) as session:
        waiting_hosp = submit(session, "hosp", 16, 2, "big-hosp", last)
        waiting_lab = submit(session, "lab", 16, 2, "big-lab", last)
    round_at(last)
    with unit_of_work(db) as session:
        unconsidered = submit(session, "lab", 1, 1, "late", now - dt.timedelta(minutes=5))
    return History(
        finished_hosp=[first[0], first[2], second[0], second[1]],
        finished_lab=[first[1], third],
        running=running,
        waiting_hosp=waiting_hosp,
        waiting_lab=waiting_lab,
        unconsidered=unconsidered,
        hostile=second[1],
    )


AGENT = "otto"


def add_agent(db: str) -> str:
    from gpupool.scheduler import permissions, tokens
    from gpupool.scheduler.database import unit_of_work

    with unit_of_work(db) as session:
        permissions.add_user(session, "root", AGENT, "agent", site="Beijing")
        return tokens.create_token(session, "root", AGENT)[1]


def start_dashboard_server(backend: str, folder):
    """(server, history, clean-up): a populated database with history, served."""
    db, drop = private_database(backend, folder)
    try:
        tokens = populate(db)
        tokens[AGENT] = add_agent(db)
        history = build_history(db, dt.datetime.now(dt.UTC))
        server = launch(db)
    except BaseException:
        drop()
        raise
    server.tokens = tokens

    def stop() -> None:
        server.stop()
        drop()

    return server, history, stop
