"""What each dashboard page shows, read through the service layer as the logged-in user.

Every function takes a session and the actor (the user the token belongs to)
and returns plain data for a template; none writes anything. Each reads
through the service functions the API calls for the same data, or asks
``permissions.authorize`` for the same operation the API route checks, so
every role sees on a page exactly what it gets from the API:

| page | operation | admin, auditor | submitter | agent |
|---|---|---|---|---|
| pools | ``platform.read`` | all | all | all |
| queue, job | ``job.list``, ``job.show`` | all | its org's jobs | jobs at its site |
| usage | ``report.read`` | all | its org's charges | refused |
| programmes | ``programme.list`` | all, spending | open to its org, own subsidy | refused |
| policy | ``policy.read`` | all | all | refused |

A refusal raises ``permissions.Denied``, which the unit of work records as a
``denied`` audit row.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy.orm import Session

from gpupool.model import GpupoolError, JobState
from gpupool.scheduler.permissions import Grant, authorize
from gpupool.server.dashboard import charts

WAITING = (JobState.PENDING.value, JobState.PREEMPTED.value)
ENDED = ("completed", "failed", "cancelled", "timed_out")
RECENT_ENDED = 20  # ended jobs listed on the queue page
USAGE_BY = {"domain": "domain", "org": "org", "gpu-type": "gpu_type"}
USAGE_KINDS = ("charge", "correction")
MAX_SERIES = 8  # groups drawn apart in a chart; the rest are summed as "others"
POLICY_VERSIONS = 50  # newest versions shown with their diffs


# --- pools -------------------------------------------------------------------


def overview(session: Session, actor: str) -> dict:
    """Pools with their free GPUs now, per site and GPU type."""
    from gpupool.scheduler.service import pool_views

    authorize(session, actor, "platform.read")
    pools = pool_views(session)
    sites = sorted({p["site"] for p in pools})
    types = sorted({p["gpu_type"] for p in pools})
    cells: dict[tuple[str, str], dict] = {}
    for pool in pools:
        cell = cells.setdefault((pool["site"], pool["gpu_type"]), {"free": 0, "gpus": 0})
        cell["free"] += pool["free_gpus"]
        cell["gpus"] += pool["gpus"]
    site_totals, type_totals = _totals(pools, "site"), _totals(pools, "gpu_type")
    matrix = [
        {"site": site, "cells": [cells.get((site, t)) for t in types], **site_totals[site]}
        for site in sites
    ]
    chart = None
    if pools:
        chart = charts.stacked_bars(
            "busy and free GPUs per pool",
            [p["name"] for p in pools],
            [
                charts.Series("busy", [p["gpus"] - p["free_gpus"] for p in pools]),
                charts.Series("free", [p["free_gpus"] for p in pools]),
            ],
            "GPUs",
        )
    return {
        "pools": pools,
        "types": types,
        "matrix": matrix,
        "type_totals": [type_totals[t] for t in types],
        "free": sum(p["free_gpus"] for p in pools),
        "total": sum(p["gpus"] for p in pools),
        "chart": chart,
        "legend": charts.legend(["busy", "free"]),
    }


def _totals(pools: list[dict], key: str) -> dict[str, dict]:
    totals: dict[str, dict] = {}
    for pool in pools:
        row = totals.setdefault(pool[key], {"free": 0, "gpus": 0})
        row["free"] += pool["free_gpus"]
        row["gpus"] += pool["gpus"]
    return totals


# --- the queue ---------------------------------------------------------------


def queue(
    session: Session,
    actor: str,
    after: int | None = None,
    before: int | None = None,
    limit: int | None = None,
) -> dict:
    """One page of waiting jobs per domain with why they wait (paged like `job list`:
    ``next_after`` / ``previous_before``), the running jobs (at most a page's
    maximum), the latest ended; every list cut in SQL."""
    from gpupool import limits
    from gpupool.scheduler.queries import job_count, job_page, latest_ended

    page = job_page(session, actor, list(WAITING), None, limit, after, before)
    waiting = page["jobs"]
    running = job_page(session, actor, ["running"], None, int(limits.JOB_PAGE.high))
    by_domain: dict[str, list[dict]] = defaultdict(list)
    for job in waiting:
        by_domain[job["domain"]].append(job)
    domains = [
        {
            "name": name,
            "jobs": jobs,
            "gpus": sum(j["gpus"] for j in jobs),
            "reasons": _reason_counts(jobs),
        }
        for name, jobs in sorted(by_domain.items())
    ]
    return {
        "domains": domains,
        "waiting": job_count(session, actor, list(WAITING)),
        "page": page,
        "running": running["jobs"],
        "running_total": job_count(session, actor, ["running"]),
        "ended": latest_ended(session, actor, list(ENDED), RECENT_ENDED),
    }


def _reason_counts(jobs: Iterable[dict]) -> list[tuple[str, int]]:
    counts: dict[str, int] = defaultdict(int)
    for job in jobs:
        counts[job["wait_reason"] or "not yet considered by a round"] += 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


# --- one job -----------------------------------------------------------------


def job(session: Session, actor: str, job_id: int) -> dict:
    """`job show`: the job, where it ran, and its price and subsidy explained."""
    from gpupool.scheduler.queries import job_detail

    view = job_detail(session, actor, job_id)
    accounting = view["accounting"]
    pool_reason = None
    if accounting is not None and accounting["pool"] == view["pool"]:
        pool_reason = accounting["pool_reason"]
    return {"job": view, "accounting": accounting, "pool_reason": pool_reason}


# --- usage over time ---------------------------------------------------------


def usage(session: Session, actor: str, by: str = "domain") -> dict:
    """GPU-hours per time bucket and group (domain, org or GPU type), from the ledger.

    A charge counts in the bucket where the usage it books ended. A submitter
    sees its own organisation's charges only.
    """
    from gpupool.scheduler import accounts, repository

    if by not in USAGE_BY:
        raise GpupoolError(f"must be one of {', '.join(USAGE_BY)}, got {by!r}", location="by")
    viewer = authorize(session, actor, "report.read")
    books = accounts.load_books(session)
    speeds = repository.usage_speeds(session)
    entries = [e for e in books.entries if e.kind in USAGE_KINDS and viewer.sees_org(e.org)]
    field = USAGE_BY[by]
    table = _usage_table(entries, speeds, field)
    result = {"by": by, "viewer": viewer, "table": table, "chart": None, "legend": None}
    if not entries:
        return result
    unit, labels, bucket_of = _buckets(min(e.at for e in entries), max(e.at for e in entries))
    names = _top_groups(table)
    values = {name: [0.0] * len(labels) for name in names}
    for entry in entries:
        group = getattr(entry, field) or "-"
        name = group if group in values else "others"
        values[name][bucket_of(entry.at)] += _gpu_hours(entry, speeds)
    series = [charts.Series(name, values[name]) for name in names]
    result["unit"] = unit
    result["chart"] = charts.stacked_bars(
        f"GPU-hours per {unit} by {by}", labels, series, "GPU-hours"
    )
    result["legend"] = charts.legend(names)
    return result


def _gpu_hours(entry, speeds) -> float:
    """Wall GPU-hours of a charge: effective / its job's speed there (usage_speeds)."""
    return entry.effective_gpu_hours / speeds(entry.job_id, entry.gpu_type)


def _usage_table(entries, speeds, field: str) -> list[dict]:
    rows: dict[str, dict] = {}
    for entry in entries:
        group = getattr(entry, field) or "-"
        row = rows.setdefault(
            group,
            {"group": group, "gpu_hours": 0.0, "cost": 0.0, "subsidy": 0.0, "org_pays": 0.0}
            | {"_jobs": set()},
        )
        row["gpu_hours"] += _gpu_hours(entry, speeds)
        row["cost"] += float(entry.cost)
        row["subsidy"] += float(entry.subsidy)
        row["org_pays"] += float(entry.org_pays)
        row["_jobs"].add(entry.job_id)
    table = []
    for row in rows.values():
        row["jobs"] = len(row.pop("_jobs") - {None})
        table.append(row)
    return sorted(table, key=lambda r: (-r["gpu_hours"], r["group"]))


def _top_groups(table: list[dict]) -> list[str]:
    names = [r["group"] for r in table]
    if len(names) <= MAX_SERIES:
        return names
    return [*names[: MAX_SERIES - 1], "others"]


def _buckets(first: float, last: float):
    """(unit, labels, epoch -> label index): days over two months, weeks over two
    years, months beyond, so a chart has at most about a hundred bars."""
    start = dt.datetime.fromtimestamp(first, dt.UTC).date()
    end = dt.datetime.fromtimestamp(last, dt.UTC).date()
    span = (end - start).days
    if span > 730:
        return _months(start, end)
    unit, days = ("day", 1) if span <= 62 else ("week", 7)
    first_day = start if days == 1 else start - dt.timedelta(days=start.weekday())
    count = (end - first_day).days // days + 1
    labels = [(first_day + dt.timedelta(days=days * i)).isoformat() for i in range(count)]

    def index(t: float) -> int:
        return (dt.datetime.fromtimestamp(t, dt.UTC).date() - first_day).days // days

    return unit, labels, index


def _months(start: dt.date, end: dt.date):
    count = (end.year - start.year) * 12 + end.month - start.month + 1
    labels = []
    for i in range(count):
        year, month = divmod(start.month - 1 + i, 12)
        labels.append(f"{start.year + year}-{month + 1:02d}")

    def index(t: float) -> int:
        day = dt.datetime.fromtimestamp(t, dt.UTC).date()
        return (day.year - start.year) * 12 + day.month - start.month

    return "month", labels, index


# --- programmes and their budget burn-down -----------------------------------


def programmes(session: Session, actor: str, now: float) -> dict:
    """Each programme the API lists to the actor (``accounts.list_programmes``),
    with its budget burn-down in the budget period now (or the last one it paid
    in). A submitter sees, instead of the platform-wide spending, its own subsidy."""
    from gpupool.scheduler import accounts

    views = accounts.list_programmes(session, actor, now)
    viewer = authorize(session, actor, "programme.list")
    books = accounts.load_books(session)
    by_name = {p.name: p for p in books.programmes}
    result = [
        {"view": view, **_burn_down(by_name[view["name"]], books.entries, viewer, now)}
        for view in views
    ]
    return {"programmes": result, "viewer": viewer}


def _burn_down(programme, entries, viewer: Grant, now: float) -> dict:
    paid = sorted(
        (
            e
            for e in entries
            if e.programme == programme.name
            and e.kind in USAGE_KINDS
            and e.subsidy
            and viewer.sees_org(e.org)
        ),
        key=lambda e: e.at,
    )
    spec = programme.period
    focus = now if spec.active(now) else (paid[-1].at if paid else None)
    if focus is None:
        return {"chart": None, "period": None, "spent": 0.0, "points": 0}
    key = spec.key(focus)
    paid = [e for e in paid if spec.key(e.at) == key]
    start, end = spec.bounds(focus)
    start = start if start is not None else (paid[0].at if paid else focus)
    end = end if end is not None else max([now, *(e.at for e in paid)])
    spent, steps = 0.0, []
    for entry in paid:
        spent += float(entry.subsidy)
        steps.append((entry.at, spent))
    budget = programme.budget if viewer.everything else None
    if budget is not None:
        line = charts.Line("budget left", [(start, budget), *((t, budget - s) for t, s in steps)])
        lines = [line]
        if end > start:
            lines.append(charts.Line("even spending", [(start, budget), (end, 0.0)], dashed=True))
        label = f"{programme.name}: budget left"
    else:
        name = "subsidy paid" if viewer.everything else f"subsidy to {viewer.org_name}"
        lines = [charts.Line(name, [(start, 0.0), *steps])]
        label = f"{programme.name}: {name}"
    chart = charts.step_lines(label, lines, "money", start, end, now)
    return {
        "chart": chart,
        "legend": charts.legend([line.name for line in lines]),
        "period": _period_words(spec, key, start, end),
        "spent": round(spent, 2),
        "points": len(steps),
    }


def _period_words(spec, key: str, start: float, end: float) -> str:
    if spec.kind != "fixed":
        return key
    return f"{_day(start)} to {_day(end - 1)}"  # the period ends before ``end``


def _day(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d")


# --- policy history ----------------------------------------------------------


def policy_history(session: Session, actor: str) -> dict:
    """Every version, newest first, each with what changed from the one before."""
    from gpupool.scheduler import policies_store

    authorize(session, actor, "policy.read")
    rows = policies_store.list_versions(session)[-POLICY_VERSIONS - 1 :]
    versions = []
    for previous, row in zip([None, *rows[:-1]], rows, strict=True):
        entry = {**policies_store.version_view(row), "document": row.document}
        entry.update(_changes(session, previous, row))
        versions.append(entry)
    shown = versions[-POLICY_VERSIONS:]
    return {"versions": list(reversed(shown)), "total": len(rows)}


def _changes(session: Session, previous, row) -> dict:
    from gpupool.scheduler import policies_store

    if previous is None:
        return {"since": None, "changes": [], "diff": [], "diff_error": None}
    try:
        result = policies_store.diff_versions(session, previous.version, row.version)
    except GpupoolError as exc:  # a stored document this version cannot read
        return {"since": previous.version, "changes": [], "diff": [], "diff_error": str(exc)}
    return {
        "since": previous.version,
        "changes": list(result.changes),
        "diff": [(_diff_class(line), line) for line in result.unified.splitlines()],
        "diff_error": None,
    }


def _diff_class(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "file"
    if line.startswith("@@"):
        return "hunk"
    return {"+": "added", "-": "removed"}.get(line[:1], "same")
