"""Build a gpupool.model.Snapshot from the database: the only input policies see.

- free GPUs per node = each pool's node sizes minus the nodes held by open
  placements (placements are the source of truth for what is occupied);
- running jobs whose runtime estimate has elapsed by ``now`` are left out, as
  if finished: gpupool.scheduler.rounds completes them at the start of a real
  round, and a dry run must see the same free capacity;
- usage = per domain, effective GPU-hours from the ledger's charge entries,
  decayed with a half-life (Slurm's PriorityDecayHalfLife idea), so fair-share
  remembers history but forgives it;
- accounts = each org's budget minus what it paid this period (None when the
  org has no budget), plus unexpired voucher balances;
- pricing / subsidy_budget_left come from the active policy's subsidy rules,
  when the caller passes them.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gpupool import model
from gpupool.scheduler import clock, repository
from gpupool.scheduler.orm import JobRow, LedgerEntryRow, OrgRow, VoucherRow

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
) -> model.Snapshot:
    moment = as_datetime(now)
    epoch = clock.to_epoch(moment)
    gpu_types = {r.name: repository.gpu_type_model(r) for r in repository.list_gpu_types(session)}
    pools = [repository.pool_model(r) for r in repository.list_pools(session)]
    running = [r for r in running_jobs(session, gpu_types) if r.expected_end > epoch]
    free = {p.name: list(p.node_sizes()) for p in pools}
    for entry in running:
        for node, gpus in entry.placement.nodes:
            free[entry.placement.pool][node] -= gpus
    pending = [repository.job_model(r) for r in repository.list_jobs(session, state="pending")]
    return model.Snapshot(
        now=epoch,
        gpu_types=gpu_types,
        pools=tuple(model.PoolState(p, tuple(free[p.name])) for p in pools),
        domains={r.name: repository.domain_model(r) for r in repository.list_domains(session)},
        orgs={r.name: repository.org_model(r) for r in repository.list_orgs(session)},
        pending=tuple(pending),
        running=tuple(running),
        usage=decayed_usage(session, moment, half_life_hours),
        accounts=accounts(session, moment, pricing),
        subsidy_budget_left=_subsidy_left(session, moment, pricing),
        pricing=pricing,
    )


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


def accounts(
    session: Session, moment: dt.datetime, pricing: object | None = None
) -> dict[str, model.OrgAccount]:
    period = clock.period_of(moment)
    spent = repository.org_spend(session, period)
    org_cap = getattr(pricing, "org_cap", None)
    subsidised = _org_subsidy(session, period) if org_cap is not None else {}
    vouchers = dict(
        session.execute(
            select(OrgRow.name, func.sum(VoucherRow.balance))
            .join(OrgRow, VoucherRow.org_id == OrgRow.id)
            .where((VoucherRow.expires_at.is_(None)) | (VoucherRow.expires_at > moment))
            .group_by(OrgRow.name)
        ).all()
    )
    result = {}
    for org in repository.list_orgs(session):
        left = None if org.budget is None else float(org.budget) - spent.get(org.name, 0.0)
        cap_left = None if org_cap is None else float(org_cap) - subsidised.get(org.name, 0.0)
        result[org.name] = model.OrgAccount(
            org=org.name,
            budget_left=left,
            subsidy_cap_left=cap_left,
            vouchers=float(vouchers.get(org.name) or 0.0),
        )
    return result


def _org_subsidy(session: Session, period: str) -> dict[str, float]:
    query = (
        select(OrgRow.name, func.coalesce(func.sum(LedgerEntryRow.subsidy), 0.0))
        .join(OrgRow, LedgerEntryRow.org_id == OrgRow.id)
        .where(LedgerEntryRow.period == period)
        .group_by(OrgRow.name)
    )
    return {name: float(total) for name, total in session.execute(query)}


def _subsidy_left(session: Session, moment: dt.datetime, pricing: object | None) -> float | None:
    period_budget = getattr(pricing, "period_budget", None)
    if period_budget is None:
        return None
    paid = session.scalar(
        select(func.coalesce(func.sum(LedgerEntryRow.subsidy), 0.0)).where(
            LedgerEntryRow.period == clock.period_of(moment)
        )
    )
    return float(period_budget) - float(paid or 0.0)


def pending_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(JobRow).where(JobRow.state == "pending"))
