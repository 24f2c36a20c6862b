"""Build a gpupool.model.Snapshot from the database: the only input policies see.

- free GPUs per node = each pool's node sizes minus the nodes held by open
  placements (placements are the source of truth for what is occupied);
- running jobs hold their GPUs until their site reports them finished
  (gpupool.scheduler.lifecycle); those past their estimate + grace are left
  out, as the live round reaps them (timed_out) before it writes, and a dry
  run must see the same free capacity. An overdue job still within its grace
  is expected to end "now";
- usage = per domain, effective GPU-hours from the ledger's charge entries,
  decayed with a half-life (Slurm's PriorityDecayHalfLife idea), so fair-share
  remembers history but forgives it;
- accounts, subsidy_budget_left and pricing come from a gpupool.accounting
  Books (gpupool.scheduler.accounts.load_books: programmes, vouchers, the
  ledger and the active policy's flat subsidy rules), the same object the
  simulator prices with; policies quote from it through BudgetTracker. Budgets
  are net of what running jobs will be charged when they end (commitments);
- guarantee_deficit = how far each domain with a guaranteed share in the
  policy's params is behind it this quarter (ledger usage plus running jobs),
  against the platform's effective capacity.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gpupool import model
from gpupool.scheduler import accounts, clock, repository
from gpupool.scheduler.orm import JobRow, LedgerEntryRow

USAGE_HALF_LIFE_HOURS = 7 * 24.0


def as_datetime(now: dt.datetime | float | None) -> dt.datetime:
    if now is None:
        return clock.utcnow()
    return now if isinstance(now, dt.datetime) else clock.from_epoch(now)


def take_snapshot(
    session: Session,
    now: dt.datetime | float | None = None,
    pricing: object | None = None,
    half_life_hours: float = USAGE_HALF_LIFE_HOURS,
    books: object | None = None,
    policy: object | None = None,
    grace: object | None = None,
) -> model.Snapshot:
    """``pricing``: the policy's flat SubsidyRules; ``books``: already loaded for this round;
    ``grace``: the lifecycle.Grace the round reaps overdue jobs with (default: configured)."""
    from gpupool.scheduler import lifecycle

    moment = as_datetime(now)
    epoch = clock.to_epoch(moment)
    grace = grace or lifecycle.parse_grace(None)
    if books is None:
        books = accounts.load_books(session, epoch, rules=pricing)
    gpu_types = {r.name: repository.gpu_type_model(r) for r in repository.list_gpu_types(session)}
    pools = [repository.pool_model(r) for r in repository.list_pools(session)]
    running = [
        replace(r, expected_end=max(r.expected_end, epoch))  # overdue: may end any moment
        for r in running_jobs(session, gpu_types)
        if _deadline(grace, r) > epoch  # past it, the round reaps it first
    ]
    free = {p.name: list(p.node_sizes()) for p in pools}
    for entry in running:
        for node, gpus in entry.placement.nodes:
            free[entry.placement.pool][node] -= gpus
    pending = [repository.job_model(r) for r in repository.list_jobs(session, state="pending")]
    committed = _with_commitments(books, running, gpu_types, pools)
    return model.Snapshot(
        now=epoch,
        gpu_types=gpu_types,
        pools=tuple(model.PoolState(p, tuple(free[p.name])) for p in pools),
        domains={r.name: repository.domain_model(r) for r in repository.list_domains(session)},
        orgs={r.name: repository.org_model(r) for r in repository.list_orgs(session)},
        pending=tuple(pending),
        running=tuple(running),
        usage=decayed_usage(session, moment, half_life_hours),
        accounts=committed.accounts(epoch),
        subsidy_budget_left=committed.subsidy_left(epoch),
        pricing=committed,
        guarantee_deficit=_deficits(books, policy, gpu_types, pools, running, epoch),
    )


def _deadline(grace, run: model.RunningJob) -> float:
    started = clock.from_epoch(run.started_at)
    speed = run.job.hours * 3600.0 / (run.expected_end - run.started_at)
    return clock.to_epoch(grace.deadline(started, run.job.hours, speed))


def _with_commitments(books, running, gpu_types, pools):
    """Books as if every running job ran to its estimate.

    Runs are charged when they end, so without this two jobs of one org could
    each be admitted against the same budget left. Policies see budgets and
    subsidy left net of what running jobs will still be charged (the live
    counterpart of the simulator booking a charge at start).
    """
    if not running:
        return books
    fork = books.fork()
    pool_by_name = {p.name: p for p in pools}
    for run in running:
        pool = pool_by_name[run.placement.pool]
        start = max(run.started_at, books.charged_until(run.job.id) or run.started_at)
        fork.meter(run.job, pool, gpu_types[pool.gpu_type], start, run.expected_end)
    return fork


def _deficits(books, policy, gpu_types, pools, running, epoch: float) -> dict[str, float]:
    from gpupool.accounting.guarantees import UsageRecord, guarantee_deficit, records_from_entries

    shares = accounts.guarantee_shares(getattr(policy, "params", None), gpu_types, pools)
    if not shares:
        return {}
    records = records_from_entries(books.entries)
    pool_type = {p.name: p.gpu_type for p in pools}
    for run in running:  # what running jobs used since they were last charged
        since = max(run.started_at, books.charged_until(run.job.id) or run.started_at)
        if epoch > since:
            speed = gpu_types[pool_type[run.placement.pool]].speed
            hours = (epoch - since) / 3600.0 * run.job.gpus * speed
            records.append(UsageRecord(run.job.domain, since, epoch, hours))
    capacity = sum(p.gpus * gpu_types[p.gpu_type].speed for p in pools)
    return guarantee_deficit(records, shares, "quarter", epoch, capacity_per_hour=capacity)


def running_jobs(session: Session, gpu_types: dict[str, model.GpuType]) -> list[model.RunningJob]:
    """Every running job with its open placement and estimated end (epoch seconds)."""
    result = []
    placements = {p.job_id: p for p in repository.open_placements(session)}
    for row in repository.list_jobs(session, state="running"):
        placement_row = placements.get(row.id)
        if placement_row is None:
            continue  # a running job always has an open placement; tolerate old rows
        job = repository.job_model(row)
        started = clock.to_epoch(placement_row.started_at)
        speed = gpu_types[placement_row.pool.gpu_type.name].speed
        result.append(
            model.RunningJob(
                job=job,
                placement=repository.placement_model(placement_row),
                started_at=started,
                expected_end=started + job.hours / speed * 3600.0,
            )
        )
    return result


def decayed_usage(session: Session, moment: dt.datetime, half_life_hours: float) -> dict:
    query = select(
        LedgerEntryRow.domain, LedgerEntryRow.effective_gpu_hours, LedgerEntryRow.created_at
    ).where(LedgerEntryRow.kind == "charge", LedgerEntryRow.created_at <= moment)
    usage: dict[str, float] = {}
    for domain, hours, created_at in session.execute(query):
        age_hours = (moment - created_at).total_seconds() / 3600.0
        usage[domain] = usage.get(domain, 0.0) + hours * 0.5 ** (age_hours / half_life_hours)
    return usage


def pending_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(JobRow).where(JobRow.state == "pending"))
