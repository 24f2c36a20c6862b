"""One live scheduling round, in the caller's single transaction.

    1. complete running jobs whose runtime estimate has elapsed (no executor
       reports completions yet, so the estimate stands in for it);
    2. snapshot the platform (gpupool.scheduler.snapshot);
    3. ask the policy: ``policy.allocate(snapshot)`` — the same code the
       simulator runs;
    4. re-validate the allocation defensively (known pending jobs, allowed GPU
       types, whole gangs, node capacity after preemptions, a reason for every
       job left waiting) and raise PolicyViolation rather than write a bad one;
    5. write: a scheduler_rounds row, preemptions (placement closed, usage
       charged, job requeued), placements, job state changes via
       check_transition, the wait reason of every waiting job. Usage is charged
       when a run ends (gpupool.scheduler.accounts), never at start; before the
       snapshot, vouchers due by now expire (running jobs metered first).

A dry run does steps 2-4 only and writes nothing at all.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.orm import Session

from gpupool import model
from gpupool.model import Allocation, GpupoolError, JobState, Snapshot, check_transition
from gpupool.scheduler import accounts, clock, repository
from gpupool.scheduler.orm import (
    JobRow,
    PlacementRow,
    SchedulerRoundRow,
)
from gpupool.scheduler.snapshot import as_datetime, take_snapshot

ROUND_LOCK_KEY = 0x6770_7570  # "gpup": the advisory lock live rounds take on PostgreSQL


class PolicyViolation(GpupoolError):
    """A policy returned an allocation that breaks the platform's invariants."""


@dataclass(frozen=True)
class ActivePolicy:
    policy: object
    version: int | None  # None: no policy applied, the FIFO default
    kind: str
    pricing: object | None = None  # the policy's SubsidyRules, if it has any


@dataclass(frozen=True)
class Started:
    job_id: int
    pool: str
    nodes: tuple[tuple[int, int], ...]
    charge: model.Charge


@dataclass
class RoundResult:
    round_id: int | None  # None for a dry run
    dry_run: bool
    started: list[Started] = field(default_factory=list)
    waiting: dict[int, model.WaitReason] = field(default_factory=dict)
    preempted: list[int] = field(default_factory=list)
    completed: list[int] = field(default_factory=list)
    policy_version: int | None = None


def active_policy(session: Session) -> ActivePolicy:
    """Build the active policy version, or FIFO when none was ever applied."""
    row = repository.active_policy_row(session)
    if row is None:
        from gpupool.policies.fifo import FifoPolicy

        return ActivePolicy(policy=FifoPolicy(), version=None, kind="fifo")
    from gpupool.policies.document import parse_policy_text

    document = parse_policy_text(row.document, source=f"policy v{row.version}")
    params = getattr(document, "params", None)
    return ActivePolicy(
        policy=document.build(),
        version=row.version,
        kind=row.kind,
        pricing=getattr(params, "subsidy", None),
    )


def finish_due_jobs(session: Session, now: dt.datetime) -> list[int]:
    """Complete running jobs whose estimated runtime has elapsed by ``now``."""
    gpu_speed = {t.name: t.speed for t in repository.list_gpu_types(session)}
    done = []
    for placement in repository.open_placements(session):
        job = session.get(JobRow, placement.job_id)
        if job.state != JobState.RUNNING.value:
            continue
        runtime = dt.timedelta(hours=job.hours / gpu_speed[placement.pool.gpu_type.name])
        end = placement.started_at + runtime
        if end <= now:
            job.state = check_transition(job.state, JobState.COMPLETED).value
            job.ended_at = placement.ended_at = end
            job.end_reason = "reached its runtime estimate"
            session.flush()
            accounts.settle_job(session, job, end)
            done.append(job.id)
    return done


def run_round(
    session: Session,
    policy: object,
    now: dt.datetime | float | None = None,
    dry_run: bool = False,
    policy_version: int | None = None,
    pricing: object | None = None,
) -> RoundResult:
    moment = as_datetime(now)
    round_row = None if dry_run else _begin_round(session, moment, policy_version)
    completed = [] if dry_run else finish_due_jobs(session, moment)
    # one Books per round: vouchers due expire first (dry run: in memory only)
    books = accounts.load_books(session, moment, rules=pricing)
    accounts.close_books(session, books, moment, write=not dry_run)
    snapshot = take_snapshot(session, moment, pricing=pricing, books=books, policy=policy)
    allocation = policy.allocate(snapshot)
    validate_allocation(snapshot, allocation)
    result = RoundResult(
        round_id=None,
        dry_run=dry_run,
        waiting=dict(allocation.waiting),
        preempted=list(allocation.preempt),
        completed=completed,
        policy_version=policy_version,
    )
    charges = _charges(snapshot, allocation)
    result.started = [
        Started(p.job_id, p.pool, p.nodes, charges[p.job_id]) for p in allocation.placements
    ]
    if round_row is not None:
        _write(session, round_row, snapshot, result, moment, books)
    return result


def _begin_round(session: Session, moment: dt.datetime, policy_version: int | None):
    """Serialise live rounds: the second of two concurrent rounds waits for the
    first to commit, then snapshots what it wrote (never double-books GPUs)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ROUND_LOCK_KEY})
    round_row = SchedulerRoundRow(started_at=moment, policy_version=policy_version, dry_run=False)
    session.add(round_row)
    session.flush()  # on SQLite this write takes the database's write lock now
    return round_row


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
    session: Session, round_row, snapshot: Snapshot, result: RoundResult, moment, books
) -> None:
    round_row.started_jobs = len(result.started)
    result.round_id = round_row.id
    for job_id in result.preempted:
        _preempt(session, job_id, moment, books)
    pools = {p.name: p for p in repository.list_pools(session)}
    jobs = {j.id: j for j in snapshot.pending}
    for started in result.started:
        _start(session, started, jobs[started.job_id], pools[started.pool], round_row.id, moment)
    for job_id, reason in result.waiting.items():
        session.get(JobRow, job_id).wait_reason = model.WaitReason(reason).value
    round_row.finished_at = clock.utcnow()
    session.flush()


def _preempt(session: Session, job_id: int, moment: dt.datetime, books=None) -> None:
    job = repository.get_job(session, job_id, lock=True)
    placement = repository.open_placement_of(session, job_id)
    if placement is not None:
        placement.ended_at = moment
        session.flush()
        accounts.settle_job(session, job, moment, books)  # charge the run that ends here
    check_transition(job.state, JobState.PREEMPTED)
    job.state = check_transition(JobState.PREEMPTED, JobState.PENDING).value
    job.pool_id = None
    job.started_at = None
    job.wait_reason = "preempted; requeued"


def _start(session, started: Started, job: model.Job, pool_row, round_id, moment) -> None:
    row = repository.get_job(session, started.job_id, lock=True)
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
        )
    )
    # No ledger entry at start: the run is charged on actual use when it ends
    # (gpupool.scheduler.accounts.settle_job); started.charge is only a quote.
