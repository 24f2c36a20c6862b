"""Compositions of the service layer that a front end returns whole.

`gpupool job show`, `schedule`, `report usage|subsidies` and `policy whatif`
assemble their ``--json`` output from several service calls. The HTTP API
returns exactly those dicts, so the assembly lives here, callable by any front
end with a session (or, for a live round, an engine) and an actor.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from gpupool.model import GpupoolError, NotFound

USAGE_GROUPS = {
    "domain": "domain",
    "org": "org",
    "gpu-type": "gpu_type",
    "site": "site",
    "pool": "pool",
}


# --- jobs --------------------------------------------------------------------


def job_detail(session: Session, actor: str, job_id: int) -> dict:
    """`job show --json`: the job's view, where it ran, and its price explained."""
    from gpupool.scheduler import clock, repository
    from gpupool.scheduler.accounts import job_accounting
    from gpupool.scheduler.permissions import job_for
    from gpupool.scheduler.service import job_view

    row = job_for(session, actor, job_id)
    view = job_view(row)
    view["placements"] = [
        {
            "pool": p.pool.name,
            "nodes": p.nodes,
            "started_at": clock.iso(p.started_at),
            "ended_at": clock.iso(p.ended_at),
            "reason": p.reason,
        }
        for p in repository.placements_of(session, row.id)
    ]
    view["accounting"] = job_accounting(session, row)
    return view


# --- scheduling rounds -------------------------------------------------------


def schedule(engine: Engine, actor: str, dry_run: bool, grace=None, on_wait=None) -> dict:
    """`schedule [--dry-run] --json`: one round with the active policy.

    A live round holds the round lock (waiting for a daemon's round in
    progress, calling ``on_wait()`` once if it has to) and is admins only; a dry
    run computes the same decision and writes nothing.
    """
    from gpupool.scheduler.daemon import policy_label, run_locked_round
    from gpupool.scheduler.database import unit_of_work
    from gpupool.scheduler.locking import round_lock
    from gpupool.scheduler.permissions import authorize
    from gpupool.scheduler.rounds import run_active_round

    if dry_run:
        with unit_of_work(engine, write_lock="when_writing") as session:
            authorize(session, actor, "schedule.dry_run")  # shows every org's jobs
            result, active = run_active_round(session, dry_run=True, grace=grace)
            return round_view(session, result, policy_label(active))
    # refuse before waiting for the round lock; a read, so not behind a round writing
    with unit_of_work(engine, write_lock="when_writing") as session:
        authorize(session, actor, "schedule.run")
    with (
        round_lock(engine, wait=True, on_wait=on_wait),
        unit_of_work(engine, write_lock="when_writing") as session,
    ):
        report = run_locked_round(session, actor, grace)
        return round_view(session, report.result, report.policy)


def round_view(session: Session, result, policy: str) -> dict:
    from gpupool.scheduler import repository

    jobs = {j.id: j for j in repository.list_jobs(session)}
    started = [
        {
            "job": s.job_id,
            "org": jobs[s.job_id].org.name,
            "gpus": jobs[s.job_id].gpus,
            "pool": s.pool,
            "nodes": [list(n) for n in s.nodes],
            "cost": round(s.charge.cost, 2),
            "subsidy": round(s.charge.subsidy, 2),
            "org_pays": round(s.charge.org_pays, 2),
            "why": s.reason,
        }
        for s in result.started
    ]
    waiting = [
        {
            "job": job_id,
            "org": jobs[job_id].org.name,
            "gpus": jobs[job_id].gpus,
            "reason": str(reason),
        }
        for job_id, reason in sorted(result.waiting.items())
    ]
    return {
        "round": result.round_id,
        "dry_run": result.dry_run,
        "policy": policy,
        "started": started,
        "waiting": waiting,
        "preempted": result.preempted,
        "timed_out": result.timed_out,
        "skipped": {str(k): v for k, v in sorted(result.skipped.items())},
        "quarantined": {str(k): v for k, v in sorted(result.quarantined.items())},
        "set_aside": dict(sorted(result.set_aside.items())),
        "solve_seconds": round(result.solve_seconds, 4),
    }


# --- reports -----------------------------------------------------------------


def usage_report(
    session: Session, actor: str, period: str | None = None, by: str = "domain"
) -> list[dict]:
    """`report usage --json`: GPU-hours and money per period and group, from the ledger
    (a submitter: its own organisation's entries only)."""
    from gpupool.scheduler import accounts, repository
    from gpupool.scheduler.permissions import authorize

    if by not in USAGE_GROUPS:
        raise GpupoolError(f"must be one of {', '.join(USAGE_GROUPS)}, got {by!r}", location="--by")
    _check_period(period)
    grant = authorize(session, actor, "report.read")
    books = accounts.load_books(session)
    speeds = {t.name: t.speed for t in repository.list_gpu_types(session)}
    sites = {p.name: p.site for p in repository.list_pools(session)}
    last_pools = {j.id: j.pool.name for j in repository.list_jobs(session) if j.pool}
    entries = [
        e for e in books.entries if (period is None or e.period == period) and grant.sees_org(e.org)
    ]
    field = USAGE_GROUPS[by]
    return _usage_rows(entries, speeds, _grouping(field, sites, last_pools), field)


def _check_period(period: str | None) -> None:
    if period is not None:
        from gpupool.accounting.periods import label_kind

        try:
            label_kind(period)
        except GpupoolError as exc:
            raise GpupoolError(exc.message, location="--period") from None


def _grouping(by: str, sites: dict[str, str], last_pools: dict[int, str]):
    """entry -> the value ``by`` groups it under (a charge counts at the pool it
    names; one stored before the ledger kept pools at its job's last pool)."""

    def pool_of(entry) -> str | None:
        return entry.pool or last_pools.get(entry.job_id)

    if by == "pool":
        return pool_of
    if by == "site":
        return lambda entry: sites.get(pool_of(entry))
    return lambda entry: getattr(entry, by)


def _usage_rows(entries, speeds, key_of, by: str) -> list[dict]:
    groups: dict[tuple, dict] = {}
    for entry in entries:
        if entry.kind not in ("charge", "correction"):
            continue
        key = (entry.period, key_of(entry) or "-")
        row = groups.setdefault(
            key,
            {"period": key[0], by: key[1], "gpu_hours": 0.0, "effective_gpu_hours": 0.0}
            | {"cost": 0.0, "subsidy": 0.0, "org_pays": 0.0, "_jobs": set()},
        )
        row["gpu_hours"] += entry.effective_gpu_hours / speeds.get(entry.gpu_type, 1.0)
        row["effective_gpu_hours"] += entry.effective_gpu_hours
        row["cost"] += float(entry.cost)
        row["subsidy"] += float(entry.subsidy)
        row["org_pays"] += float(entry.org_pays)
        row["_jobs"].add(entry.job_id)
    rows = []
    for key in sorted(groups):
        row = groups[key]
        row["jobs"] = len(row.pop("_jobs") - {None})
        for name in ("gpu_hours", "effective_gpu_hours"):
            row[name] = round(row[name], 4)
        for name in ("cost", "subsidy", "org_pays"):
            row[name] = round(row[name], 2)
        rows.append(row)
    return rows


def subsidy_report(session: Session, actor: str, programme: str | None = None) -> list[dict]:
    """`report subsidies --json`: subsidy per programme, period and org, with budgets
    (a submitter: its own organisation's rows only)."""
    from gpupool.scheduler import accounts
    from gpupool.scheduler.permissions import authorize

    grant = authorize(session, actor, "report.read")
    books = accounts.load_books(session)
    if programme is not None and programme not in {p.name for p in books.programmes}:
        raise NotFound(f"no programme named {programme!r}", location="--programme")
    budgets = {p.name: p.budget for p in books.programmes}
    totals = books.totals(by=("programme", "period", "org"))
    rows = []
    for (name, period, org), total in sorted(totals.items(), key=lambda kv: str(kv[0])):
        if name is None or (programme is not None and name != programme):
            continue
        if not grant.sees_org(org):
            continue
        used = sum(
            _voucher_hours(e.note)
            for e in books.entries
            if e.kind == "charge" and e.programme == name and e.period == period and e.org == org
        )
        rows.append(
            {
                "programme": name,
                "period": period,
                "org": org,
                "budget": budgets.get(name),
                "subsidy": float(total.subsidy),
                "cost": float(total.cost),
                "org_pays": float(total.org_pays),
                "effective_gpu_hours": round(total.effective_gpu_hours, 4),
                "voucher_hours": round(used, 4),
            }
        )
    return rows


def _voucher_hours(note: str) -> float:
    head = note.split(" voucher hours")[0] if "voucher hours" in note else ""
    try:
        return float(head)
    except ValueError:
        return 0.0


# --- policy what-if ----------------------------------------------------------


def whatif(
    session: Session, document, label: str, since: str, until: str | None, now: dt.datetime
) -> dict:
    """`policy whatif --json`: the recorded jobs replayed under ``document`` and
    under the active policy, compared per domain, with the window replayed
    (``since``, ``until``) and the number of pools. Writes nothing."""
    return whatif_results(session, document, label, since, until, now)[0]


def whatif_results(
    session: Session, document, label: str, since: str, until: str | None, now: dt.datetime
) -> tuple[dict, dict]:
    """:func:`whatif`'s comparison and the two SimulationResults (for per-job files)."""
    from gpupool.scheduler import clock
    from gpupool.scheduler.rounds import active_policy
    from gpupool.simulations import from_db

    end = from_db.parse_until(until, now)
    start = from_db.parse_since(since, end)
    scenario = from_db.scenario_from_db(session, start, end)
    active = active_policy(session)
    current_label = f"v{active.version} ({active.kind})" if active.version else "FIFO (default)"
    current = from_db.Contender(current_label, active.policy, active.pricing)
    proposed = from_db.Contender(
        f"{label} ({document.kind})", document.build(), document.params.subsidy
    )
    hours = (end - start).total_seconds() / 3600.0
    comparison, results = from_db.whatif(scenario, hours, current, proposed)
    window = {"since": clock.iso(start), "until": clock.iso(end), "pools": len(scenario.pools)}
    return {**comparison, **window}, results
