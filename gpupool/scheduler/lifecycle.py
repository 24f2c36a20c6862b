"""How running jobs end: reported by their site, or reaped when overdue.

A running job ends in exactly one of these ways, each a check_transition:

- ``finish_job``: the site reports it completed (or failed, ``failed=True``) at
  an instant no earlier than its start and not in the future;
- ``reap_timeouts``: it ran past its runtime estimate on its pool's GPU type by
  more than the grace (default ``10%+5m``: 10% of the estimate plus five
  minutes) and is marked timed_out. It is ended *at its deadline*, not at the
  moment the round noticed, so a scheduler that was down for an hour never
  bills that hour;
- cancel (gpupool.scheduler.service) and preemption (gpupool.scheduler.rounds).

In every case the open placement is closed at the end instant (freeing the
GPUs) and ``charge_ended_run`` is called: the single place where the scheduler
asks the accounting integration to charge what the job actually used.

Dependencies point one way: gpupool.scheduler.accounts <- lifecycle <- service.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass

from sqlalchemy.orm import Session

from gpupool import limits
from gpupool.model import GpupoolError, JobState, TimeoutGrace, check_transition
from gpupool.scheduler import clock, locking, permissions, repository
from gpupool.scheduler.orm import JobRow

GRACE_ENV = "GPUPOOL_TIMEOUT_GRACE"
DEFAULT_GRACE = "10%+5m"
_GRACE_PART = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(%|m|min|h)$", re.ASCII)


@dataclass(frozen=True)
class Grace:
    """How far past its estimate a job may run: ``fraction`` of it plus ``minutes``."""

    fraction: float = 0.10
    minutes: float = 5.0

    def deadline(self, started_at: dt.datetime, hours: float, speed: float) -> dt.datetime:
        # the rule itself is model.TimeoutGrace, shared with the simulator
        limit = TimeoutGrace(self.fraction, self.minutes).run_limit_seconds(hours, speed)
        return started_at + dt.timedelta(seconds=limit)

    def __str__(self) -> str:
        return f"{self.fraction * 100:g}%+{self.minutes:g}m"


def parse_grace(text: str | None, location: str = "--grace") -> Grace:
    """``10%+5m``, ``20%``, ``15m``, ``1h``, ``0``; None: the env var or the default."""
    if text is None:
        text = os.environ.get(GRACE_ENV) or DEFAULT_GRACE
        location = GRACE_ENV if os.environ.get(GRACE_ENV) else location
    fraction, minutes = 0.0, 0.0
    parts = [p.strip() for p in str(text).replace(" ", "").split("+")]
    for part in parts:
        if part == "0":
            continue
        match = _GRACE_PART.match(part)
        if match is None:
            raise GpupoolError(
                f"must look like 10%+5m (a percentage of the estimate, plus minutes m or "
                f"hours h), got {text!r}",
                location=location,
            )
        number, unit = float(match.group(1)), match.group(2)
        if unit == "%":
            fraction += number / 100
        else:
            minutes += number * (60 if unit == "h" else 1)
    limits.GRACE_PERCENT.check(fraction * 100, location, text)
    limits.GRACE_MINUTES.check(minutes, location, text)
    return Grace(fraction, minutes)


def parse_time(text: str, location: str = "--at") -> dt.datetime:
    """An ISO 8601 instant; one without a zone is taken as UTC."""
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise GpupoolError(
            f"must be an ISO 8601 time like 2026-11-02T10:00:00Z, got {text!r}", location=location
        ) from None
    moment = limits.check_moment(moment, location, text)
    return moment.astimezone(dt.UTC)


def finish_job(
    session: Session,
    actor: str,
    job_id: int,
    failed: bool = False,
    at: dt.datetime | None = None,
    now: dt.datetime | None = None,
    by_hand: bool = True,
) -> JobRow:
    """A site reports a running job completed (or failed) at ``at`` (default: now).

    ``by_hand`` (`job finish`): the report says the run happened, so a job with a
    payload whose agent never reported a start is charged from its placement, as a job
    without one is (accounts.charge_start). An agent's own end report passes False: it
    says when the run started, if it ever did.
    """
    grant = permissions.authorize_job(session, actor, job_id, "finish")  # admins, the site's agent
    lock_for_ending(session)
    job = repository.get_job(session, job_id, lock=True)
    permissions.require_job(grant, job, "finish")
    if by_hand:
        _started_with_placement(session, job)
    # Read the clock only once the job is locked: a round that started it while we
    # waited stamped its start later than a clock read before the wait.
    now = now or clock.utcnow()
    at = at or now
    new_state = check_transition(job.state, JobState.FAILED if failed else JobState.COMPLETED)
    if at > now:
        raise GpupoolError(f"{clock.iso(at)} is in the future", location="--at")
    if job.started_at is not None and at < job.started_at:
        raise GpupoolError(
            f"{clock.iso(at)} is before the job started ({clock.iso(job.started_at)})",
            location="--at",
        )
    before = {"state": job.state}
    end_job(session, job, new_state, at, f"reported {new_state.value} by {actor}")
    permissions.audit(
        session, actor, "job.finish", f"job {job.id}", before=before, after={"state": job.state}
    )
    return job


def _started_with_placement(session: Session, job: JobRow) -> None:
    placement = repository.open_placement_of(session, job.id)
    if job.payload is not None and placement is not None and placement.run_started_at is None:
        placement.run_started_at = placement.started_at


def reap_timeouts(
    session: Session, now: dt.datetime, grace: Grace | None = None, books=None, skip=()
) -> list[int]:
    """Mark timed_out every running job past its deadline; returns their ids.

    ``books``: the round's Books, already loaded under the books lock. ``skip``:
    jobs a round set aside (gpupool.scheduler.quarantine): their stored data
    gives no deadline to trust.
    """
    grace = grace or parse_grace(None)
    speeds = {t.name: t.speed for t in repository.list_gpu_types(session)}
    class_speeds = {c.name: c.speeds or {} for c in repository.list_job_classes(session)}
    skipped = set(skip)
    reaped = []
    for placement in repository.open_placements(session):
        if placement.job_id in skipped:
            continue
        type_name = placement.pool.gpu_type.name
        job = session.get(JobRow, placement.job_id)
        # the job's class's speed on that type (model.Job.speed_on), else the type's own
        speed = class_speeds.get(job.job_class or "", {}).get(type_name, speeds[type_name])
        try:
            deadline = grace.deadline(placement.started_at, job.hours, speed)
        except (OverflowError, ValueError, ZeroDivisionError):
            continue  # no deadline within the calendar (bad stored data, or a huge grace)
        if deadline > now:
            continue
        lock_for_ending(session)
        job = repository.get_job(session, job.id, lock=True)  # re-read: a site may have won
        if job.state != JobState.RUNNING.value:
            continue
        new_state = check_transition(job.state, JobState.TIMED_OUT)
        reason = f"ran past its estimate + grace ({grace})"
        end_job(session, job, new_state, deadline, reason, books)
        reaped.append(job.id)
    return reaped


def end_job(session: Session, job: JobRow, state: JobState, at, reason: str, books=None) -> None:
    """Put ``job`` in its final ``state`` at ``at``; a run it held ends and is charged."""
    placement = repository.open_placement_of(session, job.id)
    if placement is not None:
        placement.ended_at = at
    job.state = state.value
    job.ended_at = at
    job.wait_reason = None
    job.end_reason = reason
    session.flush()
    if placement is not None:  # a pending job's earlier runs were charged when they ended
        charge_ended_run(session, job, at, books)


def lock_for_ending(session: Session) -> None:
    """Take the write lock before any job row lock, as rounds do.

    Ending a running job charges it, and charging holds the write lock
    (gpupool.scheduler.locking.lock_writes). Taking it *first* keeps one lock
    order everywhere (the write lock, then job rows), so a cancel or finish can
    never deadlock with a round that is reaping or preempting the same job.
    """
    locking.lock_writes(session)


def charge_ended_run(session: Session, job: JobRow, ended_at: dt.datetime, books=None) -> list:
    """Charge what a job that held GPUs actually used, exactly up to its end.

    THE single call site for ending-time charges (finish, fail, timeout, cancel
    while running, preemption); how a charge is computed belongs to
    gpupool.scheduler.accounts.charge_ended_run (which also corrects a charge
    that a round metered past the end).
    """
    from gpupool.scheduler.accounts import charge_ended_run as charge  # accounting loads lazily

    return list(charge(session, job, ended_at, books))
