"""Queries over the ORM, and conversions from rows to gpupool.model objects.

Lookups by name raise gpupool.model.NotFound with a ``location`` naming the
field the name came from (``location="--org"`` by default), so the CLI can
print one clear line. Nothing here commits: the caller's unit of work does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session, object_session

from gpupool import limits, model
from gpupool.scheduler import clock
from gpupool.scheduler.orm import (
    DomainRow,
    GpuTypeRow,
    JobClassRow,
    JobRow,
    LedgerEntryRow,
    OrgRow,
    PlacementRow,
    PolicyVersionRow,
    PoolRow,
    ProgrammeRow,
    UserRow,
)

if TYPE_CHECKING:
    from gpupool.accounting.programmes import Programme


def _by_name(session: Session, row_type, name: str, what: str, location: str):
    """Names are stored NFKC-normalised (gpupool.limits); a lookup normalises what it is
    given the same way and then matches exactly (case included)."""
    name = limits.normalise(name) if isinstance(name, str) else name
    row = session.scalars(select(row_type).where(row_type.name == name)).one_or_none()
    if row is None:
        raise model.NotFound(f"no {what} named {name!r}", location=location)
    return row


def get_gpu_type(session: Session, name: str, location: str = "--gpu-type") -> GpuTypeRow:
    return _by_name(session, GpuTypeRow, name, "GPU type", location)


def get_job_class(session: Session, name: str, location: str = "--class") -> JobClassRow:
    return _by_name(session, JobClassRow, name, "job class", location)


def list_job_classes(session: Session) -> Sequence[JobClassRow]:
    return session.scalars(select(JobClassRow).order_by(JobClassRow.name)).all()


def job_class_speeds(session: Session, name: str | None) -> Mapping[str, float]:
    """The speeds of the job class ``name`` (empty for None or a class since removed)."""
    if not name:
        return model.NO_SPEEDS
    speeds = session.scalar(select(JobClassRow.speeds).where(JobClassRow.name == name))
    return dict(speeds or {})


def usage_speeds(session: Session) -> Callable[[int | None, str | None], float]:
    """(job id, GPU type) -> the speed a charge's effective GPU-hours were counted at:
    the job's class's speed on that type (model.Job.speed_on), else the type's own
    (1.0 for a type no longer known). Reports divide by it to give wall GPU-hours."""
    types = {t.name: t.speed for t in list_gpu_types(session)}
    classes = {c.name: c.speeds or {} for c in list_job_classes(session)}
    query = select(JobRow.id, JobRow.job_class).where(JobRow.job_class.is_not(None))
    of_job = {job_id: classes.get(name, {}) for job_id, name in session.execute(query)}

    def speed(job_id: int | None, gpu_type: str | None) -> float:
        own = types.get(gpu_type, 1.0)
        return of_job[job_id].get(gpu_type, own) if job_id in of_job else own

    return speed


def get_pool(session: Session, name: str, location: str = "--pool") -> PoolRow:
    return _by_name(session, PoolRow, name, "pool", location)


def get_domain(session: Session, name: str, location: str = "--domain") -> DomainRow:
    return _by_name(session, DomainRow, name, "domain", location)


def get_org(session: Session, name: str, location: str = "--org") -> OrgRow:
    return _by_name(session, OrgRow, name, "organisation", location)


def get_org_id(session: Session, name: str, location: str = "--org") -> int:
    """get_org's id only: one column, no OrgRow (and its domain) loaded."""
    name = limits.normalise(name) if isinstance(name, str) else name
    org_id = session.scalar(select(OrgRow.id).where(OrgRow.name == name))
    if org_id is None:
        raise model.NotFound(f"no organisation named {name!r}", location=location)
    return org_id


def find_user(session: Session, name: str) -> UserRow | None:
    return session.scalars(select(UserRow).where(UserRow.name == name)).one_or_none()


def get_job(session: Session, job_id: int, location: str = "job id", lock: bool = False) -> JobRow:
    """The job; ``lock`` re-reads it FOR UPDATE so a state change is checked
    against what concurrent transactions committed, not a stale copy."""
    if lock:
        # OF jobs: the joined org/pool rows are not locked (PostgreSQL refuses
        # FOR UPDATE on the nullable side of the pool outer join anyway).
        query = select(JobRow).where(JobRow.id == job_id).with_for_update(of=JobRow)
        row = session.scalars(query.execution_options(populate_existing=True)).one_or_none()
    else:
        row = session.get(JobRow, job_id)
    if row is None:
        raise model.NotFound(f"no job with id {job_id}", location=location)
    return row


def find_job_by_submit_key(session: Session, org_id: int, key: str) -> JobRow | None:
    """The organisation's job with this idempotency key (keys are per organisation)."""
    query = select(JobRow).where(JobRow.org_id == org_id, JobRow.submit_key == key)
    return session.scalars(query).one_or_none()


def list_gpu_types(session: Session) -> Sequence[GpuTypeRow]:
    return session.scalars(select(GpuTypeRow).order_by(GpuTypeRow.name)).all()


def list_pools(session: Session) -> Sequence[PoolRow]:
    return session.scalars(select(PoolRow).order_by(PoolRow.name)).all()


def list_domains(session: Session) -> Sequence[DomainRow]:
    return session.scalars(select(DomainRow).order_by(DomainRow.name)).all()


def list_orgs(session: Session, domain: str | None = None) -> Sequence[OrgRow]:
    query = select(OrgRow).order_by(OrgRow.name)
    if domain is not None:
        query = query.where(OrgRow.domain_id == get_domain(session, domain).id)
    return session.scalars(query).all()


def list_jobs(
    session: Session,
    state: str | Sequence[str] | None = None,
    org: str | None = None,
) -> Sequence[JobRow]:
    """Jobs in submission order, optionally filtered by state(s) and org."""
    query = select(JobRow).order_by(JobRow.id)
    if state is not None:
        states = [state] if isinstance(state, str) else list(state)
        query = query.where(JobRow.state.in_(states))
    if org is not None:
        query = query.where(JobRow.org_id == get_org(session, org).id)
    return session.scalars(query).all()


def open_placements(session: Session) -> Sequence[PlacementRow]:
    """Placements of jobs still holding GPUs (not yet ended)."""
    query = select(PlacementRow).where(PlacementRow.ended_at.is_(None)).order_by(PlacementRow.id)
    return session.scalars(query).all()


def open_placement_of(session: Session, job_id: int) -> PlacementRow | None:
    query = select(PlacementRow).where(
        PlacementRow.job_id == job_id, PlacementRow.ended_at.is_(None)
    )
    return session.scalars(query).one_or_none()


def placements_of(session: Session, job_id: int) -> Sequence[PlacementRow]:
    query = select(PlacementRow).where(PlacementRow.job_id == job_id).order_by(PlacementRow.id)
    return session.scalars(query).all()


def active_policy_row(session: Session) -> PolicyVersionRow | None:
    query = select(PolicyVersionRow).where(PolicyVersionRow.active.is_(True))
    return session.scalars(query.order_by(PolicyVersionRow.version.desc())).first()


def org_spend(session: Session, period: str) -> dict[str, float]:
    """What each org paid (org_pays, all ledger kinds) in ``period``, by org name."""
    query = (
        select(OrgRow.name, func.coalesce(func.sum(LedgerEntryRow.org_pays), 0.0))
        .join(OrgRow, LedgerEntryRow.org_id == OrgRow.id)
        .where(LedgerEntryRow.period == period)
        .group_by(OrgRow.name)
    )
    return {name: float(total) for name, total in session.execute(query)}


def used_gpus(session: Session) -> dict[str, int]:
    """GPUs held by open placements, per pool name."""
    used: dict[str, int] = {}
    for placement in open_placements(session):
        used[placement.pool.name] = used.get(placement.pool.name, 0) + sum(
            gpus for _, gpus in placement.nodes
        )
    return used


# ---------------------------------------------------------------------------
# Rows -> model objects
# ---------------------------------------------------------------------------


def gpu_type_model(row: GpuTypeRow) -> model.GpuType:
    return model.GpuType(
        name=row.name,
        vendor=row.vendor,
        memory_gb=row.memory_gb,
        speed=row.speed,
        domestic=row.domestic,
    )


def pool_model(row: PoolRow) -> model.Pool:
    return model.Pool(
        name=row.name,
        site=row.site,
        gpu_type=row.gpu_type.name,
        gpus=row.gpus,
        gpus_per_node=row.gpus_per_node,
        price_per_gpu_hour=float(row.price_per_gpu_hour),
    )


def domain_model(row: DomainRow) -> model.Domain:
    return model.Domain(name=row.name, weight=row.weight)


def org_model(row: OrgRow) -> model.Org:
    budget = None if row.budget is None else float(row.budget)
    return model.Org(name=row.name, domain=row.domain.name, budget=budget)


def job_model(row: JobRow) -> model.Job:
    return model.Job(
        id=row.id,
        org=row.org.name,
        domain=row.org.domain.name,
        gpus=row.gpus,
        hours=row.hours,
        submitted_at=clock.to_epoch(row.submitted_at),
        gpu_types=tuple(row.gpu_types or ()),
        name=row.name,
        priority=row.priority,
        job_class=row.job_class or "",
        speeds=job_class_speeds(object_session(row), row.job_class),
    )


def placement_model(row: PlacementRow) -> model.Placement:
    nodes = tuple((int(node), int(gpus)) for node, gpus in row.nodes)
    return model.Placement(job_id=row.job_id, pool=row.pool.name, nodes=nodes)


# ---------------------------------------------------------------------------
# Programmes: the declaration a programmes row holds
# ---------------------------------------------------------------------------


def programme_rules(programme: Programme) -> dict:
    """The JSON a ``programmes.rules`` column holds for ``programme``."""
    period = programme.period
    return {
        "period": {"kind": period.kind, "start": period.start, "end": period.end},
        "domains": sorted(programme.domains),
        "orgs": sorted(programme.orgs),
        "rate": programme.rate,
        "gpu_type_rates": dict(programme.gpu_type_rates),
        "exchange_rates": dict(programme.exchange_rates),
        "vouchers": programme.uses_vouchers,
        "org_cap": programme.org_cap,
        "carry_over": programme.carry_over,
        "when_exhausted": programme.when_exhausted,
        "spending_order": programme.spending_order,
        "job_cap": programme.job_cap,
        "pacing": programme.pacing,
        "org_share": programme.org_share,
    }


def programme_from_row(row: ProgrammeRow) -> Programme:
    """The Programme (gpupool.accounting) a programmes row declares."""
    from gpupool.accounting.periods import PeriodSpec  # accounting loads only where needed
    from gpupool.accounting.programmes import Programme

    rules = row.rules or {}
    period = rules.get("period") or {}
    return Programme(
        name=row.name,
        period=PeriodSpec(
            kind=period.get("kind", "fixed"), start=period.get("start"), end=period.get("end")
        ),
        budget=None if row.budget is None else float(row.budget),
        domains=frozenset(rules.get("domains", ())),
        orgs=frozenset(rules.get("orgs", ())),
        rate=rules.get("rate", 1.0),
        gpu_type_rates=rules.get("gpu_type_rates", {}),
        exchange_rates=rules.get("exchange_rates", {}),
        uses_vouchers=rules.get("vouchers", False),
        org_cap=rules.get("org_cap"),
        carry_over=rules.get("carry_over", 0.0),
        when_exhausted=rules.get("when_exhausted", "full_price"),
        spending_order=rules.get("spending_order", "earliest_expiry"),
        job_cap=rules.get("job_cap"),
        pacing=rules.get("pacing", "none"),
        org_share=rules.get("org_share"),
    )
