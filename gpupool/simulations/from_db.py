"""What-if replays of the platform's own recorded history (`gpupool policy whatif`).

The database holds what really happened: which jobs were submitted when, how
long the finished ones really ran. ``scenario_from_db`` turns a window of that
history into a Scenario on the platform's *current* pools, and ``whatif``
replays it with the simulator (gpupool.simulations.engine, the same policy
code the live rounds run) under a proposed policy and under the active one,
then compares them per domain.

Decisions:
- The window is [since, now): jobs submitted in it, in any state. Arrival
  times are seconds from ``since``; the replay stops at ``now``, so "finished"
  means finished by now, and jobs a policy left queued show up as waiting.
- A job's real work is the sum over its closed placements of wall hours x the
  speed of the pool's GPU type (reference hours, what the simulator expects),
  so a preempted and restarted job counts every segment it ran. Jobs that have
  not ended (pending, running) use their estimate. A job cancelled before it
  ever started is left out (it asked for nothing that was served); it is
  counted in the scenario's ``dropped``.
- Both replays start from an empty platform at ``since``: jobs submitted
  before the window are not in it, even if they were still running then.
- The replay lives on the calendar: it starts at ``since`` (the scenario's
  ``start``), with the platform's programmes as declared now and its
  vouchers: one awarded in the window with its whole amount, one awarded
  before with its balance now (what it held at ``since`` is not kept), none
  that expired before ``since``, and no voucher a carry-over made in the
  window (the replay carries over itself). Budgets and caps start unspent:
  money spent before ``since`` in the current period is not counted.
- Nothing is written: the caller reads in one transaction, then simulates
  with the database closed.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpupool import limits
from gpupool.model import GpupoolError, JobState
from gpupool.scheduler import clock, repository
from gpupool.scheduler.orm import JobRow, PlacementRow
from gpupool.simulations.workload import Scenario, SimJob

HOUR = 3600.0
MIN_ACTUAL_HOURS = 1.0 / HOUR  # a job that ended at once still occupies one second
CANCELLED_UNSTARTED = "cancelled before starting"
_ENDED = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT})
_SPAN = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([mhdw])\s*$", re.ASCII)
_UNIT_HOURS = {"m": 1 / 60, "h": 1.0, "d": 24.0, "w": 168.0}


def parse_until(value: str | None, now: dt.datetime, location: str = "--until") -> dt.datetime:
    """The window's end: ``now`` when not given, else an ISO date/time (UTC if no zone)."""
    if value is None:
        return now
    moment = _iso(value, location, "an ISO date/time")
    if moment > now:
        raise GpupoolError(f"{value!r} is in the future", location=location)
    return moment


def _iso(value: str, location: str, expected: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(value.strip())
    except (ValueError, AttributeError):
        raise GpupoolError(f"expected {expected}, got {value!r}", location=location) from None
    return limits.check_moment(moment, location, value)


def parse_since(value: str, now: dt.datetime, location: str = "--since") -> dt.datetime:
    """``30d``, ``12h``, ``2w``, ``90m`` back from ``now``, or an ISO date/time (UTC if no zone)."""
    match = _SPAN.match(value or "")
    if match:
        hours = float(match.group(1)) * _UNIT_HOURS[match.group(2)]
        if hours <= 0:
            raise GpupoolError(f"must be a positive span, got {value!r}", location=location)
        if hours > (now - limits.EARLIEST).total_seconds() / HOUR:  # before timedelta overflows
            raise GpupoolError(
                f"reaches back before 1970-01-01, the earliest supported date, got {value!r}",
                location=location,
            )
        return now - dt.timedelta(hours=hours)
    moment = _iso(value, location, "a span like 30d, 12h, 2w, 90m or an ISO date")
    if moment >= now:
        raise GpupoolError(f"{value!r} is not in the past", location=location)
    return moment


def scenario_from_db(session: Session, since: dt.datetime, now: dt.datetime) -> Scenario:
    """The jobs submitted in [since, now) on today's platform, as a Scenario."""
    gpu_types = {r.name: repository.gpu_type_model(r) for r in repository.list_gpu_types(session)}
    pools = tuple(repository.pool_model(r) for r in repository.list_pools(session))
    rows = session.scalars(
        select(JobRow)
        .where(JobRow.submitted_at >= since, JobRow.submitted_at < now)
        .order_by(JobRow.submitted_at, JobRow.id)
    ).all()
    classes = {c.name: c.speeds or {} for c in repository.list_job_classes(session)}
    class_speeds = {row.id: classes.get(row.job_class or "", {}) for row in rows}
    worked = _reference_hours_run(session, class_speeds)
    origin = clock.to_epoch(since)
    programmes, vouchers = _accounting(session, since)
    jobs, dropped = [], {}
    for row in rows:
        actual = _actual_hours(row, worked.get(row.id))
        if actual is None:
            dropped[CANCELLED_UNSTARTED] = dropped.get(CANCELLED_UNSTARTED, 0) + 1
            continue
        job = repository.job_model(row)
        arrival = clock.to_epoch(row.submitted_at)  # a calendar instant, like the start
        jobs.append(SimJob(job=replace(job, submitted_at=arrival), actual_hours=actual))
    return Scenario(
        name=f"recorded jobs {clock.iso(since)} .. {clock.iso(now)}",
        gpu_types=gpu_types,
        pools=pools,
        domains={r.name: repository.domain_model(r) for r in repository.list_domains(session)},
        orgs={r.name: repository.org_model(r) for r in repository.list_orgs(session)},
        jobs=tuple(jobs),
        dropped=dropped,
        programmes=tuple(programmes),
        vouchers=tuple(vouchers),
        start=origin,
    )


def _accounting(session: Session, since: dt.datetime) -> tuple[list, list]:
    """The platform's programmes, and its vouchers as the replay starts with them."""
    from gpupool.scheduler.accounts import carried_over_since, declared

    programmes, vouchers = declared(session)
    heirs = carried_over_since(session, since)
    origin = clock.to_epoch(since)
    kept = []
    for voucher in vouchers:
        if voucher.id in heirs or (voucher.expires_at is not None and voucher.expires_at <= origin):
            continue
        if voucher.awarded_at >= origin:
            voucher = replace(voucher, balance=voucher.amount)
        kept.append(voucher)
    return programmes, kept


def _reference_hours_run(session: Session, class_speeds: dict[int, dict]) -> dict[int, float]:
    """Per job, reference hours of work over its closed placements (wall x speed: its
    class's speed on the type, ``class_speeds`` per job id, else the type's own)."""
    job_ids = list(class_speeds)
    worked: dict[int, float] = {}
    for chunk_start in range(0, len(job_ids), 500):  # keep IN lists small for PostgreSQL
        chunk = job_ids[chunk_start : chunk_start + 500]
        query = select(PlacementRow).where(
            PlacementRow.job_id.in_(chunk), PlacementRow.ended_at.is_not(None)
        )
        for placement in session.scalars(query):
            wall = (placement.ended_at - placement.started_at).total_seconds() / HOUR
            gpu_type = placement.pool.gpu_type
            speed = class_speeds[placement.job_id].get(gpu_type.name, gpu_type.speed)
            worked[placement.job_id] = worked.get(placement.job_id, 0.0) + wall * speed
    return worked


def _actual_hours(row: JobRow, worked: float | None) -> float | None:
    """Real reference hours for an ended job, the estimate otherwise; None = leave out."""
    if JobState(row.state) not in _ENDED:
        return row.hours
    if worked is None:
        if row.state == JobState.CANCELLED:
            return None
        return row.hours  # ended without a recorded placement (older rows): trust the estimate
    return max(worked, MIN_ACTUAL_HOURS)


# ---------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------

METRICS = (
    "jobs",
    "finished",
    "waiting",
    "mean_wait_hours",
    "p95_wait_hours",
    "gpu_hours",
    "subsidy",
)


@dataclass(frozen=True)
class Contender:
    """One side of the comparison: a built policy, its subsidy rules, a label."""

    label: str
    policy: object
    pricing: object | None


def whatif(
    scenario: Scenario, hours: float, current: Contender, proposed: Contender
) -> tuple[dict, dict]:
    """Replay ``scenario`` for ``hours`` under both policies.

    Returns the JSON-ready comparison (per domain and "all": each side's
    figures and proposed - current) and the two SimulationResults by side.
    """
    from gpupool.simulations.engine import EngineOptions, simulate
    from gpupool.simulations.metrics import group_metrics

    options = EngineOptions(until_hours=hours)
    results = {}
    for side, contender in (("current", current), ("proposed", proposed)):
        result = simulate(
            scenario,
            contender.policy,
            pricing=contender.pricing,
            options=options,
            policy_name=contender.label,
        )
        results[side] = result
    domains = sorted(scenario.domains)
    comparison = {}
    for name in [*domains, "all"]:
        sides = {}
        for side, result in results.items():
            records = [r for r in result.records if name == "all" or r.job.domain == name]
            sides[side] = _figures(group_metrics(records))
        sides["delta"] = {
            key: _delta(sides["current"][key], sides["proposed"][key]) for key in METRICS
        }
        comparison[name] = sides
    return {
        "scenario": scenario.name,
        "hours": hours,
        "jobs": len(scenario.jobs),
        "dropped": dict(scenario.dropped),
        "current": current.label,
        "proposed": proposed.label,
        "domains": comparison,
    }, results


def _figures(metrics: dict) -> dict:
    delay = metrics["queueing_delay_hours"]
    return {
        "jobs": metrics["jobs"],
        "finished": metrics["finished"],
        "waiting": metrics["waiting"],
        "mean_wait_hours": delay["mean"],
        "p95_wait_hours": delay["p95"],
        "gpu_hours": metrics["gpu_hours"],
        "subsidy": metrics["subsidy"],
    }


def _delta(before: float | None, after: float | None) -> float | None:
    if before is None or after is None:
        return None
    return after - before
