"""One live scheduling round, in the caller's single transaction, in two phases.

Read phase (takes no lock that blocks submissions, cancels or finishes):
    0. read the platform, every row through the sanity gate
       (gpupool.scheduler.quarantine): jobs with bad stored data are to be
       failed, bad platform rows (and an invalid active policy) set aside;
    1. load the books (programmes, vouchers, ledger); vouchers due by now
       expire in memory (running jobs metered first);
    2. snapshot the platform (gpupool.scheduler.snapshot): running jobs past
       their estimate + grace are left out, as step 5 reaps them;
    3. ask the policy: ``policy.allocate(snapshot)`` — the same code the
       simulator runs, through the same round driver (gpupool.scheduler.driver)
       — and time it (``solve_seconds``); if it (or step 4, or pricing the
       starts) raises, find and set aside the pending jobs it fails on
       (driver.Isolation), or let the round fail, rolled back;
    4. re-validate the allocation defensively
       (gpupool.policies.validation.validate_allocation: known pending jobs,
       allowed GPU types, whole gangs, node capacity after preemptions, a
       reason for every job left waiting) and raise PolicyViolation rather
       than write a bad one.

Steps 0-2 are DatabaseRound.snapshot, 3-4 the driver, 5-8 DatabaseRound.apply.

Write phase (short, under the write lock: PostgreSQL advisory transaction lock
shared with the books, SQLite's database write lock taken by the first insert):
    5. a scheduler_rounds row; the books reloaded; the jobs of step 0 and 3
       failed, with their reason and a ``job.quarantine`` audit row (running
       ones charged up to now if their data allows); overdue jobs reaped
       (timed_out, charged to their deadline); then the books closed for real
       (running jobs metered to now if a voucher is due, and it expires): in
       that order, so a reaped job is never metered past its deadline;
    6. preemptions of jobs still running (placement closed, usage charged, job
       requeued);
    7. each start re-checked against what committed meanwhile: a job no longer
       pending (cancelled) is skipped, a placement whose GPUs are no longer free
       is skipped and the job waits with "no capacity"; otherwise placement
       written, with the policy's reason for its pool, and job running
       (check_transition). No ledger entry at start:
       runs are charged when they end (gpupool.scheduler.lifecycle.charge_ended_run);
    8. the wait reason of every job still pending; set-aside platform rows
       audited (``platform.set_aside``) once per reason.

The re-check makes double-booking impossible whatever the callers do; the
round lock (gpupool.scheduler.locking) additionally keeps two schedulers from
solving at the same time. A dry run does steps 1-4 only and writes nothing.
Test hook: with GPUPOOL_TEST_PAUSE_IN_ROUND=<path>, the write phase creates
<path> after its placements are flushed and waits until the file is deleted
(at most GPUPOOL_TEST_PAUSE_SECONDS), so a test can act, or kill it, there.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gpupool import model
from gpupool.model import (
    JobState,
    Snapshot,
    check_quarantine,
    check_transition,
)
from gpupool.policies.validation import PolicyViolation, validate_allocation
from gpupool.scheduler import (
    accounts,
    clock,
    driver,
    lifecycle,
    locking,
    permissions,
    quarantine,
    repository,
    sites,
)
from gpupool.scheduler.active import ActivePolicy, active_policy
from gpupool.scheduler.orm import (
    AuditLogRow,
    JobRow,
    PlacementRow,
    SchedulerRoundRow,
)
from gpupool.scheduler.snapshot import as_datetime, overdue_at, read_platform, take_snapshot

# re-exported: their homes are gpupool.policies.validation and gpupool.scheduler.active
__all__ = ["ActivePolicy", "PolicyViolation", "active_policy", "validate_allocation"]
PAUSE_ENV = "GPUPOOL_TEST_PAUSE_IN_ROUND"
SCHEDULER_ACTOR = "scheduler"  # who quarantines, when a caller names no actor
log = logging.getLogger("gpupool.scheduler")


@dataclass(frozen=True)
class Started:
    job_id: int
    pool: str
    nodes: tuple[tuple[int, int], ...]
    charge: model.Charge
    reason: str | None = None  # why the policy chose the pool (Allocation.why)


@dataclass
class RoundResult:
    round_id: int | None  # None for a dry run
    dry_run: bool
    started: list[Started] = field(default_factory=list)
    waiting: dict[int, model.WaitReason] = field(default_factory=dict)
    preempted: list[int] = field(default_factory=list)
    preempt_why: dict[int, str] = field(default_factory=dict)  # who preempted each, and why
    completed: list[int] = field(default_factory=list)  # rounds no longer complete jobs
    policy_version: int | None = None
    timed_out: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)  # planned starts the re-check refused
    solve_seconds: float = 0.0
    # gpupool.scheduler.quarantine: jobs failed for bad stored data (id -> end reason),
    # pending jobs held back by a set-aside row (id -> wait reason), set-aside rows
    quarantined: dict[int, str] = field(default_factory=dict)
    held: dict[int, str] = field(default_factory=dict)
    set_aside: dict[str, str] = field(default_factory=dict)
    # running jobs of lost sites ended by this round (gpupool.scheduler.sites): id -> what
    lost: dict[int, str] = field(default_factory=dict)
    next_round_at: float | None = None  # the policy's wish (Allocation.next_round_at)


def run_active_round(
    session: Session,
    now: dt.datetime | float | None = None,
    dry_run: bool = False,
    grace: lifecycle.Grace | None = None,
    actor: str = SCHEDULER_ACTOR,
) -> tuple[RoundResult, ActivePolicy]:
    """A round under the active policy version, with its subsidy rules and version recorded."""
    active = active_policy(session)
    result = run_round(
        session,
        active.policy,
        now=now,
        dry_run=dry_run,
        policy_version=active.version,
        pricing=active.pricing,
        grace=grace,
        actor=actor,
        set_aside=active.set_aside,
    )
    return result, active


def run_round(
    session: Session,
    policy: object,
    now: dt.datetime | float | None = None,
    dry_run: bool = False,
    policy_version: int | None = None,
    pricing: object | None = None,
    grace: lifecycle.Grace | None = None,
    actor: str = SCHEDULER_ACTOR,
    set_aside: dict[str, str] | None = None,
) -> RoundResult:
    """``actor``: who the audit log names for jobs this round quarantines;
    ``set_aside``: rows the caller already set aside (an invalid active policy)."""
    backend = DatabaseRound(
        session,
        policy,
        dry_run=dry_run,
        policy_version=policy_version,
        pricing=pricing,
        grace=grace or lifecycle.parse_grace(None),
        actor=actor,
        set_aside=set_aside or {},
        real_time=now is None,
    )
    driver.run_round(backend, policy, as_datetime(now))
    return backend.result


@dataclass
class DatabaseRound:
    """The round driver's database backend (gpupool.scheduler.driver.RoundBackend).

    ``snapshot`` is the read phase (steps 0-2), ``apply`` the write phase (5-8),
    or for a dry run only the plan. ``result`` holds what the round did.
    """

    session: Session
    policy: object
    dry_run: bool
    policy_version: int | None
    pricing: object | None
    grace: lifecycle.Grace
    actor: str
    set_aside: dict[str, str]
    real_time: bool  # no instant given: stamp writes with the clock under the lock
    result: RoundResult | None = None
    _verdict: quarantine.Verdict | None = None

    def snapshot(self, moment: dt.datetime) -> Snapshot:
        session = self.session
        platform = read_platform(session, moment)  # every row through the sanity gate
        verdict = self._verdict = platform.verdict
        verdict.platform.update(self.set_aside)
        books = accounts.load_books(session, moment, rules=self.pricing, whole_ledger=False)
        verdict.platform.update(books.set_aside)
        # overdue jobs: reaped at their deadline by the write phase, so the books this
        # round decides on hold their charge up to their deadline (not to now, not none)
        overdue = {r.job.id for r in platform.running if overdue_at(self.grace, r, moment)}
        _reap_in_memory(session, books, overdue, self.grace)
        skip = verdict.unmetered | overdue
        accounts.close_books(session, books, moment, write=False, skip=skip)
        return take_snapshot(
            session,
            moment,
            pricing=self.pricing,
            books=books,
            policy=self.policy,  # its guarantees, for the snapshot's deficits
            grace=self.grace,
            platform=platform,
        )

    def apply(self, decision: driver.Decision, moment: dt.datetime) -> None:
        verdict = self._verdict
        verdict.jobs.update(
            {job_id: quarantine.job_reason(why) for job_id, why in decision.blamed.items()}
        )
        verdict.log()
        allocation = decision.allocation
        result = self.result = RoundResult(
            round_id=None,
            dry_run=self.dry_run,
            waiting=dict(allocation.waiting),
            preempted=list(allocation.preempt),
            preempt_why=dict(allocation.preempt_why),
            policy_version=self.policy_version,
            solve_seconds=decision.solve_seconds,
            quarantined=dict(verdict.jobs),
            held=dict(verdict.held),
            set_aside=dict(verdict.platform),
            next_round_at=allocation.next_round_at,
        )
        planned = [
            Started(
                p.job_id,
                p.pool,
                p.nodes,
                decision.charges[p.job_id],
                allocation.why.get(p.job_id),
            )
            for p in allocation.placements
        ]
        if self.dry_run:
            result.started = planned
            return
        _write(
            self.session,
            planned,
            result,
            moment,
            self.pricing,
            self.grace,
            self.real_time,
            self.actor,
            verdict,
        )


def _reap_in_memory(session: Session, books, overdue: set[int], grace) -> None:
    """Charge overdue runs up to their deadline in ``books`` only, in the order and
    with the runs ahead that lifecycle.reap_timeouts will charge them with."""
    if not overdue:
        return
    reaped: set[int] = set()
    for placement in repository.open_placements(session):
        if placement.job_id not in overdue:
            continue
        row = session.get(JobRow, placement.job_id)
        job, pool, gpu_type = accounts._usage_of(session, row, placement)
        deadline = grace.deadline(placement.started_at, job.hours, job.speed_on(gpu_type))
        started = accounts.charge_start(row, placement)
        reaped.add(job.id)
        if started is None or started >= clock.to_epoch(deadline):
            continue  # charge_ended_run charges nothing either
        ahead = [
            run
            for run in accounts._started_before(session, job.id, started)
            if run[0].id not in reaped  # their placement is closed by then
        ]
        books.meter(job, pool, gpu_type, started, clock.to_epoch(deadline), ahead)


def _write(
    session, planned, result: RoundResult, moment, pricing, grace, real_time, actor, verdict
) -> None:
    locking.lock_writes(session)  # PostgreSQL: the write lock, before any row lock
    round_row = SchedulerRoundRow(
        started_at=moment, policy_version=result.policy_version, dry_run=False
    )
    session.add(round_row)
    session.flush()  # SQLite: this insert takes the database's write lock
    if real_time:
        # Stamp what this round writes with the time it writes it, under the lock:
        # a job a site finished while we solved ended after our snapshot, and the
        # job that takes its GPUs must not appear to have started before that.
        moment = max(moment, clock.utcnow())
    result.round_id = round_row.id
    # fresh, under the lock
    books = accounts.load_books(session, moment, rules=pricing, whole_ledger=False)
    books = _quarantine(session, result, moment, books, actor)
    result.lost = sites.end_lost_runs(session, moment, sites.lost_site_rule(), books)
    # Reap first: an overdue job ends (and is charged) at its deadline; metering
    # open placements for a voucher expiry before that would charge it to now.
    result.timed_out = lifecycle.reap_timeouts(session, moment, grace, books, verdict.stranded)
    accounts.close_books(session, books, moment, skip=verdict.stranded)
    why = result.preempt_why
    result.preempted = [
        j for j in result.preempted if _preempt(session, j, moment, books, why.get(j))
    ]
    pools = {p.name: p for p in repository.list_pools(session)}
    free = _free_gpus(session, {s.pool for s in planned})
    rows = _lock_jobs(session, [s.job_id for s in planned])
    for started in planned:
        row = rows[started.job_id]
        problem = _start(session, started, row, pools[started.pool], free, round_row.id, moment)
        if problem is None:
            result.started.append(started)
            continue
        result.skipped[started.job_id] = problem
        if problem == NO_LONGER_FREE:
            result.waiting[started.job_id] = model.WaitReason.NO_CAPACITY
    _pause_for_tests(session)
    _record_wait_reasons(session, result.waiting)
    _record_held(session, result.held)
    _audit_set_aside(session, actor, result.set_aside)
    round_row.started_jobs = len(result.started)
    round_row.finished_at = clock.utcnow()
    session.flush()


def _quarantine(session, result: RoundResult, moment, books, actor: str):
    """Fail each job the round could not handle, with its reason, and audit it.

    A running one ends now and is charged for what it used, if its data allows
    a charge (tried on a scratch copy of the books first); else its GPUs are
    freed uncharged and its reason says so. Returns the books to go on with.
    """
    rows = _lock_jobs(session, sorted(result.quarantined))
    for job_id in sorted(result.quarantined):
        row = rows.get(job_id)
        if row is None or row.state not in (JobState.PENDING.value, JobState.RUNNING.value):
            del result.quarantined[job_id]  # it ended meanwhile: nothing to do
            continue
        reason = result.quarantined[job_id]
        before = row.state
        state = check_quarantine(row.state)
        problem = accounts.charge_problem(session, row, moment, books)
        if problem is None:
            lifecycle.end_job(session, row, state, moment, reason, books)
        else:
            reason = f"{reason}; not charged: {problem}"[: quarantine.REASON_LENGTH]
            _end_uncharged(session, row, state, moment, reason)
        result.quarantined[job_id] = row.end_reason
        result.waiting.pop(job_id, None)
        permissions.audit(
            session,
            actor,
            "job.quarantine",
            f"job {job_id}",
            before={"state": before},
            after={"state": row.state, "reason": row.end_reason},
        )
    return books


def _end_uncharged(session, row: JobRow, state: JobState, moment, reason: str) -> None:
    placement = repository.open_placement_of(session, row.id)
    if placement is not None:
        placement.ended_at = moment
    row.state = state.value
    row.ended_at = moment
    row.wait_reason = None
    row.end_reason = reason
    session.flush()


def _record_held(session: Session, held: dict[int, str]) -> None:
    """Pending jobs a set-aside row holds back wait with its name as their reason."""
    by_reason: dict[str, list[int]] = defaultdict(list)
    for job_id, reason in held.items():
        by_reason[reason].append(job_id)
    for reason, ids in sorted(by_reason.items()):
        session.execute(
            update(JobRow)
            .where(JobRow.id.in_(ids), JobRow.state == JobState.PENDING.value)
            .values(wait_reason=reason)
            .execution_options(synchronize_session=False)
        )


SET_ASIDE_ACTION = "platform.set_aside"


def _audit_set_aside(session: Session, actor: str, set_aside: dict[str, str]) -> None:
    """One audit row per set-aside platform row and reason (the log says it every round)."""
    for target, reason in sorted(set_aside.items()):
        last = session.scalars(
            select(AuditLogRow.after)
            .where(AuditLogRow.action == SET_ASIDE_ACTION, AuditLogRow.target == target[:256])
            .order_by(AuditLogRow.id.desc())
            .limit(1)
        ).first()
        if (last or {}).get("reason") != reason:
            permissions.audit(
                session, actor, SET_ASIDE_ACTION, target[:256], after={"reason": reason}
            )


NO_LONGER_FREE = "its GPUs were taken meanwhile"


def _free_gpus(session: Session, names: set[str]) -> dict[str, list[int]]:
    """Free GPUs per node of the pools ``names`` as committed now (re-read under the lock).

    Only the pools the round starts jobs on: a set-aside pool's size may be absurd.
    """
    free = {
        p.name: list(repository.pool_model(p).node_sizes())
        for p in repository.list_pools(session)
        if p.name in names
    }
    for placement in repository.open_placements(session):
        if placement.pool.name in free:
            for node, gpus in placement.nodes:
                free[placement.pool.name][int(node)] -= int(gpus)
    return free


def _preempt(
    session: Session, job_id: int, moment: dt.datetime, books, why: str | None = None
) -> bool:
    """Stop and requeue a running job, its placement closed with ``why`` (the policy's
    reason); False if it stopped meanwhile (nothing to do)."""
    job = repository.get_job(session, job_id, lock=True)
    if job.state != JobState.RUNNING.value:
        return False
    placement = repository.open_placement_of(session, job_id)
    if placement is not None:
        placement.ended_at = moment
        placement.end_reason = why
        session.flush()
        lifecycle.charge_ended_run(session, job, moment, books)  # charge the run that ends here
    check_transition(job.state, JobState.PREEMPTED)
    job.state = check_transition(JobState.PREEMPTED, JobState.PENDING).value
    job.pool_id = None
    job.started_at = None
    job.wait_reason = "preempted; requeued"
    return True


def _lock_jobs(session: Session, job_ids: list[int]) -> dict[int, JobRow]:
    """Re-read the jobs to start FOR UPDATE in one query (in id order, like every locker)."""
    if not job_ids:
        return {}
    query = (
        select(JobRow)
        .where(JobRow.id.in_(job_ids))
        .order_by(JobRow.id)
        .with_for_update(of=JobRow)
        .execution_options(populate_existing=True)
    )
    return {row.id: row for row in session.scalars(query)}


def _start(session, started: Started, row, pool_row, free, round_id, moment) -> str | None:
    """Start the job unless what committed since the snapshot forbids it (then say why)."""
    if row.state != JobState.PENDING.value:
        return f"it is {row.state} now"
    nodes = free[pool_row.name]
    if any(nodes[node] < gpus for node, gpus in started.nodes):
        return NO_LONGER_FREE
    for node, gpus in started.nodes:
        nodes[node] -= gpus
    row.state = check_transition(row.state, JobState.RUNNING).value
    row.started_at = moment
    row.pool_id = pool_row.id
    row.wait_reason = None
    session.add(
        PlacementRow(
            job_id=row.id,
            pool_id=pool_row.id,
            nodes=[[node, gpus] for node, gpus in started.nodes],
            started_at=moment,
            round_id=round_id,
            reason=started.reason,
        )
    )
    # No ledger entry at start: the run is charged on actual use when it ends
    # (gpupool.scheduler.lifecycle.charge_ended_run); started.charge is only a quote.
    return None


def _record_wait_reasons(session: Session, waiting: dict[int, model.WaitReason]) -> None:
    """One UPDATE per reason, only on jobs still pending (a cancel may have won)."""
    by_reason: dict[str, list[int]] = defaultdict(list)
    for job_id, reason in waiting.items():
        by_reason[model.WaitReason(reason).value].append(job_id)
    for reason, ids in by_reason.items():
        session.execute(
            update(JobRow)
            .where(JobRow.id.in_(ids), JobRow.state == JobState.PENDING.value)
            .values(wait_reason=reason)
            .execution_options(synchronize_session=False)  # objects are not read again
        )


def _pause_for_tests(session: Session) -> None:
    """Crash-test hook: announce that rows are written (not committed) by creating the
    file, then hold the round there until the test deletes it (or the pause runs out)."""
    path = os.environ.get(PAUSE_ENV)
    if path:
        session.flush()
        marker = Path(path)
        marker.write_text(str(os.getpid()))
        give_up = time.monotonic() + float(os.environ.get("GPUPOOL_TEST_PAUSE_SECONDS", "120"))
        while marker.exists() and time.monotonic() < give_up:
            time.sleep(0.05)
