"""What a site's agent sees and says: its starts, its reports, its heartbeats; lost sites.

An agent (a user with role ``agent``, bound to one site) calls these through the
HTTP API (gpupool.server.routes.agents); it never reads the database. Every call
is idempotent, so an agent restarted mid-flight simply calls again:

- :func:`starts`: the runs placed on the site's pools that have something to run
  (a payload), each with the GPU indices it may use, chosen here the first time
  the run is pulled and kept in ``placements.devices``, its time limit (estimate
  on the pool's GPU type plus the timeout grace, model.TimeoutGrace) and payload;
- :func:`report`: a run is running (its real start is kept) or ended/failed (its
  exit code is kept and the job ends through the service's front door,
  ``service.finish``: the charge and any correction are the ones every end gets).
  A report on a run the server already ended (preempted, cancelled, reaped)
  keeps the exit code and changes nothing else; a repeated report changes nothing;
- :func:`heartbeat`: the agent is alive; of the runs it says are running, the
  ones whose placement the server ended come back as stop orders.

Every call counts as hearing from the site (``sites.last_seen_at``). A site that
has called in once and is then unheard of for ``timeout_s`` is *lost*: rounds set
its pools aside (no new starts; gpupool.scheduler.snapshot), and after a further
``grace_s`` its running jobs are requeued (or failed, per the rule) by
:func:`end_lost_runs`, each charged only up to the last time its site was heard
from. When the agent calls again the site is back, and its heartbeat's stop
orders end what it still runs of the runs ended meanwhile.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpupool import limits, model
from gpupool.model import GpupoolError, JobState, check_transition
from gpupool.scheduler import clock, lifecycle, locking, permissions, repository
from gpupool.scheduler.orm import JobRow, PlacementRow, PoolRow, SiteRow

PHASES = ("running", "ended", "failed")
TIMEOUT_ENV, GRACE_ENV, LOST_RUNS_ENV = (
    "GPUPOOL_SITE_TIMEOUT",
    "GPUPOOL_SITE_GRACE",
    "GPUPOOL_LOST_RUNS",
)
LOST_RUNS = ("requeue", "fail")
DETAIL_LENGTH = 256  # placements.run_detail


@dataclass(frozen=True)
class LostSiteRule:
    """When a site is lost, and what becomes of its runs then."""

    timeout_s: float = 300.0  # unheard of this long: its pools take no new starts
    grace_s: float = 600.0  # and this much longer: its running jobs are requeued or failed
    runs: str = "requeue"  # or "fail"


def lost_site_rule() -> LostSiteRule:
    """The rule from GPUPOOL_SITE_TIMEOUT / GPUPOOL_SITE_GRACE (seconds) and
    GPUPOOL_LOST_RUNS (requeue or fail); the defaults where unset."""
    default = LostSiteRule()
    timeout, grace = default.timeout_s, default.grace_s
    if os.environ.get(TIMEOUT_ENV):
        timeout = limits.read(os.environ[TIMEOUT_ENV], limits.HEARTBEAT_SECONDS, TIMEOUT_ENV)
    if os.environ.get(GRACE_ENV):
        grace = limits.read(os.environ[GRACE_ENV], limits.HEARTBEAT_SECONDS, GRACE_ENV)
    runs = os.environ.get(LOST_RUNS_ENV) or default.runs
    if runs not in LOST_RUNS:
        raise GpupoolError(f"must be requeue or fail, got {runs!r}", location=LOST_RUNS_ENV)
    return LostSiteRule(float(timeout), float(grace), runs)


# ---------------------------------------------------------------------------
# The agent's calls
# ---------------------------------------------------------------------------


def _agent_site(session: Session, actor: str, now: dt.datetime) -> str:
    """The actor's site (refusing anyone but an agent), heard from ``now``."""
    grant = permissions.authorize(session, actor, "agent.run")
    _heard_from(session, grant.site, actor, now)
    return grant.site


def _heard_from(session: Session, site: str, actor: str, now: dt.datetime) -> None:
    row = session.scalars(select(SiteRow).where(SiteRow.name == site)).first()
    if row is None:
        row = _first_call(session, site, actor, now)
        if row is None:
            return
    row.last_seen_at, row.agent = max(row.last_seen_at, now), actor
    session.flush()


def _first_call(session: Session, site: str, actor: str, now: dt.datetime) -> SiteRow | None:
    """The site's row, made by this call (None) or, when two agents of a new site call in
    at once, by the other one (PostgreSQL: the unique name makes this insert wait for
    the other transaction, then fail; the savepoint keeps this one going)."""
    from sqlalchemy.exc import IntegrityError

    try:
        with session.begin_nested():
            session.add(SiteRow(name=site, last_seen_at=now, agent=actor))
        return None
    except IntegrityError:
        return session.scalars(select(SiteRow).where(SiteRow.name == site)).one()


def starts(session: Session, actor: str, now: dt.datetime | None = None) -> dict:
    """``{site, starts}``: every open run on the site's pools that has a payload."""
    now = now or clock.utcnow()
    site = _agent_site(session, actor, now)
    grace = lifecycle.parse_grace(None)
    runs = _open_runs(session, site)
    if any(placement.devices is None for placement, _job in runs):
        locking.lock_writes(session)  # GPU indices are chosen under the write lock,
        runs = _open_runs(session, site)  # on what is open once it is held
        _choose_devices(session, runs)
    return {"site": site, "starts": [_start_view(p, job, grace) for p, job in runs if job.payload]}


def _open_runs(session: Session, site: str) -> list[tuple[PlacementRow, JobRow]]:
    query = (
        select(PlacementRow, JobRow)
        .join(JobRow, JobRow.id == PlacementRow.job_id)
        .join(PoolRow, PoolRow.id == PlacementRow.pool_id)
        .where(PlacementRow.ended_at.is_(None), PoolRow.site == site)
        .order_by(PlacementRow.id)
        .execution_options(populate_existing=True)
    )
    return [(p, job) for p, job in session.execute(query).all()]


def _choose_devices(session: Session, runs: list[tuple[PlacementRow, JobRow]]) -> None:
    """Give each run without GPU indices the lowest indices no other open run holds
    on its nodes. Runs are only ever given indices here, under the write lock, so two
    open runs never share one."""
    taken: dict[tuple[int, int], set[int]] = {}
    for placement, _job in runs:
        for node, indices in placement.devices or []:
            taken.setdefault((placement.pool_id, int(node)), set()).update(indices)
    for placement, _job in runs:
        if placement.devices is not None:
            continue
        devices = []
        for node, gpus in placement.nodes:
            used = taken.setdefault((placement.pool_id, int(node)), set())
            free = [i for i in range(placement.pool.gpus_per_node) if i not in used]
            chosen = free[: int(gpus)]
            used.update(chosen)
            devices.append([int(node), chosen])
        placement.devices = devices
    session.flush()


def _start_view(placement: PlacementRow, job: JobRow, grace: lifecycle.Grace) -> dict:
    pool = placement.pool
    gpu_type = repository.gpu_type_model(pool.gpu_type)
    speed = repository.job_model(job).speed_on(gpu_type)
    limit = model.TimeoutGrace(grace.fraction, grace.minutes).run_limit_seconds(job.hours, speed)
    return {
        "job_id": job.id,
        "run_id": placement.id,
        "pool": pool.name,
        "gpu_type": gpu_type.name,
        "vendor": gpu_type.vendor,
        "nodes": placement.devices,
        "time_limit_s": limit,
        "started_at": clock.to_epoch(placement.started_at),
        "run_started_at": _epoch(placement.run_started_at),
        "payload": job.payload,
    }


def _epoch(moment: dt.datetime | None) -> float | None:
    return None if moment is None else clock.to_epoch(moment)


@dataclass(frozen=True)
class RunReport:
    """What an agent says of one run (gpupool.agents.executor.RunState, on the wire)."""

    job_id: int
    run_id: int
    phase: str
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    detail: str = ""


def report(
    session: Session, actor: str, reports: Sequence[RunReport], now: dt.datetime | None = None
) -> dict:
    """Record each report; ``{results: [{job_id, run_id, outcome}]}`` where outcome is
    ``recorded`` (something changed), ``unchanged`` (said before, or nothing to say),
    ``stop`` (a running report on a run the server ended: stop it) or ``unknown`` (a
    run this server never placed: left alone)."""
    lifecycle.lock_for_ending(session)  # the order every end takes: write lock, then rows
    now = now or clock.utcnow()
    site = _agent_site(session, actor, now)
    runs = [(item, _own_run(session, actor, site, item.job_id, item.run_id)) for item in reports]
    results = []
    for item, placement in runs:
        outcome = "unknown" if placement is None else _apply(session, actor, item, placement, now)
        results.append({"job_id": item.job_id, "run_id": item.run_id, "outcome": outcome})
    return {"site": site, "results": results}


def _own_run(session: Session, actor: str, site: str, job_id: int, run_id: int):
    """The run, if it is this site's; another site's is refused (403). None for a run
    this server never placed: a workload manager shared with another platform (or a
    test) may hold runs named like ours, and they are none of this agent's business."""
    placement = session.get(PlacementRow, run_id)
    if placement is None or placement.job_id != job_id:
        return None
    if placement.pool.site != site:
        words = f"report on job {job_id}"
        raise permissions.Denied(
            f"{actor} may not {words}: it runs at a site other than {site}",
            actor,
            words,
            f"job {job_id}",
        )
    return placement


def _apply(session, actor: str, item: RunReport, placement: PlacementRow, now) -> str:
    if item.phase == "running":
        if placement.ended_at is not None:
            return "stop"
        if placement.run_started_at is not None:
            return "unchanged"
        placement.run_started_at = _clamped(item.started_at, placement.started_at, now)
        session.flush()
        return "recorded"
    if placement.exit_code is not None or placement.run_detail is not None:
        return "unchanged"  # its end was reported before
    placement.exit_code = item.exit_code
    placement.run_detail = (item.detail or item.phase)[:DETAIL_LENGTH]
    late_start = placement.run_started_at is None and item.started_at is not None
    if late_start:
        placement.run_started_at = _clamped(item.started_at, placement.started_at, now)
    session.flush()
    if placement.ended_at is None:  # the server's open run: the job ends here
        from gpupool.scheduler import service

        at = _clamped(item.ended_at, placement.started_at, now)
        failed = item.phase == "failed"
        service.finish(
            session, actor, item.job_id, failed=failed, at=at.isoformat(), now=now, by_hand=False
        )
    elif late_start:
        _charge_late_start(session, placement)
    return "recorded"


def _charge_late_start(session: Session, placement: PlacementRow) -> None:
    """The server ended this run (cancelled, preempted) before its agent reported it
    started, so its end charged nothing (accounts.charge_start); its end report now
    says when it really started: charge that start up to the server's end. Only while
    it is the job's latest run: once the job ran again, its ledger has moved past."""
    from gpupool.scheduler import accounts

    job = repository.get_job(session, placement.job_id, lock=True)
    if repository.placements_of(session, job.id)[-1].id == placement.id:
        accounts.charge_ended_run(session, job, placement.ended_at)


def _clamped(epoch: float | None, earliest: dt.datetime, now: dt.datetime) -> dt.datetime:
    """An agent's instant within [the run's start, now]: clocks differ a little between
    machines, and a run is never charged before its placement or after the report."""
    moment = now if epoch is None else clock.from_epoch(epoch)
    return min(max(moment, earliest), now)


def heartbeat(
    session: Session,
    actor: str,
    running: Iterable[tuple[int, int]],
    now: dt.datetime | None = None,
) -> dict:
    """``{site, stop: [{job_id, run_id, reason}]}``: of the runs the agent says are
    running, those whose placement at this site the server ended. A run the server
    does not know at this site is left alone (another platform's, on a shared Slurm)."""
    now = now or clock.utcnow()
    site = _agent_site(session, actor, now)
    stop = []
    for job_id, run_id in running:
        reason = _stop_reason(session, site, job_id, run_id)
        if reason is not None:
            stop.append({"job_id": job_id, "run_id": run_id, "reason": reason})
    return {"site": site, "stop": stop}


def _stop_reason(session: Session, site: str, job_id: int, run_id: int) -> str | None:
    placement = session.get(PlacementRow, run_id)
    if placement is None or placement.job_id != job_id or placement.pool.site != site:
        return None
    if placement.ended_at is None:
        return None
    job = session.get(JobRow, job_id)
    return placement.end_reason or job.end_reason or job.wait_reason or f"the job is {job.state}"


# ---------------------------------------------------------------------------
# Lost sites
# ---------------------------------------------------------------------------


def lost_sites(session: Session, now: dt.datetime, rule: LostSiteRule) -> dict[str, dt.datetime]:
    """Site -> when it was last heard from, for every site unheard of for ``timeout_s``."""
    since = now - dt.timedelta(seconds=rule.timeout_s)
    rows = session.execute(
        select(SiteRow.name, SiteRow.last_seen_at).where(SiteRow.last_seen_at < since)
    )
    return dict(rows.all())


def lost_reason(last_seen: dt.datetime) -> str:
    return f"its site's agent is unreachable (last heard from {clock.iso(last_seen)})"


def end_lost_runs(
    session: Session, now: dt.datetime, rule: LostSiteRule, books=None
) -> dict[int, str]:
    """Requeue (or fail) every running job at a site lost for longer than the grace,
    ending its run when its site was last heard from; job id -> what was done."""
    cutoff = now - dt.timedelta(seconds=rule.timeout_s + rule.grace_s)
    lost = {site: seen for site, seen in lost_sites(session, now, rule).items() if seen < cutoff}
    ended: dict[int, str] = {}
    for site, last_seen in sorted(lost.items()):
        for placement, _job in _open_runs(session, site):
            job = repository.get_job(session, placement.job_id, lock=True)
            if job.state != JobState.RUNNING.value:
                continue
            at = max(placement.started_at, min(last_seen, now))
            ended[job.id] = _end_lost(session, job, placement, at, rule, books)
    return ended


def _end_lost(session, job: JobRow, placement: PlacementRow, at, rule: LostSiteRule, books):
    reason = f"lost with its site {placement.pool.site} (last heard from {clock.iso(at)})"
    placement.end_reason = reason  # as a preemption's: `job show` says why the run stopped
    if rule.runs == "fail":
        lifecycle.end_job(session, job, JobState.FAILED, at, reason, books)
        return "failed"
    placement.ended_at = at
    session.flush()
    lifecycle.charge_ended_run(session, job, at, books)  # up to what the site confirmed
    check_transition(job.state, JobState.PREEMPTED)
    job.state = check_transition(JobState.PREEMPTED, JobState.PENDING).value
    job.pool_id = None
    job.started_at = None
    job.wait_reason = f"requeued: {reason}"[:128]
    return "requeued"


def site_views(session: Session, actor: str, now: dt.datetime | None = None) -> list[dict]:
    """`site list`: each site with an agent, when it was last heard from, and whether it
    is reachable (admins and auditors)."""
    permissions.authorize(session, actor, "site.list")
    now = now or clock.utcnow()
    rule = lost_site_rule()
    lost = lost_sites(session, now, rule)
    rows = session.scalars(select(SiteRow).order_by(SiteRow.name)).all()
    return [
        {
            "name": row.name,
            "agent": row.agent,
            "last_seen_at": clock.iso(row.last_seen_at),
            "reachable": row.name not in lost,
        }
        for row in rows
    ]
