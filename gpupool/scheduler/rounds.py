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
       simulator runs — and time it (``solve_seconds``); if it (or step 4, or
       pricing the starts) raises, find and set aside the pending jobs it fails
       on (_Isolation), or let the round fail, rolled back;
    4. re-validate the allocation defensively (known pending jobs, allowed GPU
       types, whole gangs, node capacity after preemptions, a reason for every
       job left waiting) and raise PolicyViolation rather than write a bad one.

Write phase (short, under the write lock: PostgreSQL advisory transaction lock
shared with the books, SQLite's database write lock taken by the first insert):
    5. a scheduler_rounds row; the books reloaded; the jobs of step 0 and 3
       failed, with their reason and a ``job.quarantine`` audit row (running
       ones charged up to now if their data allows); the books closed for
       real; overdue jobs reaped (timed_out, charged to their deadline);
    6. preemptions of jobs still running (placement closed, usage charged, job
       requeued);
    7. each start re-checked against what committed meanwhile: a job no longer
       pending (cancelled) is skipped, a placement whose GPUs are no longer free
       is skipped and the job waits with "no capacity"; otherwise placement
       written, with the policy's reason for its pool, and job running
       (check_transition). No ledger entry at start:
       runs are charged when they end (gpupool.scheduler.lifecycle.settle);
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
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gpupool import model
from gpupool.model import (
    Allocation,
    GpupoolError,
    JobState,
    Snapshot,
    check_quarantine,
    check_transition,
)
from gpupool.scheduler import accounts, clock, lifecycle, permissions, quarantine, repository
from gpupool.scheduler.orm import (
    AuditLogRow,
    JobRow,
    PlacementRow,
    SchedulerRoundRow,
)
from gpupool.scheduler.snapshot import as_datetime, overdue_at, read_platform, take_snapshot

ROUND_LOCK_KEY = accounts.BOOKS_LOCK_KEY  # the write phase's advisory lock on PostgreSQL
PAUSE_ENV = "GPUPOOL_TEST_PAUSE_IN_ROUND"
SCHEDULER_ACTOR = "scheduler"  # who quarantines, when a caller names no actor
MAX_CULPRITS = 3  # jobs one round may blame for a policy or accounting failure
ISOLATION_SECONDS = 60.0  # how long a round may spend finding them
log = logging.getLogger("gpupool.scheduler")


class PolicyViolation(GpupoolError):
    """A policy returned an allocation that breaks the platform's invariants."""


@dataclass(frozen=True)
class ActivePolicy:
    policy: object
    version: int | None  # None: no policy applied (or the active one set aside), the FIFO default
    kind: str
    pricing: object | None = None  # the policy's SubsidyRules, if it has any
    set_aside: dict[str, str] = field(default_factory=dict)  # "policy v3" -> why, if it was


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


def active_policy(session: Session) -> ActivePolicy:
    """Build the active policy version, or FIFO when none was ever applied.

    A stored version this code cannot run (it no longer parses, or its numbers
    fail the sanity gate, gpupool.scheduler.quarantine) is set aside: rounds
    run the FIFO default, without its subsidy rules, until an admin applies a
    valid one, and say so in their log and the audit log.
    """
    from gpupool.policies.fifo import FifoPolicy

    row = repository.active_policy_row(session)
    if row is None:
        return ActivePolicy(policy=FifoPolicy(), version=None, kind="fifo")
    try:
        return _stored_policy(row)
    except Exception as exc:  # whatever the stored text does, scheduling goes on
        problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not isinstance(exc, _BadPolicy):
            problem = f"{type(exc).__name__}: {problem}"
    target = f"policy v{row.version}"
    return ActivePolicy(
        policy=FifoPolicy(),
        version=None,
        kind="fifo",
        set_aside={target: quarantine.invalid(problem)},
    )


class _BadPolicy(GpupoolError):
    """A stored policy document whose numbers fail the sanity gate."""


def _stored_policy(row) -> ActivePolicy:
    from gpupool.policies.document import parse_policy_text

    document = parse_policy_text(row.document, source=f"policy v{row.version}")
    problem = quarantine.policy_problem(document)
    if problem is not None:
        raise _BadPolicy(problem)
    params = getattr(document, "params", None)
    return ActivePolicy(
        policy=document.build(),
        version=row.version,
        kind=row.kind,
        pricing=getattr(params, "subsidy", None),
    )


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
    moment = as_datetime(now)
    grace = grace or lifecycle.parse_grace(None)
    platform = read_platform(session)  # every row through the sanity gate
    verdict = platform.verdict
    verdict.platform.update(set_aside or {})
    books = accounts.load_books(session, moment, rules=pricing, whole_ledger=False)
    verdict.platform.update(books.set_aside)
    # overdue jobs are reaped at their deadline by the write phase, not metered to now
    overdue = {r.job.id for r in platform.running if overdue_at(grace, r, moment)}
    accounts.close_books(session, books, moment, write=False, skip=verdict.unmetered | overdue)
    snapshot = take_snapshot(
        session,
        moment,
        pricing=pricing,
        books=books,
        policy=policy,
        grace=grace,
        platform=platform,
    )
    decision = _decide(policy, snapshot)
    verdict.jobs.update(decision.blamed)
    verdict.log()
    allocation = decision.allocation
    result = RoundResult(
        round_id=None,
        dry_run=dry_run,
        waiting=dict(allocation.waiting),
        preempted=list(allocation.preempt),
        policy_version=policy_version,
        solve_seconds=decision.solve_seconds,
        quarantined=dict(verdict.jobs),
        held=dict(verdict.held),
        set_aside=dict(verdict.platform),
    )
    planned = [
        Started(p.job_id, p.pool, p.nodes, decision.charges[p.job_id], allocation.why.get(p.job_id))
        for p in allocation.placements
    ]
    if dry_run:
        result.started = planned
    else:
        _write(session, planned, result, moment, pricing, grace, now is None, actor, verdict)
    return result


@dataclass
class _Decision:
    allocation: Allocation
    charges: dict[int, model.Charge]
    solve_seconds: float
    blamed: dict[int, str] = field(default_factory=dict)  # job id -> end reason


def _decide(policy: object, snapshot: Snapshot) -> _Decision:
    """The policy's allocation, checked and priced.

    Defence in depth behind the sanity gate: if the policy or the accounting
    raises, the round looks for at most MAX_CULPRITS pending jobs to blame
    (_Isolation) and decides without them; if none can be found the error
    stands and the round fails, rolled back, to be retried.
    """
    began = time.perf_counter()
    try:
        allocation, charges = _attempt(policy, snapshot)
        return _Decision(allocation, charges, time.perf_counter() - began)
    except Exception as exc:  # any failure: look for the job behind it
        failure = exc
    log.error("the policy failed on this round's snapshot: %s", _describe(failure))
    isolation = _Isolation(policy, snapshot)
    blamed: dict[int, str] = {}
    pending = list(snapshot.pending)
    for _ in range(MAX_CULPRITS):
        found = isolation.culprit(pending)
        if found is None:
            break
        job, error = found
        blamed[job.id] = quarantine.job_reason(f"scheduling it fails ({_describe(error)})")
        pending.remove(job)
        outcome = isolation.attempt(pending)
        if not isinstance(outcome, BaseException):
            allocation, charges = outcome
            return _Decision(allocation, charges, time.perf_counter() - began, blamed)
    raise failure


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _attempt(policy: object, snapshot: Snapshot):
    allocation = policy.allocate(snapshot)
    validate_allocation(snapshot, allocation)
    return allocation, _charges(snapshot, allocation)


class _Isolation:
    """Find a pending job the round fails on, by bisection, within a time budget.

    A job is blamed only if the round fails on it alone, not on no job at all,
    and not on a plain job of its org in its place (1 GPU, 1 hour, any type,
    no priority, no name): so a broken policy or platform blames nobody.
    """

    def __init__(self, policy: object, snapshot: Snapshot) -> None:
        self.policy = policy
        self.snapshot = snapshot
        self.give_up_at = time.monotonic() + ISOLATION_SECONDS

    def attempt(self, jobs: list[model.Job]):
        """The decision without the other pending jobs, or the exception it raised."""
        if time.monotonic() > self.give_up_at:
            return TimeoutError("no time left to isolate the failure")
        try:
            return _attempt(self.policy, replace(self.snapshot, pending=tuple(jobs)))
        except Exception as exc:  # the failure being isolated, or another
            return exc

    def fails(self, jobs: list[model.Job]) -> BaseException | None:
        outcome = self.attempt(jobs)
        return outcome if isinstance(outcome, BaseException) else None

    def culprit(self, pending: list[model.Job]) -> tuple[model.Job, BaseException] | None:
        error = self.fails(pending)
        if error is None or isinstance(error, TimeoutError) or self.fails([]) is not None:
            return None
        jobs = pending
        while len(jobs) > 1:
            half = len(jobs) // 2
            for part in (jobs[:half], jobs[half:]):
                part_error = self.fails(part)
                if isinstance(part_error, TimeoutError):
                    return None
                if part_error is not None:
                    jobs, error = part, part_error
                    break
            else:
                return None  # only a combination of jobs fails: no one to blame
        plain = replace(jobs[0], gpus=1, hours=1.0, priority=0, gpu_types=(), name="")
        if self.fails([plain]) is not None:
            return None
        return jobs[0], error


def _charges(snapshot: Snapshot, allocation: Allocation) -> dict[int, model.Charge]:
    """The policy's charge per started job; a quote for any it left out."""
    from gpupool.accounting import BudgetTracker

    tracker = BudgetTracker(snapshot)
    jobs = {j.id: j for j in snapshot.pending}
    charges = {}
    for placement in allocation.placements:
        charge = allocation.charges.get(placement.job_id)
        if charge is None:
            pool = snapshot.pool_state(placement.pool).pool
            charge = tracker.quote(jobs[placement.job_id], pool)
        charges[placement.job_id] = charge
    return charges


def validate_allocation(snapshot: Snapshot, allocation: Allocation) -> None:
    pending = {j.id: j for j in snapshot.pending}
    running = {r.job.id: r for r in snapshot.running}
    free = {s.pool.name: list(s.free_per_node) for s in snapshot.pools}
    pools = {s.pool.name: s.pool for s in snapshot.pools}
    for job_id in allocation.preempt:
        if job_id not in running:
            raise PolicyViolation(f"preempts job {job_id}, which is not running")
        for node, gpus in running[job_id].placement.nodes:
            free[running[job_id].placement.pool][node] += gpus
    seen: set[int] = set()
    for placement in allocation.placements:
        _check_placement(placement, pending, pools, free, seen)
    for job_id in pending:
        if job_id not in seen and job_id not in allocation.waiting:
            raise PolicyViolation(f"gives no wait reason for pending job {job_id}")


def _check_placement(placement, pending, pools, free, seen) -> None:
    job = pending.get(placement.job_id)
    where = f"job {placement.job_id}"
    if job is None:
        raise PolicyViolation(f"starts {where}, which is not pending")
    if placement.job_id in seen:
        raise PolicyViolation(f"starts {where} twice")
    seen.add(placement.job_id)
    pool = pools.get(placement.pool)
    if pool is None:
        raise PolicyViolation(f"places {where} on unknown pool {placement.pool!r}")
    if not job.allows(pool.gpu_type):
        raise PolicyViolation(f"places {where} on {pool.gpu_type}, which it does not allow")
    if placement.gpus != job.gpus:
        raise PolicyViolation(f"gives {where} {placement.gpus} of its {job.gpus} GPUs")
    for node, gpus in placement.nodes:
        if not 0 <= node < len(free[pool.name]) or gpus <= 0:
            raise PolicyViolation(f"places {where} on bad node {node} of {pool.name}")
        free[pool.name][node] -= gpus
        if free[pool.name][node] < 0:
            raise PolicyViolation(f"overfills node {node} of {pool.name} with {where}")


def _write(
    session, planned, result: RoundResult, moment, pricing, grace, real_time, actor, verdict
) -> None:
    accounts.lock_books(session)  # PostgreSQL: the write lock, before any row lock
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
    # Reap first: an overdue job ends (and is charged) at its deadline; metering
    # open placements for a voucher expiry before that would charge it to now.
    result.timed_out = lifecycle.reap_timeouts(session, moment, grace, books, verdict.stranded)
    accounts.close_books(session, books, moment, skip=verdict.stranded)
    result.preempted = [j for j in result.preempted if _preempt(session, j, moment, books)]
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


def _preempt(session: Session, job_id: int, moment: dt.datetime, books) -> bool:
    """Stop and requeue a running job; False if it stopped meanwhile (nothing to do)."""
    job = repository.get_job(session, job_id, lock=True)
    if job.state != JobState.RUNNING.value:
        return False
    placement = repository.open_placement_of(session, job_id)
    if placement is not None:
        placement.ended_at = moment
        session.flush()
        lifecycle.settle(session, job, moment, books)  # charge the run that ends here
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
    # (gpupool.scheduler.lifecycle.settle); started.charge is only a quote.
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
