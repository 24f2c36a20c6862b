"""Whole-database invariants the stress and crash tests check after the fact.

Each check reads only committed history, so it holds whatever interleaving of
submissions, cancels, finishes and rounds produced it:

- capacity: sweeping placement start/end events per pool node (ends before
  starts at the same instant, as [start, end) intervals), no node ever held
  more GPUs than it has;
- placements: no job holds two open placements; a running job holds exactly
  one; a job in any other state holds none;
- ledger: cost == subsidy + org_pays in every entry and in the sums; every
  charge names a job that ran; no org paid more than its budget in a period.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from decimal import Decimal

from sqlalchemy import select

from gpupool.scheduler import repository
from gpupool.scheduler.database import unit_of_work
from gpupool.scheduler.orm import JobRow, LedgerEntryRow, OrgRow, PlacementRow

FOREVER = dt.datetime.max.replace(tzinfo=dt.UTC)


def check_all(db) -> dict[str, int]:
    """Run every check; returns the figures checked (for the report)."""
    with unit_of_work(db) as session:
        placements = session.scalars(select(PlacementRow)).all()
        jobs = {j.id: j for j in session.scalars(select(JobRow))}
        ledger = session.scalars(select(LedgerEntryRow)).all()
        budgets = {o.id: o.budget for o in session.scalars(select(OrgRow))}
        node_sizes = {
            p.name: repository.pool_model(p).node_sizes() for p in repository.list_pools(session)
        }
        figures = {
            "capacity_events": check_capacity(placements, node_sizes),
            "jobs": check_placements(placements, jobs),
            "ledger_entries": check_ledger(ledger, placements, budgets),
        }
    return figures


def check_capacity(placements, node_sizes) -> int:
    events = defaultdict(list)  # (pool, node) -> [(instant, +/- gpus)]
    for p in placements:
        for node, gpus in p.nodes:
            events[(p.pool.name, int(node))].append((p.started_at, 1, int(gpus)))
            events[(p.pool.name, int(node))].append((p.ended_at or FOREVER, 0, -int(gpus)))
    count = 0
    for (pool, node), timeline in events.items():
        held = 0
        for instant, _order, delta in sorted(timeline):  # ends (0) sort before starts (1)
            held += delta
            count += 1
            assert 0 <= held <= node_sizes[pool][node], (
                f"{pool} node {node} holds {held} GPUs at {instant}"
            )
    return count


def check_placements(placements, jobs) -> int:
    open_per_job = Counter(p.job_id for p in placements if p.ended_at is None)
    assert max(open_per_job.values(), default=0) <= 1, "a job holds two open placements"
    for job in jobs.values():
        expected = 1 if job.state == "running" else 0
        assert open_per_job.get(job.id, 0) == expected, (job.id, job.state)
    return len(jobs)


def check_ledger(ledger, placements, budgets) -> int:
    ran = {p.job_id for p in placements}
    paid = defaultdict(Decimal)
    totals = [Decimal(0)] * 3
    for entry in ledger:
        cost, subsidy, org_pays = (
            Decimal(str(x)) for x in (entry.cost, entry.subsidy, entry.org_pays)
        )
        assert cost == subsidy + org_pays, entry.id
        totals = [totals[0] + cost, totals[1] + subsidy, totals[2] + org_pays]
        if entry.kind == "charge":
            assert entry.job_id in ran, f"ledger entry {entry.id} charges a job that never ran"
        paid[(entry.org_id, entry.period)] += org_pays
    assert totals[0] == totals[1] + totals[2]
    for (org_id, period), amount in paid.items():
        budget = budgets[org_id]
        assert budget is None or amount <= Decimal(str(budget)), (org_id, period, amount, budget)
    return len(ledger)
