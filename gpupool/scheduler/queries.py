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
    """`job show --json`: the job's view, where it ran (each run's start reason and, for a
    run that was preempted, its ``end_reason``), and its price explained."""
    from gpupool.scheduler import clock, repository
    from gpupool.scheduler.accounts import job_accounting
    from gpupool.scheduler.permissions import job_for
    from gpupool.scheduler.service import job_view

    row = job_for(session, actor, job_id)
    view = job_view(row)
    view["payload"] = row.payload
    view["placements"] = [
        {
            "pool": p.pool.name,
            "nodes": p.nodes,
            "started_at": clock.iso(p.started_at),
            "ended_at": clock.iso(p.ended_at),
            "reason": p.reason,
            "end_reason": p.end_reason,
            "run_started_at": clock.iso(p.run_started_at),  # as the site's agent saw it
            "exit_code": p.exit_code,
            "run_detail": p.run_detail,
        }
        for p in repository.placements_of(session, row.id)
    ]
    view["accounting"] = job_accounting(session, row)
    return view


def job_page(
    session: Session,
    actor: str,
    states: list[str] | None = None,
    org: str | None = None,
    limit: int | None = None,
    after: int | None = None,
    before: int | None = None,
) -> dict:
    """`job list --json`: one page of the jobs the actor may see, in id order (ids
    are unique and only grow, so a page boundary never moves). ``after`` pages
    forward (jobs with larger ids), ``before`` backward; ``next_after`` and
    ``previous_before`` are the cursors of the neighbouring pages (None: none).

    The page is cut in SQL, the actor's scope included (a submitter's org, an
    agent's site), so a page costs ``limit`` rows however many jobs there are.
    """
    from gpupool import limits
    from gpupool.scheduler.service import job_view

    limit = limits.JOB_PAGE_DEFAULT if limit is None else limit
    limits.JOB_PAGE.check(limit, "--limit")
    if after is not None and before is not None:
        raise GpupoolError("give --after or --before, not both", location="--before")
    visible = _visible_jobs_query(session, actor, states, org)
    rows, more = _cut(session, visible, limit, after, before)
    has_next = more if before is None else _any(session, visible, rows, later=True)
    has_previous = more if before is not None else _any(session, visible, rows, later=False)
    return {
        "jobs": [job_view(r) for r in rows],
        "limit": limit,
        "next_after": rows[-1].id if rows and has_next else None,
        "previous_before": rows[0].id if rows and has_previous else None,
    }


def job_count(session: Session, actor: str, states: list[str] | None = None) -> int:
    """How many jobs in ``states`` the actor may see (counted in SQL)."""
    from sqlalchemy import func, select

    visible = _visible_jobs_query(session, actor, states, None).subquery()
    return int(session.scalar(select(func.count()).select_from(visible)) or 0)


def latest_ended(session: Session, actor: str, states: list[str], count: int) -> list[dict]:
    """The ``count`` jobs in ``states`` the actor may see that ended last, newest first."""
    from gpupool.scheduler.orm import JobRow
    from gpupool.scheduler.service import job_view

    query = _visible_jobs_query(session, actor, states, None)
    query = query.order_by(JobRow.ended_at.desc(), JobRow.id.desc()).limit(count)
    return [job_view(r) for r in session.scalars(query).unique()]


def _visible_jobs_query(session: Session, actor: str, states, org: str | None):
    """SELECT of the jobs ``actor`` may list (permissions' job.list), filtered."""
    from sqlalchemy import false, select

    from gpupool.scheduler import repository
    from gpupool.scheduler.orm import JobRow, PoolRow
    from gpupool.scheduler.permissions import ALL, OWN_ORG, OWN_SITE, authorize, require_org

    grant = authorize(session, actor, "job.list")
    require_org(grant, org, "list jobs", location="--org")
    query = select(JobRow)
    if states:
        query = query.where(JobRow.state.in_(list(states)))
    if grant.scope == OWN_ORG:
        query = query.where(JobRow.org_id == grant.org_id)
    elif org is not None:
        query = query.where(JobRow.org_id == repository.get_org(session, org.strip()).id)
    if grant.scope == OWN_SITE:
        at_site = select(PoolRow.id).where(PoolRow.site == grant.site)
        query = query.where(JobRow.pool_id.in_(at_site))
    elif grant.scope != ALL and grant.scope != OWN_ORG:
        query = query.where(false())  # a scope this listing does not know: nothing
    return query


def _cut(session: Session, query, limit: int, after: int | None, before: int | None):
    """(up to ``limit`` rows past the cursor in id order, whether more lie beyond)."""
    from gpupool.scheduler.orm import JobRow

    if before is not None:
        query = query.where(JobRow.id < before).order_by(JobRow.id.desc())
    else:
        query = query.where(JobRow.id > (after or 0)).order_by(JobRow.id)
    rows = list(session.scalars(query.limit(limit + 1)).unique())
    more = len(rows) > limit
    rows = rows[:limit]
    return (rows[::-1] if before is not None else rows), more


def _any(session: Session, query, rows, later: bool) -> bool:
    """Whether a visible job lies after (``later``) or before the page."""
    from sqlalchemy import select

    from gpupool.scheduler.orm import JobRow

    if not rows:
        return False
    edge = JobRow.id > rows[-1].id if later else JobRow.id < rows[0].id
    return bool(session.scalar(select(query.where(edge).exists())))


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
        "lost": {str(k): v for k, v in sorted(result.lost.items())},
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
    speeds = repository.usage_speeds(session)
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
        row["gpu_hours"] += entry.effective_gpu_hours / speeds(entry.job_id, entry.gpu_type)
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


CHART_FORMATS = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}
# no creation dates in the file: the same ledger draws the same bytes
_NO_DATES = {"png": {}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}


def burn_down_chart(session: Session, actor: str, programme: str | None, fmt: str) -> bytes:
    """`report subsidies --png FILE`: each programme's budget burn-down as a chart in
    ``fmt`` (png, svg or pdf). It sums every organisation's subsidy, so it is for
    admins and auditors only (a submitter is refused, audited)."""
    from gpupool import limits
    from gpupool.scheduler import accounts
    from gpupool.scheduler.permissions import Denied, authorize

    if fmt not in CHART_FORMATS:
        known = ", ".join(CHART_FORMATS)
        raise GpupoolError(f"must be one of {known}, got {fmt!r}", location="--png")
    grant = authorize(session, actor, "report.read")
    if not grant.everything:
        raise Denied(
            f"{grant.actor} may not chart budget burn-down: it shows every organisation's "
            "subsidy (admins and auditors only)",
            grant.actor,
            "chart budget burn-down",
            "report subsidies",
        )
    books = accounts.load_books(session)
    if programme is not None and programme not in {p.name for p in books.programmes}:
        raise NotFound(f"no programme named {programme!r}", location="--programme")
    image = _draw_burn_down(books, programme, fmt)
    limits.DOWNLOAD_BYTES.check(len(image), "--png")
    return image


def _draw_burn_down(books, only: str | None, fmt: str) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gpupool.safe_text import plot_text

    figure, axes = plt.subplots(figsize=(8, 4.5))
    for prog in books.programmes:
        if only is not None and prog.name != only:
            continue
        entries = sorted(
            (e for e in books.entries if e.programme == prog.name and e.subsidy), key=lambda e: e.at
        )
        if not entries:
            continue
        spent, times, left = 0.0, [], []
        for entry in entries:
            spent += float(entry.subsidy)
            times.append(entry.at / 86400.0)
            left.append((prog.budget - spent) if prog.budget is not None else spent)
        axes.step(times, left, where="post", label=plot_text(prog.name))
    axes.set_xlabel("days since 1970-01-01 (UTC)")
    axes.set_ylabel("budget left (or subsidy paid if unlimited)")
    axes.set_title("subsidy budget burn-down")
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, metadata=_NO_DATES[fmt])
    plt.close(figure)
    return buffer.getvalue()


def _voucher_hours(note: str) -> float:
    head = note.split(" voucher hours")[0] if "voucher hours" in note else ""
    try:
        return float(head)
    except ValueError:
        return 0.0


# --- policy what-if ----------------------------------------------------------


def whatif(
    session: Session,
    document,
    label: str,
    since: str,
    until: str | None,
    now: dt.datetime,
    files: bool = False,
) -> dict:
    """`policy whatif --json`: the recorded jobs replayed under ``document`` and
    under the active policy, compared per domain, with the window replayed
    (``since``, ``until``) and the number of pools. Writes nothing.

    ``files``: also ``files``, what `policy whatif --out DIR` writes there
    (:func:`whatif_files`), for the CLI to write wherever it runs."""
    comparison, results = whatif_results(session, document, label, since, until, now)
    if files:
        return {**comparison, "files": whatif_files(comparison, results)}
    return comparison


WHATIF_FILES = ("whatif.json", "jobs-current.csv", "jobs-proposed.csv")


def whatif_files(comparison: dict, results: dict) -> dict[str, str]:
    """{file name: exact text} of `policy whatif --out`: the comparison as JSON and
    each side's per-job CSV, at most limits.DOWNLOAD_BYTES in all."""
    import tempfile
    from pathlib import Path

    from gpupool import limits
    from gpupool.simulations.metrics import write_jobs_csv, write_metrics_json

    with tempfile.TemporaryDirectory(prefix="gpupool-whatif-") as folder:
        write_metrics_json(comparison, Path(folder) / WHATIF_FILES[0])
        for side, result in results.items():
            write_jobs_csv(result, Path(folder) / f"jobs-{side}.csv")
        # bytes, decoded as they are: the CSVs' \r\n line ends stay
        files = {p.name: p.read_bytes().decode("utf-8") for p in sorted(Path(folder).iterdir())}
    size = sum(len(text.encode("utf-8")) for text in files.values())
    if not limits.DOWNLOAD_BYTES.holds(size):
        raise GpupoolError(
            f"the per-job files of this window would be {size / 2**20:.1f} MiB, over the "
            f"{limits.DOWNLOAD_BYTES.high / 2**20:.0f} MiB one response holds; narrow "
            "--since/--until",
            location="--out",
        )
    return files


def whatif_results(
    session: Session, document, label: str, since: str, until: str | None, now: dt.datetime
) -> tuple[dict, dict]:
    """:func:`whatif`'s comparison and the two SimulationResults (for per-job files)."""
    from gpupool.scheduler import clock
    from gpupool.scheduler.policies_store import check_platform_names
    from gpupool.scheduler.rounds import active_policy
    from gpupool.simulations import from_db

    check_platform_names(session, document)  # before any replay
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
